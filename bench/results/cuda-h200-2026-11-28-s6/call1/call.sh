#!/usr/bin/env bash
# Session 6 call 1: GPU checks of main and of wip/dqmm-next; server numbers of both in the same call; the decode
# step's per-kernel cost on main (HEARTH_CUDA_SKIP) for the three 8B files.
set -uo pipefail
t0=$SECONDS
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
tar xJf device/bin.tar.xz -C device
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
mkdir -p /root/z /root/hearth-bench
( for q in q8_0 q4_k_m bf16; do python3 bench/synth_gguf.py build device/llama8b-layouts/$q /root/hearth-bench/llama8b-$q.gguf 2>&1 | tail -1; done ) > /root/z/synth.txt 2>&1 &
spid=$!
for b in next bin; do
  OUT=/root/check-$b scripts/cuda_check.sh device/$b > /root/z/check-$b.txt 2>&1
  echo "== check $b"; grep -E "^(PASS|FAIL)" /root/z/check-$b.txt | sort -u
  grep -h -E "panicked" -A4 /root/check-$b/*.log | head -12
  mkdir -p /root/z/check-$b-logs && cp /root/check-$b/*.log /root/z/check-$b-logs/
  echo "check $b at $((SECONDS-t0)) s"
done
wait $spid; cat /root/z/synth.txt
for b in bin next; do
  MODELS="q8_0 q4_k_m" bench/cuda/ab_serve.sh /root/z/serve-$b device/$b/hearth "-" 2>&1 | grep -v "^  at" | sed "s/^/$b /"
done
for b in next bin; do
  MODELS="q8_0 q4_k_m" STREAMS=64 bench/cuda/ab_serve.sh /root/z/serve2-$b device/$b/hearth "-" 2>&1 | grep -v "^  at" | sed "s/^/$b /"
done
echo "serve at $((SECONDS-t0)) s"
B() { env $2 device/bin/hearth --device cuda bench --model /root/hearth-bench/llama8b-$1.gguf --prompt-tokens 2048 --gen-tokens 64 --reps 1 2>/dev/null | grep -E "^decode:" | cut -d' ' -f2; }
for m in q8_0 q4_k_m bf16; do
  for sk in - rmsnorm_rows qkv_finish attn_decode quantize_q8 rmsnorm_rows,qkv_finish,attn_decode,quantize_q8; do
    if [ "$sk" = - ]; then e=X=1; else e=HEARTH_CUDA_SKIP=$sk; fi
    [ "$m" != q8_0 ] && [ "$sk" != - ] && [ "${sk#*,}" = "$sk" ] && continue
    echo "decode $m skip=$sk: $(B $m $e) tok/s"
  done
done
echo "done at $((SECONDS-t0)) s"
tar czf $OUT/z.tgz -C /root z
