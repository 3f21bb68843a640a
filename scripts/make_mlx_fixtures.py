#!/usr/bin/env python3
"""Writes the MLX quantization fixtures that crates/hearth-engine/tests/mlx_quant.rs checks hearth against.

Run with a Python that has `mlx` (on Linux: `pip install "mlx[cpu]"`):

    python scripts/make_mlx_fixtures.py [out_dir]   # default: tests/fixtures/mlx

One safetensors file per (mode, bits, group size, source dtype) holds:
  input    f32 [rows, cols]  the weights (values exact in the source dtype)
  packed   u32               mx.quantize's packed weights
  scales   source dtype (affine) or u8 (mxfp4 / nvfp4 / mxfp8)
  biases   source dtype (affine only)
  dequant  f32               mx.dequantize of the above (affine: computed in the scales' dtype, then widened;
                             fp modes: dtype=float32 requested)
and metadata: mode, bits, group_size, dtype, mlx_version.
"""

import os
import sys

import mlx.core as mx
import numpy as np

DTYPES = {"f32": mx.float32, "f16": mx.float16, "bf16": mx.bfloat16}


def special_rows(cols, group, rng):
    """Rows that hit the edge cases: outliers, all-equal groups, zeros, tiny and large magnitudes."""
    rows = []
    r = rng.standard_normal(cols).astype(np.float32)
    for g in range(cols // group):
        s = slice(g * group, (g + 1) * group)
        kind = g % 8
        if kind == 0:
            r[s] = 0.0
        elif kind == 1:
            r[s] = 0.75  # all-equal positive
        elif kind == 2:
            r[s] = -1.5  # all-equal negative
        elif kind == 3:
            r[s][group // 3] = 40.0  # one outlier
        elif kind == 4:
            r[s] = rng.standard_normal(group) * 1e-6  # tiny, near the eps clamp
        elif kind == 5:
            r[s] = rng.standard_normal(group) * 300.0  # large
        elif kind == 6:
            r[s] = np.abs(r[s])  # all positive
        else:
            r[s] = -np.abs(r[s]) - 0.5  # all negative, away from zero
    rows.append(r)
    # Values that sit on the FP4 / rounding boundaries after scaling.
    b = np.tile(np.array([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, 6.0, -0.25, -0.75, -2.5, -5.0, 0.0, -0.0,
                          1.0, -6.0], dtype=np.float32), cols // 16 + 1)[:cols]
    rows.append(b)
    rows.append(rng.uniform(-1.0, 1.0, cols).astype(np.float32) * 3.0)
    return rows


def make_input(rows, cols, group, dtype, rng):
    x = [rng.standard_normal(cols).astype(np.float32) for _ in range(rows)]
    x += special_rows(cols, group, rng)
    w = mx.array(np.stack(x)).astype(DTYPES[dtype])
    return w


def write_case(out_dir, mode, bits, group, dtype, rows, cols, seed):
    rng = np.random.default_rng(seed)
    w = make_input(rows, cols, group, dtype, rng)
    tensors = {"input": w.astype(mx.float32)}
    if mode == "affine":
        packed, scales, biases = mx.quantize(w, group_size=group, bits=bits, mode=mode)
        deq = mx.dequantize(packed, scales, biases, group_size=group, bits=bits, mode=mode)
        tensors.update(packed=packed, scales=scales, biases=biases, dequant=deq.astype(mx.float32))
    else:
        packed, scales = mx.quantize(w, group_size=group, bits=bits, mode=mode)
        deq = mx.dequantize(packed, scales, group_size=group, bits=bits, mode=mode, dtype=mx.float32)
        tensors.update(packed=packed, scales=scales, dequant=deq)
    mx.eval(tensors)
    name = f"{mode}_b{bits}_g{group}_{dtype}.safetensors"
    meta = {"mode": mode, "bits": str(bits), "group_size": str(group), "dtype": dtype,
            "mlx_version": mx.__version__}
    mx.save_safetensors(os.path.join(out_dir, name), tensors, metadata=meta)
    return name


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join("tests", "fixtures", "mlx")
    os.makedirs(out_dir, exist_ok=True)
    names = []
    seed = 1
    for dtype in DTYPES:
        for bits in (1, 2, 3, 4, 5, 6, 8):
            for group in (32, 64, 128):
                # 2 random rows + 3 special rows = 5 (odd); 256 columns = 2..8 groups per row.
                names.append(write_case(out_dir, "affine", bits, group, dtype, 2, 256, seed))
                seed += 1
        for mode, bits, group in (("mxfp4", 4, 32), ("mxfp8", 8, 32), ("nvfp4", 4, 16)):
            names.append(write_case(out_dir, mode, bits, group, dtype, 2, 256, seed))
            seed += 1
    print(f"mlx {mx.__version__}: wrote {len(names)} fixtures to {out_dir}")


if __name__ == "__main__":
    main()
