#!/usr/bin/env bash
# Session 8 call 6: dqmm split-K defaults 4 waves / 2 fewest steps (new build) against main's 2 / 4, builds
# interleaved twice; the GPU fixture checks on the new build.
set -uo pipefail
t0=$SECONDS
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
tar xJf device/bin.tar.xz -C device
nvidia-smi --query-gpu=name --format=csv,noheader
export HEARTH_CUDA_CACHE=/tmp/hearth-cuda-cache
mkdir -p /root/z
( export HEARTH_REQUIRE_CUDA=1
  for tb in cuda_backend cuda_q8; do device/bin/$tb --test-threads=1 > /root/z/$tb.log 2>&1; echo "$tb rc $? $(grep 'test result' /root/z/$tb.log)"; done )
for rep in 1 2; do
  for b in hearth_main hearth; do
    MODELS="q8_0 q4_k_m" STREAMS=1,64 bench/cuda/ab_serve.sh /root/z/serve-$b-$rep device/bin/$b "-" 2>&1 | grep -v "^  at\|run_all" | sed "s/^/$b rep$rep /"
  done
done
find /root/z -name "*.server.log" -delete
tar czf $OUT/z.tgz -C /root z
echo "done at $((SECONDS-t0)) s"
