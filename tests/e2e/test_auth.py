"""API keys, on a server started with --api-key secret (and a "*" alias that sends every unknown model name to
SmolLM2): both SDKs' ways of sending a key work, a missing or wrong key is the SDKs' AuthenticationError, and
/health stays open."""

from __future__ import annotations

import anthropic
import httpx
import openai
import pytest

from conftest import (REQUEST_TIMEOUT_S, SMOL, SMOL_PATH, Server, assert_anthropic_error, assert_openai_error)

KEY = "secret"
QUESTION = "What is the capital of France?"


@pytest.fixture(scope="module")
def auth_server():
    s = Server("auth", ["--model", f"{SMOL_PATH}={SMOL}", "--api-key", KEY, "--alias", f"*={SMOL}"]).start()
    yield s.url
    s.stop_and_check()


def oai(url, key):
    return openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=REQUEST_TIMEOUT_S)


def chat(client, model=SMOL):
    return client.chat.completions.create(model=model, messages=[{"role": "user", "content": QUESTION}],
                                          max_tokens=4, temperature=0)


def test_health_is_open(auth_server):
    r = httpx.get(auth_server + "/health", timeout=10)
    assert r.status_code == 200


def test_openai_without_or_with_wrong_key(auth_server):
    with pytest.raises(openai.AuthenticationError) as e:
        chat(oai(auth_server, "wrong"))
    assert e.value.status_code == 401
    r = httpx.post(auth_server + "/v1/chat/completions", json={"model": SMOL, "messages": [
        {"role": "user", "content": "Hi"}], "max_tokens": 2}, timeout=30)
    err = assert_openai_error(r, 401)
    assert err["type"] == "authentication_error"
    assert_openai_error(httpx.get(auth_server + "/v1/models", timeout=10), 401)
    assert_openai_error(httpx.get(auth_server + "/hearth/models", timeout=10), 401)
    assert_openai_error(httpx.post(auth_server + f"/hearth/models/{SMOL}/load", timeout=10), 401)
    r = httpx.post(auth_server + "/v1/chat/completions", json={}, headers={"authorization": "Bearer nope"},
                   timeout=10)
    assert_openai_error(r, 401)


def test_openai_bearer_key(auth_server):
    r = chat(oai(auth_server, KEY))
    assert r.choices[0].message.content
    assert {m.id for m in oai(auth_server, KEY).models.list()} >= {SMOL}


def test_anthropic_x_api_key(auth_server):
    client = anthropic.Anthropic(base_url=auth_server, api_key=KEY, max_retries=0, timeout=REQUEST_TIMEOUT_S)
    m = client.messages.create(model=SMOL, max_tokens=4, messages=[{"role": "user", "content": QUESTION}])
    assert m.content[0].text
    assert client.messages.count_tokens(model=SMOL, messages=[{"role": "user", "content": QUESTION}]).input_tokens
    # The Bearer form (auth_token) as well.
    bearer = anthropic.Anthropic(base_url=auth_server, auth_token=KEY, max_retries=0, timeout=REQUEST_TIMEOUT_S)
    assert bearer.messages.create(model=SMOL, max_tokens=2,
                                  messages=[{"role": "user", "content": QUESTION}]).content[0].text is not None


def test_anthropic_wrong_key(auth_server):
    client = anthropic.Anthropic(base_url=auth_server, api_key="wrong", max_retries=0, timeout=REQUEST_TIMEOUT_S)
    with pytest.raises(anthropic.AuthenticationError) as e:
        client.messages.create(model=SMOL, max_tokens=4, messages=[{"role": "user", "content": QUESTION}])
    assert e.value.status_code == 401
    r = httpx.post(auth_server + "/v1/messages", json={"model": SMOL, "max_tokens": 2, "messages": [
        {"role": "user", "content": "Hi"}]}, headers={"anthropic-version": "2023-06-01"}, timeout=10)
    assert_anthropic_error(r, 401, "authentication_error")


def test_catch_all_alias(auth_server):
    """With a "*" alias, any model name a client sends (Claude Code's, say) reaches the local model."""
    client = anthropic.Anthropic(base_url=auth_server, api_key=KEY, max_retries=0, timeout=REQUEST_TIMEOUT_S)
    greedy = {"temperature": 0}
    a = client.messages.create(model="claude-opus-4-1", max_tokens=8, extra_body=greedy,
                               messages=[{"role": "user", "content": QUESTION}])
    b = client.messages.create(model=SMOL, max_tokens=8, extra_body=greedy,
                               messages=[{"role": "user", "content": QUESTION}])
    assert a.content[0].text == b.content[0].text
    assert chat(oai(auth_server, KEY), model="gpt-4o").choices[0].message.content
