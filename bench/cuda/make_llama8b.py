#!/usr/bin/env python3
"""Run THERE: a Llama-3-8B-shaped model with random weights, in every form the CUDA benchmarks read.

The GPU machine has no network and a device call carries at most 64 MiB, so the 8B model is made there:
decode and prefill speed depend on the shapes and weight types, not on the values. Steps (each skipped when its
output exists, so a call cut short by the 10-minute limit is continued by the next one):

  1. ROOT/llama8b-hf: LlamaForCausalLM built on the GPU in bf16 (hidden 4096, 32 layers, 32 heads, 8 KV heads,
     FFN 14336, rope theta 500000, context 8192, untied output), weights N(0, 0.02) and norms 1 from a fixed
     seed, saved with save_pretrained (safetensors), plus SmolLM2's tokenizer files (vocab 49152: the model's
     vocab is the tokenizer's). hearth and transformers load this folder as is.
  2. ROOT/llama8b-bf16.gguf: llama.cpp's convert_hf_to_gguf.py (from the packed source, its own gguf-py).
  3. ROOT/llama8b-q8_0.gguf and ROOT/llama8b-q4_k_m.gguf: llama-quantize.

usage: make_llama8b.py --tokenizer device/smollm2-tokenizer [--root /root/hearth-bench] [--budget-s S] [--hf-only]
       (--hf-only: step 1 only, for run_all.sh --synth, where the GGUFs come from synth_llama8b.py's layouts)
env:   HEARTH_BENCH_TINY=1  hidden 256, 2 layers, 4 heads (2 KV), FFN 512, names llama-tiny-*, on the CPU unless
                            --device says otherwise: to test the whole chain on a machine without a GPU.
       HEARTH_BENCH_ROOT    default for --root
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time

SHAPES = {
    # Llama 3 8B's layout with SmolLM2's vocabulary (the only tokenizer that travels to the machine).
    "8b": dict(hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
               intermediate_size=14336),
    "tiny": dict(hidden_size=256, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                 intermediate_size=512),
}
QUANTS = {"q8_0": "Q8_0", "q4_k_m": "Q4_K_M"}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
# Rough seconds per step for the 8B model on a 16-core H100 host; used only to decide whether a step can finish
# within --budget-s (the tiny model's steps take about a second).
ESTIMATE_S = {"hf": 120, "gguf": 150, "q8_0": 120, "q4_k_m": 180}

T0 = time.monotonic()


def log(msg):
    print(f"[make_llama8b {time.monotonic() - T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


def gib(n):
    return f"{n / 2**30:.2f} GiB"


def dir_bytes(path):
    return sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path))


def check_budget(args, step):
    if not args.budget_s:
        return
    need = 1 if args.tiny else ESTIMATE_S[step]
    left = args.budget_s - (time.monotonic() - T0)
    if need > left:
        log(f"stopping before step {step}: it needs about {need} s and {left:.0f} s of the budget are left; "
            "run again to continue")
        sys.exit(3)


def make_hf(args, out):
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(args.tokenizer)
    shape = SHAPES["tiny" if args.tiny else "8b"]
    config = LlamaConfig(
        vocab_size=len(tok), max_position_embeddings=8192, rms_norm_eps=1e-5, rope_theta=500000.0,
        tie_word_embeddings=False, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        pad_token_id=None, **shape)
    log(f"config: vocab {len(tok)}, {shape}; building on {args.device} in bf16")
    torch.manual_seed(args.seed)
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device(args.device):
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(default_dtype)
    # Our own init, whatever the transformers version's _init_weights does: matrices N(0, 0.02) (what a trained
    # model's spread roughly is, so activations stay finite through 32 layers), norm weights 1.
    gen = torch.Generator(device=args.device).manual_seed(args.seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2:
                p.normal_(0.0, 0.02, generator=gen)
            else:
                p.fill_(1.0)
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    n = sum(p.numel() for p in model.parameters())
    log(f"{n / 1e9:.3f} B parameters built; saving to {out}")
    part = out + ".part"
    shutil.rmtree(part, ignore_errors=True)
    model.config.dtype = torch.bfloat16
    model.save_pretrained(part, max_shard_size="5GB")
    for f in TOKENIZER_FILES:
        src = os.path.join(args.tokenizer, f)
        if os.path.exists(src):
            shutil.copy(src, os.path.join(part, f))
    del model
    os.replace(part, out)
    log(f"wrote {out} ({gib(dir_bytes(out))})")


def make_gguf(args, hf, out):
    script = os.path.join(args.llama_cpp, "convert_hf_to_gguf.py")
    if not os.path.exists(script):
        sys.exit(f"no {script}: unpack llama.cpp first (bench/cuda/build_llama_cpp_cuda.sh or --llama-cpp DIR)")
    env = dict(os.environ, PYTHONPATH=os.path.join(args.llama_cpp, "gguf-py") + os.pathsep
               + os.environ.get("PYTHONPATH", ""))
    part = out + ".part"
    cmd = [sys.executable, script, hf, "--outtype", "bf16", "--outfile", part]
    log(" ".join(cmd))
    with open(out + ".log", "w") as logf:
        res = subprocess.run(cmd, env=env, stdout=logf, stderr=subprocess.STDOUT)
    if res.returncode != 0:
        with open(out + ".log") as f:
            sys.stderr.write(f.read()[-3000:])
        sys.exit(f"convert_hf_to_gguf.py failed (log: {out}.log)")
    os.replace(part, out)
    log(f"wrote {out} ({gib(os.path.getsize(out))})")


def quantize(args, src, out, qtype):
    tool = os.path.join(args.llama_bin, "llama-quantize")
    part = out + ".part"
    cmd = [tool, src, part, qtype, str(os.cpu_count() or 1)]
    log(" ".join(cmd))
    with open(out + ".log", "w") as logf:
        res = subprocess.run(cmd, stdout=logf, stderr=subprocess.STDOUT)
    if res.returncode != 0:
        with open(out + ".log") as f:
            sys.stderr.write(f.read()[-3000:])
        sys.exit(f"llama-quantize failed (log: {out}.log)")
    os.replace(part, out)
    log(f"wrote {out} ({gib(os.path.getsize(out))})")


def main():
    tiny = os.environ.get("HEARTH_BENCH_TINY", "") not in ("", "0")
    root = os.environ.get("HEARTH_BENCH_ROOT", "/root/hearth-bench")
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokenizer", required=True, help="folder with SmolLM2's tokenizer.json and friends")
    ap.add_argument("--root", default=root)
    ap.add_argument("--llama-cpp", help="unpacked llama.cpp source (default ROOT/llama.cpp/src)")
    ap.add_argument("--llama-bin", help="folder with llama-quantize (default ROOT/llama.cpp/bin)")
    ap.add_argument("--device", help="torch device to build on (default cuda, or cpu with HEARTH_BENCH_TINY)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quants", default="q8_0,q4_k_m", help="comma list of q8_0, q4_k_m; empty for none")
    ap.add_argument("--budget-s", type=float, default=0, help="exit 3 before a step that would not finish in time")
    ap.add_argument("--hf-only", action="store_true", help="make the HF folder only (no GGUF conversion or quants)")
    args = ap.parse_args()
    args.tiny = tiny
    args.llama_cpp = args.llama_cpp or os.path.join(args.root, "llama.cpp", "src")
    args.llama_bin = args.llama_bin or os.path.join(args.root, "llama.cpp", "bin")
    args.device = args.device or ("cpu" if tiny else "cuda")
    os.makedirs(args.root, exist_ok=True)

    name = "llama-tiny" if tiny else "llama8b"
    hf = os.path.join(args.root, f"{name}-hf")
    bf16 = os.path.join(args.root, f"{name}-bf16.gguf")
    free = shutil.disk_usage(args.root).free
    log(f"root {args.root}: {gib(free)} free (the 8B set needs about 42 GiB: 15 + 15 + 8 + 4.6)")

    if os.path.exists(os.path.join(hf, "config.json")):
        log(f"have {hf}")
    else:
        check_budget(args, "hf")
        make_hf(args, hf)
    if args.hf_only:
        log("done (--hf-only)")
        return
    if os.path.exists(bf16):
        log(f"have {bf16}")
    else:
        check_budget(args, "gguf")
        make_gguf(args, hf, bf16)
    for q in [q for q in args.quants.split(",") if q]:
        out = os.path.join(args.root, f"{name}-{q}.gguf")
        if os.path.exists(out):
            log(f"have {out}")
            continue
        if not os.access(os.path.join(args.llama_bin, "llama-quantize"), os.X_OK):
            log(f"no llama-quantize in {args.llama_bin}: {q} skipped")
            continue
        check_budget(args, q)
        quantize(args, bf16, out, QUANTS[q])
    log("done")


if __name__ == "__main__":
    main()
