#!/usr/bin/env bash
# Session 5 call 3: dqmm with eight warps of 16 rows: GPU checks; A/B of
# settings; profiles of 64- and 100-token prefills; ncu of the big products at 64 rows.
set -uo pipefail
t0=$SECONDS
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
tar xJf device/bin.tar.xz -C device && tar xJf device/base4.tar.xz -C device/bin
nvidia-smi --query-gpu=name --format=csv,noheader
mkdir -p /root/z
OUT=/root/check scripts/cuda_check.sh device/bin > /root/z/check.txt 2>&1
grep -E "^(PASS|FAIL)" /root/z/check.txt | sort -u
grep -h -E "panicked" -A4 /root/check/*.log | head -12
cp /root/check/*.log /root/z/
echo "check at $((SECONDS-t0)) s"
m=/root/hearth-bench/llama8b-q8_0.gguf
MODELS="q8_0 q4_k_m" bench/cuda/ab_serve.sh /root/z/serve device/bin/hearth "-" "HEARTH_CUDA_DQMM_ROWS=256" "HEARTH_CUDA_DQMM_MIN_STEPS=2" 2>&1 | grep -v "^  at"
echo "serve at $((SECONDS-t0)) s"
for mm in q8_0 q4_k_m; do
  for p in 64 100; do
    echo "== $mm DQMM_ROWS=256 prompt $p"
    HEARTH_CUDA_DQMM_ROWS=256 HEARTH_CUDA_PROFILE=1 device/bin/hearth --device cuda bench --model /root/hearth-bench/llama8b-$mm.gguf --prompt-tokens $p --gen-tokens 2 --reps 2 2>&1 | sed -n '/prefill of/,/decode steps/p' | head -6
  done
done
echo "profiles at $((SECONDS-t0)) s"
timeout 120 /usr/local/cuda/bin/ncu --kernel-name regex:'^dqmm_f16' --launch-skip 11 --launch-count 3 --section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats --section MemoryWorkloadAnalysis_Tables --section ComputeWorkloadAnalysis --print-details all \
  device/bin/hearth --device cuda bench --model $m --prompt-tokens 64 --gen-tokens 1 --reps 1 > /root/z/ncu-q8_0.txt 2>&1
grep -E "dqmm_f16 \(|Duration|Registers Per|Achieved Occupancy|Issue Slots Busy|Warp Cycles Per Issued|way bank|Stall|DRAM Throughput|Memory Throughput" /root/z/ncu-q8_0.txt | head -40
echo "done at $((SECONDS-t0)) s"
tar czf $OUT/z.tgz -C /root z
