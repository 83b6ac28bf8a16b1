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
    T.Q4_1: [0, 2],
    T.Q5_0: [0],
    T.Q5_1: [0, 2],
    T.IQ4_NL: [0],
    T.Q4_K: [0, 2],
    T.Q5_K: [0, 2],
    T.Q6_K: [208],
    T.IQ4_XS: [0],
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
    path = tmp_path / "q8_1.gguf"
    writer = GGUFWriter(str(path), "test")
    writer.add_tensor("w", np.zeros((2, 40), dtype=np.uint8), raw_dtype=T.Q8_1)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    proc = run_chimera("dequant", path, "--tensor", "w", check=False)
    assert proc.returncode != 0
    assert "Q8_1" in proc.stderr and "Q4_K" in proc.stderr  # names the type and the supported ones
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
    # Q5_0: multiples of 0.5 in [-16, 16) with -16 first (d = 1, x/d + 16.5 lands on integers).
    ties5 = (rng.integers(-32, 32, size=(320, 256)) / 2).astype(np.float32)
    ties5[:, ::32] = -16.0
    # Q4_1 / Q5_1: block range [-7.5, 7.5] or [-15.5, 15.5] (d = 1), multiples of 0.5 inside, so
    # (x - min)/d + 0.5 lands on integers; a few all-equal blocks (d = 0).
    half = np.where(np.arange(320)[:, None] % 2 == 0, 7.5, 15.5)
    affine = (np.round(rng.uniform(-1, 1, size=(320, 256)) * half * 2) / 2).astype(np.float32)
    affine[:, ::32] = -half
    affine[:, 1::32] = half
    affine[::7, :32] = 3.25
    return {
        "blk.0.ffn_up.weight": gauss,
        "blk.0.ffn_gate.weight": ties8,
        "blk.0.ffn_down.weight": ties4,
        "blk.0.attn_q.weight": mid16,
        "blk.0.attn_k.weight": mid_bf16.reshape(64, 256),
        "blk.0.attn_output.weight": ties5,
        "blk.0.attn_v.weight": affine,
        "blk.0.attn_norm.weight": gauss[0].copy(),  # 1-D: must stay F32
    }


FILE_TYPES = {"Q8_0": 7, "Q4_0": 2, "Q4_1": 3, "Q5_0": 8, "Q5_1": 9, "F16": 1, "BF16": 32,
              "IQ4_NL": 25, "IQ4_XS": 30}


@pytest.mark.parametrize("qname", ["Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "F16", "BF16"])
def test_quantize_matches_gguf_bitwise(tmp_path, qname):
    qtype = T[qname]
    src = quantization_inputs(np.random.default_rng(99))
    inp, out = tmp_path / "in.gguf", tmp_path / "out.gguf"
    write_f32_model(inp, src)
    run_chimera("quantize", inp, out, qname, "-t", "2")
    reader = GGUFReader(str(out))
    got = {t.name: t for t in reader.tensors}
    assert set(got) == set(src)
    assert int(reader.fields["general.file_type"].parts[-1][0]) == FILE_TYPES[qname]
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


# ---- IQ4_NL / IQ4_XS quantization: gguf.quants has no quantizer for them, so this is a numpy
# transcription of llama.cpp's reference semantics (ggml-quants.c, quantize_row_iq4_nl_impl without
# an importance matrix), float32 step by step (numpy never fuses a multiply-add), vectorised over
# blocks. chimera's C++ quantizer is an independent implementation of the same semantics.

IQ4_GRID = np.array([-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113],
                    dtype=np.float32)


def iq4_nearest_index(v):
    """The grid index nearest each float32 v: the two neighbours found by bisection, the upper one
    unless v - lower < upper - v (in float32); values beyond the ends go to the end indices."""
    hi = np.clip(np.searchsorted(IQ4_GRID, v, side="right"), 1, 15)
    lo = hi - 1
    idx = np.where((v - IQ4_GRID[lo]) < (IQ4_GRID[hi] - v), lo, hi)
    idx = np.where(v <= IQ4_GRID[0], 0, idx)
    return np.where(v >= IQ4_GRID[15], 15, idx)


def iq4_group_scales(x):
    """x: (B, 32) float32 -> (B,) the weighted least-squares scale of each group of 32."""
    f32 = np.float32
    w = x * x
    ax = np.abs(x)
    amax = ax.max(axis=1)
    mx = x[np.arange(x.shape[0]), ax.argmax(axis=1)]  # the first value of largest magnitude

    def sums(iscale):
        q = IQ4_GRID[iq4_nearest_index(iscale[:, None] * x)]
        sqx = np.zeros(x.shape[0], f32)
        sq2 = np.zeros(x.shape[0], f32)
        for j in range(32):  # sequential float32 sums, as the C loop
            wq = w[:, j] * q[:, j]
            sqx = sqx + wq * x[:, j]
            sq2 = sq2 + wq * q[:, j]
        return sqx, sq2

    with np.errstate(all="ignore"):
        d0 = -mx / f32(-127)
        sqx, sq2 = sums(f32(1) / d0)
        d = sqx / sq2
        best = d * sqx
        for k in range(-7, 8):
            sqx, sq2 = sums(f32(k - 127) / mx)
            better = (sq2 > 0) & (sqx * sqx > best * sq2)
            d_new = sqx / sq2
            d = np.where(better, d_new, d)
            best = np.where(better, d_new * sqx, best)
    return np.where(amax < f32(1e-15), f32(0), d).astype(f32)


def iq4_pack(x, scale):
    """x: (B, 32), scale: (B,) -> (B, 16) packed grid indices against 1/scale (0 for scale 0)."""
    with np.errstate(divide="ignore"):
        inv = np.where(scale != 0, np.float32(1) / scale, np.float32(0)).astype(np.float32)
    L = iq4_nearest_index(inv[:, None] * x).astype(np.uint8)
    return L[:, :16] | (L[:, 16:] << np.uint8(4))


def iq4_reference_quantize(data, qtype):
    f32 = np.float32
    x = np.ascontiguousarray(data, dtype=f32).reshape(-1, 32)
    scales = iq4_group_scales(x)
    if qtype == T.IQ4_NL:
        d = scales.astype(np.float16).view(np.uint8).reshape(-1, 2)
        return np.concatenate([d, iq4_pack(x, scales)], axis=1).reshape(-1)
    s = scales.reshape(-1, 8)
    n = s.shape[0]
    max_scale = s[np.arange(n), np.abs(s).argmax(axis=1)]
    d = -max_scale / f32(32)
    with np.errstate(divide="ignore"):
        inv = np.where(d != 0, f32(1) / d, f32(0)).astype(f32)
    ls = np.clip(np.rint(inv[:, None] * s), -32, 31).astype(np.int32)
    dl = (d[:, None] * ls.astype(f32)).astype(f32)
    qs = iq4_pack(x, dl.reshape(-1)).reshape(n, 128)
    stored = (ls + 32).astype(np.uint16)
    scales_l = ((stored[:, 0::2] & 0xF) | ((stored[:, 1::2] & 0xF) << 4)).astype(np.uint8)
    scales_h = np.zeros(n, np.uint16)
    for ib in range(8):
        scales_h |= (stored[:, ib] >> 4) << (2 * ib)
    return np.concatenate([d.astype(np.float16).view(np.uint8).reshape(-1, 2),
                           scales_h.view(np.uint8).reshape(-1, 2), scales_l, qs], axis=1).reshape(-1)


def test_iq4_reference_grid_search():
    """The transcription itself: nearest indices of hand-picked values, and a block whose values
    are exactly on the grid at scale 1/127 decodes back to itself."""
    v = np.array([-200, -127, -115.5, -115.4, 0, 0.5, 6.9, 7, 100.9, 101, 113, 500],
                 dtype=np.float32)
    # ties (-115.5 between -127 and -104, 7 between 1 and 13, 101 between 89 and 113) go up
    assert iq4_nearest_index(v).tolist() == [0, 0, 1, 1, 8, 8, 8, 9, 14, 15, 15, 15]
    x = (IQ4_GRID[np.arange(32) % 16] / 127).astype(np.float32).reshape(1, 32)
    q = iq4_reference_quantize(x, T.IQ4_NL).reshape(1, 18)
    np.testing.assert_allclose(dequantize(q, T.IQ4_NL).reshape(-1), x.reshape(-1), rtol=1e-3)


@pytest.mark.parametrize("qname", ["IQ4_NL", "IQ4_XS"])
def test_iq4_quantize_matches_reference_bitwise(tmp_path, qname):
    qtype = T[qname]
    src = quantization_inputs(np.random.default_rng(98))
    tiny = src["blk.0.ffn_up.weight"][:64].copy()
    tiny[:, :32] = 0  # all-zero groups (scale 0)
    tiny[:, 32:64] *= 1e-20  # below the search's zero threshold
    tiny[::2, 64:] = 0  # an all-zero IQ4_XS super-block
    src["blk.0.ffn_up.weight"][:64] = tiny
    inp, out = tmp_path / "in.gguf", tmp_path / "out.gguf"
    write_f32_model(inp, src)
    run_chimera("quantize", inp, out, qname, "-t", "2")
    reader = GGUFReader(str(out))
    assert int(reader.fields["general.file_type"].parts[-1][0]) == FILE_TYPES[qname]
    for t in reader.tensors:
        data = src[t.name]
        if data.ndim == 1:
            assert t.tensor_type == T.F32
            continue
        assert t.tensor_type == qtype, t.name
        ours = np.asarray(t.data).view(np.uint8).reshape(-1)
        theirs = iq4_reference_quantize(data, qtype)
        assert ours.size == theirs.size, t.name
        diff = np.flatnonzero(ours != theirs)
        assert diff.size == 0, f"{t.name}: {diff.size} bytes differ, first at byte {diff[0]}"
        if t.name == "blk.0.ffn_up.weight":  # Gaussian rows: a sane approximation
            values = dequantize(np.asarray(t.data), qtype).reshape(data.shape)[64:]
            ref = data[64:].astype(np.float64)
            rel = np.sqrt(np.mean((values - ref) ** 2) / np.mean(ref ** 2))
            assert rel < 0.12, rel


@pytest.mark.parametrize("qname", ["Q4_1", "Q5_0", "Q5_1", "IQ4_NL", "IQ4_XS"])
def test_new_types_read_by_gguf_package(tmp_path, qname):
    """Files chimera writes in the new types decode (gguf package) to what chimera decodes."""
    rng = np.random.default_rng(8)
    src = {"blk.0.attn_q.weight": (rng.standard_normal((16, 512)) * 0.05).astype(np.float32)}
    inp, out = tmp_path / "in.gguf", tmp_path / "out.gguf"
    write_f32_model(inp, src)
    run_chimera("quantize", inp, out, qname)
    (t,) = GGUFReader(str(out)).tensors
    assert t.tensor_type == T[qname]
    values = dequantize(np.asarray(t.data), t.tensor_type).reshape(-1)
    dump = tmp_path / "t.f32"
    run_chimera("dequant", out, "--tensor", t.name, "-o", dump)
    assert np.array_equal(np.fromfile(dump, dtype="<u4"), values.view(np.uint32))
