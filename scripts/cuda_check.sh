#!/usr/bin/env bash
# Correctness of the CUDA backend on a GPU machine, in one run; prints one line per check and a summary.
#
#   scripts/cuda_check.sh BIN_DIR [MODELS_DIR]
#
# BIN_DIR holds `hearth` and the `cuda_backend` test binary built on a development machine
# (`cargo test --release -p hearth-engine --test cuda_backend --no-run`); MODELS_DIR, when given, holds the
# real test models (SmolLM2-135M-Instruct.Q4_1.gguf, gemma-3-270m-q4_k_m.gguf). Checks:
#   1. every tiny fixture model's logits on the GPU against the CPU (prefill and decode; tests/cuda_backend.rs
#      states the tolerances), batched steps over a paged cache, the out-of-memory error;
#   2. for each real model: perplexity on the GPU within 1% of the CPU's on the same text;
#   3. for each real model: the first 16 greedy tokens on the GPU equal the CPU's.
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=$(cd "${1:?usage: cuda_check.sh BIN_DIR [MODELS_DIR]}" && pwd)
MODELS=${2:-}
OUT=${OUT:-/tmp/hearth-cuda-check}
mkdir -p "$OUT"
# The CUDA 13 runtime libraries (NVRTC, cuBLAS): the toolkit's folder, then any pip-installed copies.
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib $(python3 -c 'import nvidia,os;print(" ".join(os.path.join(p,"cu13","lib") for p in nvidia.__path__))' 2>/dev/null); do
  [ -d "$d" ] && export LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"
done
export HEARTH_CUDA_CACHE=${HEARTH_CUDA_CACHE:-/tmp/hearth-cuda-cache} HEARTH_REQUIRE_CUDA=1
# The test binary finds the fixtures through the path it was built at.
BUILT_AT=$(strings "$BIN/cuda_backend" | grep -m1 -o '/[^ ]*/crates/hearth-engine' | sed 's|/crates/hearth-engine$||')
if [ -n "$BUILT_AT" ] && [ ! -e "$BUILT_AT/tests/fixtures" ]; then
  mkdir -p "$(dirname "$BUILT_AT")" && ln -sfn "$PWD" "$BUILT_AT"
fi
RESULTS=()
pass() { RESULTS+=("PASS  $1"); echo "PASS  $1"; }
fail() { RESULTS+=("FAIL  $1"); echo "FAIL  $1"; }

# CUDA_CHECK_MODELS_ONLY=1 skips the fixture and kernel tests (when only the real models' checks are wanted).
if [ -z "${CUDA_CHECK_MODELS_ONLY:-}" ]; then
# The GPU unit test (the NVRTC compile tests run on every machine, in CI); it must have run: a filter matching
# nothing would pass silently.
if "$BIN/hearth_engine" backend::cuda::tests::fast_decoders --test-threads=1 >"$OUT/engine_cuda.log" 2>&1 \
  && grep -q "test result: ok. 1 passed" "$OUT/engine_cuda.log"; then
  pass "kernel test: fast decoders equal the reference decoders on the GPU, every weight type"
else
  fail "kernel tests (see engine_cuda.log)"
fi
if "$BIN/hearth_engine" dqmm_matches_reference_on_gpu --test-threads=1 --nocapture >"$OUT/engine_dqmm.log" 2>&1 \
  && grep -q "test result: ok. 1 passed" "$OUT/engine_dqmm.log" && ! grep -q "skipped:" "$OUT/engine_dqmm.log"; then
  pass "kernel test: tensor-core product of quantized weights (dqmm) vs a float64 reference, f16 and bf16"
else
  fail "dqmm kernel test (see engine_dqmm.log)"
fi
if "$BIN/hearth_engine" dqmm_group_sums_match_reference_on_gpu --test-threads=1 --nocapture >"$OUT/engine_dqmm_group.log" 2>&1 \
  && grep -q "test result: ok. 1 passed" "$OUT/engine_dqmm_group.log" && ! grep -q "skipped:" "$OUT/engine_dqmm_group.log"; then
  pass "kernel test: a group's dqmm split-K sums in one launch (dqmm_sum3) vs a float64 reference"
else
  fail "grouped dqmm sums kernel test (see engine_dqmm_group.log)"
fi
if "$BIN/hearth_engine" decode_attention_kernels_match_reference_on_gpu --test-threads=1 --nocapture \
  >"$OUT/engine_attn.log" 2>&1 && grep -q "test result: ok. 1 passed" "$OUT/engine_attn.log"; then
  pass "kernel test: decode attention (attn_decode) vs a float64 reference over a paged cache, split"
else
  fail "decode attention kernel test (see engine_attn.log)"
fi
if "$BIN/hearth_engine" dequant_rows_match_reference_on_gpu --test-threads=1 --nocapture >"$OUT/engine_deq.log" 2>&1 \
  && grep -q "test result: ok. 1 passed" "$OUT/engine_deq.log"; then
  pass "kernel test: half-precision slabs for cuBLAS (dequant_rows) vs the CPU's dequantized weights"
else
  fail "dequant_rows kernel test (see engine_deq.log)"
fi
if "$BIN/cuda_backend" --test-threads=1 --nocapture >"$OUT/cuda_backend.log" 2>&1; then
  pass "tiny fixtures: GPU logits vs CPU, batched steps, out-of-memory error"
else
  fail "tiny fixtures (see cuda_backend.log)"
fi
grep -E "prefill .* decode|mismatch|panicked|rel " "$OUT/cuda_backend.log" | head -80
if "$BIN/greedy_picks" gpu_ --test-threads=1 --nocapture >"$OUT/greedy_picks.log" 2>&1 \
  && grep -q "test result: ok. 1 passed" "$OUT/greedy_picks.log"; then
  pass "greedy tokens picked on the GPU (logit biases, argmax) vs the argmax of its logits"
else
  fail "greedy picks on the GPU (see greedy_picks.log)"
fi
if "$BIN/cuda_q8" --test-threads=1 --nocapture >"$OUT/cuda_q8.log" 2>&1 \
  && grep -q "test result: ok. 1 passed" "$OUT/cuda_q8.log"; then
  pass "8-bit activations: GPU integer matvec decode vs the CPU's q8 path"
else
  fail "8-bit activations (see cuda_q8.log)"
fi
grep -E "relative L2|rel " "$OUT/cuda_q8.log" | head -20
# The fixtures again with the prefills on dequantize + cuBLAS instead of dqmm.
if HEARTH_CUDA_DQMM=0 "$BIN/cuda_backend" --test-threads=1 >"$OUT/cuda_backend_nodqmm.log" 2>&1; then
  pass "tiny fixtures with HEARTH_CUDA_DQMM=0: prefills through dequantize + cuBLAS"
else
  fail "tiny fixtures with HEARTH_CUDA_DQMM=0 (see cuda_backend_nodqmm.log)"
fi
fi

# The scored text: the start of this repository's README (ordinary technical English, no repetition, a
# couple of thousand tokens: inside both models' contexts).
TEXT="$OUT/ppl.txt"
head -c 6000 README.md >"$TEXT"
for m in SmolLM2-135M-Instruct.Q4_1.gguf gemma-3-270m-q4_k_m.gguf; do
  [ -n "$MODELS" ] && [ -f "$MODELS/$m" ] || { echo "SKIP  $m (not present)"; continue; }
  for dev in cpu cuda; do
    "$BIN/hearth" --device $dev --activations f32 perplexity --model "$MODELS/$m" --file "$TEXT" \
      >"$OUT/ppl-$m-$dev.txt" 2>"$OUT/ppl-$m-$dev.err"
    "$BIN/hearth" --device $dev --activations f32 run --model "$MODELS/$m" --raw --temperature 0 \
      --max-tokens 16 "The river ran quietly past the old mill, where" \
      >"$OUT/greedy-$m-$dev.txt" 2>"$OUT/greedy-$m-$dev.err"
  done
  python3 - "$OUT" "$m" <<'PY' && pass "$m: perplexity within 1% of the CPU" || fail "$m: perplexity"
import re, sys
out, m = sys.argv[1], sys.argv[2]
def ppl(dev):
    t = open(f"{out}/ppl-{m}-{dev}.txt").read()
    return float(re.findall(r"[-+]?\d+\.\d+", t)[0])
c, g = ppl("cpu"), ppl("cuda")
print(f"      perplexity cpu {c:.4f}  cuda {g:.4f}  ratio {g / c:.5f}")
sys.exit(0 if abs(g / c - 1) <= 0.01 else 1)
PY
  if cmp -s "$OUT/greedy-$m-cpu.txt" "$OUT/greedy-$m-cuda.txt" && [ -s "$OUT/greedy-$m-cpu.txt" ]; then
    pass "$m: 16 greedy tokens equal ($(head -c 80 "$OUT/greedy-$m-cpu.txt" | tr '\n' ' '))"
  else
    fail "$m: greedy tokens differ: cpu [$(cat "$OUT/greedy-$m-cpu.txt")] cuda [$(cat "$OUT/greedy-$m-cuda.txt")]"
  fi
done
echo
echo "== summary"
printf '%s\n' "${RESULTS[@]}"
! printf '%s\n' "${RESULTS[@]}" | grep -q '^FAIL'
