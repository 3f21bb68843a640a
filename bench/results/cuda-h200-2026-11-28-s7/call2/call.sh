#!/usr/bin/env bash
# Prepared in session 6 for session 7's second device call (same staging as next-session-call1.sh): server
# numbers (1 and 64 streams, first token of a 101-token prompt) for the branch's defaults and each switch:
# tensor-core attention off, grouped split-K sums off, the sums left out (wrong output: their cost), dqmm
# blocks of 128 rows; and the 100-token prefill's kernel profile with and without 128-row blocks.
set -uo pipefail
t0=$SECONDS
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
tar xJf device/bin.tar.xz -C device
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
mkdir -p /root/z
MODELS="q8_0 q4_k_m" STREAMS=1,64 bench/cuda/ab_serve.sh /root/z/serve device/bin/hearth "-" "HEARTH_CUDA_ATTN_MMA=0" \
  "HEARTH_CUDA_DQMM_GROUP_SUM=0" "HEARTH_CUDA_SKIP=dqmm_sum,dqmm_sum3" "HEARTH_CUDA_DQMM_BN=128" 2>&1 | grep -v "^  at"
echo "serve at $((SECONDS-t0)) s"
for e in X=1 HEARTH_CUDA_DQMM_BN=128; do
  env $e HEARTH_CUDA_PROFILE=1 device/bin/hearth --device cuda bench --model /root/hearth-bench/llama8b-q8_0.gguf \
    --prompt-tokens 100 --gen-tokens 2 --reps 2 > /root/z/profile-$e.txt 2>&1
  echo "$e: $(grep -E '^prefill:' /root/z/profile-$e.txt | head -1)"; grep -E "dqmm" /root/z/profile-$e.txt | head -4
done
for e in X=1 HEARTH_CUDA_ATTN_MMA=0; do
  env $e HEARTH_CUDA_PROFILE=1 device/bin/hearth --device cuda bench --model /root/hearth-bench/llama8b-q8_0.gguf \
    --prompt-tokens 2048 --gen-tokens 32 --reps 1 > /root/z/profile-dec-$e.txt 2>&1
  echo "$e decode profile: $(grep -E '^decode:' /root/z/profile-dec-$e.txt | head -1)"; grep -iE "attn|attention" /root/z/profile-dec-$e.txt | head -6
done
echo "done at $((SECONDS-t0)) s"
tar czf $OUT/z.tgz -C /root z
