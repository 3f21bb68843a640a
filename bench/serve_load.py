#!/usr/bin/env python3
"""Drives a running `hearth serve` over HTTP (standard library only) and reports:

1. aggregate decode tokens/s with N concurrent streaming clients (default N = 1, 4, 16, 64);
2. time to first token for a request whose ~2,000-token prefix is cached, against a cold one;
3. a 10-turn chat: prompt tokens actually computed at each turn (prompt_tokens - cached_tokens).

usage: bench/serve_load.py --url http://127.0.0.1:8080 --model smollm2 [--streams 1,4,16,64] [--tokens 64]
Each client streams /v1/completions with end-of-sequence banned (logit_bias) so every stream decodes exactly
--tokens tokens; the aggregate is the sum of tokens over the wall time of the whole wave.
"""
import argparse
import http.client
import json
import threading
import time
import urllib.parse

WORDS = ("river stone lantern harvest meadow copper window signal orchard thunder canvas pepper marble "
         "journey silver garden ladder compass winter feather").split()


def text_of(n_words, salt):
    return " ".join(WORDS[(i * 7 + salt * 13 + (i // 5)) % len(WORDS)] for i in range(n_words))


class Client:
    def __init__(self, url):
        u = urllib.parse.urlparse(url)
        self.host, self.port = u.hostname, u.port or 80

    def stream(self, path, body):
        """POSTs with stream=true; returns (time to first content, chunks' text, final usage)."""
        conn = http.client.HTTPConnection(self.host, self.port, timeout=600)
        t0 = time.perf_counter()
        conn.request("POST", path, json.dumps(body), {"content-type": "application/json"})
        resp = conn.getresponse()
        if resp.status != 200:
            raise RuntimeError(f"{resp.status}: {resp.read()[:300]!r}")
        ttft, usage, text = None, None, []
        for raw in resp:
            line = raw.decode().strip()
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            d = json.loads(line[6:])
            if d.get("usage"):
                usage = d["usage"]
            for ch in d.get("choices", []):
                piece = ch.get("text") or (ch.get("delta") or {}).get("content") or ""
                if piece and ttft is None:
                    ttft = time.perf_counter() - t0
                text.append(piece)
        conn.close()
        return ttft, "".join(text), usage

    def post(self, path, body):
        conn = http.client.HTTPConnection(self.host, self.port, timeout=600)
        conn.request("POST", path, json.dumps(body), {"content-type": "application/json"})
        resp = conn.getresponse()
        data = json.loads(resp.read())
        conn.close()
        if resp.status != 200:
            raise RuntimeError(f"{resp.status}: {data}")
        return data


def wave(client, model, n, tokens, ban):
    results = [None] * n

    def one(i):
        body = {"model": model, "prompt": text_of(24, i), "max_tokens": tokens, "temperature": 0,
                "stream": True, "stream_options": {"include_usage": True}, "logit_bias": ban}
        _, _, usage = client.stream("/v1/completions", body)
        results[i] = usage["completion_tokens"]

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return sum(results), wall


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", default="http://127.0.0.1:8080")
    ap.add_argument("--model", required=True)
    ap.add_argument("--streams", default="1,4,16,64")
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--eos", default="0,2", help="token ids to ban so streams run their full length")
    args = ap.parse_args()
    c = Client(args.url)
    ban = {e: -100 for e in args.eos.split(",") if e}

    print("## aggregate decode\n\n| streams | tokens | wall s | aggregate tok/s | per stream tok/s | vs 1 stream |")
    print("| --- | --- | --- | --- | --- | --- |")
    base = None
    for n in [int(x) for x in args.streams.split(",")]:
        toks, wall = wave(c, args.model, n, args.tokens, ban)
        agg = toks / wall
        base = base or agg
        print(f"| {n} | {toks} | {wall:.2f} | {agg:.1f} | {agg / n:.1f} | {agg / base:.2f}x |", flush=True)

    print("\n## time to first token, ~2,000-token prompt\n")
    long_prefix = text_of(2000, 99)
    cold = []
    for salt in (1, 2):
        body = {"model": args.model, "prompt": text_of(2000, 200 + salt) + " end.", "max_tokens": 1, "stream": True,
                "temperature": 0}
        cold.append(c.stream("/v1/completions", body)[0])
    c.stream("/v1/completions", {"model": args.model, "prompt": long_prefix + " first", "max_tokens": 1,
                                 "stream": True, "temperature": 0})
    warm = []
    for suffix in (" second question", " third question"):
        body = {"model": args.model, "prompt": long_prefix + suffix, "max_tokens": 1, "stream": True,
                "temperature": 0, "stream_options": {"include_usage": True}}
        ttft, _, usage = c.stream("/v1/completions", body)
        warm.append(ttft)
    cold_t, warm_t = min(cold), min(warm)
    print(f"cold: {cold_t * 1000:.0f} ms; cached prefix: {warm_t * 1000:.0f} ms; speedup {cold_t / warm_t:.1f}x "
          f"(prompt {usage['prompt_tokens']} tokens, cached {usage.get('prompt_tokens_details', {}).get('cached_tokens')})")

    print("\n## 10-turn chat: prompt tokens computed per turn\n\n| turn | prompt tokens | cached | computed |")
    print("| --- | --- | --- | --- |")
    messages = [{"role": "system", "content": "You are a helpful assistant."}]
    for turn in range(1, 11):
        messages.append({"role": "user", "content": f"Turn {turn}: tell me one fact about {WORDS[turn]}."})
        r = c.post("/v1/chat/completions", {"model": args.model, "messages": messages, "max_tokens": 24,
                                            "temperature": 0})
        u = r["usage"]
        cached = u.get("prompt_tokens_details", {}).get("cached_tokens", 0)
        print(f"| {turn} | {u['prompt_tokens']} | {cached} | {u['prompt_tokens'] - cached} |", flush=True)
        messages.append({"role": "assistant", "content": r["choices"][0]["message"]["content"]})


if __name__ == "__main__":
    main()
