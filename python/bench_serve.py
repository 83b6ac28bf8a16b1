#!/usr/bin/env python3
"""Replays scripted conversations against OpenAI-compatible servers (chimera serve,
llama-server, ...) and reports, per turn and in total: time to first token, prompt tokens
processed (read from the response's usage / timings) and decode tokens/s.

Scenarios (all greedy, streamed, one request at a time):
  append      a 10-turn chat of ~3,100 tokens (on the Granite-4.0-H-shaped synthetic model's
              tokenizer); each turn adds a user message to the last answer
  regenerate  the append chat's last request again (regenerate the last answer)
  edit        the append chat's last user message changed at its start (~250 tokens before the
              end of the prompt)
  edit2       the user message two turns back changed at its start (~650 tokens follow it)
  switch      16 conversations, 2 turns each, round-robin (run the server with fewer slots)
  shared      16 users, one long shared system prompt, a different question each
  agent       a task prompt that grows by tool outputs, 8 steps
  memory      (only when named) 16 conversations of ~3,000 tokens, then a next turn in each: the
              issue's memory target, --cache-mem 2G keeping all 16 (~55,000 prompt tokens)

For every turn the script also computes `new_tokens`: the prompt tokens after the point where
the request first diverges from everything sent and answered before (every earlier prompt
followed by its answer's generated token ids, from the logprobs' "id"), from the server's own
token lists (/apply-template, else /apply-template + /tokenize). A server that never
re-processes what it has seen processes about that many (`computed`: processed plus chimera's
replayed tokens).

One server (JSON Lines on stdout: one object per turn ({"scenario", "turn", ...}), then one
{"scenario": NAME, "total": {...}} per scenario). Fields: ttft_s, prompt_tokens, cached_tokens,
processed (prompt tokens run through the model: timings.prompt_n, else prompt - cached),
replayed (chimera: tokens re-run to roll a recurrent state back), computed, new_tokens,
completion_tokens, decode_tok_s:

  python/bench_serve.py --url http://127.0.0.1:8080                  # every scenario
  python/bench_serve.py --url http://127.0.0.1:8080 --scenarios edit,switch
  python/bench_serve.py --url http://127.0.0.1:8080 --smoke          # tiny, seconds

chimera against llama-server: starts each on the same model file (chimera: -np 2 --mem 3G
--cache-mem 2G; llama-server: its defaults with -np 2 and -c 8192, so that one slot holds a whole
chat), runs the same scenarios on each in turn, and prints a markdown table (JSON Lines of both
runs go to --json):

  python/bench_serve.py -m model.gguf --chimera build/bin/chimera \\
      --llama-server ../llama.cpp/build/bin/llama-server --json runs.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

WORDS = ("and the LORD said unto Moses behold I will send thee into the land of Egypt that thou "
         "mayest bring forth my people the children of Israel out of the house of bondage for I "
         "have seen their affliction and heard their cry by reason of their taskmasters and I am "
         "come down to deliver them out of the hand of the Egyptians unto a good land and a large "
         "flowing with milk and honey").split()

# Where processing only what is new is promised (the targets), with the slack allowed.
EXACT_SCENARIOS = ("append", "regenerate", "edit", "edit2", "switch", "memory")
SLACK_TOKENS = 64


def filler(rng: random.Random, n_words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n_words)) + "."


def common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    k = 0
    while k < n and a[k] == b[k]:
        k += 1
    return k


class Bench:
    def __init__(self, url: str, model: str, max_tokens: int, api_key: str | None,
                 timeout: float, out=None):
        self.url = url.rstrip("/")
        if self.url.endswith("/v1"):
            self.url = self.url[:-3]
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.timeout = timeout
        self.max_tokens = max_tokens
        self.model = model or self.first_model()
        self.out = out or sys.stdout
        self.seen: list[list[int]] = []  # token lists sent (and answered) so far

    def emit(self, obj: dict) -> None:
        print(json.dumps(obj), file=self.out, flush=True)

    def first_model(self) -> str:
        r = requests.get(self.url + "/v1/models", headers=self.headers, timeout=self.timeout)
        r.raise_for_status()
        return r.json()["data"][0]["id"]

    def tokens(self, messages: list[dict]) -> list[int]:
        """The prompt the server renders for `messages`, as its token ids."""
        r = requests.post(self.url + "/apply-template", json={"messages": messages},
                          headers=self.headers, timeout=self.timeout)
        r.raise_for_status()
        j = r.json()
        if "tokens" in j:  # chimera
            return j["tokens"]
        r = requests.post(self.url + "/tokenize", json={"content": j["prompt"],
                                                        "add_special": True,
                                                        "parse_special": True},
                          headers=self.headers, timeout=self.timeout)
        r.raise_for_status()
        return [t["id"] if isinstance(t, dict) else t for t in r.json()["tokens"]]

    def chat(self, messages: list[dict], max_tokens: int) -> tuple[str, list[int] | None, dict]:
        """One streamed request: (answer, its token ids if the server gives them, measurements)."""
        # logprobs: only for the generated token ids ("id", chimera and llama-server).
        body = {"model": self.model, "messages": messages, "max_tokens": max_tokens,
                "temperature": 0, "ignore_eos": True, "stream": True,
                "stream_options": {"include_usage": True}, "logprobs": True, "top_logprobs": 0}
        t0 = time.monotonic()
        r = requests.post(self.url + "/v1/chat/completions", json=body, headers=self.headers,
                          stream=True, timeout=self.timeout)
        if r.status_code != 200:
            raise RuntimeError(f"HTTP {r.status_code}: {r.text[:500]}")
        text, first, last, usage, timings, pieces = "", None, None, None, None, 0
        ids: list[int] | None = []
        for line in r.iter_lines():
            if not line.startswith(b"data: ") or line == b"data: [DONE]":
                continue
            ev = json.loads(line[6:])
            if "error" in ev:
                raise RuntimeError(f"stream error: {ev['error']}")
            for ch in ev.get("choices") or []:
                lps = (ch.get("logprobs") or {}).get("content") or []
                for lp in lps:
                    if ids is not None and isinstance(lp.get("id"), int):
                        ids.append(lp["id"])
                    else:
                        ids = None  # no ids from this server
                piece = (ch.get("delta") or {}).get("content") or ""
                if piece or lps:  # a token, even one with no text (TTFT is to the first token)
                    now = time.monotonic()
                    first = first or now
                    last = now
                    pieces += 1
                    text += piece
            usage = ev.get("usage") or usage
            timings = ev.get("timings") or timings
        usage = usage or {}
        timings = timings or {}
        prompt = usage.get("prompt_tokens")
        cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens")
        if cached is None and "cache_n" in timings:
            cached = timings["cache_n"]
        processed = timings.get("prompt_n")
        if processed is None and prompt is not None and cached is not None:
            processed = prompt - cached
        replayed = timings.get("prompt_replayed", 0)
        completion = usage.get("completion_tokens", pieces)
        decode_s = (last - first) if first and last else 0.0
        m = {"ttft_s": round((first or time.monotonic()) - t0, 4),
             "prompt_tokens": prompt, "cached_tokens": cached, "processed": processed,
             "replayed": replayed,
             "computed": None if processed is None else processed + (replayed or 0),
             "completion_tokens": completion,
             "decode_tok_s": round((completion - 1) / decode_s, 2) if decode_s > 0 and
             completion and completion > 1 else None}
        return text, ids, m


def total(rows: list[dict]) -> dict:
    def s(key):
        return sum(r[key] or 0 for r in rows)
    decode = [r["decode_tok_s"] for r in rows if r["decode_tok_s"]]
    return {"turns": len(rows), "ttft_s": round(s("ttft_s"), 4),
            "ttft_mean_s": round(s("ttft_s") / max(1, len(rows)), 4),
            "prompt_tokens": s("prompt_tokens"), "cached_tokens": s("cached_tokens"),
            "processed": s("processed"), "replayed": s("replayed"), "computed": s("computed"),
            "new_tokens": s("new_tokens"),
            # the largest excess of computed over new tokens in one turn
            "max_excess": max((r["computed"] or 0) - r["new_tokens"] for r in rows) if rows
            else 0,
            "completion_tokens": s("completion_tokens"),
            "decode_tok_s_mean": round(sum(decode) / len(decode), 2) if decode else None}


def run_turn(b: Bench, scenario: str, turn, messages: list[dict], rows: list[dict],
             max_tokens: int) -> str:
    prompt = b.tokens(messages)
    new = len(prompt) - max((common_prefix(prompt, s) for s in b.seen), default=0)
    text, ids, m = b.chat(messages, max_tokens)
    # What the server has now seen: the prompt and the answer's tokens as generated (a next
    # turn that sends the answer back re-tokenized may diverge inside it: a random model's
    # text often re-tokenizes differently). Without ids, the answer as the template renders it.
    if ids is not None and len(ids) == m["completion_tokens"]:
        b.seen.append(prompt + ids)
    else:
        b.seen.append(b.tokens(messages + [{"role": "assistant", "content": text}]))
    row = {"scenario": scenario, "turn": turn, "new_tokens": new, **m}
    b.emit(row)
    rows.append(row)
    return text


def scenario_append(b: Bench, cfg, state: dict) -> list[dict]:
    rng = random.Random(1)
    rows: list[dict] = []
    msgs = [{"role": "system", "content": "You are a scribe. " + filler(rng, cfg.system_words)}]
    for turn in range(cfg.turns):
        msgs.append({"role": "user", "content": filler(rng, cfg.user_words)})
        answer = run_turn(b, "append", turn + 1, msgs, rows, cfg.max_tokens)
        if turn + 1 < cfg.turns:
            msgs.append({"role": "assistant", "content": answer})
    state["chat"] = msgs  # ends with the last user message
    return rows


def scenario_regenerate(b: Bench, cfg, state: dict) -> list[dict]:
    rows: list[dict] = []
    run_turn(b, "regenerate", 1, state["chat"], rows, cfg.max_tokens)
    return rows


def edited_chat(state: dict, back: int) -> list[dict]:
    """The append chat with the user message `back` turns before the last changed at its
    start (its later messages kept)."""
    msgs = [dict(m) for m in state["chat"]]
    users = [i for i, m in enumerate(msgs) if m["role"] == "user"]
    i = users[max(0, len(users) - 1 - back)]
    msgs[i]["content"] = "Nay, " + msgs[i]["content"]
    return msgs


def scenario_edit(b: Bench, cfg, state: dict) -> list[dict]:
    rows: list[dict] = []
    run_turn(b, "edit", 1, edited_chat(state, 0), rows, cfg.max_tokens)
    return rows


def scenario_edit2(b: Bench, cfg, state: dict) -> list[dict]:
    rows: list[dict] = []
    run_turn(b, "edit2", 1, edited_chat(state, 1), rows, cfg.max_tokens)
    return rows


def scenario_switch(b: Bench, cfg, state: dict) -> list[dict]:
    rng = random.Random(2)
    rows: list[dict] = []
    convs = [[{"role": "system", "content": f"Scribe {i}. " + filler(rng, cfg.system_words)}]
             for i in range(cfg.conversations)]
    for turn in range(cfg.switch_turns):
        for i, msgs in enumerate(convs):
            msgs.append({"role": "user", "content": filler(rng, cfg.switch_user_words)})
            answer = run_turn(b, "switch", f"{i}.{turn + 1}", msgs, rows, cfg.short_max_tokens)
            msgs.append({"role": "assistant", "content": answer})
    return rows


def scenario_shared(b: Bench, cfg, state: dict) -> list[dict]:
    rng = random.Random(3)
    rows: list[dict] = []
    system = "You are a scribe. " + filler(rng, cfg.shared_system_words)
    for i in range(cfg.conversations):
        msgs = [{"role": "system", "content": system},
                {"role": "user", "content": filler(rng, 12)}]
        run_turn(b, "shared", i + 1, msgs, rows, cfg.short_max_tokens)
    return rows


def scenario_agent(b: Bench, cfg, state: dict) -> list[dict]:
    rng = random.Random(4)
    rows: list[dict] = []
    msgs = [{"role": "system", "content": "You are an agent; think, then call a tool."},
            {"role": "user", "content": "Task: " + filler(rng, cfg.user_words)}]
    for step in range(cfg.agent_steps):
        answer = run_turn(b, "agent", step + 1, msgs, rows, cfg.short_max_tokens)
        msgs.append({"role": "assistant", "content": answer})
        msgs.append({"role": "user", "content": "Tool output: " + filler(rng, cfg.tool_words)})
    return rows


def scenario_memory(b: Bench, cfg, state: dict) -> list[dict]:
    """The issue's memory target: 16 conversations of ~3,000 tokens (their history sent at
    once), then one more turn in each, round-robin. On chimera with --cache-mem 2G every next
    turn should process only its new tokens (the cache keeps all 16)."""
    rng = random.Random(5)
    rows: list[dict] = []
    convs = []
    for i in range(cfg.conversations):
        msgs = [{"role": "system", "content": f"Scribe {i}. " + filler(rng, cfg.system_words)}]
        for _ in range(cfg.memory_exchanges):
            msgs.append({"role": "user", "content": filler(rng, cfg.memory_words)})
            msgs.append({"role": "assistant", "content": filler(rng, cfg.memory_words // 4)})
        msgs.append({"role": "user", "content": filler(rng, 20)})
        convs.append(msgs)
    for turn in (1, 2):
        for i, msgs in enumerate(convs):
            answer = run_turn(b, "memory", f"{i}.{turn}", msgs, rows, cfg.short_max_tokens)
            msgs.append({"role": "assistant", "content": answer})
            msgs.append({"role": "user", "content": filler(rng, 20)})
    return rows


SCENARIOS = {"append": scenario_append, "regenerate": scenario_regenerate,
             "edit": scenario_edit, "edit2": scenario_edit2, "switch": scenario_switch,
             "shared": scenario_shared, "agent": scenario_agent, "memory": scenario_memory}
DEFAULT_SCENARIOS = [n for n in SCENARIOS if n != "memory"]  # memory: ~55,000 prompt tokens


def run_all(b: Bench, cfg, names: list[str]) -> dict[str, dict]:
    state: dict = {}
    totals: dict[str, dict] = {}
    all_rows = []
    for n in [n for n in SCENARIOS if n in names]:
        rows = SCENARIOS[n](b, cfg, state)
        totals[n] = total(rows)
        b.emit({"scenario": n, "total": totals[n]})
        all_rows += rows
    totals["all"] = total(all_rows)
    b.emit({"scenario": "all", "total": totals["all"], "base_url": b.url, "model": b.model})
    # chimera's prefix cache as the run left it (what it kept, within which budget).
    try:
        r = requests.get(b.url + "/v1/cache", headers=b.headers, timeout=b.timeout)
        if r.status_code == 200:
            c = r.json()
            totals["cache"] = {k: c.get(k) for k in ("n_entries", "tokens", "bytes",
                                                     "budget_bytes", "snapshots",
                                                     "snapshot_bytes")}
            b.emit({"cache": totals["cache"]})
    except requests.RequestException:
        pass
    return totals


# ------------------------------------------------- servers for --chimera / --llama-server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A server process on a loopback port, ready once /health answers 200."""

    def __init__(self, args: list[str], port: int, timeout: float = 300):
        self.log = tempfile.NamedTemporaryFile(prefix="bench-serve-", suffix=".log",
                                               delete=False)
        self.args = args
        self.url = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{shlex.join(args)} exited {self.proc.returncode}:\n"
                                   f"{self.output()[-3000:]}")
            try:
                if requests.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"{shlex.join(args)} never answered /health")

    def output(self) -> str:
        return Path(self.log.name).read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        os.unlink(self.log.name)


def engine_command(kind: str, binary: str, cfg, port: int) -> list[str]:
    common = ["-m", cfg.model_file, "-t", str(cfg.threads), "-np", str(cfg.parallel),
              "--port", str(port)]
    if kind == "chimera":
        return [binary, "serve", *common, "-q", *shlex.split(cfg.chimera_args)]
    return [binary, *common, *shlex.split(cfg.llama_args)]


def fmt(x, digits: int = 2) -> str:
    return "-" if x is None else (f"{x:.{digits}f}" if isinstance(x, float) else str(x))


def markdown_table(results: dict[str, dict[str, dict]], names: list[str]) -> str:
    """Per scenario: new tokens, tokens computed and mean TTFT of each engine, and the TTFT
    ratio (llama-server / chimera) when both ran."""
    engines = list(results)
    both = engines == ["chimera", "llama-server"]
    head = ["scenario", "turns", "new tokens"]
    for e in engines:
        head += [f"{e} tokens processed", f"{e} TTFT (s)"]
    if both:
        head.append("TTFT llama-server / chimera")
    if "chimera" in engines:
        head.append("chimera: each turn <= new + 64")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for n in [n for n in SCENARIOS if n in names] + ["all"]:
        if n not in results[engines[0]]:
            continue
        t0 = results[engines[0]][n]
        # Each engine's conversation holds its own answers, so its new tokens can differ.
        news: list[str] = []
        for e in engines:
            if str(results[e][n]["new_tokens"]) not in news:
                news.append(str(results[e][n]["new_tokens"]))
        row = [n, str(t0["turns"]), " / ".join(news)]
        for e in engines:
            t = results[e][n]
            row += [str(t["computed"]), fmt(t["ttft_mean_s"], 3)]
        if both:
            c, l = results["chimera"][n], results["llama-server"][n]
            ratio = l["ttft_mean_s"] / c["ttft_mean_s"] if c["ttft_mean_s"] > 0 else None
            row.append(fmt(ratio) + "x" if ratio is not None else "-")
        if "chimera" in engines:
            c = results["chimera"][n]
            if n in EXACT_SCENARIOS:
                row.append(f"{'yes' if c['max_excess'] <= SLACK_TOKENS else 'NO'} "
                           f"(max {c['max_excess']:+d})")
            else:
                row.append("-")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--url", help="a running server's base URL, e.g. http://127.0.0.1:8080")
    ap.add_argument("-m", "--model-file", help="GGUF for the servers this script starts")
    ap.add_argument("--chimera", help="chimera binary: start `chimera serve` and run on it")
    ap.add_argument("--llama-server", help="llama-server binary: start it and run on it")
    ap.add_argument("--threads", type=int, default=2, help="-t for the started servers (2)")
    ap.add_argument("--parallel", type=int, default=2, help="-np for the started servers (2)")
    ap.add_argument("--chimera-args", default="--mem 3G --cache-mem 2G -c 4096")
    ap.add_argument("--llama-args", default="-c 8192")
    ap.add_argument("--json", help="--chimera / --llama-server: write the JSON Lines here")
    ap.add_argument("--model", default="", help="model name to send (default: /v1/models' first)")
    ap.add_argument("--api-key", default=None)
    ap.add_argument("--scenarios", default=",".join(DEFAULT_SCENARIOS),
                    help=f"comma-separated, of {', '.join(SCENARIOS)} (default: all but memory)")
    ap.add_argument("--max-tokens", type=int, default=48,
                    help="answer length per turn of the 10-turn chat (append, regenerate, edit)")
    ap.add_argument("--short-max-tokens", type=int, default=16,
                    help="answer length per turn of switch, shared and agent")
    ap.add_argument("--turns", type=int, default=10)
    ap.add_argument("--system-words", type=int, default=40)
    ap.add_argument("--user-words", type=int, default=85)
    ap.add_argument("--conversations", type=int, default=16)
    ap.add_argument("--switch-turns", type=int, default=2)
    ap.add_argument("--switch-user-words", type=int, default=25)
    ap.add_argument("--shared-system-words", type=int, default=300)
    ap.add_argument("--agent-steps", type=int, default=8)
    ap.add_argument("--tool-words", type=int, default=50)
    ap.add_argument("--memory-exchanges", type=int, default=5,
                    help="memory: user/assistant pairs of each conversation's history")
    ap.add_argument("--memory-words", type=int, default=160,
                    help="memory: words per user message of the history (answers: a quarter)")
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes: checks the script works")
    cfg = ap.parse_args()
    if cfg.smoke:
        cfg.max_tokens, cfg.short_max_tokens, cfg.turns = 4, 4, 3
        cfg.system_words, cfg.user_words, cfg.switch_user_words = 8, 12, 12
        cfg.conversations, cfg.switch_turns, cfg.shared_system_words = 3, 2, 40
        cfg.agent_steps, cfg.tool_words = 3, 12
        cfg.memory_exchanges, cfg.memory_words = 2, 12
    names = [n for n in cfg.scenarios.split(",") if n]
    for n in names:
        if n not in SCENARIOS:
            ap.error(f"unknown scenario '{n}' (known: {', '.join(SCENARIOS)})")
    if {"regenerate", "edit", "edit2"} & set(names) and "append" not in names:
        names.insert(0, "append")  # they start from the append chat
    if cfg.url:
        if cfg.chimera or cfg.llama_server:
            ap.error("--url, or --chimera / --llama-server: not both")
        run_all(Bench(cfg.url, cfg.model, cfg.max_tokens, cfg.api_key, cfg.timeout), cfg, names)
        return 0
    if not (cfg.chimera or cfg.llama_server) or not cfg.model_file:
        ap.error("give --url, or -m MODEL with --chimera and/or --llama-server")
    out = open(cfg.json, "w") if cfg.json else open(os.devnull, "w")
    results: dict[str, dict[str, dict]] = {}
    commands = []
    for kind, binary in (("chimera", cfg.chimera), ("llama-server", cfg.llama_server)):
        if not binary:
            continue
        port = free_port()
        cmd = engine_command(kind, binary, cfg, port)
        commands.append(shlex.join(cmd))
        print(f"running {kind}: {shlex.join(cmd)}", file=sys.stderr, flush=True)
        server = Server(cmd, port)
        try:
            b = Bench(server.url, cfg.model, cfg.max_tokens, None, cfg.timeout, out=out)
            b.emit({"engine": kind, "command": cmd})
            results[kind] = run_all(b, cfg, names)
        finally:
            server.stop()
    out.close()
    print(markdown_table(results, names))
    print()
    print("Tokens processed: prompt tokens run through the model (chimera: processed + "
          "replayed; llama-server: timings.prompt_n), summed over the turns; new tokens: those "
          "after the first divergence from everything sent before (one figure per engine where "
          "their answers made the chats differ); TTFT: mean per turn, measured by the client.")
    for c in commands:
        print(f"- `{c}`")
    c = results.get("chimera", {}).get("cache")
    if c:
        print(f"\nchimera's prefix cache at the end: {c['n_entries']} entries, {c['tokens']} "
              f"tokens, {c['bytes'] / 2**20:.0f} MiB of its {c['budget_bytes'] / 2**20:.0f} MiB "
              f"budget ({c['snapshots']} snapshots, {c['snapshot_bytes'] / 2**20:.0f} MiB).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
