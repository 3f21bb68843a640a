#!/usr/bin/env bash
# Session 5 call 6 (final): dqmm up to 128 rows, greedy tokens picked on the GPU. GPU checks; server numbers
# against session 4's binary (hearth_s4) in the same call; 2,048-token prefill of both quantized files.
set -uo pipefail
t0=$SECONDS
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
tar xJf device/bin.tar.xz -C device && tar xJf device/base4.tar.xz -C device/bin
nvidia-smi --query-gpu=name --format=csv,noheader
mkdir -p /root/z
OUT=/root/check scripts/cuda_check.sh device/bin > /root/z/check.txt 2>&1
grep -E "^(PASS|FAIL)" /root/z/check.txt | sort -u
grep -h -E "panicked" -A4 /root/check/*.log | head -12
cp /root/check/*.log /root/z/
echo "check at $((SECONDS-t0)) s"
MODELS="q8_0 q4_k_m" bench/cuda/ab_serve.sh /root/z/serve device/bin/hearth "-" 2>&1 | grep -v "^  at"
MODELS="q8_0 q4_k_m" bench/cuda/ab_serve.sh /root/z/serve4 device/bin/hearth_s4 "-" 2>&1 | grep -v "^  at"
echo "serve at $((SECONDS-t0)) s"
for mm in q8_0 q4_k_m; do
  for b in hearth hearth_s4; do
    echo "$mm $b $(device/bin/$b --device cuda bench --model /root/hearth-bench/llama8b-$mm.gguf --prompt-tokens 2048 --gen-tokens 16 --reps 2 2>/dev/null | grep -E '^(prefill|decode):' | tr '\n' ' ')"
  done
done
echo "done at $((SECONDS-t0)) s"
tar czf $OUT/z.tgz -C /root z
