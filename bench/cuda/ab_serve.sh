#!/usr/bin/env bash
# Run THERE: hearth's server-side numbers (aggregate decode of 1, 16 and 64 streams, time to first token of a
# 100-token prompt) and `hearth bench` at a 256-token prompt, under several environment settings, on the
# random-weight 8B files (made if missing). For A/B of a switch such as HEARTH_CUDA_DQMM in one call.
#
# usage: bench/cuda/ab_serve.sh OUT_DIR HEARTH SETTING [SETTING ...]
#   SETTING: "-" (no extra environment) or space-separated VAR=VALUE pairs, e.g. "HEARTH_CUDA_DQMM=0".
#   OUT_DIR gets MODEL.<n>.serve.json (serve_agg.py) and MODEL.<n>.bench.txt for setting number n.
# env: MODELS (default "q4_k_m q8_0"), STREAMS (default 1,16,64).
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
out=${1:?usage: ab_serve.sh OUT_DIR HEARTH SETTING [SETTING ...]}
hearth=${2:?hearth binary}
shift 2
[ $# -ge 1 ] || { echo "ab_serve: name at least one setting" >&2; exit 1; }
root=${HEARTH_BENCH_ROOT:-/root/hearth-bench}
mkdir -p "$out"
t0=$SECONDS
"$here/run_all.sh" --out /root/res-copy --synth --hearth "$hearth" --only models --budget 200 2>&1 | grep -v "^|" | tail -1
for m in ${MODELS:-q4_k_m q8_0}; do
    i=0
    for setting in "$@"; do
        i=$((i + 1))
        env_args=()
        [ "$setting" = "-" ] || read -r -a env_args <<<"$setting"
        env "${env_args[@]}" "$hearth" --device cuda bench --model "$root/llama8b-$m.gguf" --prompt-tokens 256 \
            --gen-tokens 32 --reps 2 >"$out/$m.$i.bench.txt" 2>/dev/null
        env "${env_args[@]}" python3 "$here/serve_agg.py" --hearth "$hearth" --model "$root/llama8b-$m.gguf" \
            --json "$out/$m.$i.serve.json" --streams "${STREAMS:-1,16,64}" 2>"$out/$m.$i.serve.log"
        python3 - "$out/$m.$i.serve.json" "$out/$m.$i.bench.txt" "$m" "$setting" <<'PY'
import json, sys
serve, bench, m, setting = sys.argv[1:]
try:
    d = json.load(open(serve))
except Exception as e:  # a failed run leaves no JSON
    d = {"error": str(e)}
pre = [l.split()[1] for l in open(bench) if l.startswith("prefill:")] if bench else []
waves = {n: round(w["decode_tokens_per_s"], 1) for n, w in d.get("waves", {}).items()}
ttft = d.get("ttft", {}).get("median_ms")
print(m, repr(setting), "prefill256", pre, "decode aggregate by streams", waves, "ttft_ms", ttft, d.get("error", ""))
PY
        echo "  at $((SECONDS - t0)) s"
    done
done
