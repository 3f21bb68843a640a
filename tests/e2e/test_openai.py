"""OpenAI's API through the official `openai` SDK: chat and completions, streaming, sampling controls, logprobs,
echo scoring, errors as the SDK's own exception types, and agreement with `hearth run`."""

from __future__ import annotations

import json
import math
import re

import httpx
import openai
import pytest

from conftest import (CLAUDE_ALIAS, GEMMA, GEMMA_PATH, SMOL, SMOL_CONTEXT, SMOL_PATH, assert_openai_error,
                      gguf_tokens, hearth_run)

QUESTION = "What is the capital of France?"
STORY = "Write a long story about a dragon who learns to fly."
POEM = "Write a short poem about the sea."


def chat(oai, content=QUESTION, **kw):
    kw.setdefault("model", SMOL)
    kw.setdefault("max_tokens", 24)
    kw.setdefault("temperature", 0)
    return oai.chat.completions.create(messages=[{"role": "user", "content": content}], **kw)


def stream_chat(oai, content=QUESTION, **kw):
    """Streams a chat completion; returns (text, finish_reason, chunks)."""
    kw.setdefault("model", SMOL)
    kw.setdefault("max_tokens", 24)
    kw.setdefault("temperature", 0)
    chunks = list(oai.chat.completions.create(messages=[{"role": "user", "content": content}], stream=True,
                                              **kw))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finishes) == 1, f"expected one finish_reason in the stream, got {finishes}"
    return text, finishes[0], chunks


# --- chat completions ------------------------------------------------------------------------------------


def test_chat_non_stream(oai):
    r = chat(oai)
    assert r.object == "chat.completion"
    assert r.id
    assert len(r.choices) == 1
    c = r.choices[0]
    assert c.index == 0
    assert c.message.role == "assistant"
    assert isinstance(c.message.content, str) and c.message.content.strip()
    assert "Paris" in c.message.content
    assert c.finish_reason in ("stop", "length")
    assert r.usage.prompt_tokens > 0
    assert 0 < r.usage.completion_tokens <= 24
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_chat_stream_equals_non_stream(oai):
    full = chat(oai, seed=1)
    text, finish, chunks = stream_chat(oai, seed=1)
    assert text == full.choices[0].message.content
    assert finish == full.choices[0].finish_reason
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1, "every chunk of one stream carries the same id"
    assert chunks[0].choices[0].delta.role == "assistant"
    # No usage chunk unless asked for.
    assert all(c.usage is None for c in chunks)


def test_chat_stream_include_usage(oai):
    full = chat(oai, STORY, max_tokens=10)
    text, finish, chunks = stream_chat(oai, STORY, max_tokens=10, stream_options={"include_usage": True})
    last = chunks[-1]
    assert last.choices == [], "the usage chunk comes last, with empty choices"
    assert last.usage is not None
    assert last.usage.completion_tokens == 10
    assert last.usage.prompt_tokens == full.usage.prompt_tokens
    assert last.usage.total_tokens == last.usage.prompt_tokens + last.usage.completion_tokens
    assert all(c.usage is None for c in chunks[:-1])
    assert text == full.choices[0].message.content
    assert finish == "length"


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
def test_chat_max_tokens_length(oai, field):
    r = oai.chat.completions.create(model=SMOL, messages=[{"role": "user", "content": STORY}], temperature=0,
                                    **{field: 5})
    assert r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 5


def test_chat_stop_sequence(oai):
    base = chat(oai, STORY, max_tokens=32).choices[0].message.content
    assert len(base) > 20, base
    # A stop string from the middle of the unconstrained output: likely spans a token boundary.
    k = len(base) // 2
    stop = base[k:k + 4]
    expected = base[:base.index(stop)]
    r = chat(oai, STORY, max_tokens=32, stop=[stop, "NEVER-OCCURS"])
    got = r.choices[0].message.content
    assert stop not in got
    assert got == expected, f"stop {stop!r}: expected the text before it"
    assert r.choices[0].finish_reason == "stop"
    # The same through a stream (a stop string split across deltas must not leak).
    text, finish, _ = stream_chat(oai, STORY, max_tokens=32, stop=stop)
    assert text == expected
    assert finish == "stop"


def test_chat_seed_determinism(oai):
    a = chat(oai, POEM, temperature=0.8, seed=1234, max_tokens=24).choices[0].message.content
    b = chat(oai, POEM, temperature=0.8, seed=1234, max_tokens=24).choices[0].message.content
    assert a == b
    s, _, _ = stream_chat(oai, POEM, temperature=0.8, seed=1234, max_tokens=24)
    assert s == a, "a stream with the same seed gives the same text"
    others = {chat(oai, POEM, temperature=0.8, seed=seed, max_tokens=24).choices[0].message.content
              for seed in (1, 2, 3)}
    assert len(others | {a}) > 1, "different seeds at temperature 0.8 should not all give one text"


def test_chat_logprobs(oai):
    r = chat(oai, STORY, max_tokens=8, logprobs=True, top_logprobs=3)
    c = r.choices[0]
    assert c.finish_reason == "length"
    content = c.logprobs.content
    assert len(content) == r.usage.completion_tokens == 8
    for t in content:
        assert isinstance(t.token, str)
        assert t.logprob <= 0
        assert len(t.top_logprobs) == 3
        values = [x.logprob for x in t.top_logprobs]
        assert all(v <= 0 for v in values)
        assert values == sorted(values, reverse=True)
        # Greedy: the chosen token is the most likely one.
        assert t.top_logprobs[0].token == t.token
        assert math.isclose(t.top_logprobs[0].logprob, t.logprob, abs_tol=1e-4)
        assert t.bytes == list(t.token.encode())
    assert "".join(t.token for t in content) == c.message.content
    # Without logprobs asked for, none are sent.
    assert chat(oai, max_tokens=4).choices[0].logprobs is None


def test_chat_logprobs_stream(oai):
    chunks = list(oai.chat.completions.create(
        model=SMOL, messages=[{"role": "user", "content": STORY}], max_tokens=6, temperature=0, stream=True,
        logprobs=True, top_logprobs=2))
    entries = [e for c in chunks if c.choices and c.choices[0].logprobs for e in c.choices[0].logprobs.content]
    assert len(entries) == 6
    assert all(e.logprob <= 0 and len(e.top_logprobs) == 2 for e in entries)


def test_chat_logit_bias(oai):
    vocab = gguf_tokens(SMOL_PATH)
    first = chat(oai, max_tokens=3, logprobs=True).choices[0].logprobs.content[0].token
    assert first == "The", first
    # Banning the greedy first token changes it; a large positive bias forces a token.
    banned = chat(oai, max_tokens=3, logprobs=True, logit_bias={str(vocab.index("The")): -100})
    assert banned.choices[0].logprobs.content[0].token != "The"
    forced = chat(oai, max_tokens=3, logit_bias={str(vocab.index("\u0120banana")): 100})
    assert forced.choices[0].message.content == " banana banana banana"
    with pytest.raises(openai.BadRequestError):
        chat(oai, max_tokens=3, logit_bias={str(len(vocab) + 10): 5})


def test_chat_stream_multibyte_text(oai):
    """Characters split across tokens reach a stream whole: the deltas add up to the non-stream text."""
    prompt = "Translate 'good morning' into Japanese."
    full = chat(oai, prompt, max_tokens=32).choices[0].message.content
    assert any(ord(ch) > 0x3000 for ch in full), full
    text, _, _ = stream_chat(oai, prompt, max_tokens=32)
    assert text == full


def test_chat_stop_at_start(oai):
    r = chat(oai, stop=["The"])
    assert r.choices[0].message.content == ""
    assert r.choices[0].finish_reason == "stop"


def test_stream_errors_before_streaming(oai):
    with pytest.raises(openai.NotFoundError):
        chat(oai, model="no-such-model", stream=True)
    with pytest.raises(openai.BadRequestError):
        chat(oai, "hello " * 9000, stream=True)


def test_chat_n_2_is_bad_request(oai):
    with pytest.raises(openai.BadRequestError) as e:
        chat(oai, n=2)
    assert e.value.status_code == 400


def test_chat_unknown_model(oai):
    with pytest.raises(openai.NotFoundError) as e:
        chat(oai, model="no-such-model")
    assert "no-such-model" in str(e.value)


def test_chat_bad_parameter_types(oai):
    with pytest.raises(openai.BadRequestError):
        chat(oai, temperature=5)
    with pytest.raises(openai.BadRequestError):
        chat(oai, extra_body={"max_tokens": "lots"})
    with pytest.raises(openai.BadRequestError):
        oai.chat.completions.create(model=SMOL, messages="hello", max_tokens=4)


def test_chat_prompt_longer_than_context(oai, anth):
    messages = [{"role": "user", "content": "hello " * 9000}]
    with pytest.raises(openai.BadRequestError) as e:
        oai.chat.completions.create(model=SMOL, messages=messages, max_tokens=4)
    msg = e.value.message
    numbers = {int(n) for n in re.findall(r"\d+", msg)}
    assert SMOL_CONTEXT in numbers, f"the context length is not in the message: {msg!r}"
    assert any(n > SMOL_CONTEXT for n in numbers), f"the prompt's token count is not in the message: {msg!r}"
    # The number is the prompt's real token count (the same template counted by count_tokens).
    counted = anth.messages.count_tokens(model=SMOL, messages=messages).input_tokens
    assert counted in numbers, f"count_tokens says {counted}; message: {msg!r}"


def test_chat_system_and_history(oai):
    msgs = [
        {"role": "system", "content": "You are a terse assistant."},
        {"role": "user", "content": "Name a colour."},
        {"role": "assistant", "content": "Blue."},
        {"role": "user", "content": [{"type": "text", "text": "Name another."}]},
    ]
    r = oai.chat.completions.create(model=SMOL, messages=msgs, max_tokens=8, temperature=0)
    assert r.choices[0].message.content
    # Text parts and a plain string are the same prompt.
    msgs2 = msgs[:3] + [{"role": "user", "content": "Name another."}]
    r2 = oai.chat.completions.create(model=SMOL, messages=msgs2, max_tokens=8, temperature=0)
    assert r2.choices[0].message.content == r.choices[0].message.content
    assert r2.usage.prompt_tokens == r.usage.prompt_tokens


def test_chat_default_model(http):
    # No model named: the default (the first --model).
    r = http.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": QUESTION}],
                                                "max_tokens": 4, "temperature": 0})
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"]


# --- completions ----------------------------------------------------------------------------------------


def test_completion_text(oai):
    r = oai.completions.create(model=GEMMA, prompt="The capital of France is", max_tokens=8, temperature=0)
    assert r.object == "text_completion"
    assert r.choices[0].text
    assert r.choices[0].finish_reason in ("stop", "length")
    assert r.usage.completion_tokens <= 8


def test_completion_stream_equals_non_stream(oai):
    full = oai.completions.create(model=GEMMA, prompt="Once upon a time", max_tokens=12, temperature=0)
    chunks = list(oai.completions.create(model=GEMMA, prompt="Once upon a time", max_tokens=12, temperature=0,
                                         stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == full.choices[0].text
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == full.usage.completion_tokens


def echo_score(oai, prompt):
    """lm-evaluation-harness's loglikelihood request: echo the prompt with logprobs, generate nothing."""
    return oai.completions.create(model=GEMMA, prompt=prompt, echo=True, logprobs=1, max_tokens=0, temperature=0)


def test_completion_echo_logprobs(oai):
    prompt = "The capital of France is Paris"
    r = echo_score(oai, prompt)
    c = r.choices[0]
    assert c.text == prompt, "echo with max_tokens 0 returns exactly the prompt"
    lp = c.logprobs
    n = r.usage.prompt_tokens
    assert n > 3
    assert r.usage.completion_tokens == 0
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset) == n
    assert lp.token_logprobs[0] is None, "nothing precedes the first token"
    assert lp.top_logprobs[0] is None
    assert all(isinstance(v, float) and v <= 0 for v in lp.token_logprobs[1:])
    assert all(isinstance(t, dict) and 1 <= len(t) <= 2 for t in lp.top_logprobs[1:])
    assert lp.text_offset == sorted(lp.text_offset)


def test_completion_echo_text_offsets(oai):
    """OpenAI's text_offset: where each token starts in the returned text, prompt and generated tokens alike
    (a token the text does not show, such as <bos>, is skipped by this check)."""
    prompt = "The capital of France is"
    for max_tokens in (0, 5):
        r = oai.completions.create(model=GEMMA, prompt=prompt, echo=True, logprobs=1, max_tokens=max_tokens,
                                   temperature=0)
        c = r.choices[0]
        assert c.text.startswith(prompt)
        lp = c.logprobs
        assert len(lp.tokens) == r.usage.prompt_tokens + r.usage.completion_tokens
        assert lp.text_offset == sorted(lp.text_offset), f"max_tokens {max_tokens}: offsets {lp.text_offset}"
        bad = [(t, o) for t, o in zip(lp.tokens, lp.text_offset) if t != "<bos>" and not c.text.startswith(t, o)]
        assert not bad, (f"max_tokens {max_tokens}: tokens not at their text_offset in {c.text!r}: {bad}; "
                         f"offsets {lp.text_offset}, tokens {lp.tokens}")


def test_completion_echo_scores_rank_answers(oai):
    """Log-likelihood of a continuation, as lm-evaluation-harness sums it: the right answer scores higher."""
    def score(cont):
        ctx = echo_score(oai, "The capital of France is")
        full = echo_score(oai, "The capital of France is" + cont)
        k = ctx.usage.prompt_tokens
        return sum(full.choices[0].logprobs.token_logprobs[k:])

    assert score(" Paris") > score(" London")


def test_completion_token_ids_prompt(oai):
    vocab = gguf_tokens(GEMMA_PATH)
    index = {t: i for i, t in enumerate(vocab)}
    words = ["<bos>", "The", "\u2581capital", "\u2581of", "\u2581France", "\u2581is"]
    ids = [index[w] for w in words]
    by_ids = oai.completions.create(model=GEMMA, prompt=ids, echo=True, logprobs=1, max_tokens=0)
    by_text = echo_score(oai, "The capital of France is")
    assert by_ids.usage.prompt_tokens == len(ids)
    assert by_text.usage.prompt_tokens == len(ids), "the text prompt should tokenize to the same ids"
    a = by_ids.choices[0].logprobs.token_logprobs
    b = by_text.choices[0].logprobs.token_logprobs
    assert a[0] is None and b[0] is None
    assert all(math.isclose(x, y, abs_tol=1e-3) for x, y in zip(a[1:], b[1:])), (a, b)
    # And generation from ids continues like generation from the text.
    g_ids = oai.completions.create(model=GEMMA, prompt=ids, max_tokens=8, temperature=0)
    g_text = oai.completions.create(model=GEMMA, prompt="The capital of France is", max_tokens=8, temperature=0)
    assert g_ids.choices[0].text == g_text.choices[0].text


def test_chat_on_model_without_template_is_bad_request(oai):
    with pytest.raises(openai.BadRequestError) as e:
        chat(oai, model=GEMMA, max_tokens=4)
    assert "template" in e.value.message.lower()


# --- agreement with `hearth run` ------------------------------------------------------------------------


def test_chat_equals_hearth_run(oai):
    expected = hearth_run(SMOL_PATH, QUESTION, 24)
    assert chat(oai, QUESTION, max_tokens=24).choices[0].message.content == expected
    expected = hearth_run(SMOL_PATH, STORY, 24)
    assert chat(oai, STORY, max_tokens=24).choices[0].message.content == expected


def test_raw_completion_equals_hearth_run(oai):
    prompt = "The capital of France is"
    expected = hearth_run(GEMMA_PATH, prompt, 24, raw=True)
    r = oai.completions.create(model=GEMMA, prompt=prompt, max_tokens=24, temperature=0)
    assert r.choices[0].text == expected


# --- models ---------------------------------------------------------------------------------------------


def test_models_list_and_retrieve(oai):
    listed = {m.id: m for m in oai.models.list()}
    assert {SMOL, GEMMA} <= set(listed)
    for m in listed.values():
        assert m.object == "model"
        assert (m.model_extra or {}).get("state") in ("available", "loading", "loaded", "error"), m
    m = oai.models.retrieve(SMOL)
    assert m.id == SMOL
    assert oai.models.retrieve(CLAUDE_ALIAS).id == SMOL, "an alias resolves to the model it names"
    with pytest.raises(openai.NotFoundError):
        oai.models.retrieve("no-such-model")


# --- raw HTTP: envelopes and headers --------------------------------------------------------------------


def test_malformed_json_is_400_with_envelope(http):
    r = http.post("/v1/chat/completions", content=b'{"model": "smollm2", "messages": [', headers={
        "content-type": "application/json"})
    err = assert_openai_error(r, 400)
    assert err["type"] == "invalid_request_error"
    r = http.post("/v1/completions", content=b"not json at all", headers={"content-type": "application/json"})
    assert_openai_error(r, 400)


def test_wrong_types_are_400(http):
    r = http.post("/v1/chat/completions", json={"model": SMOL, "messages": [{"role": "user", "content": 42}]})
    assert_openai_error(r, 400)
    r = http.post("/v1/chat/completions", json={"model": SMOL, "messages": [], "max_tokens": 4})
    assert_openai_error(r, 400)
    r = http.post("/v1/completions", json={"model": GEMMA, "prompt": {"no": "dict"}})
    assert_openai_error(r, 400)


def test_request_id_header(http):
    r = http.get("/health")
    assert r.status_code == 200 and r.headers.get("x-request-id")
    r = http.post("/v1/chat/completions", json={"model": SMOL, "messages": [{"role": "user", "content": "Hi"}],
                                                "max_tokens": 2})
    assert r.status_code == 200 and r.headers.get("x-request-id")
    r = http.post("/v1/chat/completions", json={"model": "nope", "messages": []})
    assert r.status_code in (400, 404) and r.headers.get("x-request-id")
    r = http.get("/v1/no-such-route")
    assert_openai_error(r, 404)
    ids = {http.get("/health").headers["x-request-id"] for _ in range(3)}
    assert len(ids) == 3, "each request gets its own id"
    # A client's own id is kept.
    r = http.get("/health", headers={"x-request-id": "my-trace-123"})
    assert r.headers["x-request-id"] == "my-trace-123"
    # Streams carry it too.
    with http.stream("POST", "/v1/chat/completions", json={
            "model": SMOL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2, "stream": True}) as s:
        assert s.status_code == 200
        assert s.headers.get("x-request-id")
        assert s.headers["content-type"].startswith("text/event-stream")
        body = s.read().decode()
    assert body.rstrip().endswith("data: [DONE]")


def test_openai_sse_framing(http):
    with http.stream("POST", "/v1/chat/completions", json={
            "model": SMOL, "messages": [{"role": "user", "content": QUESTION}], "max_tokens": 6,
            "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}) as s:
        lines = [line for line in s.iter_lines()]
    data = [line[len("data: "):] for line in lines if line.startswith("data: ")]
    assert data[-1] == "[DONE]"
    assert all(not line or line.startswith("data: ") or line.startswith(":") for line in lines), lines
    parsed = [json.loads(d) for d in data[:-1]]
    assert parsed[-1]["choices"] == [] and parsed[-1]["usage"]["completion_tokens"] <= 6


def test_health(http):
    r = http.get("/health")
    assert r.status_code == 200
    assert r.json().get("status") == "ok"


def test_bad_content_type_or_method(http):
    r = http.get("/v1/chat/completions")
    assert r.status_code in (404, 405)
    assert r.headers.get("x-request-id")
    r = httpx.post(str(http.base_url) + "/v1/chat/completions", content=b"{}",
                   headers={"content-type": "application/json"})
    assert_openai_error(r, 400)
