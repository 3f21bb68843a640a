#!/usr/bin/env bash
# Stages stripped release binaries for a GPU machine into device/bin (git-ignored, carried by the device
# tool): hearth, the CUDA test binary (tests/cuda_backend.rs) and the engine's unit tests (GPU kernel tests
# in backend/cuda). The GPU machine has no Rust toolchain; everything it runs is built here.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p hearth >&2
out=$(cargo test --release -p hearth-engine --test cuda_backend --test cuda_q8 --test greedy_picks --lib --no-run 2>&1)
mkdir -p device/bin
cp target/release/hearth device/bin/hearth
for name in cuda_backend cuda_q8 greedy_picks hearth_engine; do
  f=$(echo "$out" | grep -o "target/release/deps/${name}-[0-9a-f]*" | head -1)
  cp "$f" "device/bin/$name"
done
strip device/bin/*
ls -la device/bin >&2
