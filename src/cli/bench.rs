//! `cheems bench`: prefill and decode throughput on the CPU executor, medians over repeated runs.

use crate::exec::session::Session;
use crate::runner::load;
use anyhow::{ensure, Result};
use std::path::PathBuf;
use std::time::Instant;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Checkpoint directory (config.json + safetensors).
    pub ckpt: PathBuf,
    /// Prompt length of the prefill, in tokens per sequence.
    #[arg(long, default_value_t = 128)]
    pub prompt: usize,
    /// Decode steps after each prefill.
    #[arg(long, default_value_t = 32)]
    pub decode: usize,
    /// Sequences per batch.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Timed repetitions (after one warm-up); the median is reported.
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

pub fn run(a: &Args) -> Result<()> {
    ensure!(
        a.prompt > 0 && a.batch > 0 && a.runs > 0,
        "--prompt, --batch and --runs must be positive"
    );
    let loaded = load(&a.ckpt)?;
    let (model, exec) = (&loaded.model, &loaded.exec);
    let v = model.config.vocab_size as i64;
    let ids: Vec<Vec<i64>> = (0..a.batch)
        .map(|b| (0..a.prompt).map(|t| (7 + 31 * t as i64 + 17 * b as i64) % v).collect())
        .collect();
    let (mut prefill, mut decode) = (Vec::new(), Vec::new());
    for run in 0..=a.runs {
        let mut s = Session::new(model, exec);
        let t0 = Instant::now();
        s.prefill(&ids, None, &[])?;
        let p = t0.elapsed().as_secs_f64();
        let t1 = Instant::now();
        for k in 0..a.decode {
            let step: Vec<i64> = (0..a.batch).map(|b| (3 + 13 * k as i64 + b as i64) % v).collect();
            s.decode(&step, &[])?;
        }
        let d = t1.elapsed().as_secs_f64();
        if run > 0 {
            prefill.push(p);
            decode.push(d);
        }
        if !a.json {
            eprintln!(
                "run {run}{}: prefill {p:.4} s, {} decode steps {d:.4} s",
                if run == 0 { " (warm-up)" } else { "" },
                a.decode
            );
        }
    }
    let (p, d) = (median(prefill), median(decode));
    let prefill_tps = (a.batch * a.prompt) as f64 / p;
    let decode_tps = if a.decode > 0 { (a.batch * a.decode) as f64 / d } else { 0.0 };
    let params = loaded.checkpoint.weights.num_params();
    if a.json {
        let out = serde_json::json!({
            "checkpoint": a.ckpt.display().to_string(),
            "variant": model.config.variant.name(),
            "parameters": params,
            "threads": rayon::current_num_threads(),
            "batch": a.batch, "prompt": a.prompt, "decode": a.decode, "runs": a.runs,
            "prefill_seconds_median": p, "decode_seconds_median": d,
            "prefill_tokens_per_second": prefill_tps, "decode_tokens_per_second": decode_tps,
        });
        println!("{}", serde_json::to_string(&out)?);
    } else {
        println!(
            "{} ({:.1} M params, {} threads): prefill {prefill_tps:.1} tok/s, decode {decode_tps:.1} tok/s (batch {}, prompt {}, {} steps, median of {})",
            model.config.variant.name(),
            params as f64 / 1e6,
            rayon::current_num_threads(),
            a.batch,
            a.prompt,
            a.decode,
            a.runs
        );
    }
    Ok(())
}
