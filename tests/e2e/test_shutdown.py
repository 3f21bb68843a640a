"""Graceful shutdown: SIGTERM while a stream is in flight lets the stream end cleanly, then the process exits 0."""

from __future__ import annotations

import json
import signal

import httpx

from conftest import REQUEST_TIMEOUT_S, SMOL, SMOL_PATH, STOP_TIMEOUT_S, Server


def test_sigterm_finishes_streams_in_flight():
    s = Server("shutdown", ["--model", f"{SMOL_PATH}={SMOL}"]).start()
    try:
        body = {"model": SMOL, "messages": [{"role": "user", "content": "Write a story about a dragon."}],
                "max_tokens": 48, "temperature": 0, "stream": True, "logit_bias": {"0": -100, "2": -100}}
        data = []
        with httpx.Client(timeout=REQUEST_TIMEOUT_S) as c:
            with c.stream("POST", s.url + "/v1/chat/completions", json=body) as r:
                assert r.status_code == 200
                for line in r.iter_lines():
                    if line.startswith("data: "):
                        data.append(line[6:])
                        if len(data) == 2:
                            s.proc.send_signal(signal.SIGTERM)
        assert data[-1] == "[DONE]", f"the stream did not end cleanly: last data {data[-1:]!r}"
        chunks = [json.loads(d) for d in data[:-1]]
        finishes = [c["choices"][0]["finish_reason"] for c in chunks
                    if c["choices"] and c["choices"][0]["finish_reason"]]
        # End of sequence is banned, so a generation that ran to its end finishes with "length".
        assert finishes == ["length"], f"the stream was cut short: finish reasons {finishes}"
        code = s.proc.wait(timeout=STOP_TIMEOUT_S)
        assert code == 0, f"exit status {code} after SIGTERM\n{s.log_tail()}"
    finally:
        s.kill()
