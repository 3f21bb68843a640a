#!/usr/bin/env bash
# Session 10 call 6: call 5's build with qkv_finish's element index mended (a shadowed name read v from the
# cache slot's offset): GPU checks, then the server's 1 and 64 streams and decode after 2,048 tokens.
set -uo pipefail
t0=$SECONDS
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
tar xJf device/bin.tar.xz -C device
export HEARTH_CUDA_CACHE=/tmp/hearth-cuda-cache
mkdir -p /root/z
B=device/bin
OUT=/root/z/check scripts/cuda_check.sh $B 2>&1 | grep -E "^(PASS|FAIL)" | sort | uniq -c
grep -h -E "panicked|FAILED" -A4 /root/z/check/*.log | head -12
echo "check at $((SECONDS-t0)) s"
tar czf $OUT/z.tgz -C /root z
MODELS="q4_k_m" STREAMS=1,64 bench/cuda/ab_serve.sh /root/z/serve-new $B/hearth "-" 2>&1 | grep -v "^  at"
tar czf $OUT/z.tgz -C /root z
echo "q4_k_m: $($B/hearth --device cuda bench --model /root/hearth-bench/llama8b-q4_k_m.gguf --prompt-tokens 2048 --gen-tokens 128 --reps 2 2>/dev/null | grep -E '^(prefill|decode):' | cut -d' ' -f2 | paste -sd/)"
echo "done at $((SECONDS-t0)) s"
tar czf $OUT/z.tgz -C /root z
