"""A Gemma 3 checkpoint with a SentencePiece tokenizer.model (tests/fixtures/models/gemma3-spm/hf,
made by python/make_gemma_spm_checkpoint.py from the Gemma-settings model trained by
python/make_gemma_tokenizer_fixture.py) converted by python/convert_hf_to_gguf.py:

- chimera tokenizes with the converted file exactly as sentencepiece does: the expected ids of
  tests/fixtures/vocab/ggml-vocab-gemma-spm-test.gguf.{inp,out} (and .special.*) come from
  sentencepiece itself; BOS is added as tokenizer_config.json asks;
- the pieces read from the protobuf equal sentencepiece's (the vocabulary GGUF of the same model
  that the fixture generator wrote through sentencepiece's own API);
- the converted model loads and runs;
- a damaged tokenizer.model is refused with an error naming it, and nothing is written.

That the file equals llama.cpp's converter's, key for key and tensor for tensor, is
test_converter_vs_llama_cpp.py's job (record gemma3-spm).
"""

from __future__ import annotations

import shutil
import struct
import sys
from pathlib import Path

import gguf
import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "python"))

from chimera_convert import ConversionError  # noqa: E402
from convert_hf_to_gguf import convert  # noqa: E402

HF = REPO / "tests/fixtures/models/gemma3-spm/hf"
VOCAB = REPO / "tests/fixtures/vocab"
SEP = "\n__ggml_vocab_test__\n"
N_VOCAB = 3008  # config.json vocab_size: 3,000 pieces + 8 [PAD] ids


def vectors(stem: str) -> list[tuple[str, list[int]]]:
    inputs = (VOCAB / f"{stem}.inp").read_text(encoding="utf-8").split(SEP)[:-1]
    outputs = (VOCAB / f"{stem}.out").read_text(encoding="utf-8").splitlines()
    assert len(inputs) == len(outputs) and inputs
    return [(s, [int(x) for x in line.split()]) for s, line in zip(inputs, outputs)]


def field(r: gguf.GGUFReader, key: str):
    return r.fields[key].contents()


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("gemma3spm") / "model.gguf"
    convert(HF, out, "f32")
    return out


def tokenize(chimera, model: Path, text: str, tmp_path: Path, *flags: str) -> list[int]:
    src = tmp_path / "text.txt"
    src.write_bytes(text.encode("utf-8"))
    out = chimera.run("tokenize", "-m", model, "-f", src, *flags).stdout.split()
    return [int(x) for x in out]


def test_chimera_tokenizes_as_sentencepiece(chimera, converted, tmp_path):
    cases = vectors("ggml-vocab-gemma-spm-test.gguf")
    n_byte_fallback = 0
    for text, ids in cases:
        assert tokenize(chimera, converted, text, tmp_path, "--no-bos") == ids, repr(text)
        n_byte_fallback += sum(1 for i in ids if 11 <= i < 11 + 256)
    assert n_byte_fallback > 0  # the vectors exercise byte fallback
    text, ids = cases[0]
    assert tokenize(chimera, converted, text, tmp_path) == [2] + ids  # add_bos_token: <bos> = 2
    for text, ids in vectors("ggml-vocab-gemma-spm-test.gguf.special"):
        assert tokenize(chimera, converted, text, tmp_path, "--no-bos") == ids, repr(text)
        assert 4 in ids and 5 in ids  # <start_of_turn>, <end_of_turn> matched as tokens


def test_pieces_equal_sentencepiece(converted):
    ours = gguf.GGUFReader(str(converted))
    spm = gguf.GGUFReader(str(VOCAB / "ggml-vocab-gemma-spm-test.gguf"))  # via sentencepiece
    tokens, scores = field(ours, "tokenizer.ggml.tokens"), field(ours, "tokenizer.ggml.scores")
    types = field(ours, "tokenizer.ggml.token_type")
    ref_tokens, ref_scores = field(spm, "tokenizer.ggml.tokens"), field(spm, "tokenizer.ggml.scores")
    ref_types = field(spm, "tokenizer.ggml.token_type")
    assert len(tokens) == N_VOCAB and len(ref_tokens) == 3000
    assert tokens[:3000] == ref_tokens
    assert tokens[3000:] == [f"[PAD{i}]" for i in range(3000, N_VOCAB)]
    added = set(range(11))  # tokenizer_config.json's added_tokens_decoder: ids 0-10
    for i in range(3000):
        if i in added:
            assert scores[i] == -1000.0
        else:
            assert scores[i] == ref_scores[i], i
    assert all(s == -10000.0 for s in scores[3000:])
    # the only type that differs: <unk>, marked special in tokenizer_config.json -> CONTROL
    assert [i for i in range(3000) if types[i] != ref_types[i]] == [3]
    assert types[3] == gguf.TokenType.CONTROL
    assert all(t == gguf.TokenType.UNUSED for t in types[3000:])
    assert field(ours, "tokenizer.ggml.model") == "llama"
    assert field(ours, "tokenizer.ggml.add_space_prefix") is False
    embd = next(t for t in ours.tensors if t.name == "token_embd.weight")
    assert [int(d) for d in embd.shape] == [32, N_VOCAB]  # no row dropped


def test_converted_model_runs(chimera, converted, tmp_path):
    out = tmp_path / "logits.f32"
    chimera.run("logits", "-m", converted, "-q", "--tokens", "2,4,2982,572,5", "-o", out)
    data = out.read_bytes()
    assert len(data) == 4 * N_VOCAB
    values = struct.unpack(f"<{N_VOCAB}f", data)
    assert all(abs(v) <= 30.0 for v in values)  # finite, within final_logit_softcapping
    assert len(set(values)) > 100


@pytest.mark.parametrize("damage", ["truncated", "not-protobuf"])
def test_damaged_tokenizer_model_is_refused(tmp_path, damage):
    hf = tmp_path / "hf"
    shutil.copytree(HF, hf)
    data = (hf / "tokenizer.model").read_bytes()
    (hf / "tokenizer.model").write_bytes(data[:1000] if damage == "truncated" else b"\xff" * 64)
    out = tmp_path / "out.gguf"
    with pytest.raises(ConversionError, match="tokenizer.model"):
        convert(hf, out, "f32")
    assert not out.exists() and not (tmp_path / "out.gguf.tmp").exists()
