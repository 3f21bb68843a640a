#!/usr/bin/env bash
# Session 9 call 2: dqmm on warpgroup MMA (wip/wgmma). GPU checks (dqmm kernel tests both loops), then server
# numbers for the wgmma loop (2 slots), the mma.sync loop (HEARTH_CUDA_DQMM_WGMMA=0), 1 and 4 slots; prefill
# of 100 / 256 / 2048 tokens with dqmm taking more rows; ncu of the wgmma dqmm on a 100-token prefill.
set -uo pipefail
t0=$SECONDS
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
tar xJf device/bin.tar.xz -C device
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
export HEARTH_CUDA_CACHE=/tmp/hearth-cuda-cache
mkdir -p /root/z
B=device/bin
OUT=/root/z/check scripts/cuda_check.sh $B 2>&1 | grep -E "^(PASS|FAIL)"
grep -h -E "panicked|mismatch|FAILED|max " -A3 /root/z/check/engine_dqmm*.log | head -40
echo "check at $((SECONDS-t0)) s"
tar czf $OUT/z.tgz -C /root z
bench/cuda/run_all.sh --out /root/res-copy --synth --hearth $B/hearth --only models --budget 200 2>&1 | tail -1
M=/root/hearth-bench
for m in q4_k_m q8_0; do
  for s in "HEARTH_CUDA_DQMM_WGMMA=0" "HEARTH_CUDA_DQMM_WGMMA=1"; do
    env $s HEARTH_CUDA_PROFILE=1 $B/hearth --device cuda bench --model $M/llama8b-$m.gguf --prompt-tokens 100 --gen-tokens 2 --reps 2 > /root/z/prof100-$m-$s.txt 2>&1
    echo "$m $s: $(grep -E '^prefill' /root/z/prof100-$m-$s.txt | tail -1) $(grep -E '^dqmm_f16' /root/z/prof100-$m-$s.txt | head -1)"
  done
done
tar czf $OUT/z.tgz -C /root z
MODELS="q4_k_m q8_0" STREAMS=1,16,64 bench/cuda/ab_serve.sh /root/z/serve $B/hearth "-" "HEARTH_CUDA_DQMM_WGMMA=0" "HEARTH_CUDA_DQMM_WG_SLOTS=1" "HEARTH_CUDA_DQMM_WG_SLOTS=4" 2>&1 | grep -v "^  at"
echo "serve at $((SECONDS-t0)) s"
tar czf $OUT/z.tgz -C /root z
for m in q4_k_m q8_0; do
  for p in 256 512 2048; do
    for s in "HEARTH_CUDA_DQMM_ROWS=128" "HEARTH_CUDA_DQMM_ROWS=4096"; do
      echo "$m prompt $p $s: $(env $s $B/hearth --device cuda bench --model $M/llama8b-$m.gguf --prompt-tokens $p --gen-tokens 2 --reps 2 2>/dev/null | grep -E '^prefill')"
    done
  done
done
echo "rows at $((SECONDS-t0)) s"
/usr/local/cuda/bin/ncu --kernel-name regex:dqmm_f16 --launch-skip 20 --launch-count 2 --graph-profiling node \
  --section SpeedOfLight --section WarpStateStats --section SchedulerStats --section Occupancy --section LaunchStats \
  --metrics "regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio" \
  $B/hearth --device cuda bench --model $M/llama8b-q4_k_m.gguf --prompt-tokens 100 --gen-tokens 2 --reps 1 > /root/z/ncu-dqmm-wg.txt 2>&1
grep -E "Duration|Warp Cycles Per Issued|Issued Ipc|Achieved Occupancy|Registers|Grid Size|Memory Throughput|Compute \(SM\)" /root/z/ncu-dqmm-wg.txt | head -20
grep -E "stalled" /root/z/ncu-dqmm-wg.txt | awk '$NF+0 > 0.1' | head -20
echo "done at $((SECONDS-t0)) s"
tar czf $OUT/z.tgz -C /root z
