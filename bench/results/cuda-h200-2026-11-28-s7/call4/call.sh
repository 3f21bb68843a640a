#!/usr/bin/env bash
# Session 7 call 4: decode attention merged in thread-block clusters (wip/attn-cluster c1e2f75 + grouped dqmm
# sums). GPU checks; decode/prefill of the three 8B files with clusters (hearth) and without (hearth_nocl),
# llama.cpp in the same call; the attention kernel's time; server numbers for both.
set -uo pipefail
t0=$SECONDS
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
tar xJf device/bin.tar.xz -C device
printf '#!/bin/sh\nHEARTH_CUDA_ATTN_CLUSTER=0 exec "$(dirname "$0")/hearth" "$@"\n' > device/bin/hearth_nocl && chmod +x device/bin/hearth_nocl
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
mkdir -p /root/z
device/bin/hearth_engine decode_attention_kernels_match_reference_on_gpu --test-threads=1 --nocapture > /root/z/attn-test.txt 2>&1
grep -E "test result|panicked|off by|against|skipped" /root/z/attn-test.txt | head -8
MODELS="q4_k_m q8_0 bf16" bench/cuda/ab_decode.sh /root/z/ab device/bin/hearth device/bin/hearth_nocl 2>&1 | grep -v "^  at"
grep -h -E "panicked" -A6 /root/z/ab/check/*.log | head -30
echo "ab at $((SECONDS-t0)) s"
tar czf $OUT/z.tgz -C /root z
M=/root/hearth-bench/llama8b-q8_0.gguf
for e in X=1 HEARTH_CUDA_ATTN_CLUSTER=0 HEARTH_CUDA_ATTN_CLUSTER=8; do
  env $e HEARTH_CUDA_PROFILE=1 device/bin/hearth --device cuda bench --model $M --prompt-tokens 2048 --gen-tokens 32 --reps 1 > /root/z/prof-$e.txt 2>&1
  echo "$e: $(grep -E '^decode:' /root/z/prof-$e.txt | cut -d' ' -f2) | $(grep -E '^attn_decode' /root/z/prof-$e.txt | tail -1)"
done
for e in X=1 HEARTH_CUDA_ATTN_CLUSTER=8; do
  echo "q4_k_m $e decode: $(env $e device/bin/hearth --device cuda bench --model /root/hearth-bench/llama8b-q4_k_m.gguf --prompt-tokens 2048 --gen-tokens 128 --reps 2 2>/dev/null | grep -E '^decode:' | cut -d' ' -f2)"
done
tar czf $OUT/z.tgz -C /root z
MODELS="q8_0 q4_k_m" STREAMS=1,64 bench/cuda/ab_serve.sh /root/z/serve device/bin/hearth "-" "HEARTH_CUDA_ATTN_CLUSTER=0" 2>&1 | grep -v "^  at"
echo "done at $((SECONDS-t0)) s"
tar czf $OUT/z.tgz -C /root z
