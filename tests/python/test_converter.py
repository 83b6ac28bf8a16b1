"""Tests of python/convert_hf_to_gguf.py and of the committed model fixtures (no torch needed).

* The committed HF checkpoint (tests/fixtures/models/granitehybrid-moe/hf) converts to exactly the
  committed model-f32.gguf / model-f16.gguf (key by key, tensor by tensor, byte by byte).
* Every fixture GGUF has the keys, key types, tensor names, shapes and types that llama.cpp's
  conventions prescribe, derived here from the HF config.json independently of the converter.
* A float64 numpy forward pass reading only each GGUF reproduces the transformers logits stored
  beside it, and its greedy continuation.
* Converter properties on synthetic checkpoints: the Q/K permutation turns HF's half-split RoPE
  into NORM RoPE, BF16/F16 inputs are read exactly, bad input fails with a clear error and leaves
  no output file.
"""

from __future__ import annotations

import json
import shutil
import struct
import sys
from pathlib import Path

import gguf
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "python"))

from chimera_convert import ConversionError  # noqa: E402
from chimera_convert.archs import permute_for_rope_norm  # noqa: E402
from chimera_convert.checkpoint import Checkpoint  # noqa: E402
from chimera_convert.reference_forward import GGUFModel  # noqa: E402
from convert_hf_to_gguf import convert, main as cli_main  # noqa: E402

FIXTURES = REPO / "tests/fixtures/models"
CI_MODEL = "granitehybrid-moe"
ALL_MODELS = sorted(p.name for p in FIXTURES.iterdir() if (p / "reference.json").is_file())
# The gated-DeltaNet fixtures are checked by test_converter_qwen.py and the engine's parity tests
# (reference_forward.py has no DeltaNet).
QWEN_MODELS = ("qwen35", "qwen35moe", "qwen3next")
# nemotron_h: test_converter_nemotron_h.py and the engine's parity tests (no numpy forward here).
NEMOTRON_MODELS = ("nemotron_h", "nemotron_h_moe", "falcon-h1")  # falcon-h1: its own file
# lfm2, lfm2moe (and lfm2moe-tied, for test_converter_vs_llama_cpp.py): test_converter_lfm2.py and
# the engine's parity tests (no numpy forward here).
LFM2_MODELS = ("lfm2", "lfm2moe", "lfm2moe-tied")
# gemma3: test_converter_gemma3.py, test_converter_vs_llama_cpp.py and the engine's parity tests.
GEMMA_MODELS = ("gemma3",)
MODELS = [m for m in ALL_MODELS
          if m not in QWEN_MODELS + NEMOTRON_MODELS + LFM2_MODELS + GEMMA_MODELS]
GT = gguf.GGMLQuantizationType


def reference(name: str) -> dict:
    return json.loads((FIXTURES / name / "reference.json").read_text())


def fields(path: Path) -> dict:
    r = gguf.GGUFReader(str(path))
    return r, {k: ([t.name for t in f.types], f.contents()) for k, f in r.fields.items()}


def test_fixtures_present():
    assert set(ALL_MODELS) == {"granitehybrid-dense", "granitehybrid-moe", "mamba2", "mamba2-g2",
                               "llama", "granite", *QWEN_MODELS, *NEMOTRON_MODELS,
                               *LFM2_MODELS, *GEMMA_MODELS}


# ------------------------------------------------------------------------------------------------
# 1. the committed checkpoint converts to the committed GGUF, bit for bit


@pytest.mark.parametrize("outtype", ["f32", "f16"])
def test_checkpoint_converts_to_committed_fixture(tmp_path, outtype):
    out = tmp_path / f"model-{outtype}.gguf"
    convert(FIXTURES / CI_MODEL / "hf", out, outtype, model_name=CI_MODEL)
    committed = FIXTURES / CI_MODEL / f"model-{outtype}.gguf"
    r_new, f_new = fields(out)
    r_old, f_old = fields(committed)
    assert list(f_new) == list(f_old)  # same keys in the same order
    for key in f_old:
        assert f_new[key] == f_old[key], key
    assert [t.name for t in r_new.tensors] == [t.name for t in r_old.tensors]
    for a, b in zip(r_new.tensors, r_old.tensors):
        assert a.tensor_type == b.tensor_type, a.name
        assert list(a.shape) == list(b.shape), a.name
        assert np.asarray(a.data).tobytes() == np.asarray(b.data).tobytes(), a.name
    assert out.read_bytes() == committed.read_bytes()


# ------------------------------------------------------------------------------------------------
# 2. metadata and tensor inventory of every fixture, derived from config.json


def expected_tensors(cfg: dict, arch: str) -> dict[str, tuple[tuple[int, ...], bool]]:
    """GGUF name -> (ggml shape ne0.., always_f32) from the HF config, per spec 3.2/4.3/5."""
    D, L, V = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["vocab_size"]
    t: dict[str, tuple[tuple[int, ...], bool]] = {
        "token_embd.weight": ((D, V), False), "output_norm.weight": ((D,), True)}
    if not cfg.get("tie_word_embeddings"):
        t["output.weight"] = ((D, V), False)
    if arch == "mamba2":
        d_in, H, G, N, K = (cfg["expand"] * D, cfg["num_heads"], cfg["n_groups"],
                            cfg["state_size"], cfg["conv_kernel"])
        kinds = ["mamba"] * L
    elif arch == "granitehybrid":
        d_in, H, G, N, K = (cfg["mamba_expand"] * D, cfg["mamba_n_heads"], cfg["mamba_n_groups"],
                            cfg["mamba_d_state"], cfg["mamba_d_conv"])
        kinds = ["mamba" if k in ("mamba", "linear_attention") else "attention"
                 for k in cfg["layer_types"]]
    else:
        kinds = ["attention"] * L
    n_head = cfg.get("num_attention_heads", 0)
    n_kv = cfg.get("num_key_value_heads", n_head)
    d_h = D // n_head if n_head else 0
    for i, kind in enumerate(kinds):
        p = f"blk.{i}."
        t[p + "attn_norm.weight"] = ((D,), True)
        if kind == "mamba":
            C = d_in + 2 * G * N
            t.update({p + "ssm_in.weight": ((D, 2 * d_in + 2 * G * N + H), False),
                      p + "ssm_conv1d.weight": ((K, C), True), p + "ssm_conv1d.bias": ((C,), True),
                      p + "ssm_dt.bias": ((H,), True), p + "ssm_a": ((1, H), True),
                      p + "ssm_d": ((1, H), True), p + "ssm_norm.weight": ((d_in // G, G), True),
                      p + "ssm_out.weight": ((d_in, D), False)})
        else:
            t.update({p + "attn_q.weight": ((D, n_head * d_h), False),
                      p + "attn_k.weight": ((D, n_kv * d_h), False),
                      p + "attn_v.weight": ((D, n_kv * d_h), False),
                      p + "attn_output.weight": ((n_head * d_h, D), False)})
        if arch == "mamba2":
            continue
        t[p + "ffn_norm.weight"] = ((D,), True)
        E = cfg.get("num_local_experts", 0)
        if arch in ("llama", "granite"):
            F = cfg["intermediate_size"]
            names = ("ffn_gate", "ffn_up", "ffn_down")
        elif E == 0:
            F = cfg["shared_intermediate_size"]
            names = ("ffn_gate", "ffn_up", "ffn_down")
        else:
            F, Fs = cfg["intermediate_size"], cfg["shared_intermediate_size"]
            t.update({p + "ffn_gate_inp.weight": ((D, E), True),
                      p + "ffn_gate_exps.weight": ((D, F, E), False),
                      p + "ffn_up_exps.weight": ((D, F, E), False),
                      p + "ffn_down_exps.weight": ((F, D, E), False)})
            F, names = Fs, ("ffn_gate_shexp", "ffn_up_shexp", "ffn_down_shexp")
        t.update({p + names[0] + ".weight": ((D, F), False), p + names[1] + ".weight": ((D, F), False),
                  p + names[2] + ".weight": ((F, D), False)})
    return t


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("outtype", ["f32", "f16"])
def test_fixture_metadata_and_tensors(name, outtype):
    ref = reference(name)
    cfg, arch = ref["config"], ref["gguf_architecture"]
    r, f = fields(FIXTURES / name / f"model-{outtype}.gguf")

    def val(key):
        assert key in f, f"{name}: missing key {key}"
        return f[key][1]

    def typ(key):
        return f[key][0]

    assert val("general.architecture") == arch
    assert val("general.file_type") == (0 if outtype == "f32" else 1)
    assert val(f"{arch}.block_count") == cfg["num_hidden_layers"]
    assert val(f"{arch}.embedding_length") == cfg["hidden_size"]
    assert val(f"{arch}.vocab_size") == cfg["vocab_size"]
    eps = cfg.get("rms_norm_eps", cfg.get("layer_norm_epsilon"))
    assert val(f"{arch}.attention.layer_norm_rms_epsilon") == pytest.approx(eps, rel=1e-7)
    if arch == "granitehybrid":
        kinds = [k in ("attention", "full_attention") for k in cfg["layer_types"]]
        assert typ(f"{arch}.attention.head_count_kv") == ["ARRAY", "INT32"]  # pitfall 10
        assert val(f"{arch}.attention.head_count_kv") == [
            cfg["num_key_value_heads"] if a else 0 for a in kinds]
        assert val(f"{arch}.rope.scaling.finetuned") is False  # NoPE (Granite 4.0-H)
        assert val(f"{arch}.context_length") == 2**20
        assert val(f"{arch}.ssm.time_step_rank") == cfg["mamba_n_heads"]
        assert val(f"{arch}.ssm.inner_size") == cfg["mamba_expand"] * cfg["hidden_size"]
        assert val(f"{arch}.ssm.group_count") == cfg["mamba_n_groups"]
        assert val(f"{arch}.ssm.state_size") == cfg["mamba_d_state"]
        assert val(f"{arch}.expert_count") == cfg["num_local_experts"]
        assert val(f"{arch}.expert_used_count") == cfg["num_experts_per_tok"]
    elif arch == "mamba2":
        assert val(f"{arch}.ssm.time_step_rank") == cfg["num_heads"]
        assert val(f"{arch}.ssm.group_count") == cfg["n_groups"]
        assert val(f"{arch}.ssm.conv_kernel") == cfg["conv_kernel"]
        assert val(f"{arch}.attention.head_count") == 0
    else:
        assert typ(f"{arch}.attention.head_count_kv") == ["UINT32"]
        assert val(f"{arch}.attention.head_count_kv") == cfg["num_key_value_heads"]
        assert val(f"{arch}.rope.freq_base") == cfg["rope_parameters"]["rope_theta"]
        assert val(f"{arch}.rope.dimension_count") == cfg["hidden_size"] // cfg["num_attention_heads"]
    if arch in ("granite", "granitehybrid"):
        for hf_key, key in (("attention_multiplier", "attention.scale"),
                            ("embedding_multiplier", "embedding_scale"),
                            ("residual_multiplier", "residual_scale"),
                            ("logits_scaling", "logit_scale")):
            assert typ(f"{arch}.{key}") == ["FLOAT32"]
            assert val(f"{arch}.{key}") == pytest.approx(cfg[hf_key], rel=1e-7)

    # tokenizer: gpt2 vocabulary, one entry per embedding row, padded ids UNUSED
    assert val("tokenizer.ggml.model") == "gpt2"
    assert val("tokenizer.ggml.pre") == "dbrx"
    tokens, types = val("tokenizer.ggml.tokens"), val("tokenizer.ggml.token_type")
    assert len(tokens) == len(types) == cfg["vocab_size"] == ref["n_vocab"]
    assert tokens[:4] == ["<|end_of_text|>", "<|start_of_role|>", "<|end_of_role|>", "<|pad|>"]
    assert types[:4] == [gguf.TokenType.CONTROL] * 4
    assert all(t == f"[PAD{i}]" and ty == gguf.TokenType.UNUSED
               for i, (t, ty) in enumerate(zip(tokens, types)) if i >= 376)
    assert all(ty == gguf.TokenType.NORMAL for ty in types[4:376])
    merges = val("tokenizer.ggml.merges")
    assert len(merges) == 376 - 4 - 256
    vocab = set(tokens)
    assert all(m.replace(" ", "", 1) in vocab for m in merges)  # a merge yields a token
    assert val("tokenizer.ggml.bos_token_id") == val("tokenizer.ggml.eos_token_id") == 0
    assert val("tokenizer.ggml.padding_token_id") == 3
    assert val("tokenizer.ggml.add_bos_token") is False
    assert "<|start_of_role|>" in val("tokenizer.chat_template")

    # tensors: exactly the expected set, shapes in ggml order, F32 where llama.cpp keeps F32
    want = expected_tensors(cfg, arch)
    got = {t.name: t for t in r.tensors}
    assert set(got) == set(want)
    for tname, (shape, always_f32) in want.items():
        t = got[tname]
        assert tuple(int(d) for d in t.shape) == shape, tname
        expect_type = GT.F32 if (always_f32 or outtype == "f32") else GT.F16
        assert t.tensor_type == expect_type, tname
    assert len(r.tensors) == len(want)


# ------------------------------------------------------------------------------------------------
# 3. an independent numpy forward over each GGUF reproduces the HF logits


def nmse(a: np.ndarray, ref: np.ndarray) -> float:
    return float(((a - ref) ** 2).sum() / (ref**2).sum())


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("outtype", ["f32", "f16"])
def test_gguf_reproduces_transformers_logits(name, outtype):
    ref = reference(name)
    model = GGUFModel(FIXTURES / name / f"model-{outtype}.gguf")
    for seq in ref["sequences"]:
        hf = np.fromfile(FIXTURES / name / seq["logits"], dtype="<f4")
        hf = hf.reshape(seq["n_tokens"], ref["n_vocab"]).astype(np.float64)
        ours = model.logits(seq["tokens"])
        err = nmse(ours, hf)
        if outtype == "f32":
            # HF runs in float32 (relative rounding ~6e-8 per op, a few dozen ops deep, plus the
            # chunked-vs-sequential scan): observed NMSE <= 5.3e-13; 1e-10 leaves a 190x margin
            # while any layout mistake gives NMSE ~1
            assert err < 1e-10, (seq["name"], err)
            assert (ours.argmax(1) == hf.argmax(1)).all(), seq["name"]
        else:
            # F16 weights carry relative rounding 2^-11 each; observed NMSE <= 1.1e-6, bound 1e-5
            assert err < 1e-5, (seq["name"], err)


@pytest.mark.parametrize("name", MODELS)
def test_gguf_reproduces_transformers_greedy(name):
    greedy = reference(name)["greedy"]
    # every step's best-vs-second gap is far above the ~1e-5 logit error of the F32 reference
    assert min(greedy["top2_gaps"]) > 1e-3
    model = GGUFModel(FIXTURES / name / "model-f32.gguf")
    tokens = list(greedy["prompt"])
    for _ in range(len(greedy["tokens"])):
        tokens.append(int(model.logits(tokens)[-1].argmax()))
    assert tokens[len(greedy["prompt"]):] == greedy["tokens"]


# ------------------------------------------------------------------------------------------------
# 4. converter properties on synthetic checkpoints


def write_safetensors(path: Path, tensors: dict[str, np.ndarray], dtypes: dict[str, str] = {}):
    header, blobs, offset = {}, [], 0
    for name, arr in tensors.items():
        dtype = dtypes.get(name, {np.float32: "F32", np.float16: "F16"}.get(arr.dtype.type))
        raw = np.ascontiguousarray(arr).tobytes()
        header[name] = {"dtype": dtype, "shape": list(arr.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    h = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def copy_checkpoint(tmp_path: Path) -> Path:
    dst = tmp_path / "hf"
    shutil.copytree(FIXTURES / CI_MODEL / "hf", dst)
    return dst


def load_all(ckpt_dir: Path) -> dict[str, np.ndarray]:
    ck = Checkpoint(ckpt_dir)
    return {n: ref.load() for n, ref in ck.tensors.items()}


def rope_half_split(x: np.ndarray, pos: int, base: float) -> np.ndarray:
    """HF rotate_half RoPE on one head: pairs (i, i + d/2)."""
    d = x.shape[0]
    theta = pos * base ** (-2.0 * np.arange(d // 2) / d)
    c, s = np.cos(theta), np.sin(theta)
    a, b = x[: d // 2], x[d // 2:]
    return np.concatenate([a * c - b * s, a * s + b * c])


def rope_adjacent(x: np.ndarray, pos: int, base: float) -> np.ndarray:
    """llama.cpp NORM RoPE on one head: pairs (2i, 2i + 1)."""
    d = x.shape[0]
    theta = pos * base ** (-2.0 * np.arange(d // 2) / d)
    c, s = np.cos(theta), np.sin(theta)
    out = x.copy()
    out[0::2] = x[0::2] * c - x[1::2] * s
    out[1::2] = x[0::2] * s + x[1::2] * c
    return out


def test_qk_permutation_turns_half_split_rope_into_norm_rope():
    rng = np.random.default_rng(0)
    n_head, d_h, D = 3, 8, 12
    wq = rng.standard_normal((n_head * d_h, D))
    wk = rng.standard_normal((n_head * d_h, D))
    u, v = rng.standard_normal(D), rng.standard_normal(D)
    pq, pk = permute_for_rope_norm(wq, n_head), permute_for_rope_norm(wk, n_head)
    for h in range(n_head):
        rows = slice(h * d_h, (h + 1) * d_h)
        for pos_q, pos_k in ((5, 2), (17, 17), (40, 0)):
            hf = rope_half_split(wq[rows] @ u, pos_q, 1e4) @ rope_half_split(wk[rows] @ v, pos_k, 1e4)
            gg = rope_adjacent(pq[rows] @ u, pos_q, 1e4) @ rope_adjacent(pk[rows] @ v, pos_k, 1e4)
            # same real number computed in two float64 orders: agreement to ~1e-13 relative
            assert gg == pytest.approx(hf, rel=1e-12, abs=1e-12)
    # a permutation of rows, nothing else
    assert sorted(map(tuple, pq)) == sorted(map(tuple, wq))


def test_bf16_and_f16_checkpoints_are_read_exactly(tmp_path):
    ck = copy_checkpoint(tmp_path)
    tensors = load_all(ck)
    emb = tensors["model.embed_tokens.weight"]
    bf16_bits = (emb.view(np.uint32) >> 16).astype(np.uint16)  # truncation: exact bf16 values
    as_bf16 = (bf16_bits.astype(np.uint32) << 16).view(np.float32)
    out = dict(tensors)
    out["model.embed_tokens.weight"] = bf16_bits
    out["model.norm.weight"] = tensors["model.norm.weight"].astype(np.float16)
    (ck / "model.safetensors").unlink()
    write_safetensors(ck / "model.safetensors", out, {"model.embed_tokens.weight": "BF16"})
    reread = load_all(ck)
    assert reread["model.embed_tokens.weight"].tobytes() == as_bf16.tobytes()
    assert np.array_equal(reread["model.norm.weight"],
                          tensors["model.norm.weight"].astype(np.float16).astype(np.float32))


def test_bf16_output_rounds_to_nearest_even(tmp_path):
    out = tmp_path / "m.gguf"
    convert(FIXTURES / CI_MODEL / "hf", out, "bf16")
    r = gguf.GGUFReader(str(out))
    t = {x.name: x for x in r.tensors}
    assert t["token_embd.weight"].tensor_type == GT.BF16
    assert t["blk.0.ssm_a"].tensor_type == GT.F32
    src = load_all(FIXTURES / CI_MODEL / "hf")["model.embed_tokens.weight"]
    bits = src.view(np.uint32).astype(np.uint64)
    rne = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)  # no NaNs in the data
    assert np.asarray(t["token_embd.weight"].data).view(np.uint16).reshape(-1).tolist() == \
        rne.reshape(-1).tolist()
    assert gguf.GGUFReader(str(out)).fields["general.file_type"].contents() == 32


def test_mamba_transforms(tmp_path):
    """ssm_a = -exp(A_log), D and A get a unit dim, conv squeezed, norm reshaped per group."""
    src = load_all(FIXTURES / CI_MODEL / "hf")
    r = gguf.GGUFReader(str(FIXTURES / CI_MODEL / "model-f32.gguf"))
    t = {x.name: np.asarray(x.data) for x in r.tensors}
    a_log = src["model.layers.0.mamba.A_log"].astype(np.float64)
    assert np.array_equal(t["blk.0.ssm_a"].reshape(-1), (-np.exp(a_log)).astype(np.float32))
    assert np.array_equal(t["blk.0.ssm_conv1d.weight"],
                          src["model.layers.0.mamba.conv1d.weight"][:, 0, :])
    gate_up = src["model.layers.0.block_sparse_moe.input_linear.weight"]
    F = gate_up.shape[1] // 2
    assert np.array_equal(t["blk.0.ffn_gate_exps.weight"], gate_up[:, :F])
    assert np.array_equal(t["blk.0.ffn_up_exps.weight"], gate_up[:, F:])
    assert "output.weight" not in t  # tied embeddings


def _rewrite(ck: Path, edit):
    tensors = load_all(ck)
    edit(tensors)
    (ck / "model.safetensors").unlink()
    write_safetensors(ck / "model.safetensors", tensors)


@pytest.mark.parametrize("case, message", [
    ("missing", "missing tensor 'model.layers.2.self_attn.k_proj.weight'"),
    ("shape", "tensor 'model.layers.0.mamba.D' has shape [9], expected [8]"),
    ("extra", "not understood by the converter: model.layers.0.surprise"),
    ("arch", "architecture 'FooForCausalLM' is not supported"),
    ("time_step_limit", "time_step_limit"),
    ("proj_bias", "mamba_proj_bias"),
    ("no_tokenizer", "no tokenizer.json"),
    ("bad_config", "config.json: cannot read JSON"),
    ("bad_header", "malformed header entry for 'x'"),
])
def test_bad_input_fails_clearly_and_writes_nothing(tmp_path, case, message):
    ck = copy_checkpoint(tmp_path)
    cfg_path = ck / "config.json"
    cfg = json.loads(cfg_path.read_text())
    if case == "missing":
        _rewrite(ck, lambda t: t.pop("model.layers.2.self_attn.k_proj.weight"))
    elif case == "shape":
        _rewrite(ck, lambda t: t.update({"model.layers.0.mamba.D": np.ones(9, np.float32)}))
    elif case == "extra":
        _rewrite(ck, lambda t: t.update({"model.layers.0.surprise": np.ones(2, np.float32)}))
    elif case == "arch":
        cfg["architectures"] = ["FooForCausalLM"]
    elif case == "time_step_limit":
        cfg["time_step_limit"] = [0.0, 10.0]
    elif case == "proj_bias":
        cfg["mamba_proj_bias"] = True
    elif case == "no_tokenizer":
        (ck / "tokenizer.json").unlink()
    cfg_path.write_text(json.dumps(cfg) if case != "bad_config" else "{not json")
    if case == "bad_header":
        h = json.dumps({"x": {"dtype": "F32", "shape": [2]}}).encode()  # no data_offsets
        (ck / "model-extra.safetensors").write_bytes(struct.pack("<Q", len(h)) + h)
    out = tmp_path / "out.gguf"
    with pytest.raises(ConversionError) as err:
        convert(ck, out, "f16")
    assert message in str(err.value)
    assert not out.exists() and not (tmp_path / "out.gguf.tmp").exists()


def test_truncated_safetensors_is_rejected(tmp_path):
    ck = copy_checkpoint(tmp_path)
    data = (ck / "model.safetensors").read_bytes()
    (ck / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ConversionError, match="exceed the file"):
        Checkpoint(ck)


def test_cli_reports_errors(tmp_path, capsys):
    assert cli_main([str(tmp_path), "-o", str(tmp_path / "x.gguf")]) == 1
    assert "no config.json" in capsys.readouterr().err
    assert cli_main([str(FIXTURES / CI_MODEL / "hf"), "-o", str(tmp_path / "y.gguf"),
                     "--outtype", "f32"]) == 0
    assert (tmp_path / "y.gguf").stat().st_size > 0


def test_sharded_checkpoint_converts_identically(tmp_path):
    ck = copy_checkpoint(tmp_path)
    tensors = load_all(ck)
    names = sorted(tensors)
    (ck / "model.safetensors").unlink()
    shards = {"model-00001-of-00002.safetensors": names[::2],
              "model-00002-of-00002.safetensors": names[1::2]}
    for fname, part in shards.items():
        write_safetensors(ck / fname, {n: tensors[n] for n in part})
    index = {"weight_map": {n: f for f, part in shards.items() for n in part}}
    (ck / "model.safetensors.index.json").write_text(json.dumps(index))
    out = tmp_path / "sharded.gguf"
    convert(ck, out, "f16", model_name=CI_MODEL)
    assert out.read_bytes() == (FIXTURES / CI_MODEL / "model-f16.gguf").read_bytes()
    (ck / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(ConversionError, match="listed shard 'model-00002-of-00002.safetensors'"):
        convert(ck, tmp_path / "x.gguf", "f16")
