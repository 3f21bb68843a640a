"""GGUF files written by `hearth convert` load in llama.cpp (through llama-cpp-python) and score text the same
way there as in `hearth perplexity`.

For every tiny Hugging Face model of tests/fixtures/tiny (llama, mistral, qwen2, qwen3, gemma3; random weights,
a 320-token byte-level BPE vocabulary, a 256-token context) and the types q8_0 and q4_0 (plus f32, q4_k and q5_0 for some; on 64-wide rows q4_k is
llama-quantize's Q4_K_M fallback mix of Q5_0 and Q8_0):

  1. convert with `hearth convert SRC DST --to gguf --outtype TYPE --force`;
  2. llama.cpp loads the file; its tokenization of the text must equal hearth's token count, and its
     perplexity (from all-position logits, f32 KV cache) is computed here in numpy;
  3. `hearth perplexity --activations f32` on the same file and text: within 1% of llama.cpp's.

The real models go further: SmolLM2 (byte-level BPE) and Gemma 3 (SentencePiece) GGUF -> bf16 Hugging Face
folder -> GGUF q8_0 / q4_k, and SmolLM2 GGUF -> 4-bit MLX folder -> GGUF q8_0, each scored over all of
ppl.txt by both (measured: within 0.6%).

The text is the longest prefix of tests/fixtures/real/ppl.txt (whole lines) that fits the tiny context. 1% is
loose for identical weights (hearth's f32 activations differ from llama.cpp's 8-bit activation products on
quantized weights by far less on these models), and tight enough to catch a wrong rope order, a missing norm
offset or a wrong tokenizer, each of which moves a random-weight model's perplexity by far more.

Needs: `llama_cpp` (llama-cpp-python==0.3.36, in scripts/requirements-e2e.txt; skipped when absent) and the
hearth binary (HEARTH_BIN).
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import tempfile
from pathlib import Path

import pytest

llama_cpp = pytest.importorskip(
    "llama_cpp", reason="llama-cpp-python is not installed (pip install llama-cpp-python==0.3.36)"
)
np = pytest.importorskip("numpy", reason="numpy is needed for the llama.cpp perplexity")

from conftest import HEARTH_BIN, ROOT  # noqa: E402

TINY = ROOT / "tests" / "fixtures" / "tiny"
PPL_TEXT = ROOT / "tests" / "fixtures" / "real" / "ppl.txt"
CASES = [(arch, ty) for arch in ["llama", "mistral", "qwen2", "qwen3", "gemma3"] for ty in ["q8_0", "q4_0"]]
CASES += [("llama", "f32"), ("llama", "q4_k"), ("gemma3", "q4_k"), ("qwen2", "q5_0")]
REL_TOL = 0.01


def convert(src: Path, dst: Path, outtype: str) -> None:
    """`hearth convert SRC DST --to gguf --outtype OUTTYPE`."""
    cmd = [str(HEARTH_BIN), "convert", str(src), str(dst), "--to", "gguf", "--outtype", outtype, "--force"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"{cmd} failed:\n{r.stdout}\n{r.stderr}"
    assert dst.exists()


def llama_cpp_perplexity(path: Path, text: str, ctx: int = 256) -> tuple[int, float]:
    """(tokens, perplexity) of `text` in llama.cpp: BOS as the file says, every token after the first scored."""
    llm = llama_cpp.Llama(str(path), n_ctx=ctx, n_batch=ctx, n_ubatch=ctx, logits_all=True, verbose=False,
                          n_threads=2, seed=0, type_k=0, type_v=0, flash_attn=False, swa_full=True)
    try:
        toks = llm.tokenize(text.encode("utf-8"), add_bos=True, special=False)
        llm.eval(toks)
        logits = np.array(llm.scores[: len(toks)], dtype=np.float64)
    finally:
        llm.close()
    m = logits.max(axis=1, keepdims=True)
    logp = logits - m - np.log(np.exp(logits - m).sum(axis=1, keepdims=True))
    nll = -np.mean([logp[i, toks[i + 1]] for i in range(len(toks) - 1)])
    return len(toks), math.exp(nll)


def hearth_perplexity(path: Path, text_file: Path) -> tuple[int, float]:
    cmd = [str(HEARTH_BIN), "perplexity", "--activations", "f32", "--model", str(path), "--file", str(text_file)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"{cmd} failed:\n{r.stdout}\n{r.stderr}"
    tokens = int(re.search(r"tokens: (\d+)", r.stdout).group(1))
    ppl = float(re.search(r"perplexity: ([0-9.]+)", r.stdout).group(1))
    return tokens, ppl


def text_that_fits(path: Path, ctx: int = 256) -> str:
    """The longest run of whole lines from the start of ppl.txt that the tiny tokenizer keeps within `ctx`."""
    llm = llama_cpp.Llama(str(path), vocab_only=True, verbose=False)
    try:
        lines = PPL_TEXT.read_text().splitlines(keepends=True)
        text = ""
        for line in lines:
            if len(llm.tokenize((text + line).encode(), add_bos=True)) > ctx:
                break
            text += line
        if not text:  # a first line longer than the context: cut by characters
            words = lines[0].split(" ")
            while words and len(llm.tokenize(" ".join(words).encode(), add_bos=True)) > ctx:
                words.pop()
            text = " ".join(words)
    finally:
        llm.close()
    assert len(text) > 100, "too little text fits the tiny context"
    return text


@pytest.mark.skipif(not HEARTH_BIN.exists(), reason=f"no hearth binary at {HEARTH_BIN} (cargo build --release -p hearth)")
@pytest.mark.parametrize("arch,outtype", CASES)
def test_converted_gguf_matches_llama_cpp(arch: str, outtype: str) -> None:
    with tempfile.TemporaryDirectory(prefix="hearth-convert-") as tmp:
        dst = Path(tmp) / f"{arch}-{outtype}.gguf"
        convert(TINY / arch / "hf-f32", dst, outtype)
        text = text_that_fits(dst)
        text_file = Path(tmp) / "text.txt"
        text_file.write_text(text)
        n_cpp, ppl_cpp = llama_cpp_perplexity(dst, text)
        n_hearth, ppl_hearth = hearth_perplexity(dst, text_file)
        assert n_hearth == n_cpp, f"{arch} {outtype}: hearth tokenized to {n_hearth} tokens, llama.cpp to {n_cpp}"
        rel = abs(ppl_hearth - ppl_cpp) / ppl_cpp
        print(f"{arch} {outtype}: {n_cpp} tokens, perplexity llama.cpp {ppl_cpp:.4f}, hearth {ppl_hearth:.4f} "
              f"({rel:.3%})")
        assert rel <= REL_TOL, f"{arch} {outtype}: hearth {ppl_hearth} vs llama.cpp {ppl_cpp} ({rel:.3%})"


MODELS_DIR = Path(os.environ.get("HEARTH_MODELS_DIR", ROOT / "models"))
SMOL = Path(os.environ.get("HEARTH_SMOLLM2_GGUF", MODELS_DIR / "SmolLM2-135M-Instruct.Q4_1.gguf"))
GEMMA = Path(os.environ.get("HEARTH_GEMMA3_GGUF", MODELS_DIR / "gemma-3-270m-q4_k_m.gguf"))
REAL_CASES = [("smollm2", "hf", "q8_0"), ("smollm2", "hf", "q4_k"), ("smollm2", "mlx", "q8_0"),
              ("gemma3", "hf", "q8_0")]


@pytest.mark.skipif(not HEARTH_BIN.exists(), reason=f"no hearth binary at {HEARTH_BIN} (cargo build --release -p hearth)")
@pytest.mark.parametrize("model,via,outtype", REAL_CASES)
def test_real_model_gguf_written_by_hearth_matches_llama_cpp(model: str, via: str, outtype: str, tmp_path: Path) -> None:
    """The real models, taken GGUF -> Hugging Face folder (or -> 4-bit MLX folder) -> GGUF by hearth: llama.cpp
    loads the file, tokenizes ppl.txt to the same number of tokens as hearth and scores it within 1%."""
    gguf = SMOL if model == "smollm2" else GEMMA
    if not gguf.exists():
        pytest.skip(f"{gguf} not found (scripts/fetch_models.sh)")
    folder = tmp_path / via
    extra = ["-q", "--bits", "4"] if via == "mlx" else ["--dtype", "bf16"]
    r = subprocess.run([str(HEARTH_BIN), "convert", str(gguf), str(folder), "--to", via, *extra],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    dst = tmp_path / f"{model}-{outtype}.gguf"
    convert(folder, dst, outtype)
    n_cpp, ppl_cpp = llama_cpp_perplexity(dst, PPL_TEXT.read_text(), ctx=1024)
    n_hearth, ppl_hearth = hearth_perplexity(dst, PPL_TEXT)
    assert n_hearth == n_cpp, f"hearth tokenized to {n_hearth} tokens, llama.cpp to {n_cpp}"
    rel = abs(ppl_hearth - ppl_cpp) / ppl_cpp
    print(f"{model} via {via} {outtype}: {n_cpp} tokens, perplexity llama.cpp {ppl_cpp:.4f}, hearth {ppl_hearth:.4f} "
          f"({rel:.3%})")
    assert rel <= REL_TOL, f"hearth {ppl_hearth} vs llama.cpp {ppl_cpp} ({rel:.3%})"
