#!/usr/bin/env bash
# Session 6 call 2: dqmm's split-K sums in thread-block clusters. GPU checks; decode and 2,048-token prefill of
# the three 8B files against llama.cpp built in the same call (ab_decode.sh); server numbers with the cluster
# sums on and off (HEARTH_CUDA_DQMM_CLUSTER=0: the dqmm_sum launch, as main).
set -uo pipefail
t0=$SECONDS
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
tar xJf device/bin.tar.xz -C device
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
mkdir -p /root/z
MODELS="q8_0 q4_k_m bf16" bench/cuda/ab_decode.sh /root/z/ab device/bin/hearth 2>&1 | grep -v "^  at"
grep -h -E "panicked" -A4 /root/z/ab/check/*.log | head -12
grep -h "copy" /root/z/ab/*.txt | head -3
echo "ab at $((SECONDS-t0)) s"
MODELS="q8_0 q4_k_m" bench/cuda/ab_serve.sh /root/z/serve device/bin/hearth "-" "HEARTH_CUDA_DQMM_CLUSTER=0" 2>&1 | grep -v "^  at"
MODELS="q8_0 q4_k_m" STREAMS=64 bench/cuda/ab_serve.sh /root/z/serve2 device/bin/hearth "HEARTH_CUDA_DQMM_CLUSTER=0" "-" 2>&1 | grep -v "^  at"
echo "done at $((SECONDS-t0)) s"
tar czf $OUT/z.tgz -C /root z
