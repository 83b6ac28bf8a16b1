"""Bitwise checks of chimera's scalar (de)quantization against the gguf package's numpy reference.

Random quantized blocks (random bytes, finite random fp16 scale fields) are written into a GGUF with
gguf.GGUFWriter as raw tensors; `chimera dequant FILE --tensor NAME -o OUT` dumps each one as raw
float32, which must equal gguf.quants.dequantize bit for bit (compared as uint32, so NaN payloads
and signed zeros count). Quantization is checked through `chimera quantize` against
gguf.quants.quantize for the types the package can quantize.

CHIMERA_BIN names the chimera binary (default: build/bin/chimera).
"""

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from gguf import GGMLQuantizationType as T
from gguf import GGUFReader, GGUFWriter
from gguf.constants import GGML_QUANT_SIZES
from gguf.quants import dequantize, quantize

REPO = Path(__file__).resolve().parents[2]
CHIMERA = os.environ.get("CHIMERA_BIN", str(REPO / "build" / "bin" / "chimera"))

BLOCKS_PER_TYPE = 10240  # the acceptance asks for >= 10,000 random blocks per type
BLOCKS_PER_ROW = 64

# Byte offsets of the fp16 scale fields inside one block (spec 1.5). They are made finite so that
# values are finite; every other byte is random.
FP16_FIELDS = {
    T.Q8_0: [0],
    T.Q4_0: [0],
    T.Q4_K: [0, 2],
    T.Q5_K: [0, 2],
    T.Q6_K: [208],
}


def run_chimera(*args, check=True):
    proc = subprocess.run([CHIMERA, *map(str, args)], capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"chimera {' '.join(map(str, args))} failed ({proc.returncode}):\n"
                             f"{proc.stdout}\n{proc.stderr}")
    return proc


def random_finite_fp16(rng, n):
    """Random fp16 bit patterns over every finite value: zeros, subnormals, normals, both signs."""
    magnitude = rng.integers(0, 0x7C00, size=n, dtype=np.uint16)
    sign = rng.integers(0, 2, size=n, dtype=np.uint16) << np.uint16(15)
    return magnitude | sign


def random_blocks(rng, qtype, n_blocks):
    block_size, type_size = GGML_QUANT_SIZES[qtype]
    data = rng.integers(0, 256, size=(n_blocks, type_size), dtype=np.uint8)
    for off in FP16_FIELDS[qtype]:
        data[:, off:off + 2] = random_finite_fp16(rng, n_blocks).view(np.uint8).reshape(-1, 2)
    return data.reshape(n_blocks // BLOCKS_PER_ROW, BLOCKS_PER_ROW * type_size)


def all_16bit_patterns():
    return np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.uint8).reshape(256, 512)


@pytest.fixture(scope="module")
def quantized_file(tmp_path_factory):
    """A GGUF holding one raw tensor per type, and the raw bytes of each."""
    rng = np.random.default_rng(20261127)
    tensors = {f"q.{t.name}": (t, random_blocks(rng, t, BLOCKS_PER_TYPE)) for t in FP16_FIELDS}
    # Every fp16 / bf16 bit pattern, NaNs and infinities included; random float32 bit patterns.
    tensors["all.F16"] = (T.F16, all_16bit_patterns())
    tensors["all.BF16"] = (T.BF16, all_16bit_patterns())
    tensors["rand.F32"] = (T.F32, rng.integers(0, 256, size=(128, 4 * 512), dtype=np.uint8))
    path = tmp_path_factory.mktemp("quants") / "blocks.gguf"
    writer = GGUFWriter(str(path), "test")
    for name, (qtype, raw) in tensors.items():
        writer.add_tensor(name, raw, raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path, tensors


@pytest.mark.parametrize("name", [f"q.{t.name}" for t in FP16_FIELDS] +
                         ["all.F16", "all.BF16", "rand.F32"])
def test_dequantize_matches_gguf_bitwise(quantized_file, tmp_path, name):
    path, tensors = quantized_file
    qtype, raw = tensors[name]
    out = tmp_path / "out.f32"
    run_chimera("dequant", path, "--tensor", name, "-o", out)
    ours = np.fromfile(out, dtype="<u4")
    theirs = dequantize(raw, qtype).astype(np.float32, copy=False).reshape(-1).view(np.uint32)
    assert ours.shape == theirs.shape
    mismatch = np.flatnonzero(ours != theirs)
    assert mismatch.size == 0, (
        f"{name}: {mismatch.size} of {ours.size} values differ; first at {mismatch[0]}: "
        f"chimera {ours[mismatch[0]]:#010x} vs gguf {theirs[mismatch[0]]:#010x}")


def test_dequant_statistics_match_numpy(quantized_file):
    path, tensors = quantized_file
    qtype, raw = tensors["q.Q4_K"]
    values = dequantize(raw, qtype).astype(np.float64)
    out = run_chimera("dequant", path, "--tensor", "q.Q4_K").stdout
    fields = dict(line.split(None, 1) for line in out.splitlines() if line.strip())
    assert fields["type"].strip() == "Q4_K"
    assert int(fields["elements"]) == values.size
    # printed with %.9g, enough digits to round-trip a float32 exactly
    assert np.float32(float(fields["min"])) == np.float32(values.min())
    assert np.float32(float(fields["max"])) == np.float32(values.max())
    assert int(fields["nan"]) == 0 and int(fields["inf"]) == 0


def test_dequant_reports_unsupported_type_and_missing_tensor(tmp_path):
    path = tmp_path / "q4_1.gguf"
    writer = GGUFWriter(str(path), "test")
    writer.add_tensor("w", np.zeros((2, 20), dtype=np.uint8), raw_dtype=T.Q4_1)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    proc = run_chimera("dequant", path, "--tensor", "w", check=False)
    assert proc.returncode != 0
    assert "Q4_1" in proc.stderr and "Q4_K" in proc.stderr  # names the type and the supported ones
    proc = run_chimera("dequant", path, "--tensor", "nope", check=False)
    assert proc.returncode != 0 and "nope" in proc.stderr


def write_f32_model(path, tensors):
    writer = GGUFWriter(str(path), "llama")
    writer.add_uint32("llama.block_count", 1)
    writer.add_string("general.name", "quantize test")
    writer.add_array("tokenizer.ggml.tokens", ["<s>", "a", "b"])
    for name, data in tensors.items():
        writer.add_tensor(name, data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def quantization_inputs(rng):
    """2-D weights of 10,240 blocks of 32 (>= 10,000 per type), mixing Gaussian rows, rows of
    exact ties (half-integers with the block maximum 127: Q8_0's x/d lands on .5; multiples of
    0.5 in [-8, 8) with -8 first: Q4_0's x/d + 8.5 lands on integers) and fp16/bf16 midpoints."""
    gauss = (rng.standard_normal((640, 256)) * np.exp(rng.standard_normal((640, 1)))).astype(np.float32)
    ties8 = (rng.integers(-254, 255, size=(320, 256)) / 2).astype(np.float32)
    ties8[:, ::32] = 127.0
    ties4 = (rng.integers(-16, 16, size=(320, 256)) / 2).astype(np.float32)
    ties4[:, ::32] = -8.0
    # Midpoints between adjacent fp16 values (and bf16 values), below and at the tie.
    h = rng.integers(0, 0x7BFF, size=256 * 64, dtype=np.uint16)
    lo = h.view(np.float16).astype(np.float64)
    hi = (h + 1).view(np.float16).astype(np.float64)
    mid16 = ((lo + hi) / 2).astype(np.float32).reshape(64, 256)
    b = rng.integers(0, 0x4700, size=256 * 64, dtype=np.uint32) << 16  # stays below 32768
    mid_bf16 = ((b | 0x8000) | (rng.integers(0, 2, size=b.size, dtype=np.uint32) << 16)).view(np.float32)
    return {
        "blk.0.ffn_up.weight": gauss,
        "blk.0.ffn_gate.weight": ties8,
        "blk.0.ffn_down.weight": ties4,
        "blk.0.attn_q.weight": mid16,
        "blk.0.attn_k.weight": mid_bf16.reshape(64, 256),
        "blk.0.attn_norm.weight": gauss[0].copy(),  # 1-D: must stay F32
    }


@pytest.mark.parametrize("qname", ["Q8_0", "Q4_0", "F16", "BF16"])
def test_quantize_matches_gguf_bitwise(tmp_path, qname):
    qtype = T[qname]
    src = quantization_inputs(np.random.default_rng(99))
    inp, out = tmp_path / "in.gguf", tmp_path / "out.gguf"
    write_f32_model(inp, src)
    run_chimera("quantize", inp, out, qname, "-t", "2")
    reader = GGUFReader(str(out))
    got = {t.name: t for t in reader.tensors}
    assert set(got) == set(src)
    assert int(reader.fields["general.file_type"].parts[-1][0]) == {
        "Q8_0": 7, "Q4_0": 2, "F16": 1, "BF16": 32}[qname]
    assert bytes(reader.fields["general.name"].parts[-1]) == b"quantize test"
    for name, data in src.items():
        t = got[name]
        if data.ndim == 1:
            assert t.tensor_type == T.F32
            assert np.array_equal(np.asarray(t.data).view(np.uint32), data.view(np.uint32))
            continue
        assert t.tensor_type == qtype, name
        expect = quantize(data, qtype)
        ours = np.asarray(t.data).view(np.uint8).reshape(-1)
        theirs = np.ascontiguousarray(expect).view(np.uint8).reshape(-1)
        assert ours.size == theirs.size, name
        diff = np.flatnonzero(ours != theirs)
        assert diff.size == 0, f"{name}: {diff.size} bytes differ, first at byte {diff[0]}"


@pytest.mark.parametrize("qname", ["Q4_K", "Q5_K", "Q6_K", "Q4_K_M"])
def test_kquant_output_read_by_gguf_package(tmp_path, qname):
    """The gguf package reads chimera's K-quant files and decodes them to what chimera decodes,
    close to the originals (relative RMS bounds as in tests/gguf/quantize_model_test.cpp)."""
    rng = np.random.default_rng(7)
    src = {
        "token_embd.weight": (rng.standard_normal((64, 512)) * 0.05).astype(np.float32),
        "blk.0.attn_v.weight": (rng.standard_normal((32, 512)) * 0.05).astype(np.float32),
        "output.weight": (rng.standard_normal((64, 512)) * 0.05).astype(np.float32),
        "blk.0.ssm_conv1d.weight": rng.standard_normal((512, 4)).astype(np.float32),
    }
    inp, out = tmp_path / "in.gguf", tmp_path / "out.gguf"
    write_f32_model(inp, src)
    run_chimera("quantize", inp, out, qname)
    reader = GGUFReader(str(out))
    allowed = {T.Q4_K: 0.16, T.Q5_K: 0.08, T.Q6_K: 0.04}
    base = T.Q4_K if qname == "Q4_K_M" else T[qname]
    for t in reader.tensors:
        data = src[t.name]
        if t.name == "blk.0.ssm_conv1d.weight":
            assert t.tensor_type == T.F32
            continue
        want = T.Q6_K if (qname == "Q4_K_M" and t.name != "token_embd.weight") else base
        assert t.tensor_type == want, t.name
        values = dequantize(np.asarray(t.data), t.tensor_type).reshape(data.shape)
        rel = np.sqrt(np.mean((values.astype(np.float64) - data) ** 2) / np.mean(data.astype(np.float64) ** 2))
        assert rel <= allowed[t.tensor_type], (t.name, rel)
        dump = tmp_path / "t.f32"
        run_chimera("dequant", out, "--tensor", t.name, "-o", dump)
        assert np.array_equal(np.fromfile(dump, dtype="<u4"), values.reshape(-1).view(np.uint32))
