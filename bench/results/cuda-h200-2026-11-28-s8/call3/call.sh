#!/usr/bin/env bash
# Session 8 call 3: row groups and Q4_K pairs again, with the register blow-up of call 2 fixed (block-uniform
# group index for one group a block; prefetch loop not unrolled).
set -uo pipefail
t0=$SECONDS
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
tar xJf device/bin.tar.xz -C device
nvidia-smi --query-gpu=name --format=csv,noheader
Z=/root/z; mkdir -p $Z
H=device/bin/hearth
bench/cuda/run_all.sh --out /root/res-copy --synth --hearth $H --only models --budget 200 2>&1 | grep -v "^|" | tail -1
echo "models at $((SECONDS-t0)) s"
export HEARTH_CUDA_CACHE=/tmp/hearth-cuda-cache HEARTH_REQUIRE_CUDA=1
for v in "X=1" "HEARTH_CUDA_RW=1 HEARTH_CUDA_UPT=2" "HEARTH_CUDA_RW=2"; do
  env $v device/bin/cuda_q8 --test-threads=1 > $Z/q8.log 2>&1; echo "$v cuda_q8 rc $? $(grep 'test result' $Z/q8.log)"
done
grep -h "relative L2" $Z/q8.log | head -8
M=/root/hearth-bench
run() {  # model, then variants "label:env..."
  local m=$1; shift
  for rep in 1 2; do
    line="$m rep$rep | main $(device/bin/hearth_main --device cuda bench --model $M/llama8b-$m.gguf --prompt-tokens 2048 --gen-tokens 64 --reps 1 2>/dev/null | grep -E '^decode:' | cut -d' ' -f2)"
    for v in "$@"; do
      lab=${v%%:*}; envs=${v#*:}
      line="$line | $lab $(env $envs "$H" --device cuda bench --model $M/llama8b-$m.gguf --prompt-tokens 2048 --gen-tokens 64 --reps 1 2>/dev/null | grep -E '^decode:' | cut -d' ' -f2)"
    done
    echo "$line"
  done
}
run q4_k_m "nopair:HEARTH_CUDA_Q4K_PAIRS=0" "pair:X=1" "pair-rw2:HEARTH_CUDA_RW=2" "pair-rw1:HEARTH_CUDA_RW=1" "pair-rw1-upt2:HEARTH_CUDA_RW=1 HEARTH_CUDA_UPT=2" "pair-rw2-upt2:HEARTH_CUDA_RW=2 HEARTH_CUDA_UPT=2"
echo "at $((SECONDS-t0)) s"
run q8_0 "rw4:X=1" "rw2-upt2:HEARTH_CUDA_RW=2 HEARTH_CUDA_UPT=2" "rw1-upt2:HEARTH_CUDA_RW=1 HEARTH_CUDA_UPT=2"
run bf16 "rw4:X=1"
echo "at $((SECONDS-t0)) s"
NCU=/usr/local/cuda/bin/ncu
for v in "X=1" "HEARTH_CUDA_RW=1 HEARTH_CUDA_UPT=2"; do
env $v HEARTH_PROFILER_RANGE=1 timeout 60 "$NCU" --profile-from-start off --clock-control none --graph-profiling node \
  -k regex:'mvq8|gluq8' --launch-skip 24 --launch-count 10 --metrics gpu__time_duration.sum,dram__bytes_read.sum,smsp__inst_executed.sum,launch__registers_per_thread \
  "$H" --device cuda bench --model $M/llama8b-q4_k_m.gguf --prompt-tokens 2048 --gen-tokens 4 --reps 1 > $Z/ncu.txt 2>&1
echo "== ncu $v"; grep -E "^  [a-z_0-9]+ \(|gpu__time|dram__bytes|inst_executed|registers" $Z/ncu.txt | sed 's/  */ /g' | paste - - - - - | cut -c1-200
done
echo "done at $((SECONDS-t0)) s"
