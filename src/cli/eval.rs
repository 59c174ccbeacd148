//! `cheems eval`: MQAR accuracy of a checkpoint trained on the task, or the perplexity of a text file.

use crate::eval::{load_tokenizer, mqar, ppl};
use crate::runner::load;
use anyhow::{anyhow, Context, Result};
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub task: Task,
}

#[derive(clap::Subcommand, Debug)]
pub enum Task {
    /// Multi-query associative recall: generate the task from a seed (parameters from the checkpoint's
    /// mqar.json), prefill each example and count the queries whose argmax is the right value.
    Mqar(MqarArgs),
    /// Perplexity of a text file, tokenized with the checkpoint's tokenizer.json, in non-overlapping windows.
    Ppl(PplArgs),
}

#[derive(clap::Args, Debug)]
pub struct MqarArgs {
    /// Checkpoint directory with config.json, model.safetensors and mqar.json.
    pub ckpt: PathBuf,
    /// Seed of the generated examples (default: the evaluation seed in mqar.json).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Number of examples (default: the evaluation count in mqar.json); example i is the same for any count.
    #[arg(long)]
    pub examples: Option<usize>,
    /// Examples per prefill batch.
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// Print one JSON object (with the per-example counts) instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Debug)]
pub struct PplArgs {
    /// Checkpoint directory with config.json, model.safetensors and tokenizer.json.
    pub ckpt: PathBuf,
    /// UTF-8 text file to score.
    #[arg(long)]
    pub text: PathBuf,
    /// Window length in tokens.
    #[arg(long, default_value_t = 512)]
    pub context: usize,
    /// Score only the first N windows.
    #[arg(long)]
    pub windows: Option<usize>,
    /// Print one JSON object (with per-window negative log-likelihoods) instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Runs `cheems eval`.
pub fn run(a: &Args) -> Result<()> {
    match &a.task {
        Task::Mqar(m) => run_mqar(m),
        Task::Ppl(p) => run_ppl(p),
    }
}

fn run_mqar(a: &MqarArgs) -> Result<()> {
    let meta = mqar::MqarMeta::read(&a.ckpt)?;
    let loaded = load(&a.ckpt)?;
    let seed = a.seed.unwrap_or(meta.eval_seed);
    let n = a.examples.unwrap_or(meta.eval_examples);
    let r = mqar::evaluate(&loaded, &meta, seed, n, a.batch, !a.json)?;
    if a.json {
        let mut v = serde_json::to_value(&r)?;
        v["checkpoint"] = a.ckpt.display().to_string().into();
        println!("{}", serde_json::to_string(&v)?);
        return Ok(());
    }
    let t = &r.task;
    println!(
        "{}: MQAR vocab {} · seq {} · {} pairs · power_a {} · seed {} · {} examples",
        a.ckpt.display(),
        t.vocab_size,
        t.seq_len,
        t.num_kv_pairs,
        t.power_a,
        r.seed,
        r.examples
    );
    println!(
        "accuracy {:.4} ({} / {} queries) in {:.1} s",
        r.accuracy, r.correct_queries, r.queries, r.seconds
    );
    match r.fingerprint_matches_pytorch {
        Some(true) => println!("examples identical to PyTorch's (fingerprint {})", r.fnv1a64),
        Some(false) => println!(
            "WARNING: fingerprint {} differs from mqar.json: different examples",
            r.fnv1a64
        ),
        None => println!("fingerprint {}", r.fnv1a64),
    }
    if let Some(c) = &r.pytorch {
        println!(
            "PyTorch on the same {} examples: accuracy {:.4}; per-example counts identical on {} / {}",
            c.compared, c.pytorch_accuracy_on_these, c.identical, c.compared
        );
        for (i, ours, theirs) in &c.first_differences {
            println!("  example {i}: cheems {ours}, PyTorch {theirs}");
        }
    }
    Ok(())
}

fn run_ppl(a: &PplArgs) -> Result<()> {
    let tokenizer = load_tokenizer(&a.ckpt)?;
    let text = std::fs::read_to_string(&a.text)
        .with_context(|| format!("reading {}", a.text.display()))?;
    let enc = tokenizer
        .encode(text.as_str(), false)
        .map_err(|e| anyhow!("{}: tokenizing failed: {e}", a.text.display()))?;
    let ids: Vec<i64> = enc.get_ids().iter().map(|&i| i as i64).collect();
    let loaded = load(&a.ckpt)?;
    let r = ppl::perplexity(&loaded, &ids, a.context, a.windows, !a.json)?;
    if a.json {
        let mut v = serde_json::to_value(&r)?;
        v["checkpoint"] = a.ckpt.display().to_string().into();
        v["text"] = a.text.display().to_string().into();
        println!("{}", serde_json::to_string(&v)?);
    } else {
        println!(
            "{}: perplexity {:.4} on {} ({} tokens, {} predictions in {} windows of {}) in {:.1} s",
            a.ckpt.display(),
            r.ppl,
            a.text.display(),
            r.tokens,
            r.predicted,
            r.windows.len(),
            r.context,
            r.seconds
        );
    }
    Ok(())
}
