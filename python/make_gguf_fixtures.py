#!/usr/bin/env python3
"""Writes the small GGUF fixtures under tests/fixtures/gguf/ with the `gguf` package.

tiny_granitehybrid.gguf: plausible granitehybrid metadata (4 layers, layer 2 attention, the others
Mamba2; head_count_kv is an INT32 array with 0 for Mamba layers, as the converter writes it), a
small GPT-2-style vocabulary, and a handful of small tensors, one of each type chimera computes
with (F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q5_K, Q6_K). The tensors are not a runnable model (most
have fewer rows than the real model would, to keep the file small): they exercise the reader, the
`chimera gguf` command and dequantization.

Also writes the libFuzzer seed corpus tests/fuzz/corpus/gguf/: small valid files (every value
type, arrays, a few tensors, custom alignment) and slightly broken variants of them.

Deterministic (fixed seed): rerunning reproduces the committed files byte for byte.
    .venv/bin/python python/make_gguf_fixtures.py [--out-dir tests/fixtures/gguf]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import gguf
from gguf import GGMLQuantizationType as QT
from gguf.constants import GGML_QUANT_SIZES

ARCH = "granitehybrid"
D = 256  # embedding length; a multiple of 256 so every K-quant fits a row
N_LAYERS = 4
ATTN_LAYER = 2
N_HEAD = 4
N_KV = 2
D_STATE = 16
N_GROUPS = 1
D_INNER = 2 * D
SSM_HEADS = 8


def random_fp16_scales(rng: np.random.Generator, n: int, lo: float, hi: float) -> np.ndarray:
    return rng.uniform(lo, hi, size=n).astype(np.float16).view(np.uint16)


def random_kquant_rows(rng: np.random.Generator, qtype: QT, n_rows: int, n_cols: int) -> np.ndarray:
    """Random blocks of a K-quant type (gguf.quants cannot quantize K-quants), with finite scales.

    Returns a uint8 array of shape (n_rows, bytes_per_row), as GGUFWriter.add_tensor expects for
    raw quantized data.
    """
    block, size = GGML_QUANT_SIZES[qtype]
    n_blocks = n_rows * n_cols // block
    raw = rng.integers(0, 256, size=(n_blocks, size), dtype=np.uint8)
    # The fp16 scale fields: (d, dmin) at the start of Q4_K/Q5_K, d at the end of Q6_K.
    if qtype in (QT.Q4_K, QT.Q5_K):
        raw[:, 0:2] = random_fp16_scales(rng, n_blocks, 1e-3, 1e-2).view(np.uint8).reshape(-1, 2)
        raw[:, 2:4] = random_fp16_scales(rng, n_blocks, 1e-3, 1e-2).view(np.uint8).reshape(-1, 2)
    elif qtype == QT.Q6_K:
        raw[:, size - 2 : size] = (
            random_fp16_scales(rng, n_blocks, 1e-3, 1e-2).view(np.uint8).reshape(-1, 2)
        )
    else:
        raise ValueError(qtype)
    return raw.reshape(n_rows, n_cols // block * size)


def add_quantized(writer: gguf.GGUFWriter, name: str, values: np.ndarray, qtype: QT) -> None:
    writer.add_tensor(name, gguf.quants.quantize(values, qtype), raw_dtype=qtype)


def make_tiny_granitehybrid(path: Path) -> None:
    rng = np.random.default_rng(20261127)
    w = gguf.GGUFWriter(str(path), ARCH)
    w.add_name("tiny granitehybrid fixture")
    w.add_block_count(N_LAYERS)
    w.add_context_length(4096)
    w.add_embedding_length(D)
    w.add_feed_forward_length(512)
    w.add_head_count(N_HEAD)
    w.add_head_count_kv([N_KV if i == ATTN_LAYER else 0 for i in range(N_LAYERS)])
    w.add_layer_norm_rms_eps(1e-5)
    w.add_float32(f"{ARCH}.attention.scale", 0.0078125)
    w.add_float32(f"{ARCH}.embedding_scale", 12.0)
    w.add_float32(f"{ARCH}.residual_scale", 0.22)
    w.add_float32(f"{ARCH}.logit_scale", 8.0)
    w.add_bool(f"{ARCH}.rope.scaling.finetuned", False)
    w.add_rope_freq_base(10000.0)
    w.add_uint32(f"{ARCH}.expert_count", 0)
    w.add_uint32(f"{ARCH}.expert_shared_feed_forward_length", 512)
    w.add_ssm_conv_kernel(4)
    w.add_ssm_state_size(D_STATE)
    w.add_ssm_group_count(N_GROUPS)
    w.add_ssm_inner_size(D_INNER)
    w.add_ssm_time_step_rank(SSM_HEADS)
    w.add_vocab_size(32)

    tokens = ["<|end_of_text|>", "<|pad|>"] + [chr(c) for c in range(ord("a"), ord("z") + 1)]
    tokens += ["Ġ", "Ċ", "Ġa", "é"]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("dbrx")
    w.add_token_list(tokens)
    w.add_token_types([3, 3] + [1] * (len(tokens) - 2))
    w.add_token_merges(["Ġ a"])
    w.add_bos_token_id(0)
    w.add_eos_token_id(0)
    w.add_pad_token_id(1)
    w.add_add_bos_token(False)
    w.add_chat_template("{% for m in messages %}{{ m['content'] }}{% endfor %}")

    n_vocab = len(tokens)
    # numpy shapes are [rows, cols]; GGUF stores them reversed, so {D, n_vocab} is (n_vocab, D).
    w.add_tensor("token_embd.weight", rng.standard_normal((n_vocab, D)).astype(np.float16))
    w.add_tensor("output_norm.weight", (1 + 0.1 * rng.standard_normal(D)).astype(np.float32))
    w.add_tensor("blk.0.attn_norm.weight", (1 + 0.1 * rng.standard_normal(D)).astype(np.float32))
    w.add_tensor("blk.0.ssm_a", -np.exp(rng.standard_normal((SSM_HEADS, 1))).astype(np.float32))
    add_quantized(w, "blk.0.ssm_out.weight", rng.standard_normal((16, D_INNER)).astype(np.float32),
                  QT.BF16)
    w.add_tensor("blk.0.ssm_in.weight", random_kquant_rows(rng, QT.Q4_K, 8, D), raw_dtype=QT.Q4_K)
    w.add_tensor("blk.1.ssm_in.weight", random_kquant_rows(rng, QT.Q5_K, 8, D), raw_dtype=QT.Q5_K)
    w.add_tensor("blk.1.ssm_out.weight", random_kquant_rows(rng, QT.Q6_K, 4, D_INNER),
                 raw_dtype=QT.Q6_K)
    add_quantized(w, "blk.2.attn_q.weight", rng.standard_normal((32, D)).astype(np.float32), QT.Q8_0)
    add_quantized(w, "blk.2.attn_k.weight",
                  rng.standard_normal((16, D)).astype(np.float32), QT.Q4_0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def write_small(path: Path, alignment: int | None, with_tensors: bool) -> bytes:
    rng = np.random.default_rng(7)
    w = gguf.GGUFWriter(str(path), "granitehybrid")
    if alignment is not None:
        w.add_custom_alignment(alignment)
    w.add_block_count(3)
    w.add_head_count_kv([0, 2, 0])
    w.add_key_value("t.u8", 7, gguf.GGUFValueType.UINT8)
    w.add_key_value("t.i8", -7, gguf.GGUFValueType.INT8)
    w.add_key_value("t.u16", 700, gguf.GGUFValueType.UINT16)
    w.add_key_value("t.i16", -700, gguf.GGUFValueType.INT16)
    w.add_key_value("t.i32", -70000, gguf.GGUFValueType.INT32)
    w.add_key_value("t.u64", 2**40, gguf.GGUFValueType.UINT64)
    w.add_key_value("t.i64", -(2**40), gguf.GGUFValueType.INT64)
    w.add_key_value("t.f32", 0.5, gguf.GGUFValueType.FLOAT32)
    w.add_key_value("t.f64", 0.25, gguf.GGUFValueType.FLOAT64)
    w.add_key_value("t.b", True, gguf.GGUFValueType.BOOL)
    w.add_key_value("t.bools", [True, False], gguf.GGUFValueType.ARRAY, gguf.GGUFValueType.BOOL)
    w.add_key_value("t.f32s", [1.0, 2.0], gguf.GGUFValueType.ARRAY, gguf.GGUFValueType.FLOAT32)
    w.add_token_list(["a", "b", "ab"])
    if with_tensors:
        w.add_tensor("f32", np.arange(4, dtype=np.float32))
        w.add_tensor("f16", np.arange(6, dtype=np.float16).reshape(2, 3))
        add_quantized(w, "q8", rng.standard_normal((1, 32)).astype(np.float32), QT.Q8_0)
        w.add_tensor("q4k", random_kquant_rows(rng, QT.Q4_K, 1, 256), raw_dtype=QT.Q4_K)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path.read_bytes()


def make_fuzz_corpus(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    valid = {
        "valid_tensors": write_small(out / "valid_tensors", None, True),
        "valid_align8": write_small(out / "valid_align8", 8, True),
        "valid_no_tensors": write_small(out / "valid_no_tensors", None, False),
    }
    base = valid["valid_tensors"]
    broken = {
        "truncated_header": base[:20],
        "truncated_kv": base[:200],
        "truncated_data": base[:-200],
        "bad_version": base[:4] + (4).to_bytes(4, "little") + base[8:],
        "huge_kv_count": base[:16] + (2**62).to_bytes(8, "little") + base[24:],
        "huge_tensor_count": base[:8] + (2**40).to_bytes(8, "little") + base[16:],
        "v2": base[:4] + (2).to_bytes(4, "little") + base[8:],
    }
    for name, data in broken.items():
        (out / name).write_bytes(data)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out-dir", default=str(Path(__file__).resolve().parent.parent /
                                            "tests" / "fixtures" / "gguf"))
    args = ap.parse_args()
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    make_tiny_granitehybrid(out / "tiny_granitehybrid.gguf")
    print(f"wrote {out / 'tiny_granitehybrid.gguf'}")
    corpus = Path(__file__).resolve().parent.parent / "tests" / "fuzz" / "corpus" / "gguf"
    make_fuzz_corpus(corpus)
    print(f"wrote {corpus}/")


if __name__ == "__main__":
    main()
