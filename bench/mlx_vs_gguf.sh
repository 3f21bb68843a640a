#!/usr/bin/env bash
# Decode and prefill speed of one model as 4-bit MLX (affine, groups of 64, bf16 scales: the mlx-community's
# usual form) against the same weights as GGUF Q4_0 (the same 4.5 bits per weight), interleaved.
#
# usage: bench/mlx_vs_gguf.sh MODEL.gguf [THREADS] [ROUNDS]
# Converts MODEL.gguf to a bf16 Hugging Face folder, then that folder to MLX 4-bit and to GGUF Q4_0 (all with
# `hearth convert`, under target/mlx-vs-gguf/), and runs `hearth bench` on the two, ROUNDS rounds in alternating
# order.
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:?usage: bench/mlx_vs_gguf.sh MODEL.gguf [THREADS] [ROUNDS]}
threads=${2:-$(nproc)}
rounds=${3:-3}
hearth=target/release/hearth
[ -x "$hearth" ] || cargo build --release -p hearth
out=target/mlx-vs-gguf
mkdir -p "$out"
"$hearth" convert "$model" "$out/hf-bf16" --to hf --dtype bf16 --force
"$hearth" convert "$out/hf-bf16" "$out/mlx-q4-g64" --to mlx -q --bits 4 --group-size 64 --force
"$hearth" convert "$out/hf-bf16" "$out/q4_0.gguf" --to gguf --outtype q4_0 --force
for r in $(seq "$rounds"); do
  # Alternate which runs first, so that drift (heat, other load) does not favour one side.
  if [ $((r % 2)) -eq 1 ]; then order="$out/mlx-q4-g64 $out/q4_0.gguf"; else order="$out/q4_0.gguf $out/mlx-q4-g64"; fi
  for m in $order; do
    echo "round $r $(basename "$m"): $("$hearth" bench --model "$m" --threads "$threads" --reps 3 \
      --prompt-tokens 256 --gen-tokens 128 2>&1 | grep -E '^(prefill|decode):' | tr '\n' ' ')"
  done
done
