#!/usr/bin/env bash
# Session 7 call 3: where decode attention's 16 us a layer goes. Per-kernel times at several depths and split
# settings (FMA kernel), decode without attention (upper bound), and ncu's per-instruction stall samples.
set -uo pipefail
t0=$SECONDS
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
tar xJf device/bin.tar.xz -C device
mkdir -p /root/z
bench/cuda/run_all.sh --out /root/res-copy --synth --hearth device/bin/hearth --only models --budget 200 2>&1 | grep -v "^|" | tail -1
M=/root/hearth-bench/llama8b-q8_0.gguf
P() { # label env prompt
  env HEARTH_CUDA_ATTN_MMA=0 $2 HEARTH_CUDA_PROFILE=1 device/bin/hearth --device cuda bench --model $M --prompt-tokens $3 --gen-tokens 32 --reps 1 > /root/z/prof-$1.txt 2>&1
  echo "$1: $(grep -E '^decode:' /root/z/prof-$1.txt | cut -d' ' -f2) | $(grep -E '^attn_decode ' /root/z/prof-$1.txt | tail -1)"
}
for d in 64 256 1024 2048 4096; do P d$d X=1 $d; done
for b in 1 2 8 16; do P bps$b HEARTH_CUDA_ATTN_BLOCKS_PER_SM=$b 2048; done
P thr256 HEARTH_CUDA_ATTN_THREADS=256 2048
P mma2048 HEARTH_CUDA_ATTN_MMA=1 2048
P mma4096 HEARTH_CUDA_ATTN_MMA=1 4096
grep -B2 -A40 "attn_decode" /root/z/prof-d2048.txt | head -50
for e in X=1 HEARTH_CUDA_SKIP=attn_decode; do
  echo "$e decode: $(env HEARTH_CUDA_ATTN_MMA=0 $e device/bin/hearth --device cuda bench --model $M --prompt-tokens 2048 --gen-tokens 128 --reps 2 2>/dev/null | grep -E '^decode:' | cut -d' ' -f2)"
done
echo "profiles at $((SECONDS-t0)) s"
HEARTH_CUDA_ATTN_MMA=0 HEARTH_PROFILER_RANGE=1 timeout 200 /usr/local/cuda/bin/ncu --profile-from-start off --clock-control none --graph-profiling node -k regex:attn_decode --launch-count 1 --set full -o /root/z/attn \
  device/bin/hearth bench --model $M --prompt-tokens 2048 --gen-tokens 2 --reps 1 --device cuda > /root/z/ncu-run.txt 2>&1
tail -3 /root/z/ncu-run.txt
/usr/local/cuda/bin/ncu -i /root/z/attn.ncu-rep --page source --csv --print-source sass > /root/z/attn-sass.csv 2>&1; wc -l /root/z/attn-sass.csv
/usr/local/cuda/bin/ncu -i /root/z/attn.ncu-rep --page details --print-details all > /root/z/attn-details.txt 2>&1; wc -l /root/z/attn-details.txt
echo "done at $((SECONDS-t0)) s"
tar czf $OUT/z.tgz -C /root z
