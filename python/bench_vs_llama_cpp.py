#!/usr/bin/env python3
"""chimera against llama.cpp on the same GGUF files, interleaved, as one ratio table.

This script neither contains nor builds llama.cpp: point it at the bin/ folder of a llama.cpp
build you made yourself (llama-bench, llama-batched-bench, llama-simple). For each model file and
thread count it runs each test with llama.cpp's tool and then with `chimera bench` / `chimera run`
before moving to the next test, so a noisy spell on a shared machine hits both alike:

  pp512        llama-bench -p 512 -n 0            chimera bench -p 512 -n 0
  tg128        llama-bench -p 0 -n 128            chimera bench -p 0 -n 128
  tg64 @ dN    llama-bench -p 0 -n 64 -d N        chimera bench -p 0 -n 64 -d N
  par B        llama-batched-bench -npp 128 -ntg 64 -npl B (S_TG, aggregate decode tokens/s)
               chimera bench --parallel B --npp 128 --ntg 64
  peak RSS     llama-simple -n 16 PROMPT          chimera run -n 16 --temp 0 -p PROMPT
               (a one-shot run with a prompt of --rss-tokens tokens, taken from --text;
               the resident-set peak from wait4's rusage, as /usr/bin/time -v reports it)

    .venv/bin/python python/bench_vs_llama_cpp.py --llama-bin /path/to/llama.cpp/build/bin \\
        --chimera build/bin/chimera --models m-q4_0.gguf m-q8_0.gguf [--threads 1,2] [--smoke]

Models without a vocabulary skip the RSS row. --smoke runs every row at a tiny size (a check
that the plumbing works on a busy machine, not a measurement). --rounds N repeats the whole
interleaved sequence and keeps each side's best round. Ratios are chimera / llama.cpp for speeds
(higher is better for chimera) and chimera / llama.cpp for RSS (lower is better).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run_measured(cmd: list[str], timeout: float) -> tuple[int, str, str, int]:
    """Runs cmd; returns (exit code, stdout, stderr, peak RSS in KiB of the child)."""
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        return 124, out, err + "\n(timed out)", 0
    # Peak RSS is measured through wait4 in rss_of(): RUSAGE_CHILDREN only ever grows.
    return proc.returncode, out, err, 0


def rss_of(cmd: list[str], timeout: float) -> tuple[int, str, int]:
    """Runs cmd, output discarded; returns (exit code, stderr tail, peak RSS KiB) via wait4.

    stderr goes to a temporary file, not a pipe: nobody reads a pipe while we poll wait4, so a
    child that logs more than the pipe holds (llama-simple on a long prompt) would block forever.
    """
    with open(os.devnull, "w") as devnull, tempfile.TemporaryFile("w+") as errf:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=devnull, stderr=errf,
                                text=True)
        t0 = time.time()
        while True:
            pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
            if pid != 0:
                break
            if time.time() - t0 > timeout:
                proc.kill()
                pid, status, ru = os.wait4(proc.pid, 0)
                return 124, "timed out", 0
            time.sleep(0.05)
        errf.seek(0)
        err = errf.read()
        proc.returncode = os.waitstatus_to_exitcode(status)
        return proc.returncode, err[-2000:], ru.ru_maxrss


class Failure(Exception):
    pass


def check(rc: int, out: str, err: str, cmd: list[str]) -> None:
    if rc != 0:
        raise Failure(f"{' '.join(cmd[:6])} ... exited {rc}:\n{err[-1500:]}\n{out[-500:]}")


def llama_bench(a, model: str, threads: int, p: int, n: int, depth: int, reps: int) -> float:
    cmd = [str(Path(a.llama_bin) / "llama-bench"), "-m", model, "-t", str(threads), "-p", str(p),
           "-n", str(n), "-d", str(depth), "-r", str(reps), "-o", "json"]
    rc, out, err, _ = run_measured(cmd, a.timeout)
    check(rc, out, err, cmd)
    rows = json.loads(out)
    return float(rows[0]["avg_ts"])


def chimera_bench(a, model: str, threads: int, args: list[str], reps: int) -> list[dict]:
    cmd = [a.chimera, "bench", "-m", model, "-t", str(threads), "-r", str(reps), "--json"] + args
    rc, out, err, _ = run_measured(cmd, a.timeout)
    check(rc, out, err, cmd)
    return json.loads(out)["tests"]


def llama_batched(a, model: str, threads: int, npp: int, ntg: int, b: int) -> float:
    ctx = max(4096, b * (npp + ntg) + 16)
    cmd = [str(Path(a.llama_bin) / "llama-batched-bench"), "-m", model, "-t", str(threads),
           "-tb", str(threads), "-c", str(ctx), "-b", "2048", "-ub", "512", "-npp", str(npp),
           "-ntg", str(ntg), "-npl", str(b), "--output-format", "jsonl"]
    rc, out, err, _ = run_measured(cmd, a.timeout)
    check(rc, out, err, cmd)
    for line in (out + "\n" + err).splitlines():
        line = line.strip()
        if line.startswith("{") and '"speed_tg"' in line:
            return float(json.loads(line)["speed_tg"])
    raise Failure(f"llama-batched-bench printed no result:\n{err[-1500:]}")


def prompt_text(a, model: str, n_tokens: int) -> str | None:
    """The first words of --text making at least n_tokens tokens for this model's vocabulary."""
    text = Path(a.text).read_text(encoding="utf-8")
    words = text.split()
    # A word is at least one token, so 2n words are plenty (and keep the argument well under the
    # kernel's 128 KiB limit on one argv string).
    lo, hi = 1, min(len(words), 2 * n_tokens)
    # Binary search on word count, with chimera's tokenizer (the same vocabulary llama.cpp uses).
    def count(k: int) -> int | None:
        cmd = [a.chimera, "tokenize", "-m", model, "-p", " ".join(words[:k])]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            return None
        return len([t for t in r.stdout.replace(",", " ").split() if t.strip().lstrip("-").isdigit()])
    c = count(hi)
    if c is None:
        return None
    if c < n_tokens:
        raise Failure(f"--text has only {c} tokens, fewer than --rss-tokens {n_tokens}")
    while lo < hi:
        mid = (lo + hi) // 2
        if (count(mid) or 0) >= n_tokens:
            hi = mid
        else:
            lo = mid + 1
    return " ".join(words[:lo])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--llama-bin", required=True, help="bin/ folder of your llama.cpp build")
    ap.add_argument("--chimera", default="build/bin/chimera")
    ap.add_argument("--models", nargs="+", required=True, help="GGUF files (same files for both)")
    ap.add_argument("--threads", default="2", help="comma-separated thread counts (e.g. 1,2)")
    ap.add_argument("--depths", default="4096,16384", help="context depths for tg64 @ depth")
    ap.add_argument("--parallel", default="4,16", help="sequence counts for batched decode")
    ap.add_argument("--reps", type=int, default=3, help="repetitions inside each tool run")
    ap.add_argument("--rounds", type=int, default=1, help="interleaved rounds; best kept")
    ap.add_argument("--text", default="models/heldout.txt", help="text for the RSS prompt")
    ap.add_argument("--rss-tokens", type=int, default=4247, help="prompt tokens of the RSS run")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes: check the plumbing only")
    ap.add_argument("--json-out", help="also write every figure to this JSON file")
    ap.add_argument("--timeout", type=float, default=3600)
    a = ap.parse_args()

    pp, tg, tgd, npp, ntg = 512, 128, 64, 128, 64
    depths = [int(x) for x in a.depths.split(",") if x]
    par = [int(x) for x in a.parallel.split(",") if x]
    if a.smoke:
        pp, tg, tgd, npp, ntg = 32, 8, 8, 16, 4
        depths, par = [256], [2, 4]
        a.reps, a.rss_tokens = 1, 300
    threads = [int(x) for x in a.threads.split(",")]

    rows: dict[tuple, dict] = {}  # (model, threads, test) -> {"llama": x, "chimera": y, ...}

    def keep(key: tuple, side: str, value: float, better) -> None:
        r = rows.setdefault(key, {})
        r[side] = value if side not in r else better(r[side], value)

    for rnd in range(a.rounds):
        for model in a.models:
            name = Path(model).name
            for t in threads:
                print(f"[round {rnd + 1}] {name}, {t} threads", file=sys.stderr, flush=True)
                keep((name, t, f"pp{pp}"), "llama", llama_bench(a, model, t, pp, 0, 0, a.reps), max)
                c = chimera_bench(a, model, t, ["-p", str(pp), "-n", "0"], a.reps)
                keep((name, t, f"pp{pp}"), "chimera", c[0]["tokens_per_s"], max)
                keep((name, t, f"tg{tg}"), "llama", llama_bench(a, model, t, 0, tg, 0, a.reps), max)
                c = chimera_bench(a, model, t, ["-p", "0", "-n", str(tg)], a.reps)
                keep((name, t, f"tg{tg}"), "chimera", c[0]["tokens_per_s"], max)
                keep((name, t, f"tg{tg}"), "pct_of_streaming_read", c[0]["pct_of_streaming_read"], max)
                for d in depths:
                    key = (name, t, f"tg{tgd} @ d{d}")
                    keep(key, "llama", llama_bench(a, model, t, 0, tgd, d, a.reps), max)
                    c = chimera_bench(a, model, t, ["-p", "0", "-n", str(tgd), "-d", str(d)], a.reps)
                    keep(key, "chimera", c[0]["tokens_per_s"], max)
                    keep(key, "pct_of_streaming_read", c[0]["pct_of_streaming_read"], max)
                for b in par:
                    key = (name, t, f"par {b} (pp{npp}+tg{ntg})")
                    keep(key, "llama", llama_batched(a, model, t, npp, ntg, b), max)
                    c = chimera_bench(a, model, t, ["-p", "0", "-n", "0", "--parallel", str(b),
                                                    "--npp", str(npp), "--ntg", str(ntg)], a.reps)
                    keep(key, "chimera", c[0]["tokens_per_s"], max)
                    keep(key, "pct_of_streaming_read", c[0]["pct_of_streaming_read"], max)
            # Peak RSS of a one-shot run (2 threads), once per model and round.
            text = prompt_text(a, model, a.rss_tokens) if Path(a.text).exists() else None
            if text is None:
                continue
            key = (name, 2, f"peak RSS MiB (prompt {a.rss_tokens} tok)")
            cmd = [str(Path(a.llama_bin) / "llama-simple"), "-m", model, "-n", "16", text]
            rc, err, rss = rss_of(cmd, a.timeout)
            check(rc, "", err, cmd)
            keep(key, "llama", rss / 1024, min)
            cmd = [a.chimera, "run", "-m", model, "-t", "2", "-n", "16", "--temp", "0", "-q",
                   "-c", str(a.rss_tokens + 64), "-p", text]
            rc, err, rss = rss_of(cmd, a.timeout)
            check(rc, "", err, cmd)
            keep(key, "chimera", rss / 1024, min)

    print(f"\nchimera vs llama.cpp{' (SMOKE: tiny sizes, not a measurement)' if a.smoke else ''}; "
          f"load: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}\n")
    print("| model | threads | test | llama.cpp | chimera | ratio | chimera decode % of streaming read |")
    print("|---|---|---|---|---|---|---|")
    out = []
    for (model, t, test), r in rows.items():
        lc, ch = r.get("llama"), r.get("chimera")
        ratio = ch / lc if lc and ch else float("nan")
        roof = f"{r['pct_of_streaming_read']:.0f}%" if "pct_of_streaming_read" in r else ""
        print(f"| {model} | {t} | {test} | {lc:.2f} | {ch:.2f} | {ratio:.2f} | {roof} |")
        out.append({"model": model, "threads": t, "test": test, "llama_cpp": lc, "chimera": ch,
                    "ratio": ratio, "chimera_pct_of_streaming_read": r.get("pct_of_streaming_read")})
    if a.json_out:
        Path(a.json_out).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Failure as e:
        print(f"bench_vs_llama_cpp: {e}", file=sys.stderr)
        sys.exit(1)
