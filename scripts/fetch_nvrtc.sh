#!/usr/bin/env bash
# Fetches NVIDIA's run-time CUDA compiler library (libnvrtc, CUDA 13) from PyPI into DEST, so the tests can
# compile every CUDA kernel on a machine without a GPU (NVRTC is a host library; see
# backend/cuda/mod.rs's tests). Only the library folder of the wheel is kept. Idempotent.
#
# Usage: NVRTC_LIB=$(scripts/fetch_nvrtc.sh DEST)
#        LD_LIBRARY_PATH=$NVRTC_LIB HEARTH_REQUIRE_NVRTC=1 cargo test -p hearth-engine --lib cuda
# Prints the folder holding libnvrtc.so.13 on stdout (progress goes to stderr). x86_64 Linux only.
set -euo pipefail
dest="${1:?usage: $0 DEST}"
mkdir -p "$dest"
dest="$(cd "$dest" && pwd)"
lib="$dest/nvidia/cu13/lib"
if [[ -f "$lib/libnvrtc.so.13" && -f "$lib/libnvrtc-builtins.so.13.0" ]]; then
    echo "$lib"
    exit 0
fi
# Pinned to the CUDA 13.0 NVRTC, the version the backend is built against (cudarc's cuda-13000).
version="${NVRTC_VERSION:-13.0.88}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
"${PYTHON:-python3}" -m pip download -q --no-deps --only-binary=:all: --platform manylinux_2_12_x86_64 \
    --python-version 3.11 -d "$tmp" "nvidia-cuda-nvrtc==$version" >&2
"${PYTHON:-python3}" - "$tmp" "$dest" <<'PY'
import glob, sys, zipfile
wheel = glob.glob(sys.argv[1] + "/nvidia_cuda_nvrtc-*.whl")[0]
with zipfile.ZipFile(wheel) as z:
    for n in z.namelist():
        if n.startswith("nvidia/cu13/lib/"):
            z.extract(n, sys.argv[2])
PY
echo "$lib"
