#!/usr/bin/env python3
"""Writes tests/fixtures/mlx_convert/: what `mlx_lm.convert` produces for the tiny Hugging Face models.

hearth's `convert --to mlx` must lay out a folder exactly as mlx-lm does, so each case here runs mlx-lm's own
converter (mlx-lm 0.32.x, mlx 0.32.x; CPU is enough) on a committed tiny model and records, compactly:
  - every tensor of the output: dtype, shape and the sha256 of its bytes,
  - config.json's `quantization` and `quantization_config` sections and `tie_word_embeddings`,
  - model.safetensors.index.json's metadata;
  - for the cases in DEQUANTIZE, the tensors of `mlx_lm.convert -d` run on that output (dequantized back).
crates/hearth-engine/tests/convert_mlx.rs runs hearth on the same inputs and compares all of it exactly.

A source written `gguf:PATH` is a tiny GGUF (llama256 has no Hugging Face folder: its 256-wide rows divide into
groups of 128 everywhere) first turned into a Hugging Face folder by `hearth convert --to hf` (HEARTH_BIN,
default target/release/hearth); the test does the same with hearth's library.

Run with the mlx venv:  /work/venvs/mlx/bin/python scripts/make_mlx_convert_fixtures.py
"""

import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "fixtures" / "tiny"
OUT = ROOT / "tests" / "fixtures" / "mlx_convert"

# name: (source folder under tests/fixtures/tiny, mlx_lm.convert arguments)
CASES = {
    "llama-bf16-affine-q4-g32": ("llama/hf-bf16", ["--q-bits", "4", "--q-group-size", "32"]),
    "llama-bf16-affine-q3-g64": ("llama/hf-bf16", ["--q-bits", "3", "--q-group-size", "64"]),
    # Only the 128-wide down_proj rows divide into groups of 128: everything else stays bf16.
    "llama-bf16-affine-q8-g128": ("llama/hf-bf16", ["--q-bits", "8", "--q-group-size", "128"]),
    "llama-bf16-to-f16-affine-q4-g64": (
        "llama/hf-bf16", ["--q-bits", "4", "--q-group-size", "64", "--dtype", "float16"]),
    "mistral-f32-affine-q2-g32": ("mistral/hf-f32", ["--q-bits", "2", "--q-group-size", "32"]),
    "mistral-f32-mxfp4": ("mistral/hf-f32", ["--q-mode", "mxfp4"]),
    "qwen2-bf16-affine-q6-g64": ("qwen2/hf-bf16", ["--q-bits", "6", "--q-group-size", "64"]),
    "qwen3-f32-affine-q5-g32": ("qwen3/hf-f32", ["--q-bits", "5", "--q-group-size", "32"]),
    "qwen3-bf16-mixed-2-6": ("qwen3/hf-bf16", ["--q-group-size", "32", "--quant-predicate", "mixed_2_6"]),
    "gemma3-bf16-affine-q4-g64": ("gemma3/hf-bf16", ["--q-bits", "4", "--q-group-size", "64"]),
    "gemma3-bf16-nvfp4": ("gemma3/hf-bf16", ["--q-mode", "nvfp4"]),
    "gemma3-f32-mxfp8": ("gemma3/hf-f32", ["--q-mode", "mxfp8"]),
    "gemma3-bf16-mixed-3-6": ("gemma3/hf-bf16", ["--q-group-size", "64", "--quant-predicate", "mixed_3_6"]),
    "llama-f32-mixed-4-6": ("llama/hf-f32", ["--q-group-size", "32", "--quant-predicate", "mixed_4_6"]),
    "mistral-bf16-mixed-3-4": ("mistral/hf-bf16", ["--q-group-size", "64", "--quant-predicate", "mixed_3_4"]),
    "llama256-q4k-affine-q4-g128": ("gguf:llama256/model-q4_k.gguf", ["--q-bits", "4", "--q-group-size", "128"]),
    "llama256-q6k-mxfp8": ("gguf:llama256/model-q6_k.gguf", ["--q-mode", "mxfp8"]),
    "llama256-f16-mixed-2-6": ("gguf:llama256/model-f16.gguf", ["--q-group-size", "128", "--quant-predicate",
                                                               "mixed_2_6"]),
}
# Cases whose output is also dequantized back with `mlx_lm.convert -d` (hearth: convert MLX --to hf).
DEQUANTIZE = {"llama-bf16-affine-q4-g32", "qwen2-bf16-affine-q6-g64", "mistral-f32-mxfp4", "gemma3-bf16-nvfp4",
              "gemma3-f32-mxfp8", "qwen3-bf16-mixed-2-6", "llama-bf16-to-f16-affine-q4-g64"}
HEARTH_BIN = Path(os.environ.get("HEARTH_BIN", ROOT / "target" / "release" / "hearth"))


def tensors(path: Path) -> dict:
    """name -> {dtype, shape, sha256} for every tensor of one safetensors file."""
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    data = raw[8 + n:]
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        b, end = e["data_offsets"]
        out[name] = {"dtype": e["dtype"], "shape": e["shape"],
                     "sha256": hashlib.sha256(data[b:end]).hexdigest()}
    return out


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    for name, (src, args) in CASES.items():
        with tempfile.TemporaryDirectory() as tmp:
            dst = Path(tmp) / "out"
            hf = TINY / src
            if src.startswith("gguf:"):
                hf = Path(tmp) / "hf"
                subprocess.run([str(HEARTH_BIN), "convert", str(TINY / src[5:]), str(hf), "--to", "hf"], check=True,
                               capture_output=True)
            cmd = [sys.executable, "-m", "mlx_lm", "convert", "--hf-path", str(hf),
                   "--mlx-path", str(dst), "-q", *args]
            subprocess.run(cmd, check=True, capture_output=True)
            config = json.loads((dst / "config.json").read_text())
            index = json.loads((dst / "model.safetensors.index.json").read_text())
            all_tensors = {}
            for shard in sorted(set(index["weight_map"].values())):
                all_tensors.update(tensors(dst / shard))
            record = {
                "source": src,
                "mlx_lm_args": ["-q", *args],
                "quantization": config.get("quantization"),
                "quantization_config": config.get("quantization_config"),
                "tie_word_embeddings": config.get("tie_word_embeddings"),
                "index_metadata": index["metadata"],
                "files": sorted(p.name for p in dst.iterdir()),
                "tensors": dict(sorted(all_tensors.items())),
            }
            if name in DEQUANTIZE:
                deq = Path(tmp) / "deq"
                subprocess.run([sys.executable, "-m", "mlx_lm", "convert", "--hf-path", str(dst), "--mlx-path",
                                str(deq), "-d"], check=True, capture_output=True)
                dq_index = json.loads((deq / "model.safetensors.index.json").read_text())
                dq = {}
                for shard in sorted(set(dq_index["weight_map"].values())):
                    dq.update(tensors(deq / shard))
                record["dequantized"] = dict(sorted(dq.items()))
        (OUT / f"{name}.json").write_text(json.dumps(record, indent=1) + "\n")
        print(name, len(record["tensors"]), "tensors")
    return 0


if __name__ == "__main__":
    sys.exit(main())
