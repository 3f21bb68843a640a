#!/usr/bin/env bash
# Run HERE (the dev VM, with network or a cached sdist): writes device/llama.cpp-src.tar.xz, the llama.cpp source
# vendored in the llama-cpp-python 0.3.36 sdist, cut down to what the GPU machine needs: the CUDA build of
# llama-bench, llama-batched-bench and llama-quantize, and convert_hf_to_gguf.py (with its `conversion` package and
# gguf-py) for turning the synthetic 8B Hugging Face folder into GGUF there. A device call carries at most 64 MiB,
# so everything else goes: vocab files, docs, tests, examples, the web UI, and the other GPU backends' sources.
#
# usage: bench/cuda/pack_llama_cpp.sh [--sdist FILE] [--out FILE]
#   --sdist FILE   an already-downloaded llama_cpp_python-0.3.36.tar.gz (else: LLAMA_SDIST, else the cache of
#                  bench/build_llama_cpp.sh, else it downloads one with pip)
#   --out FILE     default <repo>/device/llama.cpp-src.tar.xz
# The source is unpacked (and cached) by bench/build_llama_cpp.sh --print-source under target/llama.cpp-build.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo_root=$(cd "$here/../.." && pwd)
sdist=${LLAMA_SDIST:-}
out="$repo_root/device/llama.cpp-src.tar.xz"

while [ $# -gt 0 ]; do
    case "$1" in
        --sdist) sdist=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        -h|--help) sed -n '2,12p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "pack_llama_cpp: unknown argument: $1" >&2; exit 1 ;;
    esac
done

args=(--print-source)
[ -n "$sdist" ] && args+=(--sdist "$sdist")
src=$("$repo_root/bench/build_llama_cpp.sh" "${args[@]}")
if [ ! -f "$src/CMakeLists.txt" ] || [ ! -f "$src/convert_hf_to_gguf.py" ]; then
    echo "no llama.cpp source at $src" >&2
    exit 1
fi

# Paths relative to the llama.cpp folder. Each is either switched off by the cmake flags that
# build_llama_cpp_cuda.sh passes (tests, examples/pocs, app, server/ui/cli) or never read by a CUDA + CPU build
# (other backends are add_subdirectory'd only when their GGML_<NAME> option is on). tools/mtmd, vendor/ and
# scripts/ stay: tools/CMakeLists.txt and vendor/CMakeLists.txt add them unconditionally.
excludes=(
    .git .github .devops .gemini .pi models docs tests media benches examples pocs app skills ci
    tools/ui tools/server tools/cli
    ggml/src/ggml-cann ggml/src/ggml-et ggml/src/ggml-hexagon ggml/src/ggml-metal ggml/src/ggml-opencl
    ggml/src/ggml-openvino ggml/src/ggml-sycl ggml/src/ggml-vulkan ggml/src/ggml-webgpu ggml/src/ggml-zdnn
    ggml/src/ggml-zendnn ggml/src/ggml-virtgpu
)
tar_excludes=()
for d in "${excludes[@]}"; do tar_excludes+=("--exclude=llama.cpp/$d"); done

mkdir -p "$(dirname "$out")"
out=$(cd "$(dirname "$out")" && pwd)/$(basename "$out")
# --anchored: only these paths, not every folder of the same name deeper down (src/models holds model graphs).
# --sort/--owner/--mtime pinned so the same source gives the same bytes (a re-pack does not look like a change).
nice -n 19 tar --anchored "${tar_excludes[@]}" --sort=name --owner=0 --group=0 --numeric-owner \
    --mtime='2026-01-01 00:00Z' -cf - -C "$(dirname "$src")" llama.cpp | nice -n 19 xz -9 -T1 >"$out.part"
mv "$out.part" "$out"
echo "wrote $out: $(du -k "$out" | cut -f1) KiB ($(stat -c %s "$out") bytes)"
