#!/usr/bin/env bash
# Session 9 call 3: wip/wgmma c2 (dqmm loops templated on the block's rows; Q4_K step header) in both loops
# (wgmma default, HEARTH_CUDA_DQMM_WGMMA=0 the mma.sync loop) against main b4f138a: dqmm kernel tests, server
# numbers (1/16/64 streams, first token), per-kernel prefill-100 profile.
set -uo pipefail
t0=$SECONDS
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
tar xJf device/bin.tar.xz -C device
nvidia-smi --query-gpu=name --format=csv,noheader
export HEARTH_CUDA_CACHE=/tmp/hearth-cuda-cache HEARTH_REQUIRE_CUDA=1
mkdir -p /root/z
B=device/bin
for w in 1 0; do
  HEARTH_CUDA_DQMM_WGMMA=$w $B/hearth_engine dqmm_ --test-threads=1 --nocapture > /root/z/dqmm-test-$w.log 2>&1
  echo "wgmma=$w: $(grep 'test result' /root/z/dqmm-test-$w.log)"; grep -E "panicked|FAILED" -A4 /root/z/dqmm-test-$w.log | head -12
done
bench/cuda/run_all.sh --out /root/res-copy --synth --hearth $B/hearth --only models --budget 200 2>&1 | tail -1
M=/root/hearth-bench
for m in q4_k_m q8_0; do
  for b in "hearth_main -" "hearth HEARTH_CUDA_DQMM_WGMMA=0" "hearth HEARTH_CUDA_DQMM_WGMMA=1"; do
    set -- $b
    env ${2/-/X=1} HEARTH_CUDA_PROFILE=1 $B/$1 --device cuda bench --model $M/llama8b-$m.gguf --prompt-tokens 100 --gen-tokens 2 --reps 2 > /root/z/prof100-$m-$1-$2.txt 2>&1
    echo "$m $b: $(grep -E '^prefill' /root/z/prof100-$m-$1-$2.txt | tail -1) $(grep -E '^dqmm_f16' /root/z/prof100-$m-$1-$2.txt | head -1)"
  done
done
tar czf $OUT/z.tgz -C /root z
echo "prof at $((SECONDS-t0)) s"
MODELS="q4_k_m q8_0" STREAMS=1,16,64 bench/cuda/ab_serve.sh /root/z/serve-new $B/hearth "HEARTH_CUDA_DQMM_WGMMA=0" "-" 2>&1 | grep -v "^  at"
MODELS="q4_k_m q8_0" STREAMS=1,16,64 bench/cuda/ab_serve.sh /root/z/serve-main $B/hearth_main "-" 2>&1 | grep -v "^  at"
echo "done at $((SECONDS-t0)) s"
tar czf $OUT/z.tgz -C /root z
