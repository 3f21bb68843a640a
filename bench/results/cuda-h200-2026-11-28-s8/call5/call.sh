#!/usr/bin/env bash
# Session 8 call 5: dqmm's split-K knobs (waves, fewest steps a split) on main's build, 1 and 64 streams and
# the first token, Q8_0 and Q4_K_M.
set -uo pipefail
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
tar xJf device/bin.tar.xz -C device
nvidia-smi --query-gpu=name --format=csv,noheader
export HEARTH_CUDA_CACHE=/tmp/hearth-cuda-cache
MODELS="q8_0 q4_k_m" STREAMS=1,64 bench/cuda/ab_serve.sh /root/z/serve device/bin/hearth_main "-" "HEARTH_CUDA_DQMM_WAVES=3" "HEARTH_CUDA_DQMM_WAVES=4" "HEARTH_CUDA_DQMM_MIN_STEPS=2" "HEARTH_CUDA_DQMM_WAVES=4 HEARTH_CUDA_DQMM_MIN_STEPS=2" 2>&1
tar czf $OUT/z.tgz -C /root z
