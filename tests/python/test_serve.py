"""`chimera serve` end to end: the real binary on a loopback port, driven with the official
`openai` client for the OpenAI routes and `requests` for the rest. Expected values come from the
server's own token lists (/apply-template, /tokenize) or from solo runs, never hard-coded."""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
import pytest
import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "python"))
from serve_util import ServeProcess  # noqa: E402

SYSTEM = "Thou art a scribe, and thou answerest in the words of the King James Bible."
PROMPTS = [
    "Who made the heaven and the earth?",
    "What did God say unto Moses?",
    "Tell me of the children of Israel.",
    "And what was upon the face of the deep?",
    "Where did Abraham go?",
    "What is the name of the LORD?",
    "Who was the son of David?",
    "Speak of the waters of Egypt.",
]
# Small everywhere: these tests check behaviour, not speed.
SERVER_ARGS = ["-np", "4", "-c", "1024", "--mem", "512M", "--cache-mem", "128M", "-q"]


def msgs(user: str, system: str = SYSTEM) -> list[dict]:
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


@pytest.fixture(scope="module")
def server(chimera_bin):
    with ServeProcess(chimera_bin, *SERVER_ARGS) as s:
        yield s


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0)


EXTENSIONS = ("top_k", "min_p", "repeat_penalty", "ignore_eos")  # not in the openai signature


def chat_text(client, user, system=SYSTEM, **kw):
    kw.setdefault("max_tokens", 12)
    kw.setdefault("temperature", 0)
    extra = {k: kw.pop(k) for k in EXTENSIONS if k in kw}
    if extra:
        kw["extra_body"] = extra
    r = client.chat.completions.create(model="default", messages=msgs(user, system), **kw)
    return r


def template(server, messages) -> dict:
    r = requests.post(server.url + "/apply-template", json={"messages": messages}, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


# ---------------------------------------------------------------------------------- chat


def test_chat_non_streaming_with_usage_and_timings(server, client):
    r = chat_text(client, PROMPTS[0], max_tokens=10)
    tpl = template(server, msgs(PROMPTS[0]))
    assert r.object == "chat.completion"
    assert r.choices[0].message.role == "assistant"
    assert isinstance(r.choices[0].message.content, str) and r.choices[0].message.content
    assert r.choices[0].finish_reason in ("length", "stop")
    assert r.usage.prompt_tokens == len(tpl["tokens"])
    assert 1 <= r.usage.completion_tokens <= 10
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    assert r.usage.prompt_tokens_details.cached_tokens >= 0
    extra = r.model_extra
    t = extra["timings"]
    assert t["prompt_reused"] == r.usage.prompt_tokens_details.cached_tokens
    assert t["predicted_n"] == r.usage.completion_tokens
    for key in ("prompt_processed", "prompt_replayed", "prompt_ms", "predicted_ms"):
        assert t[key] >= 0
    assert set(extra["cache"]) == {"matched", "reused", "reason"}


def test_chat_streaming_matches_non_streaming(server, client):
    full = chat_text(client, PROMPTS[1], max_tokens=12).choices[0].message.content
    stream = client.chat.completions.create(
        model="default", messages=msgs(PROMPTS[1]), max_tokens=12, temperature=0, stream=True,
        stream_options={"include_usage": True})
    chunks = list(stream)
    content_chunks = [c for c in chunks if c.choices]
    assert content_chunks[0].choices[0].delta.role == "assistant"
    assert all(c.choices[0].delta.role is None for c in content_chunks[1:])
    # finish_reason only on the last choice chunk, then one usage chunk without choices.
    assert [c.choices[0].finish_reason is not None for c in content_chunks] == (
        [False] * (len(content_chunks) - 1) + [True])
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens >= 1
    text = "".join(c.choices[0].delta.content or "" for c in content_chunks)
    assert text == full

    # The raw stream: SSE events, ending with [DONE].
    r = requests.post(server.base_url + "/chat/completions", stream=True, timeout=60, json={
        "messages": msgs(PROMPTS[1]), "max_tokens": 4, "temperature": 0, "stream": True})
    assert r.headers["Content-Type"].startswith("text/event-stream")
    events = [line for line in r.iter_lines(decode_unicode=True) if line]
    assert events[-1] == "data: [DONE]"
    assert all(e.startswith("data: ") or e.startswith(":") for e in events)


def test_n2_forks_choices_seeded_like_single_requests(client):
    kw = dict(max_tokens=10, temperature=0.9, seed=1234)
    both = chat_text(client, PROMPTS[2], n=2, **kw)
    assert [c.index for c in both.choices] == [0, 1]
    # Choice i samples with seed + i, so it equals a single request with that seed.
    first = chat_text(client, PROMPTS[2], **kw).choices[0].message.content
    kw["seed"] = 1235
    second = chat_text(client, PROMPTS[2], **kw).choices[0].message.content
    assert both.choices[0].message.content == first
    assert both.choices[1].message.content == second
    assert first != second  # different seeds, different samples


def test_n2_streaming(client):
    kw = dict(max_tokens=8, temperature=0.9, seed=555)
    whole = chat_text(client, PROMPTS[2], n=2, **kw)
    texts, roles, finishes = ["", ""], [[], []], [[], []]
    for chunk in client.chat.completions.create(model="default", messages=msgs(PROMPTS[2]), n=2,
                                                stream=True, **kw):
        for c in chunk.choices:
            texts[c.index] += c.delta.content or ""
            roles[c.index].append(c.delta.role)
            finishes[c.index].append(c.finish_reason)
    assert texts == [c.message.content for c in whole.choices]
    for i in range(2):
        assert roles[i][0] == "assistant" and not any(roles[i][1:])
        assert finishes[i][-1] == whole.choices[i].finish_reason
        assert not any(finishes[i][:-1])


def test_stop_strings(client):
    full = chat_text(client, PROMPTS[3], max_tokens=24).choices[0].message.content
    words = full.split(" ")
    assert len(words) >= 4, full
    stop = " " + words[3]  # the 4th word, with its leading space
    cut = full[: full.index(stop)]
    r = chat_text(client, PROMPTS[3], max_tokens=24, stop=[stop, "\u2603never"])
    assert r.choices[0].message.content == cut
    assert r.choices[0].finish_reason == "stop"
    r = chat_text(client, PROMPTS[3], max_tokens=24, stop=stop)  # a single string
    assert r.choices[0].message.content == cut


def test_seed_reproducibility(client):
    kw = dict(max_tokens=16, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0)
    a = chat_text(client, PROMPTS[4], seed=77, **kw).choices[0].message.content
    b = chat_text(client, PROMPTS[4], seed=77, **kw).choices[0].message.content
    c = chat_text(client, PROMPTS[4], seed=78, **kw).choices[0].message.content
    assert a == b
    assert a != c


def test_sampling_fields_reach_the_sampler(client):
    greedy = chat_text(client, PROMPTS[0], max_tokens=24).choices[0].message.content
    # Each truncation alone leaves only the most likely token: sampling at temperature 1 then
    # gives the greedy text, whatever the seed.
    for kw in (dict(top_k=1), dict(top_p=1e-6, top_k=0), dict(min_p=1.0, top_k=0)):
        r = chat_text(client, PROMPTS[0], max_tokens=24, temperature=1.0, seed=99, **kw)
        assert r.choices[0].message.content == greedy, kw
    # Penalties change what greedy decoding picks (this model repeats itself a lot).
    for kw in (dict(frequency_penalty=2.0), dict(presence_penalty=2.0),
               dict(repeat_penalty=3.0)):
        r = chat_text(client, PROMPTS[0], max_tokens=24, **kw)
        assert r.choices[0].message.content != greedy, kw


def test_logprobs(server, client):
    r = chat_text(client, PROMPTS[5], max_tokens=8, logprobs=True, top_logprobs=3)
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens
    joined = b""
    for item in content:
        assert item.logprob <= 0
        assert len(item.top_logprobs) == 3
        tops = [t.logprob for t in item.top_logprobs]
        assert tops == sorted(tops, reverse=True)
        # Greedy: the chosen token is the most likely one.
        assert item.top_logprobs[0].token == item.token
        assert item.model_extra["id"] == item.top_logprobs[0].model_extra["id"]
        assert item.top_logprobs[0].logprob == pytest.approx(item.logprob, abs=0)
        joined += bytes(item.bytes)
    if r.choices[0].finish_reason == "length":
        assert joined.decode("utf-8", errors="replace") == r.choices[0].message.content
    # The token ids (an extension, as in llama-server) detokenize to the text.
    ids = [item.model_extra["id"] for item in content]
    text = requests.post(server.url + "/detokenize", json={"tokens": ids},
                         timeout=10).json()["content"]
    if r.choices[0].finish_reason == "length":
        assert text == r.choices[0].message.content
    # Without logprobs there are none.
    assert chat_text(client, PROMPTS[5], max_tokens=2).choices[0].logprobs is None


def test_text_completions(server, client):
    r = client.completions.create(model="default", prompt="And God said", max_tokens=6,
                                  temperature=0)
    assert r.object == "text_completion" and r.choices[0].text
    ids = requests.post(server.url + "/tokenize", json={"content": "And God said"},
                        timeout=10).json()["tokens"]
    assert r.usage.prompt_tokens == len(ids)
    same = client.completions.create(model="default", prompt=ids, max_tokens=6, temperature=0)
    assert same.choices[0].text == r.choices[0].text
    back = requests.post(server.url + "/detokenize", json={"tokens": ids}, timeout=10).json()
    assert back["content"] == "And God said"


def test_models_health_metrics_cache(server):
    models = requests.get(server.base_url + "/models", timeout=10).json()
    assert models["object"] == "list" and models["data"][0]["id"]
    assert requests.get(server.url + "/health", timeout=10).json() == {"status": "ok"}
    m = server.metrics()
    for name in ("chimera_requests_total", "chimera_prompt_tokens_processed_total",
                 "chimera_prompt_tokens_cached_total", "chimera_prompt_tokens_replayed_total",
                 "chimera_generated_tokens_total", "chimera_time_to_first_token_seconds_count",
                 "chimera_inter_token_latency_seconds_count", "chimera_requests_running",
                 "chimera_requests_queued", "chimera_cache_bytes", "chimera_cache_entries",
                 "chimera_memory_bytes"):
        assert name in m, name
    assert m['chimera_time_to_first_token_seconds_bucket{le="+Inf"}'] == (
        m["chimera_time_to_first_token_seconds_count"])
    cache = requests.get(server.base_url + "/cache", timeout=10).json()
    for key in ("n_entries", "tokens", "bytes", "hits"):
        assert key in cache


# ---------------------------------------------------------------------------------- errors


def test_context_overflow_is_a_400_with_the_numbers(server, client):
    tpl = template(server, msgs(PROMPTS[0]))
    r = requests.post(server.base_url + "/chat/completions", timeout=10,
                      json={"messages": msgs(PROMPTS[0]), "max_tokens": 1020})
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["code"] == "context_length_exceeded"
    assert err["n_prompt_tokens"] == len(tpl["tokens"])
    assert err["n_ctx"] == 1024
    assert str(len(tpl["tokens"])) in err["message"] and "1024" in err["message"]
    with pytest.raises(openai.BadRequestError):
        chat_text(client, PROMPTS[0], max_tokens=1020)
    long_prompt = " ".join(["And God said"] * 400)
    r = requests.post(server.base_url + "/completions", timeout=10, json={"prompt": long_prompt})
    assert r.status_code == 400 and r.json()["error"]["n_ctx"] == 1024


@pytest.mark.parametrize("body,field", [
    ('{"messages": [', None),
    ('{"messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}', "temperature"),
    ('{"messages": [{"role": "user", "content": 5}]}', "messages[0].content"),
    ('{"messages": "hello"}', "messages"),
    ('{"messages": [{"role": "user", "content": "hi"}], "max_tokens": -3}', "max_tokens"),
    ('{"messages": [{"role": "user", "content": "hi"}], "stop": [1]}', "stop[0]"),
    ('{"messages": [{"role": "user", "content": "hi"}], "top_p": 7}', "top_p"),
    ('[1, 2, 3]', None),
])
def test_bad_requests_are_400s_naming_the_field(server, body, field):
    r = requests.post(server.base_url + "/chat/completions", data=body, timeout=10,
                      headers={"Content-Type": "application/json"})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert set(err) >= {"message", "type", "code"}
    assert err["type"] == "invalid_request_error"
    if field is None:
        assert "JSON" in err["message"]
    else:
        assert err["param"] == field and field in err["message"]


def test_unknown_route_is_a_404(server):
    r = requests.get(server.url + "/v1/nothing", timeout=10)
    assert r.status_code == 404
    assert "/v1/nothing" in r.json()["error"]["message"]


def test_api_key_and_body_limit(chimera_bin):
    with ServeProcess(chimera_bin, *SERVER_ARGS, "--api-key", "s3cret", "--max-body",
                      "64K") as s:
        url = s.base_url + "/chat/completions"
        body = {"messages": msgs(PROMPTS[0]), "max_tokens": 2}
        assert requests.post(url, json=body, timeout=10).status_code == 401
        bad = requests.post(url, json=body, timeout=10, headers={"Authorization": "Bearer nope"})
        assert bad.status_code == 401 and bad.json()["error"]["code"] == "invalid_api_key"
        ok = requests.post(url, json=body, timeout=30, headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200
        assert requests.get(s.url + "/health", timeout=10).status_code == 200
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=s.base_url, api_key="wrong", max_retries=0).models.list()
        good = openai.OpenAI(base_url=s.base_url, api_key="s3cret", max_retries=0)
        assert good.models.list().data
        big = {"messages": msgs("a" * 100_000)}
        r = requests.post(url, json=big, timeout=10, headers={"Authorization": "Bearer s3cret"})
        assert r.status_code == 413
        assert r.json()["error"]["code"] == "request_too_large"


# ---------------------------------------------------------------------------------- concurrency


def stream_text(base_url: str, user: str, max_tokens: int = 16, **kw) -> tuple[str, str]:
    c = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0)
    text, finish = "", None
    for chunk in c.chat.completions.create(model="default", messages=msgs(user), stream=True,
                                           max_tokens=max_tokens, temperature=0, **kw):
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            finish = chunk.choices[0].finish_reason or finish
    return text, finish


def test_eight_concurrent_streams_on_four_slots(server, client):
    solo = [chat_text(client, p, max_tokens=16).choices[0].message.content for p in PROMPTS]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda p: stream_text(server.base_url, p), PROMPTS))
    assert [t for t, _ in results] == solo
    assert all(f in ("length", "stop") for _, f in results)


def open_raw_stream(url: str, body: dict) -> socket.socket:
    host, port = url.split("//")[1].split(":")
    sock = socket.create_connection((host, int(port)), timeout=30)
    data = json.dumps(body).encode()
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: "
                 b"application/json\r\nContent-Length: " + str(len(data)).encode() +
                 b"\r\n\r\n" + data)
    return sock


@pytest.mark.parametrize("stream", [True, False], ids=["streaming", "non_streaming"])
def test_client_disconnect_frees_the_sequence(server, stream):
    """A client that goes away mid-request is noticed (a non-streaming one too, which is sent
    nothing until the end) and its sequence freed within a second."""
    before = server.metrics()
    sock = open_raw_stream(server.url, {"messages": msgs(PROMPTS[6]), "stream": stream,
                                        "max_tokens": 800, "ignore_eos": True})
    if stream:
        received = b""
        while received.count(b"data: ") < 3:
            received += sock.recv(4096)
    else:
        deadline = time.monotonic() + 30
        while server.metrics()["chimera_generated_tokens_total"] < \
                before["chimera_generated_tokens_total"] + 3:
            assert time.monotonic() < deadline, "the request never started generating"
            time.sleep(0.02)
    assert server.metrics()["chimera_requests_running"] >= 1
    sock.close()
    closed = time.monotonic()
    while server.metrics()["chimera_requests_running"] > 0:
        assert time.monotonic() - closed < 1.0, "the sequence was not freed within a second"
        time.sleep(0.02)
    after = server.metrics()
    # Cancelled, not finished: 800 tokens were asked for.
    assert after["chimera_requests_cancelled_total"] == before["chimera_requests_cancelled_total"] + 1
    assert after["chimera_generated_tokens_total"] < before["chimera_generated_tokens_total"] + 800


def test_a_request_whose_client_left_before_it_was_read_is_not_run(chimera_bin):
    """One HTTP worker: a request that waited for it behind a stream, and whose client left
    meanwhile, is answered 499 without reaching the engine."""
    with ServeProcess(chimera_bin, *SERVER_ARGS, "--http-threads", "1") as s:
        before = s.metrics()
        busy = open_raw_stream(s.url, {"messages": msgs(PROMPTS[1]), "stream": True,
                                       "max_tokens": 800, "ignore_eos": True})
        received = b""
        while received.count(b"data: ") < 3:
            received += busy.recv(4096)
        gone = open_raw_stream(s.url, {"messages": msgs(PROMPTS[2]), "max_tokens": 800,
                                       "ignore_eos": True})
        gone.close()
        busy.close()  # frees the worker, which then reads the waiting request
        deadline = time.monotonic() + 5
        while (after := s.metrics())["chimera_requests_running"] > 0:  # served after it
            assert time.monotonic() < deadline, "the stream was not cancelled"
            time.sleep(0.02)
        assert after["chimera_requests_total"] == before["chimera_requests_total"] + 1
        assert after["chimera_requests_cancelled_total"] == \
            before["chimera_requests_cancelled_total"] + 1
        assert after.get('chimera_http_responses_total{code="499"}', 0) == 1


# ---------------------------------------------------------------------------------- prefix cache


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def snapshot_points(tokens: list[int], bounds: list[int]) -> list[int]:
    """Where a request's prompt leaves snapshots: its message boundaries and its prompt's end
    (with its last token's logits)."""
    return [b for b in bounds if b < len(tokens)] + [len(tokens)]


def expected_reuse(seen: list[tuple[list[int], list[int]]], tokens: list[int]) -> tuple[int, int]:
    """(tokens reused without compute, tokens matched) for a prompt after the prompts `seen`:
    the whole prompt when an earlier one was the same (its logits were kept at its end), else
    the deepest snapshot at or before the divergence, short of the last prompt token."""
    expected, matched = 0, 0
    for prev, prev_bounds in seen:
        lcp = common_prefix(prev, tokens)
        matched = max(matched, lcp)
        if lcp == len(tokens) == len(prev):
            expected = len(tokens)
            continue
        limit = min(lcp, len(tokens) - 1)
        expected = max([expected] + [p for p in snapshot_points(prev, prev_bounds) if p <= limit])
    return expected, matched


def test_cached_tokens_are_exact(chimera_bin):
    """One system message, four user messages: the 2nd repeats the 1st, the 3rd changes its last
    word, the 4th an early word. A request reuses, without compute, the longest state the cache
    holds exactly: the whole prompt when it was seen before (it samples from the logits kept at
    its end), else a snapshot at or before the divergence (message boundaries), short of the
    last prompt token (its logits are needed)."""
    first = "And the earth was without form, and void; and darkness was upon the deep."
    users = [first, first, first.replace("deep.", "waters."), first.replace("earth", "land")]
    with ServeProcess(chimera_bin, *SERVER_ARGS) as s:
        c = openai.OpenAI(base_url=s.base_url, api_key="unused", max_retries=0)
        seen = []  # (tokens, boundaries) of earlier prompts
        for k, user in enumerate(users):
            tpl = template(s, msgs(user))
            tokens, bounds = tpl["tokens"], tpl["boundaries"]
            assert len(bounds) == 2 and bounds[-1] < len(tokens)
            # Tokenizing the rendered prompt gives the same tokens.
            assert requests.post(s.url + "/tokenize", json={"content": tpl["prompt"]},
                                 timeout=10).json()["tokens"] == tokens
            expected, matched = expected_reuse(seen, tokens)
            r = chat_text(c, user, max_tokens=4)
            got = r.usage.prompt_tokens_details.cached_tokens
            assert got == expected, (k, got, expected, r.model_extra["cache"])
            assert r.model_extra["cache"]["matched"] == matched
            t = r.model_extra["timings"]
            assert t["prompt_reused"] == expected
            assert t["prompt_processed"] + t["prompt_replayed"] == len(tokens) - expected
            assert t["prompt_logits_reused"] == (expected == len(tokens))
            seen.append((tokens, bounds))
        # The scenario exercises each case: cold, a full repeat, late and early divergence.
        assert [len(x[0]) for x in seen][0] > 0


def test_regenerate_runs_nothing_and_matches_a_cold_server(chimera_bin):
    """Regenerating the last answer of a conversation (the same messages again), greedy and
    seeded, streamed and not: cached_tokens is the whole prompt (from the template's token
    list), nothing is processed or replayed, and the text is the text a cold server gives."""
    chat = [{"role": "system", "content": SYSTEM},
            {"role": "user", "content": PROMPTS[2]},
            {"role": "assistant", "content": "And the LORD spake unto Moses."},
            {"role": "user", "content": PROMPTS[3]}]
    specs = [dict(max_tokens=10, temperature=0), dict(max_tokens=10, temperature=0.9, seed=77),
             dict(max_tokens=10, temperature=0.9, seed=78, stream=True)]

    def ask(c, spec):
        spec = dict(spec)
        if spec.get("stream"):
            spec["stream_options"] = {"include_usage": True}
            text, usage, extra = "", None, {}
            for ch in c.chat.completions.create(model="default", messages=chat, **spec):
                if ch.choices:
                    text += ch.choices[0].delta.content or ""
                if ch.usage:
                    usage = ch.usage
                extra.update({k: v for k, v in (ch.model_extra or {}).items()
                              if k in ("timings", "cache")})
            return text, usage, extra
        r = c.chat.completions.create(model="default", messages=chat, **spec)
        return r.choices[0].message.content, r.usage, r.model_extra

    regen = {}
    with ServeProcess(chimera_bin, *SERVER_ARGS) as s:
        c = openai.OpenAI(base_url=s.base_url, api_key="unused", max_retries=0)
        tpl = template(s, chat)
        tokens = tpl["tokens"]
        first_text, first_usage, first_extra = ask(c, specs[0])
        assert first_usage.prompt_tokens_details.cached_tokens == 0
        assert first_extra["timings"]["prompt_processed"] == len(tokens)
        for spec in specs + [specs[0]]:
            text, usage, extra = ask(c, spec)
            assert usage.prompt_tokens == len(tokens)
            assert usage.prompt_tokens_details.cached_tokens == len(tokens), extra
            t = extra["timings"]
            assert t["prompt_processed"] == 0 and t["prompt_replayed"] == 0, t
            assert t["prompt_logits_reused"] is True
            assert extra["cache"]["matched"] == len(tokens) and extra["cache"]["reason"] == ""
            regen.setdefault(json.dumps(spec, sort_keys=True), []).append(text)
        assert regen[json.dumps(specs[0], sort_keys=True)] == [first_text, first_text]
    # A server whose cache keeps nothing (a 1-byte budget): every request runs cold, same bytes.
    i = SERVER_ARGS.index("--cache-mem")
    cold_args = [*SERVER_ARGS[:i + 1], "1", *SERVER_ARGS[i + 2:]]
    with ServeProcess(chimera_bin, *cold_args) as s:
        c = openai.OpenAI(base_url=s.base_url, api_key="unused", max_retries=0)
        for spec in specs:
            text, usage, _ = ask(c, spec)
            assert usage.prompt_tokens_details.cached_tokens == 0
            assert regen[json.dumps(spec, sort_keys=True)][0] == text, spec


# ---------------------------------------------------------------------------------- exactness


REQUESTS = [
    dict(user=PROMPTS[0], max_tokens=20, temperature=0),
    dict(user=PROMPTS[1], max_tokens=20, temperature=0.9, seed=4242),
]


def run_request(base_url: str, spec: dict) -> tuple[str, int]:
    c = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0)
    spec = dict(spec)
    user = spec.pop("user")
    r = c.chat.completions.create(model="default", messages=msgs(user), **spec)
    return r.choices[0].message.content, r.usage.prompt_tokens_details.cached_tokens


def test_output_is_identical_alone_concurrent_cached_and_after_restart(chimera_bin, tmp_path):
    cache_file = tmp_path / "prefix.cache"
    args = [*SERVER_ARGS, "--cache-file", str(cache_file)]
    with ServeProcess(chimera_bin, *args) as s:
        cold = [run_request(s.base_url, spec) for spec in REQUESTS]
        assert all(cached == 0 or i > 0 for i, (_, cached) in enumerate(cold))
        hit = [run_request(s.base_url, spec) for spec in REQUESTS]
        assert [t for t, _ in hit] == [t for t, _ in cold]
        assert all(cached > 0 for _, cached in hit)
        # Among 15 concurrent others (different prompts, lengths and sampling).
        others = [dict(user=" ".join(PROMPTS[i % 8: i % 8 + 1 + i % 3]),
                       max_tokens=4 + i % 6, temperature=0.5, seed=i) for i in range(15)]
        for target in REQUESTS:
            with ThreadPoolExecutor(16) as pool:
                futures = [pool.submit(run_request, s.base_url, o) for o in others[:8]]
                mine = pool.submit(run_request, s.base_url, target)
                futures += [pool.submit(run_request, s.base_url, o) for o in others[8:]]
                assert mine.result()[0] == cold[REQUESTS.index(target)][0]
                for f in futures:
                    f.result()
    assert cache_file.is_file()
    with ServeProcess(chimera_bin, *args) as s:
        after = [run_request(s.base_url, spec) for spec in REQUESTS]
        assert [t for t, _ in after] == [t for t, _ in cold]
        assert all(cached > 0 for _, cached in after), "the cache file was not loaded"


# ---------------------------------------------------------------------------------- lifecycle


def test_full_queue_is_a_503(chimera_bin):
    with ServeProcess(chimera_bin, "-np", "1", "--queue", "1", "-c", "1024", "--mem", "256M",
                      "--cache-mem", "64M", "-q") as s:
        body = {"messages": msgs(PROMPTS[0]), "max_tokens": 40, "ignore_eos": True}

        def post(_):
            return requests.post(s.base_url + "/chat/completions", json=body, timeout=120)

        with ThreadPoolExecutor(8) as pool:
            responses = list(pool.map(post, range(8)))
        codes = sorted(r.status_code for r in responses)
        assert set(codes) <= {200, 503} and 200 in codes and 503 in codes, codes
        busy = next(r for r in responses if r.status_code == 503)
        assert busy.json()["error"]["code"] == "queue_full"
        assert busy.headers["Retry-After"] == "1"


def test_sigint_ends_streams_and_exits_cleanly(chimera_bin, tmp_path):
    cache_file = tmp_path / "c.bin"
    s = ServeProcess(chimera_bin, *SERVER_ARGS, "--cache-file", str(cache_file))
    try:
        r = requests.post(s.base_url + "/chat/completions", stream=True, timeout=60, json={
            "messages": msgs(PROMPTS[7]), "stream": True, "max_tokens": 900, "ignore_eos": True})
        lines = r.iter_lines()
        assert next(line for line in lines if line.startswith(b"data: "))
        s.proc.send_signal(2)  # SIGINT
        rest = [line for line in lines if line.startswith(b"data: ")]
        assert rest[-1] == b"data: [DONE]"
        finishes = [json.loads(x[6:])["choices"][0]["finish_reason"] for x in rest[:-1]
                    if json.loads(x[6:])["choices"]]
        assert finishes[-1] == "cancelled"
        assert s.proc.wait(timeout=30) == 0
        assert cache_file.is_file()  # the cache was saved on the way out
        assert "stopping" in s.output()
    finally:
        s.kill()


def test_a_port_in_use_is_an_error(server, chimera):
    port = server.url.rsplit(":", 1)[1]
    proc = chimera.run("serve", "--port", port, "-q", check=False, timeout=60)
    assert proc.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in proc.stderr
