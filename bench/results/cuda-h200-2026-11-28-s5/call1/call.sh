#!/usr/bin/env bash
# Session 5 call 1: dqmm pipelined (2 x 2 warps, one barrier a step) and dequant_rows through the f16x2
# decoder: GPU checks; A/B against session 4's binary (hearth_s4); where a 100-token prefill's time goes; ncu.
set -uo pipefail
t0=$SECONDS
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
tar xJf device/bin.tar.xz -C device && tar xJf device/base4.tar.xz -C device/bin
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader
mkdir -p /root/z
OUT=/root/check scripts/cuda_check.sh device/bin > /root/z/check.txt 2>&1
grep -E "^(PASS|FAIL)" /root/z/check.txt
grep -h -E "panicked" -A4 /root/check/*.log | head -12
cp /root/check/*.log /root/z/
echo "check at $((SECONDS-t0)) s"
MODELS="q8_0 q4_k_m" bench/cuda/ab_serve.sh /root/z/serve device/bin/hearth "-" "HEARTH_CUDA_DQMM_ROWS=256" 2>&1 | tail -6
MODELS="q8_0 q4_k_m" bench/cuda/ab_serve.sh /root/z/serve4 device/bin/hearth_s4 "-" 2>&1 | tail -3
echo "serve at $((SECONDS-t0)) s"
m=/root/hearth-bench/llama8b-q8_0.gguf
for s in "HEARTH_CUDA_DQMM=0" "HEARTH_CUDA_DQMM_ROWS=256"; do
  for p in 64 100; do
    echo "== $s prompt $p"
    env HEARTH_CUDA_PROFILE=1 $s device/bin/hearth --device cuda bench --model $m --prompt-tokens $p --gen-tokens 2 --reps 2 2>&1 | sed -n '/prefill of/,/decode steps/p' | head -14
  done
done
echo "== session 4 binary, profile of prompt 100"
HEARTH_CUDA_PROFILE=1 device/bin/hearth_s4 --device cuda bench --model $m --prompt-tokens 100 --gen-tokens 2 --reps 2 2>&1 | sed -n '/prefill of/,/decode steps/p' | head -10
echo "profiles at $((SECONDS-t0)) s"
timeout 90 /usr/local/cuda/bin/ncu --kernel-name regex:'^dqmm_f16' --launch-skip 8 --launch-count 2 --section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats --section MemoryWorkloadAnalysis_Tables --section ComputeWorkloadAnalysis \
  device/bin/hearth --device cuda bench --model $m --prompt-tokens 64 --gen-tokens 1 --reps 1 > /root/z/ncu-q8_0.txt 2>&1
grep -E "dqmm|Duration|Registers Per|Achieved Occupancy|Compute \(SM\) Throughput|Issue Slots Busy|Warp Cycles Per Issued|Bank|Stall|Theoretical Occ|Block Limit" /root/z/ncu-q8_0.txt | head -40
echo "done at $((SECONDS-t0)) s"
tar czf $OUT/z.tgz -C /root z
