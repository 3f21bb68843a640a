#!/usr/bin/env python3
"""Run THERE: the Hugging Face transformers baseline on one HF folder (bf16), the numbers hearth's CUDA backend is
set against beside llama.cpp's:

  prefill    one forward over PREFILL random token ids (logits for the last position only, as hearth bench and
             llama-bench compute), timed with CUDA events after warm-up; median of --reps.
  decode     batch 1, model.generate with a static KV cache (transformers compiles the decode step with
             torch.compile when the cache is static and the device is CUDA). If that fails, the same without
             compiling, then the default dynamic cache; the JSON says which one ran.
  batch B    aggregate tokens/s of B sequences decoding together (generate on a batch of B short prompts).

Decode speeds exclude the prompt: each is N / (time of generate with N+1 new tokens - time with 1 new token),
both forced to full length (min_new_tokens), so the prefill and the per-call setup cancel out. Running the long
call first keeps the static cache sized for it (transformers reuses the larger size), so the short call
recompiles nothing.

usage: hf_bench.py MODEL_DIR --json OUT.json [--prefill 2048] [--decode 128] [--batches 16,64] [--reps 3]
       [--batch-cache dynamic|static] [--compile auto|off] [--budget-s S] [--device cuda|cpu] [--resume]
Prints one summary line per measurement and writes the JSON after each one (a run cut short keeps what it had;
--resume keeps the measurements an earlier run of the same settings already wrote there and does the rest).
"""
import argparse
import json
import os
import platform
import statistics
import sys
import time
import traceback

T0 = time.monotonic()


def log(msg):
    print(f"[hf_bench {time.monotonic() - T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


class Bench:
    def __init__(self, args):
        import torch
        import transformers
        from transformers import AutoModelForCausalLM

        self.torch = torch
        self.args = args
        self.cuda = args.device.startswith("cuda")
        self.result = {
            "model": os.path.abspath(args.model), "device": args.device, "torch": torch.__version__,
            "transformers": transformers.__version__, "python": platform.python_version(),
            "gpu": torch.cuda.get_device_name(0) if self.cuda else None,
        }
        t = time.monotonic()
        def load(**kw):
            try:
                return AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.bfloat16, **kw)
            except TypeError:  # transformers before 4.56 calls it torch_dtype
                return AutoModelForCausalLM.from_pretrained(args.model, torch_dtype=torch.bfloat16, **kw)

        try:
            self.model = load(device_map=args.device)
        except (ImportError, ValueError) as e:  # some versions want accelerate for device_map
            if "accelerate" not in str(e):
                raise
            log(f"device_map unavailable ({e}); loading on the CPU, then moving")
            self.model = load().to(args.device)
        self.model.eval()
        self.vocab = self.model.config.vocab_size
        self.result["load_s"] = round(time.monotonic() - t, 2)
        self.result["attn_implementation"] = getattr(self.model.config, "_attn_implementation", None)
        log(f"loaded {args.model} in {self.result['load_s']} s ({self.result['attn_implementation']} attention)")
        self.gen = torch.Generator(device="cpu").manual_seed(0)
        if args.resume and args.json and os.path.exists(args.json):
            with open(args.json) as f:
                old = json.load(f)
            if old.get("settings") == self.settings():
                for k in ("prefill", "decode", "batched"):
                    if k in old and "error" not in old[k]:
                        self.result[k] = old[k]
                log(f"resuming: kept {', '.join(k for k in ('prefill', 'decode', 'batched') if k in self.result)}")
        self.result["settings"] = self.settings()

    def settings(self):
        a = self.args
        return {"prefill": a.prefill, "decode": a.decode, "decode_prompt": a.decode_prompt,
                "batch_prompt": a.batch_prompt, "batch_cache": a.batch_cache, "reps": a.reps, "compile": a.compile}

    def sync(self):
        if self.cuda:
            self.torch.cuda.synchronize()

    def ids(self, batch, length):
        # Ordinary ids above the special tokens; speed does not depend on the text.
        t = self.torch.randint(256, self.vocab, (batch, length), generator=self.gen)
        return t.to(self.args.device)

    def save(self):
        if self.args.json:
            tmp = self.args.json + ".part"
            with open(tmp, "w") as f:
                json.dump(self.result, f, indent=1)
            os.replace(tmp, self.args.json)

    def left(self):
        return self.args.budget_s - (time.monotonic() - T0) if self.args.budget_s else float("inf")

    # --- prefill ------------------------------------------------------------------------------------------------

    def prefill(self):
        torch, n = self.torch, self.args.prefill
        ids = self.ids(1, n)

        def forward():
            try:
                return self.model(input_ids=ids, use_cache=False, logits_to_keep=1)
            except TypeError:  # older name
                return self.model(input_ids=ids, use_cache=False, num_logits_to_keep=1)

        times = []
        with torch.inference_mode():
            for _ in range(2):
                forward()
            self.sync()
            for _ in range(self.args.reps + 2):
                if self.cuda:
                    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                    a.record()
                    forward()
                    b.record()
                    b.synchronize()
                    times.append(a.elapsed_time(b) / 1e3)
                else:
                    t = time.perf_counter()
                    forward()
                    times.append(time.perf_counter() - t)
        s = statistics.median(times)
        self.result["prefill"] = {"tokens": n, "median_s": s, "tokens_per_s": n / s, "reps": len(times),
                                  "timer": "cuda events" if self.cuda else "perf_counter"}
        log(f"prefill {n} tokens: {n / s:.1f} tokens/s (median of {len(times)})")

    # --- decode -------------------------------------------------------------------------------------------------

    def generate_s(self, ids, new_tokens, mode):
        kw = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                  pad_token_id=self.model.config.eos_token_id if self.model.config.eos_token_id is not None else 0,
                  attention_mask=self.torch.ones_like(ids))
        if mode in ("static", "static-eager"):
            kw["cache_implementation"] = "static"
        if mode == "static-eager" or self.args.compile == "off":
            kw["disable_compile"] = True
        self.sync()
        t = time.perf_counter()
        with self.torch.inference_mode():
            out = self.model.generate(ids, **kw)
        self.sync()
        dt = time.perf_counter() - t
        if out.shape[1] != ids.shape[1] + new_tokens:
            raise RuntimeError(f"generate returned {out.shape[1] - ids.shape[1]} new tokens, not {new_tokens}")
        return dt

    def decode_rate(self, batch, prompt, mode, warmups):
        """(aggregate tokens/s, details) for `batch` sequences decoding self.args.decode tokens each."""
        n = self.args.decode
        ids = self.ids(batch, prompt)
        t = time.monotonic()
        for _ in range(warmups):  # first calls compile and record CUDA graphs
            self.generate_s(ids, n + 1, mode)
            self.generate_s(ids, 1, mode)
        warm = time.monotonic() - t
        longs, shorts = [], []
        for _ in range(self.args.reps):
            longs.append(self.generate_s(ids, n + 1, mode))
            shorts.append(self.generate_s(ids, 1, mode))
        dt = statistics.median(longs) - statistics.median(shorts)
        rate = batch * n / dt
        return rate, {"batch": batch, "prompt_tokens": prompt, "new_tokens": n, "cache": mode,
                      "tokens_per_s": rate, "per_sequence_tokens_per_s": rate / batch, "warmup_s": round(warm, 2),
                      "long_s": longs, "short_s": shorts,
                      "compiled_forward": hasattr(self.model, "_compiled_call")}

    def decode(self):
        errors = []
        modes = ["static", "static-eager", "dynamic"] if self.args.compile == "auto" else ["static-eager", "dynamic"]
        for mode in modes:
            try:
                _, d = self.decode_rate(1, self.args.decode_prompt, mode, warmups=2)
                d["fallback_errors"] = errors
                self.result["decode"] = d
                log(f"decode batch 1 ({mode} cache{', compiled' if d['compiled_forward'] and mode == 'static' else ''}): "
                    f"{d['tokens_per_s']:.1f} tokens/s (warm-up {d['warmup_s']} s)")
                return
            except Exception as e:  # noqa: BLE001 (any failure: fall back and say so)
                msg = f"{mode}: {type(e).__name__}: {e}"
                log(f"decode with {mode} cache failed, falling back: {msg[:300]}")
                errors.append(msg[:2000])
                traceback.print_exc(limit=3)
        self.result["decode"] = {"error": errors}

    def batches(self):
        out = self.result.setdefault("batched", {})
        for b in self.args.batches:
            if "tokens_per_s" in out.get(str(b), {}):
                continue
            if self.left() < 60:
                log(f"batch {b} skipped: {self.left():.0f} s of the budget left")
                continue
            try:
                _, d = self.decode_rate(b, self.args.batch_prompt, self.args.batch_cache, warmups=1)
                out[str(b)] = d
                log(f"decode batch {b} ({self.args.batch_cache} cache): {d['tokens_per_s']:.1f} tokens/s aggregate")
            except Exception as e:  # noqa: BLE001
                out[str(b)] = {"error": f"{type(e).__name__}: {e}"[:2000]}
                log(f"batch {b} failed: {e}")
            self.save()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--json")
    ap.add_argument("--device", default=None, help="default cuda when available, else cpu")
    ap.add_argument("--prefill", type=int, default=2048, help="prefill tokens (0 skips)")
    ap.add_argument("--decode", type=int, default=128, help="decoded tokens per sequence")
    ap.add_argument("--decode-prompt", type=int, default=16, help="prompt tokens before batch-1 decode")
    ap.add_argument("--batches", default="16,64", help="batch sizes for aggregate decode (empty skips)")
    ap.add_argument("--batch-prompt", type=int, default=32, help="prompt tokens per sequence in a batch")
    ap.add_argument("--batch-cache", default="dynamic", choices=["dynamic", "static", "static-eager"],
                    help="KV cache for the batched runs (static compiles once per batch size)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--compile", default="auto", choices=["auto", "off"])
    ap.add_argument("--skip", default="", help="comma list of prefill,decode,batched")
    ap.add_argument("--budget-s", type=float, default=0, help="skip measurements that would start too late")
    ap.add_argument("--resume", action="store_true", help="keep finished measurements found in --json")
    args = ap.parse_args()
    args.batches = [int(x) for x in args.batches.split(",") if x]
    skip = set(args.skip.split(","))
    import torch
    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.device == "cpu":
        log("no CUDA: CPU run (for testing the script; numbers mean nothing)")

    b = Bench(args)
    b.save()
    if args.prefill and "prefill" not in skip and "prefill" not in b.result:
        b.prefill()
        b.save()
    if "decode" not in skip and "tokens_per_s" not in b.result.get("decode", {}):
        if b.left() < 90:  # compiling alone can take a minute or two
            log(f"decode skipped: {b.left():.0f} s of the budget left")
        else:
            b.decode()
        b.save()
    if args.batches and "batched" not in skip:
        b.batches()
    b.save()
    r = b.result
    print(f"transformers {r['transformers']} on {r['gpu'] or r['device']}: {os.path.basename(args.model.rstrip('/'))}")
    if "prefill" in r:
        print(f"  prefill {r['prefill']['tokens']} tokens: {r['prefill']['tokens_per_s']:.1f} tokens/s")
    d = r.get("decode", {})
    if "tokens_per_s" in d:
        print(f"  decode batch 1 ({d['cache']} cache): {d['tokens_per_s']:.1f} tokens/s")
    for k, v in r.get("batched", {}).items():
        if "tokens_per_s" in v:
            print(f"  decode batch {k} ({v['cache']} cache): {v['tokens_per_s']:.1f} tokens/s aggregate")
    if args.json:
        print(f"  json: {args.json}")


if __name__ == "__main__":
    main()
