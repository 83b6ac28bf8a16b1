"""The converter's Nemotron-H path (python/chimera_convert/archs.py, plan_nemotron_h): every tensor
of a small random numpy checkpoint checked element by element against expectations written here
from llama.cpp's conventions (the per-layer kind arrays, -exp(A_log), the grouped ssm_norm, the
NORM q/k row permutation), the refusals, and the metadata of the committed nemotron_h fixture.
"""

from __future__ import annotations

import json
import shutil
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
from test_converter import write_safetensors  # noqa: E402

FIXTURES = REPO / "tests/fixtures/models"
CI_HF = FIXTURES / "granitehybrid-moe" / "hf"  # only for its tokenizer files

D, V, NH, NKV, DH, F = 16, 384, 2, 1, 12, 24
H, P, N, G, K = 4, 8, 4, 2, 3
PATTERN = "M*-M-"
KINDS = {"M": "linear_attention", "*": "full_attention", "-": "mlp"}


def checkpoint(rng: np.random.Generator, pattern: str = PATTERN, mlp_bias: bool = False):
    cfg = dict(architectures=["NemotronHForCausalLM"], hidden_size=D, vocab_size=V,
               hybrid_override_pattern=pattern, num_attention_heads=NH, num_key_value_heads=NKV,
               head_dim=DH, intermediate_size=F, mlp_hidden_act="relu2", mamba_num_heads=H,
               mamba_head_dim=P, ssm_state_size=N, n_groups=G, conv_kernel=K,
               layer_norm_epsilon=1e-5, mlp_bias=mlp_bias, tie_word_embeddings=False)
    r = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    d_in, C = H * P, H * P + 2 * G * N
    t = {"backbone.embeddings.weight": r(V, D), "lm_head.weight": r(V, D),
         "backbone.norm_f.weight": r(D)}
    for i, c in enumerate(pattern):
        p = f"backbone.layers.{i}."
        m = p + "mixer."
        t[p + "norm.weight"] = r(D)
        if c == "M":
            t.update({m + "in_proj.weight": r(2 * d_in + 2 * G * N + H, D),
                      m + "conv1d.weight": r(C, 1, K), m + "conv1d.bias": r(C),
                      m + "dt_bias": r(H), m + "A_log": r(H), m + "D": r(H),
                      m + "norm.weight": r(d_in), m + "out_proj.weight": r(D, d_in)})
        elif c == "*":
            t.update({m + "q_proj.weight": r(NH * DH, D), m + "k_proj.weight": r(NKV * DH, D),
                      m + "v_proj.weight": r(NKV * DH, D), m + "o_proj.weight": r(D, NH * DH)})
        else:
            t.update({m + "up_proj.weight": r(F, D), m + "down_proj.weight": r(D, F)})
            if mlp_bias:
                t.update({m + "up_proj.bias": r(F), m + "down_proj.bias": r(D)})
    return cfg, t


def write_checkpoint(tmp_path: Path, cfg: dict, src: dict) -> Path:
    ck = tmp_path / "hf"
    ck.mkdir()
    (ck / "config.json").write_text(json.dumps(cfg))
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(CI_HF / f, ck / f)
    write_safetensors(ck / "model.safetensors", src)
    return ck


def read(out: Path):
    r = gguf.GGUFReader(str(out))
    fields = {k: f.contents() for k, f in r.fields.items()}
    types = {k: [t.name for t in f.types] for k, f in r.fields.items()}
    tensors = {x.name: np.asarray(x.data).reshape([int(d) for d in reversed(x.shape)])
               for x in r.tensors}
    return fields, types, tensors


def norm_permuted(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Expected NORM permutation, by explicit indices: in each head of d rows, new row 2i is old
    row i and new row 2i + 1 is old row i + d/2."""
    d = w.shape[0] // n_heads
    out = np.empty_like(w)
    for h in range(n_heads):
        for i in range(d // 2):
            out[h * d + 2 * i] = w[h * d + i]
            out[h * d + 2 * i + 1] = w[h * d + i + d // 2]
    return out


@pytest.mark.parametrize("mlp_bias", [False, True])
def test_every_tensor_and_key(tmp_path, mlp_bias):
    cfg, src = checkpoint(np.random.default_rng(3), mlp_bias=mlp_bias)
    out = tmp_path / "out.gguf"
    convert(write_checkpoint(tmp_path, cfg, src), out, "f32")
    f, types, t = read(out)
    a = "nemotron_h"
    assert f["general.architecture"] == a
    assert f[f"{a}.block_count"] == len(PATTERN)
    assert types[f"{a}.attention.head_count_kv"][0] == "ARRAY"
    assert f[f"{a}.attention.head_count_kv"] == [NKV if c == "*" else 0 for c in PATTERN]
    assert types[f"{a}.feed_forward_length"][0] == "ARRAY"
    assert f[f"{a}.feed_forward_length"] == [F if c == "-" else 0 for c in PATTERN]
    assert f[f"{a}.attention.head_count"] == NH
    assert f[f"{a}.attention.key_length"] == f[f"{a}.attention.value_length"] == DH
    assert f[f"{a}.rope.scaling.finetuned"] is False
    assert f[f"{a}.context_length"] == 2**20
    assert f[f"{a}.attention.layer_norm_epsilon"] == pytest.approx(1e-5)  # as llama.cpp writes it
    assert (f[f"{a}.ssm.conv_kernel"], f[f"{a}.ssm.inner_size"], f[f"{a}.ssm.state_size"],
            f[f"{a}.ssm.time_step_rank"], f[f"{a}.ssm.group_count"]) == (K, H * P, N, H, G)

    want = {"token_embd.weight": src["backbone.embeddings.weight"],
            "output.weight": src["lm_head.weight"],
            "output_norm.weight": src["backbone.norm_f.weight"]}
    for i, c in enumerate(PATTERN):
        m = f"backbone.layers.{i}.mixer."
        b = f"blk.{i}."
        want[b + "attn_norm.weight"] = src[f"backbone.layers.{i}.norm.weight"]
        if c == "M":
            want.update({
                b + "ssm_in.weight": src[m + "in_proj.weight"],
                b + "ssm_conv1d.weight": src[m + "conv1d.weight"][:, 0, :],
                b + "ssm_conv1d.bias": src[m + "conv1d.bias"],
                b + "ssm_dt.bias": src[m + "dt_bias"],
                b + "ssm_a": (-np.exp(src[m + "A_log"].astype(np.float64)))
                .astype(np.float32)[:, None],
                b + "ssm_d": src[m + "D"][:, None],
                b + "ssm_norm.weight": src[m + "norm.weight"].reshape(G, H * P // G),
                b + "ssm_out.weight": src[m + "out_proj.weight"]})
        elif c == "*":
            want.update({b + "attn_q.weight": norm_permuted(src[m + "q_proj.weight"], NH),
                         b + "attn_k.weight": norm_permuted(src[m + "k_proj.weight"], NKV),
                         b + "attn_v.weight": src[m + "v_proj.weight"],
                         b + "attn_output.weight": src[m + "o_proj.weight"]})
        else:
            want.update({b + "ffn_up.weight": src[m + "up_proj.weight"],
                         b + "ffn_down.weight": src[m + "down_proj.weight"]})
            if mlp_bias:
                want.update({b + "ffn_up.bias": src[m + "up_proj.bias"],
                             b + "ffn_down.bias": src[m + "down_proj.bias"]})
    assert set(t) == set(want)
    for name, w in want.items():
        assert t[name].shape == w.shape, name
        np.testing.assert_array_equal(t[name], w, err_msg=name)


def test_layer_list_spelling_equals_pattern(tmp_path):
    cfg, src = checkpoint(np.random.default_rng(4))
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    convert(write_checkpoint(a, cfg, src), a / "out.gguf", "f32", model_name="x")
    cfg2 = dict(cfg)
    del cfg2["hybrid_override_pattern"]
    cfg2["layers_block_type"] = [KINDS[c] for c in PATTERN]  # transformers 5 spelling
    convert(write_checkpoint(b, cfg2, src), b / "out.gguf", "f32", model_name="x")
    assert (a / "out.gguf").read_bytes() == (b / "out.gguf").read_bytes()


@pytest.mark.parametrize("change, match", [
    (dict(hybrid_override_pattern="M*E-"), "nemotron_h_moe"),
    (dict(hybrid_override_pattern="*-*-"), "no Mamba2 layers"),
    (dict(hybrid_override_pattern="M*?-"), "unknown layer kind"),
    (dict(mlp_hidden_act="silu"), "mlp_hidden_act"),
    (dict(use_bias=True), "biases"),
])
def test_refusals_write_nothing(tmp_path, change, match):
    cfg, src = checkpoint(np.random.default_rng(5))
    cfg.update(change)
    out = tmp_path / "out.gguf"
    with pytest.raises(ConversionError, match=match):
        convert(write_checkpoint(tmp_path, cfg, src), out, "f32")
    assert not out.exists()


@pytest.mark.parametrize("outtype", ["f32", "f16"])
def test_committed_fixture_metadata(outtype):
    ref = json.loads((FIXTURES / "nemotron_h" / "reference.json").read_text())
    cfg = ref["config"]
    assert ref["gguf_architecture"] == "nemotron_h"
    kinds = cfg["layers_block_type"]
    f, types, t = read(FIXTURES / "nemotron_h" / f"model-{outtype}.gguf")
    assert f["general.file_type"] == (0 if outtype == "f32" else 1)
    assert f["nemotron_h.block_count"] == len(kinds)
    assert f["nemotron_h.attention.head_count_kv"] == [
        cfg["num_key_value_heads"] if k == "full_attention" else 0 for k in kinds]
    assert f["nemotron_h.feed_forward_length"] == [
        cfg["intermediate_size"] if k == "mlp" else 0 for k in kinds]
    assert {"linear_attention", "full_attention", "mlp"} == set(kinds)  # all three kinds
    g = gguf.GGUFReader(str(FIXTURES / "nemotron_h" / f"model-{outtype}.gguf"))
    for x in g.tensors:  # matrices follow outtype; norms, conv, ssm_a/d, biases stay F32
        matrix = len(x.shape) == 2 and x.name.endswith(".weight") and "norm" not in x.name \
            and "conv1d" not in x.name
        want = gguf.GGMLQuantizationType.F16 if matrix and outtype == "f16" else \
            gguf.GGMLQuantizationType.F32
        assert x.tensor_type == want, x.name


# --------------------------------------------------------------------------------------------------
# nemotron_h_moe: the same class with "E" layers (Nemotron-3-Nano)

E, KU, FE, FS = 6, 2, 10, 14
MOE_PATTERN = "ME*E"


def moe_checkpoint(rng: np.random.Generator, stacked: bool = False):
    cfg, t = checkpoint(rng, pattern=MOE_PATTERN.replace("E", "-"))
    cfg.update(hybrid_override_pattern=MOE_PATTERN, n_routed_experts=E, num_experts_per_tok=KU,
               moe_intermediate_size=FE, moe_shared_expert_intermediate_size=FS,
               routed_scaling_factor=2.5, norm_topk_prob=True, n_group=1, topk_group=1)
    r = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    for i, c in enumerate(MOE_PATTERN):
        if c != "E":
            continue
        m = f"backbone.layers.{i}.mixer."
        del t[m + "up_proj.weight"], t[m + "down_proj.weight"]
        t.update({m + "gate.weight": r(E, D), m + "gate.e_score_correction_bias": r(E),
                  m + "shared_experts.up_proj.weight": r(FS, D),
                  m + "shared_experts.down_proj.weight": r(D, FS)})
        if stacked:
            t.update({m + "experts.up_proj": r(E, FE, D), m + "experts.down_proj": r(E, D, FE)})
        else:
            for e in range(E):
                t.update({m + f"experts.{e}.up_proj.weight": r(FE, D),
                          m + f"experts.{e}.down_proj.weight": r(D, FE)})
    return cfg, t


@pytest.mark.parametrize("stacked", [False, True])
def test_moe_every_tensor_and_key(tmp_path, stacked):
    cfg, src = moe_checkpoint(np.random.default_rng(6), stacked)
    out = tmp_path / "out.gguf"
    convert(write_checkpoint(tmp_path, cfg, src), out, "f32")
    f, types, t = read(out)
    a = "nemotron_h_moe"
    assert f["general.architecture"] == a
    assert f[f"{a}.feed_forward_length"] == [FE if c == "E" else 0 for c in MOE_PATTERN]
    assert f[f"{a}.attention.head_count_kv"] == [NKV if c == "*" else 0 for c in MOE_PATTERN]
    assert (f[f"{a}.expert_count"], f[f"{a}.expert_used_count"],
            f[f"{a}.expert_feed_forward_length"], f[f"{a}.expert_shared_feed_forward_length"],
            f[f"{a}.expert_shared_count"], f[f"{a}.expert_group_count"]) == (E, KU, FE, FS, 1, 1)
    assert f[f"{a}.expert_weights_norm"] is True
    assert f[f"{a}.expert_weights_scale"] == pytest.approx(2.5)
    for i, c in enumerate(MOE_PATTERN):
        if c != "E":
            continue
        m, b = f"backbone.layers.{i}.mixer.", f"blk.{i}."
        assert t[b + "attn_norm.weight"].shape == (D,)
        np.testing.assert_array_equal(t[b + "ffn_gate_inp.weight"], src[m + "gate.weight"])
        np.testing.assert_array_equal(t[b + "exp_probs_b.bias"],
                                      src[m + "gate.e_score_correction_bias"])
        for hf, gg in (("up_proj", "ffn_up_exps"), ("down_proj", "ffn_down_exps")):
            want = src[m + f"experts.{hf}"] if stacked else \
                np.stack([src[m + f"experts.{e}.{hf}.weight"] for e in range(E)])
            np.testing.assert_array_equal(t[b + gg + ".weight"], want)
        np.testing.assert_array_equal(t[b + "ffn_up_shexp.weight"],
                                      src[m + "shared_experts.up_proj.weight"])
        np.testing.assert_array_equal(t[b + "ffn_down_shexp.weight"],
                                      src[m + "shared_experts.down_proj.weight"])
        assert not any(n.startswith(b + "ffn_up.") or n.startswith(b + "ffn_gate_exps")
                       for n in t)


@pytest.mark.parametrize("change, match", [
    (dict(hybrid_override_pattern="ME*-"), "both dense MLP and MoE"),
    (dict(moe_latent_size=8), "moe_latent_size"),
    (dict(num_nextn_predict_layers=1), "MTP"),
    (dict(n_group=2, topk_group=1), "group-limited"),
    (dict(num_experts_per_tok=7), "num_experts_per_tok"),
])
def test_moe_refusals_write_nothing(tmp_path, change, match):
    cfg, src = moe_checkpoint(np.random.default_rng(7))
    cfg.update(change)
    out = tmp_path / "out.gguf"
    with pytest.raises(ConversionError, match=match):
        convert(write_checkpoint(tmp_path, cfg, src), out, "f32")
    assert not out.exists()


def test_committed_moe_fixture_metadata():
    ref = json.loads((FIXTURES / "nemotron_h_moe" / "reference.json").read_text())
    cfg = ref["config"]
    assert ref["gguf_architecture"] == "nemotron_h_moe"
    f, _, t = read(FIXTURES / "nemotron_h_moe" / "model-f32.gguf")
    kinds = cfg["layers_block_type"]
    assert {"linear_attention", "full_attention", "moe"} == set(kinds)
    assert f["nemotron_h_moe.feed_forward_length"] == [
        cfg["moe_intermediate_size"] if k == "moe" else 0 for k in kinds]
    assert f["nemotron_h_moe.expert_weights_scale"] == pytest.approx(cfg["routed_scaling_factor"])
    bias = [t[f"blk.{i}.exp_probs_b.bias"] for i, k in enumerate(kinds) if k == "moe"]
    assert all(np.abs(b).max() > 0 for b in bias)  # the selection bias is exercised
