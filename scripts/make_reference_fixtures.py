#!/usr/bin/env python3
"""Make the reference fixtures that check hearth's numbers against Hugging Face transformers.

These fixtures are generated ONCE, by hand, and committed. CI never runs this script: the Rust tests
only read what it wrote under tests/fixtures/. Re-running it is deterministic (fixed seeds, fixed
texts) as long as the package versions in scripts/requirements-reference.txt are used.

    /work/venvs/ref/bin/python scripts/make_reference_fixtures.py            # both parts
    /work/venvs/ref/bin/python scripts/make_reference_fixtures.py --part tiny
    /work/venvs/ref/bin/python scripts/make_reference_fixtures.py --part real # needs models/ (fetch_models.sh)

Part "tiny" (tests/fixtures/tiny/<arch>/): small random-weight models, one per architecture
(llama, mistral, qwen2, qwen3, gemma3), saved as Hugging Face directories (f32, bf16) and as GGUF
files written the way llama.cpp's convert_hf_to_gguf.py writes them, each with the logits
transformers computes for one fixed token sequence on exactly the weights that file holds. An
extra GGUF-only "llama256" (256-wide rows) carries the 256-element super-block types (K-quants,
TQ1_0/TQ2_0). Each directory's reference.json lists its variants.

Part "real" (tests/fixtures/real/): perplexity of tests/fixtures/real/ppl.txt and greedy
continuations for the two real GGUF models in models/, computed by transformers in float32 on the
dequantized weights.

If llama_cpp_python is installed, the script also runs llama.cpp on every GGUF it wrote (and on the
real models) and prints how far its logits, token ids and perplexity are from the fixtures. Those
cross-checks are printed (and written with --checks), never stored in the fixtures.

Everything is computed on the CPU in float32 with eager attention.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import shutil
import sys
from pathlib import Path

import numpy as np
import torch

import gguf
from gguf import GGMLQuantizationType as QT
from gguf import LlamaFileType as FT
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

import transformers
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    Gemma3ForCausalLM,
    Gemma3TextConfig,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
)

ROOT = Path(__file__).resolve().parents[1]
TINY_DIR = ROOT / "tests" / "fixtures" / "tiny"
REAL_DIR = ROOT / "tests" / "fixtures" / "real"
MODELS_DIR = ROOT / "models"

torch.set_num_threads(2)

# ----------------------------------------------------------------------------------------------
# The tiny tokenizer: byte-level BPE trained on a few paragraphs written for this purpose.
# ----------------------------------------------------------------------------------------------

TOKENIZER_CORPUS = [
    "The morning train left the station at a quarter past seven, and the carriages were nearly "
    "empty. A man in a grey coat read the paper by the window while the fields went by, green "
    "and wet after a night of rain. Near the back, two students argued quietly about a book that "
    "neither of them had finished.",
    "When you bake bread at home, the hardest part is waiting. The dough needs time to rise, and "
    "then it needs time to rest again after you shape it. If you open the oven too early, the loaf "
    "will sink in the middle. Patience is the main ingredient that no recipe can measure for you.",
    "The river runs past the old mill, under the stone bridge, and out across the marsh to the "
    "sea. In the summer the water is low and slow, and children throw sticks from the bridge to "
    "see which one reaches the far side first. In the winter the river is loud and fast and brown.",
    "Questions and answers: What is the capital of France? The capital of France is Paris. "
    "How many legs does a spider have? A spider has eight legs. Why is the sky blue? Because the "
    "air scatters blue light more than red light. Thank you for asking, and have a nice day!",
    "def add(a, b):\n    return a + b\n\nfor i in range(10):\n    print(i, add(i, i))\n",
]

SPECIAL_TOKENS = ["<|bos|>", "<|eos|>", "<|pad|>", "<|im_start|>", "<|im_end|>"]
BOS, EOS, PAD, IM_START, IM_END = range(len(SPECIAL_TOKENS))
TINY_VOCAB = 320

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# The 24-token sequence every tiny model is evaluated on: BOS, then the first 23 ids of this text.
REFERENCE_TEXT = "The quick brown fox jumps over the lazy dog, and the river runs past the old mill."
N_REF_TOKENS = 24

# llama.cpp pre-tokenizer name whose split regex is exactly the one `pre_tokenizers.ByteLevel(
# use_regex=True)` applies (the GPT-2 regex).
GGUF_PRE = "gpt-2"


def train_tokenizer() -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TINY_VOCAB,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        min_frequency=2,
        show_progress=False,
    )
    tok.train_from_iterator(TOKENIZER_CORPUS, trainer)
    assert tok.get_vocab_size() == TINY_VOCAB, tok.get_vocab_size()
    for i, s in enumerate(SPECIAL_TOKENS):
        assert tok.token_to_id(s) == i
    return tok


def tokenizer_with_bos(base: Tokenizer, add_bos: bool) -> Tokenizer:
    tok = Tokenizer.from_str(base.to_str())
    if add_bos:
        tok.post_processor = processors.TemplateProcessing(
            single="<|bos|> $A",
            pair="<|bos|> $A <|bos|> $B",
            special_tokens=[("<|bos|>", BOS)],
        )
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return tok


def write_tokenizer_files(base: Tokenizer, out: Path, add_bos: bool, eos_ids: int | list[int]) -> None:
    tok = tokenizer_with_bos(base, add_bos)
    tok.save(str(out / "tokenizer.json"))
    added = {
        str(i): {"content": s, "lstrip": False, "normalized": False, "rstrip": False,
                 "single_word": False, "special": True}
        for i, s in enumerate(SPECIAL_TOKENS)
    }
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": SPECIAL_TOKENS[BOS],
        "eos_token": SPECIAL_TOKENS[EOS],
        "pad_token": SPECIAL_TOKENS[PAD],
        "add_bos_token": add_bos,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": 256,
        "added_tokens_decoder": added,
        "chat_template": CHAT_TEMPLATE,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    gen = {"bos_token_id": BOS, "eos_token_id": eos_ids, "pad_token_id": PAD,
           "transformers_version": transformers.__version__}
    (out / "generation_config.json").write_text(json.dumps(gen, indent=2) + "\n")


# ----------------------------------------------------------------------------------------------
# K-quant encoders. gguf-py (0.19) can decode Q2_K..Q6_K but not encode them, so these write the
# ggml block layouts directly. They are plain (not llama.cpp's error-minimising search): each
# sub-block gets an affine or symmetric scale from its min/max. Only the layout has to be right,
# since the reference logits are computed from what gguf.quants.dequantize reads back; every
# encoded tensor is checked against that decoder, and llama.cpp cross-checks the whole file.
# ----------------------------------------------------------------------------------------------

QK_K = 256


def _f16(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float16)


def _div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(b == 0, 0.0, a / np.where(b == 0, 1.0, b))


def _affine(xs: np.ndarray, nq: int, nscale: int):
    """Sub-block scales/mins for y = d*sc*q - dmin*m, q in [0, nq], sc and m in [0, nscale]."""
    mn = np.minimum(xs.min(-1), 0.0)
    scale = (xs.max(-1) - mn) / nq
    mins = -mn
    d = _f16(scale.max(-1) / nscale)
    dmin = _f16(mins.max(-1) / nscale)
    df, dminf = d.astype(np.float32)[:, None], dmin.astype(np.float32)[:, None]
    sc = np.clip(np.rint(_div(scale, df)), 0, nscale).astype(np.uint8)
    m = np.clip(np.rint(_div(mins, dminf)), 0, nscale).astype(np.uint8)
    eff_d = (df * sc.astype(np.float32))[..., None]
    eff_m = (dminf * m.astype(np.float32))[..., None]
    q = np.clip(np.rint(_div(xs + eff_m, eff_d)), 0, nq).astype(np.uint8)
    return d, dmin, sc, m, q


def _symmetric(xs: np.ndarray, qmin: int, qmax: int, nscale: int):
    """Sub-block scales for y = d*sc*q, q in [qmin, qmax], sc in [0, nscale]."""
    s = np.maximum(np.maximum(xs.max(-1), 0) / qmax, np.maximum(-xs.min(-1), 0) / -qmin)
    d = _f16(s.max(-1) / nscale)
    df = d.astype(np.float32)[:, None]
    sc = np.clip(np.rint(_div(s, df)), 0, nscale).astype(np.int32)
    eff = (df * sc.astype(np.float32))[..., None]
    q = np.clip(np.rint(_div(xs, eff)), qmin, qmax).astype(np.int32)
    return d, sc, q


def _pack_scale_min_k4(sc: np.ndarray, m: np.ndarray) -> np.ndarray:
    """The 12-byte 6-bit scale/min packing of Q4_K and Q5_K (inverse of get_scale_min_k4)."""
    out = np.zeros((sc.shape[0], 12), dtype=np.uint8)
    for j in range(4):
        out[:, j] = (sc[:, j] & 63) | ((sc[:, j + 4] >> 4) << 6)
        out[:, j + 4] = (m[:, j] & 63) | ((m[:, j + 4] >> 4) << 6)
        out[:, j + 8] = (sc[:, j + 4] & 0xF) | ((m[:, j + 4] & 0xF) << 4)
    return out


def _bytes16(a: np.ndarray) -> np.ndarray:
    return a.reshape(-1, 1).view(np.uint8).reshape(-1, 2)


def encode_q2_k(x: np.ndarray) -> np.ndarray:
    nb = x.shape[0]
    d, dmin, sc, m, q = _affine(x.reshape(nb, 16, 16), 3, 15)
    scales = sc | (m << 4)                                   # (nb, 16)
    q = q.reshape(nb, 2, 4, 32)                              # [chunk of 128][shift j][l]
    qs = np.zeros((nb, 2, 32), dtype=np.uint8)
    for j in range(4):
        qs |= q[:, :, j, :] << (2 * j)
    return np.concatenate([scales, qs.reshape(nb, 64), _bytes16(d), _bytes16(dmin)], axis=1)


def encode_q3_k(x: np.ndarray) -> np.ndarray:
    nb = x.shape[0]
    d, sc, q = _symmetric(x.reshape(nb, 16, 16), -4, 3, 31)
    v = (sc + 32).astype(np.uint8)                           # stored 6-bit scales, (nb, 16)
    scales = np.zeros((nb, 12), dtype=np.uint8)
    for k in range(4):
        scales[:, k] = (v[:, k] & 0xF) | ((v[:, 8 + k] & 0xF) << 4)
        scales[:, 4 + k] = (v[:, 4 + k] & 0xF) | ((v[:, 12 + k] & 0xF) << 4)
        scales[:, 8 + k] = ((v[:, k] >> 4) | ((v[:, 4 + k] >> 4) << 2)
                            | ((v[:, 8 + k] >> 4) << 4) | ((v[:, 12 + k] >> 4) << 6))
    qp = (q + 4).astype(np.uint8).reshape(nb, 2, 4, 32)      # 0..7: low 2 bits + "no -4" bit
    qs = np.zeros((nb, 2, 32), dtype=np.uint8)
    hmask = np.zeros((nb, 32), dtype=np.uint8)
    for c in range(2):
        for j in range(4):
            qs[:, c, :] |= (qp[:, c, j, :] & 3) << (2 * j)
            hmask |= (qp[:, c, j, :] >> 2) << (4 * c + j)
    return np.concatenate([hmask, qs.reshape(nb, 64), scales, _bytes16(d)], axis=1)


def encode_q4_k(x: np.ndarray) -> np.ndarray:
    nb = x.shape[0]
    d, dmin, sc, m, q = _affine(x.reshape(nb, 8, 32), 15, 63)
    q = q.reshape(nb, 4, 2, 32)
    qs = q[:, :, 0, :] | (q[:, :, 1, :] << 4)
    return np.concatenate([_bytes16(d), _bytes16(dmin), _pack_scale_min_k4(sc, m),
                           qs.reshape(nb, 128)], axis=1)


def encode_q5_k(x: np.ndarray) -> np.ndarray:
    nb = x.shape[0]
    d, dmin, sc, m, q = _affine(x.reshape(nb, 8, 32), 31, 63)
    q = q.reshape(nb, 4, 2, 32)
    qs = (q[:, :, 0, :] & 0xF) | ((q[:, :, 1, :] & 0xF) << 4)
    qh = np.zeros((nb, 32), dtype=np.uint8)
    for c in range(4):
        for h in range(2):
            qh |= (q[:, c, h, :] >> 4) << (2 * c + h)
    return np.concatenate([_bytes16(d), _bytes16(dmin), _pack_scale_min_k4(sc, m), qh,
                           qs.reshape(nb, 128)], axis=1)


def encode_q6_k(x: np.ndarray) -> np.ndarray:
    nb = x.shape[0]
    d, sc, q = _symmetric(x.reshape(nb, 16, 16), -32, 31, 127)
    qq = (q + 32).astype(np.uint8).reshape(nb, 2, 4, 32)    # [chunk of 128][k][l]
    ql = np.zeros((nb, 2, 64), dtype=np.uint8)
    ql[:, :, :32] = (qq[:, :, 0, :] & 0xF) | ((qq[:, :, 2, :] & 0xF) << 4)
    ql[:, :, 32:] = (qq[:, :, 1, :] & 0xF) | ((qq[:, :, 3, :] & 0xF) << 4)
    qh = np.zeros((nb, 2, 32), dtype=np.uint8)
    for k in range(4):
        qh |= (qq[:, :, k, :] >> 4) << (2 * k)
    return np.concatenate([ql.reshape(nb, 128), qh.reshape(nb, 64),
                           sc.astype(np.int8).view(np.uint8), _bytes16(d)], axis=1)


K_ENCODERS = {QT.Q2_K: encode_q2_k, QT.Q3_K: encode_q3_k, QT.Q4_K: encode_q4_k,
              QT.Q5_K: encode_q5_k, QT.Q6_K: encode_q6_k}
# a bound on the relative RMS error of each encoder on normal data, to catch layout mistakes
K_MAX_REL_RMS = {QT.Q2_K: 0.45, QT.Q3_K: 0.25, QT.Q4_K: 0.12, QT.Q5_K: 0.06, QT.Q6_K: 0.03}


def quantize(arr: np.ndarray, qtype: QT) -> np.ndarray:
    """gguf.quants.quantize, plus the K-quant encoders above, checked against gguf's decoder."""
    if qtype not in K_ENCODERS:
        return gguf.quants.quantize(arr, qtype)
    rows, cols = arr.shape
    assert cols % QK_K == 0, (arr.shape, qtype)
    blocks = K_ENCODERS[qtype](np.ascontiguousarray(arr, dtype=np.float32).reshape(-1, QK_K))
    assert blocks.shape[1] == gguf.GGML_QUANT_SIZES[qtype][1], blocks.shape
    data = np.ascontiguousarray(blocks).reshape(rows, -1)
    back = gguf.quants.dequantize(data, qtype)
    rel = float(np.sqrt(np.mean((back - arr) ** 2) / np.mean(arr ** 2)))
    assert rel < K_MAX_REL_RMS[qtype], (qtype.name, rel)
    return data


# ----------------------------------------------------------------------------------------------
# The tiny models.
# ----------------------------------------------------------------------------------------------

COMMON = dict(
    vocab_size=TINY_VOCAB,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    max_position_embeddings=256,
    rms_norm_eps=1e-6,
    bos_token_id=BOS,
    pad_token_id=PAD,
)

# Per model: HF config/model classes and config kwargs (over COMMON), the GGUF arch name, the seed,
# whether the tokenizer adds BOS, the eos id(s) of generation_config.json, whether the converter
# permutes q/k rows (llama-arch only), whether attention.key_length/value_length are written,
# and optionally: legacy_config (transformers-4 style config.json), shard (max_shard_size for
# hf-f32), gguf_only/gguf_types (which GGUF variants; DEFAULT_GGUF_TYPES otherwise).
TINY_ARCHS = {
    "llama": dict(
        config_cls=LlamaConfig, model_cls=LlamaForCausalLM, gguf_arch="llama", seed=1001,
        add_bos=True, eos=EOS, permute_qk=True, gguf_head_dim_keys=False, legacy_config=True,
        kwargs=dict(rope_theta=10000.0, tie_word_embeddings=False, eos_token_id=EOS,
                    attention_bias=False, mlp_bias=False, hidden_act="silu"),
    ),
    # A llama with 256-wide rows, so that the 256-element super-block types (K-quants, TQ) fit.
    # GGUF files only (the HF loading path is covered by the models above); F16 is its baseline.
    "llama256": dict(
        config_cls=LlamaConfig, model_cls=LlamaForCausalLM, gguf_arch="llama", seed=1006,
        add_bos=True, eos=EOS, permute_qk=True, gguf_head_dim_keys=False, gguf_only=True,
        gguf_types=["f16", "q2_k", "q3_k", "q4_k", "q5_k", "q6_k", "tq1_0", "tq2_0"],
        kwargs=dict(hidden_size=256, intermediate_size=256, head_dim=64, rope_theta=10000.0,
                    tie_word_embeddings=False, eos_token_id=EOS, attention_bias=False,
                    mlp_bias=False, hidden_act="silu"),
    ),
    "mistral": dict(
        config_cls=MistralConfig, model_cls=MistralForCausalLM, gguf_arch="llama", seed=1002,
        add_bos=True, eos=EOS, permute_qk=True, gguf_head_dim_keys=False,
        kwargs=dict(rope_theta=10000.0, tie_word_embeddings=False, eos_token_id=EOS,
                    sliding_window=None, hidden_act="silu"),
    ),
    "qwen2": dict(
        config_cls=Qwen2Config, model_cls=Qwen2ForCausalLM, gguf_arch="qwen2", seed=1003,
        add_bos=False, eos=[EOS, IM_END], permute_qk=False, gguf_head_dim_keys=False,
        shard="200KB",
        kwargs=dict(rope_theta=1000000.0, tie_word_embeddings=False, eos_token_id=[EOS, IM_END],
                    use_sliding_window=False, hidden_act="silu"),
    ),
    "qwen3": dict(
        config_cls=Qwen3Config, model_cls=Qwen3ForCausalLM, gguf_arch="qwen3", seed=1004,
        add_bos=False, eos=IM_END, permute_qk=False, gguf_head_dim_keys=True,
        kwargs=dict(rope_theta=1000000.0, tie_word_embeddings=True, eos_token_id=IM_END,
                    attention_bias=False, use_sliding_window=False, hidden_act="silu"),
    ),
    "gemma3": dict(
        config_cls=Gemma3TextConfig, model_cls=Gemma3ForCausalLM, gguf_arch="gemma3", seed=1005,
        add_bos=True, eos=[EOS, IM_END], permute_qk=False, gguf_head_dim_keys=True,
        legacy_config=True,
        kwargs=dict(
            # Six layers: llama.cpp hard-codes Gemma 3's pattern of five sliding-window layers then
            # one global layer (and a local rope base of 10000), so the tiny model uses exactly that.
            num_hidden_layers=6,
            layer_types=["sliding_attention"] * 5 + ["full_attention"],
            sliding_window=8,
            rope_parameters={
                "full_attention": {"rope_type": "default", "rope_theta": 1000000.0},
                "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
            },
            # != head_dim (16). GGUF has no key for this: llama.cpp uses 1/sqrt(head_dim) for every
            # Gemma 3 but the 27B, so the GGUF files describe a model with query_pre_attn_scalar=16.
            query_pre_attn_scalar=32,
            hidden_activation="gelu_pytorch_tanh",
            final_logit_softcapping=None,
            attn_logit_softcapping=None,
            tie_word_embeddings=True,
            eos_token_id=[EOS, IM_END],
        ),
    ),
}

# GGUF variants: name -> (tensor type for every 2-D weight, general.file_type)
GGUF_TYPES = {
    "f32": (QT.F32, FT.ALL_F32),
    "f16": (QT.F16, FT.MOSTLY_F16),
    "bf16": (QT.BF16, FT.MOSTLY_BF16),
    "q8_0": (QT.Q8_0, FT.MOSTLY_Q8_0),
    "q4_0": (QT.Q4_0, FT.MOSTLY_Q4_0),
    "q4_1": (QT.Q4_1, FT.MOSTLY_Q4_1),
    "q5_0": (QT.Q5_0, FT.MOSTLY_Q5_0),
    "q5_1": (QT.Q5_1, FT.MOSTLY_Q5_1),
    "mxfp4": (QT.MXFP4, FT.MOSTLY_MXFP4_MOE),
    # rows must be a multiple of 256 for these: only the llama256 model has them
    "q2_k": (QT.Q2_K, FT.MOSTLY_Q2_K),
    "q3_k": (QT.Q3_K, FT.MOSTLY_Q3_K_S),
    "q4_k": (QT.Q4_K, FT.MOSTLY_Q4_K_S),
    "q5_k": (QT.Q5_K, FT.MOSTLY_Q5_K_S),
    "q6_k": (QT.Q6_K, FT.MOSTLY_Q6_K),
    "tq1_0": (QT.TQ1_0, FT.MOSTLY_TQ1_0),
    "tq2_0": (QT.TQ2_0, FT.MOSTLY_TQ2_0),
}
DEFAULT_GGUF_TYPES = ["f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "mxfp4"]


def build_config(arch: str):
    spec = TINY_ARCHS[arch]
    kwargs = dict(COMMON)
    kwargs.update(spec["kwargs"])
    cfg = spec["config_cls"](**kwargs)
    cfg.architectures = [spec["model_cls"].__name__]
    cfg._attn_implementation = "eager"
    return cfg


def legacy_config_json(path: Path, arch: str) -> None:
    """Rewrite config.json in the transformers-4 form most Hub checkpoints still use (`rope_theta`
    and, for Gemma 3, `rope_local_base_freq` and `sliding_window_pattern` at the top level) instead
    of transformers 5's `rope_parameters`. Both forms load to the same model in transformers."""
    cfg = json.loads((path / "config.json").read_text())
    rope = cfg.pop("rope_parameters")
    if arch == "gemma3":
        cfg["rope_theta"] = rope["full_attention"]["rope_theta"]
        cfg["rope_local_base_freq"] = rope["sliding_attention"]["rope_theta"]
        cfg["sliding_window_pattern"] = 6
    else:
        cfg["rope_theta"] = rope["rope_theta"]
    cfg["rope_scaling"] = None
    (path / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def init_weights(model: torch.nn.Module, arch: str, seed: int) -> None:
    """Random normal weights large enough that logits and attention patterns are far from uniform."""
    gen = torch.Generator().manual_seed(seed)
    width = (64 / model.config.hidden_size) ** 0.5  # keep activations alike for wider models
    with torch.no_grad():
        for name, p in model.named_parameters():  # a tied lm_head is the embedding: listed once
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float32)
            if name.endswith("norm.weight"):
                # Gemma's RMSNorm scales by (1 + w): centre its weights on 0, the others on 1.
                value = (0.0 if arch == "gemma3" else 1.0) + 0.1 * noise
            elif name.endswith(".bias"):
                value = 0.1 * noise
            elif ".q_proj." in name or ".k_proj." in name:
                value = 0.15 * width * noise
            elif "embed_tokens" in name or "lm_head" in name:
                value = 0.1 * width * noise
            else:
                value = 0.06 * width * noise
            p.copy_(value)


def hf_logits(model: torch.nn.Module, tokens: list[int]) -> np.ndarray:
    model.eval()
    with torch.no_grad():
        out = model(input_ids=torch.tensor([tokens], dtype=torch.long), use_cache=False)
    return out.logits[0].to(torch.float32).numpy()


def load_hf_dir(path: Path) -> torch.nn.Module:
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="eager")


def write_f32(path: Path, arr: np.ndarray) -> None:
    np.ascontiguousarray(arr, dtype="<f4").tofile(path)


# ---- HF <-> GGUF tensor names and transforms --------------------------------------------------

def hf_to_gguf_name(name: str, arch: str) -> str | None:
    if name == "model.embed_tokens.weight":
        return "token_embd.weight"
    if name == "model.norm.weight":
        return "output_norm.weight"
    if name == "lm_head.weight":
        return "output.weight"
    parts = name.split(".")
    assert parts[0] == "model" and parts[1] == "layers", name
    bid, rest = parts[2], ".".join(parts[3:])
    leaf = {
        "input_layernorm.weight": "attn_norm.weight",
        "self_attn.q_proj.weight": "attn_q.weight",
        "self_attn.q_proj.bias": "attn_q.bias",
        "self_attn.k_proj.weight": "attn_k.weight",
        "self_attn.k_proj.bias": "attn_k.bias",
        "self_attn.v_proj.weight": "attn_v.weight",
        "self_attn.v_proj.bias": "attn_v.bias",
        "self_attn.o_proj.weight": "attn_output.weight",
        "self_attn.q_norm.weight": "attn_q_norm.weight",
        "self_attn.k_norm.weight": "attn_k_norm.weight",
        "mlp.gate_proj.weight": "ffn_gate.weight",
        "mlp.up_proj.weight": "ffn_up.weight",
        "mlp.down_proj.weight": "ffn_down.weight",
    }
    if arch == "gemma3":
        leaf.update({
            "post_attention_layernorm.weight": "post_attention_norm.weight",
            "pre_feedforward_layernorm.weight": "ffn_norm.weight",
            "post_feedforward_layernorm.weight": "post_ffw_norm.weight",
        })
    else:
        leaf["post_attention_layernorm.weight"] = "ffn_norm.weight"
    return f"blk.{bid}.{leaf[rest]}"


def permute_rotate_half_to_interleaved(w: np.ndarray, n_head: int) -> np.ndarray:
    """convert_hf_to_gguf's LlamaModel.permute: within each head, row i of the first half and row i
    of the second half become rows 2i and 2i+1."""
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def unpermute_interleaved_to_rotate_half(w: np.ndarray, n_head: int) -> np.ndarray:
    return (w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def gguf_tensors_from_hf(state: dict[str, torch.Tensor], arch: str, cfg) -> dict[str, np.ndarray]:
    spec = TINY_ARCHS[arch]
    out: dict[str, np.ndarray] = {}
    for name, t in state.items():
        if name == "lm_head.weight" and cfg.tie_word_embeddings:
            continue
        w = t.detach().to(torch.float32).numpy().copy()
        gname = hf_to_gguf_name(name, arch)
        if spec["permute_qk"] and gname.endswith("attn_q.weight"):
            w = permute_rotate_half_to_interleaved(w, cfg.num_attention_heads)
        elif spec["permute_qk"] and gname.endswith("attn_k.weight"):
            w = permute_rotate_half_to_interleaved(w, cfg.num_key_value_heads)
        if arch == "gemma3" and gname.endswith("norm.weight"):
            w = w + 1.0  # llama.cpp stores Gemma's (1 + w) RMSNorm weights pre-added
        out[gname] = w.astype(np.float32)
    return out


def hf_state_from_gguf(path: Path, arch: str, cfg) -> dict[str, torch.Tensor]:
    """Dequantize every tensor of a GGUF file and undo the converter's transforms."""
    spec = TINY_ARCHS[arch]
    reader = gguf.GGUFReader(path)
    inverse = {}
    for hf_name in build_model(arch, cfg).state_dict().keys():
        if hf_name == "lm_head.weight" and cfg.tie_word_embeddings:
            continue
        inverse[hf_to_gguf_name(hf_name, arch)] = hf_name
    state = {}
    for t in reader.tensors:
        w = np.array(gguf.quants.dequantize(t.data, t.tensor_type), dtype=np.float32)
        w = w.reshape([int(x) for x in reversed(t.shape)])
        if spec["permute_qk"] and t.name.endswith("attn_q.weight"):
            w = unpermute_interleaved_to_rotate_half(w, cfg.num_attention_heads)
        elif spec["permute_qk"] and t.name.endswith("attn_k.weight"):
            w = unpermute_interleaved_to_rotate_half(w, cfg.num_key_value_heads)
        if arch == "gemma3" and t.name.endswith("norm.weight"):
            w = w - 1.0
        state[inverse.pop(t.name)] = torch.from_numpy(w.copy())
    assert not inverse, f"tensors missing from {path}: {sorted(inverse)}"
    if cfg.tie_word_embeddings:
        state["lm_head.weight"] = state["model.embed_tokens.weight"]
    return state


def build_model(arch: str, cfg) -> torch.nn.Module:
    return TINY_ARCHS[arch]["model_cls"](copy.deepcopy(cfg))


def gguf_semantics_config(arch: str, cfg):
    """The config a llama.cpp-style reader of the GGUF file ends up with (it can differ from the HF
    config where GGUF has no key for a setting)."""
    g = copy.deepcopy(cfg)
    if arch == "gemma3":
        # llama.cpp: f_attention_scale = 1/sqrt(n_embd_head_k), or 1/sqrt(n_embd/n_head) for the
        # 62-layer 27B only.
        g.query_pre_attn_scalar = (g.hidden_size // g.num_attention_heads
                                   if g.num_hidden_layers == 62 else g.head_dim)
    return g


def write_gguf(path: Path, arch: str, cfg, tensors: dict[str, np.ndarray], variant: str,
               base_tok: Tokenizer) -> None:
    spec = TINY_ARCHS[arch]
    qtype, ftype = GGUF_TYPES[variant]
    garch = spec["gguf_arch"]
    w = gguf.GGUFWriter(path, garch)
    w.add_type(gguf.GGUFType.MODEL)
    w.add_name(f"tiny-{arch}")
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    if arch == "gemma3":
        w.add_rope_freq_base(cfg.rope_parameters["full_attention"]["rope_theta"])
    else:
        w.add_rope_freq_base(cfg.rope_parameters["rope_theta"])
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    if spec["gguf_head_dim_keys"]:
        w.add_key_length(cfg.head_dim)
        w.add_value_length(cfg.head_dim)
    if garch == "llama":
        w.add_vocab_size(cfg.vocab_size)
        w.add_rope_dimension_count(cfg.head_dim)
    if arch == "gemma3":
        w.add_sliding_window(cfg.sliding_window)
    if getattr(cfg, "sliding_window", None) and arch == "mistral":
        w.add_sliding_window(cfg.sliding_window)
    w.add_file_type(ftype)
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)

    # tokenizer, as convert_hf_to_gguf's _set_vocab_gpt2 + SpecialVocab write it
    vocab = base_tok.get_vocab()
    by_id = sorted(vocab.items(), key=lambda kv: kv[1])
    assert [i for _, i in by_id] == list(range(cfg.vocab_size))
    tokens = [s for s, _ in by_id]
    toktypes = [gguf.TokenType.CONTROL if i < len(SPECIAL_TOKENS) else gguf.TokenType.NORMAL
                for i in range(len(tokens))]
    merges = json.loads(base_tok.to_str())["model"]["merges"]
    merges = [m if isinstance(m, str) else " ".join(m) for m in merges]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(GGUF_PRE)
    w.add_token_list(tokens)
    w.add_token_types(toktypes)
    w.add_token_merges(merges)
    w.add_bos_token_id(BOS)
    w.add_eos_token_id(EOS)
    w.add_pad_token_id(PAD)
    w.add_add_bos_token(spec["add_bos"])
    w.add_add_eos_token(False)
    w.add_chat_template(CHAT_TEMPLATE)

    for name, arr in tensors.items():
        if arr.ndim < 2 or qtype == QT.F32:
            w.add_tensor(name, arr.astype(np.float32))  # norms and biases stay F32
        elif qtype == QT.F16:
            w.add_tensor(name, arr.astype(np.float16))
        else:
            w.add_tensor(name, quantize(arr, qtype), raw_dtype=qtype)

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def transformers_gguf_logits(dirpath: Path, fname: str, arch: str, cfg, tokens: list[int]):
    """Logits from transformers' own GGUF loader, with the config fields it gets wrong patched.

    Returns (logits, list of patched fields)."""
    gcfg = AutoConfig.from_pretrained(dirpath, gguf_file=fname)
    want = gguf_semantics_config(arch, cfg)
    patched = []
    for field in ("head_dim", "query_pre_attn_scalar", "sliding_window", "layer_types",
                  "num_key_value_heads", "tie_word_embeddings", "rms_norm_eps", "vocab_size"):
        have, need = getattr(gcfg, field, None), getattr(want, field, None)
        if isinstance(have, float) and isinstance(need, float) and math.isclose(have, need, rel_tol=1e-6):
            continue
        if hasattr(want, field) and have != need:
            patched.append(f"{field}: {getattr(gcfg, field, None)!r} -> {getattr(want, field)!r}")
            setattr(gcfg, field, getattr(want, field))
    if getattr(gcfg, "rope_parameters", None) != want.rope_parameters:
        patched.append(f"rope_parameters: {gcfg.rope_parameters!r} -> {want.rope_parameters!r}")
        gcfg.rope_parameters = copy.deepcopy(want.rope_parameters)
    model = AutoModelForCausalLM.from_pretrained(dirpath, gguf_file=fname, config=gcfg,
                                                 dtype=torch.float32, attn_implementation="eager")
    return hf_logits(model, tokens), patched, type(model).__name__


def llama_cpp_logits(path: Path, tokens: list[int]) -> np.ndarray | None:
    try:
        import llama_cpp
    except ImportError:
        return None
    # F32 K/V cache (llama.cpp's default is F16), so that the F32 file matches to float rounding
    llm = llama_cpp.Llama(str(path), n_ctx=64, n_batch=64, logits_all=True, verbose=False,
                          n_threads=2, seed=0, type_k=0, type_v=0, flash_attn=False, swa_full=True)
    try:
        llm.eval(tokens)
        return np.array(llm.scores[: len(tokens)], dtype=np.float32)
    finally:
        llm.close()


def make_hf_dirs(arch, spec, model, base_tok, tokens, body, out, variants, checks) -> None:
    cfg = model.config
    # ---- Hugging Face directories
    f32_dir, bf16_dir = out / "hf-f32", out / "hf-bf16"
    model.config.dtype = torch.float32
    save_kwargs = {"max_shard_size": spec["shard"]} if "shard" in spec else {}
    model.save_pretrained(f32_dir, **save_kwargs)
    bf16_model = copy.deepcopy(model).to(torch.bfloat16)
    bf16_model.config.dtype = torch.bfloat16
    bf16_model.save_pretrained(bf16_dir)
    for d in (f32_dir, bf16_dir):
        write_tokenizer_files(base_tok, d, spec["add_bos"], spec["eos"])
        if spec.get("legacy_config"):
            legacy_config_json(d, arch)

    # the tokenizer files must round-trip through transformers
    hf_tok = AutoTokenizer.from_pretrained(f32_dir)
    enc = hf_tok(REFERENCE_TEXT)["input_ids"]
    assert enc == ([BOS] if spec["add_bos"] else []) + body, (enc, body)
    chat = hf_tok.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False,
                                      add_generation_prompt=True)
    assert chat == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n", chat

    logits_f32 = hf_logits(load_hf_dir(f32_dir), tokens)
    assert np.abs(logits_f32 - hf_logits(model, tokens)).max() == 0.0
    write_f32(out / "logits-hf-f32.f32", logits_f32)
    variants["hf-f32"] = {"path": "hf-f32", "logits": "logits-hf-f32.f32"}
    logits_bf16 = hf_logits(load_hf_dir(bf16_dir), tokens)
    write_f32(out / "logits-hf-bf16.f32", logits_bf16)
    variants["hf-bf16"] = {"path": "hf-bf16", "logits": "logits-hf-bf16.f32",
                           "max_abs_diff_vs_f32": float(np.abs(logits_bf16 - logits_f32).max())}

    # a sanity check that the sliding window matters for gemma3 on these 24 tokens
    if arch == "gemma3":
        wide = copy.deepcopy(cfg)
        wide.sliding_window = 4096
        m2 = build_model(arch, wide)
        m2.load_state_dict(model.state_dict())
        d = np.abs(hf_logits(m2, tokens) - logits_f32).max(axis=-1)
        assert d[: cfg.sliding_window].max() < 1e-5 and d[cfg.sliding_window:].min() > 1e-4, d
        checks.setdefault(arch, {})["sliding_window_effect_max"] = float(d.max())


def make_tiny(arch: str, base_tok: Tokenizer, checks: dict) -> None:
    spec = TINY_ARCHS[arch]
    out = TINY_DIR / arch
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    cfg = build_config(arch)
    torch.manual_seed(spec["seed"])
    model = build_model(arch, cfg)
    init_weights(model, arch, spec["seed"])
    model.eval()

    tok = tokenizer_with_bos(base_tok, False)
    body = tok.encode(REFERENCE_TEXT).ids
    assert len(body) >= N_REF_TOKENS - 1, len(body)
    tokens = [BOS] + body[: N_REF_TOKENS - 1]

    variants = {}
    if not spec.get("gguf_only"):
        make_hf_dirs(arch, spec, model, base_tok, tokens, body, out, variants, checks)

    # ---- GGUF files
    gcfg = gguf_semantics_config(arch, cfg)
    tensors = gguf_tensors_from_hf(model.state_dict(), arch, cfg)
    ref_model = build_model(arch, gcfg)
    ref_model.load_state_dict(model.state_dict())
    logits_base = hf_logits(ref_model, tokens)  # the unquantized weights, read as GGUF reads them
    gguf_types = spec.get("gguf_types", DEFAULT_GGUF_TYPES)
    for variant in gguf_types:
        fname = f"model-{variant}.gguf"
        write_gguf(out / fname, arch, cfg, tensors, variant, base_tok)
        ref_model.load_state_dict(hf_state_from_gguf(out / fname, arch, gcfg), strict=True)
        logits = hf_logits(ref_model, tokens)
        lname = f"logits-gguf-{variant}.f32"
        write_f32(out / lname, logits)
        entry = {"path": fname, "logits": lname,
                 "weight_type": GGUF_TYPES[variant][0].name,
                 "max_abs_diff_vs_f32": float(np.abs(logits - logits_base).max())}
        variants[f"gguf-{variant}"] = entry

        # cross-checks (recorded in the report, not in the fixture)
        if variant == gguf_types[0]:
            want = ([BOS] if spec["add_bos"] else []) + body
            ll_tok = llama_cpp_tokenize(out / fname, REFERENCE_TEXT, spec["add_bos"])
            t_tok = AutoTokenizer.from_pretrained(out, gguf_file=fname)(REFERENCE_TEXT)["input_ids"]
            checks.setdefault(arch, {})["gguf_tokenizer"] = {
                "llama_cpp_matches": None if ll_tok is None else ll_tok == want,
                "transformers_gguf_matches": list(t_tok) == want,
            }
        c = checks.setdefault(arch, {}).setdefault(variant, {})
        try:
            tl, patched, cls = transformers_gguf_logits(out, fname, arch, cfg, tokens)
            c["transformers_gguf_loader_max_abs_diff"] = float(np.abs(tl - logits).max())
            c["transformers_gguf_loader_patched"] = patched
            c["transformers_gguf_loader_class"] = cls
        except Exception as e:  # noqa: BLE001 - report, don't fail
            c["transformers_gguf_loader_error"] = f"{type(e).__name__}: {e}"[:300]
        try:
            ll = llama_cpp_logits(out / fname, tokens)
            if ll is not None:
                c["llama_cpp_max_abs_diff"] = float(np.abs(ll - logits).max())
        except Exception as e:  # noqa: BLE001
            c["llama_cpp_error"] = f"{type(e).__name__}: {e}"[:300]

    if arch == "gemma3":
        logits_f32 = np.fromfile(out / "logits-hf-f32.f32", dtype="<f4").reshape(logits_base.shape)
        checks[arch]["hf_vs_gguf_f32_max_abs_diff (query_pre_attn_scalar 32 vs 16)"] = float(
            np.abs(logits_base - logits_f32).max())

    ref = {
        "arch": arch,
        "gguf_arch": spec["gguf_arch"],
        "hf_architecture": cfg.architectures[0],
        "tokens": tokens,
        "vocab_size": cfg.vocab_size,
        "n_tokens": len(tokens),
        "logits_format": "raw little-endian f32, row-major [n_tokens, vocab_size], all positions",
        "add_bos_token": spec["add_bos"],
        "hf_config_style": ("transformers-4 (rope_theta at top level)" if spec.get("legacy_config")
                            else "transformers-5 (rope_parameters)"),
        "seed": spec["seed"],
        "variants": variants,
    }
    if arch == "gemma3":
        ref["notes"] = (
            "hf-* use config.json's query_pre_attn_scalar=32 (head_dim 16). GGUF has no key for it "
            "and llama.cpp scales attention by 1/sqrt(head_dim) for every Gemma 3 but the 27B, so "
            "the gguf-* logits are those of the same weights with query_pre_attn_scalar=16. GGUF "
            "also carries no sliding-window pattern or local rope base: llama.cpp assumes five "
            "sliding layers then one global layer and 10000, which is what this model uses."
        )
        ref["gguf_query_pre_attn_scalar"] = gcfg.query_pre_attn_scalar
    if arch == "llama256":
        ref["notes"] = (
            "GGUF files only. gguf-py cannot encode K-quants, so the Q2_K..Q6_K blocks come from "
            "this script's own simple encoder (valid ggml layouts, not llama.cpp's quantizer "
            "choices); the logits are computed from what gguf-py's decoder reads back. TQ1_0 and "
            "TQ2_0 (ternary) come from gguf-py. Every 2-D weight, embedding and output included, "
            "has the file's type."
        )
    (out / "reference.json").write_text(json.dumps(ref, indent=2) + "\n")
    print(f"[tiny] {arch}: {len(variants)} variants")


# ----------------------------------------------------------------------------------------------
# Part B: the real models.
# ----------------------------------------------------------------------------------------------

REAL_MODELS = {
    "smollm2": "SmolLM2-135M-Instruct.Q4_1.gguf",
    "gemma3": "gemma-3-270m-q4_k_m.gguf",
}
GREEDY_PROMPTS = ["The capital of France is", "def fibonacci(n):", "Once upon a time"]
N_GREEDY = 16
SMOLLM_CHAT = [
    {"role": "system", "content": "You are a concise assistant who answers in one sentence."},
    {"role": "user", "content": "What is the tallest mountain in Europe?"},
]


def gguf_field(path: Path, key: str):
    reader = gguf.GGUFReader(path)
    f = reader.fields.get(key)
    return None if f is None else f.contents()


def encode_for_model(tok, text: str, add_bos: bool, bos_id: int) -> list[int]:
    ids = tok(text, add_special_tokens=False)["input_ids"]
    return ([bos_id] if add_bos else []) + list(ids)


def llama_cpp_tokenize(path: Path, text: str, add_bos: bool) -> list[int] | None:
    try:
        import llama_cpp
    except ImportError:
        return None
    llm = llama_cpp.Llama(str(path), n_ctx=16, vocab_only=True, verbose=False)
    try:
        return list(llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=False))
    finally:
        llm.close()


def make_real(key: str, checks: dict) -> None:
    fname = REAL_MODELS[key]
    path = MODELS_DIR / fname
    if not path.exists():
        sys.exit(f"{path} is missing: run scripts/fetch_models.sh first")
    add_bos = bool(gguf_field(path, "tokenizer.ggml.add_bos_token"))
    bos_id = int(gguf_field(path, "tokenizer.ggml.bos_token_id"))

    tok = AutoTokenizer.from_pretrained(MODELS_DIR, gguf_file=fname)
    model = AutoModelForCausalLM.from_pretrained(MODELS_DIR, gguf_file=fname, dtype=torch.float32,
                                                 attn_implementation="eager")
    model.eval()
    c = checks.setdefault(f"real-{key}", {})
    c["config"] = {k: getattr(model.config, k, None) for k in (
        "model_type", "num_hidden_layers", "hidden_size", "head_dim", "query_pre_attn_scalar",
        "sliding_window", "rope_parameters", "tie_word_embeddings", "vocab_size", "rms_norm_eps")}

    text = (REAL_DIR / "ppl.txt").read_text(encoding="utf-8")
    ids = encode_for_model(tok, text, add_bos, bos_id)
    ll_ids = llama_cpp_tokenize(path, text, add_bos)
    if ll_ids is not None:
        c["ppl_tokens_match_llama_cpp"] = ll_ids == ids
        if ll_ids != ids:
            first = next((i for i, (a, b) in enumerate(zip(ids, ll_ids)) if a != b),
                         min(len(ids), len(ll_ids)))
            c["ppl_tokens_first_mismatch"] = [first, ids[first:first + 5], ll_ids[first:first + 5]]

    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids]), use_cache=False).logits[0].float()
    logp = torch.log_softmax(logits[:-1], dim=-1)
    nll = -logp.gather(1, torch.tensor(ids[1:]).unsqueeze(1)).squeeze(1)
    mean_nll = float(nll.double().mean())
    ppl = math.exp(mean_nll)

    greedy = []
    for prompt in GREEDY_PROMPTS:
        p_ids = encode_for_model(tok, prompt, add_bos, bos_id)
        ll_p = llama_cpp_tokenize(path, prompt, add_bos)
        if ll_p is not None:
            c.setdefault("prompt_tokens_match_llama_cpp", []).append(ll_p == p_ids)
        seq = list(p_ids)
        gen, margins = [], []
        with torch.no_grad():
            for _ in range(N_GREEDY):  # full recomputation each step, no KV cache
                last = model(input_ids=torch.tensor([seq]), use_cache=False).logits[0, -1].float()
                top2 = torch.topk(last, 2)
                gen.append(int(top2.indices[0]))
                margins.append(float(top2.values[0] - top2.values[1]))
                seq.append(gen[-1])
        greedy.append({"prompt": prompt, "prompt_tokens": p_ids, "tokens": gen,
                       "top2_margins": margins, "text": tok.decode(gen)})

    result = {
        "model_file": fname,
        "add_bos_token": add_bos,
        "n_ppl_tokens": len(ids),
        "ppl_tokens": ids,
        "ppl": ppl,
        "mean_nll": mean_nll,
        "ppl_definition": "exp(mean over i>=1 of -log softmax(logits[i-1])[tokens[i]]), one sequence",
        "greedy_stop_on_eos": False,
        "greedy": greedy,
    }
    if key == "smollm2":
        chat_text = tok.apply_chat_template(SMOLLM_CHAT, tokenize=False, add_generation_prompt=True)
        result["chat_messages"] = SMOLLM_CHAT
        result["chat_prompt_text"] = chat_text
        result["chat_prompt_tokens"] = list(tok(chat_text, add_special_tokens=False)["input_ids"])
    (REAL_DIR / f"{key}.json").write_text(json.dumps(result, indent=2) + "\n")
    c["ppl"] = ppl
    print(f"[real] {key}: ppl {ppl:.3f} over {len(ids)} tokens")

    # llama.cpp's own perplexity on the same ids, as a cross-check
    try:
        import llama_cpp
        llm = llama_cpp.Llama(str(path), n_ctx=len(ids) + 8, n_batch=len(ids) + 8, logits_all=True,
                              verbose=False, n_threads=2, seed=0)
        llm.eval(ids)
        sc = torch.tensor(np.array(llm.scores[: len(ids)], dtype=np.float32))
        llm.close()
        lnll = -torch.log_softmax(sc[:-1], -1).gather(1, torch.tensor(ids[1:]).unsqueeze(1))
        c["llama_cpp_ppl"] = math.exp(float(lnll.double().mean()))
    except ImportError:
        pass


# ----------------------------------------------------------------------------------------------

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--part", choices=["tiny", "real", "all"], default="all")
    ap.add_argument("--arch", action="append", help="only these tiny architectures")
    ap.add_argument("--checks", type=Path, help="write the cross-check results here as JSON")
    args = ap.parse_args()
    checks: dict = {"versions": {"torch": torch.__version__, "transformers": transformers.__version__}}
    if args.part in ("tiny", "all"):
        base_tok = train_tokenizer()
        for arch in args.arch or list(TINY_ARCHS):
            make_tiny(arch, base_tok, checks)
    if args.part in ("real", "all"):
        REAL_DIR.mkdir(parents=True, exist_ok=True)
        for key in REAL_MODELS:
            make_real(key, checks)
    text = json.dumps(checks, indent=2, default=str)
    if args.checks:
        args.checks.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
