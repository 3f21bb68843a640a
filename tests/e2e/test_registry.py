"""The model registry over HTTP: listing with states, explicit load and unload, pinning, two models loaded at
once, and eviction of the least recently used model under a memory budget that fits one model at a time."""

from __future__ import annotations

import threading

import httpx
import openai
import pytest

from conftest import (GEMMA, REQUEST_TIMEOUT_S, SMOL, SMOL_PATH, Server, assert_openai_error, both_models,
                      hearth_models, states, wait_until)


def use(url, model):
    """One small request, chat or raw completion as the model supports."""
    c = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0, timeout=REQUEST_TIMEOUT_S)
    if model == SMOL:
        r = c.chat.completions.create(model=model, messages=[{"role": "user", "content": "Hi"}], max_tokens=2)
        assert r.choices[0].message.content is not None
    else:
        r = c.completions.create(model=model, prompt="Hello", max_tokens=2)
        assert r.choices[0].text is not None


def post(url, path, **kw):
    return httpx.post(url + path, timeout=REQUEST_TIMEOUT_S, **kw)


def wait_state(url, model, state, timeout=10.0):
    got = wait_until(lambda: states(url).get(model) == state, timeout=timeout)
    assert got, f"{model} is {states(url).get(model)!r}, expected {state!r} within {timeout}s"


def test_v1_models_lists_both_with_states(server):
    r = httpx.get(server + "/v1/models", timeout=10)
    assert r.status_code == 200
    body = r.json()
    assert body["object"] == "list"
    by_id = {m["id"]: m for m in body["data"]}
    assert {SMOL, GEMMA} <= set(by_id)
    for mid in (SMOL, GEMMA):
        assert by_id[mid]["object"] == "model"
        assert by_id[mid]["state"] in ("available", "loading", "loaded")


def test_hearth_models_detail(server):
    r = httpx.get(server + "/hearth/models", timeout=10)
    assert r.status_code == 200
    body = r.json()
    by_id = {m["id"]: m for m in body["data"]}
    for mid in (SMOL, GEMMA):
        m = by_id[mid]
        assert m["bytes"] > 0
        assert m["state"] in ("available", "loading", "loaded")
        assert isinstance(m["pinned"], bool)
    assert by_id[SMOL]["context_len"] == 8192
    assert body["memory"]["budget_bytes"] == 8 << 30


def test_load_and_unload_change_state(server):
    r = post(server, f"/hearth/models/{GEMMA}/unload")
    assert r.status_code == 200, r.text
    wait_state(server, GEMMA, "available")
    r = post(server, f"/hearth/models/{GEMMA}/load")
    assert r.status_code == 200, r.text
    assert states(server)[GEMMA] == "loaded", "load returns once the model is loaded"
    r = post(server, f"/hearth/models/{GEMMA}/unload")
    assert r.status_code == 200, r.text
    wait_state(server, GEMMA, "available")
    # Loading by request works after an unload.
    use(server, GEMMA)
    assert states(server)[GEMMA] == "loaded"


def test_unknown_model_admin_404(server):
    for action in ("load", "unload", "pin", "unpin"):
        assert_openai_error(post(server, f"/hearth/models/no-such-model/{action}"), 404)
    assert_openai_error(httpx.get(server + "/hearth/models/no-such-model", timeout=10), 404)


def test_two_models_loaded_at_once(server):
    use(server, SMOL)
    use(server, GEMMA)
    s = states(server)
    assert s[SMOL] == "loaded" and s[GEMMA] == "loaded", s
    detail = httpx.get(server + "/hearth/models", timeout=10).json()
    assert detail["loaded"] >= 2
    assert detail["memory"]["used_bytes"] > 0


def test_pin_and_unpin(server):
    r = post(server, f"/hearth/models/{SMOL}/pin")
    assert r.status_code == 200, r.text
    assert {m["id"]: m for m in hearth_models(server)}[SMOL]["pinned"] is True
    r = post(server, f"/hearth/models/{SMOL}/unpin")
    assert r.status_code == 200, r.text
    assert {m["id"]: m for m in hearth_models(server)}[SMOL]["pinned"] is False


def test_keep_alive_zero_unloads_after_request(server):
    c = openai.OpenAI(base_url=server + "/v1", api_key="x", max_retries=0, timeout=REQUEST_TIMEOUT_S)
    c.completions.create(model=GEMMA, prompt="Hello", max_tokens=2, extra_body={"keep_alive": 0})
    wait_state(server, GEMMA, "available")


# --- a budget that fits one model at a time ---------------------------------------------------------------


@pytest.fixture(scope="module")
def budget_server(model_sizes):
    small, large = sorted([model_sizes[SMOL], model_sizes[GEMMA]])
    budget = large + small // 2  # either model fits; both do not
    s = Server("budget", both_models("--memory-budget", str(budget))).start()
    yield s.url
    s.stop_and_check()


def test_budget_evicts_least_recently_used(budget_server):
    url = budget_server
    use(url, SMOL)
    assert states(url) == {SMOL: "loaded", GEMMA: "available"}
    use(url, GEMMA)
    s = states(url)
    assert s[GEMMA] == "loaded" and s[SMOL] == "available", f"loading {GEMMA} should evict {SMOL}: {s}"
    use(url, SMOL)
    s = states(url)
    assert s[SMOL] == "loaded" and s[GEMMA] == "available", f"loading {SMOL} should evict {GEMMA}: {s}"
    # The explicit load endpoint evicts the same way.
    r = post(url, f"/hearth/models/{GEMMA}/load")
    assert r.status_code == 200, r.text
    s = states(url)
    assert s[GEMMA] == "loaded" and s[SMOL] == "available", s
    detail = httpx.get(url + "/hearth/models", timeout=10).json()
    assert detail["memory"]["used_bytes"] <= detail["memory"]["budget_bytes"]


def test_budget_pinned_model_is_not_evicted(budget_server):
    url = budget_server
    use(url, SMOL)
    assert post(url, f"/hearth/models/{SMOL}/pin").status_code == 200
    try:
        # The only way to fit the other model would be to evict a pinned one: refused, nothing unloaded.
        r = post(url, f"/hearth/models/{GEMMA}/load")
        assert_openai_error(r, 503)
        assert states(url)[SMOL] == "loaded"
    finally:
        assert post(url, f"/hearth/models/{SMOL}/unpin").status_code == 200
    use(url, GEMMA)
    assert states(url)[SMOL] == "available"


# --- first loads and the idle TTL, on a fresh server --------------------------------------------------------


def test_concurrent_first_requests_load_once_and_ttl_unloads():
    s = Server("ttl", ["--model", f"{SMOL_PATH}={SMOL}", "--idle-ttl", "2"]).start()
    try:
        url = s.url
        assert states(url) == {SMOL: "available"}
        errors = []

        def one():
            try:
                use(url, SMOL)
            except Exception as e:  # reported below
                errors.append(e)

        threads = [threading.Thread(target=one) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert not errors, errors
        detail = httpx.get(url + "/hearth/models", timeout=10).json()
        assert detail["loads"] == 1, f"4 concurrent first requests loaded the model {detail['loads']} times"
        assert states(url)[SMOL] == "loaded"
        # Idle for its TTL (2 s; the reaper ticks every second): unloaded.
        wait_state(url, SMOL, "available", timeout=10)
        # And loaded again on the next request.
        use(url, SMOL)
        assert states(url)[SMOL] == "loaded"
    finally:
        s.stop_and_check()
