#!/usr/bin/env bash
# Prepared in session 6 for session 7's first device call. device/bin.tar.xz was staged at the end of session 6
# from branch wip/attn-mma at ad070ca (scripts/stage_device_bins.sh). Run it with the branch checked out (the
# call copies the working tree, and the branch's scripts/cuda_check.sh runs its new tests); restage if the
# branch moved:  git checkout wip/attn-mma && scripts/stage_device_bins.sh && tar cJf device/bin.tar.xz -C device bin
# carry: device/bin.tar.xz device/llama8b-layouts device/llama.cpp-src.tar.xz device/next-session-call1.sh
# GPU checks (the new kernel tests; fixtures with the FMA attention; the 8-bit decode with Q4_K pairs; dqmm with
# 128-row blocks); decode and prefill of the three 8B files with tensor-core attention on (hearth) and off
# (hearth_fma), llama.cpp in the same call; Q4_K_M decode with and without Q4_K pairs.
set -uo pipefail
t0=$SECONDS
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
tar xJf device/bin.tar.xz -C device
printf '#!/bin/sh\nHEARTH_CUDA_ATTN_MMA=0 exec "$(dirname "$0")/hearth" "$@"\n' > device/bin/hearth_fma && chmod +x device/bin/hearth_fma
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
mkdir -p /root/z
MODELS="q4_k_m q8_0 bf16" bench/cuda/ab_decode.sh /root/z/ab device/bin/hearth device/bin/hearth_fma 2>&1 | grep -v "^  at"
grep -h -E "panicked" -A6 /root/z/ab/check/*.log | head -30
echo "ab at $((SECONDS-t0)) s"
tar czf $OUT/z.tgz -C /root z
for rep in 1 2; do for e in X=1 HEARTH_CUDA_Q4K_PAIRS=1; do
  echo "q4_k_m $e decode: $(env $e device/bin/hearth --device cuda bench --model /root/hearth-bench/llama8b-q4_k_m.gguf --prompt-tokens 2048 --gen-tokens 128 --reps 2 2>/dev/null | grep -E '^decode:' | cut -d' ' -f2)"
done; done
echo "done at $((SECONDS-t0)) s"
tar czf $OUT/z.tgz -C /root z
