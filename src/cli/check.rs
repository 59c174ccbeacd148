//! `cheems check`: the CPU executor and the CUDA executor side by side on the compiled graph, every node's
//! output compared, worst first.

use crate::exec::cpu::CpuExecutor;
use crate::exec::cuda::{ActDType, CudaExecutor};
use crate::exec::Executor;
use crate::ir::Tensor;
use crate::model::build::build;
use crate::model::checkpoint::Checkpoint;
use crate::passes::{compile, lower::Target, CompileOptions};
use crate::runner::Inputs;
use anyhow::{ensure, Result};
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Checkpoint directory (config.json + safetensors).
    pub ckpt: PathBuf,
    /// Inputs JSON in the `run` format (decode ids are ignored); default: a two-sequence prompt of 16 tokens.
    #[arg(long)]
    pub inputs: Option<PathBuf>,
    /// Device to check against the CPU.
    #[arg(long, value_enum, default_value_t = CheckTarget::Cuda)]
    pub target: CheckTarget,
    /// Activation dtype on the device.
    #[arg(long, value_enum, default_value_t = ActDType::F32)]
    pub dtype: ActDType,
    /// Rows to print (worst first).
    #[arg(long, default_value_t = 20)]
    pub top: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Devices `check` compares with the CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum CheckTarget {
    Cuda,
}

/// Max |Δ| and normalised mean squared error (Σ(a−b)²/Σb²) of two tensors.
fn errors(got: &Tensor, want: &Tensor) -> Option<(f64, f64)> {
    let (Ok(g), Ok(w)) = (got.as_f32(), want.as_f32()) else { return None };
    let (mut max, mut num, mut den) = (0f64, 0f64, 0f64);
    for (a, b) in g.iter().zip(w) {
        let d = (*a as f64 - *b as f64).abs();
        max = if d.is_nan() { f64::INFINITY } else { max.max(d) };
        num += d * d;
        den += (*b as f64) * (*b as f64);
    }
    Some((max, if den > 0.0 { num / den } else { num }))
}

pub fn run(a: &Args) -> Result<()> {
    let ck = Checkpoint::open(&a.ckpt)?;
    let mut model = build(&ck.config, &ck.weights)?;
    compile(&mut model.graph, &CompileOptions::new(Target::Cuda))?;
    let inputs = match &a.inputs {
        Some(p) => Inputs::read(p)?,
        None => {
            let v = model.config.vocab_size as i64;
            let ids = (0..2).map(|b| (0..16).map(|t| (3 + 7 * t + 11 * b) % v).collect()).collect();
            Inputs { input_ids: ids, attention_mask: None, decode_input_ids: None }
        }
    };
    let g = &model.graph;
    let taps: Vec<String> = g
        .node_ids()
        .into_iter()
        .filter(|id| !matches!(g.node(*id).op, crate::ir::Op::Const(_) | crate::ir::Op::Input(_)))
        .map(|id| g.node(id).name.clone())
        .collect();
    let tap_refs: Vec<&str> = taps.iter().map(String::as_str).collect();
    let cpu = CpuExecutor::new(g.clone())?;
    let gpu = std::sync::Arc::new(cheems_ops::cuda::Gpu::new(0)?);
    let cuda = CudaExecutor::new(g.clone(), gpu, a.dtype)?;
    let run_on = |e: &dyn Executor| -> Result<BTreeMap<String, Tensor>> {
        let mut s = crate::exec::session::Session::new(&model, e);
        Ok(s.prefill(&inputs.input_ids, inputs.attention_mask.as_ref(), &tap_refs)?.taps)
    };
    let (want, got) = (run_on(&cpu)?, run_on(&cuda)?);
    let mut rows: Vec<(String, String, f64, f64)> = Vec::new();
    for name in &taps {
        let (Some(w), Some(gt)) = (want.get(name), got.get(name)) else { continue };
        ensure!(w.dims() == gt.dims(), "node `{name}`: CPU {:?} vs CUDA {:?}", w.dims(), gt.dims());
        if let Some((max, nmse)) = errors(gt, w) {
            let id = g.find(name).expect("tapped by name");
            rows.push((name.clone(), format!("{:?}", g.node(id).op.kind()), max, nmse));
        }
    }
    rows.sort_by(|x, y| y.3.total_cmp(&x.3).then(x.0.cmp(&y.0)));
    if a.json {
        let v: Vec<_> = rows
            .iter()
            .map(|(n, k, m, e)| serde_json::json!({"node": n, "op": k, "max_abs": m, "nmse": e}))
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({"dtype": a.dtype.name(), "nodes": v})
            )?
        );
    } else {
        println!("{:<48} {:<18} {:>12} {:>12}", "node", "op", "max |Δ|", "NMSE");
        for (n, k, m, e) in rows.iter().take(a.top) {
            println!("{n:<48} {k:<18} {m:>12.3e} {e:>12.3e}");
        }
        println!("{} nodes compared ({} activations)", rows.len(), a.dtype.name());
    }
    Ok(())
}
