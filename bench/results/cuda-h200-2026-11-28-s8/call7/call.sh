#!/usr/bin/env bash
# Session 8 call 7: dqmm split-K beyond the new defaults (4 waves, 2 fewest steps): 6 and 8 waves, 1 fewest
# step; 1 and 64 streams and the first token, Q8_0 and Q4_K_M.
set -uo pipefail
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
tar xJf device/bin.tar.xz -C device
nvidia-smi --query-gpu=name --format=csv,noheader
export HEARTH_CUDA_CACHE=/tmp/hearth-cuda-cache
MODELS="q8_0 q4_k_m" STREAMS=1,64 bench/cuda/ab_serve.sh /root/z/serve device/bin/hearth "-" "HEARTH_CUDA_DQMM_WAVES=6" "HEARTH_CUDA_DQMM_WAVES=8" "HEARTH_CUDA_DQMM_MIN_STEPS=1" "-" 2>&1 | grep -v "^  at"
find /root/z -name "*.server.log" -delete
tar czf $OUT/z.tgz -C /root z
