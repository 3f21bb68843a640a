#!/usr/bin/env bash
# Run HERE: writes device/smollm2-tokenizer/ (tokenizer.json, tokenizer_config.json and special_tokens_map.json
# when the converter writes one), SmolLM2's tokenizer as Hugging Face files. The GPU machine has no network and
# no Hugging Face cache, and bench/cuda/make_llama8b.py needs a real tokenizer beside its random weights: both
# llama.cpp's convert_hf_to_gguf.py and hearth read the vocabulary from these files.
#
# usage: bench/cuda/make_tokenizer_dir.sh [MODEL.gguf] [OUT_DIR]
#   MODEL.gguf  default models/SmolLM2-135M-Instruct.Q4_1.gguf (scripts/fetch_models.sh fetches it)
#   OUT_DIR     default device/smollm2-tokenizer
# env: HEARTH   a hearth binary to use instead of `cargo run --release --`
#      PYTHON   a Python with transformers, for the check that AutoTokenizer loads the folder (default
#               /work/venvs/ref/bin/python when present, else python3; the check is skipped without transformers)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo_root=$(cd "$here/../.." && pwd)
cd "$repo_root"
model=${1:-models/SmolLM2-135M-Instruct.Q4_1.gguf}
out=${2:-device/smollm2-tokenizer}
[ -f "$model" ] || { echo "no such model: $model (scripts/fetch_models.sh fetches it)" >&2; exit 1; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# The whole model is converted (a few hundred MB of safetensors in a temporary folder) because `hearth convert`
# has no tokenizer-only mode; only the tokenizer files are kept.
if [ -n "${HEARTH:-}" ]; then
    "$HEARTH" convert "$model" "$tmp/hf" --to hf
else
    nice -n 19 cargo run --release --quiet -- convert "$model" "$tmp/hf" --to hf
fi

mkdir -p "$out"
kept=()
for f in tokenizer.json tokenizer_config.json special_tokens_map.json; do
    if [ -f "$tmp/hf/$f" ]; then
        cp "$tmp/hf/$f" "$out/$f"
        kept+=("$f")
    fi
done
[ -f "$out/tokenizer.json" ] || { echo "hearth convert wrote no tokenizer.json" >&2; exit 1; }
echo "wrote $out: ${kept[*]} ($(du -sk "$out" | cut -f1) KiB)"

python=${PYTHON:-}
[ -z "$python" ] && [ -x /work/venvs/ref/bin/python ] && python=/work/venvs/ref/bin/python
python=${python:-python3}
"$python" - "$out" <<'EOF'
import sys
try:
    from transformers import AutoTokenizer
except ImportError:
    print("transformers missing: AutoTokenizer check skipped")
    sys.exit(0)
tok = AutoTokenizer.from_pretrained(sys.argv[1])
ids = tok("The quick brown fox jumps over the lazy dog.")["input_ids"]
print(f"AutoTokenizer: {type(tok).__name__}, {len(tok)} tokens, bos={tok.bos_token!r} eos={tok.eos_token!r}, "
      f"'The quick brown fox...' -> {ids}")
EOF
