#!/usr/bin/env bash
# Run THERE: several hearth builds and llama.cpp on the same random-weight 8B files in one device call, for A/B
# numbers that share a card and a run. Makes the models (run_all.sh --only models --synth), builds llama.cpp in
# the background while scripts/cuda_check.sh checks the first build and the builds are timed in turn (each twice,
# interleaved), then runs llama-bench on each file.
#
# usage: bench/cuda/ab_decode.sh OUT_DIR HEARTH [HEARTH ...]
#   OUT_DIR gets NAME.<build>.txt (hearth bench output, appended per run) and llama.cpp's JSON files; a summary
#   line per model goes to stdout.
# env: MODELS (default "q4_k_m q8_0 bf16"), PROMPT (2048), GEN (128), TARBALL (device/llama.cpp-src.tar.xz),
#      BUILD_TIMEOUT (330 s), CHECK=0 to skip the correctness checks.
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
out=${1:?usage: ab_decode.sh OUT_DIR HEARTH [HEARTH ...]}
shift
[ $# -ge 1 ] || { echo "ab_decode: name at least one hearth binary" >&2; exit 1; }
builds=("$@")
models=${MODELS:-q4_k_m q8_0 bf16}
tarball=${TARBALL:-$repo/device/llama.cpp-src.tar.xz}
root=${HEARTH_BENCH_ROOT:-/root/hearth-bench}
t0=$SECONDS
mkdir -p "$out" "$root/llama.cpp"
R=("$here/run_all.sh" --out /root/res-copy --synth --hearth "${builds[0]}" --tarball "$tarball")
( "$here/build_llama_cpp_cuda.sh" --tarball "$tarball" --timeout "${BUILD_TIMEOUT:-330}" >"$out/llama-build.out" 2>&1
  echo "build rc $?" >>"$out/llama-build.out" ) &
bpid=$!
"${R[@]}" --only models --budget 200 2>&1 | grep -v "^|" | tail -1
echo "models at $((SECONDS - t0)) s"
if [ "${CHECK:-1}" != 0 ]; then
    OUT=$out/check "$repo/scripts/cuda_check.sh" "$(dirname "${builds[0]}")" 2>&1 | grep -E "^(PASS|FAIL)"
fi
bench() {  # bench BUILD MODEL: "prefill/decode"
    local f
    f="$out/$2.$(basename "$1").txt"
    "$1" --device cuda bench --model "$root/llama8b-$2.gguf" --prompt-tokens "${PROMPT:-2048}" \
        --gen-tokens "${GEN:-128}" --reps 2 2>/dev/null | tee -a "$f" |
        grep -E "^(prefill|decode):" | cut -d' ' -f2 | paste -sd/
}
for m in $models; do
    line="$m (prefill/decode)"
    for rep in 1 2; do
        for b in "${builds[@]}"; do line="$line $(basename "$b") $(bench "$b" "$m")"; done
    done
    echo "$line"
done
wait $bpid
tail -1 "$out/llama-build.out"
for m in $models; do
    SKIP=batched REPS=2 timeout 120 "$here/llama_cpp_bench.sh" "$root/llama8b-$m.gguf" "$out" >/dev/null 2>&1
    python3 - "$out" "$m" <<'PY'
import json, sys
out, m = sys.argv[1], sys.argv[2]
def rows(suffix):
    try:
        return [(r.get("n_prompt"), r.get("n_gen"), r.get("n_depth", 0), round(r["avg_ts"], 1))
                for r in json.load(open(f"{out}/llama8b-{m}.{suffix}.json"))]
    except Exception as e:  # a failed run leaves no JSON
        return str(e)
print("llama.cpp", m, "(prompt, gen, depth, tok/s):", rows("llama-bench"), rows("llama-bench-depth"))
PY
done
echo "done at $((SECONDS - t0)) s"
