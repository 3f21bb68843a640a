"""Anthropic's Messages API through the official `anthropic` SDK: bodies, the exact streaming event sequence,
stop sequences, count_tokens, system prompts, model aliases and errors as the SDK's own exception types.

This SDK version no longer takes sampling arguments (temperature, top_k, ...) as keywords, so they travel in
`extra_body`, which the SDK merges into the JSON body unchanged."""

from __future__ import annotations

import json

import anthropic
import pytest

from conftest import CLAUDE_ALIAS, SMOL, assert_anthropic_error, sse_events

QUESTION = "What is the capital of France?"
STORY = "Write a long story about a dragon who learns to fly."
GREEDY = {"temperature": 0}


def user(text):
    return [{"role": "user", "content": text}]


def create(anth, text=QUESTION, **kw):
    kw.setdefault("model", SMOL)
    kw.setdefault("max_tokens", 24)
    kw.setdefault("extra_body", GREEDY)
    return anth.messages.create(messages=user(text), **kw)


def full_input(usage) -> int:
    """The prompt's whole token count: computed tokens plus those read from the KV cache."""
    return usage.input_tokens + (usage.cache_read_input_tokens or 0)


def test_message_non_stream(anth):
    m = create(anth)
    assert m.type == "message"
    assert m.role == "assistant"
    assert m.id
    assert len(m.content) == 1 and m.content[0].type == "text"
    assert "Paris" in m.content[0].text
    assert m.stop_reason in ("end_turn", "max_tokens")
    assert m.stop_sequence is None
    assert full_input(m.usage) > 0
    assert 0 < m.usage.output_tokens <= 24


def test_message_max_tokens(anth):
    m = create(anth, STORY, max_tokens=5)
    assert m.stop_reason == "max_tokens"
    assert m.usage.output_tokens == 5


def test_message_end_turn(anth):
    m = create(anth, QUESTION, max_tokens=64)
    assert m.stop_reason == "end_turn"
    assert m.usage.output_tokens < 64


SEQUENCE_HELP = ("message_start, content_block_start, (ping), content_block_delta..., content_block_stop, "
                 "message_delta, message_stop")


def check_event_order(types: list[str]):
    t = [x for x in types if x != "ping"]
    assert t[:2] == ["message_start", "content_block_start"], f"{types}; expected {SEQUENCE_HELP}"
    assert t[-3:] == ["content_block_stop", "message_delta", "message_stop"], f"{types}; expected {SEQUENCE_HELP}"
    middle = t[2:-3]
    assert middle and all(x == "content_block_delta" for x in middle), f"{types}; expected {SEQUENCE_HELP}"
    # A ping, if any, comes once, before the first delta.
    pings = [i for i, x in enumerate(types) if x == "ping"]
    assert len(pings) <= 1 and (not pings or pings[0] < types.index("content_block_delta")), types


def test_stream_event_order_and_text(anth):
    full = create(anth, STORY, max_tokens=16)
    types = []
    with anth.messages.stream(model=SMOL, max_tokens=16, messages=user(STORY), extra_body=GREEDY) as s:
        for ev in s:
            # The helper adds its own events (e.g. "text") after the raw ones; keep the wire events.
            if ev.type in ("message_start", "content_block_start", "content_block_delta", "content_block_stop",
                           "message_delta", "message_stop", "ping"):
                types.append(ev.type)
        final = s.get_final_message()
    check_event_order(types)
    assert final.content[0].text == full.content[0].text
    assert final.stop_reason == full.stop_reason == "max_tokens"
    assert final.usage.output_tokens == 16
    assert full_input(final.usage) == full_input(full.usage)


def test_stream_wire_format(http):
    """The raw SSE: `event:` names equal each data's type, a ping is allowed, and text deltas are text_delta."""
    body = {"model": SMOL, "max_tokens": 8, "messages": user(QUESTION), "stream": True, "temperature": 0}
    with http.stream("POST", "/v1/messages", json=body, headers={"anthropic-version": "2023-06-01"}) as s:
        assert s.status_code == 200
        assert s.headers["content-type"].startswith("text/event-stream")
        assert s.headers.get("x-request-id")
        events = sse_events(s.iter_lines())
    types = []
    for name, data in events:
        d = json.loads(data)
        assert name == d["type"], f"event: {name} carries data of type {d['type']}"
        types.append(name)
        if name == "message_start":
            msg = d["message"]
            assert msg["role"] == "assistant" and msg["content"] == [] and msg["stop_reason"] is None
            assert msg["usage"]["input_tokens"] > 0
        elif name == "content_block_start":
            assert d["index"] == 0 and d["content_block"] == {"type": "text", "text": ""}
        elif name == "content_block_delta":
            assert d["index"] == 0 and d["delta"]["type"] == "text_delta"
        elif name == "message_delta":
            assert d["delta"]["stop_reason"] in ("end_turn", "max_tokens")
            assert "stop_sequence" in d["delta"]
            assert d["usage"]["output_tokens"] > 0
    check_event_order(types)


def test_stop_sequences(anth):
    base = create(anth, STORY, max_tokens=32).content[0].text
    k = len(base) // 2
    stop = base[k:k + 4]
    expected = base[:base.index(stop)]
    m = create(anth, STORY, max_tokens=32, stop_sequences=["NEVER-OCCURS", stop])
    assert m.stop_reason == "stop_sequence"
    assert m.stop_sequence == stop
    assert m.content[0].text == expected
    with anth.messages.stream(model=SMOL, max_tokens=32, messages=user(STORY), stop_sequences=[stop],
                              extra_body=GREEDY) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text == expected
    assert final.stop_reason == "stop_sequence" and final.stop_sequence == stop


def test_count_tokens_matches_usage(anth, oai):
    for kw in ({}, {"system": "You are a pirate."}):
        counted = anth.messages.count_tokens(model=SMOL, messages=user(QUESTION), **kw)
        assert isinstance(counted.input_tokens, int) and counted.input_tokens > 0
        m = create(anth, QUESTION, max_tokens=2, **kw)
        assert counted.input_tokens == full_input(m.usage)
        # The same conversation through OpenAI's API is the same prompt.
        sys_msgs = [{"role": "system", "content": kw["system"]}] if kw else []
        r = oai.chat.completions.create(model=SMOL, messages=sys_msgs + user(QUESTION), max_tokens=1)
        assert r.usage.prompt_tokens == counted.input_tokens


def test_system_string_and_blocks(anth):
    system = "You are a pirate. Answer like a pirate."
    a = create(anth, system=system)
    b = create(anth, system=[{"type": "text", "text": "You are a pirate."},
                             {"type": "text", "text": "Answer like a pirate."}])
    c = create(anth, system=[{"type": "text", "text": system}])
    assert a.content[0].text == c.content[0].text
    assert full_input(a.usage) == full_input(c.usage)
    assert b.content[0].text  # several blocks are joined; the exact separator is the server's choice
    none = create(anth)
    assert full_input(none.usage) != full_input(a.usage)
    ca = anth.messages.count_tokens(model=SMOL, messages=user(QUESTION), system=system).input_tokens
    cc = anth.messages.count_tokens(model=SMOL, messages=user(QUESTION),
                                    system=[{"type": "text", "text": system}]).input_tokens
    assert ca == cc == full_input(a.usage)


def test_content_blocks_and_history(anth):
    msgs = [
        {"role": "user", "content": [{"type": "text", "text": "Name a colour."}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Blue."}]},
        {"role": "user", "content": "Name another."},
    ]
    m = anth.messages.create(model=SMOL, max_tokens=8, messages=msgs, extra_body=GREEDY)
    assert m.content[0].text


def test_assistant_prefill(anth):
    msgs = user(QUESTION) + [{"role": "assistant", "content": "The capital of France is"}]
    m = anth.messages.create(model=SMOL, max_tokens=8, messages=msgs, extra_body=GREEDY)
    assert "Paris" in m.content[0].text
    assert not m.content[0].text.startswith("The capital"), "the response holds only the continuation"


def test_claude_model_name_via_alias(anth):
    local = create(anth)
    aliased = create(anth, model=CLAUDE_ALIAS)
    assert aliased.content[0].text == local.content[0].text
    with anth.messages.stream(model=CLAUDE_ALIAS, max_tokens=8, messages=user(QUESTION), extra_body=GREEDY) as s:
        assert "".join(s.text_stream)
    assert anth.messages.count_tokens(model=CLAUDE_ALIAS, messages=user(QUESTION)).input_tokens == \
        anth.messages.count_tokens(model=SMOL, messages=user(QUESTION)).input_tokens


def test_beta_query_accepted(anth):
    m = anth.beta.messages.create(model=SMOL, max_tokens=4, messages=user(QUESTION), extra_body=GREEDY)
    assert m.content[0].text


def test_metadata_and_sampling_fields_accepted(anth):
    m = create(anth, metadata={"user_id": "e2e"}, extra_body={"temperature": 0.7, "top_p": 0.9, "top_k": 40})
    assert m.content[0].text


def test_missing_max_tokens_is_400(http):
    r = http.post("/v1/messages", json={"model": SMOL, "messages": user(QUESTION)},
                  headers={"anthropic-version": "2023-06-01"})
    err = assert_anthropic_error(r, 400, "invalid_request_error")
    assert "max_tokens" in err["message"]


def test_malformed_json_is_400_anthropic_envelope(http):
    r = http.post("/v1/messages", content=b"{not json", headers={"content-type": "application/json",
                                                                  "anthropic-version": "2023-06-01"})
    assert_anthropic_error(r, 400, "invalid_request_error")


def test_unknown_model_not_found(anth):
    with pytest.raises(anthropic.NotFoundError) as e:
        create(anth, model="claude-unknown-model")
    assert e.value.status_code == 404
    assert e.value.body["error"]["type"] == "not_found_error"
    with pytest.raises(anthropic.NotFoundError):
        anth.messages.count_tokens(model="claude-unknown-model", messages=user(QUESTION))


def test_bad_request_errors(anth):
    with pytest.raises(anthropic.BadRequestError):
        anth.messages.create(model=SMOL, max_tokens=8, messages=[])
    with pytest.raises(anthropic.BadRequestError):
        create(anth, extra_body={"temperature": 7})
    with pytest.raises(anthropic.BadRequestError):
        anth.messages.create(model=SMOL, max_tokens=8, messages=[{"role": "wizard", "content": "hi"}])


def test_prompt_longer_than_context(anth):
    with pytest.raises(anthropic.BadRequestError) as e:
        anth.messages.create(model=SMOL, max_tokens=8, messages=user("hello " * 9000))
    assert "8192" in e.value.message


def test_stream_errors_before_streaming(anth):
    with pytest.raises(anthropic.BadRequestError) as e:
        with anth.messages.stream(model=SMOL, max_tokens=8, messages=user("hello " * 9000)) as s:
            list(s)
    assert "8192" in e.value.message
    with pytest.raises(anthropic.NotFoundError):
        with anth.messages.stream(model="claude-unknown-model", max_tokens=8, messages=user(QUESTION)) as s:
            list(s)


def test_max_tokens_beyond_context_is_fine(anth):
    """Clients send large fixed max_tokens; the answer ends at end of turn as usual."""
    m = create(anth, max_tokens=100000, timeout=60)
    assert m.stop_reason == "end_turn"
    assert "Paris" in m.content[0].text


def test_stop_sequence_at_start(anth):
    m = create(anth, stop_sequences=["The"])
    assert m.stop_reason == "stop_sequence" and m.stop_sequence == "The"
    assert m.content[0].text == ""


def test_models_list_anthropic(anth):
    ids = {m.id for m in anth.models.list()}
    assert SMOL in ids
    assert anth.models.retrieve(SMOL).id == SMOL
