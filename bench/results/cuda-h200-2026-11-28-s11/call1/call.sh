#!/usr/bin/env bash
# Session 11 call 1: main + the persistent one-row products (off unless HEARTH_CUDA_MV_PERSIST=1): GPU checks
# (with a run of the 8-bit test under the knob); decode attention alone at 64/16 rows (attn_bench.rs), and
# ncu on it; decode after 2,048 tokens with the knob off/on; a 64-stream step's per-kernel profile.
set -uo pipefail
t0=$SECONDS
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
tar xJf device/bin.tar.xz -C device
nvidia-smi --query-gpu=name --format=csv,noheader
export HEARTH_CUDA_CACHE=/tmp/hearth-cuda-cache
mkdir -p /root/z
B=device/bin
M=/root/hearth-bench
for r in 64 16 1; do ATTN_BENCH_ROWS=$r $B/hearth_engine attn_decode_bench --ignored --nocapture 2>&1 | grep -E "attn_decode|splits|panicked"; done
ATTN_BENCH_LAUNCHES=1 timeout 120 /usr/local/cuda/bin/ncu --set full -k attn_decode -c 8 $B/hearth_engine attn_decode_bench --ignored --nocapture > /root/z/ncu_attn.txt 2>&1
grep -E "attn_decode|Duration|Registers Per|Achieved Occupancy|Theoretical Occupancy|Memory Throughput|DRAM Throughput|Issue Slots Busy|No Eligible|Eligible Warps|Warp Cycles Per Issued|Dynamic Shared|Static Shared|Block Limit" /root/z/ncu_attn.txt | head -80
echo "attn at $((SECONDS-t0)) s"
tar czf $OUT/z.tgz -C /root z
bench/cuda/run_all.sh --out /root/res-copy --synth --hearth $B/hearth --only models --budget 200 2>&1 | grep -v "^|" | tail -1
echo "models at $((SECONDS-t0)) s"
OUT=/root/z/check scripts/cuda_check.sh $B 2>&1 | grep -E "^(PASS|FAIL)" | sort | uniq -c
grep -h -E "panicked|FAILED" -A6 /root/z/check/*.log | head -30
echo "check at $((SECONDS-t0)) s"
tar czf $OUT/z.tgz -C /root z
for round in 1 2; do
  for m in q4_k_m q8_0; do
    for s in "HEARTH_CUDA_MV_PERSIST=0" "HEARTH_CUDA_MV_PERSIST=1"; do
      r=$(env $s $B/hearth --device cuda bench --model $M/llama8b-$m.gguf --prompt-tokens 2048 --gen-tokens 64 --reps 2 2>/dev/null | grep -E '^(prefill|decode):' | cut -d' ' -f2 | paste -sd/)
      echo "$m $s: $r"
    done
  done
done | tee /root/z/decode.txt
echo "decode at $((SECONDS-t0)) s"
tar czf $OUT/z.tgz -C /root z
MODELS="q4_k_m" STREAMS=64 bench/cuda/ab_serve.sh /root/z/serve-prof $B/hearth "HEARTH_CUDA_PROFILE=1" 2>&1 | grep -v "^  at"
grep -h -B2 -A30 "GPU kernel" /root/z/serve-prof/*.serve.log | tail -36
echo "done at $((SECONDS-t0)) s"
tar czf $OUT/z.tgz -C /root z
