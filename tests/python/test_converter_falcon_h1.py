"""The converter's Falcon-H1 path (python/chimera_convert/archs.py, plan_falcon_h1): every tensor
of a small random numpy checkpoint checked against expectations written here from llama.cpp's
conventions (each muP multiplier folded into its weights in float32, in llama.cpp's order; the five
ssm_multipliers on the z / x / B / C / dt row segments of ssm_in; no q/k permutation for NEOX
RoPE), the keys, the refusals, and the metadata of the committed falcon-h1 fixture.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "python"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from chimera_convert import ConversionError  # noqa: E402
from convert_hf_to_gguf import convert  # noqa: E402
from test_converter_nemotron_h import read, write_checkpoint  # noqa: E402

FIXTURES = REPO / "tests/fixtures/models"
D, V, L, NH, NKV, DH, F = 16, 384, 2, 2, 1, 12, 24
DSSM, H, P, G, N, K = 24, 3, 8, 1, 4, 3
M = dict(embedding_multiplier=1.5, lm_head_multiplier=0.3, attention_in_multiplier=0.7,
         attention_out_multiplier=1.1, key_multiplier=0.45, ssm_in_multiplier=1.3,
         ssm_out_multiplier=0.85)
MLP_M, SSM_M = [1.2, 0.6], [0.5, 1.7, 0.9, 1.4, 0.8]


def checkpoint(rng: np.random.Generator, rms_norm: bool = False):
    cfg = dict(architectures=["FalconH1ForCausalLM"], hidden_size=D, vocab_size=V,
               num_hidden_layers=L, num_attention_heads=NH, num_key_value_heads=NKV, head_dim=DH,
               intermediate_size=F, rms_norm_eps=1e-5, max_position_embeddings=1024,
               rope_theta=1e11, mamba_d_ssm=DSSM, mamba_n_heads=H, mamba_d_head=P,
               mamba_n_groups=G, mamba_d_state=N, mamba_d_conv=K, mamba_rms_norm=rms_norm,
               mamba_norm_before_gate=False, tie_word_embeddings=False,
               mlp_multipliers=MLP_M, ssm_multipliers=SSM_M, **M)
    r = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    C, dp = DSSM + 2 * G * N, 2 * DSSM + 2 * G * N + H
    t = {"model.embed_tokens.weight": r(V, D), "lm_head.weight": r(V, D),
         "model.final_layernorm.weight": r(D)}
    for i in range(L):
        p = f"model.layers.{i}."
        t.update({p + "input_layernorm.weight": r(D), p + "pre_ff_layernorm.weight": r(D),
                  p + "self_attn.q_proj.weight": r(NH * DH, D),
                  p + "self_attn.k_proj.weight": r(NKV * DH, D),
                  p + "self_attn.v_proj.weight": r(NKV * DH, D),
                  p + "self_attn.o_proj.weight": r(D, NH * DH),
                  p + "mamba.in_proj.weight": r(dp, D), p + "mamba.conv1d.weight": r(C, 1, K),
                  p + "mamba.conv1d.bias": r(C), p + "mamba.dt_bias": r(H),
                  p + "mamba.A_log": r(H), p + "mamba.D": r(H),
                  p + "mamba.out_proj.weight": r(D, DSSM),
                  p + "feed_forward.gate_proj.weight": r(F, D),
                  p + "feed_forward.up_proj.weight": r(F, D),
                  p + "feed_forward.down_proj.weight": r(D, F)})
        if rms_norm:
            t[p + "mamba.norm.weight"] = r(DSSM)
    return cfg, t


def f32(*factors):
    def f(w):
        for m in factors:
            w = (w * np.float32(m)).astype(np.float32)
        return w
    return f


@pytest.mark.parametrize("rms_norm", [False, True])
def test_every_tensor_and_key(tmp_path, rms_norm):
    cfg, src = checkpoint(np.random.default_rng(11), rms_norm)
    out = tmp_path / "out.gguf"
    convert(write_checkpoint(tmp_path, cfg, src), out, "f32")
    f, _, t = read(out)
    a = "falcon-h1"
    assert f["general.architecture"] == a
    assert (f[f"{a}.block_count"], f[f"{a}.embedding_length"], f[f"{a}.feed_forward_length"],
            f[f"{a}.attention.head_count"], f[f"{a}.attention.head_count_kv"],
            f[f"{a}.attention.key_length"], f[f"{a}.attention.value_length"],
            f[f"{a}.context_length"]) == (L, D, F, NH, NKV, DH, DH, 1024)
    assert (f[f"{a}.ssm.conv_kernel"], f[f"{a}.ssm.inner_size"], f[f"{a}.ssm.state_size"],
            f[f"{a}.ssm.time_step_rank"], f[f"{a}.ssm.group_count"]) == (K, DSSM, N, H, G)
    assert f[f"{a}.rope.freq_base"] == pytest.approx(1e11)
    assert not any("multiplier" in k or "scale" in k for k in f)  # all folded into weights
    want = {"token_embd.weight": f32(M["embedding_multiplier"])(src["model.embed_tokens.weight"]),
            "output.weight": f32(M["lm_head_multiplier"])(src["lm_head.weight"]),
            "output_norm.weight": src["model.final_layernorm.weight"]}
    GN = G * N
    seg = [0, DSSM, 2 * DSSM, 2 * DSSM + GN, 2 * DSSM + 2 * GN, 2 * DSSM + 2 * GN + H]
    for i in range(L):
        p, b = f"model.layers.{i}.", f"blk.{i}."
        w_in = f32(M["ssm_in_multiplier"])(src[p + "mamba.in_proj.weight"])
        for s in range(5):
            w_in[seg[s]:seg[s + 1]] = f32(SSM_M[s])(w_in[seg[s]:seg[s + 1]])
        a_in = M["attention_in_multiplier"]
        want.update({
            b + "attn_norm.weight": src[p + "input_layernorm.weight"],
            b + "ffn_norm": src[p + "pre_ff_layernorm.weight"],  # llama.cpp's name, no .weight
            b + "attn_q.weight": f32(a_in)(src[p + "self_attn.q_proj.weight"]),
            b + "attn_k.weight": f32(M["key_multiplier"], a_in)(src[p + "self_attn.k_proj.weight"]),
            b + "attn_v.weight": f32(a_in)(src[p + "self_attn.v_proj.weight"]),
            b + "attn_output.weight": f32(M["attention_out_multiplier"])(
                src[p + "self_attn.o_proj.weight"]),
            b + "ssm_in.weight": w_in,
            b + "ssm_conv1d.weight": src[p + "mamba.conv1d.weight"][:, 0, :],
            b + "ssm_conv1d.bias": src[p + "mamba.conv1d.bias"],
            b + "ssm_dt.bias": src[p + "mamba.dt_bias"],
            b + "ssm_a": (-np.exp(src[p + "mamba.A_log"].astype(np.float64)))
            .astype(np.float32)[:, None],
            b + "ssm_d": src[p + "mamba.D"][:, None],
            b + "ssm_out.weight": f32(M["ssm_out_multiplier"])(src[p + "mamba.out_proj.weight"]),
            b + "ffn_gate.weight": f32(MLP_M[0])(src[p + "feed_forward.gate_proj.weight"]),
            b + "ffn_up.weight": src[p + "feed_forward.up_proj.weight"],
            b + "ffn_down.weight": f32(MLP_M[1])(src[p + "feed_forward.down_proj.weight"])})
        if rms_norm:
            want[b + "ssm_norm.weight"] = src[p + "mamba.norm.weight"].reshape(G, DSSM // G)
    assert set(t) == set(want)
    for name, w in want.items():
        assert t[name].shape == w.shape, name
        np.testing.assert_array_equal(t[name], w, err_msg=name)


@pytest.mark.parametrize("change, match", [
    (dict(mamba_rms_norm=True, mamba_norm_before_gate=True), "gates before"),
    (dict(tie_word_embeddings=True), "tied"),
    (dict(attention_bias=True), "attention_bias"),
    (dict(ssm_multipliers=[1.0, 1.0]), "5 entries"),
    (dict(mamba_d_head=5), "n_heads"),
])
def test_refusals_write_nothing(tmp_path, change, match):
    cfg, src = checkpoint(np.random.default_rng(12))
    cfg.update(change)
    out = tmp_path / "out.gguf"
    with pytest.raises(ConversionError, match=match):
        convert(write_checkpoint(tmp_path, cfg, src), out, "f32")
    assert not out.exists()


def test_committed_fixture_metadata():
    ref = json.loads((FIXTURES / "falcon-h1" / "reference.json").read_text())
    cfg = ref["config"]
    assert ref["gguf_architecture"] == "falcon-h1"
    f, _, t = read(FIXTURES / "falcon-h1" / "model-f32.gguf")
    assert f["falcon-h1.ssm.inner_size"] == cfg["mamba_d_ssm"] != 2 * cfg["hidden_size"]
    # every multiplier of the fixture differs from 1, so that each fold is exercised
    for k in M:
        assert cfg[k] != 1.0, k
    assert all(m != 1.0 for m in cfg["mlp_multipliers"] + cfg["ssm_multipliers"])
    assert "blk.0.ssm_norm.weight" not in t and not cfg["mamba_rms_norm"]
