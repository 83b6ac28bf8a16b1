#!/usr/bin/env python3
"""Builds a Gemma-style SentencePiece vocabulary fixture and its expected encodings.

    /work/venv-fix/bin/python python/make_gemma_tokenizer_fixture.py [--out tests/fixtures/vocab]

No Gemma vocabulary can be downloaded on the build machines, so this trains a small one with the
`sentencepiece` package using Gemma's tokenizer settings: BPE, byte fallback, no dummy space
prefix, no normalisation (spaces become U+2581, runs of spaces and newlines are kept),
digits split singly, user-defined symbols (matched in the text before anything else, as Gemma's
<start_of_turn>-style and whitespace tokens), and Gemma's special ids (pad 0, eos 1, bos 2,
unk 3). The vocabulary is written as a vocabulary-only GGUF the way llama.cpp's converter writes
Gemma's (tokenizer.ggml.model "llama", pre "default", add_space_prefix false; token types
NORMAL 1, UNKNOWN 2, CONTROL 3, USER_DEFINED 4, BYTE 6, scores from the model), and the expected
ids come from sentencepiece itself (the tokenizer Gemma's HF tokenizer is converted from), on
the inputs of the shared test vectors (shared/data/vocab/*.inp). Output, in OUT:

  ggml-vocab-gemma-spm-test.gguf      the vocabulary
  gemma-spm-test.model                the trained SentencePiece model itself (what a Gemma
      checkpoint ships as tokenizer.model; the gemma3-spm converter fixture is built from it)
  ggml-vocab-gemma-spm-test.gguf.inp  inputs, each followed by "\\n__ggml_vocab_test__\\n"
  ggml-vocab-gemma-spm-test.gguf.out  for each input one line of ids (no BOS/EOS)
  ggml-vocab-gemma-spm-test.gguf.special.inp / .special.out   the same for texts holding the
      role markers, which are CONTROL tokens in the GGUF (as in Gemma's files: llama.cpp's
      converter types added tokens marked special so, and its loader forces <end_of_turn> to
      control): an engine matches them only when asked to parse special tokens
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "python"))

from chimera_convert.bpe_training import kjv_verses  # noqa: E402

SEP = "\n__ggml_vocab_test__\n"
NAME = "ggml-vocab-gemma-spm-test.gguf"
SPM_NAME = "gemma-spm-test.model"
VOCAB_SIZE = 3000
# Matched before splitting: role markers as in Gemma's chat format, whitespace runs and a tag
USER_DEFINED = ["<start_of_turn>", "<end_of_turn>", "\n\n", "\n\n\n", "\t\t", "<h1>", "</h1>"]
ROLE_MARKERS = ["<start_of_turn>", "<end_of_turn>"]  # user-defined in the model, CONTROL in GGUF


def read_inputs(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8")
    parts = text.split(SEP)
    return parts[:-1]  # every input is followed by the separator


def main() -> int:
    ap = argparse.ArgumentParser(description="generate the Gemma-style SentencePiece fixture")
    ap.add_argument("--out", default=str(REPO / "tests/fixtures/vocab"))
    ap.add_argument("--vectors", default=str(REPO.parent / "shared/data/vocab"),
                    help="directory of the shared ggml-vocab-*.gguf.inp files")
    args = ap.parse_args()

    import gguf
    import sentencepiece as spm

    inputs: list[str] = []
    for p in sorted(Path(args.vectors).glob("ggml-vocab-*.gguf.inp")):
        for s in read_inputs(p):
            if s not in inputs:
                inputs.append(s)
    if not inputs:
        sys.exit(f"no test vector inputs found in {args.vectors}")
    # A few more, for what the shared vectors do not stress: user-defined symbols inside words,
    # digit runs, whitespace runs, byte fallback of characters the training text never saw.
    special_inputs = ["<start_of_turn>user\nHello there<end_of_turn>\n<start_of_turn>model\n",
                      "x<start_of_turn>y<end_of_turn><end_of_turn>z\n\n\n\n<h1>"]
    inputs += ["a\n\n\n\nb\t\t\tc", "a\n\n\n\n\nb x\n\n",
               "In 1611, 12345678 people said 3.14159", "   three leading spaces, two after  ",
               "<h1>Title</h1>\n\nBody", "\u2603 \U0001f600 \u0416\u0436 \u00e9\u00e8 \u4e2d\u6587"]

    corpus = kjv_verses() + (inputs + special_inputs) * 3
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus), model_writer=model, model_type="bpe",
        vocab_size=VOCAB_SIZE, byte_fallback=True, add_dummy_prefix=False,
        normalization_rule_name="identity", remove_extra_whitespaces=False,
        allow_whitespace_only_pieces=True, split_digits=True, split_by_whitespace=True,
        user_defined_symbols=USER_DEFINED, character_coverage=0.9995,
        pad_id=0, eos_id=1, bos_id=2, unk_id=3, pad_piece="<pad>", eos_piece="<eos>",
        bos_piece="<bos>", unk_piece="<unk>", max_sentence_length=100000,
        num_threads=1, minloglevel=2)
    sp = spm.SentencePieceProcessor(model_proto=model.getvalue())

    tokens, scores, types = [], [], []
    for i in range(sp.get_piece_size()):
        tokens.append(sp.id_to_piece(i).encode("utf-8"))
        scores.append(sp.get_score(i))
        if sp.is_unknown(i):
            types.append(gguf.TokenType.UNKNOWN)
        elif sp.is_control(i):
            types.append(gguf.TokenType.CONTROL)
        elif sp.is_byte(i):
            types.append(gguf.TokenType.BYTE)
        elif sp.is_unused(i):
            types.append(gguf.TokenType.UNUSED)
        elif sp.id_to_piece(i) in ROLE_MARKERS:
            types.append(gguf.TokenType.CONTROL)
        elif sp.id_to_piece(i) in USER_DEFINED:
            types.append(gguf.TokenType.USER_DEFINED)
        else:
            types.append(gguf.TokenType.NORMAL)
    assert types.count(gguf.TokenType.USER_DEFINED) == len(USER_DEFINED) - len(ROLE_MARKERS)
    assert types.count(gguf.TokenType.BYTE) == 256

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / SPM_NAME).write_bytes(model.getvalue())
    w = gguf.GGUFWriter(str(out / NAME), "gemma3")
    w.add_name("chimera gemma-style sentencepiece test vocabulary")
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(sp.bos_id())
    w.add_eos_token_id(sp.eos_id())
    w.add_unk_token_id(sp.unk_id())
    w.add_pad_token_id(sp.pad_id())
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    w.add_add_space_prefix(False)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    w.close()

    n_bytes = 0
    for texts, suffix in ((inputs, ""), (special_inputs, ".special")):
        with open(out / (NAME + suffix + ".inp"), "w", encoding="utf-8", newline="") as f:
            for s in texts:
                f.write(s + SEP)
        with open(out / (NAME + suffix + ".out"), "w", encoding="utf-8") as f:
            for s in texts:
                ids = sp.encode(s)
                assert sp.decode(ids) == s, repr(s)
                assert suffix or not any(types[i] == gguf.TokenType.CONTROL for i in ids)
                n_bytes += sum(types[i] == gguf.TokenType.BYTE for i in ids)
                f.write(" ".join(str(i) for i in ids) + "\n")
    print(f"wrote {out / NAME}: {len(tokens)} tokens, {len(inputs)} vectors, "
          f"{n_bytes} byte-fallback tokens in the expected ids")
    return 0


if __name__ == "__main__":
    sys.exit(main())
