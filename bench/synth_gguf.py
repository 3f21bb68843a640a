#!/usr/bin/env python3
"""A GGUF with the same layout as a real one and random weights, for speed runs on machines the real file
can't reach (the GPU machine takes 64 MiB per call; the models are 98 and 253 MB).

extract (here, needs the `gguf` package): writes DIR/header.bin (every byte before the tensor data: the
metadata, vocabulary included, and the tensor table) and DIR/tensors.json (each tensor's type, shape, offset
and size).
build (there, needs numpy only): writes the header, then each tensor's bytes: random quant codes with valid
f16 scales chosen so the decoded weights have about N(0, 0.02)'s spread (no NaN or inf reaches the kernels, and
activations stay finite through many layers), F32 vectors of ones, F16/BF16 values of random sign and mantissa
with |x| in [2**-8, 2**-4). Decode and prefill speed depend on the layout and types, not on the values, so
hearth and llama.cpp can be raced on it. The tensors are made in 32 MiB chunks on every core and written in
place (about 1.5 GB/s on 2 cores); the bytes depend on the seed only.

usage: synth_gguf.py extract MODEL.gguf DIR
       synth_gguf.py build DIR OUT.gguf [--seed 0] [--threads N]
"""
import json
import os
import sys

def extract(model, out_dir):
    import gguf
    r = gguf.GGUFReader(model)
    start = min(t.data_offset for t in r.tensors)
    os.makedirs(out_dir, exist_ok=True)
    with open(model, "rb") as f:
        header = f.read(start)
    with open(os.path.join(out_dir, "header.bin"), "wb") as f:
        f.write(header)
    tensors = [{"name": t.name, "type": t.tensor_type.name, "shape": [int(d) for d in t.shape],
                "offset": int(t.data_offset - start), "nbytes": int(t.n_bytes)} for t in r.tensors]
    end = max(t["offset"] + t["nbytes"] for t in tensors)
    meta = {"source": os.path.basename(model), "source_bytes": os.path.getsize(model),
            "data_start": start, "data_bytes": os.path.getsize(model) - start, "tensors": tensors}
    assert end <= meta["data_bytes"]
    with open(os.path.join(out_dir, "tensors.json"), "w") as f:
        json.dump(meta, f)
    print(f"{model}: header {start} bytes, {len(tensors)} tensors, {meta['data_bytes']} data bytes")


# Chunks of about this many bytes are made and written by one worker each; a tensor's chunk boundaries depend on
# this and the block size only, so the bytes written depend on the seed alone, not on the number of threads.
CHUNK = 32 << 20


def f16_bits(lo_exp, r, wide=True):
    """f16 bit patterns from random uint16 `r` (in place): magnitudes in [2**lo_exp, 2**(lo_exp + 2)) (`wide`) or
    [2**lo_exp, 2**(lo_exp + 1)), positive, mantissa random. lo_exp >= -14 (no subnormals)."""
    r &= 0x07FF if wide else 0x03FF
    r += (lo_exp + 15) << 10
    return r


# Per GGML type: block bytes, and the f16 fields to rewrite as (offset, lo_exp, wide) for a field of its own or
# (offset, source offset, power of two, negative) for one tied to another (Q4_1's min = -8 d and the like), and
# byte ranges to mask (offset, length, and-mask). Chosen so that the decoded weights have a standard deviation of
# 0.02 to 0.05 (measured with gguf.quants.dequantize), near N(0, 0.02)'s, whatever the random codes: activations
# stay modest through many layers (the 8B Llama layouts of cuda/synth_llama8b.py give logits of spread 1-2).
#   Q8_0: d * q, q int8 (sd 74)                   Q4_0 / Q5_0: d * (q - 8) / d * (q - 16)
#   Q4_1 / Q5_1: d * q + m, m = -8 d / -16 d      Q2_K: d * sc * q - dmin * m (4-bit sc, m; 2-bit q)
#   Q3_K: d * (sc - 32) * q, q in -4..3           Q4_K / Q5_K: d * sc * q - dmin * m (6-bit sc, m), dmin = 8 d / 16 d
#   Q6_K: d * sc * (q - 32), int8 sc masked to 0..31
BLOCKS = {
    "Q4_0": (18, [(0, -9, True)], []),
    "Q4_1": (20, [(0, -9, True), (2, 0, 3, True)], []),
    "Q5_0": (22, [(0, -10, True)], []),
    "Q5_1": (24, [(0, -10, True), (2, 0, 4, True)], []),
    "Q8_0": (34, [(0, -13, True)], []),
    "Q2_K": (84, [(80, -11, True), (82, 80, 1, False)], []),
    "Q3_K": (110, [(108, -12, True)], []),
    "Q4_K": (144, [(0, -14, False), (2, 0, 3, False)], []),
    "Q5_K": (176, [(0, -14, False), (2, 0, 4, False)], []),
    "Q6_K": (210, [(208, -14, False)], [(192, 16, 0x1F)]),
}


def _u16_field(np, buf, size, off):
    """The uint16 at byte `off` of every `size`-byte block of `buf`, as a writable strided view."""
    return np.ndarray((len(buf) // size,), dtype="<u2", buffer=buf, offset=off, strides=(size,))


def _fill(np, ty, rng, n):
    """`n` bytes of tensor data of GGML type `ty`."""
    if ty == "F32":
        return np.ones(n // 4, dtype=np.float32).view(np.uint8)
    raw = rng.integers(0, 2**64 - 1, (n + 7) // 8, dtype=np.uint64, endpoint=True).view(np.uint8)[:n]
    if ty in ("F16", "BF16"):
        # Random sign and mantissa, exponent one of four: |x| in [2**-8, 2**-4), finite and about N(0, 0.03)'s
        # spread (a normal draw costs ten times as much).
        v = raw.view(np.uint16)
        if ty == "F16":
            v &= 0x8FFF      # sign, 2 exponent bits, 10 mantissa bits
            v += 7 << 10     # exponent 7..10 of bias 15
        else:
            v &= 0x81FF      # sign, 2 exponent bits, 7 mantissa bits
            v += 119 << 7    # exponent 119..122 of bias 127
        return raw
    if ty not in BLOCKS:
        raise ValueError(f"type {ty} not handled")
    size, fields, masks = BLOCKS[ty]
    for f in fields:
        v = _u16_field(np, raw, size, f[0])
        if len(f) == 3:
            f16_bits(f[1], v, f[2])
        else:
            _, src, power, negative = f
            v[:] = _u16_field(np, raw, size, src) + (power << 10)
            if negative:
                v |= 0x8000
    if masks:
        blocks = raw.reshape(-1, size)
        for off, length, mask in masks:
            blocks[:, off:off + length] &= mask
    return raw


def build(in_dir, out, seed, threads=None):
    """Writes header.bin, then every tensor's bytes, made and written (pwrite) in CHUNK-sized pieces by `threads`
    workers (numpy's generator and ufuncs release the GIL). Deterministic in `seed`."""
    import time
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np
    t0 = time.monotonic()
    meta = json.load(open(os.path.join(in_dir, "tensors.json")))
    with open(os.path.join(in_dir, "header.bin"), "rb") as f:
        header = f.read()
    start = meta["data_start"]
    assert len(header) == start
    jobs = []
    for i, t in enumerate(meta["tensors"]):
        ty = t["type"]
        unit = 4 if ty == "F32" else 2 if ty in ("F16", "BF16") else BLOCKS[ty][0] if ty in BLOCKS else None
        if unit is None:
            sys.exit(f"{t['name']}: type {ty} not handled")
        assert t["nbytes"] % unit == 0, t
        step = max(unit, CHUNK // unit * unit)
        for c, off in enumerate(range(0, t["nbytes"], step)):
            jobs.append((i, c, ty, start + t["offset"] + off, min(step, t["nbytes"] - off)))
    total = start + meta["data_bytes"]
    part = out + ".part"
    fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.ftruncate(fd, total)  # alignment padding stays zero (a hole)
        os.pwrite(fd, header, 0)

        def work(job):
            i, c, ty, pos, n = job
            rng = np.random.default_rng([seed, i, c])
            view = memoryview(_fill(np, ty, rng, n))
            while view:
                k = os.pwrite(fd, view, pos)
                view, pos = view[k:], pos + k
            return n

        with ThreadPoolExecutor(threads or os.cpu_count() or 1) as ex:
            written = sum(ex.map(work, jobs))
    finally:
        os.close(fd)
    os.replace(part, out)
    dt = time.monotonic() - t0
    print(f"wrote {out}: {os.path.getsize(out)} bytes (source was {meta['source_bytes']}); {written / 1e6:.0f} MB of "
          f"tensors in {dt:.1f} s, {written / 1e6 / dt:.0f} MB/s")


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] == "extract":
        extract(sys.argv[2], sys.argv[3])
    elif len(sys.argv) >= 4 and sys.argv[1] == "build":
        seed = int(sys.argv[sys.argv.index("--seed") + 1]) if "--seed" in sys.argv else 0
        threads = int(sys.argv[sys.argv.index("--threads") + 1]) if "--threads" in sys.argv else None
        build(sys.argv[2], sys.argv[3], seed, threads)
    else:
        sys.exit(__doc__)
