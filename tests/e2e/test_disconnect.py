"""A client that disconnects mid-stream cancels its generation at once: the model's worker is free for the next
request long before the abandoned generation would have ended."""

from __future__ import annotations

import time

import httpx
import openai

from conftest import REQUEST_TIMEOUT_S, SMOL, hearth_models, wait_until

STORY = "Write a long story about a dragon who learns to fly."
LONG_TOKENS = 3000
# SmolLM2's end-of-sequence tokens (<|endoftext|>, <|im_end|>) banned, so the long generation cannot end early.
NO_EOS = {"0": -100, "2": -100}


def in_flight(url):
    return {m["id"]: m for m in hearth_models(url)}[SMOL].get("in_flight")


def open_long_stream(url, route, body, chunks=10):
    """Starts a long streaming request, reads `chunks` data lines, then drops the connection. Returns the
    decode rate seen (data lines per second)."""
    with httpx.Client(timeout=REQUEST_TIMEOUT_S) as c:
        with c.stream("POST", url + route, json=body, headers={"anthropic-version": "2023-06-01"}) as s:
            assert s.status_code == 200, s.read()
            seen, t0, t_first = 0, time.monotonic(), None
            for line in s.iter_lines():
                if line.startswith("data: "):
                    seen += 1
                    if t_first is None:
                        t_first = time.monotonic()
                    if seen >= chunks:
                        break
            assert seen >= chunks, "the stream ended early"
            rate = (seen - 1) / max(time.monotonic() - t_first, 1e-3)
    # Leaving both blocks closed the response and the connection.
    return rate, time.monotonic() - t0


def check_worker_free(url, oai, rate):
    remaining = LONG_TOKENS / max(rate, 1.0)  # seconds the abandoned generation would still run, roughly
    t0 = time.monotonic()
    r = oai.chat.completions.create(model=SMOL, messages=[{"role": "user", "content": "Hi"}], max_tokens=4,
                                    temperature=0)
    took = time.monotonic() - t0
    assert r.choices[0].message.content is not None
    assert took < min(10.0, remaining / 4), (
        f"the next request took {took:.1f}s; the abandoned generation would have run ~{remaining:.0f}s more: "
        f"it was not cancelled")
    assert wait_until(lambda: in_flight(url) == 0, timeout=5), f"in_flight stays {in_flight(url)}"


def test_openai_stream_disconnect_cancels(server, oai):
    oai.chat.completions.create(model=SMOL, messages=[{"role": "user", "content": "Hi"}], max_tokens=1)  # load
    body = {"model": SMOL, "messages": [{"role": "user", "content": STORY}], "max_tokens": LONG_TOKENS,
            "temperature": 0, "stream": True, "logit_bias": NO_EOS}
    rate, _ = open_long_stream(server, "/v1/chat/completions", body)
    check_worker_free(server, oai, rate)


def test_anthropic_stream_disconnect_cancels(server, oai):
    body = {"model": SMOL, "messages": [{"role": "user", "content": STORY}], "max_tokens": LONG_TOKENS,
            "temperature": 0, "stream": True}
    # Anthropic's API has no logit_bias; this prompt runs long at temperature 0 anyway, and the time limit
    # below is absolute as well as relative.
    rate, _ = open_long_stream(server, "/v1/messages", body)
    t0 = time.monotonic()
    r = oai.chat.completions.create(model=SMOL, messages=[{"role": "user", "content": "Hi"}], max_tokens=4)
    assert r.choices[0].message.content is not None
    assert time.monotonic() - t0 < 10.0, "the abandoned generation was not cancelled"
    assert wait_until(lambda: in_flight(server) == 0, timeout=5)


def test_non_stream_disconnect_cancels(server, oai):
    """A client that gives up on a non-streaming request (a timeout) cancels it too."""
    body = {"model": SMOL, "messages": [{"role": "user", "content": STORY}], "max_tokens": LONG_TOKENS,
            "temperature": 0, "logit_bias": NO_EOS}
    try:
        httpx.post(server + "/v1/chat/completions", json=body, timeout=1.0)
        raise AssertionError("a 3000-token generation answered within 1s")
    except httpx.TimeoutException:
        pass
    check_worker_free(server, oai, rate=60.0)


def test_sdk_stream_close_cancels(server):
    oai = openai.OpenAI(base_url=server + "/v1", api_key="x", max_retries=0, timeout=REQUEST_TIMEOUT_S)
    stream = oai.chat.completions.create(model=SMOL, messages=[{"role": "user", "content": STORY}],
                                         max_tokens=LONG_TOKENS, temperature=0, stream=True,
                                         logit_bias={0: -100, 2: -100})
    n = 0
    t_first = None
    for _chunk in stream:
        n += 1
        t_first = t_first or time.monotonic()
        if n >= 10:
            break
    rate = (n - 1) / max(time.monotonic() - t_first, 1e-3)
    stream.close()
    check_worker_free(server, oai, rate)
