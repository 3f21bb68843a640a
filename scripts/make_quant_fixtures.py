#!/usr/bin/env python3
"""Makes the fixtures that pin hearth's dequantization to the `gguf` package, bit for bit.

Two modes:

  make_quant_fixtures.py [--out DIR]
      Random blocks for every weight type hearth runs. For each TYPE it writes DIR/TYPE.bin (the raw blocks)
      and DIR/TYPE.f32 (gguf.quants.dequantize of them, little-endian f32). The f16 scale fields of the block
      types are random finite values in [-2, 2]; every other byte is random (plain F16/BF16/F32 data is random
      bits, NaN and Inf included). Deterministic (fixed seed). DIR defaults to tests/fixtures/quants.

  make_quant_fixtures.py --quantize [--out DIR]
      Inputs for the quantizers the `gguf` package implements (F16, BF16, Q8_0, Q5_0, Q4_0, Q4_1): writes
      DIR/quantize/input.f32 (little-endian f32: random normal blocks of several scales plus edge blocks, see
      quantize_inputs) and DIR/quantize/TYPE.bin (gguf.quants.quantize of them, as one row). The Rust side,
      crates/hearth-engine/tests/quantize.rs, asserts hearth's quantizers write the same bytes.

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
import gguf
import gguf.quants
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


# The types gguf.quants.quantize implements (0.19) among those hearth writes.
QUANTIZE_TYPES = {"F16": T.F16, "BF16": T.BF16, "Q8_0": T.Q8_0, "Q5_0": T.Q5_0, "Q4_0": T.Q4_0, "Q4_1": T.Q4_1}


def quantize_inputs(rng: np.random.Generator) -> np.ndarray:
    """Blocks of 32 values (f32) that exercise every branch of the quantizers."""
    blocks = [rng.standard_normal((64, 32)) * s for s in (0.02, 1.0, 30.0)]
    edge = np.zeros((12, 32))
    edge[1, :] = 0.5                                   # all equal (zero range for Q4_1)
    edge[2, :] = rng.standard_normal(32); edge[2, 5] = -4.0; edge[2, 9] = 4.0   # +-max tie: first wins
    edge[3, :] = np.linspace(-1, 1, 32)               # exact grid points and halves
    edge[4, :] = np.arange(32) - 16.0                 # integers: Q8_0 ties at .5 after scaling
    edge[5, :] = rng.standard_normal(32) * 1e-6       # tiny: f16 subnormal scales
    edge[6, :] = rng.standard_normal(32) * 1e-30      # f16 scale flushes to zero
    edge[7, :] = rng.standard_normal(32) * 1e6        # f16 scale overflows to inf
    edge[8, :] = np.abs(rng.standard_normal(32))      # all positive
    edge[9, :] = -np.abs(rng.standard_normal(32))     # all negative
    edge[10, :] = rng.standard_normal(32); edge[10, 0] = 0.0; edge[10, 31] = -0.0
    # bf16 rounding: values exactly halfway between two bf16 numbers, both parities
    halves = np.array([0x3F808000, 0x3F818000, 0xBF808000, 0x3F80FFFF, 0x3F807FFF] * 7, dtype=np.uint32)[:32]
    edge[11, :] = halves.view(np.float32)
    return np.concatenate(blocks + [edge]).astype(np.float32).reshape(-1)


def write_quantize_fixtures(out: Path) -> None:
    qdir = out / "quantize"
    qdir.mkdir(parents=True, exist_ok=True)
    x = quantize_inputs(np.random.default_rng(20261127))
    (qdir / "input.f32").write_bytes(np.ascontiguousarray(x, dtype="<f4").tobytes())
    for name, qtype in QUANTIZE_TYPES.items():
        with np.errstate(all="ignore"):
            data = gguf.quants.quantize(x.reshape(1, -1), qtype)
        (qdir / f"{name}.bin").write_bytes(np.ascontiguousarray(data).view(np.uint8).tobytes())
        print(f"{name}: {x.size} values -> {data.nbytes} bytes", file=sys.stderr)


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
    ap.add_argument("--quantize", action="store_true", help="write the quantizer fixtures (DIR/quantize/)")
    ap.add_argument("--model", type=Path, help="a GGUF file: write per-tensor sha256 of its dequantized values")
    ap.add_argument("--name", help="fixture name for --model (default: file name without .gguf)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    args = ap.parse_args()
    if args.quantize:
        write_quantize_fixtures(args.out)
    elif args.model:
        name = args.name or args.model.name.removesuffix(".gguf")
        print(write_model_hashes(args.model, name, args.out))
    else:
        write_random_fixtures(args.out)


if __name__ == "__main__":
    main()
