#!/usr/bin/env bash
# One shot on a many-core x86 machine with no network: build the pinned llama.cpp from its source tarball, then
# race it against hearth at 16 and 8 threads on every model given. The 2-core dev VM cannot say how either
# engine scales, so this runs where there are cores to spare.
#
# usage: bench/device_cpu_bench.sh DIR
#   DIR holds: the hearth binary (`hearth`), the source tarball that `bench/build_llama_cpp.sh --pack DIR` wrote
#   (llama.cpp-src-*.tar.xz), and one or more *.gguf models. A model too big to carry in one piece may come as
#   `split -b 60M X.gguf X.gguf.part-` pieces (X.gguf.part-aa, -ab, ...): they are joined into a scratch dir.
# env:   OUT          where cpu16.md (the tables) and the build log go, when set
#        THREADS      thread counts to run, default "16 8"
#        REPS         interleaved repetitions per model and thread count, default 3
#        JOBS         compile jobs for llama.cpp, default 16
#        HEARTH_FLAGS extra global hearth flags, e.g. "--activations=f32"
#        COMPARE_ARGS more arguments for compare_llama_cpp.py, e.g. "--prompt-tokens 256 --skip-startup"
# Needs: bash, python3 (standard library only), cmake, a C/C++ compiler; ninja if present.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
dir=${1:?usage: bench/device_cpu_bench.sh DIR (with hearth, llama.cpp-src-*.tar.xz and *.gguf)}
dir=$(cd "$dir" && pwd)
threads=${THREADS:-16 8}
reps=${REPS:-3}
jobs=${JOBS:-16}
build_dir=${LLAMA_BUILD_DIR:-${TMPDIR:-/tmp}/hearth-llama.cpp-build}

hearth="$dir/hearth"
[ -x "$hearth" ] || { chmod +x "$hearth" 2>/dev/null || true; }
[ -x "$hearth" ] || { echo "no executable hearth binary in $dir" >&2; exit 1; }
tarballs=("$dir"/llama.cpp-src-*.tar.xz)
[ -f "${tarballs[0]}" ] || { echo "no llama.cpp-src-*.tar.xz in $dir" >&2; exit 1; }
models=()
for m in "$dir"/*.gguf; do [ -f "$m" ] && models+=("$m"); done
for first in "$dir"/*.gguf.part-aa; do
    [ -f "$first" ] || continue
    name=$(basename "${first%.part-aa}")
    [ -f "$dir/$name" ] && continue
    mkdir -p "$build_dir/models"
    cat "$dir/$name".part-* >"$build_dir/models/$name"
    models+=("$build_dir/models/$name")
done
[ "${#models[@]}" -gt 0 ] || { echo "no *.gguf model (or *.gguf.part-aa pieces) in $dir" >&2; exit 1; }

echo "machine: $(nproc) CPUs; $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')" >&2
log=${OUT:-$build_dir}/llama_cpp_build.log
mkdir -p "$(dirname "$log")"
bin_dir=$("$here/build_llama_cpp.sh" --from-tarball "${tarballs[0]}" --jobs "$jobs" --build-dir "$build_dir" 2>"$log") ||
    { tail -40 "$log" >&2; exit 1; }
echo "llama.cpp tools: $bin_dir" >&2

model_args=()
for m in "${models[@]}"; do model_args+=(--model "$m"); done
flag_args=()
for f in ${HEARTH_FLAGS:-}; do flag_args+=("--hearth-flag=$f"); done

report=$(mktemp)
{
    echo "# hearth vs llama.cpp on $(nproc) CPUs ($(date -u +%Y-%m-%d))"
    echo
    echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'); hearth: $("$hearth" --version)"
} >"$report"
read -r -a extra_args <<<"${COMPARE_ARGS:-}"
for t in $threads; do
    {
        echo
        echo "## $t threads"
        echo
        python3 "$here/compare_llama_cpp.py" --hearth "$hearth" --llama-bin-dir "$bin_dir" --threads "$t" \
            --reps "$reps" "${model_args[@]}" "${flag_args[@]}" "${extra_args[@]}"
    } >>"$report"
done
cat "$report"
if [ -n "${OUT:-}" ]; then
    cat "$report" >"$OUT/cpu16.md"
    echo "wrote $OUT/cpu16.md" >&2
fi
rm -f "$report"
