#!/usr/bin/env bash
# Session 8 call 2: row groups (MV_RW) and Q4_K unit pairs against main; GPU checks under RW=1 and 2 too.
set -uo pipefail
t0=$SECONDS
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
tar xJf device/bin.tar.xz -C device
nvidia-smi --query-gpu=name --format=csv,noheader
Z=/root/z; mkdir -p $Z
H=device/bin/hearth
bench/cuda/run_all.sh --out /root/res-copy --synth --hearth $H --only models --budget 200 2>&1 | grep -v "^|" | tail -1
echo "models at $((SECONDS-t0)) s"
OUT=$Z/check scripts/cuda_check.sh device/bin 2>&1 | grep -E "^(PASS|FAIL)"
grep -h -E "panicked" -A6 $Z/check/*.log | head -30
export HEARTH_CUDA_CACHE=/tmp/hearth-cuda-cache HEARTH_REQUIRE_CUDA=1
for rw in 1 2; do
  for tb in cuda_q8 cuda_backend; do
    HEARTH_CUDA_RW=$rw device/bin/$tb --test-threads=1 > $Z/rw$rw-$tb.log 2>&1; echo "RW=$rw $tb rc $? $(grep 'test result' $Z/rw$rw-$tb.log)"
  done
done
grep -h "relative L2" $Z/rw1-cuda_q8.log | head -8
echo "check at $((SECONDS-t0)) s"
M=/root/hearth-bench
b() { "$1" --device cuda bench --model $M/llama8b-$2.gguf --prompt-tokens 2048 --gen-tokens 64 --reps 1 2>/dev/null | grep -E "^decode:" | cut -d' ' -f2; }
run() {  # model, then variants "label:env..."
  local m=$1; shift
  for rep in 1 2; do
    line="$m rep$rep"
    line="$line | main $(b device/bin/hearth_main $m)"
    for v in "$@"; do
      lab=${v%%:*}; envs=${v#*:}
      line="$line | $lab $(env $envs "$H" --device cuda bench --model $M/llama8b-$m.gguf --prompt-tokens 2048 --gen-tokens 64 --reps 1 2>/dev/null | grep -E '^decode:' | cut -d' ' -f2)"
    done
    echo "$line"
  done
}
run q4_k_m "nopair:HEARTH_CUDA_Q4K_PAIRS=0" "pair:X=1" "pair-rw2:HEARTH_CUDA_RW=2" "pair-rw1:HEARTH_CUDA_RW=1" "pair-rw1-upt2:HEARTH_CUDA_RW=1 HEARTH_CUDA_UPT=2" "nopair-rw1-upt2:HEARTH_CUDA_Q4K_PAIRS=0 HEARTH_CUDA_RW=1 HEARTH_CUDA_UPT=2"
echo "at $((SECONDS-t0)) s"
run q8_0 "rw4:X=1" "rw2:HEARTH_CUDA_RW=2" "rw1:HEARTH_CUDA_RW=1" "rw1-upt2:HEARTH_CUDA_RW=1 HEARTH_CUDA_UPT=2" "rw2-upt2:HEARTH_CUDA_RW=2 HEARTH_CUDA_UPT=2"
echo "at $((SECONDS-t0)) s"
run bf16 "rw4:X=1" "rw2:HEARTH_CUDA_RW=2" "rw1:HEARTH_CUDA_RW=1"
echo "at $((SECONDS-t0)) s"
NCU=/usr/local/cuda/bin/ncu
for v in "X=1" "HEARTH_CUDA_RW=1" "HEARTH_CUDA_RW=1 HEARTH_CUDA_UPT=2"; do
env $v HEARTH_PROFILER_RANGE=1 timeout 100 "$NCU" --profile-from-start off --clock-control none --graph-profiling node \
  -k regex:'mvq8|gluq8' --launch-skip 24 --launch-count 10 --metrics gpu__time_duration.sum,dram__bytes_read.sum,smsp__inst_executed.sum,sm__warps_active.avg.pct_of_peak_sustained_active,launch__registers_per_thread,launch__grid_size \
  "$H" --device cuda bench --model $M/llama8b-q4_k_m.gguf --prompt-tokens 2048 --gen-tokens 4 --reps 1 > $Z/ncu-q4km-$(echo $v | tr ' =' '__').txt 2>&1
echo "== ncu $v"; grep -E "^  [a-z_0-9]+ \(|gpu__time|dram__bytes|inst_executed|warps_active|registers" $Z/ncu-q4km-$(echo $v | tr ' =' '__').txt | sed 's/  */ /g' | paste - - - - - - | cut -c1-300
done
tar czf $OUT/z.tgz -C /root z
echo "done at $((SECONDS-t0)) s"
