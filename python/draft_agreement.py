#!/usr/bin/env python3
"""How often a draft model's greedy next token equals its target's (issue 12), teacher-forced,
measured with `chimera logits --all` on the GGUF files themselves (one thread):

    python3 python/draft_agreement.py --draft models/draft.gguf [--draft /tmp/old-draft.gguf]

(a) held-out text: the first --windows windows of 256 tokens of models/heldout.txt, each from an
    empty state, every position scored; (b) the target's own greedy text: --prompts held-out
    verses (every 50th), the first 3 words each, continued greedily for 128 tokens by the target,
    every generated position scored. Needs only numpy and a built chimera.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent


def argmax_all(chimera: str, model: str, ids: list[int], tmp: Path, n_vocab: int) -> np.ndarray:
    subprocess.run([chimera, "logits", "-m", model, "-t", "1", "-q", "--all", "--tokens",
                    ",".join(map(str, ids)), "-o", str(tmp)], check=True,
                   capture_output=True)
    return np.fromfile(tmp, dtype=np.float32).reshape(len(ids), n_vocab).argmax(axis=1)


def tokenize(chimera: str, model: str, text: str) -> list[int]:
    out = subprocess.run([chimera, "tokenize", "-m", model, "-p", text], check=True,
                         capture_output=True, text=True).stdout
    return [int(t) for t in out.replace(",", " ").replace("[", " ").replace("]", " ").split()]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--target", default=str(REPO / "models" / "default.gguf"))
    ap.add_argument("--draft", action="append", required=True)
    ap.add_argument("--chimera", default=str(REPO / "build" / "bin" / "chimera"))
    ap.add_argument("--heldout", default=str(REPO / "models" / "heldout.txt"))
    ap.add_argument("--windows", type=int, default=48)
    ap.add_argument("--prompts", type=int, default=32)
    args = ap.parse_args()
    n_vocab = 2048
    tmp = Path(tempfile.mkdtemp()) / "logits.bin"
    lines = Path(args.heldout).read_text().splitlines()
    text_ids = tokenize(args.chimera, args.target, "".join(l + "\n" for l in lines[:400]))
    windows = [text_ids[i * 256:(i + 1) * 256] for i in range(args.windows)]
    gens = []
    for line in lines[::50][:args.prompts]:
        prompt = " ".join(line.split()[:3])
        out = subprocess.run([args.chimera, "run", "-m", args.target, "-t", "1", "-q", "-n", "128",
                              "--temp", "0", "--ignore-eos", "-p", prompt],
                             check=True, capture_output=True, text=True).stdout
        gens.append((len(tokenize(args.chimera, args.target, prompt)),
                     tokenize(args.chimera, args.target, out)))
    target_w = [argmax_all(args.chimera, args.target, w, tmp, n_vocab) for w in windows]
    target_g = [argmax_all(args.chimera, args.target, g, tmp, n_vocab) for _, g in gens]
    for d in args.draft:
        agree = sum(int((argmax_all(args.chimera, d, w, tmp, n_vocab) == t).sum())
                    for w, t in zip(windows, target_w))
        total = sum(len(w) for w in windows)
        agree_g = total_g = 0
        for (n_p, g), t in zip(gens, target_g):
            a = argmax_all(args.chimera, d, g, tmp, n_vocab)
            agree_g += int((a[n_p - 1:-1] == t[n_p - 1:-1]).sum())
            total_g += len(g) - n_p
        print(f"{d}: top-1 agreement with the target: held-out text {agree}/{total} = "
              f"{agree / total:.1%}; the target's greedy text {agree_g}/{total_g} = "
              f"{agree_g / total_g:.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
