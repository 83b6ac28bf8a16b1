#!/usr/bin/env python3
"""Prints the qwen35 pre-tokenizer test vectors of tests/runtime/tokenizer_test.cpp, computed by
Hugging Face `tokenizers` (the reference implementation):

  * kSplitCases rows: byte lengths of the pieces that
    pre_tokenizers.Split(Regex(QWEN35_PATTERN), behavior="isolated") cuts each kSplitTexts entry
    into;
  * kEncodeCases rows: token ids of each text under a byte-level BPE built from the GPT-2
    vocabulary and merges of ggml-vocab-gpt-2.gguf (read with the `gguf` package) with the qwen35
    pre-tokenizer in front.

QWEN35_PATTERN is Qwen3.5's tokenizer.json Split pattern as llama.cpp quotes it for its `qwen35`
pre-tokenizer type (Qwen2's pattern with combining marks \\p{M} joined to letters and taken out of
the punctuation class).

    /work/venv-fix/bin/python python/make_qwen35_tokenizer_vectors.py [VOCAB_DIR]
"""

from __future__ import annotations

import sys
from pathlib import Path

QWEN35_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}"
                  r"| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

# kSplitTexts of tests/runtime/tokenizer_test.cpp, in order (index 12 has combining marks).
TEXTS = [
    "Hello world",
    " Hello World!",
    "I've been 'told he's there, 'RE you sure? 'M not sure I'll make it, 'D you like some tea? "
    "We'Ve a'lL",
    "3333333 12345678 1.5e10 3.14",
    "   leading and trailing   ",
    "tabs\tand\n\nnewlines\r\n  \n end",
    "\u00c4pfel \u00fcber stra\u00dfe \u0391\u0392\u0393 \u043f\u0440\u0438\u0432\u0435\u0442 "
    "\u043c\u0438\u0440",
    "\u4f60\u597d\u4e16\u754c \u3053\u3093\u306b\u3061\u306f \uc548\ub155\ud558\uc138\uc694",
    "emoji \U0001f680 (normal) \U0001f636\u200d\U0001f32b\ufe0f \u2705",
    "!!!??? ... ------======= ''''''```````\"\"\"\"",
    "def f(x):\n    return x**2 # comment\n",
    "\u00a0nbsp\u2003em\u3000ideo",
    "cafe\u0301 nai\u0308ve \u0915\u093f\u0924\u093e\u092c \u0301x \u20dd!",
]


def main() -> int:
    import gguf
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    # the tests read <repo>/../shared/data/vocab
    vocab_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else \
        Path(__file__).resolve().parents[1].parent / "shared/data/vocab"
    split = pre_tokenizers.Split(Regex(QWEN35_PATTERN), behavior="isolated", invert=False)
    for i, text in enumerate(TEXTS):
        pieces = split.pre_tokenize_str(text)
        lengths = [len(p.encode()) for p, _ in pieces]
        assert sum(lengths) == len(text.encode())
        print(f'    {{"qwen35", {i}, {{{", ".join(map(str, lengths))}}}}},')

    r = gguf.GGUFReader(str(vocab_dir / "ggml-vocab-gpt-2.gguf"))
    tokens = [str(bytes(r.fields["tokenizer.ggml.tokens"].parts[j]), "utf-8")
              for j in r.fields["tokenizer.ggml.tokens"].data]
    merges = [str(bytes(r.fields["tokenizer.ggml.merges"].parts[j]), "utf-8")
              for j in r.fields["tokenizer.ggml.merges"].data]
    bpe = models.BPE(vocab={t: i for i, t in enumerate(tokens)},
                     merges=[tuple(m.split(" ", 1)) for m in merges])
    tok = Tokenizer(bpe)
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        split, pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    for i, text in enumerate(TEXTS):
        ids = tok.encode(text, add_special_tokens=False).ids
        assert tok.decode(ids) == text
        print(f'    {{"qwen35", {i}, {{{", ".join(map(str, ids))}}}}},')
    return 0


if __name__ == "__main__":
    sys.exit(main())
