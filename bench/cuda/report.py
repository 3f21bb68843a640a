#!/usr/bin/env python3
"""The CUDA benchmark's bookkeeping, standard library only (it also runs here, on results copied back):

  report.py weights MODEL [--json OUT]   weight bytes read per decoded token, from a GGUF header or a Hugging
                                         Face folder's safetensors headers (no tensor data is read)
  report.py eos MODEL                    end-of-sequence token ids, comma-separated (for serve_agg.py's ban)
  report.py table RESULTS_DIR            the Markdown table of everything run_all.sh left in RESULTS_DIR (also
                                         written to RESULTS_DIR/summary.md and summary.json)

Bytes per decoded token follow hearth's own count (Model::bytes_per_token): every weight tensor once, except
an untied token embedding, of which a token reads one row. The decode roofline is copy bandwidth (bytes read +
written per second, copy_bw.py) / those bytes.

Files in RESULTS_DIR, per model NAME (a GGUF's file name without .gguf, a folder's name):
  NAME.weights.json          this script's `weights` output
  NAME.hearth.txt            `hearth bench` stdout        NAME.serve.json   serve_agg.py (hearth, batched)
  NAME.llama-bench.json      llama-bench -p P -n G        NAME.llama-bench-depth.json  -p 0 -n G -d P
  NAME.batched.jsonl         llama-batched-bench          NAME.hf.json      hf_bench.py
  bw.json                    copy_bw.py
"""
import glob
import json
import os
import re
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from compare_llama_cpp import _read_value  # noqa: E402  (bench/compare_llama_cpp.py: GGUF value reader)


# ---------------------------------------------------------------------------------------------------------------
# Weight bytes

def gguf_tensors(path):
    """(metadata without the tokenizer arrays, [(name, dims, byte size)]) from a GGUF file's header.

    Sizes come from the gaps between consecutive tensor offsets (and the file's end for the last one), so no
    table of quantization block sizes is needed; each includes at most `alignment - 1` bytes of padding."""
    meta, infos = {}, []
    with open(path, "rb") as f:
        magic, version, n_tensors, n_kv = struct.unpack("<4sIQQ", f.read(24))
        if magic != b"GGUF" or version < 2:
            raise ValueError(f"{path}: not a GGUF v2+ file")
        for _ in range(n_kv):
            (klen,) = struct.unpack("<Q", f.read(8))
            key = f.read(klen).decode("utf-8", "replace")
            (vtype,) = struct.unpack("<I", f.read(4))
            keep = not key.startswith("tokenizer.ggml.") or key.endswith("_token_id")
            value = _read_value(f, vtype, keep)
            if keep:
                meta[key] = value
        for _ in range(n_tensors):
            (nlen,) = struct.unpack("<Q", f.read(8))
            name = f.read(nlen).decode("utf-8", "replace")
            (n_dims,) = struct.unpack("<I", f.read(4))
            dims = struct.unpack(f"<{n_dims}Q", f.read(8 * n_dims))
            _ggml_type, offset = struct.unpack("<IQ", f.read(12))
            infos.append((offset, name, dims))
        align = meta.get("general.alignment", 32)
        data_start = (f.tell() + align - 1) // align * align
    data_bytes = os.path.getsize(path) - data_start
    infos.sort()
    tensors = []
    for i, (offset, name, dims) in enumerate(infos):
        end = infos[i + 1][0] if i + 1 < len(infos) else data_bytes
        tensors.append((name, dims, end - offset))
    return meta, tensors


def safetensors_tensors(folder):
    """[(name, shape, byte size)] over every *.safetensors file of a Hugging Face folder (headers only)."""
    tensors = []
    for path in sorted(glob.glob(os.path.join(folder, "*.safetensors"))):
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(n))
        for name, t in header.items():
            if name != "__metadata__":
                a, b = t["data_offsets"]
                tensors.append((name, t["shape"], b - a))
    return tensors


def weights(path):
    if os.path.isdir(path):
        tensors = safetensors_tensors(path)
        embd, out = "model.embed_tokens.weight", "lm_head.weight"
        rows = lambda shape: shape[0]  # noqa: E731  (HF shapes are [rows, cols])
        kind = "safetensors"
    else:
        _, tensors = gguf_tensors(path)
        embd, out = "token_embd.weight", "output.weight"
        rows = lambda dims: max(1, _prod(dims[1:]))  # noqa: E731  (GGUF dims run from the row length up)
        kind = "gguf"
    names = {t[0] for t in tensors}
    total = sum(t[2] for t in tensors)
    per_token = 0
    for name, shape, size in tensors:
        if name == embd and out in names:
            per_token += size // rows(shape)  # untied: one row is looked up per token
        else:
            per_token += size
    return {"path": os.path.abspath(path), "format": kind, "tensors": len(tensors), "total_bytes": total,
            "bytes_per_token": per_token}


def _prod(xs):
    p = 1
    for x in xs:
        p *= x
    return p


def eos_ids(path):
    ids = []
    if os.path.isdir(path):
        for f in ("generation_config.json", "config.json"):
            p = os.path.join(path, f)
            if os.path.exists(p):
                v = json.load(open(p)).get("eos_token_id")
                ids += v if isinstance(v, list) else [v] if v is not None else []
    else:
        meta, _ = gguf_tensors(path)
        ids += [meta[k] for k in ("tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id") if k in meta]
    return sorted(set(int(i) for i in ids))


# ---------------------------------------------------------------------------------------------------------------
# Results

def _load_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _jsonl(path):
    rows = []
    try:
        with open(path) as f:
            for line in f:
                line = line.strip()
                if line.startswith("{"):
                    try:
                        rows.append(json.loads(line))
                    except ValueError:
                        pass
    except OSError:
        pass
    return rows


def hearth_numbers(path):
    try:
        text = open(path).read()
    except OSError:
        return {}
    out = {}
    for key, pat in (("prefill", r"^prefill: ([0-9.]+) tokens/s"), ("decode", r"^decode: ([0-9.]+) tokens/s"),
                     ("bytes_per_token_mb", r"^weight bytes per decoded token: ([0-9.]+) MB")):
        m = re.search(pat, text, re.M)
        if m:
            out[key] = float(m.group(1))
    return out


def llama_numbers(res, name):
    out = {}
    for r in _load_json(os.path.join(res, f"{name}.llama-bench.json")) or []:
        if r.get("n_prompt", 0) > 0 and r.get("n_gen", 0) == 0:
            out["prefill"] = float(r["avg_ts"])
        elif r.get("n_gen", 0) > 0 and r.get("n_prompt", 0) == 0 and r.get("n_depth", 0) == 0:
            out["decode0"] = float(r["avg_ts"])
        out.setdefault("gpu", r.get("gpu_info"))
    for r in _load_json(os.path.join(res, f"{name}.llama-bench-depth.json")) or []:
        if r.get("n_gen", 0) > 0:
            out["decode"] = float(r["avg_ts"])
    for r in _jsonl(os.path.join(res, f"{name}.batched.jsonl")):
        out[f"batch{r['pl']}"] = float(r["speed_tg"])
    return out


def hf_numbers(res, name):
    d = _load_json(os.path.join(res, f"{name}.hf.json")) or {}
    out = {}
    if "prefill" in d:
        out["prefill"] = d["prefill"]["tokens_per_s"]
    if "tokens_per_s" in d.get("decode", {}):
        out["decode"] = d["decode"]["tokens_per_s"]
        out["decode_cache"] = d["decode"]["cache"]
    for b, v in d.get("batched", {}).items():
        if "tokens_per_s" in v:
            out[f"batch{b}"] = v["tokens_per_s"]
    out["versions"] = f"torch {d.get('torch')}, transformers {d.get('transformers')}" if d else None
    return out


def serve_numbers(res, name):
    d = _load_json(os.path.join(res, f"{name}.serve.json")) or {}
    return {f"batch{k}": v["decode_tokens_per_s"] for k, v in d.get("waves", {}).items() if "decode_tokens_per_s" in v}


def fmt(x, spec=".1f"):
    return "—" if x is None else format(x, spec)


def ratio(a, b):
    return "—" if a is None or not b else f"{a / b:.2f}"


def pct(a, b):
    return "—" if a is None or not b else f"{100 * a / b:.0f}%"


def model_names(res):
    names = set()
    for suffix in (".weights.json", ".hearth.txt", ".llama-bench.json", ".hf.json", ".serve.json"):
        for p in glob.glob(os.path.join(res, "*" + suffix)):
            names.add(os.path.basename(p)[: -len(suffix)])

    # The 8B set first (smallest weights first), then the rest by name.
    def key(n):
        w = _load_json(os.path.join(res, f"{n}.weights.json")) or {}
        return (not n.startswith("llama8b"), n.endswith("-hf"), w.get("bytes_per_token", 0), n)
    return sorted(names, key=key)


def table(res):
    bw_d = _load_json(os.path.join(res, "bw.json")) or {}
    bw = bw_d.get("bytes_per_s")
    meta = _load_json(os.path.join(res, "run.json")) or {}
    prompt = meta.get("prompt", 2048)
    gen = meta.get("gen", 128)
    batches = meta.get("batches", [16, 64])
    lines, rows = [], []
    gpu = bw_d.get("device")
    hf_versions = None
    for name in model_names(res):
        w = _load_json(os.path.join(res, f"{name}.weights.json")) or {}
        bpt = w.get("bytes_per_token")
        h = hearth_numbers(os.path.join(res, f"{name}.hearth.txt"))
        h.update(serve_numbers(res, name))
        ll = llama_numbers(res, name)
        gpu = gpu or ll.get("gpu")
        # The bf16 GGUF and the bf16 safetensors folder hold the same weights: transformers' numbers (taken on the
        # folder) stand beside both.
        peer = name[: -len("-bf16")] + "-hf" if name.endswith("-bf16") else name
        hf = hf_numbers(res, peer)
        hf_versions = hf_versions or hf.get("versions")
        roof = bw / bpt if bw and bpt else None
        metrics = [
            (f"prefill {prompt} tok/s", "prefill", None),
            (f"decode b1 tok/s (after {prompt}-token prompt)", "decode", roof),
            (f"decode b1 tok/s (empty context, tg{gen})", "decode0", roof),
        ] + [(f"decode {b} seqs, aggregate tok/s", f"batch{b}", roof * b if roof else None) for b in batches]
        for label, key, r in metrics:
            hv, lv, tv = h.get(key), ll.get(key), hf.get(key)
            if hv is None and lv is None and tv is None:
                continue
            rows.append({"model": name, "metric": key, "hearth": hv, "llama.cpp": lv, "transformers": tv,
                         "roofline": r, "bytes_per_token": bpt})
            lines.append(f"| {name} | {label} | {fmt(hv)} | {fmt(lv)} | {fmt(tv)} | {ratio(hv, lv)} "
                         f"| {fmt(r, '.0f')} | {pct(hv, r)} | {pct(lv, r)} |")
    head = [
        f"GPU: {gpu or 'n/a'}; copy bandwidth {fmt(bw and bw / 1e12, '.3f')} TB/s (read + write, torch copy of "
        f"{fmt(bw_d.get('buffer_bytes') and bw_d['buffer_bytes'] / 2**30, 'g')} GiB); "
        f"hearth: {meta.get('hearth_version', 'n/a')} {meta.get('hearth_args', '')}; "
        f"llama.cpp: {meta.get('llama_cpp', 'n/a')}; transformers: {hf_versions or 'n/a'}.",
        "",
        f"Prefill: one batch of {prompt} tokens. Decode b1: {gen} greedy steps; hearth decodes right after its "
        f"prompt, so llama.cpp's row is llama-bench `-d {prompt}` and transformers' prompt is {prompt} tokens too; "
        f"the empty-context row is llama-bench's plain tg{gen}. Aggregate: B sequences decoding together "
        f"(llama-batched-bench S_TG, transformers batched generate, hearth serve with B streams). Roofline: copy "
        f"bandwidth / weight bytes per token (x B for B sequences; KV-cache reads and compute ignored). The "
        f"transformers column of a -bf16 GGUF is the same weights from the -hf folder.",
        "",
        "| model | metric | hearth | llama.cpp | transformers | hearth / llama.cpp | roofline tok/s "
        "| hearth / roofline | llama.cpp / roofline |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    return "\n".join(head + lines), rows


def main():
    if len(sys.argv) < 3 or sys.argv[1] not in ("weights", "eos", "table"):
        sys.exit(__doc__)
    cmd, arg = sys.argv[1], sys.argv[2]
    if cmd == "weights":
        w = weights(arg)
        if "--json" in sys.argv:
            out = sys.argv[sys.argv.index("--json") + 1]
            with open(out + ".part", "w") as f:
                json.dump(w, f, indent=1)
            os.replace(out + ".part", out)
        print(f"{arg}: {w['tensors']} tensors, {w['total_bytes'] / 1e9:.3f} GB, "
              f"{w['bytes_per_token'] / 1e9:.3f} GB read per decoded token")
    elif cmd == "eos":
        print(",".join(str(i) for i in eos_ids(arg)))
    else:
        md, rows = table(arg)
        print(md)
        with open(os.path.join(arg, "summary.md"), "w") as f:
            f.write(md + "\n")
        with open(os.path.join(arg, "summary.json"), "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
