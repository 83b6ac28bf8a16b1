#!/usr/bin/env python3
"""Bounded load test for `chimera serve` (run by tests/python/test_serve_load.py, ~20 s).

64 concurrent clients on 127.0.0.1 send a mix of requests for --duration seconds:
  * complete requests (streamed or not, greedy or seeded), whose text must be byte-identical to
    the same request run alone before the load started;
  * requests cancelled mid-stream (the socket is closed after a random number of bytes, or right
    after the request is sent);
  * malformed requests (bad JSON, wrong types, out-of-range values), which must get a 400.
It fails (exit 1) on: a crash, any 5xx other than 503 (queue full), any other unexpected status,
a completed text that differs from its solo run, requests still running or queued once the
clients stop, or cached memory beyond the cache budget. Prints a JSON summary.

  python/load_serve.py --bin build/bin/chimera            # starts its own server
  python/load_serve.py --url http://127.0.0.1:8080 --duration 300   # a longer manual run
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_util import ServeProcess  # noqa: E402

SYSTEM = "Thou art a scribe of the King James Bible."
USERS = [
    "Who made the heaven and the earth?",
    "What did God say unto Moses?",
    "Tell me of the children of Israel.",
    "Where did Abraham go?",
    "Who was the son of David?",
    "Speak of the waters of Egypt.",
]
MALFORMED = [
    b'{"messages": [',
    b'{"messages": "hi"}',
    b'{"messages": [{"role": "user", "content": 5}]}',
    b'{"messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}',
    b'{"messages": [{"role": "user", "content": "hi"}], "n": 1000}',
    b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}',
    b'{"messages": [{"role": "wizard", "content": "hi"}]}',
    b"[" * 5000,
    b"\xff\xfe\x00garbage",
    b"",
]


def specs() -> list[dict]:
    out = []
    for i, user in enumerate(USERS):
        body = {"messages": [{"role": "system", "content": SYSTEM},
                             {"role": "user", "content": user}],
                "max_tokens": 6 + i % 4}
        out.append(dict(body, temperature=0))
        out.append(dict(body, temperature=0.8, seed=1000 + i))
    return out


def post(url: str, body: dict, stream: bool, timeout: float = 120) -> tuple[int, str]:
    """(status, text of choice 0); text is "" unless 200."""
    r = requests.post(url + "/v1/chat/completions", json=dict(body, stream=stream),
                      stream=stream, timeout=timeout)
    if r.status_code != 200:
        r.close()
        return r.status_code, ""
    if not stream:
        return 200, r.json()["choices"][0]["message"]["content"]
    text = ""
    for line in r.iter_lines():
        if not line.startswith(b"data: ") or line == b"data: [DONE]":
            continue
        event = json.loads(line[6:])
        if "error" in event:
            return 500, ""
        for choice in event.get("choices", []):
            text += choice["delta"].get("content") or ""
    return 200, text


def raw_request(url: str, body: bytes) -> socket.socket:
    host, port = url.split("//")[1].split(":")
    sock = socket.create_connection((host, int(port)), timeout=60)
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: "
                 b"application/json\r\nContent-Length: " + str(len(body)).encode() +
                 b"\r\n\r\n" + body)
    return sock


class Load:
    def __init__(self, url: str, clients: int, duration: float, seed: int):
        self.url, self.clients, self.duration = url, clients, duration
        self.rng_seed = seed
        self.specs = specs()
        self.solo: list[str] = []
        self.lock = threading.Lock()
        self.counts: Counter = Counter()
        self.failures: list[str] = []

    def fail(self, what: str) -> None:
        with self.lock:
            self.failures.append(what)

    def count(self, key: str) -> None:
        with self.lock:
            self.counts[key] += 1

    def status(self, status: int, expected: tuple[int, ...], what: str) -> None:
        self.count(f"http_{status}")
        if status not in expected:
            self.fail(f"{what}: HTTP {status}")

    def retrying(self, call):
        """`call()`, once more if the connection was reset before any answer came: under a
        heavily loaded machine a client thread can stall between connect and send for longer
        than the server's wait for a connection's first request (cpp-httplib: 5 s), and the
        server then closes it, as it should. Counted, and bounded by the test."""
        try:
            return call()
        except requests.ConnectionError as e:
            if "Connection aborted" not in str(e):
                raise
            self.count("connection_retries")
            return call()

    def client(self, index: int, deadline: float) -> None:
        rng = random.Random(self.rng_seed * 1000 + index)
        while time.monotonic() < deadline:
            action = rng.random()
            try:
                if action < 0.6:
                    k = rng.randrange(len(self.specs))
                    stream = rng.random() < 0.5
                    status, text = self.retrying(lambda: post(self.url, self.specs[k], stream))
                    self.status(status, (200, 503), "request")
                    if status == 200:
                        self.count("completed")
                        if text != self.solo[k]:
                            self.fail(f"spec {k}: {text!r} differs from the solo run "
                                      f"{self.solo[k]!r}")
                elif action < 0.8:
                    k = rng.randrange(len(self.specs))
                    body = dict(self.specs[k], stream=True, max_tokens=200, ignore_eos=True)
                    sock = raw_request(self.url, json.dumps(body).encode())
                    want = rng.choice([0, 200, 1000, 3000])
                    got = 0
                    while got < want:
                        chunk = sock.recv(4096)
                        if not chunk:
                            break
                        got += len(chunk)
                    sock.close()
                    self.count("cancelled")
                else:
                    body = rng.choice(MALFORMED)
                    r = self.retrying(lambda: requests.post(
                        self.url + "/v1/chat/completions", data=body, timeout=60,
                        headers={"Content-Type": "application/json"}))
                    self.status(r.status_code, (400,), f"malformed {body[:40]!r}")
                    if r.status_code == 400 and "error" not in r.json():
                        self.fail("a 400 without an error object")
            except (requests.RequestException, OSError) as e:
                self.fail(f"client {index}: {type(e).__name__}: {e}")

    def run(self) -> dict:
        # Solo references, one request at a time.
        for spec in self.specs:
            status, text = post(self.url, spec, stream=False)
            if status != 200:
                raise SystemExit(f"solo run failed with HTTP {status}")
            self.solo.append(text)
        start = time.monotonic()
        deadline = start + self.duration
        threads = [threading.Thread(target=self.client, args=(i, deadline))
                   for i in range(self.clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - start

        # Quiescence: nothing running or queued (cancelled requests freed), memory back to the
        # baseline plus what the prefix cache keeps, within its budget.
        settle = time.monotonic() + 10
        while True:
            m = metrics(self.url)
            if m["chimera_requests_running"] == 0 and m["chimera_requests_queued"] == 0:
                break
            if time.monotonic() > settle:
                self.fail(f"still running/queued 10 s after the load: {m}")
                break
            time.sleep(0.1)
        # The cache info is refreshed every engine step: give the last step time to show.
        settle = time.monotonic() + 3
        while True:
            cache = requests.get(self.url + "/v1/cache", timeout=10).json()
            held = cache["memory_bytes"] - cache["memory_baseline_bytes"]
            if held == cache["bytes"]:
                break
            if time.monotonic() > settle:
                self.fail(f"memory beyond the baseline ({held} B) is not all the cache's "
                          f"({cache['bytes']} B)")
                break
            time.sleep(0.1)
        if cache["bytes"] > cache["budget_bytes"]:
            self.fail(f"cache holds {cache['bytes']} B over its budget {cache['budget_bytes']}")
        if requests.get(self.url + "/health", timeout=10).status_code != 200:
            self.fail("unhealthy after the load")
        # Still exact after all that.
        for k, spec in enumerate(self.specs):
            status, text = post(self.url, spec, stream=False)
            if status != 200 or text != self.solo[k]:
                self.fail(f"spec {k} after the load: HTTP {status}, {text!r}")
        return {"clients": self.clients, "seconds": round(elapsed, 1), **dict(self.counts),
                "cache_entries": cache["n_entries"], "cache_bytes": cache["bytes"],
                "cache_budget_bytes": cache["budget_bytes"],
                "failures": self.failures[:20], "n_failures": len(self.failures)}


def metrics(url: str) -> dict[str, float]:
    out = {}
    for line in requests.get(url + "/metrics", timeout=10).text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--bin", help="chimera binary: start a server for the run")
    src.add_argument("--url", help="an already running server, e.g. http://127.0.0.1:8080")
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--duration", type=float, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--server-args", default="-np 4 -c 1024 --mem 512M --cache-mem 64M "
                    "--queue 32 -q", help="flags for the started server")
    args = ap.parse_args()
    server = None
    url = args.url
    if args.bin:
        server = ServeProcess(args.bin, *args.server_args.split())
        url = server.url
    log = ""
    try:
        result = Load(url, args.clients, args.duration, args.seed).run()
    finally:
        if server:
            code = server.stop()
            log = server.output()
            os.unlink(server.log.name)
            if code != 0:
                print(log, file=sys.stderr)
                print(f"server exited {code}", file=sys.stderr)
                return 1
    print(json.dumps(result, indent=1))
    if result["n_failures"] and log:  # what the server said, for a failure seen once
        print(f"server log (tail):\n{log[-6000:]}", file=sys.stderr)
    return 1 if result["n_failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
