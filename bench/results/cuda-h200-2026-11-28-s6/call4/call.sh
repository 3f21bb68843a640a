#!/usr/bin/env bash
# Session 6 call 4: decode attention's value loads (one 8-byte load for four values) and staggered query reads;
# 32-key tiles (HEARTH_CUDA_ATTN_TILE=32, wrapper hearth_t32) against the default 64. GPU checks (the tiny
# fixtures also with 32-key tiles); decode and prefill of the three 8B files for this build, its 32-key
# variant and call 3's build (hearth_prev), llama.cpp in the same call; server numbers.
set -uo pipefail
t0=$SECONDS
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
tar xJf device/bin.tar.xz -C device
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
mkdir -p /root/z
MODELS="q4_k_m q8_0 bf16" bench/cuda/ab_decode.sh /root/z/ab device/bin/hearth device/bin/hearth_t32 device/bin/hearth_prev 2>&1 | grep -v "^  at"
grep -h -E "panicked" -A4 /root/z/ab/check/*.log | head -12
if HEARTH_CUDA_ATTN_TILE=32 HEARTH_CUDA_CACHE=/tmp/hc32 HEARTH_REQUIRE_CUDA=1 device/bin/cuda_backend --test-threads=1 > /root/z/t32_backend.log 2>&1; then echo "PASS  tiny fixtures with 32-key attention tiles"; else echo "FAIL  tiny fixtures with 32-key attention tiles"; grep -E "panicked" -A4 /root/z/t32_backend.log | head; fi
grep -h "copy" /root/z/ab/*.txt | head -1
echo "ab at $((SECONDS-t0)) s"
tar czf $OUT/z.tgz -C /root z
for b in hearth_t32 hearth; do
  MODELS="q8_0 q4_k_m" STREAMS=1,64 bench/cuda/ab_serve.sh /root/z/serve-$b device/bin/$b "-" 2>&1 | grep -v "^  at" | sed "s/^/$b /"
done
echo "done at $((SECONDS-t0)) s"
tar czf $OUT/z.tgz -C /root z
