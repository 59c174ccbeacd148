//! `cheems run`: prefill and decode on the CPU, logits to safetensors.

use crate::exec::cuda::ActDType;
use crate::runner::{prepare_with, run as run_inputs, write_safetensors, Device, Inputs};
use anyhow::Result;
use std::path::PathBuf;
use std::time::Instant;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Checkpoint directory (config.json + safetensors), or an artifact of `cheems compile`.
    pub ckpt: PathBuf,
    /// Inputs JSON: {"input_ids": [[..]], "attention_mask": [[..]] | null, "decode_input_ids": [[..]] | absent}.
    #[arg(long)]
    pub inputs: PathBuf,
    /// Output safetensors: `logits` f32 [B,T,V] and, with decode ids, `decode_logits` f32 [B,N,V].
    #[arg(long)]
    pub out: PathBuf,
    /// Print a JSON summary (shapes, timings) on stdout.
    #[arg(long)]
    pub json: bool,
    /// Executor: the CPU oracle, or CUDA (device 0) on the compiled graph. Default: an artifact's target, else
    /// the CPU.
    #[arg(long, value_enum)]
    pub target: Option<Device>,
    /// Activation dtype on CUDA (the CPU runs f32). Default: an artifact's dtype, else f32.
    #[arg(long, value_enum)]
    pub dtype: Option<ActDType>,
}

pub fn run(a: &Args) -> Result<()> {
    let inputs = Inputs::read(&a.inputs)?;
    let t0 = Instant::now();
    let loaded = prepare_with(&a.ckpt, a.target, a.dtype)?;
    let load_s = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    let out = run_inputs(&loaded.model, loaded.exec.as_ref(), &inputs, &[])?;
    let run_s = t1.elapsed().as_secs_f64();
    let mut tensors = vec![("logits", &out.logits)];
    if let Some(d) = &out.decode_logits {
        tensors.push(("decode_logits", d));
    }
    write_safetensors(&a.out, &tensors)?;
    if a.json {
        let v = serde_json::json!({
            "out": a.out.display().to_string(),
            "variant": loaded.model.config.variant.name(),
            "target": format!("{:?}", loaded.device).to_lowercase(),
            "logits": out.logits.dims(),
            "decode_logits": out.decode_logits.as_ref().map(|t| t.dims().to_vec()),
            "load_seconds": load_s,
            "run_seconds": run_s,
        });
        println!("{}", serde_json::to_string(&v)?);
    } else {
        eprintln!(
            "wrote {} (logits {:?}{}) in {run_s:.3} s",
            a.out.display(),
            out.logits.dims(),
            out.decode_logits
                .as_ref()
                .map(|d| format!(", decode_logits {:?}", d.dims()))
                .unwrap_or_default()
        );
    }
    Ok(())
}
