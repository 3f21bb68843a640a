#!/usr/bin/env python3
"""Makes the fixtures that pin hearth's dequantization to the `gguf` package, bit for bit.

Two modes:

  make_quant_fixtures.py [--out DIR]
      Random blocks for every weight type hearth runs. For each TYPE it writes DIR/TYPE.bin (the raw blocks)
      and DIR/TYPE.f32 (gguf.quants.dequantize of them, little-endian f32). The f16 scale fields of the block
      types are random finite values in [-2, 2]; every other byte is random (plain F16/BF16/F32 data is random
      bits, NaN and Inf included). Deterministic (fixed seed). DIR defaults to tests/fixtures/quants.

  make_quant_fixtures.py --model PATH.gguf [--name NAME] [--out DIR]
      Writes DIR/NAME.sha256.json: {tensor_name: sha256 hex of gguf.quants.dequantize(tensor) as little-endian
      f32 bytes in row-major order}. NAME defaults to the file name without ".gguf".

Needs `pip install gguf numpy` (a venv: python3 -m venv /work/venvs/gguf && /work/venvs/gguf/bin/pip install gguf
numpy). The Rust side is crates/hearth-engine/tests/quants.rs and tests/real_model_quants.rs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import GGUFReader
from gguf.quants import dequantize

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "tests" / "fixtures" / "quants"

# name: (ggml type, bytes per block, elements per block, byte offsets of f16 scale fields, blocks to write)
TYPES = {
    "F32": (T.F32, 4, 1, [], 512),
    "F16": (T.F16, 2, 1, [], 1024),
    "BF16": (T.BF16, 2, 1, [], 1024),
    "Q4_0": (T.Q4_0, 18, 32, [0], 48),
    "Q4_1": (T.Q4_1, 20, 32, [0, 2], 48),
    "Q5_0": (T.Q5_0, 22, 32, [0], 48),
    "Q5_1": (T.Q5_1, 24, 32, [0, 2], 48),
    "Q8_0": (T.Q8_0, 34, 32, [0], 48),
    "Q2_K": (T.Q2_K, 84, 256, [80, 82], 8),
    "Q3_K": (T.Q3_K, 110, 256, [108], 8),
    "Q4_K": (T.Q4_K, 144, 256, [0, 2], 8),
    "Q5_K": (T.Q5_K, 176, 256, [0, 2], 8),
    "Q6_K": (T.Q6_K, 210, 256, [208], 8),
}


def random_blocks(rng: np.random.Generator, name: str) -> np.ndarray:
    """Random blocks of type `name` as a (n_blocks, block_bytes) uint8 array."""
    _, bb, _, scale_offsets, n = TYPES[name]
    raw = rng.integers(0, 256, size=(n, bb), dtype=np.uint8)
    if scale_offsets:
        # Two edge blocks: every quant byte 0x00, then every quant byte 0xFF.
        raw[0, :] = 0x00
        raw[1, :] = 0xFF
        for off in scale_offsets:
            scales = rng.uniform(-2.0, 2.0, size=n).astype(np.float16)
            raw[:, off : off + 2] = scales.view(np.uint8).reshape(n, 2)
    return raw


def write_random_fixtures(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(20240611)
    total = 0
    for name, (qtype, _, _, _, _) in TYPES.items():
        raw = random_blocks(rng, name)
        data = raw.reshape(-1)
        if qtype == T.F32:
            values = dequantize(data.view(np.float32), qtype)
        elif qtype == T.F16:
            values = dequantize(data.view(np.float16), qtype)
        else:
            values = dequantize(data, qtype)
        values = np.ascontiguousarray(values, dtype="<f4").reshape(-1)
        (out / f"{name}.bin").write_bytes(data.tobytes())
        (out / f"{name}.f32").write_bytes(values.tobytes())
        total += data.nbytes + values.nbytes
        print(f"{name}: {data.nbytes} bytes -> {values.size} values", file=sys.stderr)
    print(f"total {total} bytes in {out}", file=sys.stderr)


def write_model_hashes(model: Path, name: str, out: Path) -> Path:
    reader = GGUFReader(str(model))
    hashes: dict[str, str] = {}
    for t in reader.tensors:
        values = dequantize(t.data, t.tensor_type)
        values = np.ascontiguousarray(values, dtype="<f4")
        hashes[t.name] = hashlib.sha256(values.tobytes()).hexdigest()
        print(f"{t.name} {t.tensor_type.name} {tuple(values.shape)}", file=sys.stderr)
        del values
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.sha256.json"
    path.write_text(json.dumps(hashes, indent=1, sort_keys=True) + "\n")
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, help="a GGUF file: write per-tensor sha256 of its dequantized values")
    ap.add_argument("--name", help="fixture name for --model (default: file name without .gguf)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    args = ap.parse_args()
    if args.model:
        name = args.name or args.model.name.removesuffix(".gguf")
        print(write_model_hashes(args.model, name, args.out))
    else:
        write_random_fixtures(args.out)


if __name__ == "__main__":
    main()
