#!/usr/bin/env bash
# Session 10 call 2: wip/s10 + 8-bit matrix-vector products decoding after the wait (HEARTH_CUDA_MV_LATE):
# GPU checks; decode after 2,048 tokens with the knob off/on/on with a 10-block register cap; a 64-stream
# step's per-kernel profile; attention's blocks per SM at 64 streams.
set -uo pipefail
t0=$SECONDS
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
tar xJf device/bin.tar.xz -C device
nvidia-smi --query-gpu=name --format=csv,noheader
export HEARTH_CUDA_CACHE=/tmp/hearth-cuda-cache
mkdir -p /root/z
B=device/bin
M=/root/hearth-bench
bench/cuda/run_all.sh --out /root/res-copy --synth --hearth $B/hearth --only models --budget 200 2>&1 | grep -v "^|" | tail -1
OUT=/root/z/check scripts/cuda_check.sh $B 2>&1 | grep -E "^(PASS|FAIL)" | sort | uniq -c
grep -h -E "panicked|FAILED" -A6 /root/z/check/*.log | head -30
echo "check at $((SECONDS-t0)) s"
tar czf $OUT/z.tgz -C /root z
for round in 1 2; do
  for m in q4_k_m q8_0; do
    [ $round = 2 ] && [ $m = q8_0 ] && continue
    for s in "HEARTH_CUDA_MV_LATE=0" "HEARTH_CUDA_MV_LATE=1" "HEARTH_CUDA_MIN_BLOCKS=10"; do
      r=$(env $s $B/hearth --device cuda bench --model $M/llama8b-$m.gguf --prompt-tokens 2048 --gen-tokens 64 --reps 2 2>/dev/null | grep -E '^(prefill|decode):' | cut -d' ' -f2 | paste -sd/)
      echo "$m $s: $r"
    done
  done
done | tee /root/z/decode.txt
echo "decode at $((SECONDS-t0)) s"
tar czf $OUT/z.tgz -C /root z
MODELS="q4_k_m" STREAMS=64 bench/cuda/ab_serve.sh /root/z/serve-attn $B/hearth "-" "HEARTH_CUDA_ATTN_BLOCKS_PER_SM=8" "HEARTH_CUDA_ATTN_BLOCKS_PER_SM=16" 2>&1 | grep -v "^  at"
MODELS="q4_k_m" STREAMS=64 bench/cuda/ab_serve.sh /root/z/serve-prof $B/hearth "HEARTH_CUDA_PROFILE=1" 2>&1 | grep -v "^  at"
ls /root/z/serve-prof
f=$(ls /root/z/serve-prof/*.server.log)
grep -h -A40 "GPU kernel times" $f | tail -45
echo "done at $((SECONDS-t0)) s"
tar czf $OUT/z.tgz -C /root z
