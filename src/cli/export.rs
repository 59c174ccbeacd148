//! `cheems export-onnx`: write a checkpoint as ONNX with the `ai.cheems` custom ops.

use crate::model::build::{build_with, BuildOptions};
use crate::model::checkpoint::Checkpoint;
use crate::onnx::{self, ExportOptions, FloatType};
use anyhow::{Context, Result};
use std::path::PathBuf;

/// Export dtype of weights and activations.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum DTypeArg {
    /// float32.
    F32,
    /// float16.
    F16,
    /// bfloat16.
    Bf16,
}

/// Arguments of `cheems export-onnx`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Checkpoint directory (config.json + safetensors).
    pub ckpt: PathBuf,
    /// Output ONNX file; written atomically. External data, when used, goes to `<OUTPUT>.data`.
    #[arg(short = 'o', long = "output")]
    pub output: PathBuf,
    /// Type of weights, activations, key/value caches and logits (SSD states stay f32).
    #[arg(long, value_enum, default_value = "f32")]
    pub dtype: DTypeArg,
    /// Write the function bodies in place of the custom nodes: standard ONNX ops only.
    #[arg(long)]
    pub inline: bool,
    /// ONNX opset (18 to 24).
    #[arg(long, default_value_t = onnx::DEFAULT_OPSET)]
    pub opset: i64,
    /// Store the weights in `<OUTPUT>.data` even when they total less than 2 GB.
    #[arg(long)]
    pub external_data: bool,
    /// Print a JSON summary on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Builds the export graph of the checkpoint and writes it as ONNX.
pub fn run(a: &Args) -> Result<()> {
    let dtype = match a.dtype {
        DTypeArg::F32 => FloatType::F32,
        DTypeArg::F16 => FloatType::F16,
        DTypeArg::Bf16 => FloatType::BF16,
    };
    let opts =
        ExportOptions { dtype, inline: a.inline, opset: a.opset, external_data: a.external_data };
    anyhow::ensure!(
        onnx::OPSETS.contains(&a.opset),
        "--opset {} is not supported: use {} to {}",
        a.opset,
        onnx::OPSETS.start(),
        onnx::OPSETS.end()
    );
    let ck = Checkpoint::open(&a.ckpt)?;
    let model = build_with(&ck.config, &ck.weights, BuildOptions { stateless: true })
        .with_context(|| format!("building the export graph of {}", ck.dir.display()))?;
    let s = onnx::write(&model, &a.output, &opts)
        .with_context(|| format!("exporting {} to {}", a.ckpt.display(), a.output.display()))?;
    if a.json {
        let v = serde_json::json!({
            "out": s.path.display().to_string(),
            "data": s.data_path.as_ref().map(|p| p.display().to_string()),
            "variant": model.config.variant.name(),
            "dtype": dtype.name(),
            "opset": a.opset,
            "inline": a.inline,
            "nodes": s.nodes,
            "functions": s.functions,
            "initializers": s.initializers,
            "weight_bytes": s.weight_bytes,
        });
        println!("{}", serde_json::to_string(&v)?);
    } else {
        eprintln!(
            "wrote {} ({} nodes, {} functions, {} initializers, {:.1} MB of weights{})",
            s.path.display(),
            s.nodes,
            s.functions,
            s.initializers,
            s.weight_bytes as f64 / 1e6,
            s.data_path.as_ref().map(|p| format!(" in {}", p.display())).unwrap_or_default()
        );
    }
    Ok(())
}
