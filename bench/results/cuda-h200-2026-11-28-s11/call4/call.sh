#!/usr/bin/env bash
# Session 11 call 4 (wip/s11 dbe00de): GPU checks; attention alone (cap 4, splits per kernel); 1 and 64
# streams of Q4_K_M, two rounds: the tensor-core attention with 2 blocks a multiprocessor (default), the
# CUDA-core kernel at 4 (one split at 64 rows) and at 6 (two splits at 64 rows, as main).
set -uo pipefail
t0=$SECONDS
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
tar xJf device/bin.tar.xz -C device
export HEARTH_CUDA_CACHE=/tmp/hearth-cuda-cache
mkdir -p /root/z
B=device/bin
M=/root/hearth-bench
ATTN_BENCH_SPLITS=1,2 $B/hearth_engine attn_decode_bench --ignored --nocapture 2>&1 | grep -E "attn_decode|panicked" | tee /root/z/attn.txt
bench/cuda/run_all.sh --out /root/res-copy --synth --hearth $B/hearth --only models --budget 200 2>&1 | grep -v "^|" | tail -1
OUT=/root/z/check scripts/cuda_check.sh $B 2>&1 | grep -E "^(PASS|FAIL)" | sort | uniq -c
grep -h -E "panicked|FAILED" -A6 /root/z/check/*.log | head -30
echo "check at $((SECONDS-t0)) s"
tar czf $OUT/z.tgz -C /root z
for round in 1 2; do
MODELS="q4_k_m" STREAMS=1,64 bench/cuda/ab_serve.sh /root/z/serve$round $B/hearth "-" "HEARTH_CUDA_ATTN_MMA=0" "HEARTH_CUDA_ATTN_MMA=0 HEARTH_CUDA_ATTN_BLOCKS_PER_SM=6" 2>&1 | grep -v "^  at"
done
echo "serve at $((SECONDS-t0)) s"
for s in "HEARTH_CUDA_ATTN_MMA=1" "HEARTH_CUDA_ATTN_MMA=0"; do
  echo "q4_k_m $s: $(env $s $B/hearth --device cuda bench --model $M/llama8b-q4_k_m.gguf --prompt-tokens 2048 --gen-tokens 64 --reps 2 2>/dev/null | grep -E '^(prefill|decode):' | cut -d' ' -f2 | paste -sd/)"
done
echo "done at $((SECONDS-t0)) s"
tar czf $OUT/z.tgz -C /root z
