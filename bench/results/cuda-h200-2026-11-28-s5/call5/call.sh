#!/usr/bin/env bash
# Session 5 call 5: dqmm (N3) with a float4 dqmm_sum: GPU checks; A/B of
# settings; prefill speed by prompt length through dqmm and cuBLAS; profile; ncu of one layer's products.
set -uo pipefail
t0=$SECONDS
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
tar xJf device/bin.tar.xz -C device
nvidia-smi --query-gpu=name --format=csv,noheader
mkdir -p /root/z
OUT=/root/check scripts/cuda_check.sh device/bin > /root/z/check.txt 2>&1
grep -E "^(PASS|FAIL)" /root/z/check.txt | sort -u
grep -h -E "panicked" -A4 /root/check/*.log | head -12
cp /root/check/*.log /root/z/
echo "check at $((SECONDS-t0)) s"
MODELS="q8_0 q4_k_m" bench/cuda/ab_serve.sh /root/z/serve device/bin/hearth "-" "HEARTH_CUDA_DQMM_ROWS=256" "HEARTH_CUDA_DQMM_MIN_STEPS=2" 2>&1 | grep -v "^  at"
echo "serve at $((SECONDS-t0)) s"
for mm in q8_0 q4_k_m; do
  for p in 100 160 256; do
    a=$(device/bin/hearth --device cuda bench --model /root/hearth-bench/llama8b-$mm.gguf --prompt-tokens $p --gen-tokens 2 --reps 3 2>/dev/null | grep prefill: | awk '{print $2}')
    b=$(HEARTH_CUDA_DQMM_ROWS=256 device/bin/hearth --device cuda bench --model /root/hearth-bench/llama8b-$mm.gguf --prompt-tokens $p --gen-tokens 2 --reps 3 2>/dev/null | grep prefill: | awk '{print $2}')
    echo "$mm prompt $p prefill tok/s: cuBLAS path $a, dqmm $b"
  done
done
for p in 64 100; do echo "== q8_0 DQMM_ROWS=256 prompt $p profile"
HEARTH_CUDA_DQMM_ROWS=256 HEARTH_CUDA_PROFILE=1 device/bin/hearth --device cuda bench --model /root/hearth-bench/llama8b-q8_0.gguf --prompt-tokens $p --gen-tokens 2 --reps 2 2>&1 | sed -n '/prefill of/,/decode steps/p' | head -6; done
echo "profiles at $((SECONDS-t0)) s"
echo "done at $((SECONDS-t0)) s"
tar czf $OUT/z.tgz -C /root z
