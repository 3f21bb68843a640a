#!/usr/bin/env bash
# Session 9 call 5: candidate c5 (5df1bc1: Q6_K dqmm steps read their half-block's words once) against c4
# (e622403, checked in call 4): GPU checks of c5; server numbers of both with dqmm's split-K at 4 waves (the
# default) and 2, Q4_K_M (Q6_K inside) and Q8_0 (c4 only: Q8_0 is the same in both).
set -uo pipefail
t0=$SECONDS
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
tar xJf device/bin.tar.xz -C device
nvidia-smi --query-gpu=name --format=csv,noheader
export HEARTH_CUDA_CACHE=/tmp/hearth-cuda-cache
mkdir -p /root/z device/binc
for f in hearth cuda_backend cuda_q8 hearth_engine; do cp device/bin/${f}_c device/binc/$f; done
cp device/bin/greedy_picks device/binc/
OUT=/root/z/check-c5 scripts/cuda_check.sh device/binc 2>&1 | grep -E "^(PASS|FAIL)" | sort | uniq -c
grep -h -E "panicked|FAILED" -A6 /root/z/check-c5/*.log | head -30
echo "check at $((SECONDS-t0)) s"
tar czf $OUT/z.tgz -C /root z
B=device/bin
MODELS="q4_k_m" STREAMS=1,16,64 bench/cuda/ab_serve.sh /root/z/serve-c5 $B/hearth_c "-" "HEARTH_CUDA_DQMM_WAVES=2" 2>&1 | grep -v "^  at"
MODELS="q4_k_m q8_0" STREAMS=1,16,64 bench/cuda/ab_serve.sh /root/z/serve-c4 $B/hearth "-" "HEARTH_CUDA_DQMM_WAVES=2" 2>&1 | grep -v "^  at"
echo "done at $((SECONDS-t0)) s"
tar czf $OUT/z.tgz -C /root z
