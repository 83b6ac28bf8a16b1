"""The converter's Gemma 3 path (python/chimera_convert/gemma3.py): every tensor of a small random
numpy checkpoint checked element by element against llama.cpp's conventions (every norm written as
1 + w, no q/k permutation, token_embd cut to the tokenizer's len(vocab) + len(added_tokens) rows),
the keys (sliding window, both RoPE bases, softcap, the pattern only when it is not llama.cpp's
default), the refusals, and the metadata of the committed gemma3 fixture.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_converter_nemotron_h import (  # noqa: E402
    FIXTURES, ConversionError, convert, read, write_checkpoint)

D, V, NH, NKV, DH, F, L = 16, 384, 2, 1, 12, 24, 7
N_TOKENIZER = 376 + 4  # the CI tokenizer: 376 vocab entries + 4 added tokens (llama.cpp's count)


def checkpoint(rng: np.random.Generator, **over):
    cfg = dict(architectures=["Gemma3ForCausalLM"], hidden_size=D, vocab_size=V,
               num_hidden_layers=L, num_attention_heads=NH, num_key_value_heads=NKV, head_dim=DH,
               query_pre_attn_scalar=DH, intermediate_size=F, rms_norm_eps=1e-6,
               sliding_window=8, hidden_activation="gelu_pytorch_tanh",
               rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": 1e6},
                                "sliding_attention": {"rope_type": "default",
                                                      "rope_theta": 1e4}},
               tie_word_embeddings=True)
    cfg.update(over)
    r = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    t = {"model.embed_tokens.weight": r(V, D), "model.norm.weight": r(D)}
    for i in range(L):
        p = f"model.layers.{i}."
        a = p + "self_attn."
        t.update({p + "input_layernorm.weight": r(D), p + "post_attention_layernorm.weight": r(D),
                  p + "pre_feedforward_layernorm.weight": r(D),
                  p + "post_feedforward_layernorm.weight": r(D),
                  a + "q_proj.weight": r(NH * DH, D), a + "k_proj.weight": r(NKV * DH, D),
                  a + "v_proj.weight": r(NKV * DH, D), a + "o_proj.weight": r(D, NH * DH),
                  a + "q_norm.weight": r(DH), a + "k_norm.weight": r(DH),
                  p + "mlp.gate_proj.weight": r(F, D), p + "mlp.up_proj.weight": r(F, D),
                  p + "mlp.down_proj.weight": r(D, F)})
    return cfg, t


def test_every_tensor_and_key(tmp_path):
    cfg, src = checkpoint(np.random.default_rng(5), final_logit_softcapping=30.0)
    out = tmp_path / "out.gguf"
    convert(write_checkpoint(tmp_path, cfg, src), out, "f32")
    f, _, t = read(out)
    a = "gemma3"
    assert f["general.architecture"] == a
    assert f[f"{a}.block_count"] == L
    assert f[f"{a}.attention.sliding_window"] == 8
    assert f[f"{a}.rope.freq_base"] == 1e6
    assert f[f"{a}.rope.freq_base_swa"] == 1e4
    assert f[f"{a}.final_logit_softcapping"] == 30.0
    assert f[f"{a}.attention.key_length"] == DH
    assert f"{a}.attention.sliding_window_pattern" not in f  # llama.cpp's default period 6
    assert len(f["tokenizer.ggml.tokens"]) == N_TOKENIZER
    np.testing.assert_array_equal(t["token_embd.weight"], src["model.embed_tokens.weight"][:N_TOKENIZER])
    assert "output.weight" not in t
    np.testing.assert_array_equal(t["output_norm.weight"], src["model.norm.weight"] + 1)
    names = {"attn_norm": "input_layernorm", "post_attention_norm": "post_attention_layernorm",
             "ffn_norm": "pre_feedforward_layernorm", "post_ffw_norm": "post_feedforward_layernorm",
             "attn_q_norm": "self_attn.q_norm", "attn_k_norm": "self_attn.k_norm"}
    mats = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
            "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj",
            "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj"}
    for i in range(L):
        for g, h in names.items():
            np.testing.assert_array_equal(t[f"blk.{i}.{g}.weight"],
                                          src[f"model.layers.{i}.{h}.weight"] + np.float32(1))
        for g, h in mats.items():  # NEOX RoPE: q/k rows in HF's order
            np.testing.assert_array_equal(t[f"blk.{i}.{g}.weight"],
                                          src[f"model.layers.{i}.{h}.weight"])
    assert len(t) == 2 + 13 * L


def test_non_default_layer_pattern_is_written(tmp_path):
    types = ["sliding_attention", "full_attention"] * 3 + ["sliding_attention"]
    cfg, src = checkpoint(np.random.default_rng(6), layer_types=types)
    out = tmp_path / "out.gguf"
    convert(write_checkpoint(tmp_path, cfg, src), out, "f16")
    f, _, _ = read(out)
    assert list(f["gemma3.attention.sliding_window_pattern"]) == [
        x == "sliding_attention" for x in types]
    assert "gemma3.final_logit_softcapping" not in f


def test_linear_rope_scaling_of_the_global_layers(tmp_path):
    cfg, src = checkpoint(np.random.default_rng(8), rope_parameters={
        "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1e6},
        "sliding_attention": {"rope_type": "default", "rope_theta": 1e4}})
    out = tmp_path / "out.gguf"
    convert(write_checkpoint(tmp_path, cfg, src), out, "f32")
    f, _, _ = read(out)
    assert f["gemma3.rope.scaling.type"] == "linear"
    assert f["gemma3.rope.scaling.factor"] == 8.0
    assert f["gemma3.rope.freq_base_swa"] == 1e4


@pytest.mark.parametrize("over, words", [
    (dict(hidden_activation="gelu"), "hidden_activation"),
    (dict(query_pre_attn_scalar=7), "query_pre_attn_scalar"),
    (dict(attn_logit_softcapping=50.0), "attn_logit_softcapping"),
    (dict(layer_types=["sliding_attention"] * 3), "layer_types"),
    (dict(rope_parameters={"full_attention": {"rope_type": "yarn", "factor": 8.0}}), "RoPE"),
])
def test_refusals(tmp_path, over, words):
    cfg, src = checkpoint(np.random.default_rng(7), **over)
    out = tmp_path / "out.gguf"
    with pytest.raises(ConversionError, match=words):
        convert(write_checkpoint(tmp_path, cfg, src), out, "f32")
    assert not out.exists()


@pytest.mark.parametrize("outtype", ["f32", "f16"])
def test_fixture_metadata(outtype):
    f, _, t = read(FIXTURES / "gemma3" / f"model-{outtype}.gguf")
    assert f["general.architecture"] == "gemma3"
    assert f["gemma3.attention.sliding_window"] == 8
    assert f["gemma3.final_logit_softcapping"] == 15.0
    assert t["token_embd.weight"].shape == (376, 64)
