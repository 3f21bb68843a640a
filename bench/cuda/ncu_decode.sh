#!/usr/bin/env bash
# Run THERE: Nsight Compute's per-kernel time and DRAM bytes for hearth's decode steps of one model, with the
# steps' CUDA graphs replayed as they are in a benchmark (each graph node is profiled alone).
#
# usage: bench/cuda/ncu_decode.sh HEARTH MODEL OUT_PREFIX [GEN]
#   writes OUT_PREFIX.csv (ncu's raw rows) and OUT_PREFIX.txt (bench/cuda/ncu_summary.py: time, bytes and
#   bandwidth per kernel, per decoded token). The span profiled is the decode of GEN tokens (default 4) after a
#   2048-token prompt: `hearth bench` marks it with cuProfilerStart/Stop under HEARTH_PROFILER_RANGE=1.
# env: NCU (default: ncu on PATH, else the newest under /opt/nvidia/nsight-compute or /usr/local/cuda/bin),
#      PROMPT (2048), HEARTH_BENCH_ARGS (default "--device cuda"), NCU_ARGS (appended to ncu's options, e.g.
#      "--cache-control none" to keep the caches warm between kernels as a replayed graph does).
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
hearth=${1:?usage: ncu_decode.sh HEARTH MODEL OUT_PREFIX [GEN]}
model=${2:?model}
out=${3:?out prefix}
gen=${4:-4}
ncu=${NCU:-$(command -v ncu || ls -d /usr/local/cuda/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | tail -1)}
[ -x "$ncu" ] || { echo "ncu_decode: no ncu found" >&2; exit 1; }
read -r -a hargs <<<"${HEARTH_BENCH_ARGS:---device cuda}"
# --clock-control none: the clocks as a benchmark sees them. Only three metrics, all from one pass.
read -r -a extra <<<"${NCU_ARGS:-}"
HEARTH_PROFILER_RANGE=1 "$ncu" --profile-from-start off --clock-control none --graph-profiling node "${extra[@]}" \
    --metrics gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum --csv --page raw \
    "$hearth" bench --model "$model" --prompt-tokens "${PROMPT:-2048}" --gen-tokens "$gen" --reps 1 "${hargs[@]}" \
    >"$out.csv" 2>"$out.log"
rc=$?
python3 "$here/ncu_summary.py" "$out.csv" --tokens "$gen" >"$out.txt" || rc=1
cat "$out.txt"
exit $rc
