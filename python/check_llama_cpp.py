#!/usr/bin/env python3
"""Checks that llama.cpp's own tools read a GGUF model the way chimera does.

This script neither contains nor builds llama.cpp: point it at the binaries of a llama.cpp build
you made yourself (llama-tokenize, llama-simple, llama-perplexity) and at chimera's binary:

    .venv/bin/python python/check_llama_cpp.py --llama-bin /path/to/llama.cpp/build/bin \\
        --chimera build/bin/chimera --model models/default.gguf --text models/heldout.txt \\
        --quantize Q8_0

For the model (and for each --quantize type, a copy made by `chimera quantize`) it reports:
  * load: what llama.cpp's loader prints (architecture, parameter count, vocabulary);
  * tokenizer: llama-tokenize vs `chimera tokenize` on lines of the text file, the whole file and
    odd strings (unicode, digits, runs of spaces, control-token text); must be identical;
  * generation: llama-simple (greedy) vs `chimera run --temp 0` from one prompt; must be identical
    text (both engines round differently, so on a larger model a near-tie could flip; on the
    default model the top-1 margins are far larger than the rounding differences);
  * perplexity: llama-perplexity vs `chimera perplexity`, same context size, non-overlapping
    windows, second half of each window scored. The two numbers must agree within --ppl-tol.
The exit status is 0 when every check passes.
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

# Strings that stress the pre-tokenizer and the byte-level BPE: unicode letters, emoji and a
# zero-width-joiner sequence, digit runs (llama3 regex splits digits in groups of 3), runs of
# spaces, tabs, CR/LF, contractions in mixed case, literal control-token text, empty text.
ODD_STRINGS = [
    "",
    " ",
    "   leading and  multiple   spaces   ",
    "\n",
    "tabs\tand\nnewlines\n\n\nand\r\nCRLF",
    "digits 0 12 123 1234 12345678901 3.14159 1,000,000 -42",
    "héllo wörld naïve café façade Ærø ß Straße",
    "“quotes” ‘single’ — dash … ellipsis «guillemets»",
    "日本語のテキスト 中文 한국어 Ελληνικά русский עברית العربية",
    "emoji 🙂 👍🏽 👨‍👩‍👧 ❤️",
    "I'm you're he's we'll they'd I've DON'T WE'VE Don'T",
    "<|end_of_text|> literal <|start_of_role|>user<|end_of_role|> text",
    "And the LORD said unto Moses,",
    "x" * 300,
    "\u00a0non-breaking\u2009thin\u200bzero-width",
    "a backslash-n \\n and backslash-t \\t written out",
]


def run(cmd: list[str], timeout: float = 1800) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, timeout=timeout)


def text_of(b: bytes) -> str:
    return b.decode("utf-8", errors="replace")


def llama_load_info(log: str) -> dict:
    """Picks the loader's summary lines (print_info: key = value) out of a llama.cpp log."""
    info = {}
    wanted = {"arch", "model type", "model params", "file type", "file size", "n_vocab",
              "vocab type", "n_merges", "n_layer", "n_embd", "n_head_kv", "ssm_d_state",
              "BOS token", "EOS token"}
    for line in log.splitlines():
        m = re.match(r"^print_info: (.+?)\s*=\s*(.*)$", line)
        if m and m.group(1).strip() in wanted:
            info.setdefault(m.group(1).strip(), m.group(2).strip())
    return info


def llama_version(bin_dir: Path) -> str:
    p = run([str(bin_dir / "llama-tokenize"), "--version"], timeout=60)
    out = text_of(p.stdout + p.stderr)
    m = re.search(r"version: .*", out)
    return m.group(0) if m else out.strip().splitlines()[-1] if out.strip() else "unknown"


def check_tokenizer(args, model: Path, tmp: Path) -> tuple[bool, list[str]]:
    lines = Path(args.text).read_text(encoding="utf-8").splitlines()
    picks = [lines[i] for i in sorted({0, 1, len(lines) // 2, len(lines) - 1}) if lines]
    cases = [(f"text line {i + 1}", s) for i, s in enumerate(picks)]
    cases += [(f"odd string {i + 1}", s) for i, s in enumerate(ODD_STRINGS)]
    cases.append(("the whole text file", Path(args.text).read_text(encoding="utf-8")))
    report, ok = [], True
    for label, s in cases:
        f = tmp / "tok.txt"
        f.write_bytes(s.encode("utf-8"))
        # Both tools recognise control-token text (<|...|>) by default; compare that mode and,
        # where the text has such markers, also --no-parse-special. --no-escape: llama-tokenize
        # would otherwise turn a written "\\n" into a newline.
        modes = [[], ["--no-parse-special"]] if "<|" in s else [[]]
        for mode in modes:
            lp = run([str(args.llama_bin / "llama-tokenize"), "-m", str(model), "-f", str(f),
                      "--ids", "--no-escape", "--log-disable"] + mode, timeout=120)
            cp = run([args.chimera, "tokenize", "-m", str(model), "-f", str(f)] + mode,
                     timeout=120)
            try:
                ids_line = [x for x in text_of(lp.stdout).splitlines() if x.startswith("[")][-1]
                llama_ids = list(ast.literal_eval(ids_line))
            except (IndexError, ValueError, SyntaxError):
                llama_ids = None
            chimera_ids = ([int(x) for x in text_of(cp.stdout).split()]
                           if cp.returncode == 0 else None)
            same = llama_ids is not None and llama_ids == chimera_ids
            ok &= same
            shown = json.dumps(s if len(s) <= 60 else s[:57] + "...", ensure_ascii=False)
            n = len(llama_ids) if llama_ids is not None else "error"
            report.append(f"  {'same' if same else 'DIFFERENT'}  {label}{' ' if mode else ''}"
                          f"{' '.join(mode)}: {shown} ({n} tokens)")
            if not same:
                lerr = text_of(lp.stderr)[-300:]
                cerr = text_of(cp.stderr)[-300:]
                report.append(f"      llama.cpp: {llama_ids if llama_ids is not None else lerr}")
                report.append(f"      chimera:   {chimera_ids if chimera_ids is not None else cerr}")
    return ok, report


def strip_final_newline(s: str) -> str:
    # Both tools end their output with one "\n" of their own after the generated text.
    return s[:-1] if s.endswith("\n") else s


def check_generation(args, model: Path) -> tuple[bool, list[str], dict]:
    lp = run([str(args.llama_bin / "llama-simple"), "-m", str(model), "-n", str(args.n_predict),
              args.prompt], timeout=600)
    cp = run([args.chimera, "run", "-m", str(model), "-p", args.prompt, "--temp", "0", "-n",
              str(args.n_predict), "-t", str(args.threads), "-q"], timeout=600)
    llama_text = strip_final_newline(text_of(lp.stdout))
    chimera_text = strip_final_newline(text_of(cp.stdout))
    same = lp.returncode == 0 and cp.returncode == 0 and llama_text == chimera_text
    report = [f"  {'same' if same else 'DIFFERENT'} text ({args.n_predict} greedy tokens from "
              f"{json.dumps(args.prompt)})",
              f"      llama.cpp: {json.dumps(llama_text, ensure_ascii=False)}"]
    if not same:
        report.append(f"      chimera:   {json.dumps(chimera_text, ensure_ascii=False)}")
        if lp.returncode != 0:
            report.append("      llama-simple failed: " + text_of(lp.stderr)[-500:])
    return same, report, llama_load_info(text_of(lp.stderr))


def check_perplexity(args, model: Path) -> tuple[bool, list[str], dict]:
    # -b = context: one window per batch (llama-perplexity would otherwise pack 2048/ctx windows
    # into one batch; the result is the same up to rounding). The vocabulary says no BOS, so
    # neither tool replaces a window's first token.
    lcmd = [str(args.llama_bin / "llama-perplexity"), "-m", str(model), "-f", args.text, "-c",
            str(args.ctx), "-b", str(args.ctx), "-t", str(args.threads)]
    ccmd = [args.chimera, "perplexity", "-m", str(model), "-f", args.text, "-c", str(args.ctx),
            "-t", str(args.threads), "--json", "-q"]
    lp = run(lcmd)
    cp = run(ccmd)
    log = text_of(lp.stdout + lp.stderr)
    m = re.search(r"Final estimate: PPL = ([0-9.]+) \+/- ([0-9.]+)", log)
    chunks = re.search(r"calculating perplexity over (\d+) chunks", log)
    llama_ppl = float(m.group(1)) if m else None
    try:
        cj = json.loads(text_of(cp.stdout))
    except json.JSONDecodeError:
        cj = None
    report = [f"  llama.cpp: {' '.join(Path(c).name if i == 0 else c for i, c in enumerate(lcmd))}"]
    if m:
        report.append(f"      PPL = {m.group(1)} +/- {m.group(2)} over "
                      f"{chunks.group(1) if chunks else '?'} windows")
    else:
        report.append("      no result: " + log[-500:])
    report.append(f"  chimera:   chimera {' '.join(ccmd[1:])}")
    if cj:
        report.append(f"      PPL = {cj['perplexity']:.4f} +/- {cj['uncertainty']:.5f} over "
                      f"{cj['windows']} windows, {cj['scored_tokens']} scored tokens")
    else:
        report.append("      no result: " + text_of(cp.stderr)[-500:])
    ok = bool(m and cj)
    rel = None
    if ok:
        rel = cj["perplexity"] / llama_ppl - 1
        ok = abs(rel) <= args.ppl_tol and chunks is not None and int(chunks.group(1)) == cj["windows"]
        report.append(f"  relative difference {rel:+.3e} (tolerance {args.ppl_tol:g}): "
                      f"{'ok' if ok else 'TOO LARGE'}")
    return ok, report, {"llama_ppl": llama_ppl, "chimera_ppl": cj["perplexity"] if cj else None,
                        "relative": rel, "load": llama_load_info(log)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--llama-bin", type=Path, required=True,
                    help="folder with llama-tokenize, llama-simple, llama-perplexity")
    ap.add_argument("--chimera", default="build/bin/chimera", help="chimera binary")
    ap.add_argument("--model", default="models/default.gguf")
    ap.add_argument("--text", default="models/heldout.txt", help="text for tokenizer/perplexity")
    ap.add_argument("--ctx", type=int, default=256, help="perplexity context size")
    ap.add_argument("--prompt", default="And God said")
    ap.add_argument("--n-predict", type=int, default=48)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quantize", nargs="*", default=[],
                    help="also check copies quantized by `chimera quantize` to these types")
    # Default tolerance: the engines round differently (llama.cpp's CPU matmuls convert the
    # activations to the weights' dot type, F16 or Q8_0 blocks), so the perplexities differ by
    # rounding only: measured on the default model 1e-6 (F16) and 1e-5 (Q8_0) relative. 1e-3 leaves
    # room for other models yet catches a definition mismatch: scoring 128 instead of 127 tokens
    # per 256-token window moves this model's perplexity by 1.5e-3.
    ap.add_argument("--ppl-tol", type=float, default=1e-3,
                    help="max relative perplexity difference")
    ap.add_argument("--skip-perplexity", action="store_true")
    args = ap.parse_args()

    print(f"llama.cpp: {llama_version(args.llama_bin)} ({args.llama_bin})")
    all_ok = True
    with tempfile.TemporaryDirectory(prefix="check_llama_cpp_") as tmpdir:
        tmp = Path(tmpdir)
        models = [("given", Path(args.model))]
        for qtype in args.quantize:
            q = tmp / f"model-{qtype}.gguf"
            p = run([args.chimera, "quantize", "-q", args.model, str(q), qtype], timeout=600)
            if p.returncode != 0:
                print(f"chimera quantize {qtype} failed: {text_of(p.stderr)[-500:]}")
                all_ok = False
                continue
            models.append((f"chimera quantize {qtype}", q))
        for label, model in models:
            print(f"\n== {model.name} ({label}, {model.stat().st_size} bytes)")
            tok_ok, tok_report = check_tokenizer(args, model, tmp)
            gen_ok, gen_report, load = check_generation(args, model)
            loaded = bool(load.get("arch"))
            print("load: " + ("ok, " if loaded else "FAILED ") +
                  ", ".join(f"{k} = {v}" for k, v in load.items()))
            print(f"tokenizer: {'identical' if tok_ok else 'DIFFERENT'}")
            print("\n".join(tok_report))
            print(f"generation: {'identical' if gen_ok else 'DIFFERENT'}")
            print("\n".join(gen_report))
            ok = loaded and tok_ok and gen_ok
            if not args.skip_perplexity:
                ppl_ok, ppl_report, _ = check_perplexity(args, model)
                print(f"perplexity (n_ctx {args.ctx}): {'agrees' if ppl_ok else 'DISAGREES'}")
                print("\n".join(ppl_report))
                ok &= ppl_ok
            all_ok &= ok
    print(f"\n{'ALL CHECKS PASSED' if all_ok else 'SOME CHECKS FAILED'}")
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
