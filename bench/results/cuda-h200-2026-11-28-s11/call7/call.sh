#!/usr/bin/env bash
# Session 11 call 7 (wip/s11 dbe00de): 1 and 64 streams of Q4_K_M under dqmm split lengths
# (HEARTH_CUDA_DQMM_MIN_STEPS 2, the default, 1 and 4), two rounds.
set -uo pipefail
t0=$SECONDS
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
tar xJf device/bin.tar.xz -C device
export HEARTH_CUDA_CACHE=/tmp/hearth-cuda-cache
mkdir -p /root/z
B=device/bin
bench/cuda/run_all.sh --out /root/res-copy --synth --hearth $B/hearth --only models --budget 200 2>&1 | grep -v "^|" | tail -1
for round in 1 2; do
MODELS="q4_k_m" STREAMS=1,64 bench/cuda/ab_serve.sh /root/z/steps$round $B/hearth "-" "HEARTH_CUDA_DQMM_MIN_STEPS=1" "HEARTH_CUDA_DQMM_MIN_STEPS=4" 2>&1 | grep -v "^  at"
done
echo "done at $((SECONDS-t0)) s"
tar czf $OUT/z.tgz -C /root z
