"""Qwen3.5 / Qwen3-Next checkpoints and GGUF files that carry a multi-token-prediction (MTP,
"nextn") head.

* The converter leaves the HF checkpoint's mtp.* tensors out (as llama.cpp's --no-mtp): the file
  is byte-identical to the one converted from the checkpoint without them.
* A GGUF laid out as llama.cpp's converter writes MTP (block_count counts the MTP block,
  {arch}.nextn_predict_layers, the MTP block's attention/FFN tensors plus blk.N.nextn.{eh_proj,
  enorm, hnorm, shared_head_norm}, recurrent_layers listing it as not recurrent; names and shapes
  as llama.cpp's convert_hf_to_gguf.py wrote them for this fixture) loads, and gives the same
  logits bytes as the file without the MTP block.
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

from chimera_convert.checkpoint import Checkpoint  # noqa: E402
from convert_hf_to_gguf import convert  # noqa: E402
from test_converter import write_safetensors  # noqa: E402

FIXTURES = REPO / "tests/fixtures/models"
ARCHS = ["qwen35", "qwen35moe", "qwen3next"]


def mtp_checkpoint(name: str, dest: Path) -> Path:
    """The committed checkpoint plus an MTP head as Qwen3.5 checkpoints name it (mtp.fc,
    mtp.pre_fc_norm_{embedding,hidden}, mtp.norm, mtp.layers.0.* = one full-attention layer)."""
    src = FIXTURES / name / "hf"
    shutil.copytree(src, dest)
    ck = Checkpoint(src)
    tensors = {n: ref.load() for n, ref in ck.tensors.items()}
    cfg = json.loads((src / "config.json").read_text())
    last, D = cfg["num_hidden_layers"] - 1, cfg["hidden_size"]
    rng = np.random.default_rng(3)
    pre = f"model.layers.{last}."
    for n, v in list(tensors.items()):
        if n.startswith(pre):
            tensors["mtp.layers.0." + n[len(pre):]] = rng.standard_normal(v.shape).astype(np.float32)
    tensors["mtp.fc.weight"] = rng.standard_normal((D, 2 * D)).astype(np.float32)
    for n in ("pre_fc_norm_embedding", "pre_fc_norm_hidden", "norm"):
        tensors[f"mtp.{n}.weight"] = rng.standard_normal(D).astype(np.float32)
    write_safetensors(dest / "model.safetensors", tensors)
    cfg["mtp_num_hidden_layers"] = 1
    (dest / "config.json").write_text(json.dumps(cfg))
    return dest


@pytest.mark.parametrize("name", ARCHS)
def test_converter_leaves_the_mtp_head_out(tmp_path, name):
    ck = mtp_checkpoint(name, tmp_path / "hf")
    convert(ck, tmp_path / "with-mtp.gguf", "f32", model_name=name)
    assert (tmp_path / "with-mtp.gguf").read_bytes() == \
        (FIXTURES / name / "model-f32.gguf").read_bytes()


def add_mtp_block(src: Path, dst: Path, arch: str) -> None:
    """Rewrites src with one MTP block appended as llama.cpp's converter lays it out."""
    r = gguf.GGUFReader(str(src))
    w = gguf.GGUFWriter(str(dst), arch)
    n_layer = int(r.fields[f"{arch}.block_count"].contents())
    D = int(r.fields[f"{arch}.embedding_length"].contents())
    for key, field in r.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue
        value = field.contents()
        if key == f"{arch}.block_count":
            value = n_layer + 1
        elif key == f"{arch}.attention.recurrent_layers":
            value = list(value) + [False]
        vtype = field.types[0]
        if vtype == gguf.GGUFValueType.ARRAY:
            w.add_array(key, value)
        else:
            w.add_key_value(key, value, vtype)
    w.add_uint32(f"{arch}.nextn_predict_layers", 1)
    rng = np.random.default_rng(11)
    last = n_layer - 1  # the full-attention layer: the MTP block has the same tensors
    for t in r.tensors:
        data = np.array(t.data)
        w.add_tensor(t.name, data, raw_dtype=t.tensor_type)
        if t.name.startswith(f"blk.{last}."):
            w.add_tensor(t.name.replace(f"blk.{last}.", f"blk.{n_layer}.", 1),
                         rng.standard_normal(data.shape).astype(data.dtype),
                         raw_dtype=t.tensor_type)
    w.add_tensor(f"blk.{n_layer}.nextn.eh_proj.weight",
                 rng.standard_normal((D, 2 * D)).astype(np.float32))
    for n in ("enorm", "hnorm", "shared_head_norm"):
        w.add_tensor(f"blk.{n_layer}.nextn.{n}.weight", rng.standard_normal(D).astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


@pytest.mark.parametrize("name", ARCHS)
def test_file_with_an_mtp_block_loads_and_gives_the_same_logits(chimera, tmp_path, name):
    plain = FIXTURES / name / "model-f32.gguf"
    mtp = tmp_path / "mtp.gguf"
    add_mtp_block(plain, mtp, name)
    f = {k: v.contents() for k, v in gguf.GGUFReader(str(mtp)).fields.items()}
    assert f[f"{name}.nextn_predict_layers"] == 1
    ref = json.loads((FIXTURES / name / "reference.json").read_text())
    ids = ",".join(map(str, next(s for s in ref["sequences"] if s["name"] == "len33")["tokens"]))
    out = {}
    for label, path in (("plain", plain), ("mtp", mtp)):
        o = tmp_path / f"{label}.f32"
        chimera.run("logits", "-m", path, "--tokens", ids, "-o", o, "--all")
        out[label] = o.read_bytes()
    assert len(out["plain"]) == 33 * ref["n_vocab"] * 4
    assert out["plain"] == out["mtp"]
    # a count that leaves no layer is refused with a clear error
    bad = tmp_path / "bad.gguf"

    add_mtp_block(plain, bad, name)
    data = bytearray(bad.read_bytes())
    key = f"{name}.nextn_predict_layers".encode()
    at = data.index(key) + len(key) + 4  # value type (uint32), then the value
    data[at:at + 4] = (5).to_bytes(4, "little")
    bad.write_bytes(bytes(data))
    proc = chimera.run("logits", "-m", bad, "--tokens", "1", "-o", tmp_path / "x", check=False)
    assert proc.returncode != 0 and "nextn_predict_layers 5" in proc.stderr

