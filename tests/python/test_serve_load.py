"""The bounded load test of `chimera serve` (python/load_serve.py, ~20 s): 64 concurrent clients
with random cancellations and malformed requests; no crash, no 5xx but 503, every completed text
identical to its solo run, nothing left running, the memory back to baseline plus the cache."""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_load(chimera_bin):
    proc = subprocess.run([sys.executable, str(REPO / "python" / "load_serve.py"), "--bin",
                           str(chimera_bin), "--clients", "64", "--duration", "20"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["n_failures"] == 0
    # The mix really happened: completions, cancellations and refusals.
    assert summary["completed"] > 0 and summary["cancelled"] > 0 and summary["http_400"] > 0
    # Connections reset before any answer (a client stalled past the server's wait for its first
    # request) are retried once; more than a few would be the server's fault.
    assert summary.get("connection_retries", 0) <= 3, summary


def test_bench_serve_smoke(chimera_bin):
    """python/bench_serve.py runs every scenario against chimera (tiny sizes) and reports the
    numbers it promises, read from the server's usage / timings."""
    sys.path.insert(0, str(REPO / "python"))
    from serve_util import ServeProcess

    with ServeProcess(chimera_bin, "-np", "2", "-c", "1024", "--mem", "512M", "--cache-mem",
                      "128M", "-q") as s:
        proc = subprocess.run([sys.executable, str(REPO / "python" / "bench_serve.py"), "--url",
                               s.url, "--smoke", "--scenarios",
                               "append,regenerate,edit,edit2,switch,shared,agent,memory"],
                              capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    totals = {r["scenario"]: r["total"] for r in rows if "total" in r}
    assert set(totals) == {"append", "regenerate", "edit", "edit2", "switch", "shared", "agent",
                           "memory", "all"}
    turns = [r for r in rows if "turn" in r]
    for r in turns:
        assert r["prompt_tokens"] == r["cached_tokens"] + r["processed"] + r["replayed"], r
        assert r["computed"] == r["processed"] + r["replayed"], r
        assert 0 <= r["new_tokens"] <= r["prompt_tokens"], r
        assert r["ttft_s"] > 0 and r["completion_tokens"] >= 1
        # The target: what was seen before is not computed again (small slack for the
        # last answer token and the template's end-of-turn tokens, never sent through the model).
        if r["scenario"] in ("append", "regenerate", "edit", "edit2", "switch", "memory"):
            assert r["computed"] <= r["new_tokens"] + 64, r
    # The cache as the run left it: within its budget, the memory conversations among it.
    cache = next(r["cache"] for r in rows if "cache" in r)
    assert 3 <= cache["n_entries"] and cache["bytes"] <= cache["budget_bytes"]
    # Regenerating the last answer reuses the append chat's prompt.
    assert totals["regenerate"]["cached_tokens"] > 0
