//! `hearth convert SRC DST --to {mlx,hf,gguf}`: the command line over `hearth_engine::convert`.
//!
//! The source's format is detected (a GGUF file by its magic; a folder with config.json is Hugging Face, or
//! MLX when its config has `quantization`), the options are checked against the target before anything is
//! written, and the conversion writes into a staging path that only a complete run renames into place.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use hearth_engine::convert::from_mlx::mlx_to_hf;
use hearth_engine::convert::source::parse_float;
use hearth_engine::convert::to_gguf::{hf_to_gguf, GgufOptions, OutType};
use hearth_engine::convert::to_hf::{gguf_to_hf, gguf_to_mlx};
use hearth_engine::convert::to_mlx::{hf_to_mlx, MlxOptions, Recipe};
use hearth_engine::tensor::mlx::{MlxFloat, MlxMode};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Target {
    /// An MLX folder (mlx-lm's layout), quantized with -q.
    Mlx,
    /// A Hugging Face folder of float safetensors (from a GGUF file, or an MLX folder dequantized).
    Hf,
    /// A GGUF file.
    Gguf,
}

#[derive(Args)]
pub struct ConvertArgs {
    /// A GGUF file, or a Hugging Face or MLX folder.
    src: PathBuf,
    /// The output folder (or GGUF file); refused if it exists, unless --force.
    dst: PathBuf,
    /// The format to write.
    #[arg(long, value_enum)]
    to: Target,
    /// Quantize (MLX): without it the MLX folder only changes the dtype.
    #[arg(short = 'q', long)]
    quantize: bool,
    /// Bits per weight (MLX; default: the mode's, 4).
    #[arg(long)]
    bits: Option<u8>,
    /// Weights per scale (MLX; default: the mode's, 64 for affine).
    #[arg(long)]
    group_size: Option<usize>,
    /// MLX quantization mode: affine, mxfp4, nvfp4 or mxfp8.
    #[arg(long, default_value = "affine")]
    mode: String,
    /// Mixed-precision recipe (MLX, affine): mixed_2_6, mixed_3_4, mixed_3_6 or mixed_4_6. Implies -q.
    #[arg(long)]
    recipe: Option<String>,
    /// Float dtype of the output's unquantized tensors (and MLX affine scales): f16, bf16 or f32.
    #[arg(long)]
    dtype: Option<String>,
    /// GGUF weight type (--to gguf): f32, f16, bf16, q8_0, q4_0, q4_k, ...
    #[arg(long)]
    outtype: Option<String>,
    /// GGUF to MLX: carry Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K and Q5_K weights over exactly, as MLX affine
    /// groups of 32 with their own scales (no second rounding); other weights follow -q or stay float.
    #[arg(long)]
    keep_quant: bool,
    /// Replace an existing output (the old one stays until the new one is complete).
    #[arg(long)]
    force: bool,
}

/// What the source path holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    Gguf,
    Hf,
    Mlx,
}

fn detect(src: &Path) -> Result<Source> {
    let meta = std::fs::metadata(src).with_context(|| format!("{}", src.display()))?;
    if meta.is_file() {
        let mut magic = [0u8; 4];
        let mut f = std::fs::File::open(src).with_context(|| format!("{}", src.display()))?;
        if f.read_exact(&mut magic).is_ok() && &magic == b"GGUF" {
            return Ok(Source::Gguf);
        }
        bail!(
            "{}: not a GGUF file (hearth converts GGUF files and Hugging Face / MLX folders)",
            src.display()
        );
    }
    let cfg = src.join("config.json");
    let text = std::fs::read_to_string(&cfg).with_context(|| {
        format!(
            "{}: a model folder needs config.json (hearth converts GGUF files and Hugging Face / MLX folders)",
            src.display()
        )
    })?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{}: not valid JSON", cfg.display()))?;
    Ok(if v.get("quantization").is_some() {
        Source::Mlx
    } else {
        Source::Hf
    })
}

/// `--to gguf`: a Hugging Face or MLX folder to one GGUF file of `outtype` (default f16, as llama.cpp's
/// converter).
fn to_gguf(
    src: &Path,
    dst: &Path,
    outtype: Option<&str>,
    force: bool,
    progress: hearth_engine::convert::Progress,
) -> Result<PathBuf> {
    let name = outtype.unwrap_or("f16");
    let outtype = OutType::from_name(name).with_context(|| {
        format!("--outtype {name:?}: expected f32, f16, bf16, q8_0, q5_0, q4_0, q4_1, q4_k or q6_k")
    })?;
    let opts = GgufOptions {
        outtype,
        force,
        name: None,
    };
    Ok(hf_to_gguf(src, dst, &opts, progress)?)
}

/// A bar drawn on stderr, over tensors written (folders) or bytes written (GGUF, whose writer reports bytes).
fn bar(bytes: bool) -> ProgressBar {
    let pb = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    let template = if bytes {
        "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} {elapsed}"
    } else {
        "{bar:40} {pos}/{len} tensors {elapsed}"
    };
    pb.set_style(ProgressStyle::with_template(template).expect("static template"));
    pb
}

pub fn convert(a: ConvertArgs) -> Result<()> {
    let src = detect(&a.src)?;
    let dtype: Option<MlxFloat> = match &a.dtype {
        None => None,
        Some(d) => Some(
            parse_float(d).with_context(|| format!("--dtype {d:?}: expected f16, bf16 or f32"))?,
        ),
    };
    let mlx_flags = a.quantize
        || a.bits.is_some()
        || a.group_size.is_some()
        || a.recipe.is_some()
        || a.mode != "affine";
    if a.to != Target::Mlx && mlx_flags {
        bail!("-q, --bits, --group-size, --mode and --recipe apply to --to mlx only");
    }
    if a.keep_quant && (a.to != Target::Mlx || src != Source::Gguf) {
        bail!("--keep-quant carries GGUF blocks into an MLX folder: it needs a GGUF source and --to mlx");
    }
    if a.to != Target::Gguf && a.outtype.is_some() {
        bail!("--outtype applies to --to gguf only (use --dtype for hf and mlx)");
    }
    let pb = bar(a.to == Target::Gguf);
    let mut progress = |done: u64, total: u64| {
        pb.set_length(total);
        pb.set_position(done);
    };
    let out = match (a.to, src) {
        (Target::Mlx, Source::Mlx) => bail!(
            "{} is already an MLX-quantized folder; hearth converts Hugging Face folders and GGUF files to MLX",
            a.src.display()
        ),
        (Target::Mlx, _) => {
            let mode = MlxMode::from_name(&a.mode).map_err(anyhow::Error::msg)?;
            let recipe = match &a.recipe {
                None => None,
                Some(r) => Some(Recipe::from_name(r).with_context(|| {
                    format!("--recipe {r:?}: expected mixed_2_6, mixed_3_4, mixed_3_6 or mixed_4_6")
                })?),
            };
            let opts = MlxOptions {
                quantize: a.quantize || recipe.is_some(),
                bits: a.bits,
                group_size: a.group_size,
                mode,
                recipe,
                dtype,
                keep_quant: a.keep_quant,
            };
            if src == Source::Gguf {
                gguf_to_mlx(&a.src, &a.dst, &opts, a.force, &mut progress)?
            } else {
                hf_to_mlx(&a.src, &a.dst, &opts, a.force, &mut progress)?
            }
        }
        (Target::Hf, Source::Gguf) => gguf_to_hf(&a.src, &a.dst, dtype, a.force, &mut progress)?,
        (Target::Hf, Source::Mlx) => mlx_to_hf(&a.src, &a.dst, dtype, a.force, &mut progress)?,
        (Target::Hf, _) => bail!(
            "{} is already a Hugging Face folder; --to hf converts GGUF files and MLX folders",
            a.src.display()
        ),
        (Target::Gguf, Source::Hf | Source::Mlx) => {
            if dtype.is_some() {
                bail!("--dtype does not apply to --to gguf (use --outtype)");
            }
            to_gguf(
                &a.src,
                &a.dst,
                a.outtype.as_deref(),
                a.force,
                &mut progress,
            )?
        }
        (Target::Gguf, Source::Gguf) => bail!("{} is already a GGUF file", a.src.display()),
    };
    pb.finish_and_clear();
    eprintln!("wrote {}", out.display());
    Ok(())
}
