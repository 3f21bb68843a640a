#!/usr/bin/env bash
# Session 11 call 6 (final): wip/s11 dbe00de (tensor-core decode attention, splits per kernel) against main
# 1ccff72: GPU checks, decode and prefill with llama.cpp built in the same call (ab_decode.sh), then a second
# round of Q4_K_M decode for both builds and llama.cpp, then the server's 1/16/64 streams and first token.
set -uo pipefail
t0=$SECONDS
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
tar xJf device/bin.tar.xz -C device
nvidia-smi --query-gpu=name --format=csv,noheader
export HEARTH_CUDA_CACHE=/tmp/hearth-cuda-cache
mkdir -p /root/z
B=device/bin
M=/root/hearth-bench
MODELS="q4_k_m q8_0 bf16" GEN=128 bench/cuda/ab_decode.sh /root/z/ab $B/hearth $B/hearth_main 2>&1 | grep -v "^  at"
grep -h -E "panicked|FAILED" -A6 /root/z/ab/check/*.log | head -30
echo "ab at $((SECONDS-t0)) s"
tar czf $OUT/z.tgz -C /root z
for rep in 3 4; do
  for b in hearth hearth_main; do
    echo "q4_k_m rep $rep $b: $($B/$b --device cuda bench --model $M/llama8b-q4_k_m.gguf --prompt-tokens 2048 --gen-tokens 128 --reps 2 2>/dev/null | grep -E '^(prefill|decode):' | cut -d' ' -f2 | paste -sd/)"
  done
done
mkdir -p /root/z/llama2
SKIP=batched REPS=3 timeout 120 bench/cuda/llama_cpp_bench.sh $M/llama8b-q4_k_m.gguf /root/z/llama2 >/dev/null 2>&1
python3 -c "
import json
for s in ('llama-bench','llama-bench-depth'):
    try: print('llama.cpp q4_k_m round 2', s, [(r.get('n_prompt'), r.get('n_gen'), r.get('n_depth',0), round(r['avg_ts'],1), [round(x,1) for x in r.get('samples_ts',[])]) for r in json.load(open('/root/z/llama2/llama8b-q4_k_m.'+s+'.json'))])
    except Exception as e: print(s, e)
"
echo "decode2 at $((SECONDS-t0)) s"
tar czf $OUT/z.tgz -C /root z
MODELS="q4_k_m q8_0" STREAMS=1,16,64 bench/cuda/ab_serve.sh /root/z/serve-new $B/hearth "-" 2>&1 | grep -v "^  at"
tar czf $OUT/z.tgz -C /root z
MODELS="q4_k_m" STREAMS=1,64 bench/cuda/ab_serve.sh /root/z/serve-main $B/hearth_main "-" 2>&1 | grep -v "^  at"
echo "done at $((SECONDS-t0)) s"
tar czf $OUT/z.tgz -C /root z
