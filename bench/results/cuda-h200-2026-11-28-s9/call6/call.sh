#!/usr/bin/env bash
# Session 9 call 6: the final build (dqmm as in call 4, split-K at 2 waves from 64 activation rows on) against
# main b4f138a, server numbers of Q4_K_M and Q8_0: final, main, final again.
set -uo pipefail
t0=$SECONDS
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
tar xJf device/bin.tar.xz -C device
nvidia-smi --query-gpu=name --format=csv,noheader
export HEARTH_CUDA_CACHE=/tmp/hearth-cuda-cache
mkdir -p /root/z
B=device/bin
MODELS="q4_k_m q8_0" STREAMS=1,16,64 bench/cuda/ab_serve.sh /root/z/serve-final $B/hearth "-" 2>&1 | grep -v "^  at"
MODELS="q4_k_m q8_0" STREAMS=1,16,64 bench/cuda/ab_serve.sh /root/z/serve-main $B/hearth_main "-" 2>&1 | grep -v "^  at"
tar czf $OUT/z.tgz -C /root z
MODELS="q4_k_m q8_0" STREAMS=1,64 bench/cuda/ab_serve.sh /root/z/serve-final2 $B/hearth "-" 2>&1 | grep -v "^  at"
echo "done at $((SECONDS-t0)) s"
tar czf $OUT/z.tgz -C /root z
