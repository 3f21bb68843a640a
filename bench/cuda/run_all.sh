#!/usr/bin/env bash
# Run THERE, as one device call, repeated until it says "all stages done": hearth's CUDA backend against
# llama.cpp (CUDA) and transformers on a Llama-3-8B-shaped model (bf16, Q8_0, Q4_K_M) and any extra GGUFs.
#
# usage: bench/cuda/run_all.sh [--only STAGES] [--budget S] [--redo] [--hearth BIN] [--tokenizer DIR]
#                              [--tarball FILE] [--models-dir DIR] [--results DIR] [--out DIR]
#                              [--synth] [--layouts DIR]
# stages (default: bw,build,models,llama,hearth,hf; `serve` is opt-in):
#   bw       copy bandwidth (copy_bw.py), the roofline's denominator
#   build    llama.cpp's CUDA tools from device/llama.cpp-src.tar.xz (build_llama_cpp_cuda.sh)
#   models   the random 8B model: HF folder, bf16/Q8_0/Q4_K_M GGUFs (make_llama8b.py); extra GGUFs from
#            --models-dir (X.gguf, X.gguf.part-* pieces, or bench/synth_gguf.py extract folders). With --synth
#            (or HEARTH_BENCH_SYNTH=1) the three GGUFs are written by bench/synth_gguf.py build from the layouts
#            in --layouts (default device/llama8b-layouts, made here by synth_llama8b.py), seconds each, instead
#            of convert_hf_to_gguf.py + llama-quantize; make_llama8b.py then makes the HF folder only
#   llama    llama_cpp_bench.sh on every GGUF
#   hearth   `hearth bench` on every GGUF and on the HF folder
#   hf       transformers (hf_bench.py) on the HF folder
#   serve    hearth's aggregate decode through `hearth serve` (serve_agg.py) on every model
# A device call lasts at most 10 minutes, and files under /root survive only while the machine stays warm
# (about 30 s between calls). So every unit of work is skipped when its result is already there, none is started
# without the time it needs left of --budget (default 560 s), and each is killed at the budget's end; the next
# call goes on from there. The build and the 8B model are made side by side (compiler on the CPU, model on the
# GPU and disk). --redo runs the benchmark units again even when their results exist.
# Results (JSON, logs, summary.md with the final table) gather in --results (default ROOT/results) and are
# copied to --out (default $OUT) at the end of every call.
# env: HEARTH_BENCH_ROOT (ROOT, default /root/hearth-bench); HEARTH_BENCH_ARGS (default "--device cuda": extra
#      `hearth bench` arguments); HEARTH_SERVE_ARGS (extra `hearth serve` arguments); PROMPT (2048), GEN (128),
#      REPS (3), NPL (1,16,64: sequences for the aggregate runs); LLAMA_BENCH_ARGS, BATCHED_ARGS, HF_BENCH_ARGS
#      (appended to those tools); HEARTH_TIMEOUT_S (300, per hearth run); PYTHON (python3, with torch);
#      HEARTH_BENCH_TINY=1 (a 2-layer model on the CPU instead of the 8B: tests this script without a GPU);
#      HEARTH_BENCH_SYNTH=1 (as --synth).
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo_root=$(cd "$here/../.." && pwd)
root=${HEARTH_BENCH_ROOT:-/root/hearth-bench}
export HEARTH_BENCH_ROOT=$root
only="bw,build,models,llama,hearth,hf"
budget=560
redo=0
hearth="$repo_root/device/hearth"
tokenizer="$repo_root/device/smollm2-tokenizer"
tarball="$repo_root/device/llama.cpp-src.tar.xz"
models_dir="$repo_root/device/models"
results="$root/results"
out=${OUT:-}
python=${PYTHON:-python3}
export PROMPT=${PROMPT:-2048} GEN=${GEN:-128} REPS=${REPS:-3} NPL=${NPL:-1,16,64}
hearth_args=${HEARTH_BENCH_ARGS---device cuda}
tiny=${HEARTH_BENCH_TINY:-0}
[ "$tiny" = 0 ] && prefix=llama8b || prefix=llama-tiny
synth=${HEARTH_BENCH_SYNTH:-0}
layouts="$repo_root/device/$prefix-layouts"

while [ $# -gt 0 ]; do
    case "$1" in
        --only) only=$2; shift 2 ;;
        --budget) budget=$2; shift 2 ;;
        --redo) redo=1; shift ;;
        --hearth) hearth=$2; shift 2 ;;
        --tokenizer) tokenizer=$2; shift 2 ;;
        --tarball) tarball=$2; shift 2 ;;
        --models-dir) models_dir=$2; shift 2 ;;
        --results) results=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        --synth) synth=1; shift ;;
        --layouts) layouts=$2; shift 2 ;;
        -h|--help) sed -n '2,/^set -uo/{/^#/p}' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "run_all: unknown argument: $1 (see --help)" >&2; exit 1 ;;
    esac
done

t0=$SECONDS
mkdir -p "$results" "$root"
pending=()
failed=()
say() { echo "[run_all $((SECONDS - t0))s] $*" | tee -a "$results/run_all.log" >&2; }
left() { echo $((budget - (SECONDS - t0))); }
has() { [[ ",$only," == *",$1,"* ]]; }
# True when `need` seconds are left; otherwise records `what` as left for the next call.
can_start() {
    if [ "$(left)" -lt "$1" ]; then
        say "not enough time left for $2 ($(left) s < $1 s): next call"
        pending+=("$2")
        return 1
    fi
}
# Runs a command bounded by what is left of this call (and by $2 seconds when that is less).
bounded() {
    local cap=$1
    shift
    local t
    t=$(left)
    [ "$cap" -gt 0 ] && [ "$cap" -lt "$t" ] && t=$cap
    [ "$t" -lt 1 ] && t=1  # timeout 0 would mean no limit at all
    timeout -k 10 "$t" "$@"
}
# Writes key=value pairs into results/run.json (what the table's header line reports).
note() {
    "$python" - "$results/run.json" "$@" <<'EOF'
import json, sys
p = sys.argv[1]
try:
    d = json.load(open(p))
except (OSError, ValueError):
    d = {}
for kv in sys.argv[2:]:
    k, v = kv.split("=", 1)
    d[k] = json.loads(v) if v[:1] in "[{" else v
json.dump(d, open(p, "w"), indent=1)
EOF
}

say "stages: $only; budget ${budget} s; root $root; results $results"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,clocks.max.mem,driver_version \
    --format=csv >"$results/nvidia-smi.csv" 2>&1
[ -f "$hearth" ] && [ ! -x "$hearth" ] && chmod +x "$hearth" 2>/dev/null
hearth_version=$([ -x "$hearth" ] && "$hearth" --version 2>/dev/null || echo "n/a")
note "prompt=$PROMPT" "gen=$GEN" "batches=[$(tr ',' '\n' <<<"$NPL" | grep -vx 1 | paste -sd,)]" \
    "hearth_version=$hearth_version"

llama_bin="$root/llama.cpp/bin"
hf_dir="$root/$prefix-hf"

# --- bw ------------------------------------------------------------------------------------------------------
if has bw; then
    if [ -f "$results/bw.json" ] && [ "$redo" = 0 ]; then
        say "bw: done before"
    elif can_start 40 bw; then
        bw_size=()
        [ "$tiny" != 0 ] && bw_size=(--gib 0.25)
        bounded 120 "$python" "$here/copy_bw.py" --json "$results/bw.json" "${bw_size[@]}" 2>&1 |
            tee -a "$results/run_all.log"
    fi
fi

# --- build (in the background while the model is made) ---------------------------------------------------------
build_pid=""
build_done() { [ -x "$llama_bin/llama-bench" ] && [ -x "$llama_bin/llama-quantize" ] && [ -x "$llama_bin/llama-batched-bench" ]; }
if has build; then
    if [ ! -f "$tarball" ]; then
        say "build: no $tarball (pack it here with bench/cuda/pack_llama_cpp.sh)"
    elif can_start 60 build; then
        # The script itself returns at once when already built; it stops 20 s before our budget ends.
        "$here/build_llama_cpp_cuda.sh" --tarball "$tarball" --timeout $(($(left) - 20)) \
            >"$results/build.out" 2>"$results/build.err" &
        build_pid=$!
        say "build: started (pid $build_pid; log $root/llama.cpp/build.log)"
    fi
fi
finish_build() {
    [ -n "$build_pid" ] || return 0
    wait "$build_pid"
    local rc=$?
    build_pid=""
    tee -a "$results/run_all.log" <"$results/build.err" >&2
    [ "$rc" = 3 ] && pending+=(build)
    [ "$rc" != 0 ] && [ "$rc" != 3 ] && { say "build: FAILED (rc $rc)"; failed+=(build); }
    tail -c 20000 "$root/llama.cpp/build.log" >"$results/llama_build.log" 2>/dev/null
    cp "$root/llama.cpp/configure.log" "$results/llama_configure.log" 2>/dev/null
    if [ -f "$llama_bin/.stamp" ]; then
        note "llama_cpp=llama-cpp-python 0.3.36's llama.cpp (ggml $(grep -o 'ggml version: [0-9.]*' \
            "$root/llama.cpp/configure.log" | cut -d' ' -f3)), $(grep -o 'release [0-9.]*' "$llama_bin/.stamp" |
            sed 's/release/CUDA/'), sm_${CUDA_ARCH:-90}"
    fi
    return 0
}

# --- models ----------------------------------------------------------------------------------------------------
extra_models() {
    # GGUFs that came with the call: whole files, split pieces (joined once), synth_gguf.py layouts (built once).
    [ -d "$models_dir" ] || return 0
    mkdir -p "$root/models"
    local f name
    for f in "$models_dir"/*.gguf; do [ -f "$f" ] && echo "$f"; done
    for f in "$models_dir"/*.gguf.part-aa; do
        [ -f "$f" ] || continue
        name=$(basename "${f%.part-aa}")
        [ -f "$models_dir/$name" ] && continue
        [ -f "$root/models/$name" ] || { cat "${f%aa}"* >"$root/models/$name.part" && mv "$root/models/$name.part" "$root/models/$name"; }
        echo "$root/models/$name"
    done
    for f in "$models_dir"/*/tensors.json; do
        [ -f "$f" ] || continue
        name=$(basename "$(dirname "$f")").gguf
        [ -f "$root/models/$name" ] || "$python" "$repo_root/bench/synth_gguf.py" build "$(dirname "$f")" "$root/models/$name" >&2
        [ -f "$root/models/$name" ] && echo "$root/models/$name"
    done
}
if has models && [ "$synth" != 0 ]; then
    # The three GGUFs from synth_llama8b.py's layouts: random bytes, about a GB/s or more, no llama.cpp needed.
    for q in bf16 q8_0 q4_k_m; do
        dst="$root/$prefix-$q.gguf"
        if [ -f "$dst" ]; then
            say "models: have $dst"
        elif [ ! -f "$layouts/$q/tensors.json" ]; then
            say "models: no layout $layouts/$q (make it here with bench/cuda/synth_llama8b.py)"
            failed+=("models $q")
        elif can_start 60 "models ($q)"; then
            say "models: $dst from $layouts/$q (synth_gguf.py build)"
            bounded 0 "$python" "$repo_root/bench/synth_gguf.py" build "$layouts/$q" "$dst" 2>&1 |
                tee -a "$results/run_all.log" "$results/make_models.log"
            rc=${PIPESTATUS[0]}
            if [ "$rc" != 0 ]; then
                rm -f "$dst.part"
                # 124/137: cut by the budget; the next call starts it again.
                if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then pending+=("models $q"); else say "models: synth_gguf.py build exited $rc"; failed+=("models $q"); fi
            fi
        fi
    done
fi
make_args=()
[ "$synth" != 0 ] && make_args=(--hf-only)
if has models; then
    if [ ! -d "$tokenizer" ]; then
        say "models: no tokenizer folder $tokenizer (make it here with bench/cuda/make_tokenizer_dir.sh)"
    elif can_start 30 models; then
        bounded 0 "$python" "$here/make_llama8b.py" --tokenizer "$tokenizer" --root "$root" --budget-s $(($(left) - 15)) \
            "${make_args[@]}" 2>&1 | tee -a "$results/run_all.log" "$results/make_models.log"
        rc=${PIPESTATUS[0]}
        [ "$rc" = 3 ] && pending+=(models)
        [ "$rc" != 0 ] && [ "$rc" != 3 ] && { say "models: make_llama8b.py exited $rc"; failed+=(models); }
        # The build may finish while the model is made; its quantized files need llama-quantize.
        if [ -n "$build_pid" ] && [ "$rc" = 0 ] && [ "$synth" = 0 ]; then
            finish_build
            if build_done && can_start 60 "models (quantize)"; then
                bounded 0 "$python" "$here/make_llama8b.py" --tokenizer "$tokenizer" --root "$root" \
                    --budget-s $(($(left) - 15)) 2>&1 | tee -a "$results/run_all.log" "$results/make_models.log"
                [ "${PIPESTATUS[0]}" = 3 ] && pending+=(models)
            fi
        fi
    fi
fi
finish_build
build_done || { has llama && say "llama: no CUDA llama.cpp tools yet"; }

ggufs=()
for q in q4_k_m q8_0 bf16; do [ -f "$root/$prefix-$q.gguf" ] && ggufs+=("$root/$prefix-$q.gguf"); done
while IFS= read -r m; do [ -n "$m" ] && ggufs+=("$m"); done < <(extra_models)
for m in "${ggufs[@]}" "$hf_dir"; do
    [ -e "$m" ] || continue
    name=$(basename "$m" .gguf)
    [ -f "$results/$name.weights.json" ] || "$python" "$here/report.py" weights "$m" --json "$results/$name.weights.json" >/dev/null
done

# --- llama -----------------------------------------------------------------------------------------------------
if has llama && build_done; then
    for m in "${ggufs[@]}"; do
        name=$(basename "$m" .gguf)
        if [ "$redo" = 0 ] && [ -f "$results/$name.llama-bench.json" ] && [ -f "$results/$name.llama-bench-depth.json" ] &&
            [ -f "$results/$name.batched.jsonl" ]; then
            say "llama $name: done before"
            continue
        fi
        can_start 90 "llama $name" || continue
        say "llama $name"
        LLAMA_BIN=$llama_bin bounded 0 "$here/llama_cpp_bench.sh" "$m" "$results" 2>&1 | tee -a "$results/run_all.log"
        [ "${PIPESTATUS[0]}" = 0 ] || failed+=("llama $name")
    done
fi

# --- hearth ----------------------------------------------------------------------------------------------------
if has hearth; then
    if [ ! -x "$hearth" ]; then
        say "hearth: no executable $hearth"
    else
        read -r -a hargs <<<"$hearth_args"
        for m in "${ggufs[@]}" "$hf_dir"; do
            [ -e "$m" ] || continue
            name=$(basename "$m" .gguf)
            if [ "$redo" = 0 ] && [ -f "$results/$name.hearth.txt" ]; then
                say "hearth $name: done before"
                continue
            fi
            can_start 60 "hearth $name" || continue
            note "hearth_args=$hearth_args"
            say "hearth $name: bench --prompt-tokens $PROMPT --gen-tokens $GEN --reps $REPS $hearth_args"
            if bounded "${HEARTH_TIMEOUT_S:-300}" "$hearth" bench --model "$m" --prompt-tokens "$PROMPT" \
                --gen-tokens "$GEN" --reps "$REPS" "${hargs[@]}" >"$results/$name.hearth.txt.part" \
                2>"$results/$name.hearth.log"; then
                mv "$results/$name.hearth.txt.part" "$results/$name.hearth.txt"
                grep -E "^(prefill|decode):" "$results/$name.hearth.txt" | sed "s/^/  hearth $name /" >&2
            else
                say "hearth $name: FAILED (log $results/$name.hearth.log):"
                failed+=("hearth $name")
                tail -5 "$results/$name.hearth.log" >&2
            fi
        done
    fi
fi

# --- hf --------------------------------------------------------------------------------------------------------
hf_complete() {
    "$python" - "$1" "$NPL" <<'EOF'
import json, sys
try:
    d = json.load(open(sys.argv[1]))
except (OSError, ValueError):
    sys.exit(1)
want = [b for b in sys.argv[2].split(",") if b and b != "1"]
sys.exit(0 if "decode" in d and all(b in d.get("batched", {}) for b in want) else 1)
EOF
}
if has hf; then
    name=$(basename "$hf_dir")
    if [ ! -d "$hf_dir" ]; then
        say "hf: no $hf_dir yet"
    elif [ "$redo" = 0 ] && hf_complete "$results/$name.hf.json"; then
        say "hf $name: done before"
    elif can_start 150 "hf $name"; then
        say "hf $name"
        read -r -a hfargs <<<"${HF_BENCH_ARGS:-}"
        bounded 0 "$python" "$here/hf_bench.py" "$hf_dir" --json "$results/$name.hf.json" --prefill "$PROMPT" \
            --decode "$GEN" --decode-prompt "$PROMPT" --reps "$REPS" \
            --batches "$(tr ',' '\n' <<<"$NPL" | grep -vx 1 | paste -sd,)" --budget-s $(($(left) - 20)) --resume "${hfargs[@]}" \
            2>>"$results/$name.hf.log" | tee -a "$results/run_all.log"
        hf_complete "$results/$name.hf.json" || { pending+=("hf $name"); tail -5 "$results/$name.hf.log" >&2; }
    fi
fi

# --- serve (opt-in) --------------------------------------------------------------------------------------------
if has serve && [ -x "$hearth" ]; then
    read -r -a sargs <<<"${HEARTH_SERVE_ARGS:-}"
    sflags=()
    for a in "${sargs[@]}"; do sflags+=("--serve-arg=$a"); done
    for m in "${ggufs[@]}" "$hf_dir"; do
        [ -e "$m" ] || continue
        name=$(basename "$m" .gguf)
        if [ "$redo" = 0 ] && [ -f "$results/$name.serve.json" ]; then
            say "serve $name: done before"
            continue
        fi
        can_start 120 "serve $name" || continue
        say "serve $name"
        bounded 0 "$python" "$here/serve_agg.py" --hearth "$hearth" --model "$m" --json "$results/$name.serve.json" \
            --streams "$NPL" --tokens "$GEN" "${sflags[@]}" \
            2>&1 | tee -a "$results/run_all.log"
        [ "${PIPESTATUS[0]}" = 0 ] || failed+=("serve $name")
    done
fi

# --- report ----------------------------------------------------------------------------------------------------
echo
"$python" "$here/report.py" table "$results"
echo
[ "${#failed[@]}" -gt 0 ] && say "FAILED this call: ${failed[*]} (logs in $results; --redo retries finished units too)"
if [ "${#pending[@]}" -gt 0 ]; then
    say "left for the next call: ${pending[*]} (run the same command again within ~30 s, while the machine is warm)"
else
    say "all stages done ($((SECONDS - t0)) s)"
fi
if [ -n "$out" ]; then
    mkdir -p "$out"
    cp -r "$results"/. "$out"/ 2>/dev/null
    say "results copied to $out"
fi
# 1: something failed; 3: work left for the next call; 0: all done.
[ "${#failed[@]}" -gt 0 ] && exit 1
[ "${#pending[@]}" -gt 0 ] && exit 3
exit 0
