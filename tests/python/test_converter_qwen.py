"""The converter's Qwen3-Next / Qwen3.5 transforms (python/chimera_convert/archs.py,
plan_qwen_hybrid), checked element by element against expectations written here with explicit
index arithmetic from llama.cpp's documented conventions (spec 6.5), on small random checkpoints
built with numpy (no torch); and the metadata of the committed qwen fixtures.
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

from convert_hf_to_gguf import convert  # noqa: E402
from test_converter import write_safetensors  # noqa: E402

FIXTURES = REPO / "tests/fixtures/models"
CI_HF = FIXTURES / "granitehybrid-moe" / "hf"  # only for its tokenizer files

D, V, L, NH, NKV, DH = 16, 384, 4, 2, 1, 8
HK, HV, S, K = 2, 6, 4, 3  # 3 value heads per key head
F, E, FE, FS = 24, 3, 8, 12


def checkpoint(arch: str, rng: np.random.Generator) -> tuple[dict, dict]:
    cls = {"qwen35": "Qwen3_5ForCausalLM", "qwen35moe": "Qwen3_5MoeForCausalLM",
           "qwen3next": "Qwen3NextForCausalLM"}[arch]
    cfg = dict(architectures=[cls], hidden_size=D, vocab_size=V, num_hidden_layers=L,
               num_attention_heads=NH, num_key_value_heads=NKV, head_dim=DH, rms_norm_eps=1e-6,
               max_position_embeddings=256, linear_conv_kernel_dim=K, linear_key_head_dim=S,
               linear_value_head_dim=S, linear_num_key_heads=HK, linear_num_value_heads=HV,
               layer_types=["linear_attention"] * 3 + ["full_attention"],
               tie_word_embeddings=False,
               rope_parameters={"rope_type": "default", "rope_theta": 5000.0,
                                "partial_rotary_factor": 0.5, "mrope_section": [1, 1, 0]})
    if arch != "qwen35":
        cfg.update(num_experts=E, num_experts_per_tok=2, moe_intermediate_size=FE,
                   shared_expert_intermediate_size=FS)
    if arch != "qwen35moe":
        cfg["intermediate_size"] = F
    r = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    t = {"model.embed_tokens.weight": r(V, D), "lm_head.weight": r(V, D), "model.norm.weight": r(D)}
    for i in range(L):
        p = f"model.layers.{i}."
        t[p + "input_layernorm.weight"] = r(D)
        t[p + "post_attention_layernorm.weight"] = r(D)
        if i == 3:
            a = p + "self_attn."
            t.update({a + "q_proj.weight": r(2 * NH * DH, D), a + "k_proj.weight": r(NKV * DH, D),
                      a + "v_proj.weight": r(NKV * DH, D), a + "o_proj.weight": r(D, NH * DH),
                      a + "q_norm.weight": r(DH), a + "k_norm.weight": r(DH)})
        else:
            a = p + "linear_attn."
            if arch == "qwen3next":
                t[a + "in_proj_qkvz.weight"] = r(2 * HK * S + 2 * HV * S, D)
                t[a + "in_proj_ba.weight"] = r(2 * HV, D)
            else:
                t.update({a + "in_proj_qkv.weight": r(2 * HK * S + HV * S, D),
                          a + "in_proj_z.weight": r(HV * S, D), a + "in_proj_b.weight": r(HV, D),
                          a + "in_proj_a.weight": r(HV, D)})
            t.update({a + "conv1d.weight": r(2 * HK * S + HV * S, 1, K), a + "dt_bias": r(HV),
                      a + "A_log": r(HV), a + "norm.weight": r(S), a + "out_proj.weight": r(D, HV * S)})
        m = p + "mlp."
        if arch == "qwen35":
            t.update({m + "gate_proj.weight": r(F, D), m + "up_proj.weight": r(F, D),
                      m + "down_proj.weight": r(D, F)})
        else:
            t[m + "gate.weight"] = r(E, D)
            for e in range(E):
                t.update({f"{m}experts.{e}.gate_proj.weight": r(FE, D),
                          f"{m}experts.{e}.up_proj.weight": r(FE, D),
                          f"{m}experts.{e}.down_proj.weight": r(D, FE)})
            t.update({m + "shared_expert.gate_proj.weight": r(FS, D),
                      m + "shared_expert.up_proj.weight": r(FS, D),
                      m + "shared_expert.down_proj.weight": r(D, FS),
                      m + "shared_expert_gate.weight": r(1, D)})
    return cfg, t


def convert_random(tmp_path: Path, arch: str):
    cfg, src = checkpoint(arch, np.random.default_rng(5))
    ck = tmp_path / "hf"
    ck.mkdir()
    (ck / "config.json").write_text(json.dumps(cfg))
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(CI_HF / f, ck / f)
    write_safetensors(ck / "model.safetensors", src)
    out = tmp_path / "out.gguf"
    convert(ck, out, "f32")
    r = gguf.GGUFReader(str(out))
    fields = {k: f.contents() for k, f in r.fields.items()}
    # numpy order of every tensor (reversed ggml ne)
    tensors = {x.name: np.asarray(x.data).reshape([int(d) for d in reversed(x.shape)])
               for x in r.tensors}
    return src, tensors, fields


def tiled(h: int) -> int:
    """GGUF (tiled) position of HF value head h = g*r + j: j*Hk + g."""
    r = HV // HK
    return (h % r) * HK + h // r


@pytest.mark.parametrize("arch", ["qwen35", "qwen35moe", "qwen3next"])
def test_qwen_transforms(tmp_path, arch):
    src, t, f = convert_random(tmp_path, arch)
    assert f["general.architecture"] == arch
    assert f[f"{arch}.full_attention_interval"] == 4
    assert f[f"{arch}.ssm.group_count"] == HK and f[f"{arch}.ssm.time_step_rank"] == HV
    assert f[f"{arch}.ssm.state_size"] == S and f[f"{arch}.ssm.inner_size"] == HV * S
    assert f[f"{arch}.ssm.conv_kernel"] == K
    assert f[f"{arch}.rope.dimension_count"] == DH // 2
    assert f[f"{arch}.attention.key_length"] == DH
    if arch == "qwen3next":
        assert f"{arch}.rope.dimension_sections" not in f
    else:
        assert f[f"{arch}.rope.dimension_sections"] == [1, 1, 0, 0]
    # +1 on every RMSNorm weight except the DeltaNet output norm
    assert np.array_equal(t["output_norm.weight"], src["model.norm.weight"] + np.float32(1))
    p = "model.layers.0."
    assert np.array_equal(t["blk.0.attn_norm.weight"], src[p + "input_layernorm.weight"] + 1)
    assert np.array_equal(t["blk.0.post_attention_norm.weight"],
                          src[p + "post_attention_layernorm.weight"] + 1)
    assert np.array_equal(t["blk.3.attn_q_norm.weight"],
                          src["model.layers.3.self_attn.q_norm.weight"] + 1)
    assert np.array_equal(t["blk.0.ssm_norm.weight"], src[p + "linear_attn.norm.weight"])
    assert np.array_equal(t["blk.3.attn_q.weight"], src["model.layers.3.self_attn.q_proj.weight"])
    la = p + "linear_attn."
    r = HV // HK
    # value head h of HF lands at position pos(h) in the file
    pos = (lambda h: h) if arch == "qwen3next" else tiled
    a_log = src[la + "A_log"].astype(np.float64)
    for h in range(HV):
        assert t["blk.0.ssm_a"][pos(h)] == np.float32(-np.exp(a_log[h]))
        assert t["blk.0.ssm_dt.bias"][pos(h)] == src[la + "dt_bias"][h]
    conv = src[la + "conv1d.weight"][:, 0, :]
    qkv_w = t["blk.0.attn_qkv.weight"]
    gate_w = t["blk.0.attn_gate.weight"]
    for c in range(2 * HK * S):  # q and k channels keep their places
        assert np.array_equal(t["blk.0.ssm_conv1d.weight"][c], conv[c])
    for h in range(HV):
        for s in range(S):
            row = 2 * HK * S + pos(h) * S + s  # v channel s of value head h
            assert np.array_equal(t["blk.0.ssm_conv1d.weight"][row], conv[2 * HK * S + h * S + s])
            assert np.array_equal(t["blk.0.ssm_out.weight"][:, pos(h) * S + s],
                                  src[la + "out_proj.weight"][:, h * S + s])
    if arch == "qwen3next":
        # in_proj_qkvz: per key head g, rows [q (S) | k (S) | v (r*S) | z (r*S)]
        qkvz = src[la + "in_proj_qkvz.weight"]
        blk = 2 * S + 2 * r * S
        for g in range(HK):
            base = g * blk
            assert np.array_equal(qkv_w[g * S:(g + 1) * S], qkvz[base:base + S])
            assert np.array_equal(qkv_w[HK * S + g * S:HK * S + (g + 1) * S],
                                  qkvz[base + S:base + 2 * S])
            for j in range(r):
                h = g * r + j
                v0 = base + 2 * S + j * S
                z0 = base + 2 * S + r * S + j * S
                assert np.array_equal(qkv_w[2 * HK * S + h * S:2 * HK * S + (h + 1) * S],
                                      qkvz[v0:v0 + S])
                assert np.array_equal(gate_w[h * S:(h + 1) * S], qkvz[z0:z0 + S])
        assert np.array_equal(t["blk.0.ssm_ba.weight"], src[la + "in_proj_ba.weight"])
    else:
        qkv = src[la + "in_proj_qkv.weight"]
        assert np.array_equal(qkv_w[:2 * HK * S], qkv[:2 * HK * S])
        for h in range(HV):
            assert np.array_equal(qkv_w[2 * HK * S + pos(h) * S:2 * HK * S + (pos(h) + 1) * S],
                                  qkv[2 * HK * S + h * S:2 * HK * S + (h + 1) * S])
            assert np.array_equal(gate_w[pos(h) * S:(pos(h) + 1) * S],
                                  src[la + "in_proj_z.weight"][h * S:(h + 1) * S])
            assert np.array_equal(t["blk.0.ssm_beta.weight"][pos(h)], src[la + "in_proj_b.weight"][h])
            assert np.array_equal(t["blk.0.ssm_alpha.weight"][pos(h)], src[la + "in_proj_a.weight"][h])
    if arch == "qwen35":
        assert np.array_equal(t["blk.0.ffn_gate.weight"], src[p + "mlp.gate_proj.weight"])
    else:
        for e in range(E):
            assert np.array_equal(t["blk.0.ffn_down_exps.weight"][e],
                                  src[f"{p}mlp.experts.{e}.down_proj.weight"])
            assert np.array_equal(t["blk.0.ffn_up_exps.weight"][e],
                                  src[f"{p}mlp.experts.{e}.up_proj.weight"])
        assert np.array_equal(t["blk.0.ffn_gate_inp_shexp.weight"].reshape(-1),
                              src[p + "mlp.shared_expert_gate.weight"].reshape(-1))
        assert f[f"{arch}.expert_count"] == E and f[f"{arch}.expert_used_count"] == 2


def test_layer_pattern_other_than_an_interval_is_refused(tmp_path):
    cfg, src = checkpoint("qwen35", np.random.default_rng(1))
    cfg["layer_types"] = ["full_attention"] + ["linear_attention"] * 3
    ck = tmp_path / "hf"
    ck.mkdir()
    (ck / "config.json").write_text(json.dumps(cfg))
    write_safetensors(ck / "model.safetensors", src)
    from chimera_convert import ConversionError
    with pytest.raises(ConversionError, match="full_attention_interval"):
        convert(ck, tmp_path / "out.gguf", "f32")
    assert not (tmp_path / "out.gguf").exists()


@pytest.mark.parametrize("name", ["qwen35", "qwen35moe", "qwen3next"])
def test_committed_qwen_fixture_metadata(name):
    ref = json.loads((FIXTURES / name / "reference.json").read_text())
    cfg, arch = ref["config"], ref["gguf_architecture"]
    assert arch == name
    r = gguf.GGUFReader(str(FIXTURES / name / "model-f32.gguf"))
    f = {k: v.contents() for k, v in r.fields.items()}
    assert f[f"{arch}.block_count"] == cfg["num_hidden_layers"]
    assert f[f"{arch}.ssm.time_step_rank"] == cfg["linear_num_value_heads"]
    assert f[f"{arch}.ssm.group_count"] == cfg["linear_num_key_heads"]
    assert f[f"{arch}.full_attention_interval"] == 4
    assert f[f"{arch}.rope.dimension_count"] == int(cfg["head_dim"] * 0.25)
    assert ref["versions"]["transformers"].startswith("5.")


@pytest.mark.parametrize("pattern, pre", [
    (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}"
     r"| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+", "qwen35"),
    (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
     r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+", "qwen2"),
])
def test_qwen_pre_tokenizers_are_recognised(pattern, pre):
    from chimera_convert.vocab import detect_pre
    tok = {"model": {"type": "BPE"}, "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False,
         "use_regex": False}]}}
    assert detect_pre(tok, "tokenizer.json") == pre


@pytest.mark.parametrize("arch", ["qwen3next", "qwen35moe"])
@pytest.mark.parametrize("change", [{"mlp_only_layers": [1]}, {"decoder_sparse_step": 2}])
def test_dense_layers_in_an_moe_model_are_refused(tmp_path, arch, change):
    """transformers (Qwen3NextForCausalLM) supports a dense MLP in some layers of the MoE models,
    but llama.cpp's converter cannot name those tensors for these archs (it stops at
    'Can not map tensor model.layers.1.mlp.down_proj.weight') and its loader requires
    ffn_gate_inp in every layer: there is no GGUF to write, so the converter refuses clearly."""
    cfg, src = checkpoint(arch, np.random.default_rng(2))
    cfg.update(change, intermediate_size=F)
    layer = 1
    m = f"model.layers.{layer}.mlp."
    for name in [n for n in src if n.startswith(m)]:
        del src[name]
    r = lambda *s: np.ones(s, np.float32)  # noqa: E731
    src.update({m + "gate_proj.weight": r(F, D), m + "up_proj.weight": r(F, D),
                m + "down_proj.weight": r(D, F)})
    ck = tmp_path / "hf"
    ck.mkdir()
    (ck / "config.json").write_text(json.dumps(cfg))
    write_safetensors(ck / "model.safetensors", src)
    from chimera_convert import ConversionError
    with pytest.raises(ConversionError, match="dense layers in an MoE model"):
        convert(ck, tmp_path / "out.gguf", "f32")
    assert not (tmp_path / "out.gguf").exists()
