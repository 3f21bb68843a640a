"""`hearth convert --to mlx` against mlx-lm itself (mlx on CPU; skipped when mlx cannot be imported).

- hearth's MLX folder from a tiny Hugging Face model equals `mlx_lm.convert`'s from the same input, tensor for
  tensor (names, dtypes, shapes, every element) and in config.json's quantization section; hearth's SmolLM2
  GGUF → MLX equals `mlx_lm.convert` of hearth's GGUF → Hugging Face folder;
- `mlx_lm.load` loads hearth's output (tiny model and the real SmolLM2 GGUF → MLX 4-bit) and generates;
- mlx-lm's greedy 16-token continuation of a prompt on hearth's MLX folder equals `hearth run --raw` on the same
  folder at temperature 0. hearth reading MLX folders lands separately; until then this test is an expected
  failure that says so (it fails for real if hearth loads the folder and disagrees).

Environment: HEARTH_BIN (see conftest.py), HEARTH_SMOLLM2_GGUF (default: HEARTH_MODELS_DIR's
SmolLM2-135M-Instruct.Q4_1.gguf; tests needing it skip when it is absent).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import EXACT, HEARTH_BIN, MODELS_DIR, ROOT

mx = pytest.importorskip("mlx.core", reason="mlx is not importable here (pip install 'mlx[cpu]' mlx-lm)")
mlx_lm = pytest.importorskip("mlx_lm", reason="mlx-lm is not installed (pip install mlx-lm)")
np = pytest.importorskip("numpy")

TINY = ROOT / "tests" / "fixtures" / "tiny"
SMOL = Path(os.environ.get("HEARTH_SMOLLM2_GGUF", MODELS_DIR / "SmolLM2-135M-Instruct.Q4_1.gguf"))
PROMPT = "The capital of France is"
N_TOKENS = 16


def hearth_convert(src: Path, dst: Path, *args: str) -> None:
    r = subprocess.run([str(HEARTH_BIN), "convert", str(src), str(dst), "--to", "mlx", *args],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr


def mlx_lm_convert(src: Path, dst: Path, *args: str) -> None:
    r = subprocess.run([sys.executable, "-m", "mlx_lm", "convert", "--hf-path", str(src), "--mlx-path", str(dst),
                        *args], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr


def load_weights(folder: Path) -> dict:
    weights = {}
    for f in sorted(folder.glob("model*.safetensors")):
        weights.update(mx.load(str(f)))
    return weights


def greedy_mlx(folder: Path, prompt: str) -> str:
    """mlx-lm's greedy continuation of `prompt`: N_TOKENS tokens (fewer at end of sequence)."""
    from mlx_lm import generate, load
    from mlx_lm.sample_utils import make_sampler

    model, tokenizer = load(str(folder))
    return generate(model, tokenizer, prompt=prompt, max_tokens=N_TOKENS, sampler=make_sampler(temp=0.0))


@pytest.mark.parametrize("args", [
    ("-q", "--bits", "4", "--group-size", "32"),
    ("-q", "--bits", "6", "--group-size", "64"),
    ("-q", "--mode", "mxfp4"),
    ("-q", "--group-size", "32", "--recipe", "mixed_3_6"),
], ids=["affine4-g32", "affine6-g64", "mxfp4", "mixed_3_6"])
def test_hearth_mlx_equals_mlx_lm_convert(tmp_path: Path, args: tuple[str, ...]) -> None:
    src = TINY / "llama" / "hf-bf16"
    mine, theirs = tmp_path / "hearth", tmp_path / "mlx_lm"
    hearth_convert(src, mine, *args)
    lm_args = [a.replace("--bits", "--q-bits").replace("--group-size", "--q-group-size")
               .replace("--mode", "--q-mode").replace("--recipe", "--quant-predicate") for a in args]
    mlx_lm_convert(src, theirs, *lm_args)
    a, b = load_weights(mine), load_weights(theirs)
    assert sorted(a) == sorted(b)
    for name in a:
        assert a[name].dtype == b[name].dtype, name
        assert a[name].shape == b[name].shape, name
        assert mx.array_equal(a[name], b[name]).item(), name
    ca = json.loads((mine / "config.json").read_text())
    cb = json.loads((theirs / "config.json").read_text())
    assert ca["quantization"] == cb["quantization"]
    assert ca["quantization_config"] == cb["quantization_config"]


def test_mlx_lm_loads_and_generates_from_hearth_tiny(tmp_path: Path) -> None:
    out = tmp_path / "tiny-mlx"
    hearth_convert(TINY / "llama" / "hf-bf16", out, "-q", "--bits", "4", "--group-size", "32")
    text = greedy_mlx(out, "the cat")
    assert isinstance(text, str) and len(text) > 0


@pytest.fixture(scope="module")
def smol_mlx(tmp_path_factory) -> Path:
    if not SMOL.exists():
        pytest.skip(f"{SMOL} not found (scripts/fetch_models.sh, or set HEARTH_SMOLLM2_GGUF)")
    out = tmp_path_factory.mktemp("smol") / "smol-mlx-q4"
    hearth_convert(SMOL, out, "-q", "--bits", "4")
    return out


def test_smollm2_gguf_to_mlx_equals_mlx_lm_on_the_same_tensors(smol_mlx: Path, tmp_path: Path) -> None:
    """The real model: hearth's GGUF → MLX equals mlx_lm.convert run on hearth's GGUF → Hugging Face folder."""
    hf = tmp_path / "smol-hf"
    r = subprocess.run([str(HEARTH_BIN), "convert", str(SMOL), str(hf), "--to", "hf"], capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr
    theirs = tmp_path / "smol-mlx-lm"
    mlx_lm_convert(hf, theirs, "-q", "--q-bits", "4")
    a, b = load_weights(smol_mlx), load_weights(theirs)
    assert sorted(a) == sorted(b)
    for name in a:
        assert a[name].dtype == b[name].dtype, name
        assert mx.array_equal(a[name], b[name]).item(), name


def test_mlx_lm_generates_from_hearth_smollm2(smol_mlx: Path) -> None:
    text = greedy_mlx(smol_mlx, PROMPT)
    # A 4-bit SmolLM2 still knows a little geography: the continuation is words, not noise.
    assert len(text.split()) >= 3, text


def greedy_mlx_f32(folder: Path, prompt: str) -> tuple[list[int], list[float], object]:
    """mlx-lm's model in f32 (every float parameter widened; the quantized codes and their scales kept), run
    greedily for N_TOKENS steps: the token ids and each step's top-2 logit margin. f32 is hearth's `EXACT`
    arithmetic; mlx's default bf16 activations move SmolLM2's logits by about 0.2, enough to flip near ties."""
    from mlx_lm import load

    model, tokenizer = load(str(folder))
    model.set_dtype(mx.float32, lambda t: t not in (mx.uint32, mx.uint8))
    ids = list(tokenizer.encode(prompt))
    out, margins = [], []
    for _ in range(N_TOKENS):
        logits = model(mx.array([ids + out]))[0, -1].astype(mx.float32)
        top = mx.argsort(-logits)[:2].tolist()
        margins.append(logits[top[0]].item() - logits[top[1]].item())
        if top[0] in (tokenizer.eos_token_ids or []):
            break
        out.append(top[0])
    return out, margins, tokenizer


def test_greedy_continuation_matches_hearth_run(smol_mlx: Path) -> None:
    """hearth on its own MLX output continues the prompt as mlx-lm does on the same files (both in f32), up to
    the first step whose top-2 margin is under 0.05 (there float summation order may pick either)."""
    # A prompt whose 16 greedy steps all have a clear winner on this 4-bit model (the capital-of-France prompt's
    # first step is a 0.04 near tie between " Paris" and " the").
    prompt = "Once upon a time"
    ids, margins, tokenizer = greedy_mlx_f32(smol_mlx, prompt)
    sure = next((k for k, m in enumerate(margins) if m < 0.05), len(ids))
    expected = tokenizer.decode(ids[:sure])
    r = subprocess.run([str(HEARTH_BIN), *EXACT, "run", "--raw", "--model", str(smol_mlx), "--temperature", "0",
                        "--max-tokens", str(N_TOKENS), prompt], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert sure >= 8, f"only {sure} steps have a clear winner: margins {margins}"
    assert r.stdout.startswith(expected), (r.stdout, expected, margins)


def test_smollm2_4bit_perplexity_equals_mlx_lm(smol_mlx: Path) -> None:
    """`hearth perplexity` on its 4-bit MLX SmolLM2 equals mlx-lm's perplexity on the same files and text
    (both in f32) within 0.5%: the MLX numerics, not only the bytes, agree on a real model."""
    ppl_file = ROOT / "tests" / "fixtures" / "real" / "ppl.txt"
    n, theirs = mlx_perplexity(smol_mlx, ppl_file.read_text())
    r = subprocess.run([str(HEARTH_BIN), *EXACT, "perplexity", "--model", str(smol_mlx), "--file", str(ppl_file)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    fields = dict(line.split(": ", 1) for line in r.stdout.splitlines() if ": " in line)
    assert int(fields["tokens"]) == n
    mine = float(fields["perplexity"])
    assert abs(mine / theirs - 1) <= 0.005, (mine, theirs)


def mlx_perplexity(folder: Path, text: str) -> tuple[int, float]:
    """(tokens, perplexity) of `text` under mlx-lm's model of `folder`, with every float parameter in f32."""
    from mlx_lm import load

    model, tokenizer = load(str(folder))
    model.set_dtype(mx.float32, lambda t: t not in (mx.uint32, mx.uint8))
    ids = list(tokenizer.encode(text))
    logits = model(mx.array([ids]))[0].astype(mx.float32)
    logp = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
    targets = mx.array(ids[1:])
    nll = -mx.take_along_axis(logp[:-1], targets[:, None], axis=-1).sum().item()
    return len(ids), math.exp(nll / (len(ids) - 1))


def test_keep_quant_folder_loads_in_mlx_lm_with_the_gguf_perplexity(tmp_path: Path) -> None:
    """`--keep-quant` carries SmolLM2's Q4_1/Q8_0 blocks into MLX groups of 32 unchanged: mlx-lm loads the folder
    (per-module 4- and 8-bit entries, f16 scales) and its perplexity over ppl.txt equals `hearth perplexity` on
    the original GGUF within 0.1%."""
    if not SMOL.exists():
        pytest.skip(f"{SMOL} not found (scripts/fetch_models.sh, or set HEARTH_SMOLLM2_GGUF)")
    out = tmp_path / "smol-keep"
    hearth_convert(SMOL, out, "--keep-quant")
    ppl_file = ROOT / "tests" / "fixtures" / "real" / "ppl.txt"
    n, theirs = mlx_perplexity(out, ppl_file.read_text())
    r = subprocess.run([str(HEARTH_BIN), *EXACT, "perplexity", "--model", str(SMOL), "--file", str(ppl_file)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    fields = dict(line.split(": ", 1) for line in r.stdout.splitlines() if ": " in line)
    assert int(fields["tokens"]) == n
    mine = float(fields["perplexity"])
    assert abs(theirs / mine - 1) <= 0.001, (theirs, mine)
