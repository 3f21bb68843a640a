#!/usr/bin/env python3
"""Checks that hearth's q4_k GGUF equals llama.cpp's Q4_K_M of the same weights, tensor for tensor.

    HEARTH_KEEP_CONVERTED=1 HEARTH_MODELS_DIR=models cargo test -p hearth-engine --release \
        --test convert_gguf_real -- --nocapture            # prints "kept DIR" (DIR/f32.gguf, DIR/q4_k.gguf)
    PYTHONPATH=<site-packages with llama_cpp and gguf> python scripts/compare_q4_k_m.py DIR [DIR ...]

For each DIR: llama-cpp-python's `llama_model_quantize` (llama-quantize's library, no importance matrix)
quantizes DIR/f32.gguf to Q4_K_M (DIR/llama-q4_k_m.gguf), then every tensor's type and bytes are compared
with DIR/q4_k.gguf. Exits non-zero on any difference. Measured on SmolLM2-135M and Gemma 3 270M: identical.
"""

from __future__ import annotations

import ctypes
import sys
from collections import Counter

import llama_cpp
import numpy as np
from gguf import GGUFReader

LLAMA_FTYPE_MOSTLY_Q4_K_M = 15


def main() -> int:
    bad = 0
    for d in sys.argv[1:]:
        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype = LLAMA_FTYPE_MOSTLY_Q4_K_M
        params.nthread = 2
        ref = f"{d}/llama-q4_k_m.gguf"
        if llama_cpp.llama_model_quantize(f"{d}/f32.gguf".encode(), ref.encode(), ctypes.byref(params)) != 0:
            print(f"{d}: llama_model_quantize failed")
            return 1
        ours = {t.name: t for t in GGUFReader(f"{d}/q4_k.gguf").tensors}
        theirs = {t.name: t for t in GGUFReader(ref).tensors}
        if set(ours) != set(theirs):
            print(f"{d}: tensor sets differ: {sorted(set(ours) ^ set(theirs))}")
            bad += 1
            continue
        types: Counter = Counter()
        diffs = []
        for name, t in ours.items():
            u = theirs[name]
            same = t.tensor_type == u.tensor_type and np.array_equal(
                np.asarray(t.data).view(np.uint8), np.asarray(u.data).view(np.uint8))
            types[t.tensor_type.name] += 1
            if not same:
                diffs.append((name, t.tensor_type.name, u.tensor_type.name))
        print(f"{d}: {dict(types)}; {len(diffs)} tensors differ {diffs[:5]}")
        bad += len(diffs)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
