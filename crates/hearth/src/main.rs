//! The `hearth` command line: run, perplexity, info, bench and convert over the engine, in-process.
//!
//! stdout carries only generated text (or, for info/perplexity/bench, the report); progress, timings and errors
//! go to stderr. Errors exit with status 1 and never panic.

mod bench;
mod convert;
mod progress;
mod serve;

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use hearth_engine::generate::{GenerateOptions, Session};
use hearth_engine::models::Model;
use hearth_engine::sample::SamplingParams;
use hearth_engine::tokenizer::{ChatMessage, Tokenizer};

#[derive(Parser)]
#[command(
    name = "hearth",
    version,
    about = "Run local LLMs: GGUF, Hugging Face safetensors and MLX models on CPU and NVIDIA GPUs"
)]
struct Cli {
    /// Worker threads for the kernels (default: every core).
    #[arg(long, global = true)]
    threads: Option<usize>,
    /// How activations meet block-quantized weights. `q8` (default, as llama.cpp does): each token's
    /// activations are quantized to 8 bits and multiplied with integer dot products; perplexity moves by
    /// under 0.5% on the test models. `f32`: weights are decoded to f32 and activations stay f32, matching a
    /// float reference to rounding (slower).
    #[arg(long, global = true, env = "HEARTH_ACTIVATIONS", value_enum, default_value_t = Activations::Q8)]
    activations: Activations,
    /// Where models run: `auto` (a CUDA GPU when one is usable, else the CPU; the choice is logged), `cpu`,
    /// `cuda` or `cuda:N`.
    #[arg(long, global = true, env = "HEARTH_DEVICE", default_value = "auto")]
    device: hearth_engine::backend::Device,
    #[command(subcommand)]
    cmd: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Activations {
    Q8,
    F32,
}

#[derive(Subcommand)]
enum Command {
    /// Generate text: a chat answer (the model's chat template applied) or, with --raw, a plain completion.
    /// Without a prompt, an interactive chat that keeps the conversation.
    Run(RunArgs),
    /// Perplexity of a text file, scored as one sequence.
    Perplexity {
        #[arg(long)]
        model: PathBuf,
        /// The text to score.
        #[arg(long)]
        file: PathBuf,
    },
    /// Architecture, parameter count, bytes per weight type, context length and chat template of a model.
    Info {
        #[arg(long)]
        model: PathBuf,
    },
    /// Prefill and decode speed, measured memory bandwidth and the decode roofline.
    Bench(bench::BenchArgs),
    /// Serve models over OpenAI- and Anthropic-compatible HTTP APIs.
    Serve(serve::ServeArgs),
    /// Convert a model: Hugging Face folder or GGUF file to an MLX folder (quantized with -q), GGUF file or MLX
    /// folder to a Hugging Face folder, Hugging Face or MLX folder to GGUF.
    Convert(convert::ConvertArgs),
}

#[derive(Args)]
struct RunArgs {
    #[arg(long)]
    model: PathBuf,
    /// The prompt; omit it for an interactive chat.
    prompt: Option<String>,
    /// Plain completion of the prompt text, no chat template.
    #[arg(long)]
    raw: bool,
    /// A system message for chat mode.
    #[arg(long)]
    system: Option<String>,
    /// 0 = greedy.
    #[arg(long, default_value_t = 0.8)]
    temperature: f32,
    #[arg(long, default_value_t = 0.95)]
    top_p: f32,
    /// 0 = off.
    #[arg(long, default_value_t = 40)]
    top_k: usize,
    #[arg(long, default_value_t = 0.05)]
    min_p: f32,
    #[arg(long, default_value_t = 1.0)]
    repeat_penalty: f32,
    #[arg(long)]
    seed: Option<u64>,
    /// Most tokens to generate (default: until end of sequence or the context is full).
    #[arg(long)]
    max_tokens: Option<usize>,
    /// Stop when this text appears (repeatable).
    #[arg(long)]
    stop: Vec<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(n) = cli.threads {
        hearth_engine::backend::cpu::pool::set_threads(n.max(1));
        if let Err(e) = rayon::ThreadPoolBuilder::new()
            .num_threads(n.max(1))
            .build_global()
        {
            eprintln!("error: cannot start {n} threads: {e}");
            return ExitCode::FAILURE;
        }
    }
    hearth_engine::backend::cpu::set_quantized_activations(cli.activations == Activations::Q8);
    let _ = DEVICE.set(cli.device);
    let result = match cli.cmd {
        Command::Run(a) => run(a),
        Command::Perplexity { model, file } => perplexity(&model, &file),
        Command::Info { model } => info(&model),
        Command::Bench(a) => bench::bench(a),
        Command::Convert(a) => convert::convert(a),
        Command::Serve(a) => {
            init_logging();
            serve::serve(a)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Structured logs on stderr; RUST_LOG filters them (default: info for hearth).
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,hyper=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
}

/// The device asked for on the command line (`--device`).
pub(crate) static DEVICE: std::sync::OnceLock<hearth_engine::backend::Device> =
    std::sync::OnceLock::new();

/// Opens the model on the chosen device (logged on stderr) and its tokenizer, with a spinner if that takes
/// over a second and a bar while weights go to a GPU.
pub(crate) fn load(path: &Path) -> Result<(Model, Tokenizer)> {
    let device = DEVICE.get().copied().unwrap_or_default();
    // A GPU load draws its own upload bar; the spinner is for the CPU's (memory-mapped) load.
    let spinner = (device == hearth_engine::backend::Device::Cpu)
        .then(|| progress::Spinner::start(format!("loading {}", path.display())));
    let opts = hearth_engine::models::OpenOptions {
        device,
        progress: Some(std::sync::Arc::new(progress::upload_tick)),
    };
    let model = Model::open_with(path, &opts);
    progress::upload_done();
    let model = model?;
    // A GPU is announced; the CPU (also what `auto` falls back to without one) goes unsaid, so stderr stays
    // clean for scripts. `hearth bench` and the server's log always name the device.
    if model.device.device != hearth_engine::backend::Device::Cpu {
        eprintln!("device: {}", model.device.reason);
    }
    let tok = match &model.gguf {
        Some(g) => Tokenizer::from_gguf(g)?,
        None => Tokenizer::from_hf_dir(&model.path)?,
    };
    if let Some(s) = spinner {
        s.finish();
    }
    Ok((model, tok))
}

fn run(a: RunArgs) -> Result<()> {
    let (model, tok) = load(&a.model)?;
    let opts = GenerateOptions {
        sampling: SamplingParams {
            temperature: a.temperature,
            top_p: a.top_p,
            top_k: a.top_k,
            min_p: a.min_p,
            repetition_penalty: a.repeat_penalty,
            seed: a.seed,
            ..SamplingParams::default()
        },
        max_tokens: a.max_tokens,
        stop: a.stop.clone(),
        logprobs: None,
    };
    let mut session = Session::new(&model);
    let mut messages: Vec<ChatMessage> = Vec::new();
    if let Some(s) = &a.system {
        messages.push(ChatMessage {
            role: "system".into(),
            content: s.clone(),
        });
    }
    let chat = !a.raw;
    if chat && tok.chat_template().is_none() {
        bail!(
            "{} has no chat template, so it cannot chat; use --raw for plain completion",
            model.path.display()
        );
    }
    let turn = |session: &mut Session, messages: &mut Vec<ChatMessage>, user: &str| -> Result<()> {
        let prompt = if chat {
            messages.push(ChatMessage {
                role: "user".into(),
                content: user.to_string(),
            });
            let text = tok.apply_chat_template(messages, true, None)?;
            tok.encode(&text, false)?
        } else {
            tok.encode(user, true)?
        };
        let mut answer = String::new();
        let mut out = std::io::stdout().lock();
        let stats = session.generate(&tok, &prompt, &opts, &mut |t| {
            answer.push_str(t.text);
            out.write_all(t.text.as_bytes()).is_ok() && out.flush().is_ok()
        })?;
        writeln!(out)?;
        if chat {
            messages.push(ChatMessage {
                role: "assistant".into(),
                content: answer,
            });
        }
        let secs = |d: std::time::Duration| d.as_secs_f64().max(1e-9);
        eprintln!(
            "[{} prompt tokens ({} cached) in {:.2}s, {:.1} tok/s; {} generated in {:.2}s, {:.1} tok/s; {:?}]",
            stats.prompt_tokens,
            stats.cached_tokens,
            stats.prefill.as_secs_f64(),
            (stats.prompt_tokens - stats.cached_tokens) as f64 / secs(stats.prefill),
            stats.generated_tokens,
            stats.decode.as_secs_f64(),
            stats.generated_tokens as f64 / secs(stats.decode),
            stats.finish
        );
        Ok(())
    };
    match &a.prompt {
        Some(p) => turn(&mut session, &mut messages, p),
        None => {
            eprintln!(
                "hearth: chatting with {} (Ctrl-D to quit)",
                model.path.display()
            );
            let stdin = std::io::stdin();
            loop {
                eprint!("> ");
                let mut line = String::new();
                if stdin.lock().read_line(&mut line)? == 0 {
                    return Ok(());
                }
                let line = line.trim_end_matches(['\n', '\r']);
                if line.is_empty() {
                    continue;
                }
                if let Err(e) = turn(&mut session, &mut messages, line) {
                    eprintln!("error: {e:#}");
                }
            }
        }
    }
}

/// Scores every token after the first given its prefix; the file must fit the context.
fn perplexity(model_path: &Path, file: &Path) -> Result<()> {
    let (model, tok) = load(model_path)?;
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let ids = tok.encode(&text, true)?;
    let ctx = model.config.context_len;
    if ids.len() > ctx {
        bail!(
            "{} is {} tokens, longer than the model's context of {ctx}",
            file.display(),
            ids.len()
        );
    }
    if ids.len() < 2 {
        bail!(
            "{} has fewer than 2 tokens; nothing to score",
            file.display()
        );
    }
    let (nll, n) = hearth_engine::generate::score_sequence(&model, &ids, |done| {
        progress::Bar::tick(done, ids.len())
    })?;
    progress::Bar::clear();
    println!("tokens: {}", ids.len());
    println!("scored: {n}");
    println!("perplexity: {:.4}", (nll / n as f64).exp());
    Ok(())
}

fn info(path: &Path) -> Result<()> {
    let (model, tok) = load(path)?;
    let c = &model.config;
    println!("file: {}", model.path.display());
    println!("format: {:?}", model.format);
    println!("architecture: {}", c.arch.name());
    println!(
        "parameters: {} ({:.1} M)",
        model.n_params(),
        model.n_params() as f64 / 1e6
    );
    println!(
        "layers: {}, hidden: {}, heads: {} (kv {}), head dim: {}, ffn: {}, vocab: {}",
        c.n_layers, c.hidden, c.n_heads, c.n_kv_heads, c.head_dim, c.ffn, c.vocab
    );
    println!("context length: {}", c.context_len);
    if let Some(w) = c.sliding_window {
        let n = c.sliding_layers.iter().filter(|&&s| s).count();
        println!("sliding window: {w} tokens on {n} of {} layers", c.n_layers);
    }
    println!("weights by type:");
    for (ty, n, bytes) in model.weights.bytes_by_type() {
        println!(
            "  {ty:>15}: {n:>12} weights, {:>10.2} MB",
            bytes as f64 / 1e6
        );
    }
    println!(
        "bytes read per decoded token: {:.2} MB",
        model.bytes_per_token() as f64 / 1e6
    );
    println!("bos: {:?}, eos: {:?}", tok.bos_id(), tok.eos_ids());
    match tok.chat_template() {
        Some(t) => println!("chat template: yes ({} bytes)\n{t}", t.len()),
        None => println!("chat template: none (use --raw)"),
    }
    Ok(())
}
