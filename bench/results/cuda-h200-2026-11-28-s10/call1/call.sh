#!/usr/bin/env bash
# Session 10 call 1: wip/s10 (compact Q4_K dqmm copy, Q6_K frag_unit without step state, Q8_0 alignment
# hoisted) against main 3eb64b1: GPU checks; server numbers; where a 64-stream step's time goes; ncu of the
# Q4_K_M decode matrix-vector kernels.
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
MODELS="q4_k_m" STREAMS=1,64 bench/cuda/ab_serve.sh /root/z/serve-new2 $B/hearth "-" 2>&1 | grep -v "^  at"
echo "serve at $((SECONDS-t0)) s"
tar czf $OUT/z.tgz -C /root z
MODELS="q4_k_m" STREAMS=64 bench/cuda/ab_serve.sh /root/z/serve-diag $B/hearth "RUST_LOG=info,hearth_server=debug" "HEARTH_CUDA_SKIP=attn_decode" "HEARTH_CUDA_SKIP=rmsnorm_rows,qkv_finish,act_mul_half" "HEARTH_CUDA_SKIP=dqmm_sum,dqmm_sum3,argmax_rows" 2>&1 | grep -v "^  at"
grep -h "step times" /root/z/serve-diag/*.log | tail -5
echo "diag at $((SECONDS-t0)) s"
tar czf $OUT/z.tgz -C /root z
HEARTH_PROFILER_RANGE=1 /usr/local/cuda/bin/ncu --profile-from-start off --kernel-name regex:"mvq8_1|gluq8_1" --launch-count 12 --graph-profiling node \
  --section SpeedOfLight --section WarpStateStats --section SchedulerStats --section Occupancy \
  --section MemoryWorkloadAnalysis --section LaunchStats \
  --metrics "regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio" \
  $B/hearth --device cuda bench --model /root/hearth-bench/llama8b-q4_k_m.gguf --prompt-tokens 16 --gen-tokens 2 --reps 1 > /root/z/ncu-mv.txt 2>&1
grep -E "^  [a-z]|Duration|Warp Cycles Per Issued|Issued Ipc|Achieved Occupancy|Theoretical Occupancy|Registers|Grid Size|DRAM Throughput|Memory Throughput|Block Limit" /root/z/ncu-mv.txt | head -120
echo "done at $((SECONDS-t0)) s"
tar czf $OUT/z.tgz -C /root z
