"""SentencePiece tokenizer.model -> `llama` GGUF vocabulary (what Gemma checkpoints ship).

Written the way llama.cpp's converter writes a SentencePiece vocabulary, so the files agree key
for key (checked against it by tests/python/test_converter_vs_llama_cpp.py, fixture gemma3-spm):

- tokenizer.ggml.model "llama", tokenizer.ggml.pre "default";
- one entry per id up to the model's vocabulary size (config.json vocab_size, else the number of
  pieces): ids the model defines take its piece, score and type; the rest are `[PAD{i}]`, score
  -10000, UNUSED. Piece types map UNKNOWN -> UNKNOWN, CONTROL -> CONTROL, UNUSED -> UNUSED,
  BYTE -> BYTE and everything else (NORMAL and the model's USER_DEFINED) -> NORMAL;
- added_tokens.json entries override their id as USER_DEFINED, score -1000;
- tokenizer_config.json's added_tokens_decoder entries override their id with score -1000, as
  CONTROL when marked special or when they look special (<pad>, <mask>, <2mass>, [@BOS@], <|..|>,
  <｜..｜>, <unused..>), else USER_DEFINED with U+2581 written as a space;
- special ids, add_bos/add_eos and the chat template through gguf.SpecialVocab (no merges);
- add_space_prefix as the architecture asks (Gemma: false).

The model file is a protobuf (sentencepiece's ModelProto); only its pieces (field 1: piece,
score, type) are needed, so it is decoded here rather than through the sentencepiece package.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import gguf

from . import ConversionError

# sentencepiece's ModelProto.SentencePiece.Type values
_SPM_NORMAL, _SPM_UNKNOWN, _SPM_CONTROL, _SPM_USER_DEFINED, _SPM_UNUSED, _SPM_BYTE = 1, 2, 3, 4, 5, 6
_SPM_TO_GGUF = {_SPM_UNKNOWN: gguf.TokenType.UNKNOWN, _SPM_CONTROL: gguf.TokenType.CONTROL,
                _SPM_UNUSED: gguf.TokenType.UNUSED, _SPM_BYTE: gguf.TokenType.BYTE}


class _Reader:
    """Just enough of the protobuf wire format: varints, fixed32/64 and length-delimited."""

    def __init__(self, data: bytes, where: str):
        self.data, self.pos, self.where = data, 0, where

    def done(self) -> bool:
        return self.pos >= len(self.data)

    def fail(self, what: str):
        raise ConversionError(f"{self.where}: not a SentencePiece model ({what} at byte "
                              f"{self.pos})")

    def varint(self) -> int:
        value, shift = 0, 0
        while True:
            if self.pos >= len(self.data):
                self.fail("truncated varint")
            b = self.data[self.pos]
            self.pos += 1
            value |= (b & 0x7F) << shift
            if not b & 0x80:
                return value
            shift += 7
            if shift > 63:
                self.fail("varint longer than 10 bytes")

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            self.fail(f"field of {n} bytes past the end")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def field(self) -> tuple[int, int, object]:
        """(field number, wire type, value: int for varint/fixed, bytes for length-delimited)."""
        key = self.varint()
        number, wire = key >> 3, key & 7
        if number == 0:
            self.fail("field number 0")
        if wire == 0:
            return number, wire, self.varint()
        if wire == 1:
            return number, wire, self.take(8)
        if wire == 2:
            return number, wire, self.take(self.varint())
        if wire == 5:
            return number, wire, self.take(4)
        self.fail(f"wire type {wire}")


def read_spm_pieces(path: Path) -> list[tuple[str, float, int]]:
    """The model's pieces in id order: (text, score, sentencepiece type)."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ConversionError(f"{path}: cannot read: {e}") from e
    top = _Reader(data, str(path))
    pieces = []
    while not top.done():
        number, wire, value = top.field()
        if number != 1:
            continue  # trainer / normalizer specs and the rest: not part of the vocabulary
        if wire != 2:
            top.fail("piece that is not a message")
        sub = _Reader(value, f"{path} (piece {len(pieces)})")
        text, score, kind = None, 0.0, _SPM_NORMAL
        while not sub.done():
            n, w, v = sub.field()
            if n == 1 and w == 2:
                try:
                    text = v.decode("utf-8")
                except UnicodeDecodeError:
                    sub.fail("piece text that is not UTF-8")
            elif n == 2 and w == 5:
                score = struct.unpack("<f", v)[0]
            elif n == 3 and w == 0:
                kind = v
        if text is None:
            sub.fail("piece without text")
        if kind not in (_SPM_NORMAL, _SPM_UNKNOWN, _SPM_CONTROL, _SPM_USER_DEFINED, _SPM_UNUSED,
                        _SPM_BYTE):
            sub.fail(f"piece type {kind}")
        pieces.append((text, score, kind))
    if not pieces:
        raise ConversionError(f"{path}: a SentencePiece model without pieces")
    return pieces


def _looks_special(text: str) -> bool:
    """Added tokens llama.cpp types CONTROL although the checkpoint does not mark them special."""
    return (text in ("<pad>", "<mask>", "<2mass>", "[@BOS@]")
            or (text.startswith("<|") and text.endswith("|>"))
            or (text.startswith("<\uff5c") and text.endswith("\uff5c>"))
            or (text.startswith("<unused") and text.endswith(">")))


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConversionError(f"{path}: cannot read JSON: {e}") from e


def spm_vocab(model_dir: Path, vocab_size: int | None):
    """(tokens, scores, types) as llama.cpp's converter lays them out."""
    pieces = read_spm_pieces(model_dir / "tokenizer.model")
    n = vocab_size or len(pieces)
    tokens = [f"[PAD{i}]" for i in range(n)]
    scores = [-10000.0] * n
    types = [int(gguf.TokenType.UNUSED)] * n
    for i, (text, score, kind) in enumerate(pieces[:n]):
        tokens[i] = text
        scores[i] = score
        types[i] = int(_SPM_TO_GGUF.get(kind, gguf.TokenType.NORMAL))

    added_path = model_dir / "added_tokens.json"
    if added_path.is_file():
        added = _read_json(added_path)
        if not isinstance(added, dict):
            raise ConversionError(f"{added_path}: expected an object of token -> id")
        for text, i in added.items():
            if not isinstance(i, int) or i < 0:
                raise ConversionError(f"{added_path}: '{text}' has id {i!r}")
            if i < n:
                tokens[i], scores[i], types[i] = text, -1000.0, int(gguf.TokenType.USER_DEFINED)

    config_path = model_dir / "tokenizer_config.json"
    if config_path.is_file():
        decoder = _read_json(config_path).get("added_tokens_decoder", {}) or {}
        for key, entry in decoder.items():
            try:
                i = int(key)
                text = entry["content"]
            except (ValueError, TypeError, KeyError) as e:
                raise ConversionError(f"{config_path}: added_tokens_decoder entry {key!r} has no "
                                      f"integer id and content") from e
            if i < 0 or i >= n:
                continue  # llama.cpp skips ids past the vocabulary too
            if entry.get("special") or _looks_special(text):
                types[i] = int(gguf.TokenType.CONTROL)
            else:
                text = text.replace("\u2581", " ")
                types[i] = int(gguf.TokenType.USER_DEFINED)
            tokens[i], scores[i] = text, -1000.0
    return tokens, scores, types


def make_spm_vocab_writer(model_dir: Path, vocab_size: int | None, add_space_prefix: bool):
    """Reads and validates the vocabulary now; returns a function adding it to a GGUFWriter."""
    tokens, scores, types = spm_vocab(model_dir, vocab_size)
    special = gguf.SpecialVocab(model_dir, load_merges=False, n_vocab=len(tokens))

    def write(writer: gguf.GGUFWriter) -> None:
        writer.add_tokenizer_model("llama")
        writer.add_tokenizer_pre("default")
        writer.add_token_list(tokens)
        writer.add_token_scores(scores)
        writer.add_token_types(types)
        special.add_to_gguf(writer, quiet=True)
        writer.add_add_space_prefix(add_space_prefix)

    return write
