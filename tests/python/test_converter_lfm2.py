"""The converter's LFM2 / LFM2-MoE paths (python/chimera_convert/archs.py, plan_lfm2): every tensor
of a small random numpy checkpoint checked element by element against expectations written here
from llama.cpp's conventions (head_count_kv 0 on conv layers, token_embd_norm, the squeezed conv
weight, no q/k permutation for NEOX RoPE, llama.cpp's adjusted feed_forward_length, stacked
experts, exp_probs_b), the refusals, and the metadata of the committed fixtures.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import gguf
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "python"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from chimera_convert import ConversionError  # noqa: E402
from convert_hf_to_gguf import convert  # noqa: E402
from test_converter_nemotron_h import read, write_checkpoint  # noqa: E402

FIXTURES = REPO / "tests/fixtures/models"

D, V, NH, NKV, K = 16, 384, 4, 2, 3
DH = D // NH
TYPES = ["conv", "full_attention", "conv", "full_attention"]
F_HF, MULT = 60, 8  # llama.cpp: 8 * ceil(int(2 * 60 / 3) / 8) = 40
F = 40
E, KU, FE, NDENSE = 4, 2, 12, 1


def checkpoint(rng: np.random.Generator, moe: bool, tied: bool = True):
    cfg = dict(architectures=["Lfm2MoeForCausalLM" if moe else "Lfm2ForCausalLM"],
               hidden_size=D, vocab_size=V, num_hidden_layers=len(TYPES), layer_types=TYPES,
               num_attention_heads=NH, num_key_value_heads=NKV, conv_L_cache=K, norm_eps=1e-5,
               max_position_embeddings=4096, tie_word_embeddings=tied,
               rope_parameters={"rope_type": "default", "rope_theta": 1000000.0})
    if moe:
        cfg.update(intermediate_size=F, moe_intermediate_size=FE, num_experts=E,
                   num_experts_per_tok=KU, num_dense_layers=NDENSE, use_expert_bias=True,
                   norm_topk_prob=True, routed_scaling_factor=1.0)
    else:
        cfg.update(intermediate_size=F_HF, block_multiple_of=MULT, block_ffn_dim_multiplier=1.0,
                   block_auto_adjust_ff_dim=True)
    r = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    t = {"model.embed_tokens.weight": r(V, D), "model.embedding_norm.weight": r(D)}
    if not tied:
        t["lm_head.weight"] = r(V, D)
    for i, kind in enumerate(TYPES):
        p = f"model.layers.{i}."
        t[p + "operator_norm.weight"] = r(D)
        t[p + "ffn_norm.weight"] = r(D)
        if kind == "conv":
            t.update({p + "conv.conv.weight": r(D, 1, K), p + "conv.in_proj.weight": r(3 * D, D),
                      p + "conv.out_proj.weight": r(D, D)})
        else:
            a = p + "self_attn."
            t.update({a + "q_proj.weight": r(NH * DH, D), a + "k_proj.weight": r(NKV * DH, D),
                      a + "v_proj.weight": r(NKV * DH, D), a + "out_proj.weight": r(D, D),
                      a + "q_layernorm.weight": r(DH), a + "k_layernorm.weight": r(DH)})
        ff = p + "feed_forward."
        if moe and i >= NDENSE:
            t[ff + "gate.weight"] = r(E, D)
            t[ff + "expert_bias"] = r(E)
            for e in range(E):
                t.update({f"{ff}experts.{e}.w1.weight": r(FE, D),
                          f"{ff}experts.{e}.w3.weight": r(FE, D),
                          f"{ff}experts.{e}.w2.weight": r(D, FE)})
        else:
            t.update({ff + "w1.weight": r(F, D), ff + "w3.weight": r(F, D),
                      ff + "w2.weight": r(D, F)})
    return cfg, t


@pytest.mark.parametrize("moe, tied", [(False, True), (False, False), (True, False)])
def test_every_tensor_and_key(tmp_path, moe, tied):
    cfg, src = checkpoint(np.random.default_rng(3), moe, tied)
    out = tmp_path / "out.gguf"
    convert(write_checkpoint(tmp_path, cfg, src), out, "f32")
    f, types, t = read(out)
    a = "lfm2moe" if moe else "lfm2"
    assert f["general.architecture"] == a
    assert f[f"{a}.block_count"] == len(TYPES)
    assert f[f"{a}.context_length"] == 4096
    assert f[f"{a}.embedding_length"] == D
    assert f[f"{a}.feed_forward_length"] == F
    assert f[f"{a}.attention.head_count"] == NH
    assert types[f"{a}.attention.head_count_kv"][0] == "ARRAY"
    assert f[f"{a}.attention.head_count_kv"] == [NKV if k != "conv" else 0 for k in TYPES]
    assert f[f"{a}.rope.freq_base"] == 1000000.0
    assert f[f"{a}.attention.layer_norm_rms_epsilon"] == pytest.approx(1e-5)
    assert f[f"{a}.shortconv.l_cache"] == K
    assert f"{a}.attention.key_length" not in f  # llama.cpp writes it only for a head_dim key
    if moe:
        assert (f[f"{a}.expert_count"], f[f"{a}.expert_used_count"],
                f[f"{a}.expert_feed_forward_length"], f[f"{a}.leading_dense_block_count"],
                f[f"{a}.expert_gating_func"]) == (E, KU, FE, NDENSE, 2)

    want = {"token_embd.weight": src["model.embed_tokens.weight"],
            "token_embd_norm.weight": src["model.embedding_norm.weight"]}
    if not tied:
        want["output.weight"] = src["lm_head.weight"]
    for i, kind in enumerate(TYPES):
        p, b = f"model.layers.{i}.", f"blk.{i}."
        want[b + "attn_norm.weight"] = src[p + "operator_norm.weight"]
        want[b + "ffn_norm.weight"] = src[p + "ffn_norm.weight"]
        if kind == "conv":
            want.update({b + "shortconv.conv.weight": src[p + "conv.conv.weight"][:, 0, :],
                         b + "shortconv.in_proj.weight": src[p + "conv.in_proj.weight"],
                         b + "shortconv.out_proj.weight": src[p + "conv.out_proj.weight"]})
        else:
            s = p + "self_attn."
            want.update({b + "attn_q.weight": src[s + "q_proj.weight"],  # NEOX: no permutation
                         b + "attn_k.weight": src[s + "k_proj.weight"],
                         b + "attn_v.weight": src[s + "v_proj.weight"],
                         b + "attn_output.weight": src[s + "out_proj.weight"],
                         b + "attn_q_norm.weight": src[s + "q_layernorm.weight"],
                         b + "attn_k_norm.weight": src[s + "k_layernorm.weight"]})
        ff = p + "feed_forward."
        if moe and i >= NDENSE:
            want[b + "ffn_gate_inp.weight"] = src[ff + "gate.weight"]
            want[b + "exp_probs_b.bias"] = src[ff + "expert_bias"]
            for hf, gg in (("w1", "ffn_gate_exps"), ("w3", "ffn_up_exps"), ("w2", "ffn_down_exps")):
                want[f"{b}{gg}.weight"] = np.stack([src[f"{ff}experts.{e}.{hf}.weight"]
                                                    for e in range(E)])
        else:
            want.update({b + "ffn_gate.weight": src[ff + "w1.weight"],
                         b + "ffn_up.weight": src[ff + "w3.weight"],
                         b + "ffn_down.weight": src[ff + "w2.weight"]})
    assert set(t) == set(want)
    for name, w in want.items():
        assert t[name].shape == w.shape, name
        np.testing.assert_array_equal(t[name], w, err_msg=name)


@pytest.mark.parametrize("moe, change, match", [
    (False, dict(conv_bias=True), "conv_bias"),
    (False, dict(layer_types=["conv", "mamba", "conv", "full_attention"]), "layer_types"),
    (False, dict(intermediate_size=90), "w1.weight"),  # adjusted size 64 != the tensors' 40
    (True, dict(routed_scaling_factor=2.0), "routed_scaling_factor"),
    (True, dict(norm_topk_prob=False), "norm_topk_prob"),
    (True, dict(use_expert_bias=False), "use_expert_bias"),
])
def test_refusals_write_nothing(tmp_path, moe, change, match):
    cfg, src = checkpoint(np.random.default_rng(5), moe)
    cfg.update(change)
    out = tmp_path / "out.gguf"
    with pytest.raises(ConversionError, match=match):
        convert(write_checkpoint(tmp_path, cfg, src), out, "f32")
    assert not out.exists()


@pytest.mark.parametrize("name", ["lfm2", "lfm2moe"])
@pytest.mark.parametrize("outtype", ["f32", "f16"])
def test_committed_fixture_metadata(name, outtype):
    ref = json.loads((FIXTURES / name / "reference.json").read_text())
    cfg = ref["config"]
    assert ref["gguf_architecture"] == name
    f, _, _ = read(FIXTURES / name / f"model-{outtype}.gguf")
    assert f["general.file_type"] == (0 if outtype == "f32" else 1)
    assert f[f"{name}.attention.head_count_kv"] == [
        cfg["num_key_value_heads"] if k == "full_attention" else 0 for k in cfg["layer_types"]]
    assert f[f"{name}.shortconv.l_cache"] == cfg["conv_L_cache"]
    g = gguf.GGUFReader(str(FIXTURES / name / f"model-{outtype}.gguf"))
    for x in g.tensors:  # matrices follow outtype; norms, conv, router, biases stay F32
        matrix = len(x.shape) >= 2 and x.name.endswith(".weight") and "norm" not in x.name \
            and "shortconv.conv" not in x.name and "ffn_gate_inp" not in x.name
        want = gguf.GGMLQuantizationType.F16 if matrix and outtype == "f16" else \
            gguf.GGMLQuantizationType.F32
        assert x.tensor_type == want, x.name
