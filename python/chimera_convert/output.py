"""Writes a conversion plan (keys + lazily produced tensors) into a GGUF file.

Which tensors stay F32 follows llama.cpp's converter (spec section 1.7): every 1-D tensor, every
`*_norm.weight`, the MoE routers, `ssm_conv1d.weight` (the CPU ssm_conv op needs F32), and every
tensor whose name does not end in `.weight` (`ssm_a`, `ssm_d`, biases). Everything else gets the
requested output type. The file is written to a temporary name and renamed at the end, so a failed
conversion never leaves a half-written OUT.gguf behind.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import gguf
import numpy as np

from . import ConversionError

OUTTYPES = {
    "f32": (gguf.GGMLQuantizationType.F32, gguf.LlamaFileType.ALL_F32),
    "f16": (gguf.GGMLQuantizationType.F16, gguf.LlamaFileType.MOSTLY_F16),
    "bf16": (gguf.GGMLQuantizationType.BF16, gguf.LlamaFileType.MOSTLY_BF16),
}

_ALWAYS_F32_SUFFIXES = ("_norm.weight", "ffn_gate_inp.weight", "ffn_gate_inp_shexp.weight",
                        "ssm_conv1d.weight", "shortconv.conv.weight")


def tensor_type(name: str, ndim: int, outtype: gguf.GGMLQuantizationType):
    if ndim <= 1 or not name.endswith(".weight") or name.endswith(_ALWAYS_F32_SUFFIXES):
        return gguf.GGMLQuantizationType.F32
    return outtype


@dataclass
class PlannedTensor:
    name: str  # GGUF name
    shape: tuple[int, ...]  # numpy order (reversed ggml ne)
    produce: Callable[[], np.ndarray]  # returns float32 data of `shape`
    source: str  # HF tensor name(s), for error messages


@dataclass
class Plan:
    arch: str
    # (setter name on GGUFWriter or raw key, value, explicit GGUFValueType or None)
    keys: list[tuple[str, object]] = field(default_factory=list)
    tensors: list[PlannedTensor] = field(default_factory=list)

    def key(self, setter: str, *args) -> None:
        self.keys.append((setter, args))

    def tensor(self, name: str, shape, produce, source: str) -> None:
        if any(t.name == name for t in self.tensors):
            raise ConversionError(f"internal: GGUF tensor '{name}' planned twice (from {source})")
        if len(name.encode()) >= 64:
            raise ConversionError(f"GGUF tensor name '{name}' is 64 bytes or longer")
        self.tensors.append(PlannedTensor(name, tuple(int(d) for d in shape), produce, source))


def _encode(data: np.ndarray, qtype) -> np.ndarray:
    if qtype == gguf.GGMLQuantizationType.F32:
        return np.ascontiguousarray(data, dtype=np.float32)
    if qtype == gguf.GGMLQuantizationType.F16:
        return np.ascontiguousarray(data.astype(np.float16))  # round to nearest even
    # BF16: the gguf package's rounding (nearest even, NaN kept quiet), as llama.cpp's converter
    return gguf.quants.quantize(np.ascontiguousarray(data, dtype=np.float32), qtype)


def write_plan(plan: Plan, out_path: str | Path, outtype: str, vocab_writer=None) -> None:
    if outtype not in OUTTYPES:
        raise ConversionError(f"unknown --outtype '{outtype}' (expected f32, f16 or bf16)")
    qtype, ftype = OUTTYPES[outtype]
    out_path = Path(out_path)
    tmp_path = out_path.with_name(out_path.name + ".tmp")
    writer = gguf.GGUFWriter(str(tmp_path), plan.arch)
    try:
        for setter, args in plan.keys:
            getattr(writer, setter)(*args)
        writer.add_file_type(int(ftype))
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        if vocab_writer is not None:
            vocab_writer(writer)
        types = []
        for t in plan.tensors:
            tt = tensor_type(t.name, len(t.shape), qtype)
            types.append(tt)
            nbytes = int(np.prod(t.shape, dtype=np.int64)) * (4 if tt == gguf.GGMLQuantizationType.F32 else 2)
            dtype = {gguf.GGMLQuantizationType.F32: np.float32,
                     gguf.GGMLQuantizationType.F16: np.float16,
                     gguf.GGMLQuantizationType.BF16: np.uint16}[tt]
            # BF16 needs raw_dtype; byte shape == element shape for 2-byte types
            writer.add_tensor_info(t.name, t.shape, np.dtype(dtype), nbytes,
                                   raw_dtype=tt if tt == gguf.GGMLQuantizationType.BF16 else None)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for t, tt in zip(plan.tensors, types):
            data = t.produce()
            if data.shape != t.shape:
                raise ConversionError(
                    f"internal: tensor '{t.name}' (from {t.source}) produced shape {data.shape}, "
                    f"planned {t.shape}")
            writer.write_tensor_data(_encode(data, tt))
        writer.close()
        os.replace(tmp_path, out_path)
    except BaseException:
        writer.close()
        tmp_path.unlink(missing_ok=True)
        raise
