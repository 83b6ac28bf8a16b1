"""Byte-level BPE tokenizer.json -> `gpt2` GGUF vocabulary (spec section 7).

Token list: index = id, padded up to the model's vocabulary size with `[PAD{i}]` (type UNUSED) for
ids the tokenizer does not define, as llama.cpp's converter does. Types: added special tokens are
CONTROL, other added tokens USER_DEFINED, the rest NORMAL. Merges, special token ids, add_bos/eos
and the chat template come from gguf.SpecialVocab (the gguf package's own reader of
tokenizer.json / tokenizer_config.json / config.json), the same code llama.cpp's converter uses.

`tokenizer.ggml.pre` names the pre-tokenizer regex the runtime must apply. llama.cpp picks it by
hashing the tokenizer's output on a fixed text; here it is read off the tokenizer.json structure,
which works for tokenizers llama.cpp has never seen (like the fixtures' own).
"""

from __future__ import annotations

import json
from pathlib import Path

import gguf

from . import ConversionError

# Pre-tokenizer regexes as HF tokenizer.json files spell them, and the llama.cpp `pre` names whose
# regex is the same (spec section 7 table).
GPT2_REGEX = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
                r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
# Qwen3.5: combining marks join words and leave the punctuation class (llama.cpp `qwen35`)
QWEN35_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}"
                r"| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
               r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


def _split_regex(node: dict) -> str | None:
    if node.get("type") != "Split":
        return None
    pattern = node.get("pattern", {})
    return pattern.get("Regex")


def detect_pre(tok: dict, where: str) -> str:
    """Maps tokenizer.json's pre_tokenizer to a llama.cpp `tokenizer.ggml.pre` value."""
    pre = tok.get("pre_tokenizer") or {}
    model = tok.get("model") or {}
    if pre.get("type") == "ByteLevel" and pre.get("use_regex", True):
        if pre.get("add_prefix_space"):
            raise ConversionError(f"{where}: ByteLevel add_prefix_space=true has no llama.cpp pre")
        return "gpt-2"
    if pre.get("type") == "Sequence":
        items = pre.get("pretokenizers", [])
        if (len(items) == 2 and items[1].get("type") == "ByteLevel"
                and not items[1].get("use_regex", True)
                and not items[1].get("add_prefix_space", False)):
            regex = _split_regex(items[0])
            ignore_merges = bool(model.get("ignore_merges", False))
            if regex == LLAMA3_REGEX:
                # llama3 regex: `llama-bpe` also implies ignore_merges; `dbrx` (Granite 4.0) not
                return "llama-bpe" if ignore_merges else "dbrx"
            if regex == QWEN2_REGEX and not ignore_merges:
                return "qwen2"
            if regex == QWEN35_REGEX and not ignore_merges:
                return "qwen35"
    raise ConversionError(
        f"{where}: pre-tokenizer {json.dumps(pre)[:300]} is not one this converter recognises; "
        f"pass --vocab-pre NAME with the llama.cpp pre-tokenizer name whose regex it uses")


def make_vocab_writer(model_dir: Path, n_vocab: int, pre_override: str | None = None):
    """Validates the tokenizer now; returns a function that adds the vocabulary to a GGUFWriter."""
    path = model_dir / "tokenizer.json"
    if not path.is_file():
        raise ConversionError(f"{model_dir}: no tokenizer.json (only byte-level BPE is supported)")
    try:
        with open(path, encoding="utf-8") as f:
            tok = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConversionError(f"{path}: cannot read JSON: {e}") from e
    model = tok.get("model") or {}
    if model.get("type") != "BPE":
        raise ConversionError(f"{path}: model type {model.get('type')!r}, expected 'BPE'")
    decoder = tok.get("decoder") or {}
    if decoder.get("type") != "ByteLevel":
        raise ConversionError(f"{path}: decoder {decoder.get('type')!r} is not ByteLevel; "
                              f"only byte-level BPE maps to a gpt2 vocabulary")
    pre = pre_override if pre_override else detect_pre(tok, str(path))

    id_to_token: dict[int, str] = {}
    for text, i in model.get("vocab", {}).items():
        id_to_token[int(i)] = text
    added: dict[int, dict] = {}
    for entry in tok.get("added_tokens", []):
        i = int(entry["id"])
        if i in id_to_token and id_to_token[i] != entry["content"]:
            raise ConversionError(f"{path}: id {i} is both '{id_to_token[i]}' and added "
                                  f"token '{entry['content']}'")
        id_to_token[i] = entry["content"]
        added[i] = entry
    too_big = [i for i in id_to_token if i >= n_vocab or i < 0]
    if too_big:
        raise ConversionError(f"{path}: token id {max(too_big)} does not fit the model's "
                              f"{n_vocab}-row embedding")

    tokens: list[str] = []
    types: list[int] = []
    for i in range(n_vocab):
        if i not in id_to_token:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        elif i in added:
            tokens.append(id_to_token[i])
            types.append(gguf.TokenType.CONTROL if added[i].get("special")
                         else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(id_to_token[i])
            types.append(gguf.TokenType.NORMAL)

    special = gguf.SpecialVocab(model_dir, load_merges=True, n_vocab=n_vocab)
    if not special.merges:
        raise ConversionError(f"{path}: BPE tokenizer has no merges")

    def write(writer: gguf.GGUFWriter) -> None:
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre(pre)
        writer.add_token_list(tokens)
        writer.add_token_types(types)
        special.add_to_gguf(writer, quiet=True)

    return write
