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

use std::any::Any;

use crate::backend::cpu::ops::SeqSpan;
use crate::backend::cpu::{step::Scratch, Cpu};
use crate::backend::device::{self, Chosen, Device};
use crate::backend::{Backend, RowBias, StepRows};
use crate::error::{Error, Result};
use crate::loader::gguf::GgufFile;
use crate::loader::{mlx, safetensors};
use config::{Arch, ModelConfig};
use kv_cache::PagedKv;
use weights::Weights;

/// The file format a model came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Gguf,
    /// A Hugging Face folder of float safetensors.
    Safetensors,
    /// A Hugging Face folder quantized by MLX (config.json `quantization`).
    Mlx,
}

/// Which positions' logits a forward call returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Logits {
    /// None (a prefill chunk that is not the prompt's last).
    None,
    /// Only the last token's (generation).
    Last,
    /// Every token's (perplexity, prompt log-probabilities).
    All,
}

/// An architecture's network with its weights on backend `B`.
enum Net<B: Backend> {
    Llama(llama::Llama<B>),
    Gemma3(gemma3::Gemma3<B>),
}

impl<B: Backend> Net<B> {
    fn load(be: &B, c: &ModelConfig, w: &Weights, norm_offset: f32) -> Result<Net<B>> {
        Ok(match c.arch {
            Arch::Llama | Arch::Mistral | Arch::Qwen2 | Arch::Qwen3 => {
                Net::Llama(llama::Llama::load(be, w, c)?)
            }
            Arch::Gemma3 => Net::Gemma3(gemma3::Gemma3::load(be, w, c, norm_offset)?),
        })
    }

    /// One step: the layers, then the wanted rows' logits, or with `greedy` each wanted row's greedy token
    /// (into its vector; the logits returned are then empty).
    #[allow(clippy::too_many_arguments)]
    fn run<'s>(
        &self,
        be: &B,
        c: &ModelConfig,
        s: &'s mut B::Step,
        kv: &mut B::Kv,
        rows: &StepRows,
        inv_freq: (&[f32], &[f32]),
        greedy: Option<(&RowBias, &mut Vec<u32>)>,
    ) -> Result<&'s [f32]> {
        be.begin(s, c, rows, inv_freq)?;
        be.run_step(s, kv, rows, &mut |s, kv| match self {
            Net::Llama(m) => {
                m.forward(be, c, s, kv, rows);
                m.project(be, s, rows)
            }
            Net::Gemma3(m) => {
                m.forward(be, c, s, kv, rows);
                m.project(be, c, s, rows)
            }
        })?;
        match greedy {
            Some((bias, out)) => {
                be.greedy(s, rows, bias, out)?;
                Ok(&[])
            }
            None => be.logits(s, rows),
        }
    }
}

/// The network on the device that runs it.
#[allow(clippy::large_enum_variant)]
enum Exec {
    Cpu(Net<Cpu>),
    #[cfg(feature = "cuda")]
    Cuda(Box<(crate::backend::cuda::Cuda, Net<crate::backend::cuda::Cuda>)>),
    // (Boxed: the CPU variant is the common one and stays inline.)
}

/// How to open a model: on which device, and who hears about weight upload progress.
#[derive(Default)]
pub struct OpenOptions {
    pub device: Device,
    /// Called with (bytes uploaded, bytes in all) while weights go to a GPU.
    pub progress: Option<std::sync::Arc<dyn Fn(usize, usize) + Send + Sync>>,
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
    /// The device the model runs on and why it was chosen.
    pub device: Chosen,
    exec: Exec,
    inv_freq_global: Vec<f32>,
    inv_freq_local: Vec<f32>,
}

/// Prompt tokens per forward call on a GPU (see [`Model::prefill_chunk`]).
pub const GPU_PREFILL_CHUNK: usize = 2048;

/// Positions per KV block of a single-sequence [`State`].
const STATE_BLOCK: usize = 256;

/// One sequence's state: its KV cache (blocks 0, 1, 2, ... of its own storage) and scratch buffers.
pub struct State {
    kv: PagedKv,
    table: Vec<u32>,
    len: usize,
    batch: Batch,
}

impl State {
    /// Tokens processed so far (the next token's position).
    pub fn pos(&self) -> usize {
        self.len
    }
    /// Forgets everything after the first `len` tokens.
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }
    /// Bytes of KV cache held.
    pub fn kv_bytes(&self) -> usize {
        self.kv.bytes()
    }
}

/// Scratch for batched steps of up to `max_tokens` rows (all sequences of a step together): the rows' layout
/// on the host, and the backend's activations (made at the first step, on the model's device).
pub struct Batch {
    max_tokens: usize,
    /// Every sequence's tokens of the step, concatenated.
    flat: Vec<u32>,
    token_seq: Vec<u32>,   // [n] which sequence of the batch each row belongs to
    positions: Vec<usize>, // [n] each row's position in its sequence
    out_rows: Vec<usize>,  // rows whose logits are wanted
    /// The allocation behind each step's list of sequence spans, kept empty between steps so a decode step
    /// allocates nothing (see [`recycle`]).
    spans: Vec<SeqSpan<'static>>,
    /// The backend's step buffers (`Backend::Step`), made by the model at the first step.
    step: Option<Box<dyn Any + Send>>,
}

/// Turns an emptied vector into an empty one of another element lifetime, keeping its allocation. The
/// standard library collects a `vec::IntoIter` into a vector of a same-sized type in place, so no memory
/// moves; with no elements, no reference of the old lifetime survives.
fn recycle<'a, 'b>(mut v: Vec<SeqSpan<'a>>) -> Vec<SeqSpan<'b>> {
    v.clear();
    v.into_iter()
        .map(|_| unreachable!("the vector is empty"))
        .collect()
}

impl Batch {
    /// Most rows one step may hold.
    pub fn max_tokens(&self) -> usize {
        self.max_tokens
    }
}

/// One sequence's part of a batched step.
pub struct SeqInput<'a> {
    /// Tokens to run, at positions `start..start + tokens.len()`.
    pub tokens: &'a [u32],
    pub start: usize,
    /// The sequence's block table; must cover every position up to `start + tokens.len()`.
    pub table: &'a [u32],
    pub logits: Logits,
}

impl Model {
    /// Opens a GGUF file or Hugging Face folder on the CPU; validates every tensor the architecture needs.
    pub fn open(path: &Path) -> Result<Model> {
        Self::open_with(path, &OpenOptions::default_cpu())
    }

    /// Opens a model on the device `opts` asks for (`Device::Auto`: a CUDA GPU when present, else the CPU).
    pub fn open_with(path: &Path, opts: &OpenOptions) -> Result<Model> {
        let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
        if meta.is_dir() {
            return Self::open_hf(path, opts);
        }
        if path
            .extension()
            .is_some_and(|e| e == "safetensors" || e == "json")
        {
            if let Some(dir) = path.parent() {
                return Self::open_hf(dir, opts);
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
        Self::build(config, weights, Format::Gguf, path, Some(g), 0.0, opts)
    }

    fn open_hf(dir: &Path, opts: &OpenOptions) -> Result<Model> {
        let cfg_path = dir.join("config.json");
        let text = std::fs::read_to_string(&cfg_path).map_err(|e| Error::io(&cfg_path, e))?;
        let root: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| Error::format(&cfg_path, format!("not valid JSON: {e}")))?;
        let config = ModelConfig::from_hf_config(&cfg_path, &root)?;
        let files = safetensors::open_folder(dir)?;
        let quant = mlx::QuantConfig::from_config(&cfg_path, &root)?;
        let format = if quant.is_some() {
            Format::Mlx
        } else {
            Format::Safetensors
        };
        let (all, leftover) = match quant {
            Some(q) => mlx::combine(dir, &q, files)?,
            None => {
                let mut all = Vec::new();
                let mut leftover = Vec::new();
                for f in files {
                    all.extend(f.tensors);
                    leftover.extend(f.unsupported);
                }
                let names = all
                    .iter()
                    .map(|t| &t.name)
                    .chain(leftover.iter().map(|l| &l.0));
                if let Some(n) = names.into_iter().find(|n| n.ends_with(".scales")) {
                    return Err(Error::tensor(
                        dir,
                        n,
                        "looks MLX-quantized, but config.json has no `quantization` section",
                    ));
                }
                (all, leftover)
            }
        };
        let mut tensors = HashMap::new();
        let mut unsupported = HashMap::new();
        for mut t in all {
            if let Some(name) = weights::hf_to_gguf_name(config.arch, &t.name) {
                t.name = name.clone();
                tensors.insert(name, t);
            }
        }
        for (n, ty) in leftover {
            if let Some(name) = weights::hf_to_gguf_name(config.arch, &n) {
                unsupported.insert(name, ty);
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
        Self::build(config, weights, format, dir, None, offset, opts)
    }

    #[allow(clippy::too_many_arguments)]
    fn build(
        config: ModelConfig,
        weights: Weights,
        format: Format,
        path: &Path,
        gguf: Option<GgufFile>,
        norm_offset: f32,
        opts: &OpenOptions,
    ) -> Result<Model> {
        let chosen = device::choose(opts.device)?;
        let exec = match chosen.device {
            #[cfg(feature = "cuda")]
            Device::Cuda(n) => {
                let mut be =
                    crate::backend::cuda::Cuda::open(n, &config, &weights, opts.progress.clone())?;
                let net = Net::load(&be, &config, &weights, norm_offset)?;
                be.finish_upload()?;
                Exec::Cuda(Box::new((be, net)))
            }
            _ => Exec::Cpu(Net::load(&Cpu, &config, &weights, norm_offset)?),
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
            device: chosen,
            exec,
        })
    }

    /// Tokens a prompt is fed in at once: 128 on the CPU (activations stay in cache), 2048 on a GPU (large
    /// GEMMs keep the tensor cores busy).
    pub fn prefill_chunk(&self) -> usize {
        match &self.exec {
            Exec::Cpu(_) => crate::generate::PREFILL_CHUNK,
            #[cfg(feature = "cuda")]
            Exec::Cuda(_) => GPU_PREFILL_CHUNK,
        }
    }

    /// A fresh sequence state whose forward calls take up to `max_tokens` tokens at once (prefill chunk size).
    pub fn new_state(&self, max_tokens: usize) -> State {
        let c = &self.config;
        let kv = match &self.exec {
            Exec::Cpu(_) => PagedKv::new(c.n_layers, c.n_kv_heads * c.head_dim, STATE_BLOCK, 0),
            // Nothing is allocated until the first forward call grows it.
            #[cfg(feature = "cuda")]
            Exec::Cuda(b) => b.0.empty_kv(c, STATE_BLOCK),
        };
        State {
            kv,
            table: Vec::new(),
            len: 0,
            batch: self.new_batch(max_tokens),
        }
    }

    /// Paged KV storage for this model on its device: `n_blocks` blocks of `block_size` positions. Fails when
    /// the device cannot hold them.
    pub fn new_kv(&self, block_size: usize, n_blocks: usize) -> Result<PagedKv> {
        let c = &self.config;
        let kv_dim = c.n_kv_heads * c.head_dim;
        match &self.exec {
            Exec::Cpu(_) => Ok(PagedKv::new(c.n_layers, kv_dim, block_size, n_blocks)),
            #[cfg(feature = "cuda")]
            Exec::Cuda(b) => b.0.new_kv(c, block_size, n_blocks),
        }
    }

    /// Scratch for batched steps of up to `max_tokens` rows (device buffers are made at the first step).
    pub fn new_batch(&self, max_tokens: usize) -> Batch {
        let n = max_tokens.max(1);
        Batch {
            max_tokens: n,
            flat: Vec::with_capacity(n),
            token_seq: Vec::with_capacity(n),
            positions: Vec::with_capacity(n),
            out_rows: Vec::with_capacity(n),
            spans: Vec::with_capacity(8),
            step: None,
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
        let end = st.len + tokens.len();
        if end > c.context_len {
            return Err(Error::BadRequest(format!(
                "{end} tokens exceed the model's context of {} tokens",
                c.context_len
            )));
        }
        let chunk = st.batch.max_tokens();
        if want == Logits::All && tokens.len() > chunk {
            return Err(Error::BadRequest(format!(
                "all-position logits for {} tokens at once exceed the state's chunk of {chunk}",
                tokens.len()
            )));
        }
        let blocks = end.div_ceil(STATE_BLOCK);
        st.kv.grow(blocks)?;
        while st.table.len() < blocks {
            st.table.push(st.table.len() as u32);
        }
        // Every chunk but the last wants no logits; the last one's are returned.
        let last_start = (tokens.len() - 1) / chunk * chunk;
        let (head, last) = tokens.split_at(last_start);
        for piece in head.chunks(chunk) {
            let seq = SeqInput {
                tokens: piece,
                start: st.len,
                table: &st.table,
                logits: Logits::None,
            };
            self.forward_batch(&mut st.batch, &mut st.kv, &[seq])?;
            st.len += piece.len();
        }
        let seq = SeqInput {
            tokens: last,
            start: st.len,
            table: &st.table,
            logits: want,
        };
        let logits = self.forward_batch(&mut st.batch, &mut st.kv, &[seq])?;
        st.len += last.len();
        Ok(logits)
    }

    /// Runs one step over several sequences at once: every row goes through each weight matrix in one
    /// matmul, and attention reads each sequence's own blocks. Returns the wanted logits, `[rows, vocab]`,
    /// in the order of `seqs` (each sequence's rows as its `logits` asks).
    pub fn forward_batch<'s>(
        &self,
        b: &'s mut Batch,
        kv: &mut PagedKv,
        seqs: &[SeqInput],
    ) -> Result<&'s [f32]> {
        self.step_batch(b, kv, seqs, None)
    }

    /// [`Model::forward_batch`] for a step whose every wanted row is sampled greedily: `out` gets each
    /// row's token, `argmax_biased` of its logits with `bias.row(r)` (what [`crate::sample::Sampler`]
    /// picks when [`crate::sample::Sampler::greedy_bias`] says so). On a GPU only the ids cross to the host.
    pub fn forward_batch_greedy(
        &self,
        b: &mut Batch,
        kv: &mut PagedKv,
        seqs: &[SeqInput],
        bias: &RowBias,
        out: &mut Vec<u32>,
    ) -> Result<()> {
        self.step_batch(b, kv, seqs, Some((bias, out)))?;
        Ok(())
    }

    fn step_batch<'s>(
        &self,
        b: &'s mut Batch,
        kv: &mut PagedKv,
        seqs: &[SeqInput],
        greedy: Option<(&RowBias, &mut Vec<u32>)>,
    ) -> Result<&'s [f32]> {
        let c = &self.config;
        let n: usize = seqs.iter().map(|s| s.tokens.len()).sum();
        if n == 0 {
            return Err(Error::BadRequest("no tokens to run".into()));
        }
        if n > b.max_tokens() {
            return Err(Error::BadRequest(format!(
                "{n} tokens in one step exceed the batch's {}",
                b.max_tokens()
            )));
        }
        for sq in seqs {
            if let Some(&bad) = sq.tokens.iter().find(|&&t| t as usize >= c.vocab) {
                return Err(Error::BadRequest(format!(
                    "token id {bad} is outside the vocabulary of {}",
                    c.vocab
                )));
            }
            let end = sq.start + sq.tokens.len();
            if end > c.context_len {
                return Err(Error::BadRequest(format!(
                    "{end} tokens exceed the model's context of {} tokens",
                    c.context_len
                )));
            }
            let need = end.div_ceil(kv.block_size);
            if sq.table.len() < need
                || sq.table[..need]
                    .iter()
                    .any(|&blk| blk as usize >= kv.n_blocks())
            {
                return Err(Error::Other(format!(
                    "block table of {} blocks does not cover {end} positions",
                    sq.table.len()
                )));
            }
        }
        b.token_seq.clear();
        b.positions.clear();
        b.out_rows.clear();
        b.flat.clear();
        let mut spans = recycle(std::mem::take(&mut b.spans));
        for (i, sq) in seqs.iter().enumerate() {
            b.flat.extend_from_slice(sq.tokens);
            let first = b.token_seq.len();
            for t in 0..sq.tokens.len() {
                b.token_seq.push(i as u32);
                b.positions.push(sq.start + t);
            }
            let last = b.token_seq.len();
            spans.push(SeqSpan {
                tokens: first..last,
                start: sq.start,
                table: sq.table,
            });
            match sq.logits {
                Logits::None => {}
                Logits::Last => b.out_rows.push(last - 1),
                Logits::All => b.out_rows.extend(first..last),
            }
        }
        let rows = StepRows {
            tokens: &b.flat,
            token_seq: &b.token_seq,
            positions: &b.positions,
            seqs: &spans,
            out_rows: &b.out_rows,
        };
        let inv = (&self.inv_freq_global[..], &self.inv_freq_local[..]);
        let out = match &self.exec {
            Exec::Cpu(net) => {
                let step = step_of(&mut b.step, || Ok(Scratch::new(c, b.max_tokens)))?;
                let kv = kv.storage_mut().ok_or_else(other_device)?;
                net.run(&Cpu, c, step, kv, &rows, inv, greedy)
            }
            #[cfg(feature = "cuda")]
            Exec::Cuda(bn) => {
                let (be, net) = &**bn;
                let step = step_of(&mut b.step, || be.new_step(c, b.max_tokens))?;
                let kv = kv.storage_mut().ok_or_else(other_device)?;
                net.run(be, c, step, kv, &rows, inv, greedy)
            }
        };
        b.spans = recycle(spans);
        out
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

/// The backend step buffers of a batch, made on first use; a batch made by a model on another device is an
/// error, not a panic.
fn step_of<T: Send + 'static>(
    slot: &mut Option<Box<dyn Any + Send>>,
    make: impl FnOnce() -> Result<T>,
) -> Result<&mut T> {
    if slot.is_none() {
        *slot = Some(Box::new(make()?));
    }
    slot.as_mut()
        .and_then(|b| b.downcast_mut::<T>())
        .ok_or_else(|| Error::Other("this batch belongs to a model on another device".into()))
}

fn other_device() -> Error {
    Error::Other("this KV cache belongs to a model on another device".into())
}

impl OpenOptions {
    /// The CPU, no progress reports (what [`Model::open`] uses: the tests' reference path).
    pub fn default_cpu() -> OpenOptions {
        OpenOptions {
            device: Device::Cpu,
            progress: None,
        }
    }
}
