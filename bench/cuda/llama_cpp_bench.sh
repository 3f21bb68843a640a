#!/usr/bin/env bash
# Run THERE: llama.cpp's numbers for one GGUF on the GPU, every layer offloaded (-ngl 99), flash attention on.
#
# usage: bench/cuda/llama_cpp_bench.sh MODEL.gguf RESULTS_DIR
# writes RESULTS_DIR/NAME.* (NAME = the file name without .gguf):
#   NAME.llama-bench.json        llama-bench -p PROMPT -n GEN -r REPS: prefill ppPROMPT and decode tgGEN at an
#                                empty context (JSON array, one object per test, avg_ts = tokens/s)
#   NAME.llama-bench-depth.json  llama-bench -p 0 -n GEN -d PROMPT: decode after a PROMPT-token context, the same
#                                depth at which `hearth bench` decodes (right after its prompt)
#   NAME.batched.jsonl, .md      llama-batched-bench -npp NPP -ntg NTG -npl NPL: S_TG (speed_tg) is the aggregate
#                                decode speed of B sequences decoding together
#   NAME.llama.log               everything the tools printed on stderr
# env: LLAMA_BIN (default $HEARTH_BENCH_ROOT/llama.cpp/bin, root default /root/hearth-bench), PROMPT (2048),
#      GEN (128), REPS (3), NPP (128), NTG (128), NPL (1,16,64), LLAMA_BENCH_ARGS and BATCHED_ARGS (appended),
#      SKIP (comma list of bench, depth, batched)
# Exits non-zero if any of the three runs failed (the others still run).
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
model=${1:?usage: llama_cpp_bench.sh MODEL.gguf RESULTS_DIR}
res=${2:?usage: llama_cpp_bench.sh MODEL.gguf RESULTS_DIR}
bin=${LLAMA_BIN:-${HEARTH_BENCH_ROOT:-/root/hearth-bench}/llama.cpp/bin}
prompt=${PROMPT:-2048}
gen=${GEN:-128}
reps=${REPS:-3}
npp=${NPP:-128}
ntg=${NTG:-128}
npl=${NPL:-1,16,64}
skip=",${SKIP:-},"
read -r -a bench_extra <<<"${LLAMA_BENCH_ARGS:-}"
read -r -a batched_extra <<<"${BATCHED_ARGS:-}"

[ -f "$model" ] || { echo "no such model: $model" >&2; exit 1; }
[ -x "$bin/llama-bench" ] || { echo "no llama-bench in $bin (bench/cuda/build_llama_cpp_cuda.sh builds it)" >&2; exit 1; }
mkdir -p "$res"
name=$(basename "$model" .gguf)
log="$res/$name.llama.log"
: >"$log"
failed=0

# Runs "$@" with stdout to $1's file (written atomically: a run cut short leaves no half file behind).
run_to() {
    local out=$1
    shift
    echo "+ $*" >>"$log"
    local t0=$SECONDS
    if "$@" >"$out.part" 2>>"$log"; then
        mv "$out.part" "$out"
        echo "llama_cpp_bench: $(basename "$out") in $((SECONDS - t0)) s" >&2
    else
        echo "llama_cpp_bench: FAILED ($((SECONDS - t0)) s): $* (log: $log)" >&2
        tail -5 "$log" >&2
        rm -f "$out.part"
        failed=1
    fi
}

# -ngl 99: all layers on the GPU; -fa 1: flash attention (llama.cpp's fast path on CUDA; hearth has one too).
# Batch/ubatch stay at llama-bench's defaults (2048/512), as llama.cpp users get them.
common=(-m "$model" -ngl 99 -fa 1 -r "$reps" -o json)
case $skip in *,bench,*) ;; *)
    run_to "$res/$name.llama-bench.json" "$bin/llama-bench" "${common[@]}" -p "$prompt" -n "$gen" "${bench_extra[@]}"
esac
case $skip in *,depth,*) ;; *)
    run_to "$res/$name.llama-bench-depth.json" "$bin/llama-bench" "${common[@]}" -p 0 -n "$gen" -d "$prompt" \
        "${bench_extra[@]}"
esac

case $skip in *,batched,*) ;; *)
    if [ -x "$bin/llama-batched-bench" ]; then
        # Each sequence gets its own KV stream (no -kvu): context = B * (NPP + NTG) for the largest B, plus some
        # room per sequence so none comes out short after llama.cpp rounds sizes.
        max_pl=$(tr ',' '\n' <<<"$npl" | sort -n | tail -1)
        ctx=$((max_pl * (npp + ntg + 64)))
        run_to "$res/$name.batched.jsonl" "$bin/llama-batched-bench" -m "$model" -ngl 99 -fa on -c "$ctx" \
            -b 2048 -ub 512 -npp "$npp" -ntg "$ntg" -npl "$npl" --output-format jsonl "${batched_extra[@]}"
        if [ -f "$res/$name.batched.jsonl" ]; then
            python3 - "$res/$name.batched.jsonl" >"$res/$name.batched.md" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
print("| PP | TG | B | N_KV | T_PP s | S_PP t/s | T_TG s | S_TG t/s | T s | S t/s |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for r in rows:
    print(f"| {r['pp']} | {r['tg']} | {r['pl']} | {r['n_kv']} | {r['t_pp']:.3f} | {r['speed_pp']:.2f} "
          f"| {r['t_tg']:.3f} | {r['speed_tg']:.2f} | {r['t']:.3f} | {r['speed']:.2f} |")
EOF
        fi
    else
        echo "llama_cpp_bench: no llama-batched-bench in $bin: batched run skipped" >&2
    fi
esac

# One line per number, for a person reading the call's output.
python3 - "$here" "$res" "$name" <<'EOF'
import sys
sys.path.insert(0, sys.argv[1])
import report
n = report.llama_numbers(sys.argv[2], sys.argv[3])
print(f"llama.cpp {sys.argv[3]}: " + (", ".join(f"{k} {v:.1f} tok/s" for k, v in n.items() if isinstance(v, float)) or "no numbers"))
EOF
exit $failed
