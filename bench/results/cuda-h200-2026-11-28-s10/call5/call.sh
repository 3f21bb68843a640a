#!/usr/bin/env bash
# Session 10 call 5 (final): wip/s10 (call 4's build, and q/k/v split-K sums added by qkv_finish) against main
# 3eb64b1: GPU checks, decode and prefill with llama.cpp built in the same call; Q6_K's register cap; the
# server's 1/16/64 streams and first token.
set -uo pipefail
t0=$SECONDS
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
tar xJf device/bin.tar.xz -C device
nvidia-smi --query-gpu=name --format=csv,noheader
export HEARTH_CUDA_CACHE=/tmp/hearth-cuda-cache
mkdir -p /root/z
B=device/bin
MODELS="q4_k_m q8_0 bf16" GEN=128 bench/cuda/ab_decode.sh /root/z/ab $B/hearth $B/hearth_main 2>&1 | grep -v "^  at"
grep -h -E "panicked|FAILED" -A6 /root/z/ab/check/*.log | head -30
echo "ab at $((SECONDS-t0)) s"
tar czf $OUT/z.tgz -C /root z
MODELS="q4_k_m q8_0" STREAMS=1,16,64 bench/cuda/ab_serve.sh /root/z/serve-new $B/hearth "-" 2>&1 | grep -v "^  at"
tar czf $OUT/z.tgz -C /root z
MODELS="q4_k_m q8_0" STREAMS=1,64 bench/cuda/ab_serve.sh /root/z/serve-main $B/hearth_main "-" 2>&1 | grep -v "^  at"
tar czf $OUT/z.tgz -C /root z
for round in 1 2; do
  for b in hearth hearth_q6k8; do
    echo "q4_k_m $b: $($B/$b --device cuda bench --model /root/hearth-bench/llama8b-q4_k_m.gguf --prompt-tokens 2048 --gen-tokens 128 --reps 2 2>/dev/null | grep -E '^(prefill|decode):' | cut -d' ' -f2 | paste -sd/)"
  done
done | tee /root/z/q6k.txt
echo "done at $((SECONDS-t0)) s"
tar czf $OUT/z.tgz -C /root z
