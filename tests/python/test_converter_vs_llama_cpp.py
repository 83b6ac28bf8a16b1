"""chimera's converter writes the files llama.cpp's converter writes, tensor for tensor.

For every fixture with a committed HF checkpoint (tests/fixtures/models/NAME/hf) and a record of
llama.cpp's output (NAME/llama-cpp-convert.json, made by python/make_converter_reference.py from
llama.cpp's convert_hf_to_gguf.py; torch and llama.cpp are not needed here), it converts the
checkpoint with python/convert_hf_to_gguf.py to F32 and F16 and compares every metadata key and
value (except the provenance keys the record lists, each with its reason) and every tensor's name,
type, shape and the sha256 of its bytes.

The one known difference (qwen35moe's token 376, an artefact of transformers' tokenizer choice,
see qwen35moe_tokens) is checked to be exactly that. Where llama.cpp's converter misreads a config
as transformers 5 saves it, the record's config_overrides give both converters the spelling of
the models' hub files (see the generator's docstring). Adding a fixture: commit its hf/,
run the generator with --only NAME; the test picks it up.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import gguf
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "python"))

from convert_hf_to_gguf import convert  # noqa: E402

FIXTURES = REPO / "tests/fixtures/models"
RECORDS = sorted(p.parent.name for p in FIXTURES.glob("*/llama-cpp-convert.json"))


def qwen35moe_tokens(ours: dict, theirs: dict) -> None:
    """transformers 5.24 loads the Qwen3.5-MoE fixture's tokenizer as Qwen3_5Tokenizer (chosen
    by model_type, not by the file's tokenizer_class), which appends its default unk token
    <|endoftext|> as a new id 376: llama.cpp's converter, which asks transformers, writes it as a
    CONTROL token where chimera (reading tokenizer.json, as for the dense Qwen3.5 fixture with the
    same tokenizer.json) writes [PAD376] UNUSED. A real Qwen tokenizer already defines
    <|endoftext|>, so real files agree; here only id 376 may differ."""
    expected = {"tokenizer.ggml.tokens": ("[PAD376]", "<|endoftext|>"),
                "tokenizer.ggml.token_type": (int(gguf.TokenType.UNUSED),
                                              int(gguf.TokenType.CONTROL))}
    for key, (ours_376, theirs_376) in expected.items():
        a, b = list(ours.pop(key)), list(theirs.pop(key))
        assert len(a) == len(b)
        assert [i for i in range(len(a)) if a[i] != b[i]] == [376], key
        assert (a[376], b[376]) == (ours_376, theirs_376), key


def describe(path: Path) -> tuple[dict, dict]:
    r = gguf.GGUFReader(str(path))
    meta = {}
    for key, field in r.fields.items():
        if key.startswith("GGUF."):
            continue
        v = field.contents()
        meta[key] = v
    tensors = {}
    for t in r.tensors:
        data = np.ascontiguousarray(t.data)
        tensors[t.name] = {"name": t.name, "type": t.tensor_type.name,
                           "shape": [int(d) for d in t.shape],
                           "sha256": hashlib.sha256(data.tobytes()).hexdigest()}
    return meta, tensors


def checkpoint(name: str, overrides: dict, tmp_path: Path) -> tuple[Path, dict]:
    hf = FIXTURES / name / "hf"
    cfg = json.loads((hf / "config.json").read_text())
    if not overrides:
        return hf, cfg
    dest = tmp_path / "hf"
    dest.mkdir()
    for f in hf.iterdir():
        if f.name != "config.json":
            (dest / f.name).symlink_to(f.resolve())
    for key, value in overrides.items():
        if value is None:
            cfg.pop(key, None)
        else:
            cfg[key] = value
    (dest / "config.json").write_text(json.dumps(cfg))
    return dest, cfg


def test_records_cover_the_architectures():
    have_hf = {p.parent.name for p in FIXTURES.glob("*/hf")}
    assert set(RECORDS) <= have_hf, "a record without its checkpoint"
    for arch in ("qwen35", "qwen35moe", "qwen3next", "nemotron_h", "granitehybrid-moe",
                 "nemotron_h_moe", "lfm2", "lfm2moe-tied", "gemma3", "gemma3-spm",
                 "falcon-h1"):
        assert arch in RECORDS


@pytest.mark.parametrize("outtype", ["f32", "f16"])
@pytest.mark.parametrize("name", RECORDS)
def test_converter_matches_llama_cpp(tmp_path, name, outtype):
    record = json.loads((FIXTURES / name / "llama-cpp-convert.json").read_text())
    hf, _ = checkpoint(name, record.get("config_overrides", {}), tmp_path)
    out = tmp_path / "out.gguf"
    convert(hf, out, outtype)
    meta, tensors = describe(out)
    theirs = record["outputs"][outtype]
    excluded = record["excluded_metadata"]
    ours_meta = {k: v for k, v in meta.items() if k not in excluded}
    theirs_meta = dict(theirs["metadata"])
    if name == "qwen35moe":
        qwen35moe_tokens(ours_meta, theirs_meta)
    # JSON has no tuples and stores floats as doubles: compare through the same round trip
    ours_meta = json.loads(json.dumps(ours_meta, default=lambda x: x.item()))
    missing = sorted(set(theirs_meta) - set(ours_meta))
    extra = sorted(set(ours_meta) - set(theirs_meta))
    assert not missing and not extra, f"keys llama.cpp writes and we do not: {missing}; " \
                                      f"keys we write and llama.cpp does not: {extra}"
    for key in theirs_meta:
        assert ours_meta[key] == theirs_meta[key], key
    theirs_tensors = {t["name"]: t for t in theirs["tensors"]}
    assert sorted(tensors) == sorted(theirs_tensors)
    for tname, t in theirs_tensors.items():
        assert tensors[tname] == t, tname
