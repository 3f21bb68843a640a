#!/usr/bin/env bash
# Run HERE (no GPU needed, about a minute on 2 cores): the whole bench/cuda chain on the CPU, so a mistake shows
# up before a device call is spent on it. A 2-layer model (HEARTH_BENCH_TINY=1) is made from the real tokenizer
# folder and converted by the real convert_hf_to_gguf.py from the packed tarball; transformers, hearth and
# `hearth serve` run for real; llama-bench, llama-batched-bench and llama-quantize are stand-ins printing
# their output format (no llama.cpp build here). Checks that the final table has every engine's numbers.
#
# usage: bench/cuda/selftest.sh
# needs: device/llama.cpp-src.tar.xz (pack_llama_cpp.sh), device/smollm2-tokenizer (make_tokenizer_dir.sh)
# env:   HEARTH (default target/release/hearth), PYTHON (default /work/venvs/ref/bin/python, else python3; needs
#        torch and transformers), KEEP=1 keeps the scratch folder, SYNTH=1 tests `run_all.sh --synth` instead:
#        the GGUFs come from synth_llama8b.py's tiny layouts (PYTHON needs the gguf package; no tarball needed)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo_root=$(cd "$here/../.." && pwd)
hearth=${HEARTH:-$repo_root/target/release/hearth}
python=${PYTHON:-}
[ -z "$python" ] && [ -x /work/venvs/ref/bin/python ] && python=/work/venvs/ref/bin/python
python=${python:-python3}
[ -x "$hearth" ] || { echo "no hearth binary at $hearth (cargo build --release, or HEARTH=...)" >&2; exit 1; }
synth=${SYNTH:-0}
[ "$synth" != 0 ] || [ -f "$repo_root/device/llama.cpp-src.tar.xz" ] || { echo "run bench/cuda/pack_llama_cpp.sh first" >&2; exit 1; }
[ -d "$repo_root/device/smollm2-tokenizer" ] || { echo "run bench/cuda/make_tokenizer_dir.sh first" >&2; exit 1; }

tmp=$(mktemp -d)
if [ "${KEEP:-0}" = 1 ]; then
    echo "scratch: $tmp" >&2
else
    trap 'rm -rf "$tmp"' EXIT
fi
root="$tmp/root"
mkdir -p "$root/llama.cpp/bin" "$root/llama.cpp/unpack"
synth_args=()
if [ "$synth" != 0 ]; then
    HEARTH_BENCH_TINY=1 "$python" "$here/synth_llama8b.py" --out "$tmp/layouts"
    synth_args=(--synth --layouts "$tmp/layouts")
else
    tar -xJf "$repo_root/device/llama.cpp-src.tar.xz" -C "$root/llama.cpp/unpack"
    mv "$root/llama.cpp/unpack/llama.cpp" "$root/llama.cpp/src"
fi
# The build stage is not run, so nothing compares its stamp; the stand-ins only need to exist.
cat >"$root/llama.cpp/bin/llama-bench" <<'EOF'
#!/usr/bin/env python3
import json, sys
a = sys.argv
g = lambda f, d: int(a[a.index(f) + 1]) if f in a else d
p, n, d = g("-p", 512), g("-n", 128), g("-d", 0)
rows = []
if p: rows.append({"n_prompt": p, "n_gen": 0, "n_depth": d, "avg_ts": 5000.0, "stddev_ts": 1.0, "gpu_info": "stand-in"})
if n: rows.append({"n_prompt": 0, "n_gen": n, "n_depth": d, "avg_ts": 100.0 - d / 100, "stddev_ts": 1.0, "gpu_info": "stand-in"})
print(json.dumps(rows, indent=2))
EOF
cat >"$root/llama.cpp/bin/llama-batched-bench" <<'EOF'
#!/usr/bin/env python3
import json, sys
for pl in map(int, sys.argv[sys.argv.index("-npl") + 1].split(",")):
    print(json.dumps({"pp": 128, "tg": 128, "pl": pl, "n_kv": pl * 256, "t_pp": 0.1, "speed_pp": 1000.0,
                      "t_tg": 1.0, "speed_tg": 90.0 * pl, "t": 1.1, "speed": 100.0}))
EOF
cat >"$root/llama.cpp/bin/llama-quantize" <<'EOF'
#!/bin/sh
cp "$1" "$2"
EOF
chmod +x "$root/llama.cpp/bin/"*

HEARTH_BENCH_TINY=1 HEARTH_BENCH_ROOT="$root" PYTHON="$python" PROMPT=64 GEN=8 REPS=1 NPL=1,2,4 \
    HF_BENCH_ARGS="--reps 1" HEARTH_BENCH_ARGS="--threads 2" \
    "$here/run_all.sh" --only bw,models,llama,hearth,hf,serve --hearth "$hearth" --out "$tmp/out" "${synth_args[@]}" || {
    echo "selftest: run_all.sh exited $?" >&2
    exit 1
}

# Every engine must have filled its column somewhere, and the 8B naming (here llama-tiny-*) must line up.
"$python" - "$tmp/out/summary.json" <<'EOF'
import json, sys
rows = json.load(open(sys.argv[1]))
need = {("llama-tiny-bf16", "prefill", "hearth"), ("llama-tiny-bf16", "prefill", "llama.cpp"),
        ("llama-tiny-bf16", "prefill", "transformers"), ("llama-tiny-q4_k_m", "decode", "llama.cpp"),
        ("llama-tiny-hf", "decode", "transformers"), ("llama-tiny-hf", "batch4", "transformers"),
        ("llama-tiny-q8_0", "batch4", "hearth"), ("llama-tiny-q8_0", "batch4", "llama.cpp")}
have = {(r["model"], r["metric"], k) for r in rows for k in ("hearth", "llama.cpp", "transformers") if r[k]}
missing = need - have
roof = [r for r in rows if r["metric"] == "decode" and r["roofline"]]
if missing or not roof:
    sys.exit(f"selftest: missing {sorted(missing)}{'' if roof else ' and rooflines'}")
print(f"selftest: ok ({len(rows)} table rows)")
EOF
