#!/usr/bin/env bash
# Session 10 call 4: wip/s10 (late-decode matvecs with the register cap, compact Q4_K dqmm copy, split-K sums
# added by the norm and act_mul_half that read them) against main 3eb64b1: GPU checks, decode and prefill with
# llama.cpp built in the same call, then the server's 1/16/64 streams and first token, and attention split
# count at 64 streams.
set -uo pipefail
t0=$SECONDS
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
tar xJf device/bin.tar.xz -C device
nvidia-smi --query-gpu=name --format=csv,noheader
export HEARTH_CUDA_CACHE=/tmp/hearth-cuda-cache
mkdir -p /root/z
B=device/bin
MODELS="q4_k_m q8_0 bf16" GEN=128 bench/cuda/ab_decode.sh /root/z/ab $B/hearth $B/hearth_main 2>&1 | grep -v "^  at"
grep -h -E "panicked|FAILED" -A6 /root/z/ab/check/*.log | head -30
echo "ab at $((SECONDS-t0)) s"
tar czf $OUT/z.tgz -C /root z
MODELS="q4_k_m q8_0" STREAMS=1,16,64 bench/cuda/ab_serve.sh /root/z/serve-new $B/hearth "-" 2>&1 | grep -v "^  at"
tar czf $OUT/z.tgz -C /root z
MODELS="q4_k_m q8_0" STREAMS=1,64 bench/cuda/ab_serve.sh /root/z/serve-main $B/hearth_main "-" 2>&1 | grep -v "^  at"
tar czf $OUT/z.tgz -C /root z
MODELS="q4_k_m" STREAMS=64 bench/cuda/ab_serve.sh /root/z/serve-attn $B/hearth "HEARTH_CUDA_ATTN_BLOCKS_PER_SM=1" 2>&1 | grep -v "^  at"
echo "done at $((SECONDS-t0)) s"
tar czf $OUT/z.tgz -C /root z
