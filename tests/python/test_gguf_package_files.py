"""Files written by the `gguf` package are read by `chimera gguf --json` exactly as the package's
own GGUFReader reads them: every key, value type, value, tensor name, type, shape, offset, size."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import gguf
from gguf import GGMLQuantizationType as QT
from gguf import GGUFValueType as VT
from gguf.constants import GGML_QUANT_SIZES

I = np.iinfo


def scalar_kvs() -> list[tuple[str, object, VT]]:
    """One key per scalar type, at the edges of each range."""
    return [
        ("test.u8", I(np.uint8).max, VT.UINT8),
        ("test.i8", I(np.int8).min, VT.INT8),
        ("test.u16", I(np.uint16).max, VT.UINT16),
        ("test.i16", I(np.int16).min, VT.INT16),
        ("test.u32", I(np.uint32).max, VT.UINT32),
        ("test.i32", I(np.int32).min, VT.INT32),
        ("test.u64", I(np.uint64).max, VT.UINT64),
        ("test.i64", I(np.int64).min, VT.INT64),
        ("test.f32", 0.1, VT.FLOAT32),
        ("test.f32_tiny", 1e-40, VT.FLOAT32),  # subnormal in float32
        ("test.f64", -1.0e300, VT.FLOAT64),
        ("test.bool_true", True, VT.BOOL),
        ("test.bool_false", False, VT.BOOL),
        ("test.str", "héllo \"wörld\"\n\t<|end|>", VT.STRING),
    ]


def array_kvs(rng: np.random.Generator) -> list[tuple[str, list, VT]]:
    """Arrays of every element type (given explicitly, so the writer does not guess)."""
    out = []
    for vt, dt in [(VT.UINT8, np.uint8), (VT.INT8, np.int8), (VT.UINT16, np.uint16),
                   (VT.INT16, np.int16), (VT.UINT32, np.uint32), (VT.INT32, np.int32),
                   (VT.UINT64, np.uint64), (VT.INT64, np.int64)]:
        info = I(dt)
        vals = [int(info.min), int(info.max), 0, 1] + [
            int(x) for x in rng.integers(info.min, info.max, size=12, dtype=dt, endpoint=True)]
        out.append((f"arr.{vt.name.lower()}", vals, vt))
    out.append(("arr.float32", [float(np.float32(x)) for x in rng.standard_normal(20)], VT.FLOAT32))
    out.append(("arr.float64", [float(x) for x in rng.standard_normal(20)], VT.FLOAT64))
    out.append(("arr.bool", [bool(x) for x in rng.integers(0, 2, size=9)], VT.BOOL))
    out.append(("arr.str", ["", "a", "Ġthe", "日本語", "x" * 300], VT.STRING))
    # Longer than the default 64-element JSON limit: the long-array path.
    out.append(("tokenizer.ggml.tokens", [f"tok{i}" for i in range(1000)], VT.STRING))
    out.append(("tokenizer.ggml.scores", [float(np.float32(-i / 7)) for i in range(1000)],
                VT.FLOAT32))
    return out


def tensor_cases(rng: np.random.Generator):
    """(name, numpy payload, raw_dtype or None, expected ggml shape) for every tensor type the
    package knows, with 1 to 4 dims. Quantized payloads are random bytes: only layout matters."""
    cases = []
    cases.append(("f32.vec", rng.standard_normal(7).astype(np.float32), None, [7]))
    cases.append(("f16.mat", rng.standard_normal((3, 5)).astype(np.float16), None, [5, 3]))
    cases.append(("f64.t3", rng.standard_normal((2, 3, 4)), None, [4, 3, 2]))
    cases.append(("i8.t4", rng.integers(-5, 5, size=(2, 1, 3, 4), dtype=np.int8), None,
                  [4, 3, 1, 2]))
    cases.append(("i16", rng.integers(-5, 5, size=(6,), dtype=np.int16), None, [6]))
    cases.append(("i32", rng.integers(-5, 5, size=(6,), dtype=np.int32), None, [6]))
    cases.append(("i64", rng.integers(-5, 5, size=(6,), dtype=np.int64), None, [6]))
    for qt in QT:
        if qt in (QT.F32, QT.F16, QT.F64, QT.I8, QT.I16, QT.I32, QT.I64):
            continue
        block, size = GGML_QUANT_SIZES[qt]
        rows, blocks_per_row = 3, 2
        raw = rng.integers(0, 256, size=(rows, blocks_per_row * size), dtype=np.uint8)
        cases.append((f"q.{qt.name.lower()}", raw, qt, [blocks_per_row * block, rows]))
    return cases


def write_package_file(path: Path, alignment: int | None, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    w = gguf.GGUFWriter(str(path), "granitehybrid")
    if alignment is not None:
        w.add_custom_alignment(alignment)
    w.add_block_count(3)
    w.add_embedding_length(64)
    w.add_head_count_kv([0, 4, 0])
    for key, val, vt in scalar_kvs():
        w.add_key_value(key, val, vt)
    for key, vals, vt in array_kvs(rng):
        w.add_key_value(key, vals, VT.ARRAY, sub_type=vt)
    shapes = {}
    for name, payload, raw_dtype, ggml_shape in tensor_cases(rng):
        w.add_tensor(name, payload, raw_dtype=raw_dtype)
        shapes[name] = ggml_shape
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return shapes


def compare_with_package_reader(path: Path, ours: dict, full_arrays: bool) -> None:
    reader = gguf.GGUFReader(str(path))
    fields = [f for f in reader.fields.values() if not f.name.startswith("GGUF.")]
    assert [m["key"] for m in ours["metadata"]] == [f.name for f in fields]
    assert ours["version"] == 3
    assert ours["alignment"] == reader.alignment
    assert ours["data_offset"] == reader.data_offset
    assert ours["file_size"] == path.stat().st_size
    for f, m in zip(fields, ours["metadata"]):
        assert m["type"] == f.types[0].name, f.name
        expected = f.contents()
        if f.types[0] == VT.ARRAY:
            assert m["elem_type"] == f.types[-1].name, f.name
            assert m["count"] == len(expected), f.name
            if not full_arrays and len(expected) > 64:
                assert m["truncated"] is True
                expected = expected[:64]
            else:
                assert "truncated" not in m
        # Integers, bools and strings compare exactly; floats too: JSON carries the exact double
        # of each float32/float64 and both sides parse it the same way.
        assert m["value"] == expected, f.name

    assert len(ours["tensors"]) == len(reader.tensors)
    for t, o in zip(reader.tensors, ours["tensors"]):
        assert o["name"] == t.name
        assert o["type"] == t.tensor_type.name, t.name
        assert o["type_id"] == int(t.tensor_type)
        assert o["shape"] == [int(d) for d in t.shape], t.name
        assert o["n_elements"] == int(t.n_elements), t.name
        assert o["nbytes"] == int(t.n_bytes), t.name
        # GGUFReader reports absolute offsets, chimera offsets relative to the data section.
        assert ours["data_offset"] + o["offset"] == t.data_offset, t.name

    totals = ours["totals"]
    assert totals["tensor_count"] == len(reader.tensors)
    assert totals["parameter_count"] == sum(int(t.n_elements) for t in reader.tensors)
    assert totals["bytes"] == sum(int(t.n_bytes) for t in reader.tensors)
    by_type: dict[str, int] = {}
    for t in reader.tensors:
        by_type[t.tensor_type.name] = by_type.get(t.tensor_type.name, 0) + int(t.n_bytes)
    assert {k: v["bytes"] for k, v in totals["bytes_by_type"].items()} == by_type


@pytest.mark.parametrize("alignment", [None, 1, 8, 64, 1024])
def test_package_file_read_identically(tmp_path: Path, chimera, alignment) -> None:
    path = tmp_path / "pkg.gguf"
    shapes = write_package_file(path, alignment, seed=1234 + (alignment or 0))
    ours = chimera.json("gguf", path, "--json", "--full-arrays")
    compare_with_package_reader(path, ours, full_arrays=True)
    assert {t["name"]: t["shape"] for t in ours["tensors"]} == shapes
    assert ours["alignment"] == (alignment or 32)
    assert ours["architecture"] == "granitehybrid"
    assert ours["hyperparameters"]["block_count"] == 3
    assert ours["hyperparameters"]["attention.head_count_kv"] == [0, 4, 0]


def test_long_arrays_are_cut_without_full_arrays(tmp_path: Path, chimera) -> None:
    path = tmp_path / "pkg.gguf"
    write_package_file(path, None, seed=99)
    ours = chimera.json("gguf", path, "--json")
    compare_with_package_reader(path, ours, full_arrays=False)
    tokens = next(m for m in ours["metadata"] if m["key"] == "tokenizer.ggml.tokens")
    assert tokens["count"] == 1000 and len(tokens["value"]) == 64


def test_committed_fixture_matches_package_reader(repo_root: Path, chimera) -> None:
    path = repo_root / "tests" / "fixtures" / "gguf" / "tiny_granitehybrid.gguf"
    ours = chimera.json("gguf", path, "--json", "--full-arrays")
    compare_with_package_reader(path, ours, full_arrays=True)
