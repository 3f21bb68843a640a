#!/usr/bin/env python3
"""Run HERE (needs the `gguf` package): the Llama-3-8B-shaped GGUF layouts the CUDA benchmark compares, as
bench/synth_gguf.py folders (header.bin + tensors.json, about 2 MB each: the vocabulary is in the header), so
that the GPU machine makes the 15 / 8 / 4.6 GB files with random weights in seconds
(`synth_gguf.py build DIR OUT.gguf`) instead of converting a bf16 model with convert_hf_to_gguf.py and
quantizing it with llama-quantize.

Layouts (DIR/<layout>/ for each of bf16, q8_0, q4_k_m):
  bf16    every matrix BF16 (convert_hf_to_gguf.py --outtype bf16)
  q8_0    every matrix Q8_0, token_embd and output included (llama-quantize Q8_0)
  q4_k_m  llama-quantize's Q4_K_M mixture (tensor_type below)
1-D tensors (the norms) are F32 in all three. The model: architecture `llama`, hidden 4096, 32 layers, 32 heads,
8 KV heads (head_dim 128), FFN 14336, rope theta 500000, RMS eps 1e-5, context 8192, untied output, SmolLM2's
vocabulary of 49152 (the only tokenizer that travels to the machine): every `tokenizer.*` key of SmolLM2's GGUF
(tokens, types, merges, pre-tokenizer, bos/eos/unk/pad ids, add_bos, chat template) is copied, so hearth,
llama-bench and llama-batched-bench accept the files. The metadata keys are those convert_hf_to_gguf.py and
llama-quantize write for a Llama (general.file_type 32 / 7 / 15, general.quantization_version 2).

Tensor order is llama-quantize's output order (its loader's weight map: tensors outside the blocks first, then
block by block, names sorted within each): output.weight, output_norm.weight, token_embd.weight,
blk.0.{attn_k,attn_norm,attn_output,attn_q,attn_v,ffn_down,ffn_gate,ffn_norm,ffn_up}.weight, blk.1..., for the
bf16 layout too (convert_hf_to_gguf.py would follow the safetensors shards' order; the order of tensors in a
file changes neither loading nor kernels).

The header is written by gguf.GGUFWriter (KV data, tensor infos, and the padding to the data section's
alignment, as a full write does) from tensor infos without data; tensors.json takes each tensor's offset from
the same rule the writer uses for its infos (every tensor padded to the alignment), and the script checks it by
reading the header back with gguf.GGUFReader on a sparse file of the full size.

usage: synth_llama8b.py [--out DIR] [--layouts bf16,q8_0,q4_k_m] [--smollm2 GGUF] [--layers N] [--check]
env:   HEARTH_BENCH_TINY=1  hidden 256, 2 layers, 4 heads (2 KV), FFN 512, same vocab (as make_llama8b.py's
                            tiny model); default --out device/llama-tiny-layouts instead of device/llama8b-layouts
"""
import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

import gguf
from gguf import GGMLQuantizationType as T
from gguf.constants import GGML_QUANT_SIZES

REPO = Path(__file__).resolve().parents[2]
SHAPES = {
    "8b": dict(hidden=4096, layers=32, heads=32, kv_heads=8, ffn=14336),
    "tiny": dict(hidden=256, layers=2, heads=4, kv_heads=2, ffn=512),
}
CONTEXT = 8192
ROPE_THETA = 500000.0
RMS_EPS = 1e-5
LAYOUTS = ("bf16", "q8_0", "q4_k_m")
# llama_ftype values (general.file_type) as llama.cpp's tools write them.
FILE_TYPE = {"bf16": 32, "q8_0": 7, "q4_k_m": 15}
BLOCK_TENSORS = ("attn_k", "attn_norm", "attn_output", "attn_q", "attn_v", "ffn_down", "ffn_gate", "ffn_norm",
                 "ffn_up")


def use_more_bits(layer, n_layers):
    """llama.cpp's choice of the layers whose attn_v and ffn_down a Q4_K_M file keeps at Q6_K: the first and last
    eighth of the layers, and every third layer in between. Source: the `use_more_bits` lambda inside
    llama_tensor_get_type_impl in src/llama-quant.cpp (llama-cpp-python 0.3.36's llama.cpp); hearth's
    convert::to_gguf::use_more_bits is the same rule. For 32 layers: 0-3, 6, 9, ..., 27, 28-31 (16 layers)."""
    return layer < n_layers // 8 or layer >= 7 * n_layers // 8 or (layer - n_layers // 8) % 3 == 2


def tensor_type(layout, name, n_dims, n_layers):
    """The GGML type of tensor `name` in `layout`.

    Q4_K_M, as llama_tensor_get_type_impl (src/llama-quant.cpp) decides for a dense Llama with an untied output
    (the rule hearth's convert::to_gguf::tensor_type reproduces): the default type of the Q4_K_M ftype is Q4_K;
    the output matrix gets Q6_K (the branch for the output tensor: rows a whole number of 256-blocks, not Falcon,
    not an IQ type, default not Q8_0); attn_v gets Q6_K when use_more_bits(i_attention_wv, n_attention_wv), its
    running count of attn_v tensors, which is the layer index because the loader's weight map sorts block by
    block; ffn_down gets Q6_K when use_more_bits(layer, n_layer); token_embd, attn_q/k/output, ffn_gate/up keep
    Q4_K. 1-D tensors are never quantized (F32). Every row here is a whole number of 256-weight blocks, so the
    shape fallbacks (tensor_type_fallback) never apply.
    Q8_0: the same function leaves every matrix at the ftype's default Q8_0 (for the output tensor the Q6_K bump
    is skipped when the default is Q8_0), token_embd included."""
    if n_dims < 2:
        return T.F32
    if layout == "bf16":
        return T.BF16
    if layout == "q8_0":
        return T.Q8_0
    assert layout == "q4_k_m", layout
    if name == "output.weight":
        return T.Q6_K
    if name.startswith("blk.") and name.endswith((".attn_v.weight", ".ffn_down.weight")):
        if use_more_bits(int(name.split(".")[1]), n_layers):
            return T.Q6_K
    return T.Q4_K


def tensors(shape, vocab):
    """(name, numpy-order shape) in llama-quantize's output order."""
    h, f = shape["hidden"], shape["ffn"]
    kv = shape["kv_heads"] * (h // shape["heads"])
    out = [("output.weight", (vocab, h)), ("output_norm.weight", (h,)), ("token_embd.weight", (vocab, h))]
    shapes = {"attn_k": (kv, h), "attn_norm": (h,), "attn_output": (h, h), "attn_q": (h, h), "attn_v": (kv, h),
              "ffn_down": (h, f), "ffn_gate": (f, h), "ffn_norm": (h,), "ffn_up": (f, h)}
    for layer in range(shape["layers"]):
        out += [(f"blk.{layer}.{t}.weight", shapes[t]) for t in BLOCK_TENSORS]
    return out


def nbytes(ty, shape):
    block, size = GGML_QUANT_SIZES[ty]
    assert shape[-1] % block == 0, (ty, shape)
    return int(np.prod(shape)) // block * size


def copy_field(w, field):
    """Adds a GGUFReader field to the writer with its own value type."""
    vtype = gguf.GGUFValueType(field.types[0])
    sub = gguf.GGUFValueType(field.types[-1]) if vtype == gguf.GGUFValueType.ARRAY else None
    w.add_key_value(field.name, field.contents(), vtype, sub_type=sub)


def make_layout(layout, shape, src, out_dir, name):
    vocab = int(src.fields["llama.vocab_size"].contents()) if "llama.vocab_size" in src.fields else \
        len(src.fields["tokenizer.ggml.tokens"].data)
    w = gguf.GGUFWriter(None, "llama")
    # Keys in the order convert_hf_to_gguf.py writes them for a Llama. llama-quantize copies them and then sets
    # general.quantization_version and general.file_type, which ggml's gguf_set_* move to the end.
    w.add_type("model")
    w.add_name(name)
    w.add_block_count(shape["layers"])
    w.add_context_length(CONTEXT)
    w.add_embedding_length(shape["hidden"])
    w.add_feed_forward_length(shape["ffn"])
    w.add_head_count(shape["heads"])
    w.add_head_count_kv(shape["kv_heads"])
    w.add_rope_freq_base(ROPE_THETA)
    w.add_layer_norm_rms_eps(RMS_EPS)
    if layout == "bf16":
        w.add_file_type(FILE_TYPE[layout])
    w.add_vocab_size(vocab)
    w.add_rope_dimension_count(shape["hidden"] // shape["heads"])
    for key, field in src.fields.items():
        if key.startswith("tokenizer."):
            copy_field(w, field)
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    if layout != "bf16":
        w.add_file_type(FILE_TYPE[layout])

    infos = []
    for tname, tshape in tensors(shape, vocab):
        ty = tensor_type(layout, tname, len(tshape), shape["layers"])
        n = nbytes(ty, tshape)
        # raw_dtype with a non-uint8 dtype: the shape is taken as the element shape (numpy order).
        w.add_tensor_info(tname, tshape, np.dtype(np.float32), n, raw_dtype=ty)
        infos.append((tname, ty, tshape, n))

    os.makedirs(out_dir, exist_ok=True)
    header_path = Path(out_dir) / "header.bin"
    w.open_output_file(header_path)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    fout = w.fout[0]
    # What write_tensors_to_file does before the first tensor: pad to the data alignment.
    w.write_padding(fout, fout.tell())
    data_start = fout.tell()
    w.close()
    assert data_start % w.data_alignment == 0

    entries, offset = [], 0
    for tname, ty, tshape, n in infos:
        # Offsets as write_ti_data_to_file computes them: every tensor padded to the alignment.
        entries.append({"name": tname, "type": ty.name, "shape": [int(d) for d in reversed(tshape)],
                        "offset": offset, "nbytes": n})
        offset += gguf.GGUFWriter.ggml_pad(n, w.data_alignment)
    meta = {"source": f"synth_llama8b.py {layout} ({name})", "source_bytes": data_start + offset,
            "data_start": data_start, "data_bytes": offset, "tensors": entries}
    with open(Path(out_dir) / "tensors.json", "w") as f:
        json.dump(meta, f)
    return meta


def check_layout(layout, out_dir, src, shape, path=None):
    """Reads the layout back with GGUFReader: from `path` (a built file) or from a sparse file of the full size
    (header.bin, then a hole). Checks every tensor's name, type, shape, offset and size against tensors.json and
    the rule, the model keys, and that the tokenizer keys equal SmolLM2's byte for byte."""
    meta = json.load(open(Path(out_dir) / "tensors.json"))
    tmp = None
    if path is None:
        tmp = tempfile.NamedTemporaryFile(suffix=".gguf", delete=False)
        tmp.write(open(Path(out_dir) / "header.bin", "rb").read())
        tmp.truncate(meta["source_bytes"])
        tmp.close()
        path = tmp.name
    try:
        assert os.path.getsize(path) == meta["source_bytes"], (os.path.getsize(path), meta["source_bytes"])
        r = gguf.GGUFReader(path)
        assert r.alignment == 32 and r.data_offset == meta["data_start"], (r.alignment, r.data_offset)
        assert len(r.tensors) == len(meta["tensors"])
        for t, e in zip(r.tensors, meta["tensors"]):
            assert t.name == e["name"], (t.name, e["name"])
            assert t.tensor_type.name == e["type"], (t.name, t.tensor_type.name, e["type"])
            assert [int(d) for d in t.shape] == e["shape"], (t.name, t.shape, e["shape"])
            assert t.data_offset == meta["data_start"] + e["offset"], (t.name, t.data_offset, e["offset"])
            assert t.n_bytes == e["nbytes"], (t.name, t.n_bytes, e["nbytes"])
            want = tensor_type(layout, t.name, len(e["shape"]), shape["layers"])
            assert t.tensor_type == want, (t.name, t.tensor_type, want)
        last = meta["tensors"][-1]
        assert meta["data_bytes"] == gguf.GGUFWriter.ggml_pad(last["offset"] + last["nbytes"], 32)
        f = r.fields
        val = lambda k: f[k].contents()  # noqa: E731
        assert val("general.architecture") == "llama"
        assert val("llama.block_count") == shape["layers"] and val("llama.embedding_length") == shape["hidden"]
        assert val("llama.feed_forward_length") == shape["ffn"] and val("llama.attention.head_count") == shape["heads"]
        assert val("llama.attention.head_count_kv") == shape["kv_heads"]
        assert val("llama.rope.dimension_count") == shape["hidden"] // shape["heads"]
        assert val("llama.context_length") == CONTEXT and val("llama.rope.freq_base") == ROPE_THETA
        assert abs(val("llama.attention.layer_norm_rms_epsilon") - RMS_EPS) < 1e-9
        assert val("general.file_type") == FILE_TYPE[layout]
        tok = [k for k in src.fields if k.startswith("tokenizer.")]
        assert tok == [k for k in f if k.startswith("tokenizer.")], "tokenizer keys differ"
        for k in tok:
            a = b"".join(p.tobytes() for p in src.fields[k].parts)
            b = b"".join(p.tobytes() for p in f[k].parts)
            assert a == b, f"{k} differs from SmolLM2's"
        counts = {}
        for e in meta["tensors"]:
            counts[e["type"]] = counts.get(e["type"], 0) + 1
        return counts
    finally:
        if tmp is not None:
            os.unlink(tmp.name)


def main():
    tiny = os.environ.get("HEARTH_BENCH_TINY", "") not in ("", "0")
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(REPO / "device" / ("llama-tiny-layouts" if tiny else "llama8b-layouts")))
    ap.add_argument("--layouts", default=",".join(LAYOUTS))
    ap.add_argument("--smollm2", default=None,
                    help="SmolLM2's GGUF, for its tokenizer (default models/SmolLM2-135M-Instruct.Q4_1.gguf here "
                         "or in /work/main)")
    ap.add_argument("--layers", type=int, help="override the number of layers (e.g. a short 8B-wide model)")
    ap.add_argument("--check", action="store_true", help="also build each GGUF (synth_gguf.py build) into a "
                    "temporary folder and read it back; for the tiny model, or with --layers")
    args = ap.parse_args()

    smollm2 = args.smollm2
    if smollm2 is None:
        for cand in (REPO / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf",
                     Path("/work/main/models/SmolLM2-135M-Instruct.Q4_1.gguf")):
            if cand.exists():
                smollm2 = str(cand)
                break
        else:
            sys.exit("no SmolLM2 GGUF found: pass --smollm2")
    src = gguf.GGUFReader(smollm2)
    shape = dict(SHAPES["tiny" if tiny else "8b"])
    if args.layers:
        shape["layers"] = args.layers
    name = "llama-tiny-synth" if tiny else "llama8b-synth"
    for layout in [x for x in args.layouts.split(",") if x]:
        if layout not in LAYOUTS:
            sys.exit(f"unknown layout {layout} (one of {', '.join(LAYOUTS)})")
        out_dir = os.path.join(args.out, layout)
        meta = make_layout(layout, shape, src, out_dir, name)
        counts = check_layout(layout, out_dir, src, shape)
        n_params = sum(int(np.prod(e["shape"])) for e in meta["tensors"])
        print(f"{layout:7s} {out_dir}: {len(meta['tensors'])} tensors {counts}, {n_params / 1e9:.3f} B weights, "
              f"tensor bytes {meta['data_bytes']} ({meta['data_bytes'] / 2**30:.2f} GiB), file "
              f"{meta['source_bytes']} bytes ({meta['source_bytes'] / 1e9:.2f} GB), header {meta['data_start']}")
        if args.check:
            sys.path.insert(0, str(REPO / "bench"))
            import synth_gguf
            with tempfile.TemporaryDirectory() as td:
                built = os.path.join(td, f"{layout}.gguf")
                synth_gguf.build(out_dir, built, 0)
                check_layout(layout, out_dir, src, shape, built)
                print("        built and read back: ok")


if __name__ == "__main__":
    main()
