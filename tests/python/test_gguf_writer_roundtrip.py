"""Files written by chimera's GgufWriter (through the hidden `chimera gguf OUT --write-from-json
SPEC` test aid) are read back by the `gguf` package's GGUFReader identically, and are byte-for-byte
the file the package's own GGUFWriter produces from the same content."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import gguf
from gguf import GGMLQuantizationType as QT
from gguf import GGUFValueType as VT
from gguf.constants import GGML_QUANT_SIZES

I = np.iinfo
NP_OF = {VT.UINT8: np.uint8, VT.INT8: np.int8, VT.UINT16: np.uint16, VT.INT16: np.int16,
         VT.UINT32: np.uint32, VT.INT32: np.int32, VT.UINT64: np.uint64, VT.INT64: np.int64}


def make_content(rng: np.random.Generator):
    """(kvs, tensors): kvs as (key, value type, value, element type or None); tensors as
    (name, ggml type, ne, raw bytes)."""
    kvs = [("general.architecture", VT.STRING, "granitehybrid", None)]
    for vt, dt in NP_OF.items():
        info = I(dt)
        kvs.append((f"s.{vt.name.lower()}", vt, int(rng.integers(info.min, info.max, dtype=dt,
                                                                endpoint=True)), None))
        kvs.append((f"s.{vt.name.lower()}.max", vt, int(info.max), None))
        kvs.append((f"s.{vt.name.lower()}.min", vt, int(info.min), None))
        vals = [int(x) for x in rng.integers(info.min, info.max, size=10, dtype=dt, endpoint=True)]
        kvs.append((f"a.{vt.name.lower()}", VT.ARRAY, vals, vt))
    kvs.append(("s.f32", VT.FLOAT32, float(np.float32(rng.standard_normal())), None))
    kvs.append(("s.f64", VT.FLOAT64, float(rng.standard_normal()), None))
    kvs.append(("s.bool", VT.BOOL, True, None))
    kvs.append(("s.bool_false", VT.BOOL, False, None))
    kvs.append(("s.str", VT.STRING, "ünïcode ✓ \"quotes\" \\ and\nnewlines", None))
    kvs.append(("a.f32", VT.ARRAY, [float(np.float32(x)) for x in rng.standard_normal(33)],
                VT.FLOAT32))
    kvs.append(("a.f64", VT.ARRAY, [float(x) for x in rng.standard_normal(5)], VT.FLOAT64))
    kvs.append(("a.bool", VT.ARRAY, [True, False, False, True], VT.BOOL))
    kvs.append(("a.str", VT.ARRAY, ["", "Ġ", "merge one", "é" * 100] + [f"t{i}" for i in range(200)],
                VT.STRING))

    tensors = []
    for i, qt in enumerate(QT):
        block, size = GGML_QUANT_SIZES[qt]
        n_dims = 1 + i % 4
        ne = [2 * block] + [1 + (i + d) % 3 for d in range(1, n_dims)]
        n_blocks = int(np.prod(ne)) // block
        tensors.append((f"t.{qt.name.lower()}", qt, ne,
                        rng.integers(0, 256, size=n_blocks * size, dtype=np.uint8).tobytes()))
    return kvs, tensors


def spec_json(kvs, tensors, alignment: int | None) -> dict:
    spec: dict = {"kv": [], "tensors": []}
    if alignment is not None:
        spec["alignment"] = alignment
    for key, vt, val, sub in kvs:
        e = {"key": key, "type": vt.name, "value": val}
        if sub is not None:
            e["elem_type"] = sub.name
        spec["kv"].append(e)
    for name, qt, ne, raw in tensors:
        spec["tensors"].append({"name": name, "type": qt.name, "ne": ne, "data_hex": raw.hex()})
    return spec


def write_with_package(path: Path, kvs, tensors, alignment: int | None) -> None:
    w = gguf.GGUFWriter(str(path), "granitehybrid")  # writes general.architecture first
    if alignment is not None:
        w.add_custom_alignment(alignment)
    for key, vt, val, sub in kvs[1:]:
        w.add_key_value(key, val, vt, sub_type=sub)
    for name, qt, ne, raw in tensors:
        block, size = GGML_QUANT_SIZES[qt]
        rows = int(np.prod(ne[1:]))
        payload = np.frombuffer(raw, dtype=np.uint8).reshape(rows, -1)
        # raw_shape is the numpy (reversed ggml) shape in bytes for quantized data.
        byte_shape = [*reversed(ne[1:]), ne[0] // block * size]
        w.add_tensor(name, payload, raw_shape=byte_shape, raw_dtype=qt)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


@pytest.mark.parametrize("alignment", [None, 1, 16, 64, 4096])
def test_chimera_writer_read_by_package(tmp_path: Path, chimera, alignment) -> None:
    rng = np.random.default_rng(77 + (alignment or 0))
    kvs, tensors = make_content(rng)
    # general.alignment is written by set_alignment before the other keys, as the package does
    # after general.architecture; keep the key order the same on both sides.
    spec = spec_json(kvs, tensors, None)
    if alignment is not None:
        spec["kv"].insert(1, {"key": "general.alignment", "type": "UINT32", "value": alignment})
        spec["alignment"] = alignment
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    ours = tmp_path / "ours.gguf"
    chimera.run("gguf", ours, "--write-from-json", tmp_path / "spec.json")

    reader = gguf.GGUFReader(str(ours))
    fields = [f for f in reader.fields.values() if not f.name.startswith("GGUF.")]
    expected_kvs = list(kvs)
    if alignment is not None:
        expected_kvs.insert(1, ("general.alignment", VT.UINT32, alignment, None))
    assert [f.name for f in fields] == [k[0] for k in expected_kvs]
    for f, (key, vt, val, sub) in zip(fields, expected_kvs):
        assert f.types[0] == vt, key
        if sub is not None:
            assert f.types[-1] == sub, key
        assert f.contents() == val, key
    assert reader.alignment == (alignment or 32)
    assert len(reader.tensors) == len(tensors)
    for t, (name, qt, ne, raw) in zip(reader.tensors, tensors):
        assert t.name == name
        assert t.tensor_type == qt
        assert [int(d) for d in t.shape] == ne
        assert int(t.n_bytes) == len(raw)
        assert t.data.tobytes() == raw, name

    # The same content through the package's own writer gives the same bytes.
    theirs = tmp_path / "theirs.gguf"
    write_with_package(theirs, kvs, tensors, alignment)
    assert ours.read_bytes() == theirs.read_bytes()


def test_bad_specs_are_rejected_with_a_message(tmp_path: Path, chimera) -> None:
    cases = {
        "out of range": {"kv": [{"key": "k", "type": "UINT8", "value": 256}]},
        "negative unsigned": {"kv": [{"key": "k", "type": "UINT32", "value": -1}]},
        "nested": {"kv": [{"key": "k", "type": "ARRAY", "elem_type": "ARRAY", "value": []}]},
        "bad type": {"kv": [{"key": "k", "type": "UINT128", "value": 1}]},
        "byte count": {"tensors": [{"name": "t", "type": "F32", "ne": [4], "data_hex": "00"}]},
        "alignment": {"alignment": 48},
    }
    for what, spec in cases.items():
        (tmp_path / "spec.json").write_text(json.dumps(spec))
        out = tmp_path / "out.gguf"
        proc = chimera.run("gguf", out, "--write-from-json", tmp_path / "spec.json", check=False)
        assert proc.returncode == 1, what
        assert "chimera gguf:" in proc.stderr, what
        assert not out.exists(), what
