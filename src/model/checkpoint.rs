//! Opening a checkpoint: `config.json` plus memory-mapped safetensors, as one `model.safetensors` or as shards
//! listed in `model.safetensors.index.json`. F32, F16 and BF16 tensors are converted to f32 when taken.

use super::config::ModelConfig;
use super::detect;
use crate::ir::dtype::DType;
use crate::ir::tensor::Tensor;
use anyhow::{anyhow, bail, Context, Result};
use half::{bf16, f16};
use memmap2::Mmap;
use rayon::prelude::*;
use safetensors::tensor::{Metadata, TensorInfo};
use safetensors::{Dtype, SafeTensorError, SafeTensors};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

const CONFIG: &str = "config.json";
const SINGLE: &str = "model.safetensors";
const INDEX: &str = "model.safetensors.index.json";

/// An opened checkpoint: its normalised config and lazily converted weights.
pub struct Checkpoint {
    /// The checkpoint directory.
    pub dir: PathBuf,
    /// The normalised configuration (variant detected, defaults resolved, cross-checked against the tensors).
    pub config: ModelConfig,
    /// The stored tensors.
    pub weights: Weights,
    /// Non-fatal findings (e.g. unreachable expert rows when E is not a perfect square, dtype mix).
    pub problems: Vec<String>,
    /// Dtype most tensors are stored in.
    pub storage_dtype: DType,
}

impl Checkpoint {
    /// Opens a checkpoint directory, or the `config.json` / safetensors file inside one: reads and normalises the
    /// config (variant detection, MODEL.md §5.4), maps the weights and cross-checks the two.
    pub fn open(path: &Path) -> Result<Checkpoint> {
        let dir = checkpoint_dir(path)?;
        let config_path = dir.join(CONFIG);
        if !config_path.is_file() {
            bail!("{}: no {CONFIG} in the checkpoint directory", dir.display());
        }
        let json = read_json(&config_path)?;
        let (weights, mut problems) = Weights::open_dir(&dir)?;
        let shapes = weights.shapes();
        let detected = detect::detect(&json, &shapes, &config_path, &weights.origin)?;
        problems.extend(detected.problems);
        let storage_dtype = weights.storage_dtype(&mut problems);
        Ok(Checkpoint { dir, config: detected.config, weights, problems, storage_dtype })
    }
}

fn checkpoint_dir(path: &Path) -> Result<PathBuf> {
    let meta = fs::metadata(path).with_context(|| {
        format!("checkpoint {} does not exist or cannot be read", path.display())
    })?;
    if meta.is_dir() {
        return Ok(path.to_path_buf());
    }
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    if name == CONFIG || name == INDEX || name.ends_with(".safetensors") {
        let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        return Ok(parent.to_path_buf());
    }
    bail!(
        "{}: expected a checkpoint directory, or the {CONFIG} or a .safetensors file inside one",
        path.display()
    )
}

/// Reads a JSON file; errors name the file, and the line and column of malformed JSON.
fn read_json(path: &Path) -> Result<Value> {
    let bytes = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        anyhow!(
            "{}: not valid UTF-8 (invalid byte at offset {})",
            path.display(),
            e.utf8_error().valid_up_to()
        )
    })?;
    serde_json::from_str(&text).map_err(|e| anyhow!("{}: malformed JSON: {e}", path.display()))
}

/// A memory-mapped safetensors file.
struct Shard {
    path: PathBuf,
    file: File,
    map: Mmap,
}

/// Where a tensor's elements live.
enum Source {
    Mapped { shard: usize, start: usize, end: usize },
    Memory(Arc<Tensor>),
}

struct Entry {
    dtype: DType,
    shape: Vec<usize>,
    source: Source,
}

/// The tensors of a checkpoint, converted to f32 on first use and cached.
pub struct Weights {
    entries: BTreeMap<String, Entry>,
    shards: Vec<Shard>,
    /// The file named in "not found" errors: `model.safetensors`, the shard index, or a description.
    origin: PathBuf,
    cache: Mutex<BTreeMap<String, Arc<Tensor>>>,
    used: Mutex<BTreeSet<String>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Weights {
    /// Returns the tensor converted to f32 (once; cached, so a second take of the same name returns the same
    /// Arc), after checking its shape; records the name as used. Errors name the tensor, the file it lives in,
    /// expected and found shape.
    pub fn take(&self, name: &str, shape: &[usize]) -> Result<Arc<Tensor>> {
        let entry = self
            .entries
            .get(name)
            .ok_or_else(|| anyhow!("tensor `{name}` not found in {}", self.origin.display()))?;
        if entry.shape != shape {
            bail!(
                "tensor `{name}` in {}: expected shape {shape:?}, found {:?}",
                self.file_of(entry).display(),
                entry.shape
            );
        }
        lock(&self.used).insert(name.to_string());
        if let Some(t) = lock(&self.cache).get(name) {
            return Ok(t.clone());
        }
        let tensor = self.load(name, entry)?;
        Ok(lock(&self.cache).entry(name.to_string()).or_insert(tensor).clone())
    }

    /// Whether a tensor of this name is stored.
    pub fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    /// Stored shape of a tensor.
    pub fn shape(&self, name: &str) -> Option<Vec<usize>> {
        self.entries.get(name).map(|e| e.shape.clone())
    }

    /// Storage dtype of a tensor.
    pub fn dtype(&self, name: &str) -> Option<DType> {
        self.entries.get(name).map(|e| e.dtype)
    }

    /// All tensor names, sorted.
    pub fn names(&self) -> Vec<String> {
        self.entries.keys().cloned().collect()
    }

    /// Every tensor's shape, by name.
    pub fn shapes(&self) -> BTreeMap<String, Vec<usize>> {
        self.entries.iter().map(|(n, e)| (n.clone(), e.shape.clone())).collect()
    }

    /// Names never taken, sorted (the graph builder reports these as "unexpected tensor(s)").
    pub fn unused(&self) -> Vec<String> {
        let used = lock(&self.used);
        self.entries.keys().filter(|n| !used.contains(*n)).cloned().collect()
    }

    /// The file the tensors were read from: `model.safetensors`, the shard index, or a description of an
    /// in-memory set.
    pub fn source(&self) -> &Path {
        &self.origin
    }

    /// Total elements of all stored tensors.
    pub fn num_params(&self) -> usize {
        self.entries.values().map(|e| e.shape.iter().product::<usize>()).sum()
    }

    /// Maps one safetensors file (a compiled artifact's weights); tensors are converted to f32 when taken.
    pub fn open_file(path: &Path) -> Result<Weights> {
        let (shard, tensors) = open_shard(path)?;
        let entries =
            tensors.into_iter().map(|(name, found)| (name, found.into_entry(0))).collect();
        Ok(Weights::new(entries, vec![shard], path.to_path_buf()))
    }

    /// An in-memory set, for tests and synthetic models.
    pub fn from_tensors(tensors: Vec<(String, Tensor)>) -> Weights {
        let entries = tensors
            .into_iter()
            .map(|(name, t)| {
                let entry = Entry {
                    dtype: t.dtype(),
                    shape: t.dims().to_vec(),
                    source: Source::Memory(Arc::new(t)),
                };
                (name, entry)
            })
            .collect();
        Weights::new(entries, Vec::new(), PathBuf::from("the in-memory weights"))
    }

    fn new(entries: BTreeMap<String, Entry>, shards: Vec<Shard>, origin: PathBuf) -> Weights {
        Weights { entries, shards, origin, cache: Mutex::default(), used: Mutex::default() }
    }

    fn file_of(&self, entry: &Entry) -> &Path {
        match entry.source {
            Source::Mapped { shard, .. } => &self.shards[shard].path,
            Source::Memory(_) => &self.origin,
        }
    }

    fn load(&self, name: &str, entry: &Entry) -> Result<Arc<Tensor>> {
        let (shard, start, end) = match &entry.source {
            Source::Memory(t) => {
                t.as_f32()
                    .with_context(|| format!("tensor `{name}` in {}", self.origin.display()))?;
                return Ok(t.clone());
            }
            Source::Mapped { shard, start, end } => (&self.shards[*shard], *start, *end),
        };
        let len = shard
            .file
            .metadata()
            .with_context(|| format!("reading {}", shard.path.display()))?
            .len();
        if len < end as u64 || shard.map.len() < end {
            bail!(
                "{}: the file shrank to {len} bytes after it was opened; tensor `{name}` needs bytes {start}..{end}",
                shard.path.display()
            );
        }
        let data = to_f32(entry.dtype, &shard.map[start..end]);
        let tensor = Tensor::f32(entry.shape.clone(), data)
            .with_context(|| format!("tensor `{name}` in {}", shard.path.display()))?;
        Ok(Arc::new(tensor))
    }

    fn open_dir(dir: &Path) -> Result<(Weights, Vec<String>)> {
        let single = dir.join(SINGLE);
        let index = dir.join(INDEX);
        let mut problems = Vec::new();
        if single.is_file() {
            if index.is_file() {
                problems.push(format!(
                    "{}: ignored, {} is used",
                    index.display(),
                    single.display()
                ));
            }
            let (shard, tensors) = open_shard(&single)?;
            let mut entries = BTreeMap::new();
            for (name, entry) in tensors {
                entries.insert(name, entry.into_entry(0));
            }
            return Ok((Weights::new(entries, vec![shard], single), problems));
        }
        if !index.is_file() {
            bail!("{}: no {SINGLE} or {INDEX} in the checkpoint directory", dir.display());
        }
        let weights = Weights::open_sharded(dir, &index, &mut problems)?;
        Ok((weights, problems))
    }

    fn open_sharded(dir: &Path, index: &Path, problems: &mut Vec<String>) -> Result<Weights> {
        let json = read_json(index)?;
        let map = json
            .get("weight_map")
            .and_then(Value::as_object)
            .ok_or_else(|| anyhow!("{}: missing `weight_map` object", index.display()))?;
        let mut by_shard: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (tensor, file) in map {
            let file = file.as_str().ok_or_else(|| {
                anyhow!(
                    "{}: `weight_map` entry for `{tensor}` must be a file name string",
                    index.display()
                )
            })?;
            let mut parts = Path::new(file).components();
            if !matches!((parts.next(), parts.next()), (Some(Component::Normal(_)), None)) {
                bail!(
                    "{}: shard {file:?} of tensor `{tensor}` must be a plain file name in the checkpoint directory",
                    index.display()
                );
            }
            by_shard.entry(file).or_default().push(tensor);
        }
        let mut entries = BTreeMap::new();
        let mut shards = Vec::new();
        let mut extra = Vec::new();
        for (file, listed) in &by_shard {
            let path = dir.join(file);
            if !path.is_file() {
                bail!(
                    "{}: shard `{file}` (holding `{}` and {} other tensor(s)) does not exist: {}",
                    index.display(),
                    listed[0],
                    listed.len() - 1,
                    path.display()
                );
            }
            let (shard, mut tensors) = open_shard(&path)?;
            for tensor in listed {
                let Some(found) = tensors.remove(*tensor) else {
                    bail!(
                        "{}: tensor `{tensor}` is listed in shard `{file}` but {} does not contain it",
                        index.display(),
                        path.display()
                    );
                };
                entries.insert(tensor.to_string(), found.into_entry(shards.len()));
            }
            extra.extend(tensors.into_iter().map(|(name, found)| (name, found, shards.len())));
            shards.push(shard);
        }
        for (name, found, shard) in extra {
            if entries.contains_key(&name) || map.contains_key(&name) {
                problems.push(format!(
                    "{}: tensor `{name}` is also stored in {}, which the index does not list for it; ignored",
                    index.display(),
                    shards[shard].path.display()
                ));
            } else {
                problems.push(format!(
                    "{}: tensor `{name}` of {} is not listed in the index; loaded anyway",
                    index.display(),
                    shards[shard].path.display()
                ));
                entries.insert(name, found.into_entry(shard));
            }
        }
        Ok(Weights::new(entries, shards, index.to_path_buf()))
    }

    /// The dtype most tensors are stored in; a mix is recorded as a problem.
    fn storage_dtype(&self, problems: &mut Vec<String>) -> DType {
        let mut counts: BTreeMap<DType, usize> = BTreeMap::new();
        for e in self.entries.values() {
            *counts.entry(e.dtype).or_default() += 1;
        }
        if counts.len() > 1 {
            let mix: Vec<String> = counts.iter().map(|(d, n)| format!("{n} {d}")).collect();
            problems.push(format!(
                "{}: tensors are stored in mixed dtypes: {}",
                self.origin.display(),
                mix.join(", ")
            ));
        }
        counts.iter().max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0))).map_or(DType::F32, |(d, _)| *d)
    }
}

/// A tensor found in a shard, before it is given the shard's index.
struct Found {
    dtype: DType,
    shape: Vec<usize>,
    start: usize,
    end: usize,
}

impl Found {
    fn into_entry(self, shard: usize) -> Entry {
        Entry {
            dtype: self.dtype,
            shape: self.shape,
            source: Source::Mapped { shard, start: self.start, end: self.end },
        }
    }
}

/// Maps a safetensors file and validates its header against the file length before any offset is used.
fn open_shard(path: &Path) -> Result<(Shard, BTreeMap<String, Found>)> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let len = file.metadata().with_context(|| format!("reading {}", path.display()))?.len();
    if len < 8 {
        bail!(
            "{}: {len} bytes is too short for a safetensors file (no 8-byte header length)",
            path.display()
        );
    }
    // SAFETY: the map is read-only and every offset taken from it is checked against the file length below (and
    // again before each read); a file truncated by another process while mapped is outside what any reader of a
    // shared map can prevent.
    let map = unsafe { Mmap::map(&file) }
        .with_context(|| format!("memory-mapping {}", path.display()))?;
    let mut n_bytes = [0u8; 8];
    n_bytes.copy_from_slice(&map[..8]);
    let header_len = u64::from_le_bytes(n_bytes);
    if header_len > len - 8 {
        bail!(
            "{}: truncated or not a safetensors file: the header length field says {header_len} bytes but the \
             file has {len} bytes in all",
            path.display()
        );
    }
    let (n, meta) =
        SafeTensors::read_metadata(&map).map_err(|e| header_error(path, &map, header_len, e))?;
    let base = 8 + n;
    let mut found = BTreeMap::new();
    let infos: BTreeMap<String, &TensorInfo> = meta.tensors().into_iter().collect();
    for (name, info) in infos {
        let dtype = match info.dtype {
            Dtype::F32 => DType::F32,
            Dtype::F16 => DType::F16,
            Dtype::BF16 => DType::BF16,
            other => bail!(
                "{}: tensor `{name}` has unsupported dtype {other:?} (only F32, F16 and BF16 are read)",
                path.display()
            ),
        };
        let (start, end) = info.data_offsets;
        found.insert(
            name,
            Found { dtype, shape: info.shape.clone(), start: base + start, end: base + end },
        );
    }
    Ok((Shard { path: path.to_path_buf(), file, map }, found))
}

fn header_error(path: &Path, map: &[u8], header_len: u64, e: SafeTensorError) -> anyhow::Error {
    let header = &map[8..8 + header_len as usize];
    match e {
        SafeTensorError::MetadataIncompleteBuffer => {
            let described = serde_json::from_slice::<Metadata>(header)
                .map(|m| 8 + header_len as usize + m.data_len());
            match described {
                Ok(total) if total > map.len() => anyhow!(
                    "{}: truncated: the header describes {total} bytes but the file has {}",
                    path.display(),
                    map.len()
                ),
                Ok(total) => anyhow!(
                    "{}: the header describes {total} bytes but the file has {} (trailing bytes)",
                    path.display(),
                    map.len()
                ),
                Err(_) => anyhow!("{}: invalid safetensors header: {e}", path.display()),
            }
        }
        e => anyhow!("{}: invalid safetensors header: {e}", path.display()),
    }
}

/// Little-endian F16/BF16 bytes, or F32 for any other dtype (mapped tensors are only ever these three) → f32.
fn to_f32(dtype: DType, bytes: &[u8]) -> Vec<f32> {
    const MIN_LEN: usize = 1 << 16;
    match dtype {
        DType::F16 => bytes
            .par_chunks_exact(2)
            .with_min_len(MIN_LEN)
            .map(|c| f16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32())
            .collect(),
        DType::BF16 => bytes
            .par_chunks_exact(2)
            .with_min_len(MIN_LEN)
            .map(|c| bf16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32())
            .collect(),
        _ => bytes
            .par_chunks_exact(4)
            .with_min_len(MIN_LEN)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
    }
}
