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
