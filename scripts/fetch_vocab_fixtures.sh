#!/usr/bin/env bash
# Fetches llama.cpp's tokenizer test vocabularies (ggml-vocab-*.gguf with their .inp/.out test vectors) into DEST.
#
# They ship inside the llama-cpp-python source distribution on PyPI (vendor/llama.cpp/models/), which is the
# one place they can be had with an ordinary package client. Only those files are extracted. Idempotent: when
# DEST already holds ggml-vocab-llama-spm.gguf and its vectors, nothing is downloaded.
#
# Usage: HEARTH_VOCAB_DIR=$(scripts/fetch_vocab_fixtures.sh DEST)
#        cargo test -p hearth-engine --test tokenizer_conformance
# Prints DEST as an absolute path on stdout (progress goes to stderr).
set -euo pipefail

dest="${1:-}"
if [[ -z "$dest" ]]; then
    echo "usage: $0 DEST" >&2
    exit 2
fi
mkdir -p "$dest"
dest="$(cd "$dest" && pwd)"

if [[ -f "$dest/ggml-vocab-llama-spm.gguf" && -f "$dest/ggml-vocab-llama-spm.gguf.out" ]]; then
    echo "vocab fixtures already in $dest" >&2
    echo "$dest"
    exit 0
fi

py="${PYTHON:-python3}"
# Pinned so that the vectors (and hearth's results on them) do not change under us; override to try a newer one.
version="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# Only the package itself must come as source; its build tools (needed to read its metadata) may be wheels.
"$py" -m pip download --quiet --disable-pip-version-check --no-deps --no-binary llama-cpp-python \
    "llama-cpp-python==$version" -d "$tmp" >&2
sdist="$(ls "$tmp"/llama_cpp_python-*.tar.gz 2>/dev/null | head -n1 || true)"
if [[ -z "$sdist" ]]; then
    echo "pip did not produce a llama_cpp_python sdist in $tmp" >&2
    exit 1
fi

# Extract only the vocab files; the member prefix is the sdist's top folder.
tar -xzf "$sdist" -C "$tmp" --wildcards '*/vendor/llama.cpp/models/ggml-vocab-*'
found=0
for f in "$tmp"/*/vendor/llama.cpp/models/ggml-vocab-*; do
    [[ -f "$f" ]] || continue
    cp -f "$f" "$dest/"
    found=$((found + 1))
done
if [[ "$found" -eq 0 ]]; then
    echo "no ggml-vocab-* files in $sdist" >&2
    exit 1
fi
echo "copied $found files from $(basename "$sdist") into $dest" >&2
echo "$dest"
