"""`hearth convert --to hf` against transformers: the Hugging Face folder hearth writes from each real GGUF
(SmolLM2 Q4_1, Gemma 3 270M Q4_K_M; f32 so the dequantized weights carry over exactly) loads in transformers,
whose greedy 16-token continuation equals `hearth run --raw` on the original GGUF at temperature 0 (f32
activations). This checks config.json, tensor names and layouts (llama.cpp's q/k row order undone, Gemma's norm
offsets) and tokenizer.json as transformers reads them.

Needs torch and transformers (scripts/requirements-reference.txt); skipped without them.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from conftest import EXACT, GEMMA_PATH, HEARTH_BIN, SMOL_PATH

torch = pytest.importorskip("torch", reason="torch is not installed (scripts/requirements-reference.txt)")
transformers = pytest.importorskip("transformers", reason="transformers is not installed")

PROMPT = "The capital of France is"
N_TOKENS = 16


@pytest.mark.parametrize("gguf", [SMOL_PATH, GEMMA_PATH], ids=["smollm2", "gemma3"])
def test_transformers_continues_like_hearth(gguf: Path, tmp_path: Path) -> None:
    if not gguf.exists():
        pytest.skip(f"{gguf} not found (scripts/fetch_models.sh)")
    out = tmp_path / "hf"
    r = subprocess.run([str(HEARTH_BIN), "convert", str(gguf), str(out), "--to", "hf", "--dtype", "f32"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([str(HEARTH_BIN), *EXACT, "run", "--raw", "--model", str(gguf), "--temperature", "0",
                        "--max-tokens", str(N_TOKENS), PROMPT], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    tok = transformers.AutoTokenizer.from_pretrained(out)
    model = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    ids = tok(PROMPT, return_tensors="pt")
    gen = model.generate(**ids, max_new_tokens=N_TOKENS, do_sample=False)
    text = tok.decode(gen[0][ids["input_ids"].shape[1]:])
    assert r.stdout.rstrip("\n") == text
