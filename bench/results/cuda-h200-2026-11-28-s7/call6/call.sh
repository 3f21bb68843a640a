#!/usr/bin/env bash
# Session 7 call 6: wip/attn-skip (attn_decode: splits without keys leave at once; a row's only split merges
# without fence and count) against main 3574551 (hearth_main). The attention kernel test and the fixtures;
# decode of the three 8B files interleaved; attention's kernel time; server numbers for both.
set -uo pipefail
t0=$SECONDS
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
tar xJf device/bin.tar.xz -C device
mkdir -p /root/z
bench/cuda/run_all.sh --out /root/res-copy --synth --hearth device/bin/hearth --only models --budget 200 2>&1 | grep -v "^|" | tail -1
OUT=/root/z/check scripts/cuda_check.sh device/bin 2>&1 | grep -E "^(PASS|FAIL)"
echo "checks at $((SECONDS-t0)) s"
B() { device/bin/$2 --device cuda bench --model /root/hearth-bench/llama8b-$1.gguf --prompt-tokens 2048 --gen-tokens 128 --reps 2 2>/dev/null | grep -E "^decode:" | cut -d' ' -f2; }
for m in q4_k_m q8_0; do
  echo "$m decode: new $(B $m hearth) main $(B $m hearth_main) new $(B $m hearth) main $(B $m hearth_main)"
done
echo "decode at $((SECONDS-t0)) s"
for b in hearth hearth_main; do
  HEARTH_CUDA_PROFILE=1 device/bin/$b --device cuda bench --model /root/hearth-bench/llama8b-q8_0.gguf --prompt-tokens 2048 --gen-tokens 32 --reps 1 > /root/z/prof-$b.txt 2>&1
  echo "$b: $(grep -E '^attn_decode' /root/z/prof-$b.txt | tail -1)"
done
tar czf $OUT/z.tgz -C /root z
MODELS="q8_0" STREAMS=1,64 bench/cuda/ab_serve.sh /root/z/serve-new device/bin/hearth "-" 2>&1 | grep -v "^  at"
MODELS="q8_0" STREAMS=1,64 bench/cuda/ab_serve.sh /root/z/serve-main device/bin/hearth_main "-" 2>&1 | grep -v "^  at"
echo "done at $((SECONDS-t0)) s"
tar czf $OUT/z.tgz -C /root z
