#!/usr/bin/env bash
# Session 7 call 5: wip/launches a70b5c7 (grouped dqmm sums; norms, flash_prefill and attn_decode writing the
# GEMM's half-precision input; no attn_decode launch for all-prompt steps) against 5219e55 (grouped sums only).
# GPU checks; decode/prefill of the three 8B files, llama.cpp in the same call; server numbers for both.
set -uo pipefail
t0=$SECONDS
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
tar xJf device/bin.tar.xz -C device
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
mkdir -p /root/z
MODELS="q4_k_m q8_0 bf16" bench/cuda/ab_decode.sh /root/z/ab device/bin/hearth device/bin/hearth_prev 2>&1 | grep -v "^  at"
grep -h -E "panicked" -A6 /root/z/ab/check/*.log | head -30
echo "ab at $((SECONDS-t0)) s"
tar czf $OUT/z.tgz -C /root z
MODELS="q8_0 q4_k_m" STREAMS=1,64 bench/cuda/ab_serve.sh /root/z/serve-new device/bin/hearth "-" 2>&1 | grep -v "^  at"
MODELS="q8_0 q4_k_m" STREAMS=1,64 bench/cuda/ab_serve.sh /root/z/serve-prev device/bin/hearth_prev "-" 2>&1 | grep -v "^  at"
HEARTH_CUDA_PROFILE=1 device/bin/hearth --device cuda bench --model /root/hearth-bench/llama8b-q8_0.gguf --prompt-tokens 100 --gen-tokens 2 --reps 2 > /root/z/profile-prefill100.txt 2>&1
sed -n '/GPU time by kernel, prefill/,/^$/p' /root/z/profile-prefill100.txt | head -16
echo "done at $((SECONDS-t0)) s"
tar czf $OUT/z.tgz -C /root z
