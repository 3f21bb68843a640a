#!/usr/bin/env bash
# Session 9 call 4: wip/wgmma c4 (mma.sync dqmm only: per-row templates, full-step fast paths, Q8_0 aligned
# step, Q6_K compile-time sub-block, non-volatile mma asm) against main b4f138a: GPU checks; server numbers;
# dqmm split-K sweep at 64 streams; prefill 2,048 and decode of the three files (flash and matvec unchanged).
set -uo pipefail
t0=$SECONDS
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
tar xJf device/bin.tar.xz -C device
nvidia-smi --query-gpu=name --format=csv,noheader
export HEARTH_CUDA_CACHE=/tmp/hearth-cuda-cache
mkdir -p /root/z
B=device/bin
OUT=/root/z/check scripts/cuda_check.sh $B 2>&1 | grep -E "^(PASS|FAIL)" | sort | uniq -c
grep -h -E "panicked|FAILED" -A6 /root/z/check/*.log | head -30
echo "check at $((SECONDS-t0)) s"
tar czf $OUT/z.tgz -C /root z
MODELS="q4_k_m q8_0" STREAMS=1,16,64 bench/cuda/ab_serve.sh /root/z/serve-new $B/hearth "-" 2>&1 | grep -v "^  at"
MODELS="q4_k_m q8_0" STREAMS=1,16,64 bench/cuda/ab_serve.sh /root/z/serve-main $B/hearth_main "-" 2>&1 | grep -v "^  at"
echo "serve at $((SECONDS-t0)) s"
tar czf $OUT/z.tgz -C /root z
MODELS="q4_k_m q8_0" STREAMS=64 bench/cuda/ab_serve.sh /root/z/serve-waves $B/hearth "HEARTH_CUDA_DQMM_WAVES=2" "HEARTH_CUDA_DQMM_WAVES=3" "HEARTH_CUDA_DQMM_MIN_STEPS=4" 2>&1 | grep -v "^  at"
echo "waves at $((SECONDS-t0)) s"
tar czf $OUT/z.tgz -C /root z
M=/root/hearth-bench
for m in q4_k_m q8_0 bf16; do
  for b in hearth hearth_main; do
    echo "$m $b: $($B/$b --device cuda bench --model $M/llama8b-$m.gguf --prompt-tokens 2048 --gen-tokens 64 --reps 2 2>/dev/null | grep -E '^(prefill|decode):' | cut -d' ' -f2 | paste -sd/)"
  done
done
echo "done at $((SECONDS-t0)) s"
tar czf $OUT/z.tgz -C /root z
