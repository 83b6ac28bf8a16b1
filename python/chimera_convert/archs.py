"""Per-architecture conversion plans, following llama.cpp's converter conventions
(spec /work/shared/spec/ARCHITECTURES.md sections 3.2, 4.1-4.3, 5, 8).

Each plan_* function validates config.json and every tensor's shape before anything is written, and
maps each HF tensor to its GGUF name and layout. Every checkpoint tensor must be consumed: an
unexpected tensor is an error, never silently dropped.
"""

from __future__ import annotations

import math
from typing import Callable

import gguf
import numpy as np

from . import ConversionError
from .checkpoint import Checkpoint
from .output import Plan

NOPE_CONTEXT_LENGTH = 2**20  # what llama.cpp's converter writes for position-free models


class Builder:
    def __init__(self, ckpt: Checkpoint, arch: str):
        self.ckpt = ckpt
        self.plan = Plan(arch)
        self.used: set[str] = set()
        self.where = str(ckpt.dir)

    def cfg(self, key, default=None, required=False):
        return self.ckpt.get(key, default, required)

    def fail(self, msg: str):
        raise ConversionError(f"{self.where}: {msg}")

    def has(self, hf_name: str) -> bool:
        return hf_name in self.ckpt.tensors

    def take(self, hf_name: str, shape: tuple[int, ...]):
        ref = self.ckpt.tensors.get(hf_name)
        if ref is None:
            self.fail(f"missing tensor '{hf_name}' (expected shape {list(shape)})")
        if tuple(ref.shape) != tuple(shape):
            self.fail(f"tensor '{hf_name}' has shape {list(ref.shape)}, expected {list(shape)}")
        self.used.add(hf_name)
        return ref

    def add(self, gguf_name: str, hf_name: str, shape: tuple[int, ...],
            transform: Callable[[np.ndarray], np.ndarray] | None = None,
            out_shape: tuple[int, ...] | None = None):
        ref = self.take(hf_name, shape)
        if transform is None:
            produce = ref.load
        else:
            def produce(ref=ref, transform=transform):
                return np.ascontiguousarray(transform(ref.load()), dtype=np.float32)
        self.plan.tensor(gguf_name, out_shape or shape, produce, hf_name)

    def add_halves(self, gate_name: str, up_name: str, hf_name: str, shape: tuple[int, ...]):
        """HF fused [.., 2F, D] -> first half gate, second half up (Granite input_linear)."""
        ref = self.take(hf_name, shape)
        half = shape[-2] // 2
        out = (*shape[:-2], half, shape[-1])
        self.plan.tensor(gate_name, out, lambda: np.ascontiguousarray(ref.load()[..., :half, :]),
                         hf_name + " (first half)")
        self.plan.tensor(up_name, out, lambda: np.ascontiguousarray(ref.load()[..., half:, :]),
                         hf_name + " (second half)")

    def pick(self, *names: str) -> str:
        """The first of several spellings of one tensor that the checkpoint has (legacy HF
        checkpoints vs transformers 5 native names); the first spelling if none is present."""
        return next((n for n in names if n in self.ckpt.tensors), names[0])

    def ignore(self, hf_name: str):
        self.used.add(hf_name)

    def finish(self) -> Plan:
        left = sorted(n for n in self.ckpt.tensors
                      if n not in self.used and not n.endswith("rotary_emb.inv_freq"))
        if left:
            self.fail(f"{len(left)} checkpoint tensor(s) not understood by the converter: "
                      f"{', '.join(left[:8])}{' ...' if len(left) > 8 else ''}")
        return self.plan


def permute_for_rope_norm(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Reorders each head's rows so HF's half-split rotation (i, i + d/2) becomes llama.cpp's
    adjacent-pair NORM rotation (2i, 2i + 1): new row 2i = old row i, new row 2i+1 = old i + d/2."""
    rows = w.shape[0]
    return (w.reshape(n_heads, 2, rows // n_heads // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def neg_exp(a_log: np.ndarray) -> np.ndarray:
    """ssm_a = -exp(A_log), evaluated in float64 and rounded once to float32 (the most accurate
    float32 value; torch's float32 exp may differ from it by an ulp)."""
    return (-np.exp(a_log.astype(np.float64))).astype(np.float32)


def _rope_theta(b: Builder, default: float | None) -> float | None:
    params = b.cfg("rope_parameters") or b.cfg("rope_scaling")
    if params:
        rtype = params.get("rope_type", params.get("type", "default"))
        if rtype != "default":
            b.fail(f"RoPE scaling type '{rtype}' is not supported by this converter")
        if params.get("rope_theta") is not None:
            return float(params["rope_theta"])
    return float(b.cfg("rope_theta", default)) if b.cfg("rope_theta", default) is not None else None


def _json_float(v) -> float:
    # transformers 5 writes non-finite floats as {"__float__": "Infinity"}
    if isinstance(v, dict) and "__float__" in v:
        return float(v["__float__"])
    return float(v)


def _check_time_step_limit(b: Builder):
    lim = b.cfg("time_step_limit")
    if lim is not None and (_json_float(lim[0]) != 0.0 or not math.isinf(_json_float(lim[1]))):
        b.fail(f"time_step_limit {lim} clamps dt; GGUF/llama.cpp cannot express a finite limit")


def _common_keys(b: Builder, L: int, D: int, V: int, vocab_size_key: bool = True):
    b.plan.key("add_type", "model")
    b.plan.key("add_block_count", L)
    b.plan.key("add_embedding_length", D)
    if vocab_size_key:  # llama.cpp's converter writes it for some architectures only
        b.plan.key("add_vocab_size", V)


def _embeddings(b: Builder, embed_name: str, norm_name: str, V: int, D: int):
    b.add("token_embd.weight", embed_name, (V, D))
    b.add("output_norm.weight", norm_name, (D,))
    tied = bool(b.cfg("tie_word_embeddings", False))
    if tied:
        if b.has("lm_head.weight"):
            b.ignore("lm_head.weight")  # HF uses the embedding matrix as LM head when tied
    else:
        b.add("output.weight", "lm_head.weight", (V, D))


def _attention(b: Builder, i: int, prefix: str, D: int, n_head: int, n_kv: int, d_h: int):
    if b.cfg("attention_bias", False):
        b.fail("attention_bias = true is not supported by this converter")
    b.add(f"blk.{i}.attn_q.weight", prefix + "q_proj.weight", (n_head * d_h, D),
          lambda w: permute_for_rope_norm(w, n_head))
    b.add(f"blk.{i}.attn_k.weight", prefix + "k_proj.weight", (n_kv * d_h, D),
          lambda w: permute_for_rope_norm(w, n_kv))
    b.add(f"blk.{i}.attn_v.weight", prefix + "v_proj.weight", (n_kv * d_h, D))
    b.add(f"blk.{i}.attn_output.weight", prefix + "o_proj.weight", (D, n_head * d_h))


# --------------------------------------------------------------------------------------------------
# llama (LlamaForCausalLM) and granite (GraniteForCausalLM, dense Granite 3.x)
# llama.cpp loads these configs through transformers' AutoConfig, so absent keys take the HF class
# defaults; the same defaults are filled in here.


def plan_llama(ckpt: Checkpoint, granite: bool = False) -> Plan:
    arch = "granite" if granite else "llama"
    b = Builder(ckpt, arch)
    D = int(b.cfg("hidden_size", required=True))
    L = int(b.cfg("num_hidden_layers", required=True))
    n_head = int(b.cfg("num_attention_heads", required=True))
    n_kv = int(b.cfg("num_key_value_heads", n_head))
    F = int(b.cfg("intermediate_size", required=True))
    V = int(b.cfg("vocab_size", required=True))
    if b.cfg("hidden_act", "silu") != "silu":
        b.fail(f"hidden_act '{b.cfg('hidden_act')}' is not supported (SwiGLU needs silu)")
    if b.cfg("mlp_bias", False):
        b.fail("mlp_bias = true is not supported by this converter")
    d_h = int(b.cfg("head_dim", D // n_head))
    if granite and d_h != D // n_head:
        b.fail(f"head_dim {d_h} != hidden_size / num_attention_heads = {D // n_head}; llama.cpp's "
               f"granite loader assumes the latter")
    if n_head % n_kv:
        b.fail(f"num_attention_heads {n_head} is not a multiple of num_key_value_heads {n_kv}")
    _common_keys(b, L, D, V)
    p = b.plan
    p.key("add_context_length", int(b.cfg("max_position_embeddings", 2048)))
    p.key("add_feed_forward_length", F)
    p.key("add_head_count", n_head)
    p.key("add_head_count_kv", n_kv)
    p.key("add_rope_freq_base", _rope_theta(b, 10000.0))
    p.key("add_layer_norm_rms_eps", float(b.cfg("rms_norm_eps", 1e-6)))
    if "head_dim" in ckpt.config and not granite:
        p.key("add_key_length", d_h)
        p.key("add_value_length", d_h)
    p.key("add_rope_dimension_count", d_h)
    if granite:
        # GraniteConfig defaults are 1.0 for all four; llama.cpp writes the non-zero ones
        for hf_key, setter in (("attention_multiplier", "add_attention_scale"),
                               ("embedding_multiplier", "add_embedding_scale"),
                               ("residual_multiplier", "add_residual_scale"),
                               ("logits_scaling", "add_logit_scale")):
            value = float(b.cfg(hf_key, 1.0))
            if value != 0.0:
                p.key(setter, value)

    _embeddings(b, "model.embed_tokens.weight", "model.norm.weight", V, D)
    for i in range(L):
        pre = f"model.layers.{i}."
        b.add(f"blk.{i}.attn_norm.weight", pre + "input_layernorm.weight", (D,))
        _attention(b, i, pre + "self_attn.", D, n_head, n_kv, d_h)
        b.add(f"blk.{i}.ffn_norm.weight", pre + "post_attention_layernorm.weight", (D,))
        b.add(f"blk.{i}.ffn_gate.weight", pre + "mlp.gate_proj.weight", (F, D))
        b.add(f"blk.{i}.ffn_up.weight", pre + "mlp.up_proj.weight", (F, D))
        b.add(f"blk.{i}.ffn_down.weight", pre + "mlp.down_proj.weight", (D, F))
    return b.finish()


# --------------------------------------------------------------------------------------------------
# Mamba2 mixer tensors, shared by mamba2 and granitehybrid (spec 3.2)


def _mamba2_mixer(b: Builder, i: int, prefix: str, D: int, d_in: int, H: int, G: int, N: int,
                  K: int, conv_bias_required: bool):
    C = d_in + 2 * G * N
    d_proj = 2 * d_in + 2 * G * N + H
    ref = b.ckpt.tensors.get(prefix + "in_proj.weight")
    if ref is not None and ref.shape[0] != d_proj:
        b.fail(f"tensor '{prefix}in_proj.weight' has {ref.shape[0]} rows, expected "
               f"2*d_inner + 2*n_groups*d_state + n_heads = {d_proj} (extra d_mlp channels are "
               f"not supported)")
    b.add(f"blk.{i}.ssm_in.weight", prefix + "in_proj.weight", (d_proj, D))
    b.add(f"blk.{i}.ssm_conv1d.weight", prefix + "conv1d.weight", (C, 1, K),
          lambda w: w.reshape(C, K), out_shape=(C, K))
    if b.has(prefix + "conv1d.bias") or conv_bias_required:
        b.add(f"blk.{i}.ssm_conv1d.bias", prefix + "conv1d.bias", (C,))
    b.add(f"blk.{i}.ssm_dt.bias", prefix + "dt_bias", (H,))
    b.add(f"blk.{i}.ssm_a", prefix + "A_log", (H,), lambda a: neg_exp(a).reshape(H, 1),
          out_shape=(H, 1))
    b.add(f"blk.{i}.ssm_d", prefix + "D", (H,), lambda d: d.reshape(H, 1), out_shape=(H, 1))
    b.add(f"blk.{i}.ssm_norm.weight", prefix + "norm.weight", (d_in,),
          lambda w: w.reshape(G, d_in // G), out_shape=(G, d_in // G))
    b.add(f"blk.{i}.ssm_out.weight", prefix + "out_proj.weight", (D, d_in))


def _ssm_keys(b: Builder, K: int, d_in: int, N: int, H: int, G: int):
    b.plan.key("add_ssm_conv_kernel", K)
    b.plan.key("add_ssm_inner_size", d_in)
    b.plan.key("add_ssm_state_size", N)
    b.plan.key("add_ssm_time_step_rank", H)  # = number of SSM heads for Mamba-2 (pitfall 1)
    b.plan.key("add_ssm_group_count", G)


def _check_ssm_dims(b: Builder, d_in: int, H: int, P: int, G: int):
    if H * P != d_in:
        b.fail(f"n_heads {H} * head_dim {P} != d_inner {d_in}")
    if d_in % G or H % G:
        b.fail(f"n_groups {G} must divide d_inner {d_in} and n_heads {H}")


# --------------------------------------------------------------------------------------------------
# mamba2 (Mamba2ForCausalLM); config.json read raw like llama.cpp's Mamba2 converter


def plan_mamba2(ckpt: Checkpoint) -> Plan:
    b = Builder(ckpt, "mamba2")
    D = int(b.cfg("hidden_size", required=True))
    L = int(b.cfg("num_hidden_layers", required=True))
    V = int(b.cfg("vocab_size", required=True))
    N = int(b.cfg("state_size", 128))
    K = int(b.cfg("conv_kernel", 4))
    G = int(b.cfg("n_groups", 1))
    P = int(b.cfg("head_dim", 64))
    d_in = int(b.cfg("intermediate_size", int(b.cfg("expand", 2) * D)))
    H = int(b.cfg("num_heads", d_in // P))
    eps = float(b.cfg("layer_norm_epsilon", b.cfg("rms_norm_eps", 1e-5)))
    _check_ssm_dims(b, d_in, H, P, G)
    _check_time_step_limit(b)
    if b.cfg("use_bias", False):
        b.fail("use_bias = true (in_proj/out_proj biases) cannot be expressed in a mamba2 GGUF")
    if not b.cfg("use_conv_bias", True):
        b.fail("use_conv_bias = false: llama.cpp's mamba2 requires ssm_conv1d.bias")
    if not b.cfg("rms_norm", True):
        b.fail("rms_norm = false (no gated norm) is not supported")

    _common_keys(b, L, D, V)
    p = b.plan
    p.key("add_context_length", NOPE_CONTEXT_LENGTH)
    p.key("add_feed_forward_length", 0)
    p.key("add_head_count", 0)
    _ssm_keys(b, K, d_in, N, H, G)
    p.key("add_layer_norm_rms_eps", eps)

    _embeddings(b, "backbone.embeddings.weight", "backbone.norm_f.weight", V, D)
    for i in range(L):
        pre = f"backbone.layers.{i}."
        b.add(f"blk.{i}.attn_norm.weight", pre + "norm.weight", (D,))
        _mamba2_mixer(b, i, pre + "mixer.", D, d_in, H, G, N, K, conv_bias_required=True)
    return b.finish()


# --------------------------------------------------------------------------------------------------
# granitehybrid (GraniteMoeHybridForCausalLM, Granite 4.0-H); config.json read raw (spec 4.1)


def _granite_hybrid_layer_types(b: Builder, L: int) -> list[str]:
    types = b.cfg("layer_types")
    if types is not None:
        # transformers 5 spells them linear_attention / full_attention
        names = {"mamba": "mamba", "linear_attention": "mamba",
                 "attention": "attention", "full_attention": "attention"}
        if len(types) != L or any(t not in names for t in types):
            b.fail(f"layer_types must list {L} entries of 'mamba'/'attention' (or "
                   f"'linear_attention'/'full_attention'), got {types}")
        return [names[t] for t in types]
    indices = b.cfg("attn_layer_indices")
    if indices is not None:
        return ["attention" if i in indices else "mamba" for i in range(L)]
    b.fail("config.json has neither layer_types nor attn_layer_indices")


def plan_granitehybrid(ckpt: Checkpoint) -> Plan:
    b = Builder(ckpt, "granitehybrid")
    D = int(b.cfg("hidden_size", required=True))
    L = int(b.cfg("num_hidden_layers", required=True))
    V = int(b.cfg("vocab_size", required=True))
    n_head = int(b.cfg("num_attention_heads", required=True))
    n_kv = int(b.cfg("num_key_value_heads", n_head))
    eps = float(b.cfg("rms_norm_eps", required=True))
    types = _granite_hybrid_layer_types(b, L)
    attn_layers = [i for i in range(L) if types[i] == "attention"]
    if len(attn_layers) == L:
        b.fail("no Mamba layers: llama.cpp converts such checkpoints as granite/granitemoe")
    if b.cfg("hidden_act", "silu") != "silu":
        b.fail(f"hidden_act '{b.cfg('hidden_act')}' is not supported (SwiGLU needs silu)")
    d_h = D // n_head
    if b.cfg("head_dim") not in (None, d_h):
        b.fail(f"head_dim {b.cfg('head_dim')} != hidden_size / num_attention_heads = {d_h}; "
               f"llama.cpp's granitehybrid loader assumes the latter")
    if attn_layers and n_head % n_kv:
        b.fail(f"num_attention_heads {n_head} is not a multiple of num_key_value_heads {n_kv}")
    if b.cfg("mamba_proj_bias", False):
        b.fail("mamba_proj_bias = true cannot be expressed in a granitehybrid GGUF")
    _check_time_step_limit(b)

    d_in = int(b.cfg("mamba_expand", 2)) * D
    H = int(b.cfg("mamba_n_heads", 128))
    P = b.cfg("mamba_d_head", "auto")
    P = d_in // H if P == "auto" else int(P)
    G = int(b.cfg("mamba_n_groups", 1))
    N = int(b.cfg("mamba_d_state", 256))
    K = int(b.cfg("mamba_d_conv", 4))
    _check_ssm_dims(b, d_in, H, P, G)

    E = int(b.cfg("num_local_experts", 0))
    k_used = int(b.cfg("num_experts_per_tok", 0))
    F = int(b.cfg("intermediate_size", required=True))
    F_s = int(b.cfg("shared_intermediate_size", 0))
    if E > 0 and not 0 < k_used <= E:
        b.fail(f"num_experts_per_tok {k_used} must be in 1..num_local_experts ({E})")
    if E == 0 and F_s <= 0:
        b.fail("dense model (num_local_experts = 0) without shared_intermediate_size")

    # HF rotates only when position_embedding_type == "rope". llama.cpp's converter decides from the
    # architecture instead (NoPE whenever Mamba layers exist, pitfall 9); following HF here keeps a
    # "rope" hybrid correct, and equals llama.cpp's choice for every Granite 4.0-H checkpoint.
    use_rope = b.cfg("position_embedding_type") == "rope"

    _common_keys(b, L, D, V)
    p = b.plan
    p.key("add_context_length",
          int(b.cfg("max_position_embeddings", 4096)) if use_rope else NOPE_CONTEXT_LENGTH)
    # llama.cpp sizes the dense FFN with feed_forward_length; HF's dense FFN is shared_mlp, so a
    # dense file says shared_intermediate_size (== intermediate_size in every published config,
    # where this is exactly what llama.cpp writes)
    p.key("add_feed_forward_length", F if E > 0 else F_s)
    p.key("add_head_count", n_head)
    p.key("add_head_count_kv", [n_kv if t == "attention" else 0 for t in types])  # INT32 array
    p.key("add_layer_norm_rms_eps", eps)
    # HF applies attention_multiplier unconditionally (default 1.0), while llama.cpp falls back to
    # 1/sqrt(d_h) when the key is absent, so an absent multiplier is written as 1.0 (spec 4.1)
    p.key("add_attention_scale", float(b.cfg("attention_multiplier", 1.0)))
    for hf_key, setter in (("embedding_multiplier", "add_embedding_scale"),
                           ("residual_multiplier", "add_residual_scale"),
                           ("logits_scaling", "add_logit_scale")):
        if b.cfg(hf_key):
            p.key(setter, float(b.cfg(hf_key)))
    p.key("add_rope_scaling_finetuned", use_rope)
    theta = _rope_theta(b, None)
    if theta is not None:
        p.key("add_rope_freq_base", theta)
    p.key("add_rope_dimension_count", int(b.cfg("attn_rotary_emb", d_h)))
    p.key("add_expert_count", E)
    p.key("add_expert_used_count", k_used if E > 0 else 0)  # llama.cpp asserts 0 when dense
    if F_s > 0:
        p.key("add_expert_shared_feed_forward_length", F_s)
    _ssm_keys(b, K, d_in, N, H, G)

    _embeddings(b, "model.embed_tokens.weight", "model.norm.weight", V, D)
    for i in range(L):
        pre = f"model.layers.{i}."
        b.add(f"blk.{i}.attn_norm.weight", pre + "input_layernorm.weight", (D,))
        if types[i] == "mamba":
            _mamba2_mixer(b, i, pre + "mamba.", D, d_in, H, G, N, K, conv_bias_required=False)
        else:
            _attention(b, i, pre + "self_attn.", D, n_head, n_kv, d_h)
        b.add(f"blk.{i}.ffn_norm.weight", pre + "post_attention_layernorm.weight", (D,))
        shared = pre + "shared_mlp."
        if E > 0:
            moe = pre + "block_sparse_moe."
            b.add(f"blk.{i}.ffn_gate_inp.weight",
                  b.pick(moe + "router.layer.weight", moe + "router.weight"), (E, D))
            b.add_halves(f"blk.{i}.ffn_gate_exps.weight", f"blk.{i}.ffn_up_exps.weight",
                         b.pick(moe + "input_linear.weight", moe + "experts.gate_up_proj"),
                         (E, 2 * F, D))
            b.add(f"blk.{i}.ffn_down_exps.weight",
                  b.pick(moe + "output_linear.weight", moe + "experts.down_proj"), (E, D, F))
            if F_s > 0:
                b.add_halves(f"blk.{i}.ffn_gate_shexp.weight", f"blk.{i}.ffn_up_shexp.weight",
                             shared + "input_linear.weight", (2 * F_s, D))
                b.add(f"blk.{i}.ffn_down_shexp.weight", shared + "output_linear.weight", (D, F_s))
        else:
            b.add_halves(f"blk.{i}.ffn_gate.weight", f"blk.{i}.ffn_up.weight",
                         shared + "input_linear.weight", (2 * F_s, D))
            b.add(f"blk.{i}.ffn_down.weight", shared + "output_linear.weight", (D, F_s))
    return b.finish()


# --------------------------------------------------------------------------------------------------
# nemotron_h (NemotronHForCausalLM, Nemotron-H without MoE) and nemotron_h_moe (the same class with
# "E"/"moe" layers, Nemotron-3-Nano: squared-ReLU routed experts, sigmoid router with a selection
# bias, one squared-ReLU shared expert). llama.cpp picks MoE when config.json has
# num_experts_per_tok, which transformers 5 also writes for dense models; here MoE layers decide. Every layer is one kind: Mamba2 ("M"),
# NoPE attention ("*") or a non-gated squared-ReLU MLP ("-"), each with one pre-norm. llama.cpp
# stores the kinds in two per-layer arrays: head_count_kv (n_kv on attention layers, else 0) and
# feed_forward_length (intermediate_size on MLP layers, else 0); both 0 means Mamba2. As for
# granitehybrid, q/k rows get the NORM permutation (a no-op for the scores without RoPE).

_NEMOTRON_KINDS = {"M": "mamba", "*": "attention", "-": "mlp", "E": "moe",
                   "mamba": "mamba", "linear_attention": "mamba", "attention": "attention",
                   "full_attention": "attention", "mlp": "mlp", "moe": "moe"}


def _nemotron_h_layer_kinds(b: Builder) -> list[str]:
    pattern = b.cfg("hybrid_override_pattern") or b.cfg("layers_block_type")
    if not pattern:
        b.fail("config.json has neither hybrid_override_pattern nor layers_block_type")
    kinds = [_NEMOTRON_KINDS.get(c) for c in pattern]
    if None in kinds:
        b.fail(f"unknown layer kind in {pattern!r} (expected M/*/- or "
               f"linear_attention/full_attention/mlp)")
    if "moe" in kinds and "mlp" in kinds:
        b.fail("both dense MLP and MoE layers: llama.cpp's nemotron_h_moe makes every FFN layer MoE")
    if "mamba" not in kinds:
        b.fail("no Mamba2 layers: llama.cpp converts such a checkpoint as another architecture")
    return kinds


def _nemotron_h_moe_keys(b: Builder, kinds: list[str]) -> tuple[int, int, int]:
    """The MoE keys llama.cpp writes for nemotron_h_moe; returns (experts, F_expert, F_shared)."""
    E = int(b.cfg("n_routed_experts", required=True))
    k_used = int(b.cfg("num_experts_per_tok", required=True))
    F_e = int(b.cfg("moe_intermediate_size", required=True))
    F_s = int(b.cfg("moe_shared_expert_intermediate_size", required=True))
    if not 0 < k_used <= E:
        b.fail(f"num_experts_per_tok {k_used} must be in 1..n_routed_experts ({E})")
    if b.cfg("moe_latent_size") is not None:
        b.fail("moe_latent_size (latent MoE projections, Nemotron 3 Super) is not supported")
    if int(b.cfg("num_nextn_predict_layers", 0) or 0) > 0:
        b.fail("num_nextn_predict_layers > 0 (MTP layers) is not supported")
    if int(b.cfg("n_group", 1)) != 1:
        b.fail(f"n_group {b.cfg('n_group')}: group-limited expert selection is not supported")
    if b.cfg("mlp_bias", False):
        b.fail("mlp_bias = true: llama.cpp's nemotron_h_moe has no expert biases")
    if int(b.cfg("n_shared_experts", 1)) != 1:
        b.fail(f"n_shared_experts {b.cfg('n_shared_experts')} is not supported (only 1)")
    p = b.plan
    p.key("add_feed_forward_length", [F_e if k == "moe" else 0 for k in kinds])  # INT32 array
    p.key("add_expert_used_count", k_used)
    p.key("add_expert_feed_forward_length", F_e)
    p.key("add_expert_shared_feed_forward_length", F_s)
    p.key("add_expert_count", E)
    p.key("add_expert_shared_count", 1)
    p.key("add_expert_weights_norm", bool(b.cfg("norm_topk_prob", True)))
    p.key("add_expert_weights_scale", float(b.cfg("routed_scaling_factor", 1.0)))
    p.key("add_expert_group_count", 1)
    if b.cfg("topk_group") is not None:  # llama.cpp's converter copies it whenever present
        p.key("add_expert_group_used_count", int(b.cfg("topk_group")))
    return E, F_e, F_s


def _nemotron_h_moe_layer(b: Builder, i: int, mixer: str, D: int, E: int, F_e: int, F_s: int):
    b.add(f"blk.{i}.ffn_gate_inp.weight", mixer + "gate.weight", (E, D))
    b.add(f"blk.{i}.exp_probs_b.bias",
          b.pick(mixer + "gate.e_score_correction_bias", mixer + "gate.e_score_correction.bias"),
          (E,))
    for hf, gg, shape in (("up_proj", "ffn_up_exps", (F_e, D)),
                          ("down_proj", "ffn_down_exps", (D, F_e))):
        if b.has(f"{mixer}experts.{hf}"):  # transformers 5 in-memory layout, already stacked
            b.add(f"blk.{i}.{gg}.weight", f"{mixer}experts.{hf}", (E, *shape))
            continue
        refs = [b.take(f"{mixer}experts.{e}.{hf}.weight", shape) for e in range(E)]
        b.plan.tensor(f"blk.{i}.{gg}.weight", (E, *shape),
                      lambda refs=refs: np.stack([x.load() for x in refs]),
                      f"{mixer}experts.*.{hf}.weight")
    b.add(f"blk.{i}.ffn_up_shexp.weight", mixer + "shared_experts.up_proj.weight", (F_s, D))
    b.add(f"blk.{i}.ffn_down_shexp.weight", mixer + "shared_experts.down_proj.weight", (D, F_s))


def plan_nemotron_h(ckpt: Checkpoint) -> Plan:
    pattern = ckpt.get("hybrid_override_pattern", None) or ckpt.get("layers_block_type", None)
    moe = bool(pattern) and any(c in ("E", "moe") for c in pattern)
    b = Builder(ckpt, "nemotron_h_moe" if moe else "nemotron_h")
    kinds = _nemotron_h_layer_kinds(b)
    L = len(kinds)
    if b.cfg("num_hidden_layers") not in (None, L):
        b.fail(f"num_hidden_layers {b.cfg('num_hidden_layers')} != {L} layers in the pattern")
    D = int(b.cfg("hidden_size", required=True))
    V = int(b.cfg("vocab_size", required=True))
    n_head = int(b.cfg("num_attention_heads", required=True))
    n_kv = int(b.cfg("num_key_value_heads", n_head))
    d_h = int(b.cfg("head_dim", b.cfg("attention_head_dim", D // n_head)))
    F = int(b.cfg("intermediate_size", required=True))
    eps = float(b.cfg("rms_norm_eps", b.cfg("layer_norm_epsilon", 1e-5)))
    H = int(b.cfg("mamba_num_heads", required=True))
    P = int(b.cfg("mamba_head_dim", required=True))
    N = int(b.cfg("ssm_state_size", required=True))
    G = int(b.cfg("n_groups", b.cfg("mamba_n_groups", 1)))
    K = int(b.cfg("conv_kernel", b.cfg("mamba_d_conv", 4)))
    d_in = H * P
    _check_ssm_dims(b, d_in, H, P, G)
    _check_time_step_limit(b)
    if b.cfg("mlp_hidden_act", "relu2") != "relu2":
        b.fail(f"mlp_hidden_act '{b.cfg('mlp_hidden_act')}' is not supported (only relu2)")
    if b.cfg("mamba_hidden_act", "silu") != "silu":
        b.fail(f"mamba_hidden_act '{b.cfg('mamba_hidden_act')}' is not supported (only silu)")
    if b.cfg("use_bias", False) or b.cfg("mamba_proj_bias", False):
        b.fail("Mamba in_proj/out_proj biases cannot be expressed in a nemotron_h GGUF")
    if "attention" in kinds and n_head % n_kv:
        b.fail(f"num_attention_heads {n_head} is not a multiple of num_key_value_heads {n_kv}")
    mlp_bias = bool(b.cfg("mlp_bias", False))

    _common_keys(b, L, D, V)
    p = b.plan
    p.key("add_context_length", NOPE_CONTEXT_LENGTH)
    if moe:
        E, F_e, F_s = _nemotron_h_moe_keys(b, kinds)
    else:
        p.key("add_feed_forward_length", [F if k == "mlp" else 0 for k in kinds])  # INT32 arrays
    p.key("add_head_count", n_head)
    p.key("add_head_count_kv", [n_kv if k == "attention" else 0 for k in kinds])
    p.key("add_key_length", d_h)
    p.key("add_value_length", d_h)
    # unused (no RoPE in nemotron_h); llama.cpp writes hidden_size / num_attention_heads here
    p.key("add_rope_dimension_count", D // n_head)
    p.key("add_rope_scaling_finetuned", False)
    # llama.cpp's converter writes the (RMS) norm eps of nemotron_h under layer_norm_epsilon, and
    # its loader reads that key (layer_norm_rms_epsilon only as an optional override)
    p.key("add_layer_norm_eps", eps)
    _ssm_keys(b, K, d_in, N, H, G)

    _embeddings(b, "backbone.embeddings.weight", "backbone.norm_f.weight", V, D)
    for i, kind in enumerate(kinds):
        pre = f"backbone.layers.{i}."
        b.add(f"blk.{i}.attn_norm.weight", pre + "norm.weight", (D,))
        mixer = pre + "mixer."
        if kind == "mamba":
            _mamba2_mixer(b, i, mixer, D, d_in, H, G, N, K,
                          conv_bias_required=bool(b.cfg("use_conv_bias", True)))
        elif kind == "attention":
            _attention(b, i, mixer, D, n_head, n_kv, d_h)
        elif kind == "moe":
            _nemotron_h_moe_layer(b, i, mixer, D, E, F_e, F_s)
        else:
            b.add(f"blk.{i}.ffn_up.weight", mixer + "up_proj.weight", (F, D))
            b.add(f"blk.{i}.ffn_down.weight", mixer + "down_proj.weight", (D, F))
            if mlp_bias:
                b.add(f"blk.{i}.ffn_up.bias", mixer + "up_proj.bias", (F,))
                b.add(f"blk.{i}.ffn_down.bias", mixer + "down_proj.bias", (D,))
    return b.finish()


# --------------------------------------------------------------------------------------------------
# lfm2 (Lfm2ForCausalLM) and lfm2moe (Lfm2MoeForCausalLM), Liquid LFM2 / LFM2-MoE. layer_types
# picks a gated short conv ("conv") or attention (q/k RMSNorm, NEOX RoPE: HF's half-split rotation,
# so no q/k permutation) per layer; llama.cpp stores it as head_count_kv = 0 on conv layers. The
# final norm (HF embedding_norm) becomes token_embd_norm, the conv weight {D, 1, L} is squeezed to
# {D, L}. lfm2's feed_forward_length is llama.cpp's adjusted size (2/3, multiplier, rounded up to
# block_multiple_of); lfm2moe keeps intermediate_size for its leading dense layers, stacks the
# per-expert w1/w3/w2 into ffn_{gate,up,down}_exps and writes expert_bias as exp_probs_b.bias.


def _lfm2_ff_dim(b: Builder) -> int:
    ff = int(b.cfg("block_ff_dim", b.cfg("intermediate_size", required=True)))
    if b.cfg("block_auto_adjust_ff_dim", True):
        ff = int(2 * ff / 3)
        mult = b.cfg("block_ffn_dim_multiplier", 1.0)
        if mult is not None:
            ff = int(float(mult) * ff)
        m = int(b.cfg("block_multiple_of", 256))
        ff = m * ((ff + m - 1) // m)
    return ff


def plan_lfm2(ckpt: Checkpoint, moe: bool) -> Plan:
    arch = "lfm2moe" if moe else "lfm2"
    b = Builder(ckpt, arch)
    D = int(b.cfg("hidden_size", required=True))
    L = int(b.cfg("num_hidden_layers", required=True))
    V = int(b.cfg("vocab_size", required=True))
    n_head = int(b.cfg("num_attention_heads", required=True))
    n_kv = int(b.cfg("num_key_value_heads", n_head))
    K = int(b.cfg("conv_L_cache", 3))
    eps = float(b.cfg("norm_eps", 1e-5))
    types = b.cfg("layer_types")
    if types is None and b.cfg("full_attn_idxs") is not None:
        types = ["full_attention" if i in b.cfg("full_attn_idxs") else "conv" for i in range(L)]
    if types is None or len(types) != L or any(t not in ("conv", "full_attention") for t in types):
        b.fail(f"layer_types must list {L} entries of 'conv'/'full_attention', got {types}")
    if "head_dim" in ckpt.config and int(b.cfg("head_dim")) != D // n_head:
        b.fail(f"head_dim {b.cfg('head_dim')} != hidden_size / num_attention_heads")
    d_h = D // n_head
    if n_head % n_kv:
        b.fail(f"num_attention_heads {n_head} is not a multiple of num_key_value_heads {n_kv}")
    if b.cfg("conv_bias", False):
        b.fail("conv_bias = true: llama.cpp's LFM2 short conv has no biases")
    if not 2 <= K <= 16:
        b.fail(f"conv_L_cache {K} outside [2, 16]")
    if b.cfg("sliding_window"):
        b.fail("sliding-window LFM2 attention is not supported by this converter")
    theta = _rope_theta(b, 1000000.0)
    if moe:
        E = int(b.cfg("num_experts", required=True))
        k_used = int(b.cfg("num_experts_per_tok", required=True))
        F_e = int(b.cfg("moe_intermediate_size", required=True))
        n_dense = int(b.cfg("num_dense_layers", 2))
        F = int(b.cfg("intermediate_size", required=True))
        if not 0 < k_used <= E:
            b.fail(f"num_experts_per_tok {k_used} must be in 1..num_experts ({E})")
        if not 0 <= n_dense <= L:
            b.fail(f"num_dense_layers {n_dense} outside [0, {L}]")
        if not b.cfg("use_expert_bias", True):
            b.fail("use_expert_bias = false: llama.cpp's lfm2moe requires the expert bias")
        if not b.cfg("norm_topk_prob", True):
            b.fail("norm_topk_prob = false: llama.cpp's lfm2moe always renormalises the top-k")
        if float(b.cfg("routed_scaling_factor", 1.0)) != 1.0:
            b.fail(f"routed_scaling_factor {b.cfg('routed_scaling_factor')} != 1: llama.cpp's "
                   f"lfm2moe applies no scale")
    else:
        F = _lfm2_ff_dim(b)

    _common_keys(b, L, D, V)
    p = b.plan
    p.key("add_context_length", int(b.cfg("max_position_embeddings", 128000)))
    p.key("add_feed_forward_length", F)
    p.key("add_head_count", n_head)
    p.key("add_head_count_kv", [n_kv if t == "full_attention" else 0 for t in types])
    p.key("add_rope_freq_base", theta)
    p.key("add_layer_norm_rms_eps", eps)
    p.key("add_shortconv_l_cache", K)
    if moe:
        p.key("add_expert_count", E)
        p.key("add_expert_used_count", k_used)
        p.key("add_expert_feed_forward_length", F_e)
        p.key("add_leading_dense_block_count", n_dense)
        p.key("add_expert_gating_func", gguf.ExpertGatingFuncType.SIGMOID)

    b.add("token_embd.weight", "model.embed_tokens.weight", (V, D))
    b.add("token_embd_norm.weight", "model.embedding_norm.weight", (D,))
    if b.cfg("tie_word_embeddings", True):  # Lfm2Config's default
        if b.has("lm_head.weight"):
            b.ignore("lm_head.weight")
    else:
        b.add("output.weight", "lm_head.weight", (V, D))
    for i, kind in enumerate(types):
        pre = f"model.layers.{i}."
        b.add(f"blk.{i}.attn_norm.weight", pre + "operator_norm.weight", (D,))
        b.add(f"blk.{i}.ffn_norm.weight", pre + "ffn_norm.weight", (D,))
        if kind == "conv":
            cv = pre + "conv."
            b.add(f"blk.{i}.shortconv.conv.weight", cv + "conv.weight", (D, 1, K),
                  lambda w: w.reshape(D, K), out_shape=(D, K))
            b.add(f"blk.{i}.shortconv.in_proj.weight", cv + "in_proj.weight", (3 * D, D))
            b.add(f"blk.{i}.shortconv.out_proj.weight", cv + "out_proj.weight", (D, D))
        else:
            at = pre + "self_attn."
            b.add(f"blk.{i}.attn_q.weight", at + "q_proj.weight", (n_head * d_h, D))
            b.add(f"blk.{i}.attn_k.weight", at + "k_proj.weight", (n_kv * d_h, D))
            b.add(f"blk.{i}.attn_v.weight", at + "v_proj.weight", (n_kv * d_h, D))
            b.add(f"blk.{i}.attn_output.weight", at + "out_proj.weight", (D, n_head * d_h))
            b.add(f"blk.{i}.attn_q_norm.weight", at + "q_layernorm.weight", (d_h,))
            b.add(f"blk.{i}.attn_k_norm.weight", at + "k_layernorm.weight", (d_h,))
        ff = pre + "feed_forward."
        if not moe or i < n_dense:
            b.add(f"blk.{i}.ffn_gate.weight", ff + "w1.weight", (F, D))
            b.add(f"blk.{i}.ffn_up.weight", ff + "w3.weight", (F, D))
            b.add(f"blk.{i}.ffn_down.weight", ff + "w2.weight", (D, F))
            continue
        b.add(f"blk.{i}.ffn_gate_inp.weight", ff + "gate.weight", (E, D))
        for hf, gg, shape in (("w1", "ffn_gate_exps", (F_e, D)), ("w3", "ffn_up_exps", (F_e, D)),
                              ("w2", "ffn_down_exps", (D, F_e))):
            refs = [b.take(f"{ff}experts.{e}.{hf}.weight", shape) for e in range(E)]
            b.plan.tensor(f"blk.{i}.{gg}.weight", (E, *shape),
                          lambda refs=refs: np.stack([x.load() for x in refs]),
                          f"{ff}experts.*.{hf}.weight")
        b.add(f"blk.{i}.exp_probs_b.bias", ff + "expert_bias", (E,))
    return b.finish()


PLANNERS = {
    "LlamaForCausalLM": lambda c: plan_llama(c, granite=False),
    "GraniteForCausalLM": lambda c: plan_llama(c, granite=True),
    "Mamba2ForCausalLM": plan_mamba2,
    "GraniteMoeHybridForCausalLM": plan_granitehybrid,
    "NemotronHForCausalLM": plan_nemotron_h,
    "Lfm2ForCausalLM": lambda c: plan_lfm2(c, moe=False),
    "Lfm2MoeForCausalLM": lambda c: plan_lfm2(c, moe=True),
}


# --------------------------------------------------------------------------------------------------
# Qwen3-Next (Qwen3NextForCausalLM -> qwen3next), Qwen3.5 (Qwen3_5ForCausalLM -> qwen35) and
# Qwen3.5-MoE (Qwen3_5MoeForCausalLM -> qwen35moe): gated DeltaNet + gated attention (spec 6.5).
# The transforms are llama.cpp's: every RMSNorm weight except the DeltaNet output norm gets +1
# (HF normalises with 1 + w); A_log -> -exp(A_log); conv1d squeezed to {K, C}; qwen3next's
# per-key-head interleaved in_proj_qkvz split into attn_qkv = [q all | k all | v all] and
# attn_gate = z (value heads keep HF's grouped order), in_proj_ba kept as ssm_ba; for qwen35* the
# value heads are reordered from grouped (by key head) to tiled order wherever they appear
# (v rows of in_proj_qkv and conv1d, in_proj_z, in_proj_a/b, A_log, dt_bias, out_proj columns).


def reorder_v_heads(w: np.ndarray, axis: int, n_k: int, per_k: int, head_dim: int) -> np.ndarray:
    """Grouped [k0v0 .. k0v{r-1}, k1v0, ..] -> tiled [k0v0, k1v0, .., k0v1, k1v1, ..] along axis."""
    axis %= w.ndim
    shape = w.shape
    split = w.reshape(*shape[:axis], n_k, per_k, head_dim, *shape[axis + 1:])
    return np.ascontiguousarray(np.swapaxes(split, axis, axis + 1)).reshape(shape)


def _qwen_layer_kinds(b: Builder, L: int) -> tuple[list[str], int]:
    types = b.cfg("layer_types")
    interval = b.cfg("full_attention_interval")
    if types is None:
        interval = int(interval or 4)
        types = ["linear_attention" if (i + 1) % interval else "full_attention" for i in range(L)]
    if len(types) != L or any(t not in ("linear_attention", "full_attention") for t in types):
        b.fail(f"layer_types must list {L} entries of 'linear_attention'/'full_attention': {types}")
    if interval is None:  # derive it: llama.cpp's loader only knows an interval
        full = [i for i, t in enumerate(types) if t == "full_attention"]
        interval = full[0] + 1 if full else L + 1
    interval = int(interval)
    expect = ["linear_attention" if (i + 1) % interval else "full_attention" for i in range(L)]
    if types != expect:
        b.fail(f"layer_types {types} is not 'every {interval}th layer is full attention', the only "
               f"pattern a GGUF full_attention_interval can express")
    return types, interval


def plan_qwen_hybrid(ckpt: Checkpoint, arch: str) -> Plan:
    b = Builder(ckpt, arch)
    D = int(b.cfg("hidden_size", required=True))
    L = int(b.cfg("num_hidden_layers", required=True))
    V = int(b.cfg("vocab_size", required=True))
    n_head = int(b.cfg("num_attention_heads", required=True))
    n_kv = int(b.cfg("num_key_value_heads", n_head))
    d_h = int(b.cfg("head_dim", D // n_head))
    eps = float(b.cfg("rms_norm_eps", 1e-6))
    K = int(b.cfg("linear_conv_kernel_dim", required=True))
    S = int(b.cfg("linear_key_head_dim", required=True))
    Sv = int(b.cfg("linear_value_head_dim", required=True))
    Hk = int(b.cfg("linear_num_key_heads", required=True))
    Hv = int(b.cfg("linear_num_value_heads", required=True))
    if S != Sv:
        b.fail(f"linear_key_head_dim {S} != linear_value_head_dim {Sv} (llama.cpp assumes equal)")
    if Hv % Hk:
        b.fail(f"linear_num_value_heads {Hv} is not a multiple of linear_num_key_heads {Hk}")
    if n_head % n_kv:
        b.fail(f"num_attention_heads {n_head} is not a multiple of num_key_value_heads {n_kv}")
    if b.cfg("attention_bias", False):
        b.fail("attention_bias = true is not supported")
    if b.cfg("hidden_act", "silu") != "silu":
        b.fail(f"hidden_act '{b.cfg('hidden_act')}' is not supported (SwiGLU needs silu)")
    rope = b.cfg("rope_parameters") or b.cfg("rope_scaling") or {}
    if rope.get("rope_type", rope.get("type", "default")) != "default":
        b.fail(f"RoPE scaling type '{rope.get('rope_type')}' is not supported by this converter")
    theta = float(rope.get("rope_theta", b.cfg("rope_theta", 10000.0)))
    partial = float(rope.get("partial_rotary_factor", b.cfg("partial_rotary_factor", 0.25)))
    types, interval = _qwen_layer_kinds(b, L)
    moe = arch != "qwen35"
    E = int(b.cfg("num_experts", 0)) if moe else 0
    if moe:
        if E <= 0:
            b.fail("num_experts must be > 0 (dense checkpoints are not supported for this arch)")
        if b.cfg("mlp_only_layers") or int(b.cfg("decoder_sparse_step", 1)) != 1:
            # transformers runs such layers with a dense MLP, but no GGUF can carry them: llama.cpp's
            # converter cannot name their tensors for these archs and its loader requires the
            # experts in every layer
            b.fail("mlp_only_layers / decoder_sparse_step != 1 (dense layers in an MoE model) "
                   "cannot be written as a GGUF llama.cpp reads (its qwen3next/qwen35moe loader "
                   "requires experts in every layer)")
        if not b.cfg("norm_topk_prob", True):
            b.fail("norm_topk_prob = false: llama.cpp's qwen3next always renormalises the top-k")
        k_used = int(b.cfg("num_experts_per_tok", required=True))
        F_e = int(b.cfg("moe_intermediate_size", required=True))
        F_s = int(b.cfg("shared_expert_intermediate_size", 0))
    F = int(b.cfg("intermediate_size", 0))

    _common_keys(b, L, D, V, vocab_size_key=False)  # as llama.cpp: no vocab_size for these
    p = b.plan
    p.key("add_context_length", int(b.cfg("max_position_embeddings", 4096)))
    if F:
        p.key("add_feed_forward_length", F)
    p.key("add_head_count", n_head)
    p.key("add_head_count_kv", n_kv)
    p.key("add_rope_freq_base", theta)
    p.key("add_layer_norm_rms_eps", eps)
    p.key("add_key_length", d_h)
    p.key("add_value_length", d_h)
    if moe:
        p.key("add_expert_count", E)
        p.key("add_expert_used_count", k_used)
        p.key("add_expert_feed_forward_length", F_e)
        if F_s:
            p.key("add_expert_shared_feed_forward_length", F_s)
    p.key("add_ssm_conv_kernel", K)
    p.key("add_ssm_state_size", S)
    p.key("add_ssm_group_count", Hk)
    p.key("add_ssm_time_step_rank", Hv)
    p.key("add_ssm_inner_size", Sv * Hv)
    if b.cfg("layer_types") is not None:  # as llama.cpp: the per-layer kinds when listed
        p.key("add_array", f"{arch}.attention.recurrent_layers",
              [t == "linear_attention" for t in types])
    p.key("add_full_attention_interval", interval)
    p.key("add_rope_dimension_count", int(d_h * partial))
    if arch != "qwen3next":  # multi-section RoPE sections, padded to 4 (text: all equal)
        sections = list(rope.get("mrope_section", [11, 11, 10]))
        p.key("add_rope_dimension_sections", sections + [0] * (4 - len(sections)))

    plus1 = lambda w: w + np.float32(1)  # noqa: E731
    tiled = arch != "qwen3next" and Hk != Hv
    r = Hv // Hk

    def vre(axis: int, head_dim: int):
        if not tiled:
            return None
        return lambda w: reorder_v_heads(w, axis, Hk, r, head_dim)

    b.add("token_embd.weight", "model.embed_tokens.weight", (V, D))
    b.add("output_norm.weight", "model.norm.weight", (D,), plus1)
    if b.cfg("tie_word_embeddings", False):
        if b.has("lm_head.weight"):
            b.ignore("lm_head.weight")
    else:
        b.add("output.weight", "lm_head.weight", (V, D))
    key_dim, val_dim = Hk * S, Hv * S
    conv_dim = 2 * key_dim + val_dim
    for i in range(L):
        pre = f"model.layers.{i}."
        b.add(f"blk.{i}.attn_norm.weight", pre + "input_layernorm.weight", (D,), plus1)
        b.add(f"blk.{i}.post_attention_norm.weight", pre + "post_attention_layernorm.weight", (D,),
              plus1)
        if types[i] == "full_attention":
            at = pre + "self_attn."
            b.add(f"blk.{i}.attn_q.weight", at + "q_proj.weight", (2 * n_head * d_h, D))
            b.add(f"blk.{i}.attn_k.weight", at + "k_proj.weight", (n_kv * d_h, D))
            b.add(f"blk.{i}.attn_v.weight", at + "v_proj.weight", (n_kv * d_h, D))
            b.add(f"blk.{i}.attn_output.weight", at + "o_proj.weight", (D, n_head * d_h))
            b.add(f"blk.{i}.attn_q_norm.weight", at + "q_norm.weight", (d_h,), plus1)
            b.add(f"blk.{i}.attn_k_norm.weight", at + "k_norm.weight", (d_h,), plus1)
        else:
            la = pre + "linear_attn."
            if arch == "qwen3next":
                ref = b.take(la + "in_proj_qkvz.weight", (2 * key_dim + 2 * val_dim, D))

                def split_qkvz(part, ref=ref):
                    w = ref.load().reshape(Hk, 2 * S + 2 * r * S, D)
                    q, k, v, z = np.split(w, [S, 2 * S, 2 * S + r * S], axis=1)
                    if part == "z":
                        return np.ascontiguousarray(z.reshape(val_dim, D))
                    return np.ascontiguousarray(np.concatenate(
                        [q.reshape(key_dim, D), k.reshape(key_dim, D), v.reshape(val_dim, D)]))
                b.plan.tensor(f"blk.{i}.attn_qkv.weight", (conv_dim, D),
                              lambda f=split_qkvz: f("qkv"), la + "in_proj_qkvz.weight (q, k, v)")
                b.plan.tensor(f"blk.{i}.attn_gate.weight", (val_dim, D),
                              lambda f=split_qkvz: f("z"), la + "in_proj_qkvz.weight (z)")
                b.add(f"blk.{i}.ssm_ba.weight", la + "in_proj_ba.weight", (2 * Hv, D))
            else:
                def qkv_t(w):
                    if not tiled:
                        return w
                    return np.concatenate([w[:2 * key_dim],
                                           reorder_v_heads(w[2 * key_dim:], 0, Hk, r, S)])
                b.add(f"blk.{i}.attn_qkv.weight", la + "in_proj_qkv.weight", (conv_dim, D), qkv_t)
                b.add(f"blk.{i}.attn_gate.weight", la + "in_proj_z.weight", (val_dim, D), vre(0, S))
                b.add(f"blk.{i}.ssm_beta.weight", la + "in_proj_b.weight", (Hv, D), vre(0, 1))
                b.add(f"blk.{i}.ssm_alpha.weight", la + "in_proj_a.weight", (Hv, D), vre(0, 1))

            def conv_t(w):
                w = w.reshape(conv_dim, K)
                if tiled:
                    w = np.concatenate([w[:2 * key_dim],
                                        reorder_v_heads(w[2 * key_dim:], 0, Hk, r, S)])
                return w
            b.add(f"blk.{i}.ssm_conv1d.weight", la + "conv1d.weight", (conv_dim, 1, K), conv_t,
                  out_shape=(conv_dim, K))
            re1 = vre(0, 1)
            b.add(f"blk.{i}.ssm_a", la + "A_log", (Hv,),
                  (lambda a, re1=re1: neg_exp(re1(a) if re1 else a)))
            b.add(f"blk.{i}.ssm_dt.bias", la + "dt_bias", (Hv,), re1)
            b.add(f"blk.{i}.ssm_norm.weight", la + "norm.weight", (S,))
            b.add(f"blk.{i}.ssm_out.weight", la + "out_proj.weight", (D, val_dim), vre(1, S))
        ml = pre + "mlp."
        if not moe:
            b.add(f"blk.{i}.ffn_gate.weight", ml + "gate_proj.weight", (F, D))
            b.add(f"blk.{i}.ffn_up.weight", ml + "up_proj.weight", (F, D))
            b.add(f"blk.{i}.ffn_down.weight", ml + "down_proj.weight", (D, F))
            continue
        b.add(f"blk.{i}.ffn_gate_inp.weight", ml + "gate.weight", (E, D))
        for hf, gg, shape in (("gate_proj", "ffn_gate_exps", (F_e, D)),
                              ("up_proj", "ffn_up_exps", (F_e, D)),
                              ("down_proj", "ffn_down_exps", (D, F_e))):
            refs = [b.take(f"{ml}experts.{e}.{hf}.weight", shape) for e in range(E)]
            b.plan.tensor(f"blk.{i}.{gg}.weight", (E, *shape),
                          lambda refs=refs: np.stack([x.load() for x in refs]),
                          f"{ml}experts.*.{hf}.weight")
        if F_s:
            sh = ml + "shared_expert."
            b.add(f"blk.{i}.ffn_gate_shexp.weight", sh + "gate_proj.weight", (F_s, D))
            b.add(f"blk.{i}.ffn_up_shexp.weight", sh + "up_proj.weight", (F_s, D))
            b.add(f"blk.{i}.ffn_down_shexp.weight", sh + "down_proj.weight", (D, F_s))
            b.add(f"blk.{i}.ffn_gate_inp_shexp.weight", ml + "shared_expert_gate.weight", (1, D))
    # multi-token-prediction head (mtp.*): left out, as llama.cpp's converter does with --no-mtp;
    # chimera's loader also reads files that carry it (nextn blocks), without using it
    for name in list(b.ckpt.tensors):
        if name.startswith(("mtp.", "model.mtp.")):
            b.ignore(name)
    return b.finish()


PLANNERS.update({
    "Qwen3NextForCausalLM": lambda c: plan_qwen_hybrid(c, "qwen3next"),
    "Qwen3_5ForCausalLM": lambda c: plan_qwen_hybrid(c, "qwen35"),
    "Qwen3_5MoeForCausalLM": lambda c: plan_qwen_hybrid(c, "qwen35moe"),
})


# --------------------------------------------------------------------------------------------------
# falcon-h1 (FalconH1ForCausalLM): every layer runs attention (NEOX RoPE) and Mamba2 in parallel on
# the same normed input, sums them into the residual, then a SwiGLU FFN. As llama.cpp's converter
# does, every muP multiplier is folded into the weights, none is written as metadata: embedding
# (token_embd), lm_head (output), attention_in (q, k, v), key (k), attention_out (o), ssm_in and
# the five ssm_multipliers (row segments z, x, B, C, dt of ssm_in), ssm_out, mlp gate and down.
# Each fold multiplies in float32, in llama.cpp's order.


def _scaled(*factors: float):
    def f(w: np.ndarray) -> np.ndarray:
        for m in factors:
            w = w * np.float32(m)
        return w
    return f


def plan_falcon_h1(ckpt: Checkpoint) -> Plan:
    b = Builder(ckpt, "falcon-h1")
    D = int(b.cfg("hidden_size", required=True))
    L = int(b.cfg("num_hidden_layers", required=True))
    V = int(b.cfg("vocab_size", required=True))
    n_head = int(b.cfg("num_attention_heads", required=True))
    n_kv = int(b.cfg("num_key_value_heads", n_head) or n_head)
    d_h = int(b.cfg("head_dim") or D // n_head)
    F = int(b.cfg("intermediate_size", required=True))
    eps = float(b.cfg("rms_norm_eps", 1e-5))
    d_in = b.cfg("mamba_d_ssm")
    d_in = int(d_in) if d_in is not None else int(b.cfg("mamba_expand", 2)) * D
    H = int(b.cfg("mamba_n_heads", required=True))
    P = b.cfg("mamba_d_head", "auto")
    P = d_in // H if P == "auto" else int(P)
    G = int(b.cfg("mamba_n_groups", 1))
    N = int(b.cfg("mamba_d_state", 256))
    K = int(b.cfg("mamba_d_conv", 4))
    _check_ssm_dims(b, d_in, H, P, G)
    _check_time_step_limit(b)
    if b.cfg("hidden_act", "silu") != "silu":
        b.fail(f"hidden_act '{b.cfg('hidden_act')}' is not supported (only silu)")
    for flag in ("attention_bias", "mlp_bias", "projectors_bias", "mamba_proj_bias"):
        if b.cfg(flag, False):
            b.fail(f"{flag} = true is not supported by this converter")
    rms_norm = bool(b.cfg("mamba_rms_norm", False))
    if rms_norm and b.cfg("mamba_norm_before_gate", True):
        b.fail("mamba_rms_norm with mamba_norm_before_gate: llama.cpp gates before its SSM norm")
    if n_head % n_kv:
        b.fail(f"num_attention_heads {n_head} is not a multiple of num_key_value_heads {n_kv}")
    mlp_m = [float(x) for x in (b.cfg("mlp_multipliers") or [1.0, 1.0])]
    ssm_m = [float(x) for x in (b.cfg("ssm_multipliers") or [1.0] * 5)]
    if len(mlp_m) != 2 or len(ssm_m) != 5:
        b.fail(f"mlp_multipliers {mlp_m} / ssm_multipliers {ssm_m} need 2 / 5 entries")
    mult = {k: float(b.cfg(k, 1.0)) for k in (
        "embedding_multiplier", "lm_head_multiplier", "attention_in_multiplier",
        "attention_out_multiplier", "key_multiplier", "ssm_in_multiplier", "ssm_out_multiplier")}
    if b.cfg("tie_word_embeddings", False):
        b.fail("tied embeddings: the embedding and lm_head multipliers fold into different copies")
    theta = _rope_theta(b, 10000.0)

    _common_keys(b, L, D, V)
    p = b.plan
    p.key("add_context_length", int(b.cfg("max_position_embeddings", 8192)))
    p.key("add_feed_forward_length", F)
    p.key("add_head_count", n_head)
    p.key("add_head_count_kv", n_kv)
    p.key("add_key_length", d_h)
    p.key("add_value_length", d_h)
    p.key("add_ssm_conv_kernel", K)
    p.key("add_ssm_inner_size", d_in)
    p.key("add_ssm_state_size", N)
    p.key("add_ssm_time_step_rank", d_in // P)
    p.key("add_ssm_group_count", G)
    p.key("add_layer_norm_rms_eps", eps)
    p.key("add_rope_freq_base", theta)

    GN = G * N
    d_proj = 2 * d_in + 2 * GN + H
    bounds = [0, d_in, 2 * d_in, 2 * d_in + GN, 2 * d_in + 2 * GN, d_proj]

    def in_proj(w: np.ndarray) -> np.ndarray:
        w = w * np.float32(mult["ssm_in_multiplier"])
        for s in range(5):
            w[bounds[s]:bounds[s + 1]] *= np.float32(ssm_m[s])
        return w

    b.add("token_embd.weight", "model.embed_tokens.weight", (V, D),
          _scaled(mult["embedding_multiplier"]))
    b.add("output_norm.weight", "model.final_layernorm.weight", (D,))
    b.add("output.weight", "lm_head.weight", (V, D), _scaled(mult["lm_head_multiplier"]))
    a_in = mult["attention_in_multiplier"]
    for i in range(L):
        pre = f"model.layers.{i}."
        at, mb, ff = pre + "self_attn.", pre + "mamba.", pre + "feed_forward."
        b.add(f"blk.{i}.attn_norm.weight", pre + "input_layernorm.weight", (D,))
        b.add(f"blk.{i}.attn_q.weight", at + "q_proj.weight", (n_head * d_h, D), _scaled(a_in))
        b.add(f"blk.{i}.attn_k.weight", at + "k_proj.weight", (n_kv * d_h, D),
              _scaled(mult["key_multiplier"], a_in))
        b.add(f"blk.{i}.attn_v.weight", at + "v_proj.weight", (n_kv * d_h, D), _scaled(a_in))
        b.add(f"blk.{i}.attn_output.weight", at + "o_proj.weight", (D, n_head * d_h),
              _scaled(mult["attention_out_multiplier"]))
        C = d_in + 2 * GN
        b.add(f"blk.{i}.ssm_in.weight", mb + "in_proj.weight", (d_proj, D), in_proj)
        b.add(f"blk.{i}.ssm_conv1d.weight", mb + "conv1d.weight", (C, 1, K),
              lambda w, C=C: w.reshape(C, K), out_shape=(C, K))
        if b.has(mb + "conv1d.bias") or b.cfg("mamba_conv_bias", True):
            b.add(f"blk.{i}.ssm_conv1d.bias", mb + "conv1d.bias", (C,))
        b.add(f"blk.{i}.ssm_dt.bias", mb + "dt_bias", (H,))
        b.add(f"blk.{i}.ssm_a", mb + "A_log", (H,), lambda a: neg_exp(a).reshape(H, 1),
              out_shape=(H, 1))
        b.add(f"blk.{i}.ssm_d", mb + "D", (H,), lambda d: d.reshape(H, 1), out_shape=(H, 1))
        if rms_norm:
            b.add(f"blk.{i}.ssm_norm.weight", mb + "norm.weight", (d_in,),
                  lambda w: w.reshape(G, d_in // G), out_shape=(G, d_in // G))
        b.add(f"blk.{i}.ssm_out.weight", mb + "out_proj.weight", (D, d_in),
              _scaled(mult["ssm_out_multiplier"]))
        # no ".weight": gguf-py maps the full HF name to FFN_PRE_NORM, and llama.cpp's falcon-h1
        # loader asks for exactly "blk.N.ffn_norm"
        b.add(f"blk.{i}.ffn_norm", pre + "pre_ff_layernorm.weight", (D,))
        b.add(f"blk.{i}.ffn_gate.weight", ff + "gate_proj.weight", (F, D), _scaled(mlp_m[0]))
        b.add(f"blk.{i}.ffn_up.weight", ff + "up_proj.weight", (F, D))
        b.add(f"blk.{i}.ffn_down.weight", ff + "down_proj.weight", (D, F), _scaled(mlp_m[1]))
    return b.finish()


PLANNERS["FalconH1ForCausalLM"] = plan_falcon_h1
from .gemma3 import plan_gemma3  # noqa: E402  (its own file; it imports Builder from here)

PLANNERS["Gemma3ForCausalLM"] = plan_gemma3
