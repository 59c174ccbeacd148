//! The `run` contract shared by the CLI and the library: read `INPUTS.json`, prefill, decode step by step, and
//! write `logits` / `decode_logits` to safetensors.

use crate::exec::cpu::CpuExecutor;
use crate::exec::session::{Batch, Session};
use crate::ir::Tensor;
use crate::model::build::{build, Model};
use crate::model::checkpoint::Checkpoint;
use anyhow::{bail, ensure, Context, Result};
use std::collections::BTreeMap;
use std::path::Path;

/// The inputs of one run, in the fixture format: `{"input_ids": [[..]], "attention_mask": [[..]] | null,
/// "decode_input_ids": [[..]] | absent}`. Other keys (such as `notes`) are ignored.
#[derive(Clone, Debug, PartialEq)]
pub struct Inputs {
    pub input_ids: Batch,
    pub attention_mask: Option<Batch>,
    pub decode_input_ids: Option<Batch>,
}

/// Logits of a run: prefill `[B,T,V]` and, with decode ids, one row per step `[B,N,V]`.
pub struct Outputs {
    pub logits: Tensor,
    pub decode_logits: Option<Tensor>,
    /// Tapped node outputs of the prefill, by node name.
    pub taps: BTreeMap<String, Tensor>,
}

fn batch(v: &serde_json::Value, field: &str, file: &Path) -> Result<Batch> {
    let Some(rows) = v.as_array() else {
        bail!("{}: `{field}` must be a list of lists of integers", file.display())
    };
    rows.iter()
        .enumerate()
        .map(|(b, row)| {
            let Some(row) = row.as_array() else {
                bail!("{}: `{field}[{b}]` must be a list of integers", file.display())
            };
            row.iter()
                .enumerate()
                .map(|(t, x)| {
                    x.as_i64().with_context(|| {
                        format!("{}: `{field}[{b}][{t}]` = {x} is not an integer", file.display())
                    })
                })
                .collect()
        })
        .collect()
}

impl Inputs {
    /// Parses the JSON text of an inputs file; `file` names it in errors.
    pub fn parse(text: &str, file: &Path) -> Result<Inputs> {
        let v: serde_json::Value = serde_json::from_str(text)
            .with_context(|| format!("{}: malformed JSON", file.display()))?;
        ensure!(v.is_object(), "{}: expected a JSON object with `input_ids`", file.display());
        let Some(ids) = v.get("input_ids") else {
            bail!("{}: missing field `input_ids`", file.display())
        };
        let opt = |field: &str| -> Result<Option<Batch>> {
            match v.get(field) {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(x) => batch(x, field, file).map(Some),
            }
        };
        Ok(Inputs {
            input_ids: batch(ids, "input_ids", file)?,
            attention_mask: opt("attention_mask")?,
            decode_input_ids: opt("decode_input_ids")?,
        })
    }

    /// Reads and parses an inputs file.
    pub fn read(path: &Path) -> Result<Inputs> {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let text = String::from_utf8(bytes).map_err(|e| {
            anyhow::anyhow!(
                "{}: not UTF-8 (invalid byte at offset {})",
                path.display(),
                e.utf8_error().valid_up_to()
            )
        })?;
        Inputs::parse(&text, path)
    }
}

/// A loaded checkpoint with its built graph and CPU executor.
pub struct Loaded {
    pub checkpoint: Checkpoint,
    pub model: Model,
    pub exec: CpuExecutor,
}

/// Opens a checkpoint directory and builds its graph.
pub fn load(path: &Path) -> Result<Loaded> {
    let checkpoint = Checkpoint::open(path)?;
    let model = build(&checkpoint.config, &checkpoint.weights)
        .with_context(|| format!("building the graph of {}", checkpoint.dir.display()))?;
    let exec = CpuExecutor::new(model.graph.clone())?;
    Ok(Loaded { checkpoint, model, exec })
}

/// Prefill of `input_ids`, then one decode step per column of `decode_input_ids`.
pub fn run(
    model: &Model,
    exec: &dyn crate::exec::Executor,
    inputs: &Inputs,
    taps: &[&str],
) -> Result<Outputs> {
    let mut session = Session::new(model, exec);
    let step = session.prefill(&inputs.input_ids, inputs.attention_mask.as_ref(), taps)?;
    let decode_logits = match &inputs.decode_input_ids {
        None => None,
        Some(dec) => {
            let b = inputs.input_ids.len();
            ensure!(
                dec.len() == b,
                "`decode_input_ids` has {} rows, `input_ids` has {b}",
                dec.len()
            );
            let n = dec.first().map_or(0, Vec::len);
            ensure!(
                dec.iter().all(|r| r.len() == n),
                "`decode_input_ids` rows must have equal lengths"
            );
            let v = model.config.vocab_size;
            let mut out = vec![0f32; b * n * v];
            for k in 0..n {
                let ids: Vec<i64> = dec.iter().map(|r| r[k]).collect();
                let st = session.decode(&ids, &[]).with_context(|| format!("decode step {k}"))?;
                let l = st.logits.as_f32()?;
                for bi in 0..b {
                    out[(bi * n + k) * v..(bi * n + k + 1) * v]
                        .copy_from_slice(&l[bi * v..(bi + 1) * v]);
                }
            }
            Some(Tensor::f32(vec![b, n, v], out)?)
        }
    };
    Ok(Outputs { logits: step.logits, decode_logits, taps: step.taps })
}

/// Writes f32 tensors to a safetensors file atomically (a temporary file in the same folder, then a rename).
pub fn write_safetensors(path: &Path, tensors: &[(&str, &Tensor)]) -> Result<()> {
    let bytes: Vec<(String, Vec<u8>, Vec<usize>)> = tensors
        .iter()
        .map(|(n, t)| {
            Ok((n.to_string(), bytemuck::cast_slice(t.as_f32()?).to_vec(), t.dims().to_vec()))
        })
        .collect::<Result<_>>()?;
    let views: Vec<(String, safetensors::tensor::TensorView)> = bytes
        .iter()
        .map(|(n, b, d)| {
            Ok((
                n.clone(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, d.clone(), b)?,
            ))
        })
        .collect::<Result<_>>()?;
    let data = safetensors::tensor::serialize(views, None)?;
    write_atomic(path, &data)
}

/// Writes `data` to `path` through a temporary file and a rename, so `path` is either the old or the new file.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name =
        path.file_name().with_context(|| format!("{} is not a file path", path.display()))?;
    let tmp = dir.join(format!(".{}.tmp-{}", name.to_string_lossy(), std::process::id()));
    std::fs::write(&tmp, data).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        anyhow::anyhow!("renaming {} to {}: {e}", tmp.display(), path.display())
    })
}

/// Where and how `cheems run`, `check` and `bench` execute.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Device {
    /// The CPU executor on the graph as built (the oracle).
    Cpu,
    /// The CUDA executor on the compiled graph (packed linears, fused glue), device 0.
    Cuda,
}

/// A loaded checkpoint ready to run on a device.
pub struct Prepared {
    pub checkpoint: Checkpoint,
    pub model: Model,
    pub exec: Box<dyn crate::exec::Executor>,
    /// Rewrites applied by the compile passes (CUDA).
    pub rewrites: std::collections::BTreeMap<&'static str, usize>,
}

/// Opens a checkpoint and prepares it for `device` (`dtype` applies to CUDA: f32 or bf16 activations).
pub fn prepare(
    path: &Path,
    device: Device,
    dtype: crate::exec::cuda::ActDType,
) -> Result<Prepared> {
    let checkpoint = Checkpoint::open(path)?;
    let mut model = build(&checkpoint.config, &checkpoint.weights)
        .with_context(|| format!("building the graph of {}", checkpoint.dir.display()))?;
    match device {
        Device::Cpu => {
            let exec = Box::new(CpuExecutor::new(model.graph.clone())?);
            Ok(Prepared { checkpoint, model, exec, rewrites: Default::default() })
        }
        Device::Cuda => {
            let opts = crate::passes::CompileOptions::new(crate::passes::lower::Target::Cuda);
            let cx = crate::passes::compile(&mut model.graph, &opts)?;
            let gpu = std::sync::Arc::new(cheems_ops::cuda::Gpu::new(0)?);
            let exec =
                Box::new(crate::exec::cuda::CudaExecutor::new(model.graph.clone(), gpu, dtype)?);
            Ok(Prepared { checkpoint, model, exec, rewrites: cx.rewrites })
        }
    }
}
