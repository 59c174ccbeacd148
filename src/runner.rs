//! The `run` contract shared by the CLI and the library: read `INPUTS.json`, prefill, decode step by step, and
//! write `logits` / `decode_logits` to safetensors.

use crate::artifact::{self, ArtifactTarget};
use crate::exec::cpu::CpuExecutor;
use crate::exec::cuda::ActDType;
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

/// A loaded checkpoint (or CPU artifact) with its graph and CPU executor.
pub struct Loaded {
    pub model: Model,
    pub exec: CpuExecutor,
    /// Parameters stored in the checkpoint (the artifact's source checkpoint).
    pub num_params: usize,
}

/// Opens a checkpoint directory and builds its graph, or opens a `--target cpu` artifact of `cheems compile`.
pub fn load(path: &Path) -> Result<Loaded> {
    if artifact::is_artifact(path) {
        let a = artifact::open(path)?;
        ensure!(
            a.target()? == ArtifactTarget::Cpu,
            "{}: compiled for {} (manifest field `target`), but this command runs on the CPU: compile the \
             checkpoint with --target cpu",
            a.dir.display(),
            a.manifest.target
        );
        let exec = CpuExecutor::new(a.model.graph.clone())?;
        return Ok(Loaded { num_params: a.manifest.checkpoint.parameters, model: a.model, exec });
    }
    let checkpoint = Checkpoint::open(path)?;
    let model = build(&checkpoint.config, &checkpoint.weights)
        .with_context(|| format!("building the graph of {}", checkpoint.dir.display()))?;
    let exec = CpuExecutor::new(model.graph.clone())?;
    Ok(Loaded { num_params: checkpoint.weights.num_params(), model, exec })
}

/// Prefill of `input_ids`, then one decode step per column of `decode_input_ids`.
pub fn run(
    model: &Model,
    exec: &dyn crate::exec::Executor,
    inputs: &Inputs,
    taps: &[&str],
) -> Result<Outputs> {
    let mut session = Session::new(model, exec);
    let steps = inputs.decode_input_ids.as_ref().and_then(|d| d.first()).map_or(0, Vec::len);
    session.reserve(inputs.input_ids.first().map_or(0, Vec::len) + steps);
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

/// A loaded checkpoint or artifact ready to run on a device.
pub struct Prepared {
    pub model: Model,
    pub exec: Box<dyn crate::exec::Executor>,
    /// Rewrites applied by the compile passes (CUDA).
    pub rewrites: BTreeMap<String, usize>,
    /// Parameters stored in the checkpoint (the artifact's source checkpoint).
    pub num_params: usize,
    /// Where it runs.
    pub device: Device,
}

/// Opens a checkpoint or artifact and prepares it for `device` (`dtype` applies to CUDA: f32 or bf16
/// activations).
pub fn prepare(path: &Path, device: Device, dtype: ActDType) -> Result<Prepared> {
    prepare_with(path, Some(device), Some(dtype))
}

/// [`prepare`] where `None` means the artifact's own target and dtype (for a checkpoint: the CPU, f32). An
/// artifact runs only on its target and in its dtype; asking for another is an error naming both.
pub fn prepare_with(
    path: &Path,
    device: Option<Device>,
    dtype: Option<ActDType>,
) -> Result<Prepared> {
    if artifact::is_artifact(path) {
        let a = artifact::open(path)?;
        let target = a.target()?;
        let wanted = device.unwrap_or(match target {
            ArtifactTarget::Cpu => Device::Cpu,
            ArtifactTarget::Cuda { .. } => Device::Cuda,
        });
        match (&target, wanted) {
            (ArtifactTarget::Cpu, Device::Cpu) => {
                let exec = Box::new(CpuExecutor::new(a.model.graph.clone())?);
                let num_params = a.manifest.checkpoint.parameters;
                return Ok(Prepared {
                    model: a.model,
                    exec,
                    rewrites: BTreeMap::new(),
                    num_params,
                    device: Device::Cpu,
                });
            }
            (ArtifactTarget::Cuda { .. }, Device::Cuda) => {
                let c = cuda_from_artifact(a, dtype)?;
                let exec = Box::new(c.exec);
                return Ok(Prepared {
                    model: c.model,
                    exec,
                    rewrites: c.rewrites,
                    num_params: c.num_params,
                    device: Device::Cuda,
                });
            }
            _ => bail!(
                "{}: compiled for {} (manifest field `target`), asked to run on {}: compile the checkpoint for \
                 that target",
                a.dir.display(),
                a.manifest.target,
                format!("{wanted:?}").to_lowercase()
            ),
        }
    }
    let dtype = dtype.unwrap_or(ActDType::F32);
    match device.unwrap_or(Device::Cpu) {
        Device::Cpu => {
            let checkpoint = Checkpoint::open(path)?;
            let model = build(&checkpoint.config, &checkpoint.weights)
                .with_context(|| format!("building the graph of {}", checkpoint.dir.display()))?;
            let exec = Box::new(CpuExecutor::new(model.graph.clone())?);
            let num_params = checkpoint.weights.num_params();
            Ok(Prepared { model, exec, rewrites: BTreeMap::new(), num_params, device: Device::Cpu })
        }
        Device::Cuda => {
            let c = prepare_cuda(path, Some(dtype))?;
            Ok(Prepared {
                model: c.model,
                exec: Box::new(c.exec),
                rewrites: c.rewrites,
                num_params: c.num_params,
                device: Device::Cuda,
            })
        }
    }
}

/// Where `path` runs when no device is asked for: an artifact's target, else the CPU.
pub fn default_device(path: &Path) -> Result<Device> {
    if !artifact::is_artifact(path) {
        return Ok(Device::Cpu);
    }
    let dir = if path.is_dir() { path } else { path.parent().unwrap_or(Path::new(".")) };
    let m = artifact::read_manifest(dir)?;
    Ok(if m.target.starts_with("cuda") { Device::Cuda } else { Device::Cpu })
}

/// A model bound to the CUDA executor (device 0).
pub struct CudaPrepared {
    pub model: Model,
    pub exec: crate::exec::cuda::CudaExecutor,
    pub rewrites: BTreeMap<String, usize>,
    pub num_params: usize,
}

/// Opens a checkpoint (compiling its graph for CUDA now) or a CUDA artifact (its compiled graph and CUBINs) on
/// device 0. `dtype` `None` is the artifact's dtype, or f32 for a checkpoint.
pub fn prepare_cuda(path: &Path, dtype: Option<ActDType>) -> Result<CudaPrepared> {
    let opts = crate::passes::CompileOptions::new(crate::passes::lower::Target::Cuda);
    prepare_cuda_with(path, dtype, &opts)
}

/// [`prepare_cuda`] with the compile options of a checkpoint's graph; an artifact's graph is compiled already, so
/// for one any packing or fusion switch in `opts` is an error.
pub fn prepare_cuda_with(
    path: &Path,
    dtype: Option<ActDType>,
    opts: &crate::passes::CompileOptions,
) -> Result<CudaPrepared> {
    if artifact::is_artifact(path) {
        ensure!(
            !opts.no_fuse && opts.fuse.disabled.is_empty(),
            "{}: an artifact's graph is compiled already; --no-fuse and --disable-rule apply to checkpoints",
            path.display()
        );
        let a = artifact::open(path)?;
        ensure!(
            matches!(a.target()?, ArtifactTarget::Cuda { .. }),
            "{}: compiled for {} (manifest field `target`), asked to run on CUDA: compile the checkpoint with \
             --target cuda:sm_XY",
            a.dir.display(),
            a.manifest.target
        );
        return cuda_from_artifact(a, dtype);
    }
    let checkpoint = Checkpoint::open(path)?;
    let mut model = build(&checkpoint.config, &checkpoint.weights)
        .with_context(|| format!("building the graph of {}", checkpoint.dir.display()))?;
    opts.validate()?;
    let cx = crate::passes::compile(&mut model.graph, opts)?;
    let gpu = std::sync::Arc::new(cheems_ops::cuda::Gpu::new(0)?);
    let exec = crate::exec::cuda::CudaExecutor::new(
        model.graph.clone(),
        gpu,
        dtype.unwrap_or(ActDType::F32),
    )?;
    let rewrites = cx.rewrites.iter().map(|(k, v)| (k.to_string(), *v)).collect();
    Ok(CudaPrepared { model, exec, rewrites, num_params: checkpoint.weights.num_params() })
}

/// Binds a CUDA artifact to device 0: checks the dtype and the device's architecture against the manifest and
/// loads the artifact's CUBINs (NVRTC is needed only for a kernel source this build has and the artifact lacks).
fn cuda_from_artifact(mut a: artifact::Artifact, dtype: Option<ActDType>) -> Result<CudaPrepared> {
    let manifest_path = a.dir.join(artifact::MANIFEST);
    let act = a.act_dtype()?;
    if let Some(d) = dtype {
        ensure!(
            d == act,
            "{}: manifest field `dtype` is {}, but {} activations were asked for: compile with --dtype {}",
            manifest_path.display(),
            act.name(),
            d.name(),
            d.name()
        );
    }
    let ArtifactTarget::Cuda { arch } = a.target()? else {
        bail!("{}: not a CUDA artifact", a.dir.display())
    };
    let cubins = a.cubins.take().unwrap_or_default();
    let missing = cubins.missing();
    let gpu = cheems_ops::cuda::Gpu::with_cubins(0, cubins)?;
    ensure!(
        gpu.arch() == arch,
        "{}: manifest field `arch` is {arch}, but device 0 is {}: compile with --target cuda:{}",
        manifest_path.display(),
        gpu.arch(),
        gpu.arch()
    );
    if !missing.is_empty() {
        if let Err(e) = cheems_ops::cuda::probe_nvrtc() {
            bail!(
                "{}: the artifact has no CUBIN for this build's kernel source(s) {} (compiled by another cheems), and \
                 NVRTC is not available to compile them ({e}): recompile the artifact with this cheems",
                a.dir.display(),
                missing.join(", ")
            );
        }
    }
    let exec =
        crate::exec::cuda::CudaExecutor::new(a.model.graph.clone(), std::sync::Arc::new(gpu), act)?;
    Ok(CudaPrepared {
        rewrites: a.manifest.passes.rewrites.clone(),
        num_params: a.manifest.checkpoint.parameters,
        model: a.model,
        exec,
    })
}
