#!/usr/bin/env python3
"""A GGUF with the same layout as a real one and random weights, for speed runs on machines the real file
can't reach (the GPU machine takes 64 MiB per call; the models are 98 and 253 MB).

extract (here, needs the `gguf` package): writes DIR/header.bin (every byte before the tensor data: the
metadata, vocabulary included, and the tensor table) and DIR/tensors.json (each tensor's type, shape, offset
and size).
build (there, needs numpy only): writes the header, then each tensor's bytes: random quant codes with valid
f16 scales (so no NaN or inf reaches the kernels), F32 vectors of ones, F16 values from N(0, 0.02). Decode and
prefill speed depend on the layout and types, not on the values, so hearth and llama.cpp can be raced on it.

usage: synth_gguf.py extract MODEL.gguf DIR
       synth_gguf.py build DIR OUT.gguf [--seed 0]
"""
import json
import os
import sys

# Block size in bytes and byte offsets of f16 scale fields per block, by GGML type name.
BLOCKS = {
    "Q4_0": (18, [0]), "Q4_1": (20, [0, 2]), "Q5_0": (22, [0]), "Q5_1": (24, [0, 2]), "Q8_0": (34, [0]),
    "Q2_K": (84, [80, 82]), "Q3_K": (110, [108]), "Q4_K": (144, [0, 2]), "Q5_K": (176, [0, 2]),
    "Q6_K": (210, [208]),
}


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


def build(in_dir, out, seed):
    import numpy as np
    rng = np.random.default_rng(seed)
    meta = json.load(open(os.path.join(in_dir, "tensors.json")))
    with open(os.path.join(in_dir, "header.bin"), "rb") as f:
        header = f.read()
    assert len(header) == meta["data_start"]
    data = np.zeros(meta["data_bytes"], dtype=np.uint8)
    for t in meta["tensors"]:
        seg = data[t["offset"]:t["offset"] + t["nbytes"]]
        ty = t["type"]
        if ty == "F32":
            seg.view(np.float32)[:] = 1.0
        elif ty == "F16":
            seg.view(np.float16)[:] = rng.normal(0, 0.02, t["nbytes"] // 2).astype(np.float16)
        elif ty == "BF16":
            v = rng.normal(0, 0.02, t["nbytes"] // 2).astype(np.float32)
            seg.view(np.uint16)[:] = (v.view(np.uint32) >> 16).astype(np.uint16)
        elif ty in BLOCKS:
            size, scales = BLOCKS[ty]
            seg[:] = rng.integers(0, 256, t["nbytes"], dtype=np.uint8)
            blocks = seg.reshape(-1, size)
            for i, off in enumerate(scales):
                val = (rng.uniform(0.5, 1.5, len(blocks)) * (1e-3 if i == 0 else 1e-2)).astype(np.float16)
                blocks[:, off:off + 2] = val.view(np.uint8).reshape(-1, 2)
        else:
            sys.exit(f"{t['name']}: type {ty} not handled")
    with open(out + ".part", "wb") as f:
        f.write(header)
        f.write(data.tobytes())
    os.replace(out + ".part", out)
    print(f"wrote {out}: {os.path.getsize(out)} bytes (source was {meta['source_bytes']})")


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] == "extract":
        extract(sys.argv[2], sys.argv[3])
    elif len(sys.argv) >= 4 and sys.argv[1] == "build":
        seed = int(sys.argv[sys.argv.index("--seed") + 1]) if "--seed" in sys.argv else 0
        build(sys.argv[2], sys.argv[3], seed)
    else:
        sys.exit(__doc__)
