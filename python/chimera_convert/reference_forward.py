"""A slow float64 numpy forward pass over a GGUF file, written from the spec
(/work/shared/spec/ARCHITECTURES.md sections 2-5), for checking converted files and fixtures
without torch: it reads only the GGUF (never the HF checkpoint), so agreeing with transformers'
logits shows that names, layouts, the Q/K permutation, -exp(A_log), the norm reshape, the MoE
split and the multipliers all survived conversion.

Where llama.cpp and HF differ, HF's choice is taken (the fixtures' reference): softplus via log1p,
logits divided by logit_scale, per-group gated norm (both agree on it), an absent attention.scale
meaning 1/sqrt(d_h) (llama.cpp; the converter always writes the key for granite archs).
Supported: llama, granite, granitehybrid, mamba2 with F32/F16/BF16 tensors.
"""

from __future__ import annotations

import numpy as np
import gguf


def _field(reader: gguf.GGUFReader, key: str, default=None):
    f = reader.fields.get(key)
    if f is None:
        return default
    return f.contents()


def _tensor64(t) -> np.ndarray:
    if t.tensor_type == gguf.GGMLQuantizationType.BF16:
        a = (np.asarray(t.data).view(np.uint16).astype(np.uint32) << 16).view(np.float32)
        return a.reshape(t.data.shape).astype(np.float64)
    if t.tensor_type not in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16):
        raise ValueError(f"tensor {t.name}: type {t.tensor_type.name} not supported here")
    return np.asarray(t.data).astype(np.float64)


class GGUFModel:
    def __init__(self, path):
        r = gguf.GGUFReader(str(path))
        self.arch = _field(r, "general.architecture")
        if self.arch not in ("llama", "granite", "granitehybrid", "mamba2"):
            raise ValueError(f"{path}: architecture {self.arch} not supported by the reference")
        self.t = {t.name: _tensor64(t) for t in r.tensors}
        a = self.arch
        self.L = int(_field(r, f"{a}.block_count"))
        self.D = int(_field(r, f"{a}.embedding_length"))
        self.eps = float(_field(r, f"{a}.attention.layer_norm_rms_epsilon"))
        self.n_head = int(_field(r, f"{a}.attention.head_count", 0))
        kv = _field(r, f"{a}.attention.head_count_kv", self.n_head)
        self.n_kv = list(kv) if isinstance(kv, list) else [int(kv)] * self.L
        self.attn_scale = _field(r, f"{a}.attention.scale")
        self.emb_scale = _field(r, f"{a}.embedding_scale")
        self.res_scale = _field(r, f"{a}.residual_scale")
        self.logit_scale = _field(r, f"{a}.logit_scale")
        default_rope = a in ("llama", "granite", "granitehybrid")
        self.rope = bool(_field(r, f"{a}.rope.scaling.finetuned", default_rope)) and a != "mamba2"
        self.rope_base = float(_field(r, f"{a}.rope.freq_base", 10000.0))
        self.n_rot = _field(r, f"{a}.rope.dimension_count")
        self.ssm_groups = int(_field(r, f"{a}.ssm.group_count", 1))
        self.k_used = int(_field(r, f"{a}.expert_used_count", 0) or 0)

    # ---------------------------------------------------------------- building blocks

    def rmsnorm(self, x: np.ndarray, w: np.ndarray) -> np.ndarray:
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + self.eps) * w

    @staticmethod
    def silu(x):
        return x / (1.0 + np.exp(-x))

    def is_mamba(self, il: int) -> bool:
        return self.arch == "mamba2" or (self.arch == "granitehybrid" and self.n_kv[il] == 0)

    def rope_norm(self, x: np.ndarray) -> np.ndarray:
        """x [T, heads, d_h]; NORM mode rotates adjacent pairs (2i, 2i+1) of the first n_rot dims."""
        T, _, d_h = x.shape
        n_rot = int(self.n_rot or d_h)
        pos = np.arange(T, dtype=np.float64)[:, None]
        theta = pos * self.rope_base ** (-2.0 * np.arange(n_rot // 2) / n_rot)[None, :]
        cos, sin = np.cos(theta)[:, None, :], np.sin(theta)[:, None, :]
        out = x.copy()
        x0, x1 = x[..., 0:n_rot:2], x[..., 1:n_rot:2]
        out[..., 0:n_rot:2] = x0 * cos - x1 * sin
        out[..., 1:n_rot:2] = x0 * sin + x1 * cos
        return out

    def attention(self, il: int, u: np.ndarray) -> np.ndarray:
        p = f"blk.{il}."
        T = u.shape[0]
        n_head, n_kv = self.n_head, self.n_kv[il]
        wq = self.t[p + "attn_q.weight"]
        d_h = wq.shape[0] // n_head
        q = (u @ wq.T).reshape(T, n_head, d_h)
        k = (u @ self.t[p + "attn_k.weight"].T).reshape(T, n_kv, d_h)
        v = (u @ self.t[p + "attn_v.weight"].T).reshape(T, n_kv, d_h)
        if self.rope:
            q, k = self.rope_norm(q), self.rope_norm(k)
        scale = float(self.attn_scale) if self.attn_scale else 1.0 / np.sqrt(d_h)
        out = np.empty((T, n_head, d_h))
        mask = np.triu(np.full((T, T), -np.inf), 1)
        for h in range(n_head):
            g = h // (n_head // n_kv)
            s = (q[:, h] @ k[:, g].T) * scale + mask
            s = np.exp(s - s.max(axis=1, keepdims=True))
            out[:, h] = (s / s.sum(axis=1, keepdims=True)) @ v[:, g]
        return out.reshape(T, n_head * d_h) @ self.t[p + "attn_output.weight"].T

    def mamba2(self, il: int, u: np.ndarray) -> np.ndarray:
        p = f"blk.{il}."
        T = u.shape[0]
        a = self.t[p + "ssm_a"].reshape(-1)  # already -exp(A_log)
        H = a.shape[0]
        G = self.ssm_groups
        d_in = self.t[p + "ssm_out.weight"].shape[1]
        P = d_in // H
        conv_w = self.t[p + "ssm_conv1d.weight"]  # [C, K]
        C_ch, K = conv_w.shape
        N = (C_ch - d_in) // (2 * G)
        proj = u @ self.t[p + "ssm_in.weight"].T
        z, xbc, dt = proj[:, :d_in], proj[:, d_in:d_in + C_ch], proj[:, d_in + C_ch:]
        padded = np.concatenate([np.zeros((K - 1, C_ch)), xbc], axis=0)
        conv = sum(conv_w[:, k][None, :] * padded[k:k + T] for k in range(K))
        if p + "ssm_conv1d.bias" in self.t:
            conv = conv + self.t[p + "ssm_conv1d.bias"]
        conv = self.silu(conv)
        x = conv[:, :d_in].reshape(T, H, P)
        B = conv[:, d_in:d_in + G * N].reshape(T, G, N)
        C = conv[:, d_in + G * N:].reshape(T, G, N)
        pre = dt + self.t[p + "ssm_dt.bias"]
        delta = np.where(pre > 20, pre, np.log1p(np.exp(np.minimum(pre, 20))))
        group = np.arange(H) // (H // G)
        S = np.zeros((H, P, N))
        y = np.empty((T, H, P))
        for t in range(T):
            dA = np.exp(delta[t] * a)
            S = S * dA[:, None, None] + (x[t] * delta[t][:, None])[:, :, None] * B[t, group][:, None, :]
            y[t] = np.einsum("hpn,hn->hp", S, C[t, group])
        y = y + self.t[p + "ssm_d"].reshape(-1)[None, :, None] * x
        y = y.reshape(T, d_in) * self.silu(z)
        yg = y.reshape(T, G, d_in // G)
        yg = yg / np.sqrt(np.mean(yg * yg, axis=-1, keepdims=True) + self.eps)
        y = (yg * self.t[p + "ssm_norm.weight"][None]).reshape(T, d_in)
        return y @ self.t[p + "ssm_out.weight"].T

    def swiglu(self, v, gate, up, down):
        return (self.silu(v @ gate.T) * (v @ up.T)) @ down.T

    def ffn(self, il: int, v: np.ndarray) -> np.ndarray:
        p = f"blk.{il}."
        t = self.t
        if p + "ffn_gate_inp.weight" not in t:
            return self.swiglu(v, t[p + "ffn_gate.weight"], t[p + "ffn_up.weight"],
                               t[p + "ffn_down.weight"])
        logits = v @ t[p + "ffn_gate_inp.weight"].T  # [T, E]
        k = self.k_used
        out = np.zeros_like(v)
        for i in range(v.shape[0]):
            sel = np.argsort(-logits[i], kind="stable")[:k]
            w = np.exp(logits[i, sel] - logits[i, sel].max())
            w /= w.sum()
            for e, we in zip(sel, w):
                out[i] += we * self.swiglu(v[i:i + 1], t[p + "ffn_gate_exps.weight"][e],
                                           t[p + "ffn_up_exps.weight"][e],
                                           t[p + "ffn_down_exps.weight"][e])[0]
        if p + "ffn_gate_shexp.weight" in t:
            out += self.swiglu(v, t[p + "ffn_gate_shexp.weight"], t[p + "ffn_up_shexp.weight"],
                               t[p + "ffn_down_shexp.weight"])
        return out

    # ---------------------------------------------------------------- model

    def logits(self, tokens) -> np.ndarray:
        """All positions' logits [T, n_vocab] of one sequence starting at position 0."""
        t = self.t
        h = t["token_embd.weight"][np.asarray(tokens)]
        if self.emb_scale:
            h = h * float(self.emb_scale)
        r = float(self.res_scale) if self.res_scale else 1.0
        for il in range(self.L):
            u = self.rmsnorm(h, t[f"blk.{il}.attn_norm.weight"])
            m = self.mamba2(il, u) if self.is_mamba(il) else self.attention(il, u)
            h = h + m * r
            if self.arch != "mamba2":
                v = self.rmsnorm(h, t[f"blk.{il}.ffn_norm.weight"])
                h = h + self.ffn(il, v) * r
        out = self.rmsnorm(h, t["output_norm.weight"])
        logits = out @ t.get("output.weight", t["token_embd.weight"]).T
        if self.logit_scale:
            logits = logits / float(self.logit_scale)
        return logits
