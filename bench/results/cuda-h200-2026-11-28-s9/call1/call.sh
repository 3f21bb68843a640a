#!/usr/bin/env bash
# Session 9 call 1: session 8's unmeasured patches. hearth = wip/s9 (Q6_K half-block matvec + attention address
# and score changes), hearth_q6k0 = the same with HEARTH_CUDA_Q6K_HALVES=0 (attention change alone), hearth_main
# = main b4f138a. GPU checks, decode/prefill of the three 8B files with llama.cpp in the same call, attention's
# time a layer, server numbers, and ncu's stall profile of dqmm on a 100-token prefill (for the next dqmm).
set -uo pipefail
t0=$SECONDS
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
tar xJf device/bin.tar.xz -C device
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
export HEARTH_CUDA_CACHE=/tmp/hearth-cuda-cache
mkdir -p /root/z
B=device/bin
MODELS="q4_k_m q8_0 bf16" bench/cuda/ab_decode.sh /root/z/ab $B/hearth_main $B/hearth $B/hearth_q6k0 2>&1 | grep -v "^  at"
grep -h -E "panicked" -A6 /root/z/ab/check/*.log | head -30
echo "ab at $((SECONDS-t0)) s"
tar czf $OUT/z.tgz -C /root z
MODELS="q4_k_m q8_0" STREAMS=1,64 bench/cuda/ab_serve.sh /root/z/serve-main $B/hearth_main "-" 2>&1 | grep -v "^  at"
MODELS="q4_k_m q8_0" STREAMS=1,64 bench/cuda/ab_serve.sh /root/z/serve-new $B/hearth "-" 2>&1 | grep -v "^  at"
echo "serve at $((SECONDS-t0)) s"
tar czf $OUT/z.tgz -C /root z
for b in hearth_main hearth; do
  HEARTH_CUDA_PROFILE=1 $B/$b --device cuda bench --model /root/hearth-bench/llama8b-q8_0.gguf --prompt-tokens 2048 --gen-tokens 32 --reps 1 > /root/z/profile-$b.txt 2>&1
  echo "$b"; grep -E "attn_decode|mvq8_1|gluq8_1" /root/z/profile-$b.txt | tail -3
done
/usr/local/cuda/bin/ncu --kernel-name regex:dqmm_f16 --launch-skip 20 --launch-count 3 --graph-profiling node \
  --section SpeedOfLight --section WarpStateStats --section SchedulerStats --section Occupancy \
  --section MemoryWorkloadAnalysis --section ComputeWorkloadAnalysis --section LaunchStats \
  --metrics "regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio" \
  $B/hearth --device cuda bench --model /root/hearth-bench/llama8b-q4_k_m.gguf --prompt-tokens 100 --gen-tokens 2 --reps 1 > /root/z/ncu-dqmm.txt 2>&1
grep -E "Duration|Warp Cycles Per Issued|Issued Ipc|Achieved Occupancy|Stall|Registers|Grid Size|stalled|Memory Throughput|Compute \(SM\)" /root/z/ncu-dqmm.txt | head -70
echo "done at $((SECONDS-t0)) s"
tar czf $OUT/z.tgz -C /root z
