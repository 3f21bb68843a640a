//! Loaded models: a file opened into a config, its weights and the architecture's forward pass.
//!
//! `Model::open` accepts a GGUF file, a Hugging Face folder (config.json + safetensors), or a `.safetensors`
//! file inside such a folder. `Model::new_state` makes a sequence's KV cache and scratch; `Model::forward`
//! runs tokens through and returns logits.

pub mod config;
pub mod gemma3;
pub mod kv_cache;
pub mod layers;
pub mod llama;
pub mod weights;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::loader::gguf::GgufFile;
use crate::loader::safetensors;
use config::{Arch, ModelConfig};
use kv_cache::KvCache;
use layers::Scratch;
use weights::Weights;

/// The file format a model came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Gguf,
    Safetensors,
}

/// Which positions' logits a forward call returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Logits {
    /// Only the last token's (generation).
    Last,
    /// Every token's (perplexity, prompt log-probabilities).
    All,
}

enum Net {
    Llama(llama::Llama),
    Gemma3(gemma3::Gemma3),
}

/// A model ready to run.
pub struct Model {
    pub config: ModelConfig,
    pub weights: Weights,
    pub format: Format,
    /// The GGUF file or the Hugging Face folder.
    pub path: PathBuf,
    /// The parsed GGUF (its metadata holds the tokenizer and chat template), when the model is one.
    pub gguf: Option<GgufFile>,
    net: Net,
    inv_freq_global: Vec<f32>,
    inv_freq_local: Vec<f32>,
}

/// One sequence's state: its KV cache and scratch buffers.
pub struct State {
    pub kv: KvCache,
    scratch: Scratch,
}

impl State {
    /// Tokens processed so far (the next token's position).
    pub fn pos(&self) -> usize {
        self.kv.len
    }
    /// Forgets everything after the first `len` tokens.
    pub fn truncate(&mut self, len: usize) {
        self.kv.truncate(len)
    }
}

impl Model {
    /// Opens a GGUF file or Hugging Face folder; validates every tensor the architecture needs.
    pub fn open(path: &Path) -> Result<Model> {
        let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
        if meta.is_dir() {
            return Self::open_hf(path);
        }
        if path
            .extension()
            .is_some_and(|e| e == "safetensors" || e == "json")
        {
            if let Some(dir) = path.parent() {
                return Self::open_hf(dir);
            }
        }
        let g = GgufFile::open(path)?;
        let config = ModelConfig::from_gguf(&g)?;
        let weights = Weights {
            path: path.to_path_buf(),
            tensors: g
                .tensors
                .iter()
                .map(|t| (t.name.clone(), t.clone()))
                .collect(),
            unsupported: g.unsupported.iter().cloned().collect(),
        };
        Self::build(config, weights, Format::Gguf, path, Some(g), 0.0)
    }

    fn open_hf(dir: &Path) -> Result<Model> {
        let cfg_path = dir.join("config.json");
        let text = std::fs::read_to_string(&cfg_path).map_err(|e| Error::io(&cfg_path, e))?;
        let root: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| Error::format(&cfg_path, format!("not valid JSON: {e}")))?;
        let config = ModelConfig::from_hf_config(&cfg_path, &root)?;
        let files = safetensors::open_folder(dir)?;
        let mut tensors = HashMap::new();
        let mut unsupported = HashMap::new();
        for f in files {
            for mut t in f.tensors {
                if let Some(name) = weights::hf_to_gguf_name(config.arch, &t.name) {
                    t.name = name.clone();
                    tensors.insert(name, t);
                }
            }
            for (n, ty) in f.unsupported {
                if let Some(name) = weights::hf_to_gguf_name(config.arch, &n) {
                    unsupported.insert(name, ty);
                }
            }
        }
        let weights = Weights {
            path: dir.to_path_buf(),
            tensors,
            unsupported,
        };
        // Gemma's Hugging Face norm gains mean 1 + w.
        let offset = if config.arch == Arch::Gemma3 {
            1.0
        } else {
            0.0
        };
        Self::build(config, weights, Format::Safetensors, dir, None, offset)
    }

    fn build(
        config: ModelConfig,
        weights: Weights,
        format: Format,
        path: &Path,
        gguf: Option<GgufFile>,
        norm_offset: f32,
    ) -> Result<Model> {
        let net = match config.arch {
            Arch::Llama | Arch::Mistral | Arch::Qwen2 | Arch::Qwen3 => {
                Net::Llama(llama::Llama::load(&weights, &config)?)
            }
            Arch::Gemma3 => Net::Gemma3(gemma3::Gemma3::load(&weights, &config, norm_offset)?),
        };
        let mut inv_freq_global = config.rope_inv_freq(false);
        // Llama 3 GGUFs carry their rope scaling as per-frequency divisors.
        if let Some(t) = weights.opt_shaped("rope_freqs.weight", &[config.rope_dim / 2])? {
            for (f, d) in inv_freq_global.iter_mut().zip(t.to_f32()) {
                *f /= d;
            }
        }
        Ok(Model {
            inv_freq_local: config.rope_inv_freq(true),
            inv_freq_global,
            config,
            weights,
            format,
            path: path.to_path_buf(),
            gguf,
            net,
        })
    }

    /// A fresh sequence state whose forward calls take up to `max_tokens` tokens at once (prefill chunk size).
    pub fn new_state(&self, max_tokens: usize) -> State {
        let c = &self.config;
        State {
            kv: KvCache::new(c.n_layers, c.n_kv_heads * c.head_dim, c.context_len),
            scratch: Scratch::new(c, max_tokens.max(1)),
        }
    }

    /// Appends `tokens` to the sequence and returns logits: `[vocab]` for `Logits::Last`, `[n, vocab]` for
    /// `Logits::All`. Longer inputs than the state's chunk size run in chunks (only with `Logits::Last`).
    pub fn forward<'s>(
        &self,
        st: &'s mut State,
        tokens: &[u32],
        want: Logits,
    ) -> Result<&'s [f32]> {
        let c = &self.config;
        if tokens.is_empty() {
            return Err(Error::BadRequest("no tokens to run".into()));
        }
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= c.vocab) {
            return Err(Error::BadRequest(format!(
                "token id {bad} is outside the vocabulary of {}",
                c.vocab
            )));
        }
        let end = st.kv.len + tokens.len();
        if end > c.context_len {
            return Err(Error::BadRequest(format!(
                "{end} tokens exceed the model's context of {} tokens",
                c.context_len
            )));
        }
        let chunk = st.scratch.max_tokens;
        if want == Logits::All && tokens.len() > chunk {
            return Err(Error::BadRequest(format!(
                "all-position logits for {} tokens at once exceed the state's chunk of {chunk}",
                tokens.len()
            )));
        }
        st.kv.reserve(end);
        let mut last_n = 0;
        for piece in tokens.chunks(chunk) {
            let start = st.kv.len;
            let n = piece.len();
            st.scratch
                .fill_rope(c, &self.inv_freq_global, &self.inv_freq_local, start, n);
            match &self.net {
                Net::Llama(m) => m.forward(c, &mut st.scratch, &mut st.kv, piece, start),
                Net::Gemma3(m) => m.forward(c, &mut st.scratch, &mut st.kv, piece, start),
            }
            st.kv.len = start + n;
            last_n = n;
        }
        let h = c.hidden;
        let (rows, from) = match want {
            Logits::Last => (1, last_n - 1),
            Logits::All => (last_n, 0),
        };
        let s = &mut st.scratch;
        s.logits.resize(rows * c.vocab, 0.0);
        let xb = &s.xb[from * h..(from + rows) * h];
        match &self.net {
            Net::Llama(m) => m.output(xb, rows, &mut s.logits),
            Net::Gemma3(m) => m.output(c, xb, rows, &mut s.logits),
        }
        Ok(&st.scratch.logits)
    }

    /// Total parameter count (elements of every tensor).
    pub fn n_params(&self) -> usize {
        self.weights.tensors.values().map(|t| t.numel()).sum()
    }

    /// Bytes read from weights per decoded token: every tensor once (the embedding table only for one row
    /// unless it doubles as the output matrix).
    pub fn bytes_per_token(&self) -> usize {
        let tied = !self.weights.tensors.contains_key("output.weight");
        self.weights
            .tensors
            .values()
            .map(|t| {
                if t.name == "token_embd.weight" && !tied {
                    t.row_bytes()
                } else {
                    t.bytes().len()
                }
            })
            .sum()
    }
}
