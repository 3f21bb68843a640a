#!/usr/bin/env bash
# Session 8 call 1: main ecc8ec9. GPU checks (session 7's untested test assertions and refactor), then where
# decode time goes: per-kernel profile (weights GB/s), in-graph cost of each small kernel (HEARTH_CUDA_SKIP),
# ncu details of the Q4_K/Q6_K matrix-vector kernels.
set -uo pipefail
t0=$SECONDS
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
tar xJf device/bin.tar.xz -C device
nvidia-smi --query-gpu=name,memory.total,clocks.max.memory --format=csv,noheader
Z=/root/z; mkdir -p $Z
H=device/bin/hearth
bench/cuda/run_all.sh --out /root/res-copy --synth --hearth $H --only models --budget 200 2>&1 | grep -v "^|" | tail -1
echo "models at $((SECONDS-t0)) s"
OUT=$Z/check scripts/cuda_check.sh device/bin 2>&1 | grep -E "^(PASS|FAIL)"
grep -h -E "panicked" -A6 $Z/check/*.log | head -30
echo "check at $((SECONDS-t0)) s"
M=/root/hearth-bench
b() { "$H" --device cuda bench --model $M/llama8b-$1.gguf --prompt-tokens ${P:-2048} --gen-tokens ${G:-64} --reps 1 2>/dev/null | grep -E "^(prefill|decode):" | paste -sd' '; }
for m in q4_k_m q8_0 bf16; do
  echo "== $m base: $(b $m)"
  echo "== $m short(16): $(P=16 b $m)"
  for k in rmsnorm_rows qkv_finish attn_decode quantize_q8 argmax_rows; do
    echo "== $m SKIP=$k: $(HEARTH_CUDA_SKIP=$k b $m)"
  done
  HEARTH_CUDA_PROFILE=1 "$H" --device cuda bench --model $M/llama8b-$m.gguf --prompt-tokens 2048 --gen-tokens 16 --reps 1 > $Z/profile-$m.txt 2>&1
  sed -n '/GPU time by kernel, decode/,/^$/p' $Z/profile-$m.txt | head -24
  HEARTH_CUDA_PROFILE=1 "$H" --device cuda bench --model $M/llama8b-$m.gguf --prompt-tokens 16 --gen-tokens 16 --reps 1 > $Z/profile-short-$m.txt 2>&1
  echo "$m at $((SECONDS-t0)) s"
  tar czf $OUT/z.tgz -C /root z
done
NCU=$(command -v ncu || ls -d /usr/local/cuda/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | tail -1)
echo "ncu: $NCU"
HEARTH_PROFILER_RANGE=1 timeout 200 "$NCU" --profile-from-start off --clock-control none --cache-control none --graph-profiling node \
  -k regex:'mvq8|gluq8' --launch-skip 24 --launch-count 10 --set full \
  "$H" --device cuda bench --model $M/llama8b-q4_k_m.gguf --prompt-tokens 2048 --gen-tokens 4 --reps 1 > $Z/ncu-q4km-full.txt 2>&1
echo "ncu rc $? at $((SECONDS-t0)) s"
grep -E "^  [a-z_0-9]+.*\(|Duration|DRAM Throughput|Memory Throughput|Achieved Occupancy|Registers Per|Theoretical Occupancy|Block Limit|Warp Cycles Per Issued|Issued Ipc|No Eligible|One or More" $Z/ncu-q4km-full.txt | head -150
tar czf $OUT/z.tgz -C /root z
echo "done at $((SECONDS-t0)) s"
