#!/usr/bin/env bash
# Session 8 call 4: dqmm with deeper copy pipelines (DQ_STAGES 3, 4) against 2: GPU kernel tests under each,
# then 1 and 64 streams and the first token through the server, Q8_0 and Q4_K_M.
set -uo pipefail
t0=$SECONDS
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
tar xJf device/bin.tar.xz -C device
nvidia-smi --query-gpu=name --format=csv,noheader
Z=/root/z; mkdir -p $Z
H=device/bin/hearth
bench/cuda/run_all.sh --out /root/res-copy --synth --hearth $H --only models --budget 200 2>&1 | grep -v "^|" | tail -1
echo "models at $((SECONDS-t0)) s"
export HEARTH_CUDA_CACHE=/tmp/hearth-cuda-cache HEARTH_REQUIRE_CUDA=1
for S in 2 3 4; do
  HEARTH_CUDA_DQ_STAGES=$S device/bin/hearth_engine backend::cuda::tests::dqmm --test-threads=1 > $Z/dq$S.log 2>&1; echo "S=$S dqmm tests rc $? $(grep 'test result' $Z/dq$S.log)"
  HEARTH_CUDA_DQ_STAGES=$S device/bin/cuda_q8 --test-threads=1 > $Z/q8-$S.log 2>&1; echo "S=$S cuda_q8 rc $? $(grep 'test result' $Z/q8-$S.log)"
done
grep -h -E "panicked" -A6 $Z/*.log | head -20
echo "checks at $((SECONDS-t0)) s"
MODELS="q8_0 q4_k_m" STREAMS=1,64 bench/cuda/ab_serve.sh $Z/serve $H "-" "HEARTH_CUDA_DQ_STAGES=3 HEARTH_CUDA_DQMM_WAVES=1" "HEARTH_CUDA_DQ_STAGES=4 HEARTH_CUDA_DQMM_WAVES=1" "HEARTH_CUDA_DQ_STAGES=3" 2>&1 | grep -v "^  at"
echo "serve at $((SECONDS-t0)) s"
for v in "X=1" "HEARTH_CUDA_DQ_STAGES=3 HEARTH_CUDA_DQMM_WAVES=1" "HEARTH_CUDA_DQ_STAGES=4 HEARTH_CUDA_DQMM_WAVES=1"; do
  for m in q8_0 q4_k_m; do
    echo "$m $v prefill100: $(env $v $H --device cuda bench --model /root/hearth-bench/llama8b-$m.gguf --prompt-tokens 100 --gen-tokens 2 --reps 5 2>/dev/null | grep -E '^prefill:' | cut -d' ' -f2)"
  done
done
tar czf $OUT/z.tgz -C /root z
echo "done at $((SECONDS-t0)) s"
