"""Speculative decoding from the command line: `chimera run/chat --spec ngram | --draft MODEL`
print exactly what they print without it; a draft model with another vocabulary is a clear
error; `chimera bench --spec/--draft` reports both speeds, the acceptance and identical output."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
MODEL = REPO_ROOT / "models" / "default.gguf"
OTHER_VOCAB = REPO_ROOT / "tests" / "fixtures" / "models" / "llama" / "model-f32.gguf"


@pytest.mark.parametrize("sampling", [["--temp", "0"], ["--temp", "0.9", "-s", "11"]])
@pytest.mark.parametrize("spec", [["--spec", "ngram"], ["--draft", str(MODEL)],
                                  ["--spec", "ngram", "--draft-max", "3", "--draft-fixed"]])
def test_run_output_is_identical(chimera, sampling: list[str], spec: list[str]) -> None:
    args = ["run", "-m", MODEL, "-p", "And God said", "-n", "48", "-t", "1", *sampling]
    plain = chimera.run(*args, "-q").stdout
    proc = chimera.run(*args, *spec)
    assert proc.stdout == plain
    if "--draft" in spec or sampling[1] == "0":  # n-grams rarely recur in sampled text
        assert "speculative:" in proc.stderr  # drafts were made and verified


def test_chat_output_is_identical(chimera_bin: Path) -> None:
    def chat(*extra: str) -> str:
        proc = subprocess.run(
            [str(chimera_bin), "chat", "-m", str(MODEL), "-n", "24", "--temp", "0", "-q", "-t", "1",
             *extra], input="And God said\nLet there be light\n", capture_output=True, text=True,
            timeout=120)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    assert chat("--spec", "ngram") == chat()


def test_draft_with_another_vocabulary_is_refused(chimera) -> None:
    proc = chimera.run("run", "-m", MODEL, "-p", "x", "--draft", OTHER_VOCAB, check=False)
    assert proc.returncode != 0
    assert "vocabulary" in proc.stderr and str(OTHER_VOCAB) in proc.stderr
    assert proc.stdout == ""  # refused before generating anything
    both = chimera.run("run", "-m", MODEL, "-p", "x", "--draft", MODEL, "--spec", "ngram",
                       check=False)
    assert both.returncode != 0 and "exclude each other" in both.stderr


def test_bench_reports_speculation(chimera) -> None:
    j = chimera.json("bench", "-m", MODEL, "-p", "0", "-n", "24", "-r", "3", "-t", "1",
                     "--spec", "ngram", "--draft-fixed", "--spec-only", "--json")
    assert j["tests"] == []  # --spec-only: no tg test of its own
    s = j["speculative"]
    # The speed-up is the median of the three back-to-back pairs' ratios, between its quartiles.
    assert 0 < s["speedup_q1"] <= s["speedup"] <= s["speedup_q3"]
    assert s["speedup_ratio_of_means"] > 0
    assert s["drafter"] == "ngram" and s["output_identical"] is True
    assert s["plain_tokens_per_s"] > 0 and s["spec_tokens_per_s"] > 0
    assert s["drafted"] > 0 and 0 <= s["accepted"] <= s["drafted"]
    assert s["acceptance"] == pytest.approx(s["accepted"] / s["drafted"])
    assert sum(s["drafted_by_position"]) == s["drafted"]
    assert sum(s["accepted_by_position"]) == s["accepted"]


def test_serve_speculates_exactly(chimera_bin) -> None:
    """`chimera serve --spec ngram`: the same completions as a server without it, the drafted and
    accepted counts in the response timings and per draft position in /metrics; draft_max 0 turns
    it off for one request."""
    import sys

    import requests

    sys.path.insert(0, str(REPO_ROOT / "python"))
    from serve_util import ServeProcess

    args = ["-np", "2", "-c", "512", "--mem", "256M", "--cache-mem", "64M", "-q", "-t", "1"]
    body = {"model": "default", "prompt": "And God said", "max_tokens": 40, "temperature": 0}

    def complete(server, **extra) -> dict:
        r = requests.post(server.url + "/v1/completions", json={**body, **extra}, timeout=60)
        assert r.status_code == 200, r.text
        return r.json()

    with ServeProcess(chimera_bin, *args) as plain:
        want = complete(plain)["choices"][0]["text"]
    with ServeProcess(chimera_bin, *args, "--spec", "ngram", "--draft-fixed") as spec:
        got = complete(spec)
        assert got["choices"][0]["text"] == want
        t = got["timings"]
        assert t["draft_n"] > 0 and 0 < t["draft_n_accepted"] <= t["draft_n"]
        off = complete(spec, draft_max=0)
        assert off["choices"][0]["text"] == want and off["timings"]["draft_n"] == 0
        m = spec.metrics()
        assert m["chimera_draft_tokens_total"] == t["draft_n"]
        assert m["chimera_draft_tokens_accepted_total"] == t["draft_n_accepted"]
        assert m['chimera_draft_position_tokens_total{position="0"}'] > 0
        per_pos = sum(v for k, v in m.items() if k.startswith("chimera_draft_position_accepted"))
        assert per_pos == t["draft_n_accepted"]


def test_serve_with_a_draft_model_on_the_engines_pool(chimera_bin) -> None:
    """`chimera serve --draft MODEL -t 2`: the draft model runs on the engine context's thread pool
    (one pool, decoded from the engine thread alone); completions are those of a server without
    it, greedy and seeded."""
    import sys

    import requests

    sys.path.insert(0, str(REPO_ROOT / "python"))
    from serve_util import ServeProcess

    args = ["-np", "2", "-c", "512", "--mem", "256M", "--cache-mem", "64M", "-q", "-t", "2"]
    bodies = [{"model": "default", "prompt": "And God said", "max_tokens": 40, "temperature": 0},
              {"model": "default", "prompt": "In the beginning", "max_tokens": 40,
               "temperature": 0.9, "seed": 5}]

    def complete(server, body) -> dict:
        r = requests.post(server.url + "/v1/completions", json=body, timeout=60)
        assert r.status_code == 200, r.text
        return r.json()

    with ServeProcess(chimera_bin, *args) as plain:
        want = [complete(plain, b)["choices"][0]["text"] for b in bodies]
    with ServeProcess(chimera_bin, *args, "--draft", str(MODEL), "--draft-fixed") as spec:
        got = [complete(spec, b) for b in bodies]
        m = spec.metrics()
    assert [g["choices"][0]["text"] for g in got] == want
    assert got[0]["timings"]["draft_n_accepted"] > 0
    # The draft model's lookup staging, in /metrics (the default model's greedy text repeats).
    assert m["chimera_draft_lookup_batches_total"] > 0
    assert 0 < m["chimera_draft_lookup_confirmed_total"] <= m["chimera_draft_lookup_proposed_total"]
