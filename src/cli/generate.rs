//! `cheems generate`: incremental decoding with sampling, streaming text to stdout.

use crate::eval::load_tokenizer;
use crate::eval::sample::{generate, Sampler, SamplingParams};
use crate::exec::cuda::ActDType;
use crate::runner::{prepare_with, Device};
use anyhow::{anyhow, bail, ensure, Context, Result};
use std::io::Write;
use std::path::PathBuf;

/// The model `generate` uses when no checkpoint is given (relative to the working directory).
pub const DEFAULT_MODEL: &str = "models/cheems-py";
/// The prompt `generate` uses when none is given.
pub const DEFAULT_PROMPT: &str = "import os\nimport sys\n\n\ndef main():";

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Checkpoint directory with config.json, model.safetensors and tokenizer.json, or an artifact of `cheems
    /// compile` (which carries the tokenizer).
    #[arg(default_value = DEFAULT_MODEL)]
    pub ckpt: PathBuf,
    /// Text to continue; it is printed first, then the continuation as it is generated.
    #[arg(long, default_value = DEFAULT_PROMPT)]
    pub prompt: String,
    /// Most tokens to generate (generation also stops at the end-of-sequence token).
    #[arg(long, default_value_t = 200)]
    pub max_tokens: usize,
    /// Softmax temperature; 0 is greedy decoding.
    #[arg(long, default_value_t = 0.8, allow_negative_numbers = true)]
    pub temperature: f32,
    /// Sample among the K most likely tokens (0: all).
    #[arg(long, default_value_t = 40)]
    pub top_k: usize,
    /// Sample among the most likely tokens whose probability reaches P (1: all).
    #[arg(long, default_value_t = 0.95, allow_negative_numbers = true)]
    pub top_p: f32,
    /// Seed of the sampler: the same seed gives the same text.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Executor: the CPU oracle, or CUDA (device 0) on the compiled graph, where decode steps replay a recorded
    /// step and only the logits a draw can reach (`--top-k`, or one when greedy) leave the device. Default: an
    /// artifact's target, else the CPU.
    #[arg(long, value_enum)]
    pub target: Option<Device>,
    /// Activation dtype on CUDA (the CPU runs f32). Default: an artifact's dtype, else f32.
    #[arg(long, value_enum)]
    pub dtype: Option<ActDType>,
}

/// Runs `cheems generate`.
pub fn run(a: &Args) -> Result<()> {
    ensure!(!a.prompt.is_empty(), "the prompt is empty: pass some text with --prompt");
    ensure!(a.max_tokens > 0, "--max-tokens must be at least 1");
    let mut sampler = Sampler::new(SamplingParams {
        temperature: a.temperature,
        top_k: a.top_k,
        top_p: a.top_p,
        seed: a.seed,
    })?;
    if !a.ckpt.join("config.json").is_file() && !crate::artifact::is_artifact(&a.ckpt) {
        bail!(
            "{}: no checkpoint there (config.json missing){}",
            a.ckpt.display(),
            if a.ckpt == std::path::Path::new(DEFAULT_MODEL) {
                "; run from the repository root or pass a checkpoint directory"
            } else {
                ""
            }
        );
    }
    let tokenizer = load_tokenizer(&a.ckpt)?;
    let loaded = prepare_with(&a.ckpt, a.target, a.dtype)?;
    let cfg = &loaded.model.config;
    let enc = tokenizer
        .encode(a.prompt.as_str(), false)
        .map_err(|e| anyhow!("tokenizing the prompt: {e}"))?;
    let mut prompt: Vec<i64> = cfg.bos_token_id.into_iter().collect();
    prompt.extend(enc.get_ids().iter().map(|&i| i as i64));
    ensure!(prompt.len() > cfg.bos_token_id.iter().count(), "the prompt tokenizes to nothing");
    let v = cfg.vocab_size as i64;
    if let Some(bad) = prompt.iter().find(|&&i| i >= v) {
        bail!("the tokenizer produced id {bad}, outside the model's vocabulary of {v}");
    }
    let mut out = std::io::stdout().lock();
    write!(out, "{}", a.prompt)?;
    out.flush()?;
    let mut ids: Vec<u32> = Vec::new();
    let mut shown = String::new();
    let (model, exec) = (&loaded.model, loaded.exec.as_ref());
    let gen = generate(model, exec, &prompt, a.max_tokens, &mut sampler, cfg.eos_token_id, |id| {
        ids.push(id as u32);
        let text = tokenizer.decode(&ids, true).map_err(|e| anyhow!("decoding tokens: {e}"))?;
        if !text.ends_with('\u{FFFD}') && text.starts_with(shown.as_str()) {
            write!(out, "{}", &text[shown.len()..])?;
            out.flush()?;
            shown = text;
        }
        Ok(())
    })
    .context("generating")?;
    let text = tokenizer.decode(&ids, true).map_err(|e| anyhow!("decoding tokens: {e}"))?;
    if let Some(rest) = text.strip_prefix(shown.as_str()) {
        write!(out, "{rest}")?;
    }
    writeln!(out)?;
    let n = gen.ids.len();
    eprintln!(
        "{n} tokens in {:.2} s ({:.1} tokens/s on {}; prompt {} tokens in {:.0} ms){}",
        gen.decode_seconds,
        n as f64 / gen.decode_seconds.max(1e-9),
        format!("{:?}", loaded.device).to_lowercase(),
        prompt.len(),
        gen.prefill_seconds * 1e3,
        if gen.stopped_at_eos { ", stopped at end of sequence" } else { "" }
    );
    Ok(())
}
