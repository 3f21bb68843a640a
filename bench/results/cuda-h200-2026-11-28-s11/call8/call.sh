#!/usr/bin/env bash
# Session 11 call 8 (wip/s11 c1c35c6): GPU checks (the group-sums kernel test now runs a dqmm2 pair); 1, 16
# and 64 streams of Q4_K_M with the paired dqmm launches (default) and without (HEARTH_CUDA_DQMM_PAIR=0), two
# rounds; Q8_0 one round.
set -uo pipefail
t0=$SECONDS
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
tar xJf device/bin.tar.xz -C device
export HEARTH_CUDA_CACHE=/tmp/hearth-cuda-cache
mkdir -p /root/z
B=device/bin
bench/cuda/run_all.sh --out /root/res-copy --synth --hearth $B/hearth --only models --budget 200 2>&1 | grep -v "^|" | tail -1
OUT=/root/z/check scripts/cuda_check.sh $B 2>&1 | grep -E "^(PASS|FAIL)" | sort | uniq -c
grep -h -E "panicked|FAILED" -A6 /root/z/check/*.log | head -30
echo "check at $((SECONDS-t0)) s"
tar czf $OUT/z.tgz -C /root z
for round in 1 2; do
MODELS="q4_k_m" STREAMS=1,16,64 bench/cuda/ab_serve.sh /root/z/pair$round $B/hearth "-" "HEARTH_CUDA_DQMM_PAIR=0" 2>&1 | grep -v "^  at"
done
tar czf $OUT/z.tgz -C /root z
MODELS="q8_0" STREAMS=1,16,64 bench/cuda/ab_serve.sh /root/z/pair-q8 $B/hearth "-" "HEARTH_CUDA_DQMM_PAIR=0" 2>&1 | grep -v "^  at"
echo "done at $((SECONDS-t0)) s"
tar czf $OUT/z.tgz -C /root z
