#!/usr/bin/env python3
"""hearth's aggregate decode with B concurrent sequences: `hearth bench` runs one sequence, so B sequences go
through `hearth serve` (continuous batching), driven by B streaming /v1/completions clients (bench/serve_load.py's
client). Standard library only.

Each stream decodes --tokens tokens (end-of-sequence ids banned through logit_bias). The decode rate excludes
the prompts: tokens after each stream's first, over the time from the last stream's first token to the last
stream's end, like llama-batched-bench's S_TG (all prompts are prefilled before that window opens).

usage: serve_agg.py --hearth BIN --model PATH --json OUT [--streams 16,64] [--tokens 128]
       [--serve-arg=ARG ...] [--timeout-s 300]
"""
import argparse
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(here))
sys.path.insert(0, here)
from serve_load import Client, text_of  # noqa: E402  (bench/serve_load.py)
import report  # noqa: E402


def log(msg):
    print(f"[serve_agg] {msg}", file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wave(client, n, tokens, ban):
    """n concurrent streams; per stream (first-token time, end time, completion tokens), times absolute."""
    res = [None] * n

    def one(i):
        body = {"model": "bench", "prompt": text_of(24, i), "max_tokens": tokens, "temperature": 0,
                "stream": True, "stream_options": {"include_usage": True}, "logit_bias": ban}
        t0 = time.perf_counter()
        ttft, _, usage = client.stream("/v1/completions", body)
        res[i] = (t0 + (ttft or 0), time.perf_counter(), (usage or {}).get("completion_tokens", 0))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if any(r is None for r in res):
        raise RuntimeError("a stream failed (see the server log)")
    first, end = max(r[0] for r in res), max(r[1] for r in res)
    toks = sum(r[2] for r in res)
    return {"streams": n, "tokens": toks, "full_length": all(r[2] == tokens for r in res),
            "wall_s": end - t0, "tokens_per_s_wall": toks / (end - t0),
            "decode_window_s": end - first, "decode_tokens_per_s": (toks - n) / (end - first)}


def ttft(client, ban, target=100, runs=9):
    """Time to first token of a prompt of about `target` tokens on the warm server: the words are sized from
    one calibration request's prompt_tokens, and each run starts at a different word (no shared prefix)."""
    def one(words, salt):
        body = {"model": "bench", "prompt": text_of(words, salt), "max_tokens": 2, "temperature": 0,
                "stream": True, "stream_options": {"include_usage": True}, "logit_bias": ban}
        t, _, usage = client.stream("/v1/completions", body)
        return t, (usage or {}).get("prompt_tokens", 0)
    _, pt = one(80, 997)
    words = max(1, round(80 * target / max(pt, 1)))
    times, toks = [], 0
    for i in range(runs):
        t, toks = one(words, 1000 + 7 * i)
        times.append(t * 1e3)
    s = sorted(times)
    return {"prompt_tokens": toks, "median_ms": s[len(s) // 2], "all_ms": times}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hearth", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--json", required=True)
    ap.add_argument("--streams", default="16,64")
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--serve-arg", action="append", default=[], help="extra `hearth serve` argument (repeatable)")
    ap.add_argument("--timeout-s", type=float, default=300, help="for the model load and first answer")
    args = ap.parse_args()

    # Ids 0-2 are the usual special ids; the model's own end-of-sequence ids come from its files.
    ban = {str(i): -100 for i in sorted(set(report.eos_ids(args.model)) | {0, 1, 2})}
    port = free_port()
    cmd = [args.hearth, "serve", "--model", f"{args.model}=bench", "--no-hf-cache", "--port", str(port),
           "--max-seqs", str(max(int(s) for s in args.streams.split(","))), *args.serve_arg]
    log(" ".join(cmd))
    server_log = open(args.json + ".server.log", "w")
    server = subprocess.Popen(cmd, stdout=server_log, stderr=subprocess.STDOUT)
    out = {"model": os.path.abspath(args.model), "command": cmd, "tokens": args.tokens, "waves": {}}
    try:
        deadline = time.monotonic() + args.timeout_s
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"hearth serve exited with {server.returncode} (log: {server_log.name})")
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).read()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("hearth serve did not come up")
                time.sleep(0.5)
        client = Client(f"http://127.0.0.1:{port}")
        t = time.monotonic()
        wave(client, 1, 4, ban)  # loads the model
        out["load_s"] = time.monotonic() - t
        log(f"model loaded and answering after {out['load_s']:.1f} s")
        out["ttft"] = ttft(client, ban)
        log(f"time to first token, {out['ttft']['prompt_tokens']}-token prompt on the warm server: "
            f"{out['ttft']['median_ms']:.1f} ms (median of {len(out['ttft']['all_ms'])})")
        for n in [int(s) for s in args.streams.split(",") if s]:
            wave(client, n, 8, ban)  # warm-up at this width
            w = wave(client, n, args.tokens, ban)
            out["waves"][str(n)] = w
            log(f"{n} streams: {w['decode_tokens_per_s']:.1f} tokens/s decode aggregate "
                f"({w['tokens_per_s_wall']:.1f} with prefill){'' if w['full_length'] else ' (some streams ended early)'}")
    except Exception as e:  # recorded, so run_all.sh does not retry a server that cannot work on every call
        out["error"] = f"{type(e).__name__}: {e}"
        log(out["error"])
        raise
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
        with open(args.json + ".part", "w") as f:
            json.dump(out, f, indent=1)
        os.replace(args.json + ".part", args.json)


if __name__ == "__main__":
    main()
