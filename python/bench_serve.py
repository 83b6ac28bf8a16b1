#!/usr/bin/env python3
"""Replays scripted conversations against any OpenAI-compatible server (chimera serve,
llama-server, ...) and reports, per turn and in total: time to first token, prompt tokens
processed (read from the response's usage / timings) and decode tokens/s.

Scenarios (all greedy, streamed, one request at a time unless said otherwise):
  append      a 10-turn chat of ~2,500 tokens; each turn adds a user message to the last answer
  regenerate  the append chat's last request again (regenerate the last answer)
  edit        the append chat's last user message changed at its start (~200 tokens before the
              end of the prompt)
  switch      16 conversations, 3 turns each, round-robin (run the server with fewer slots)
  shared      16 users, one long shared system prompt, a different question each
  agent       a task prompt that grows by tool outputs, 8 steps

Output is JSON Lines on stdout: one object per turn ({"scenario", "turn", ...}), then one
{"scenario": NAME, "total": {...}} per scenario. Fields: ttft_s, prompt_tokens, cached_tokens,
processed (prompt tokens run through the model: timings.prompt_n, else prompt - cached),
replayed (chimera: tokens re-run to roll a recurrent state back), completion_tokens,
decode_tok_s.

  python/bench_serve.py --url http://127.0.0.1:8080                  # every scenario
  python/bench_serve.py --url http://127.0.0.1:8080 --scenarios edit,switch
  python/bench_serve.py --url http://127.0.0.1:8080 --smoke          # tiny, seconds
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time

import requests

WORDS = ("and the LORD said unto Moses behold I will send thee into the land of Egypt that thou "
         "mayest bring forth my people the children of Israel out of the house of bondage for I "
         "have seen their affliction and heard their cry by reason of their taskmasters and I am "
         "come down to deliver them out of the hand of the Egyptians unto a good land and a large "
         "flowing with milk and honey").split()


def filler(rng: random.Random, n_words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n_words)) + "."


class Bench:
    def __init__(self, url: str, model: str, max_tokens: int, api_key: str | None,
                 timeout: float):
        self.url = url.rstrip("/")
        if self.url.endswith("/v1"):
            self.url = self.url[:-3]
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.timeout = timeout
        self.max_tokens = max_tokens
        self.model = model or self.first_model()

    def first_model(self) -> str:
        r = requests.get(self.url + "/v1/models", headers=self.headers, timeout=self.timeout)
        r.raise_for_status()
        return r.json()["data"][0]["id"]

    def chat(self, messages: list[dict]) -> tuple[str, dict]:
        """One streamed request; returns (answer, measurements)."""
        body = {"model": self.model, "messages": messages, "max_tokens": self.max_tokens,
                "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}
        t0 = time.monotonic()
        r = requests.post(self.url + "/v1/chat/completions", json=body, headers=self.headers,
                          stream=True, timeout=self.timeout)
        if r.status_code != 200:
            raise RuntimeError(f"HTTP {r.status_code}: {r.text[:500]}")
        text, first, last, usage, timings, pieces = "", None, None, None, None, 0
        for line in r.iter_lines():
            if not line.startswith(b"data: ") or line == b"data: [DONE]":
                continue
            ev = json.loads(line[6:])
            if "error" in ev:
                raise RuntimeError(f"stream error: {ev['error']}")
            for ch in ev.get("choices") or []:
                piece = (ch.get("delta") or {}).get("content") or ""
                if piece:
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
        completion = usage.get("completion_tokens", pieces)
        decode_s = (last - first) if first and last else 0.0
        m = {"ttft_s": round((first or time.monotonic()) - t0, 4),
             "prompt_tokens": prompt, "cached_tokens": cached, "processed": processed,
             "replayed": timings.get("prompt_replayed", 0), "completion_tokens": completion,
             "decode_tok_s": round((completion - 1) / decode_s, 2) if decode_s > 0 and
             completion and completion > 1 else None}
        return text, m


def emit(obj: dict) -> None:
    print(json.dumps(obj), flush=True)


def total(rows: list[dict]) -> dict:
    def s(key):
        return sum(r[key] or 0 for r in rows)
    decode = [r["decode_tok_s"] for r in rows if r["decode_tok_s"]]
    return {"turns": len(rows), "ttft_s": round(s("ttft_s"), 4),
            "ttft_mean_s": round(s("ttft_s") / max(1, len(rows)), 4),
            "prompt_tokens": s("prompt_tokens"), "cached_tokens": s("cached_tokens"),
            "processed": s("processed"), "replayed": s("replayed"),
            "completion_tokens": s("completion_tokens"),
            "decode_tok_s_mean": round(sum(decode) / len(decode), 2) if decode else None}


def run_turn(b: Bench, scenario: str, turn, messages: list[dict], rows: list[dict]) -> str:
    text, m = b.chat(messages)
    row = {"scenario": scenario, "turn": turn, **m}
    emit(row)
    rows.append(row)
    return text


def scenario_append(b: Bench, cfg, state: dict) -> list[dict]:
    rng = random.Random(1)
    rows: list[dict] = []
    msgs = [{"role": "system", "content": "You are a scribe. " + filler(rng, cfg.system_words)}]
    for turn in range(cfg.turns):
        msgs.append({"role": "user", "content": filler(rng, cfg.user_words)})
        answer = run_turn(b, "append", turn + 1, msgs, rows)
        if turn + 1 < cfg.turns:
            msgs.append({"role": "assistant", "content": answer})
    state["chat"] = msgs  # ends with the last user message
    return rows


def scenario_regenerate(b: Bench, cfg, state: dict) -> list[dict]:
    rows: list[dict] = []
    run_turn(b, "regenerate", 1, state["chat"], rows)
    return rows


def scenario_edit(b: Bench, cfg, state: dict) -> list[dict]:
    rows: list[dict] = []
    msgs = [dict(m) for m in state["chat"]]
    msgs[-1]["content"] = "Nay, " + msgs[-1]["content"]  # the last user message, at its start
    run_turn(b, "edit", 1, msgs, rows)
    return rows


def scenario_switch(b: Bench, cfg, state: dict) -> list[dict]:
    rng = random.Random(2)
    rows: list[dict] = []
    convs = [[{"role": "system", "content": f"Scribe {i}. " + filler(rng, cfg.system_words)}]
             for i in range(cfg.conversations)]
    for turn in range(cfg.switch_turns):
        for i, msgs in enumerate(convs):
            msgs.append({"role": "user", "content": filler(rng, cfg.user_words)})
            answer = run_turn(b, "switch", f"{i}.{turn + 1}", msgs, rows)
            msgs.append({"role": "assistant", "content": answer})
    return rows


def scenario_shared(b: Bench, cfg, state: dict) -> list[dict]:
    rng = random.Random(3)
    rows: list[dict] = []
    system = "You are a scribe. " + filler(rng, cfg.shared_system_words)
    for i in range(cfg.conversations):
        msgs = [{"role": "system", "content": system},
                {"role": "user", "content": filler(rng, 12)}]
        run_turn(b, "shared", i + 1, msgs, rows)
    return rows


def scenario_agent(b: Bench, cfg, state: dict) -> list[dict]:
    rng = random.Random(4)
    rows: list[dict] = []
    msgs = [{"role": "system", "content": "You are an agent; think, then call a tool."},
            {"role": "user", "content": "Task: " + filler(rng, cfg.user_words)}]
    for step in range(cfg.agent_steps):
        answer = run_turn(b, "agent", step + 1, msgs, rows)
        msgs.append({"role": "assistant", "content": answer})
        msgs.append({"role": "user", "content": "Tool output: " + filler(rng, cfg.tool_words)})
    return rows


SCENARIOS = {"append": scenario_append, "regenerate": scenario_regenerate,
             "edit": scenario_edit, "switch": scenario_switch, "shared": scenario_shared,
             "agent": scenario_agent}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", required=True, help="server base URL, e.g. http://127.0.0.1:8080")
    ap.add_argument("--model", default="", help="model name to send (default: /v1/models' first)")
    ap.add_argument("--api-key", default=None)
    ap.add_argument("--scenarios", default=",".join(SCENARIOS))
    ap.add_argument("--max-tokens", type=int, default=48, help="answer length per turn")
    ap.add_argument("--turns", type=int, default=10)
    ap.add_argument("--system-words", type=int, default=40)
    ap.add_argument("--user-words", type=int, default=150)
    ap.add_argument("--conversations", type=int, default=16)
    ap.add_argument("--switch-turns", type=int, default=3)
    ap.add_argument("--shared-system-words", type=int, default=800)
    ap.add_argument("--agent-steps", type=int, default=8)
    ap.add_argument("--tool-words", type=int, default=120)
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes: checks the script works")
    cfg = ap.parse_args()
    if cfg.smoke:
        cfg.max_tokens, cfg.turns, cfg.system_words, cfg.user_words = 4, 3, 8, 12
        cfg.conversations, cfg.switch_turns, cfg.shared_system_words = 3, 2, 40
        cfg.agent_steps, cfg.tool_words = 3, 12
    names = [n for n in cfg.scenarios.split(",") if n]
    for n in names:
        if n not in SCENARIOS:
            ap.error(f"unknown scenario '{n}' (known: {', '.join(SCENARIOS)})")
    if {"regenerate", "edit"} & set(names) and "append" not in names:
        names.insert(0, "append")  # they start from the append chat
    b = Bench(cfg.url, cfg.model, cfg.max_tokens, cfg.api_key, cfg.timeout)
    state: dict = {}
    all_rows = []
    for n in [n for n in SCENARIOS if n in names]:
        rows = SCENARIOS[n](b, cfg, state)
        emit({"scenario": n, "total": total(rows)})
        all_rows += rows
    emit({"scenario": "all", "total": total(all_rows), "base_url": b.url, "model": b.model})
    return 0


if __name__ == "__main__":
    sys.exit(main())
