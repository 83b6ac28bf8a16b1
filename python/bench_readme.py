#!/usr/bin/env python3
"""Reproduces the README's performance figures (section "Performance").

    python/bench_readme.py kernels   [--chimera build/bin/chimera] [--threads 2] [--repeats 6] [--runs 2]

`kernels` runs `chimera bench kernels --json` (GEMV over a 576 MiB weight set, GEMM, and a
measured streaming read of the same buffer, interleaved in rounds, best round kept) `--runs`
times and prints the README's kernel table, runs separated by " / ".

The comparison with llama.cpp (pp512, tg128, depth, parallel decode, peak RSS) is
python/bench_vs_llama_cpp.py; the speculative-decoding table comes from `chimera bench --spec/--draft`
and the server table from python/bench_serve.py.

Speed figures mean something only on a quiet machine: the script prints `uptime` before and after.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
KERNEL_TYPES = ["F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "IQ4_NL", "IQ4_XS", "Q4_K",
                "Q5_K", "Q6_K"]


def run(cmd: list[str]) -> str:
    print("+ " + " ".join(cmd), file=sys.stderr, flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{cmd[0]} exited {proc.returncode}:\n{proc.stderr}")
    return proc.stdout


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def kernels(args: argparse.Namespace) -> None:
    results = []
    for _ in range(args.runs):
        out = run([args.chimera, "bench", "kernels", "--json", "--no-ops", "-t", str(args.threads),
                   "--repeats", str(args.repeats), "--types", ",".join(KERNEL_TYPES)])
        results.append(json.loads(out))

    def joined(fmt: str, values: list[float]) -> str:
        return " / ".join(fmt.format(v) for v in values)

    print(f"`chimera bench kernels -t {args.threads} --repeats {args.repeats}` "
          f"({args.runs} run(s), isa {results[0]['isa']}):\n")
    print("| type | GEMV GB/s | % of the streaming read | GEMM 512x4096x1024 GFLOP/s |")
    print("|---|---|---|---|")
    for t in KERNEL_TYPES:
        rows = [r["types"][t] for r in results]
        print(f"| {t} | {joined('{:.1f}', [x['gemv_gbps'] for x in rows])} | "
              f"{joined('{:.0f}%', [x['gemv_pct_of_streaming_read'] for x in rows])} | "
              f"{joined('{:.0f}', [x['gemm_gflops'] for x in rows])} |")
    print(f"\n(measured streaming read "
          f"{joined('{:.1f}', [r['streaming_read_gbps'] for r in results])} GB/s in those runs)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="what", required=True)
    k = sub.add_parser("kernels", help="the kernel table")
    k.add_argument("--repeats", type=int, default=6)
    k.add_argument("--runs", type=int, default=2)
    k.add_argument("--chimera", default=str(REPO / "build" / "bin" / "chimera"))
    k.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    print(f"uptime before: {uptime()}")
    kernels(args)
    print(f"uptime after: {uptime()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
