#!/usr/bin/env python3
"""Makes tests/fixtures/tokenizer/spm-bpe/: a small SentencePiece-style `tokenizer.json` (BPE with byte
fallback over `▁`-escaped text, the layout of Llama 2, Mistral v0.1 and Gemma tokenizer.json files), for the
test that hearth's GGUF conversion of such tokenizers (`tokenizer.ggml.model = "llama"` with scores) encodes
exactly as the `tokenizer.json` does (crates/hearth-engine/tests/convert_gguf.rs).

Like the tokenizer.json files Hugging Face derives from SentencePiece models, the merge list holds every split
of every token into two tokens, ordered by the merged token's id (its SentencePiece rank); ids 0-2 are
<unk>, <s>, </s>, then the 256 byte tokens <0x00>..<0xFF>, then the learned pieces. Two added special tokens
(<start_of_turn>, <end_of_turn>) follow. Deterministic.

    /work/venvs/ref/bin/python scripts/make_spm_tokenizer_fixture.py
"""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, processors, trainers

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "tokenizer" / "spm-bpe"
CORPUS = [
    "The morning train left the station at a quarter past seven, and the carriages were nearly empty.",
    "When you bake bread at home, the hardest part is waiting. The dough needs time to rise.",
    "The river runs past the old mill, under the stone bridge, and out across the marsh to the sea.",
    "Questions and answers: What is the capital of France? The capital of France is Paris.",
    "def add(a, b):\n    return a + b\n\nfor i in range(10):\n    print(i, add(i, i))\n",
    "naïve café résumé — Привет мир, 你好世界. Numbers: 1234 5678 3.14159",
]
LEARNED = 700


def main() -> None:
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    trainer = trainers.BpeTrainer(vocab_size=LEARNED, min_frequency=2, show_progress=False,
                                  special_tokens=[])
    tok.train_from_iterator(CORPUS * 3, trainer)
    learned = json.loads(tok.to_str())["model"]
    pieces = sorted(learned["vocab"].items(), key=lambda kv: kv[1])
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    for p, _ in pieces:
        if p not in vocab:
            vocab[p] = len(vocab)
    # Every split of every multi-character piece into two pieces, ordered by the merged piece's id.
    merges = []
    for piece, pid in sorted(vocab.items(), key=lambda kv: kv[1]):
        if pid < 259 or len(piece) < 2:
            continue
        for i in range(1, len(piece)):
            left, right = piece[:i], piece[i:]
            if left in vocab and right in vocab:
                merges.append((pid, vocab[left], vocab[right], left, right))
    merges.sort()
    model = models.BPE(vocab=vocab, merges=[(m[3], m[4]) for m in merges], unk_token="<unk>",
                       byte_fallback=True, fuse_unk=True)
    out = Tokenizer(model)
    out.normalizer = tok.normalizer
    out.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    out.add_special_tokens(["<start_of_turn>", "<end_of_turn>"])
    out.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                       special_tokens=[("<s>", 1)])
    OUT.mkdir(parents=True, exist_ok=True)
    out.save(str(OUT / "tokenizer.json"))
    config = {
        "tokenizer_class": "LlamaTokenizerFast",
        "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
        "add_bos_token": True, "add_eos_token": False,
    }
    (OUT / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    print(f"{OUT}: {out.get_vocab_size()} tokens, {len(merges)} merges")


if __name__ == "__main__":
    main()
