#!/usr/bin/env python3
"""Makes the fixtures that bound hearth's K-quant quantizers against llama.cpp's own.

The `gguf` package cannot quantize to Q4_K or Q6_K, so the reference is llama.cpp itself, through
llama-cpp-python's `llama_model_quantize` (the library behind `llama-quantize`, no importance matrix). It
quantizes the committed tiny F16 model tests/fixtures/tiny/llama256/model-f16.gguf (256-wide rows, so every
matrix takes K-quants) into

    tests/fixtures/quants/llama_cpp/llama256-q4_k_m.gguf   (llama.cpp's Q4_K_M mixture: Q4_K, Q6_K, ...)
    tests/fixtures/quants/llama_cpp/llama256-q6_k.gguf     (Q6_K)

crates/hearth-engine/tests/quantize.rs quantizes the same F16 weights with hearth and checks, tensor by
tensor, that its round-trip error is within a stated factor of llama.cpp's (and reports how many blocks are
byte-identical).

    /work/venvs/llama/bin/python scripts/make_kquant_fixtures.py     # needs llama-cpp-python (0.3.36)
"""

from __future__ import annotations

import ctypes
import sys
from pathlib import Path

import llama_cpp

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "tests" / "fixtures" / "tiny" / "llama256" / "model-f16.gguf"
OUT = ROOT / "tests" / "fixtures" / "quants" / "llama_cpp"

# llama_ftype values (llama.h): MOSTLY_Q4_K_M = 15, MOSTLY_Q6_K = 18
FTYPES = {"q4_k_m": 15, "q6_k": 18}


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for name, ftype in FTYPES.items():
        dst = OUT / f"llama256-{name}.gguf"
        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype = ftype
        params.nthread = 2
        rc = llama_cpp.llama_model_quantize(str(SRC).encode(), str(dst).encode(), ctypes.byref(params))
        if rc != 0:
            sys.exit(f"llama_model_quantize({name}) failed: {rc}")
        print(f"{dst} ({dst.stat().st_size} bytes, llama-cpp-python {llama_cpp.__version__})", file=sys.stderr)


if __name__ == "__main__":
    main()
