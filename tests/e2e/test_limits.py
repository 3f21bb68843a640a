"""Limits, on a server started with --body-limit 1K, --queue-depth 1, --max-seqs 1 and a memory budget that fits
SmolLM2 but not Gemma 3: 413 past the body limit, 429 when the model's queue is full, 507 for a model that cannot fit."""

from __future__ import annotations

import json
import threading
import time

import anthropic
import httpx
import openai
import pytest

from conftest import (GEMMA, REQUEST_TIMEOUT_S, SMOL, Server, assert_anthropic_error, assert_openai_error,
                      both_models, hearth_models, wait_until)

STORY = "Write a long story about a dragon who learns to fly."


@pytest.fixture(scope="module")
def limits_server(model_sizes):
    small, large = sorted([model_sizes[SMOL], model_sizes[GEMMA]])
    assert model_sizes[SMOL] == small, "this module assumes SmolLM2 is the smaller model"
    budget = (small + large) // 2
    s = Server("limits", both_models("--memory-budget", str(budget), "--body-limit", "1K",
                                     "--queue-depth", "1", "--max-seqs", "1")).start()
    yield s.url
    s.stop_and_check()


def oai_for(url):
    return openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0, timeout=REQUEST_TIMEOUT_S)


def anth_for(url):
    return anthropic.Anthropic(base_url=url, api_key="x", max_retries=0, timeout=REQUEST_TIMEOUT_S)


def big_body(route: str) -> bytes:
    padding = "x" * 2048
    if route == "/v1/completions":
        body = {"model": SMOL, "prompt": padding, "max_tokens": 1}
    else:
        body = {"model": SMOL, "max_tokens": 1, "messages": [{"role": "user", "content": padding}]}
    raw = json.dumps(body).encode()
    assert 2048 < len(raw) < 4096
    return raw


def test_body_over_limit_is_413(limits_server):
    url = limits_server
    for route in ("/v1/chat/completions", "/v1/completions"):
        r = httpx.post(url + route, content=big_body(route), headers={"content-type": "application/json"},
                       timeout=30)
        assert_openai_error(r, 413)
    r = httpx.post(url + "/v1/messages", content=big_body("/v1/messages"),
                   headers={"content-type": "application/json", "anthropic-version": "2023-06-01"}, timeout=30)
    assert_anthropic_error(r, 413)
    # The SDKs see the status.
    with pytest.raises(openai.APIStatusError) as e:
        oai_for(url).chat.completions.create(model=SMOL, max_tokens=1,
                                             messages=[{"role": "user", "content": "x" * 2048}])
    assert e.value.status_code == 413
    with pytest.raises(anthropic.APIStatusError) as e:
        anth_for(url).messages.create(model=SMOL, max_tokens=1, messages=[{"role": "user", "content": "x" * 2048}])
    assert e.value.status_code == 413
    # A body under the limit is served.
    r = oai_for(url).chat.completions.create(model=SMOL, max_tokens=2, messages=[{"role": "user", "content": "Hi"}])
    assert r.choices[0].message.content is not None


def in_flight(url, model):
    return {m["id"]: m for m in hearth_models(url)}[model].get("in_flight", 0)


def test_queue_full_is_429(limits_server):
    url = limits_server
    oai = oai_for(url)
    oai.chat.completions.create(model=SMOL, max_tokens=1, messages=[{"role": "user", "content": "Hi"}])  # loaded
    long_body = {"model": SMOL, "messages": [{"role": "user", "content": STORY}], "max_tokens": 2000,
                 "temperature": 0, "stream": True, "logit_bias": {"0": -100, "2": -100}}
    queued: dict = {}

    def second():
        t0 = time.monotonic()
        try:
            r = oai.chat.completions.create(model=SMOL, max_tokens=4, messages=[{"role": "user", "content": "Hi"}])
            queued["text"] = r.choices[0].message.content
        except Exception as e:  # reported below
            queued["error"] = e
        queued["secs"] = time.monotonic() - t0

    with httpx.Client(timeout=REQUEST_TIMEOUT_S) as c:
        with c.stream("POST", url + "/v1/chat/completions", json=long_body) as s:
            assert s.status_code == 200
            lines = s.iter_lines()
            for line in lines:  # the long job is running once its first chunk arrives
                if line.startswith("data: "):
                    break
            t = threading.Thread(target=second)
            t.start()
            assert wait_until(lambda: in_flight(url, SMOL) >= 2, timeout=10), \
                f"the second request never queued: in_flight {in_flight(url, SMOL)}"
            # One running and one queued with --queue-depth 1: a third is refused.
            with pytest.raises(openai.RateLimitError) as e:
                oai.chat.completions.create(model=SMOL, max_tokens=4, messages=[{"role": "user", "content": "Hi"}])
            assert e.value.status_code == 429
            assert e.value.body.get("type") == "rate_limit_error", e.value.body
            r = httpx.post(url + "/v1/messages", json={"model": SMOL, "max_tokens": 4, "messages": [
                {"role": "user", "content": "Hi"}]}, headers={"anthropic-version": "2023-06-01"}, timeout=30)
            assert_anthropic_error(r, 429, "rate_limit_error")
            with pytest.raises(anthropic.RateLimitError):
                anth_for(url).messages.create(model=SMOL, max_tokens=4, messages=[{"role": "user", "content": "Hi"}])
        # The long stream is closed here: its generation is cancelled and the queued request runs.
    t.join(timeout=60)
    assert not t.is_alive(), "the queued request did not finish after the long stream was closed"
    assert "error" not in queued, f"the queued request failed: {queued.get('error')!r}"
    assert queued["text"] is not None
    assert wait_until(lambda: in_flight(url, SMOL) == 0, timeout=10)


def test_model_over_budget_is_507(limits_server):
    url = limits_server
    with pytest.raises(openai.APIStatusError) as e:
        oai_for(url).completions.create(model=GEMMA, prompt="Hello", max_tokens=2)
    assert e.value.status_code == 507
    msg = e.value.message.lower()
    assert "budget" in msg or "memory" in msg, e.value.message
    r = httpx.post(url + f"/hearth/models/{GEMMA}/load", timeout=30)
    assert_openai_error(r, 507)
    r = httpx.post(url + "/v1/messages", json={"model": GEMMA, "max_tokens": 4, "messages": [
        {"role": "user", "content": "Hi"}]}, headers={"anthropic-version": "2023-06-01"}, timeout=30)
    assert r.status_code == 507 and r.json()["type"] == "error", r.text
    states = {m["id"]: m["state"] for m in hearth_models(url)}
    assert states[GEMMA] != "loaded"
    # The model that fits still works, and was not unloaded trying to make room.
    r = oai_for(url).chat.completions.create(model=SMOL, max_tokens=2, messages=[{"role": "user", "content": "Hi"}])
    assert r.choices[0].message.content is not None
