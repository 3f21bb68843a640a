#!/usr/bin/env bash
# Run THERE (the GPU machine, no network): builds llama.cpp's CUDA tools llama-bench, llama-batched-bench and
# llama-quantize from device/llama.cpp-src.tar.xz (written here by bench/cuda/pack_llama_cpp.sh) into
# $HEARTH_BENCH_ROOT/llama.cpp (default /root/hearth-bench/llama.cpp).
#
# usage: bench/cuda/build_llama_cpp_cuda.sh [--tarball FILE] [--jobs N] [--timeout S] [--force]
#   --tarball FILE  default <repo>/device/llama.cpp-src.tar.xz
#   --jobs N        default: every core
#   --timeout S     stop compiling after S seconds (exit 3). A device call lasts at most 10 minutes and a CUDA
#                   build may need more; ninja keeps what it finished, so the next call goes on from there.
#   --force         unpack, configure and build from scratch
# env: CUDA_ARCH (default 90: H100/H200), EXTRA_CMAKE_FLAGS (appended to the configure line)
# Prints the tools' folder on stdout; progress and the elapsed time on stderr; the full log goes to
# ROOT/llama.cpp/build.log (configure: configure.log). Idempotent: a finished build for the same tarball and
# flags is not touched again.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo_root=$(cd "$here/../.." && pwd)
root=${HEARTH_BENCH_ROOT:-/root/hearth-bench}
tarball="$repo_root/device/llama.cpp-src.tar.xz"
jobs=$(nproc)
timeout_s=0
force=0

die() { echo "build_llama_cpp_cuda: $*" >&2; exit 1; }
say() { echo "build_llama_cpp_cuda: $*" >&2; }

while [ $# -gt 0 ]; do
    case "$1" in
        --tarball) tarball=$2; shift 2 ;;
        --jobs) jobs=$2; shift 2 ;;
        --timeout) timeout_s=$2; shift 2 ;;
        --force) force=1; shift ;;
        -h|--help) sed -n '2,15p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument: $1 (see --help)" ;;
    esac
done

t0=$SECONDS
dir="$root/llama.cpp"
src="$dir/src"
build="$dir/build"
bin="$dir/bin"
tools=(llama-bench llama-batched-bench llama-quantize)

# nvcc is often installed but not on PATH.
if ! command -v nvcc >/dev/null 2>&1; then
    for d in /usr/local/cuda/bin /usr/local/cuda-*/bin; do
        [ -x "$d/nvcc" ] && { export PATH="$d:$PATH"; break; }
    done
fi
command -v nvcc >/dev/null 2>&1 || die "nvcc not found (PATH or /usr/local/cuda/bin)"
command -v cmake >/dev/null 2>&1 || die "cmake not found"
gen=()
command -v ninja >/dev/null 2>&1 && gen=(-G Ninja)

cmake_flags=(
    -DCMAKE_BUILD_TYPE=Release
    -DGGML_CUDA=ON
    -DCMAKE_CUDA_ARCHITECTURES="${CUDA_ARCH:-90}"
    -DGGML_NATIVE=ON
    -DBUILD_SHARED_LIBS=OFF
    # LLAMA_CURL is only a deprecated name in this llama.cpp (OFF is silently accepted); LLAMA_OPENSSL is the
    # switch that would look for a TLS library. There is no network there anyway.
    -DLLAMA_CURL=OFF
    -DLLAMA_OPENSSL=OFF
    # The packed tarball lacks these folders, so their switches must be off.
    -DLLAMA_BUILD_TESTS=OFF
    -DLLAMA_BUILD_EXAMPLES=OFF
    -DLLAMA_BUILD_SERVER=OFF
    -DLLAMA_BUILD_APP=OFF
    -DLLAMA_BUILD_TOOLS=ON
    # One GPU: no NCCL (default ON; it would link whatever NCCL cmake happens to find).
    -DGGML_CUDA_NCCL=OFF
    -DGGML_CCACHE=OFF
)
# shellcheck disable=SC2206
[ -n "${EXTRA_CMAKE_FLAGS:-}" ] && cmake_flags+=(${EXTRA_CMAKE_FLAGS})

[ -f "$tarball" ] || die "no such tarball: $tarball (make it here with bench/cuda/pack_llama_cpp.sh)"
source_id="$(basename "$tarball") $(cksum <"$tarball" | cut -d' ' -f1)"
stamp="source: $source_id
cmake: ${cmake_flags[*]}
nvcc: $(nvcc --version | grep -m1 release)"

if [ "$force" = 0 ] && [ "$(cat "$bin/.stamp" 2>/dev/null)" = "$stamp" ]; then
    ok=1
    for t in "${tools[@]}"; do [ -x "$bin/$t" ] || ok=0; done
    if [ "$ok" = 1 ]; then
        say "already built: $bin"
        echo "$bin"
        exit 0
    fi
fi

mkdir -p "$dir"
if [ "$force" = 1 ] || [ "$(cat "$dir/.source" 2>/dev/null)" != "$source_id" ] || [ ! -f "$src/CMakeLists.txt" ]; then
    say "unpacking $tarball"
    rm -rf "$src" "$build" "$bin" "$dir/.source" "$dir/unpack"
    mkdir -p "$dir/unpack"
    tar -xJf "$tarball" -C "$dir/unpack"
    mv "$dir/unpack/llama.cpp" "$src"
    rmdir "$dir/unpack"
    echo "$source_id" >"$dir/.source"
fi

# Keep llama.cpp's build-info from reading whatever git repository lies above /root.
export GIT_CEILING_DIRECTORIES="$dir"
if [ "$force" = 1 ] || [ "$(cat "$build/.configured" 2>/dev/null)" != "$stamp" ]; then
    rm -rf "$build"
    say "configuring (${gen[*]:-make}; log: $dir/configure.log)"
    cmake -S "$src" -B "$build" "${gen[@]}" "${cmake_flags[@]}" >"$dir/configure.log" 2>&1 ||
        { tail -40 "$dir/configure.log" >&2; die "cmake configure failed (log: $dir/configure.log)"; }
    grep -q "Including CUDA backend" "$dir/configure.log" || die "configured without the CUDA backend (see $dir/configure.log)"
    echo "$stamp" >"$build/.configured"
fi

say "building ${tools[*]} with $jobs jobs (log: $dir/build.log)"
limit=()
[ "$timeout_s" -gt 0 ] && limit=(timeout -k 20 "$timeout_s")
set +e
# Appended, not overwritten: a build resumed over several calls keeps the whole story in one log.
{ echo "=== $(date -u '+%F %T') build with $jobs jobs"; } >>"$dir/build.log"
"${limit[@]}" cmake --build "$build" --config Release -j "$jobs" --target "${tools[@]}" >>"$dir/build.log" 2>&1
rc=$?
set -e
if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
    left=$(ninja -C "$build" -n "${tools[@]}" 2>/dev/null | grep -c '^\[' || true)
    say "stopped after ${timeout_s} s with about $left build steps left; run again to continue (elapsed $((SECONDS - t0)) s)"
    exit 3
fi
[ "$rc" = 0 ] || { tail -40 "$dir/build.log" >&2; die "build failed (log: $dir/build.log)"; }

mkdir -p "$bin"
for t in "${tools[@]}"; do
    f=$(find "$build" -type f -name "$t" -perm -u+x | head -1)
    [ -n "$f" ] || die "built, but found no $t under $build"
    cp "$f" "$bin/$t"
done
echo "$stamp" >"$bin/.stamp"
say "built in $((SECONDS - t0)) s: $bin"
echo "$bin"
