#!/usr/bin/env python3
"""Writes tests/fixtures/tiny_mlx: the tiny random-weight models of tests/fixtures/tiny converted to MLX
quantized form by mlx-lm's own `mlx_lm.convert`, with the logits mlx-lm computes on them.

Needs `mlx[cpu]` and `mlx-lm` (pip install 'mlx[cpu]' mlx-lm; this was run with mlx 0.32.4, mlx-lm 0.32.2).
Each variant is converted from the f32 Hugging Face folder with dtype float32, so scales, biases and every
activation are f32 and mlx-lm's logits are an f32 reference for hearth's (the bf16 variant checks bf16
scales). tests/mlx_models.rs loads each folder with hearth and compares all-position logits.

    python scripts/make_mlx_model_fixtures.py
"""

import json
import shutil
import sys
import tempfile
from pathlib import Path

import mlx.core as mx
from mlx_lm import load
from mlx_lm.convert import convert

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "tests" / "fixtures" / "tiny"
OUT = ROOT / "tests" / "fixtures" / "tiny_mlx"

# (variant name, source folder, convert kwargs)
EVERY = [
    ("q4-g32", "hf-f32", dict(q_bits=4, q_group_size=32)),
    ("q8-g64", "hf-f32", dict(q_bits=8, q_group_size=64)),
]
LLAMA_ONLY = [
    ("q2-g32", "hf-f32", dict(q_bits=2, q_group_size=32)),
    ("q3-g32", "hf-f32", dict(q_bits=3, q_group_size=32)),
    ("q5-g64", "hf-f32", dict(q_bits=5, q_group_size=64)),
    ("q6-g32", "hf-f32", dict(q_bits=6, q_group_size=32)),
    ("q4-g64-bf16", "hf-bf16", dict(q_bits=4, q_group_size=64)),
    ("mxfp4", "hf-f32", dict(q_mode="mxfp4")),
    ("nvfp4", "hf-f32", dict(q_mode="nvfp4")),
    ("mxfp8", "hf-f32", dict(q_mode="mxfp8")),
    ("mixed_3_6", "hf-f32", dict(quant_predicate="mixed_3_6", q_group_size=32)),
]
ARCHS = {"llama": EVERY + LLAMA_ONLY, "mistral": EVERY, "qwen2": EVERY, "qwen3": EVERY, "gemma3": EVERY}


def main():
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)
    for arch, variants in ARCHS.items():
        ref = json.loads((TINY / arch / "reference.json").read_text())
        tokens = ref["tokens"]
        out_arch = OUT / arch
        out_arch.mkdir()
        entries = {}
        for name, src, kw in variants:
            with tempfile.TemporaryDirectory() as tmp:
                dst = Path(tmp) / "m"
                dtype = "bfloat16" if src == "hf-bf16" else "float32"
                convert(str(TINY / arch / src), str(dst), quantize=True, dtype=dtype, **kw)
                model, _ = load(str(dst))
                if dtype == "bfloat16":
                    # Activations in f32 over the bf16 checkpoint's own scales and biases.
                    model.set_dtype(mx.float32, lambda t: t != mx.uint32 and t != mx.uint8)
                logits = model(mx.array([tokens]))[0].astype(mx.float32)
                mx.eval(logits)
                keep = out_arch / name
                keep.mkdir()
                for f in ["config.json", "model.safetensors"]:
                    shutil.copy(dst / f, keep / f)
            import numpy as np

            arr = np.array(logits, dtype="<f4")
            (out_arch / f"logits-{name}.f32").write_bytes(arr.tobytes())
            entries[name] = {"path": name, "logits": f"logits-{name}.f32", "convert": {**kw, "dtype": dtype}}
            print(arch, name, arr.shape, file=sys.stderr)
        (out_arch / "reference.json").write_text(
            json.dumps({"arch": arch, "tokens": tokens, "variants": entries}, indent=1) + "\n"
        )


if __name__ == "__main__":
    main()
