"""The `chimera` subcommands through the binary: exit codes, --help, one bad input each, and
outputs checked against independent data (transformers logits, Hugging Face tokenizer vectors,
the gguf package's reading of files)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import gguf
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
FIXTURE_DIR = REPO / "tests" / "fixtures" / "models" / "granitehybrid-dense"
FIXTURE = FIXTURE_DIR / "model-f32.gguf"  # 384-token byte-level BPE vocabulary
DEFAULT_MODEL = REPO / "models" / "default.gguf"
VOCAB_DIR = REPO.parent / "shared" / "data" / "vocab"

COMMANDS = ["run", "chat", "logits", "tokenize", "perplexity", "bench", "synthetic"]


def n_vocab_of(path: Path) -> int:
    """The embedding's row count, as the gguf package reads it."""
    reader = gguf.GGUFReader(str(path))
    emb = next(t for t in reader.tensors if t.name == "token_embd.weight")
    return int(emb.shape[1])


def test_top_level_usage_and_exit_codes(chimera) -> None:
    out = chimera.run("--help")
    assert out.returncode == 0
    for c in COMMANDS:
        assert f"\n  {c} " in out.stdout, c
    bare = chimera.run(check=False)
    assert bare.returncode == 2 and "usage: chimera" in bare.stdout
    bad = chimera.run("frobnicate", check=False)
    assert bad.returncode == 2 and "unknown command 'frobnicate'" in bad.stderr


@pytest.mark.parametrize("command", COMMANDS)
def test_help_exits_zero_and_documents_the_command(chimera, command: str) -> None:
    proc = chimera.run(command, "--help")
    assert proc.returncode == 0
    assert f"chimera {command}" in proc.stdout
    assert proc.stderr == ""


@pytest.mark.parametrize("command", ["run", "chat", "logits", "perplexity", "bench"])
def test_missing_model_file_is_a_clear_error(chimera, tmp_path: Path, command: str) -> None:
    extra = {"run": ["-p", "x"], "chat": [], "logits": ["--tokens", "1", "-o", tmp_path / "o"],
             "perplexity": ["-f", REPO / "models" / "heldout.txt"], "bench": ["-p", "4", "-n", "1"]}
    proc = chimera.run(command, "-m", tmp_path / "nope.gguf", *extra[command], check=False,
                       timeout=60)
    assert proc.returncode == 1, proc.stderr
    assert f"chimera {command}:" in proc.stderr and "nope.gguf" in proc.stderr


def test_missing_required_option_is_refused(chimera, tmp_path: Path) -> None:
    proc = chimera.run("run", "-m", FIXTURE, check=False)  # no prompt
    assert proc.returncode != 0
    assert "-p TEXT or -f FILE" in proc.stderr
    proc = chimera.run("logits", "-m", FIXTURE, "--tokens", "1", check=False)  # no -o
    assert proc.returncode != 0
    assert "--output" in proc.stderr


def test_run_greedy_output_and_bad_kv_type(chimera) -> None:
    greedy = ["run", "-m", DEFAULT_MODEL, "-p", "And God said", "-n", "12", "--temp", "0", "-q"]
    a = chimera.run(*greedy)
    assert a.stdout.startswith("And God said") and len(a.stdout) > len("And God said\n")
    # Same flags, 3 threads and a tiny ubatch: the same text (exactness through the binary).
    b = chimera.run(*greedy, "-t", "3", "--ubatch", "3")
    assert b.stdout == a.stdout
    # The weights mapped from the file or read into memory: the same text.
    for load in ("--mmap", "--no-mmap"):
        assert chimera.run(*greedy, load).stdout == a.stdout, load
    both = chimera.run(*greedy, "--mmap", "--no-mmap", check=False)
    assert both.returncode != 0 and "excludes" in both.stderr
    bad = chimera.run("run", "-m", DEFAULT_MODEL, "-p", "x", "--kv-type", "f8", check=False)
    assert bad.returncode == 1 and "--kv-type 'f8'" in bad.stderr


def test_chat_reads_turns_from_stdin(chimera, tmp_path: Path) -> None:
    import subprocess
    proc = subprocess.run([str(chimera.binary), "chat", "-m", str(DEFAULT_MODEL), "-n", "8",
                           "--temp", "0", "-q"], input="Who made the light?\n/exit\n",
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() != ""
    bad = subprocess.run([str(chimera.binary), "chat", "-m", str(DEFAULT_MODEL), "--mem", "12Q"],
                         input="", capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "12Q" in bad.stderr


def test_logits_output_size_and_values(chimera, tmp_path: Path) -> None:
    ref = json.loads((FIXTURE_DIR / "reference.json").read_text())
    seq = next(s for s in ref["sequences"] if s["name"] == "len7")
    V = n_vocab_of(FIXTURE)
    assert V == ref["n_vocab"]
    want = np.fromfile(FIXTURE_DIR / seq["logits"], dtype="<f4").reshape(len(seq["tokens"]), V)
    ids = ",".join(map(str, seq["tokens"]))
    last, every = tmp_path / "last.f32", tmp_path / "all.f32"
    chimera.run("logits", "-m", FIXTURE, "--kv-type", "f32", "--tokens", ids, "-o", last)
    chimera.run("logits", "-m", FIXTURE, "--kv-type", "f32", "--tokens", ids, "-o", every, "--all")
    assert last.stat().st_size == V * 4
    assert every.stat().st_size == len(seq["tokens"]) * V * 4
    got = np.fromfile(every, dtype="<f4").reshape(len(seq["tokens"]), V)
    assert np.array_equal(np.fromfile(last, dtype="<f4"), got[-1])
    # Rows in position order and equal to transformers' (float32 summation-order noise only).
    nmse = ((got.astype(np.float64) - want) ** 2).sum(axis=1) / (want.astype(np.float64) ** 2).sum(axis=1)
    assert nmse.max() < 1e-9, nmse
    bad = chimera.run("logits", "-m", FIXTURE, "--tokens", "1,x,3", "-o", last, check=False)
    assert bad.returncode == 1 and "'x' is not a token id" in bad.stderr
    out_of_range = chimera.run("logits", "-m", FIXTURE, "--tokens", f"1,{V}", "-o", last,
                               check=False)
    assert out_of_range.returncode == 1 and str(V) in out_of_range.stderr


def read_vectors(name: str) -> list[tuple[str, list[int]]]:
    inp = (VOCAB_DIR / f"{name}.inp").read_text(encoding="utf-8")
    texts = inp.split("\n__ggml_vocab_test__\n")[:-1]
    outs = (VOCAB_DIR / f"{name}.out").read_text(encoding="utf-8").split("\n")
    return [(t, [int(x) for x in outs[i].split()]) for i, t in enumerate(texts)]


@pytest.mark.parametrize("vocab", ["ggml-vocab-gpt-2.gguf", "ggml-vocab-llama-spm.gguf"])
def test_tokenize_matches_the_vocabulary_vectors(chimera, tmp_path: Path, vocab: str) -> None:
    vectors = read_vectors(vocab)
    assert len(vectors) >= 20
    text_file = tmp_path / "in.txt"
    for i, (text, want) in enumerate(vectors):
        text_file.write_bytes(text.encode("utf-8"))
        out = chimera.run("tokenize", "-m", VOCAB_DIR / vocab, "-f", text_file, "--no-bos",
                          "--no-parse-special").stdout
        assert [int(x) for x in out.split()] == want, f"input {i}: {text!r}"
    missing = chimera.run("tokenize", "-m", VOCAB_DIR / vocab, "-f", tmp_path / "absent.txt",
                          check=False)
    assert missing.returncode == 1 and "cannot open text file" in missing.stderr


def test_perplexity_json_keys_and_values(chimera, tmp_path: Path) -> None:
    out = chimera.json("perplexity", "-m", DEFAULT_MODEL, "-f", REPO / "models" / "heldout.txt",
                       "-c", "64", "--chunks", "3", "--json")
    assert set(out) == {"perplexity", "uncertainty", "mean_nll", "tokens", "scored_tokens",
                        "windows", "context_size", "stride", "seconds"}
    assert out["windows"] == 3 and out["context_size"] == 64 and out["stride"] == 64
    assert out["scored_tokens"] == 3 * (64 - 1 - 32)  # llama-perplexity: n_ctx - 1 - n_ctx/2
    assert math.isclose(out["perplexity"], math.exp(out["mean_nll"]), rel_tol=1e-12)
    assert 1 < out["perplexity"] < n_vocab_of(DEFAULT_MODEL)
    short = tmp_path / "short.txt"
    short.write_text("In the beginning")
    bad = chimera.run("perplexity", "-m", DEFAULT_MODEL, "-f", short, "-c", "64", check=False)
    assert bad.returncode == 1 and "chimera perplexity:" in bad.stderr


def test_bench_model_json_and_unknown_mode(chimera) -> None:
    out = chimera.json("bench", "-m", FIXTURE, "-p", "16", "-n", "4", "-r", "1", "--json")
    assert out["repetitions"] == 1
    tests = {t["test"]: t for t in out["tests"]}
    assert tests["pp16"]["n_prompt"] == 16 and tests["pp16"]["tokens_per_s"] > 0
    assert tests["tg4"]["n_gen"] == 4 and tests["tg4"]["tokens_per_s"] > 0
    # Decode bandwidth is reported against the higher of the streaming read probed before the
    # tests (per thread count) and the one probed right after this test.
    before = out["streaming_read_gbps"][str(tests["tg4"]["threads"])]
    read = tests["tg4"]["streaming_read_gbps"]
    assert before > 0 and read >= before
    assert tests["tg4"]["pct_of_streaming_read"] == pytest.approx(100 * tests["tg4"]["gbps"] / read)
    bad = chimera.run("bench", "frobnicate", check=False)
    assert bad.returncode == 2 and "unknown mode 'frobnicate'" in bad.stderr


def test_synthetic_writes_a_readable_model(chimera, tmp_path: Path) -> None:
    path = tmp_path / "s.gguf"
    chimera.run("synthetic", "-o", path, "--arch", "llama", "--type", "Q8_0", "--seed", "3")
    reader = gguf.GGUFReader(str(path))
    arch = reader.fields["general.architecture"]
    assert bytes(arch.parts[arch.data[0]]).decode() == "llama"
    types = {t.tensor_type.name for t in reader.tensors}
    assert "Q8_0" in types
    bad = chimera.run("synthetic", "-o", tmp_path / "x.gguf", "--type", "Q3_K", check=False)
    assert bad.returncode == 1 and "unknown type 'Q3_K'" in bad.stderr
    assert not (tmp_path / "x.gguf").exists()


def test_zmm_tiles_switch_keeps_the_logits(chimera, tmp_path: Path) -> None:
    """CHIMERA_ZMM_TILES=0|1 picks the AVX-512 path's Q8_0 prefill tile (256- or 512-bit): the
    logits of a 24-token prompt (packed tiles from 9 rows on) are the same bytes either way, and
    a value other than 0 or 1 warns and changes nothing. Without AVX-512 both runs take the AVX2
    path and must agree all the more."""
    import os
    import subprocess
    model = tmp_path / "tiny-q8.gguf"
    chimera.run("synthetic", "-o", model, "--preset", "tiny", "--type", "Q8_0")
    ids = ",".join(str(7 + 3 * i) for i in range(24))
    outs = {}
    for setting in ("0", "1", "2"):
        out = tmp_path / f"zmm{setting}.f32"
        env = dict(os.environ, CHIMERA_ZMM_TILES=setting)
        proc = subprocess.run([str(chimera.binary), "logits", "-m", str(model), "--tokens", ids,
                               "--all", "-o", str(out)], capture_output=True, text=True, env=env,
                              timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert ("CHIMERA_ZMM_TILES=2 is not 0 or 1" in proc.stderr) == (setting == "2")
        outs[setting] = out.read_bytes()
    assert len(outs["0"]) > 0 and len(outs["0"]) % (24 * 4) == 0
    assert outs["0"] == outs["1"] == outs["2"]
