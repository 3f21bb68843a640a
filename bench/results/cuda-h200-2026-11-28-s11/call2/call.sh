#!/usr/bin/env bash
# Session 11 call 2: decode attention on the tensor cores (attn_decode_mma, HEARTH_CUDA_ATTN_MMA): the
# attention kernel test first, the kernel alone at 64/16/1 rows (and under a 4-block register cap), ncu on
# it; the GPU checks; decode after 2,048 tokens with it off/on; 1 and 64 streams of Q4_K_M off/on.
set -uo pipefail
t0=$SECONDS
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
tar xJf device/bin.tar.xz -C device
export HEARTH_CUDA_CACHE=/tmp/hearth-cuda-cache
mkdir -p /root/z
B=device/bin
M=/root/hearth-bench
HEARTH_REQUIRE_CUDA=1 $B/hearth_engine decode_attention_kernels_match_reference_on_gpu --test-threads=1 --nocapture 2>&1 | grep -E "test result|panicked|off by" | head -5
for r in 64 16 1; do ATTN_BENCH_ROWS=$r $B/hearth_engine attn_decode_bench --ignored --nocapture 2>&1 | grep -E "attn_decode|panicked"; done
HEARTH_CUDA_ATTN_MMA_BLOCKS=4 $B/hearth_engine attn_decode_bench --ignored --nocapture 2>&1 | grep -E "mma|panicked" | sed 's/^/blocks=4 /'
ATTN_BENCH_LAUNCHES=1 timeout 120 /usr/local/cuda/bin/ncu --set full -k attn_decode_mma -c 2 $B/hearth_engine attn_decode_bench --ignored --nocapture > /root/z/ncu_attn_mma.txt 2>&1
grep -E "attn_decode|Duration|Registers Per|Achieved Occupancy|Theoretical Occupancy|DRAM Throughput|Issue Slots Busy|Eligible Warps|Warp Cycles Per Issued|Executed Instructions  " /root/z/ncu_attn_mma.txt | head -30
echo "attn at $((SECONDS-t0)) s"
tar czf $OUT/z.tgz -C /root z
bench/cuda/run_all.sh --out /root/res-copy --synth --hearth $B/hearth --only models --budget 200 2>&1 | grep -v "^|" | tail -1
echo "models at $((SECONDS-t0)) s"
OUT=/root/z/check scripts/cuda_check.sh $B 2>&1 | grep -E "^(PASS|FAIL)" | sort | uniq -c
grep -h -E "panicked|FAILED" -A6 /root/z/check/*.log | head -30
echo "check at $((SECONDS-t0)) s"
tar czf $OUT/z.tgz -C /root z
for round in 1 2; do
  for m in q4_k_m q8_0 bf16; do
    [ $round = 2 ] && [ $m = bf16 ] && continue
    for s in "HEARTH_CUDA_ATTN_MMA=0" "HEARTH_CUDA_ATTN_MMA=1"; do
      r=$(env $s $B/hearth --device cuda bench --model $M/llama8b-$m.gguf --prompt-tokens 2048 --gen-tokens 64 --reps 2 2>/dev/null | grep -E '^(prefill|decode):' | cut -d' ' -f2 | paste -sd/)
      echo "$m $s: $r"
    done
  done
done | tee /root/z/decode.txt
echo "decode at $((SECONDS-t0)) s"
tar czf $OUT/z.tgz -C /root z
MODELS="q4_k_m" STREAMS=1,64 bench/cuda/ab_serve.sh /root/z/serve $B/hearth "HEARTH_CUDA_ATTN_MMA=0" "HEARTH_CUDA_ATTN_MMA=1" 2>&1 | grep -v "^  at"
echo "done at $((SECONDS-t0)) s"
tar czf $OUT/z.tgz -C /root z
