#!/usr/bin/env bash
# Session 6 call 3: matrix-vector products load their first weights before the dependent-launch wait. GPU
# checks; decode and prefill of the three 8B files, this build against main (36626fa) interleaved, and
# llama.cpp built and run in the same call; then knob variants and an ncu look at attention.
set -uo pipefail
t0=$SECONDS
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
tar xJf device/bin.tar.xz -C device
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
mkdir -p /root/z
MODELS="q4_k_m q8_0 bf16" bench/cuda/ab_decode.sh /root/z/ab device/bin/hearth device/bin/hearth_main 2>&1 | grep -v "^  at"
grep -h -E "panicked" -A4 /root/z/ab/check/*.log | head -12
grep -h "copy" /root/z/ab/*.txt | head -2
echo "ab at $((SECONDS-t0)) s"
B() { env $3 device/bin/$2 --device cuda bench --model /root/hearth-bench/llama8b-$1.gguf --prompt-tokens 2048 --gen-tokens 128 --reps 2 2>/dev/null | grep -E "^decode:" | cut -d' ' -f2; }
echo "q4_k_m new $(B q4_k_m hearth X=1) prefetch=0 $(B q4_k_m hearth HEARTH_CUDA_PREFETCH=0) upt=2 $(B q4_k_m hearth HEARTH_CUDA_UPT=2)"
echo "bf16 new $(B bf16 hearth X=1) prefetch=1 $(B bf16 hearth HEARTH_CUDA_PREFETCH=1) nr=4 $(B bf16 hearth HEARTH_CUDA_NR=4)"
echo "knobs at $((SECONDS-t0)) s"
HEARTH_PROFILER_RANGE=1 timeout 120 /usr/local/cuda/bin/ncu --profile-from-start off --clock-control none --graph-profiling node -k regex:attn_decode --launch-count 1 --section SpeedOfLight --section WarpStateStats --section SourceCounters --section LaunchStats --section Occupancy --section SchedulerStats \
  device/bin/hearth bench --model /root/hearth-bench/llama8b-q8_0.gguf --prompt-tokens 2048 --gen-tokens 2 --reps 1 --device cuda > /root/z/ncu-attn.txt 2>&1
grep -v "^==PROF==" /root/z/ncu-attn.txt | grep -E "Duration|Memory Throughput|DRAM Through|Stall|Warp Cycles Per Issued|Eligible Warps|Achieved Occ" | head -20
echo "done at $((SECONDS-t0)) s"
tar czf $OUT/z.tgz -C /root z
