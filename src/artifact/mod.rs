//! Compiled artifacts (`cheems compile`): a directory holding a checkpoint's graph after the compile passes, its
//! weights packed as they are uploaded, and for CUDA the CUBIN of every kernel source, so that `run`, `generate`,
//! `bench` and `eval` load it without building, compiling or (on a GPU) calling NVRTC.
//!
//! Layout of `OUT.cheems/`:
//!
//! | file | contents |
//! |---|---|
//! | `manifest.json` | format and versions, target, arch, dtypes, model config, pass options, boundary, states, file list with sizes and hashes |
//! | `graph.json` | the session graph after the passes ([`graph`]) |
//! | `weights.safetensors` | one tensor per weight node, named after the node, in the dtype it is uploaded in |
//! | `kernels/{stem}-{arch}-{hash}.cubin` | CUDA only: NVRTC output for every kernel source of `cheems-ops` |
//! | `tokenizer.json`, `mqar.json` | copied from the checkpoint when it has them |
//!
//! The same checkpoint, options and cheems build give a byte-identical directory.

pub mod graph;

use crate::exec::cuda::ActDType;
use crate::ir::{DType, Fact, Op};
use crate::model::build::{build, Model, StateSpec};
use crate::model::checkpoint::{Checkpoint, Weights};
use crate::model::config::ModelConfig;
use crate::passes::{self, lower::Target, CompileOptions};
use anyhow::{anyhow, bail, ensure, Context, Result};
use cheems_ops::cuda::{self as gpu, CubinSet};
use half::{bf16, f16};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The `format` field of every manifest.
pub const FORMAT: &str = "cheems-artifact";
/// Version of the layout and of every file in it; a reader accepts exactly this version.
pub const FORMAT_VERSION: u32 = 1;
/// File names inside an artifact.
pub const MANIFEST: &str = "manifest.json";
pub const GRAPH: &str = "graph.json";
pub const WEIGHTS: &str = "weights.safetensors";
pub const KERNELS: &str = "kernels";
/// Files copied from the checkpoint when present (the tokenizer for `generate` and `eval ppl`, the MQAR task).
pub const COPIED: [&str; 2] = ["tokenizer.json", "mqar.json"];

/// Where an artifact runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ArtifactTarget {
    /// The CPU executor.
    Cpu,
    /// The CUDA executor on GPUs of architecture `arch` (`sm_90`).
    Cuda { arch: String },
}

impl ArtifactTarget {
    /// Parses `cpu` or `cuda:sm_<major><minor>`.
    pub fn parse(s: &str) -> Result<ArtifactTarget> {
        if s == "cpu" {
            return Ok(ArtifactTarget::Cpu);
        }
        let Some(arch) = s.strip_prefix("cuda:") else {
            bail!("target `{s}`: expected `cpu` or `cuda:sm_XY` (e.g. cuda:sm_90)")
        };
        let digits = arch.strip_prefix("sm_").unwrap_or("");
        ensure!(
            digits.len() >= 2 && digits.chars().all(|c| c.is_ascii_digit()),
            "target `{s}`: the architecture must be `sm_` followed by the compute capability (e.g. sm_90)"
        );
        Ok(ArtifactTarget::Cuda { arch: arch.to_string() })
    }

    /// `cpu` or `cuda:sm_90`.
    pub fn name(&self) -> String {
        match self {
            ArtifactTarget::Cpu => "cpu".into(),
            ArtifactTarget::Cuda { arch } => format!("cuda:{arch}"),
        }
    }
}

/// The checkpoint an artifact was compiled from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SourceInfo {
    /// The checkpoint path as given to `compile`.
    pub path: String,
    pub storage_dtype: DType,
    pub parameters: usize,
}

/// The compile passes that ran and what they did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PassInfo {
    pub pipeline: Vec<String>,
    pub no_fuse: bool,
    pub disabled_rules: Vec<String>,
    pub rewrites: BTreeMap<String, usize>,
}

/// A file of the artifact: its path relative to the artifact, size and FNV-1a 64 hash (hex).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FileInfo {
    pub file: String,
    pub bytes: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fnv1a64: Option<String>,
}

/// A graph input or output.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ValueInfo {
    pub name: String,
    pub fact: String,
}

/// One CUBIN: the kernel source file it was compiled from, its key (source, arch, source hash) and its file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CubinInfo {
    pub source: String,
    pub key: String,
    #[serde(flatten)]
    pub file: FileInfo,
}

/// The CUDA kernels of the artifact.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KernelsInfo {
    /// NVRTC's version as `major.minor`.
    pub nvrtc_version: String,
    /// NVRTC options, include folders left out.
    pub options: Vec<String>,
    pub cubins: Vec<CubinInfo>,
}

/// `manifest.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub format_version: u32,
    pub cheems_version: String,
    pub git_commit: Option<String>,
    /// `cpu` or `cuda:sm_90`.
    pub target: String,
    /// CUDA architecture; `null` on the CPU.
    pub arch: Option<String>,
    /// Activation dtype (`f32` on the CPU; `f32`, `bf16` or `f16` on CUDA).
    pub dtype: DType,
    /// How the weights are stored: `auto` (each in the checkpoint's dtype where that is exact, else as it is
    /// uploaded) or the dtype asked for.
    pub weight_dtype: String,
    pub checkpoint: SourceInfo,
    pub config: ModelConfig,
    pub passes: PassInfo,
    pub inputs: Vec<ValueInfo>,
    pub outputs: Vec<ValueInfo>,
    /// The session state: `past.*` inputs carried to `present.*` outputs.
    pub states: Vec<StateSpec>,
    pub graph: FileInfo,
    pub weights: FileInfo,
    /// Weights per stored dtype.
    pub weight_dtypes: BTreeMap<DType, usize>,
    pub kernels: Option<KernelsInfo>,
    /// `tokenizer.json` when the checkpoint has one.
    pub tokenizer: Option<String>,
    /// Other files copied from the checkpoint.
    pub copied: Vec<String>,
}

/// What `compile` builds.
#[derive(Clone, Debug)]
pub struct CompileSpec {
    pub target: ArtifactTarget,
    /// CPU: the weight storage dtype (`None`: lossless, see [`Manifest::weight_dtype`]). CUDA: the activation
    /// dtype (`None`: f32); the weights follow it.
    pub dtype: Option<DType>,
    pub no_fuse: bool,
    pub disabled_rules: Vec<String>,
    /// Progress bars on stderr.
    pub progress: bool,
}

/// What `compile` did, for the CLI's summary.
#[derive(Clone, Debug, Serialize)]
pub struct CompileSummary {
    pub output: String,
    pub manifest: Manifest,
    /// Nodes of the compiled graph.
    pub nodes: usize,
    /// Bytes written in all.
    pub bytes: u64,
    pub seconds: BTreeMap<String, f64>,
}

/// Whether `path` is a compiled artifact (a directory with a manifest, or the manifest itself).
pub fn is_artifact(path: &Path) -> bool {
    path.join(MANIFEST).is_file()
        || path.file_name().is_some_and(|n| n == MANIFEST) && path.is_file()
}

fn artifact_dir(path: &Path) -> PathBuf {
    if path.file_name().is_some_and(|n| n == MANIFEST) && path.is_file() {
        path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf()
    } else {
        path.to_path_buf()
    }
}

fn hex(h: u64) -> String {
    format!("{h:016x}")
}

fn file_info(file: &str, bytes: &[u8], hash: bool) -> FileInfo {
    FileInfo {
        file: file.to_string(),
        bytes: bytes.len() as u64,
        fnv1a64: hash.then(|| hex(gpu::cubin::fnv1a64(bytes))),
    }
}

fn value_infos(values: impl Iterator<Item = (String, Fact)>) -> Vec<ValueInfo> {
    values.map(|(name, f)| ValueInfo { name, fact: f.to_string() }).collect()
}

/// Whether every value survives a round trip through `dtype`.
fn exact_in(values: &[f32], dtype: DType) -> bool {
    match dtype {
        DType::BF16 => values.iter().all(|&x| bf16::from_f32(x).to_f32().to_bits() == x.to_bits()),
        DType::F16 => values.iter().all(|&x| f16::from_f32(x).to_f32().to_bits() == x.to_bits()),
        _ => true,
    }
}

fn encode(values: &[f32], dtype: DType) -> Vec<u8> {
    match dtype {
        DType::BF16 => values.iter().flat_map(|&x| bf16::from_f32(x).to_le_bytes()).collect(),
        DType::F16 => values.iter().flat_map(|&x| f16::from_f32(x).to_le_bytes()).collect(),
        _ => values.iter().flat_map(|&x| x.to_le_bytes()).collect(),
    }
}

fn st_dtype(d: DType) -> safetensors::Dtype {
    match d {
        DType::F32 => safetensors::Dtype::F32,
        DType::F16 => safetensors::Dtype::F16,
        DType::BF16 => safetensors::Dtype::BF16,
        DType::I64 => safetensors::Dtype::I64,
    }
}

/// A progress bar on stderr (indicatif draws it only when stderr is a terminal).
fn progress(len: u64, msg: &str, show: bool) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len);
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{elapsed_precise} [{bar:40}] {pos}/{len} {msg}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(msg.to_string());
    bar
}

/// The files of an artifact, in memory, before they are written.
struct Files {
    files: Vec<(String, Vec<u8>)>,
}

/// Compiles the checkpoint at `ckpt` into the artifact directory `out` (see the module docs). The directory is
/// built next to `out` and renamed into place: on failure an existing artifact at `out` is left as it was.
pub fn compile(ckpt: &Path, out: &Path, spec: &CompileSpec) -> Result<CompileSummary> {
    let mut seconds = BTreeMap::new();
    let t = std::time::Instant::now();
    let ck = Checkpoint::open(ckpt)?;
    let mut model = build(&ck.config, &ck.weights)
        .with_context(|| format!("building the graph of {}", ck.dir.display()))?;
    seconds.insert("build".to_string(), t.elapsed().as_secs_f64());

    let (pass_target, act) = match (&spec.target, spec.dtype) {
        (ArtifactTarget::Cpu, _) => (Target::Cpu, ActDType::F32),
        (ArtifactTarget::Cuda { .. }, None) => (Target::Cuda, ActDType::F32),
        (ArtifactTarget::Cuda { .. }, Some(d)) => match ActDType::of_storage(d) {
            Some(a) => (Target::Cuda, a),
            None => bail!("--dtype {d}: the CUDA executor runs f32, bf16 or f16 activations"),
        },
    };
    if let (ArtifactTarget::Cpu, Some(d)) = (&spec.target, spec.dtype) {
        ensure!(d != DType::I64, "--dtype {d}: weights are stored as f32, bf16 or f16");
    }
    let t = std::time::Instant::now();
    let mut opts = CompileOptions::new(pass_target);
    // The CPU executor is the oracle and runs the graph as built: packing and fusion would only reorder its sums.
    opts.no_fuse = spec.no_fuse || pass_target == Target::Cpu;
    opts.fuse.disabled = spec.disabled_rules.clone();
    opts.verify = true;
    model.graph.verify().context("verifying the graph as built")?;
    let cx = passes::compile(&mut model.graph, &opts)?;
    seconds.insert("passes".to_string(), t.elapsed().as_secs_f64());
    let pass_info = PassInfo {
        pipeline: passes::pipeline(&opts).iter().map(|p| p.name().to_string()).collect(),
        no_fuse: opts.no_fuse,
        disabled_rules: opts.fuse.disabled.clone(),
        rewrites: cx.rewrites.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
    };

    let t = std::time::Instant::now();
    let upload: BTreeMap<String, DType> = match pass_target {
        Target::Cpu => BTreeMap::new(),
        Target::Cuda => crate::exec::cuda::const_dtypes(&model.graph, act)?,
    };
    let mut files = Files { files: Vec::new() };
    let (weights_bytes, weight_dtypes) =
        pack_weights(&model, &ck, spec, &upload).context("packing the weights")?;
    seconds.insert("weights".to_string(), t.elapsed().as_secs_f64());
    let graph_text = graph::write_graph(&model.graph)?;

    let t = std::time::Instant::now();
    let kernels = match &spec.target {
        ArtifactTarget::Cpu => None,
        ArtifactTarget::Cuda { arch } => Some(compile_kernels(arch, spec.progress, &mut files)?),
    };
    seconds.insert("kernels".to_string(), t.elapsed().as_secs_f64());

    let mut copied = Vec::new();
    for name in COPIED {
        let p = ck.dir.join(name);
        if p.is_file() {
            let bytes = std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?;
            files.files.push((name.to_string(), bytes));
            copied.push(name.to_string());
        }
    }
    let tokenizer = copied.iter().find(|n| *n == "tokenizer.json").cloned();
    copied.retain(|n| n != "tokenizer.json");

    let g = &model.graph;
    let outputs: Vec<(String, Fact)> = g
        .outputs()
        .iter()
        .map(|(n, v)| Ok((n.clone(), g.fact(*v)?.clone())))
        .collect::<Result<_>>()?;
    let manifest = Manifest {
        format: FORMAT.into(),
        format_version: FORMAT_VERSION,
        cheems_version: env!("CARGO_PKG_VERSION").into(),
        git_commit: option_env!("CHEEMS_GIT_COMMIT").map(str::to_string),
        target: spec.target.name(),
        arch: match &spec.target {
            ArtifactTarget::Cpu => None,
            ArtifactTarget::Cuda { arch } => Some(arch.clone()),
        },
        dtype: act.storage(),
        weight_dtype: match (&spec.target, spec.dtype) {
            (ArtifactTarget::Cpu, Some(d)) => d.name().into(),
            _ => "auto".into(),
        },
        checkpoint: SourceInfo {
            path: ckpt.display().to_string(),
            storage_dtype: ck.storage_dtype,
            parameters: ck.weights.num_params(),
        },
        config: model.config.clone(),
        passes: pass_info,
        inputs: value_infos(
            g.inputs().iter().map(|id| (g.node(*id).name.clone(), g.node(*id).outputs[0].clone())),
        ),
        outputs: value_infos(outputs.into_iter()),
        states: model.states.clone(),
        graph: file_info(GRAPH, graph_text.as_bytes(), true),
        weights: file_info(WEIGHTS, &weights_bytes, false),
        weight_dtypes,
        kernels,
        tokenizer,
        copied,
    };
    files.files.push((GRAPH.to_string(), graph_text.into_bytes()));
    files.files.push((WEIGHTS.to_string(), weights_bytes));
    let mut text = serde_json::to_string_pretty(&manifest)?;
    text.push('\n');
    files.files.push((MANIFEST.to_string(), text.into_bytes()));

    let t = std::time::Instant::now();
    let bytes = files.files.iter().map(|(_, b)| b.len() as u64).sum();
    write_dir_atomic(out, &files)?;
    seconds.insert("write".to_string(), t.elapsed().as_secs_f64());
    let nodes = model.graph.node_count();
    Ok(CompileSummary { output: out.display().to_string(), manifest, nodes, bytes, seconds })
}

/// The weights file: each weight node's tensor under the node's name. CUDA stores each as it is uploaded; f32
/// ones (and every CPU weight under `auto`) go in the checkpoint's storage dtype where that is exact.
fn pack_weights(
    model: &Model,
    ck: &Checkpoint,
    spec: &CompileSpec,
    upload: &BTreeMap<String, DType>,
) -> Result<(Vec<u8>, BTreeMap<DType, usize>)> {
    let g = &model.graph;
    let mut tensors: Vec<(String, DType, Vec<u8>, Vec<usize>)> = Vec::new();
    let mut counts = BTreeMap::new();
    let consts: Vec<_> =
        g.node_ids().into_iter().filter(|id| matches!(g.node(*id).op, Op::Const(_))).collect();
    let bar = progress(consts.len() as u64, "packing weights", spec.progress);
    for id in consts {
        let node = g.node(id);
        let Op::Const(c) = &node.op else { unreachable!("filtered to weights") };
        let t = &c.0;
        if t.dtype() == DType::I64 {
            bail!("weight `{}` is i64; artifacts store float weights only", node.name);
        }
        let values = t.as_f32()?;
        let forced = match spec.target {
            ArtifactTarget::Cpu => spec.dtype,
            ArtifactTarget::Cuda { .. } => {
                upload.get(&node.name).copied().filter(|d| *d != DType::F32)
            }
        };
        let dtype = forced.unwrap_or_else(|| {
            if exact_in(values, ck.storage_dtype) {
                ck.storage_dtype
            } else {
                DType::F32
            }
        });
        *counts.entry(dtype).or_insert(0) += 1;
        tensors.push((node.name.clone(), dtype, encode(values, dtype), t.dims().to_vec()));
        bar.inc(1);
    }
    bar.finish_and_clear();
    let views = tensors
        .iter()
        .map(|(n, d, b, dims)| {
            let v = safetensors::tensor::TensorView::new(st_dtype(*d), dims.clone(), b)
                .map_err(|e| anyhow!("weight `{n}`: {e}"))?;
            Ok((n.clone(), v))
        })
        .collect::<Result<Vec<_>>>()?;
    let meta = std::collections::HashMap::from([("format".to_string(), FORMAT.to_string())]);
    let bytes = safetensors::tensor::serialize(views, Some(meta))?;
    Ok((bytes, counts))
}

/// CUBINs of every kernel source of `cheems-ops` for `arch` (through the NVRTC disk cache), added to `files`.
fn compile_kernels(arch: &str, show: bool, files: &mut Files) -> Result<KernelsInfo> {
    gpu::probe_nvrtc().context("compiling the CUDA kernels needs NVRTC")?;
    let (major, minor) = gpu::nvrtc_version()?;
    let sources = gpu::all_sources();
    let bar = progress(sources.len() as u64, "compiling kernels (NVRTC)", show);
    let mut cubins = Vec::new();
    for src in &sources {
        bar.set_message(format!("compiling {}", src.file));
        let cubin = gpu::compile_cubin(src, arch)?;
        let key = gpu::cubin_key(src, arch);
        let file = format!("{KERNELS}/{key}.cubin");
        cubins.push(CubinInfo {
            source: src.file.to_string(),
            key,
            file: file_info(&file, &cubin, true),
        });
        files.files.push((file, cubin));
        bar.inc(1);
    }
    bar.finish_and_clear();
    let options = gpu::nvrtc_options(arch).into_iter().filter(|o| !o.starts_with("-I")).collect();
    Ok(KernelsInfo { nvrtc_version: format!("{major}.{minor}"), options, cubins })
}

/// Writes `files` into a fresh directory next to `out`, then renames it to `out`. An existing `out` must be an
/// artifact (it is replaced only once the new one is complete); anything else there is refused.
fn write_dir_atomic(out: &Path, files: &Files) -> Result<()> {
    let parent = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = out
        .file_name()
        .with_context(|| format!("{}: not a usable output path", out.display()))?
        .to_string_lossy()
        .to_string();
    if out.exists() && !out.join(MANIFEST).is_file() {
        bail!(
            "{} exists and is not a cheems artifact (no {MANIFEST}); refusing to replace it",
            out.display()
        );
    }
    std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    let tmp = parent.join(format!(".{name}.tmp-{}", std::process::id()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).with_context(|| format!("removing {}", tmp.display()))?;
    }
    let filled = (|| -> Result<()> {
        for (rel, bytes) in &files.files {
            let p = tmp.join(rel);
            if let Some(d) = p.parent() {
                std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
            }
            std::fs::write(&p, bytes).with_context(|| format!("writing {}", p.display()))?;
        }
        Ok(())
    })();
    if let Err(e) = filled {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    if out.exists() {
        let old = parent.join(format!(".{name}.old-{}", std::process::id()));
        std::fs::rename(out, &old).map_err(|e| {
            let _ = std::fs::remove_dir_all(&tmp);
            anyhow!("moving the previous artifact {} aside: {e}", out.display())
        })?;
        if let Err(e) = std::fs::rename(&tmp, out) {
            let _ = std::fs::rename(&old, out);
            let _ = std::fs::remove_dir_all(&tmp);
            bail!("renaming {} to {}: {e}", tmp.display(), out.display());
        }
        let _ = std::fs::remove_dir_all(&old);
    } else {
        std::fs::rename(&tmp, out).map_err(|e| {
            let _ = std::fs::remove_dir_all(&tmp);
            anyhow!("renaming {} to {}: {e}", tmp.display(), out.display())
        })?;
    }
    Ok(())
}

/// An opened artifact: its manifest, the model (config, graph with weights, states) and, for CUDA, its CUBINs.
pub struct Artifact {
    pub dir: PathBuf,
    pub manifest: Manifest,
    pub model: Model,
    pub cubins: Option<CubinSet>,
}

impl Artifact {
    /// The target as parsed from the manifest.
    pub fn target(&self) -> Result<ArtifactTarget> {
        ArtifactTarget::parse(&self.manifest.target)
            .with_context(|| format!("{}: field `target`", self.dir.join(MANIFEST).display()))
    }

    /// The activation dtype of a CUDA artifact.
    pub fn act_dtype(&self) -> Result<ActDType> {
        ActDType::of_storage(self.manifest.dtype).with_context(|| {
            format!(
                "{}: field `dtype` is {}, not an activation dtype (f32, bf16 or f16)",
                self.dir.join(MANIFEST).display(),
                self.manifest.dtype
            )
        })
    }
}

fn read(dir: &Path, rel: &str) -> Result<Vec<u8>> {
    let p = dir.join(rel);
    std::fs::read(&p)
        .with_context(|| format!("{}: missing or unreadable artifact file", p.display()))
}

/// Checks a file read from the artifact against its manifest entry (`field`).
fn check_file(dir: &Path, info: &FileInfo, field: &str, bytes: &[u8]) -> Result<()> {
    let p = dir.join(&info.file);
    ensure!(
        bytes.len() as u64 == info.bytes,
        "{}: {} bytes, but the manifest field `{field}.bytes` says {}: the artifact is truncated or corrupted",
        p.display(),
        bytes.len(),
        info.bytes
    );
    if let Some(want) = &info.fnv1a64 {
        let got = hex(gpu::cubin::fnv1a64(bytes));
        ensure!(
            &got == want,
            "{}: content hash {got}, but the manifest field `{field}.fnv1a64` says {want}: the artifact is corrupted",
            p.display()
        );
    }
    Ok(())
}

/// Reads and checks `manifest.json`: the format, then its version, then every field.
pub fn read_manifest(dir: &Path) -> Result<Manifest> {
    let path = dir.join(MANIFEST);
    let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let v: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| anyhow!("{}: malformed JSON: {e}", path.display()))?;
    let format = v.get("format").and_then(|f| f.as_str());
    ensure!(
        format == Some(FORMAT),
        "{}: field `format` is {}, expected \"{FORMAT}\": not a cheems artifact",
        path.display(),
        v.get("format").map_or("missing".to_string(), |f| f.to_string())
    );
    let version = v.get("format_version").and_then(|f| f.as_u64());
    ensure!(
        version == Some(u64::from(FORMAT_VERSION)),
        "{}: field `format_version` is {}, this cheems reads version {FORMAT_VERSION}: recompile the artifact with \
         this cheems",
        path.display(),
        v.get("format_version").map_or("missing".to_string(), |f| f.to_string())
    );
    serde_json::from_value(v).map_err(|e| anyhow!("{}: invalid manifest: {e}", path.display()))
}

/// Opens an artifact directory (or its `manifest.json`): checks the manifest, the file sizes and hashes, maps the
/// weights and wires the graph again. Needs no GPU; the arch is checked against the device by the caller.
pub fn open(path: &Path) -> Result<Artifact> {
    let dir = artifact_dir(path);
    let manifest = read_manifest(&dir)?;
    let mpath = dir.join(MANIFEST);
    let target = ArtifactTarget::parse(&manifest.target)
        .with_context(|| format!("{}: field `target`", mpath.display()))?;
    let graph_bytes = read(&dir, &manifest.graph.file)?;
    check_file(&dir, &manifest.graph, "graph", &graph_bytes)?;
    let wpath = dir.join(&manifest.weights.file);
    let wlen = std::fs::metadata(&wpath)
        .with_context(|| format!("{}: missing or unreadable artifact file", wpath.display()))?
        .len();
    ensure!(
        wlen == manifest.weights.bytes,
        "{}: {wlen} bytes, but the manifest field `weights.bytes` says {}: the artifact is truncated or corrupted",
        wpath.display(),
        manifest.weights.bytes
    );
    let weights = Weights::open_file(&wpath)?;
    let text = std::str::from_utf8(&graph_bytes)
        .map_err(|_| anyhow!("{}: not UTF-8", dir.join(&manifest.graph.file).display()))?;
    let graph = graph::read_graph(text, &weights, &dir.join(&manifest.graph.file))?;
    for st in &manifest.states {
        ensure!(
            graph.find(&st.past).is_some_and(|id| graph.inputs().contains(&id))
                && graph.output_named(&st.present).is_some(),
            "{}: state `{}` → `{}` is not an input/output pair of the graph",
            mpath.display(),
            st.past,
            st.present
        );
    }
    let cubins = match (&target, &manifest.kernels) {
        (ArtifactTarget::Cpu, _) => None,
        (ArtifactTarget::Cuda { .. }, None) => {
            bail!("{}: a CUDA artifact without the field `kernels`", mpath.display())
        }
        (ArtifactTarget::Cuda { arch }, Some(k)) => {
            ensure!(
                manifest.arch.as_deref() == Some(arch.as_str()),
                "{}: field `arch` is {} but `target` is {}",
                mpath.display(),
                manifest.arch.as_deref().unwrap_or("null"),
                manifest.target
            );
            let mut set = CubinSet::new(arch);
            for (i, c) in k.cubins.iter().enumerate() {
                let bytes = read(&dir, &c.file.file)?;
                check_file(&dir, &c.file, &format!("kernels.cubins[{i}]"), &bytes)?;
                set.insert(c.key.clone(), bytes);
            }
            Some(set)
        }
    };
    let model = Model { config: manifest.config.clone(), graph, states: manifest.states.clone() };
    Ok(Artifact { dir, manifest, model, cubins })
}
