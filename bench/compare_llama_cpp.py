#!/usr/bin/env python3
"""hearth against llama.cpp on the same GGUF file, same thread count, interleaved in one run.

llama.cpp comes from llama-cpp-python built from source (pip install llama-cpp-python compiles it with the
machine's compiler). Each repetition runs `hearth bench --reps 1` and then the same measurement in llama.cpp:
prefill of a PROMPT-token prompt in one batch, then greedy decode of GEN tokens one at a time. Prints the medians
and hearth/llama.cpp ratios as a Markdown table row.

usage: bench/compare_llama_cpp.py --hearth target/release/hearth --model models/X.gguf [--threads 2]
       [--prompt 512] [--gen 128] [--reps 5] [--hearth-flag=--quantized-activations]
"""
import argparse
import random
import re
import statistics
import subprocess
import time

import numpy as np
from llama_cpp import Llama


def hearth_once(args):
    out = subprocess.run(
        [args.hearth, "--threads", str(args.threads), *args.hearth_flag, "bench", "--model", args.model, "--prompt-tokens",
         str(args.prompt), "--gen-tokens", str(args.gen), "--reps", "1"],
        check=True, capture_output=True, text=True).stdout
    num = lambda key: float(re.search(key + r": ([0-9.]+)", out).group(1))
    return num("prefill"), num("decode"), num("memory read bandwidth"), num("weight bytes per decoded token")


def llama_once(llm, args, rng):
    n_vocab = llm.n_vocab()
    prompt = [rng.randrange(256, n_vocab) for _ in range(args.prompt)]
    llm.reset()
    t0 = time.perf_counter()
    llm.eval(prompt)
    prefill = args.prompt / (time.perf_counter() - t0)
    nxt = int(np.argmax(llm.scores[llm.n_tokens - 1]))
    t1 = time.perf_counter()
    for _ in range(args.gen):
        llm.eval([nxt])
        nxt = int(np.argmax(llm.scores[llm.n_tokens - 1]))
    decode = args.gen / (time.perf_counter() - t1)
    return prefill, decode


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--hearth", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt", type=int, default=512)
    ap.add_argument("--gen", type=int, default=128)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--hearth-flag", action="append", default=[],
                    help="extra hearth flag, e.g. --hearth-flag=--quantized-activations")
    args = ap.parse_args()
    n_ctx = args.prompt + args.gen + 8
    # n_batch = n_ctx so llama-cpp-python keeps a logits row for every position (it indexes by position).
    llm = Llama(model_path=args.model, n_ctx=n_ctx, n_batch=n_ctx,
                n_ubatch=args.prompt, n_threads=args.threads, n_threads_batch=args.threads, verbose=False)
    rng = random.Random(0)
    h_pf, h_dc, l_pf, l_dc, bw, bpt = [], [], [], [], [], 0.0
    for rep in range(args.reps):
        pf, dc, b, bpt = hearth_once(args)
        h_pf.append(pf), h_dc.append(dc), bw.append(b)
        pf, dc = llama_once(llm, args, rng)
        l_pf.append(pf), l_dc.append(dc)
        print(f"rep {rep + 1}: hearth prefill {h_pf[-1]:.1f} decode {h_dc[-1]:.1f} | "
              f"llama.cpp prefill {pf:.1f} decode {dc:.1f}", flush=True)
    m = statistics.median
    roof = m(bw) * 1e3 / bpt  # GB/s over MB per token
    print()
    print("| model | threads | hearth prefill tok/s | llama.cpp prefill | ratio | hearth decode tok/s | llama.cpp decode "
          "| ratio | roofline tok/s | hearth % of roofline |")
    print(f"| {args.model.split('/')[-1]} | {args.threads} | {m(h_pf):.1f} | {m(l_pf):.1f} | {m(h_pf) / m(l_pf):.2f} "
          f"| {m(h_dc):.1f} | {m(l_dc):.1f} | {m(h_dc) / m(l_dc):.2f} | {roof:.0f} | {100 * m(h_dc) / roof:.0f}% |")


if __name__ == "__main__":
    main()
