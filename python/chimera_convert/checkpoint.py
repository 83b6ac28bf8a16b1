"""Lazy reader for a Hugging Face checkpoint directory: raw config.json + safetensors.

The safetensors format is an 8-byte little-endian header length, a JSON header mapping tensor names
to {dtype, shape, data_offsets}, then the raw data. It is parsed here directly (instead of through
the `safetensors` package) because numpy has no bfloat16: BF16 tensors are widened to float32 by
shifting their bits, which is exact.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import ConversionError

_DTYPES = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),  # widened to float32 in TensorRef.load
}


@dataclass
class TensorRef:
    name: str
    file: Path
    dtype: str
    shape: tuple[int, ...]
    begin: int  # absolute byte offset in the file
    end: int

    def load(self) -> np.ndarray:
        """Returns the tensor as a C-contiguous float32 array (exact for F32/F16/BF16)."""
        raw = np.memmap(self.file, dtype=np.uint8, mode="r", offset=self.begin,
                        shape=(self.end - self.begin,))
        arr = np.frombuffer(raw, dtype=_DTYPES[self.dtype])
        if self.dtype == "BF16":
            arr = (arr.astype(np.uint32) << 16).view(np.float32)
        elif self.dtype == "F64":
            # F64 has more precision than any output type; round once to float32
            arr = arr.astype(np.float32)
        else:
            arr = arr.astype(np.float32, copy=True)
        return arr.reshape(self.shape)


def _read_safetensors_header(path: Path) -> dict[str, TensorRef]:
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) != 8:
            raise ConversionError(f"{path}: truncated safetensors file (no header length)")
        (n,) = struct.unpack("<Q", head)
        if n > size - 8:
            raise ConversionError(f"{path}: header length {n} exceeds file size {size}")
        try:
            header = json.loads(f.read(n))
        except ValueError as e:  # includes JSONDecodeError and bad UTF-8
            raise ConversionError(f"{path}: safetensors header is not valid JSON: {e}") from e
    data_start = 8 + n
    refs: dict[str, TensorRef] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype = info.get("dtype")
            shape = tuple(int(d) for d in info["shape"])
            b, e = (int(x) for x in info["data_offsets"])
        except (AttributeError, KeyError, TypeError, ValueError) as err:
            raise ConversionError(f"{path}: malformed header entry for '{name}': {err}") from err
        if dtype not in _DTYPES:
            raise ConversionError(f"{path}: tensor '{name}' has unsupported dtype {dtype}")
        if any(d < 0 for d in shape):
            raise ConversionError(f"{path}: tensor '{name}' has a negative dimension {shape}")
        nbytes = int(np.prod(shape, dtype=np.int64)) * _DTYPES[dtype].itemsize
        if e - b != nbytes or e < b or data_start + e > size:
            raise ConversionError(
                f"{path}: tensor '{name}' offsets [{b}, {e}) do not match shape {shape} {dtype} "
                f"or exceed the file")
        refs[name] = TensorRef(name, path, dtype, shape, data_start + b, data_start + e)
    return refs


def _read_json(path: Path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConversionError(f"{path}: cannot read JSON: {e}") from e


class Checkpoint:
    """A HF model directory: `config` is config.json as written (no class defaults filled in)."""

    def __init__(self, directory: str | Path):
        self.dir = Path(directory)
        cfg_path = self.dir / "config.json"
        if not cfg_path.is_file():
            raise ConversionError(f"{self.dir}: no config.json")
        self.config: dict = _read_json(cfg_path)
        self.tensors: dict[str, TensorRef] = {}
        index = self.dir / "model.safetensors.index.json"
        if index.is_file():
            weight_map = _read_json(index).get("weight_map")
            if not isinstance(weight_map, dict):
                raise ConversionError(f"{index}: no 'weight_map' object")
            files = sorted(set(weight_map.values()))
        else:
            files = sorted(p.name for p in self.dir.glob("*.safetensors"))
        if not files:
            raise ConversionError(f"{self.dir}: no *.safetensors files (PyTorch .bin is not read)")
        for fname in files:
            if not (self.dir / fname).is_file():
                raise ConversionError(f"{self.dir}: listed shard '{fname}' does not exist")
            for name, ref in _read_safetensors_header(self.dir / fname).items():
                if name in self.tensors:
                    raise ConversionError(f"{self.dir}: tensor '{name}' appears in two files")
                self.tensors[name] = ref

    def architecture(self) -> str:
        archs = self.config.get("architectures") or []
        if len(archs) != 1:
            raise ConversionError(
                f"{self.dir}/config.json: expected exactly one entry in 'architectures', got {archs}")
        return archs[0]

    def get(self, key: str, default=None, required: bool = False):
        if key in self.config and self.config[key] is not None:
            return self.config[key]
        if required:
            raise ConversionError(f"{self.dir}/config.json: missing required key '{key}'")
        return default
