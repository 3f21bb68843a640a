#!/usr/bin/env bash
# Session 10 call 3: per-type settings of the late decode and the register cap (decode after 2,048 tokens),
# and the server's 1 and 64 streams with the late decode against main.
set -uo pipefail
t0=$SECONDS
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
tar xJf device/bin.tar.xz -C device
nvidia-smi --query-gpu=name --format=csv,noheader
export HEARTH_CUDA_CACHE=/tmp/hearth-cuda-cache
mkdir -p /root/z
B=device/bin
M=/root/hearth-bench
bench/cuda/run_all.sh --out /root/res-copy --synth --hearth $B/hearth --only models --budget 200 2>&1 | grep -v "^|" | tail -1
for round in 1 2; do
  for s in "-" "HEARTH_CUDA_MV_LATE_Q6_K=0" "HEARTH_CUDA_MV_LATE_Q6_K=0 HEARTH_CUDA_MIN_BLOCKS_Q4_K=10" "HEARTH_CUDA_MIN_BLOCKS_Q4_K=10" "HEARTH_CUDA_MIN_BLOCKS_Q4_K=11"; do
    env_args=(); [ "$s" = "-" ] || read -r -a env_args <<<"$s"
    r=$(env "${env_args[@]}" $B/hearth --device cuda bench --model $M/llama8b-q4_k_m.gguf --prompt-tokens 2048 --gen-tokens 64 --reps 2 2>/dev/null | grep -E '^(prefill|decode):' | cut -d' ' -f2 | paste -sd/)
    echo "q4_k_m $s: $r"
  done
  for s in "-" "HEARTH_CUDA_MIN_BLOCKS_Q8_0=10"; do
    env_args=(); [ "$s" = "-" ] || read -r -a env_args <<<"$s"
    r=$(env "${env_args[@]}" $B/hearth --device cuda bench --model $M/llama8b-q8_0.gguf --prompt-tokens 2048 --gen-tokens 64 --reps 2 2>/dev/null | grep -E '^(prefill|decode):' | cut -d' ' -f2 | paste -sd/)
    echo "q8_0 $s: $r"
  done
done | tee /root/z/decode.txt
echo "decode at $((SECONDS-t0)) s"
tar czf $OUT/z.tgz -C /root z
MODELS="q4_k_m" STREAMS=1,64 bench/cuda/ab_serve.sh /root/z/serve-new $B/hearth "-" 2>&1 | grep -v "^  at"
MODELS="q4_k_m" STREAMS=1,64 bench/cuda/ab_serve.sh /root/z/serve-main $B/hearth_main "-" 2>&1 | grep -v "^  at"
echo "done at $((SECONDS-t0)) s"
tar czf $OUT/z.tgz -C /root z
