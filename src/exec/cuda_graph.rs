//! Decode steps replayed as one CUDA graph.
//!
//! The eager decode step of [`CudaExecutor`] costs the host microseconds per node, far more than the device needs
//! at small batch. A recorded step costs one launch, but a recording fixes every address and launch shape, so the
//! step is arranged to be the same every time:
//! * the caches (keys, values, per-key mask values) are buffers with room for `capacity` tokens, zero past the
//!   current length; each step writes its rows in place at the row a device scalar holds (`place_rows`), and
//!   attention runs over all `capacity` slots, those past the length marked −1 in the attention mask: slots with
//!   no key, which the decode kernels leave out (`cheems_ops::masked_attention`);
//! * the attention mask is a `[B, capacity]` buffer; the step itself sets the new token's column to 1 (a decode
//!   token is never padding), and the SSD layers' token mask reads no column of it at one token a step;
//! * the RoPE tables of the new position are computed on the host, as in the eager step, and copied into fixed
//!   buffers before the launch; SSD states are updated in place;
//! * every other buffer comes from a pool that only the recording uses, filled by one eager run of the step;
//! * the per-key mask values of the step's key, and its rotation (with the q/k norm where the model has one), are
//!   computed straight into their cache slots by the append (one kernel instead of two; `placed_rows`);
//! * a product-key top-k read only by an expert mix weighs the mix's experts in its own launch once it has picked
//!   them, where the top-k takes one block per (row, head) and the mix would weigh them in a launch of its own; the mix
//!   then only sums (`cheems_ops::pk_topk::cuda::pk_topk_weighed`); `CHEEMS_CUDA_WEIGHED_ROUTES=0` keeps them apart;
//! * a keep window (`Additive` masks) carries over from one step to the next: the step's key fills one slot, and
//!   the selection of the step before is updated in one pass over the keys rather than made anew, and the keep
//!   window and the attention load the cache slots other than the step's own before they wait for the kernels
//!   before them (`cheems_ops::masked_attention::cuda::KeepSteps`); `CHEEMS_CUDA_CARRY_KEEP=0` does neither.
//!
//! The first step runs eagerly (filling the pool) and is then recorded; later steps replay the recording. In the
//! recording each node's work is a segment, and the recording is ordered by the memory the segments read and write
//! (`cheems_ops::cuda::order`): work of independent nodes (the two branches of a CDMoE, the query and key
//! projections' norms, the cache appends) may overlap; `CHEEMS_CUDA_DATA_EDGES=0` keeps the issue order instead. Each
//! cheems kernel may then be scheduled while the kernels before it still run (a programmatic dependency,
//! `cheems_ops::cuda::graph`); `CHEEMS_CUDA_PDL=0` records plain edges instead.
//! Graphs whose step depends on the key count otherwise (the ratio threshold of `Additive` masks, positions
//! computed from the mask length) are refused with the reason; with a learned mask the capacity is at most its
//! `max_position_embeddings` positions.

use super::cuda::{
    download, dup, narrow, top_k, with_act, ActDType, ActElem, Buf, CudaExecutor, DTensor, Dev,
    RecordedRun,
};
use super::{Held, TopK};
use crate::ir::op::AttentionMask;
use crate::ir::{Graph, NodeId, Op, Tensor};
use crate::model::build::{Model, StateKind};
use anyhow::{bail, ensure, Context, Result};
use cheems_ops as ops;
use cheems_ops::cuda::graph::Recording;
use cheems_ops::cuda::order::{Ordering, Segment};
use cheems_ops::cuda::GraphBuffers;
use cheems_ops::cudarc::driver::CudaSlice;
use half::{bf16, f16};
use std::collections::{BTreeMap, HashMap, HashSet};

/// One recurrent state in its fixed buffer.
struct Slot {
    past: String,
    kind: StateKind,
    /// Caches: `[B, X, capacity, …]`; SSD states as they are.
    buf: DTensor,
}

/// A RoPE-table node whose outputs are computed on the host each step and copied into `cos`/`sin`.
struct RopeSlot {
    node: NodeId,
    rotary: crate::ir::op::rope::Rotary,
    cos: DTensor,
    sin: DTensor,
    len_out: CudaSlice<i64>,
}

/// Decode steps of one batch, replayed from a recording (fields drop in order: the recording before the memory it
/// addresses).
pub struct DecodeGraph<'e> {
    recorded: Option<Recording>,
    logits: Option<DTensor>,
    first_logits: Option<Tensor>,
    pool: Option<GraphBuffers>,
    exec: &'e CudaExecutor,
    slots: Vec<Slot>,
    rope: Vec<RopeSlot>,
    /// The RoPE length state (input name, value), when the graph carries one.
    rope_len: Option<(String, i64)>,
    appends: HashSet<NodeId>,
    /// Nodes whose rows the cache append they feed computes into the cache itself (`placed_rows`), to that append.
    placed: HashMap<NodeId, NodeId>,
    /// Product-key top-k nodes to the expert mix that alone reads them (`weighed_routes`).
    weighed: HashMap<NodeId, NodeId>,
    ids: CudaSlice<i64>,
    mask: CudaSlice<i64>,
    pos: CudaSlice<i64>,
    ones: CudaSlice<i64>,
    batch: usize,
    capacity: usize,
    past: usize,
    options: RecordOptions,
    /// The keep windows carried from step to step (when `options` says so).
    keep: KeepMemos,
}

/// How a decode step is recorded; by default from the environment: `CHEEMS_CUDA_DATA_EDGES`,
/// `CHEEMS_CUDA_CARRY_KEEP`, `CHEEMS_CUDA_PDL` and `CHEEMS_CUDA_WEIGHED_ROUTES`, each on unless `0` (see the module
/// documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordOptions {
    /// Ordered by the memory the nodes read and write, not by issue order.
    pub ordered_by_data: bool,
    /// Keep windows carried over from step to step (and cache slots loaded before the wait).
    pub carried_keep_window: bool,
    /// Kernel-to-kernel edges as programmatic dependencies.
    pub programmatic: bool,
    /// Product-key top-k nodes weigh the experts of the mix that reads them, where the sizes allow.
    pub weighed_routes: bool,
}

impl Default for RecordOptions {
    fn default() -> RecordOptions {
        let on = |var: &str| std::env::var_os(var).is_none_or(|v| v != "0");
        RecordOptions {
            ordered_by_data: on("CHEEMS_CUDA_DATA_EDGES"),
            carried_keep_window: on("CHEEMS_CUDA_CARRY_KEEP"),
            programmatic: on("CHEEMS_CUDA_PDL"),
            weighed_routes: on("CHEEMS_CUDA_WEIGHED_ROUTES"),
        }
    }
}

/// The keep window of each attention node, carried from one step to the next
/// (`cheems_ops::masked_attention::cuda::KeepSteps`): made by the node's first step, every word
/// `KEEP_MEMO_FRESH`.
#[derive(Default)]
pub(crate) struct KeepMemos(std::sync::Mutex<HashMap<NodeId, CudaSlice<u32>>>);

impl KeepMemos {
    /// The memo of node `id`, of `len` words.
    pub(crate) fn with<R>(
        &self,
        exec: &CudaExecutor,
        id: NodeId,
        len: usize,
        f: impl FnOnce(&mut CudaSlice<u32>) -> Result<R>,
    ) -> Result<R> {
        let mut memos =
            self.0.lock().map_err(|_| anyhow::anyhow!("a keep memo's lock is poisoned"))?;
        let memo = match memos.entry(id) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                let fresh = vec![ops::masked_attention::cuda::KEEP_MEMO_FRESH; len];
                e.insert(exec.gpu().upload(&fresh)?)
            }
        };
        ensure!(memo.len() == len, "the keep memo has {} words, the step needs {len}", memo.len());
        f(memo)
    }
}

/// The nodes whose rows cache append `append` computes into the cache itself: the mask values of the step's keys,
/// or the rotation of its keys (`Rope`, or `NormRope` with the q/k norm) with the permute between it and the append
/// (which then moves nothing). Each value on the way has the append as its only reader.
fn placed_rows(g: &Graph, kind: StateKind, append: NodeId) -> Vec<NodeId> {
    let rows = g.inputs_of(append)[1];
    if g.uses(rows) != 1 {
        return Vec::new();
    }
    match (kind, &g.node(rows.node).op) {
        (StateKind::MaskValues, Op::DynamicMaskValues | Op::ProjectedMaskValues { .. }) => {
            vec![rows.node]
        }
        (StateKind::Key, Op::Permute { perm }) if perm[..] == [0, 2, 1, 3] => {
            let normed = g.inputs_of(rows.node)[0];
            match g.node(normed.node).op {
                Op::NormRope(_) | Op::Rope if g.uses(normed) == 1 => vec![normed.node, rows.node],
                _ => Vec::new(),
            }
        }
        _ => Vec::new(),
    }
}

/// The product-key top-k nodes whose scores and ids only an expert mix reads (and no graph output), to that mix: in a
/// recorded step the top-k weighs the mix's experts in its own launch where the sizes allow, and the mix only sums
/// (`CudaExecutor::run_nodes`).
fn weighed_routes(g: &Graph) -> HashMap<NodeId, NodeId> {
    let mut routes = HashMap::new();
    for id in g.node_ids() {
        if !matches!(g.node(id).op, Op::PkTopK(_)) || g.outputs().iter().any(|(_, v)| v.node == id)
        {
            continue;
        }
        if let [mix] = g.readers(id)[..] {
            let ins = g.inputs_of(mix);
            let reads =
                |k: usize, port: u16| ins.get(k).is_some_and(|v| v.node == id && v.port == port);
            let only_there = ins.iter().filter(|v| v.node == id).count() == 2;
            if matches!(g.node(mix).op, Op::ExpertMix(_))
                && reads(1, 0)
                && reads(2, 1)
                && only_there
            {
                routes.insert(id, mix);
            }
        }
    }
    routes
}

/// The most keys the graph's attention can take: a learned mask has `max_position_embeddings` positions.
fn key_limit(exec: &CudaExecutor, model: &Model) -> usize {
    let learned = exec.graph().node_ids().into_iter().any(|id| {
        matches!(&exec.graph().node(id).op, Op::MaskedAttention(at) if at.mask == AttentionMask::Learned)
    });
    if learned {
        model.config.max_position_embeddings
    } else {
        usize::MAX
    }
}

/// Why `exec`'s graph cannot be recorded, if it cannot.
pub fn unsupported(exec: &CudaExecutor) -> Option<String> {
    let g = exec.graph();
    for id in g.node_ids() {
        let node = g.node(id);
        match &node.op {
            Op::Positions => {
                return Some(format!(
                    "node `{}` computes positions from the mask length",
                    node.name
                ))
            }
            Op::MaskedAttention(at) => match at.mask {
                AttentionMask::Additive { ratio, .. } if ratio > 0.0 && ratio < 1.0 => {
                    return Some(format!(
                        "node `{}` drops keys below a ratio of the key count ({ratio})",
                        node.name
                    ))
                }
                _ => {}
            },
            _ => {}
        }
    }
    None
}

/// A state on the device: the session's buffer, or `held` uploaded into `upload`.
fn on_device<'a>(
    exec: &CudaExecutor,
    name: &str,
    held: &'a Held,
    upload: &'a mut Option<DTensor>,
) -> Result<&'a DTensor> {
    match held {
        Held::Device(d) => Ok(d),
        Held::Host(t) => Ok(upload.insert(exec.upload_input(name, t)?)),
    }
}

/// A fixed handle on `t`'s buffer with `t`'s dims.
///
/// # Safety
/// `t` must outlive the handle and the device work issued through it.
unsafe fn fixed(exec: &CudaExecutor, t: &DTensor) -> DTensor {
    let gpu = exec.gpu();
    let buf = match &t.buf {
        Buf::F32(s) => Buf::F32(Dev::fixed(gpu, s)),
        Buf::BF16(s) => Buf::BF16(Dev::fixed(gpu, s)),
        Buf::F16(s) => Buf::F16(Dev::fixed(gpu, s)),
        Buf::I64(s) => Buf::I64(Dev::fixed(gpu, s)),
        Buf::Empty => Buf::Empty,
    };
    DTensor { dims: t.dims.clone(), buf, host_i64: None }
}

/// # Safety
/// As [`fixed`].
unsafe fn fixed_i64(exec: &CudaExecutor, s: &CudaSlice<i64>, dims: Vec<usize>) -> DTensor {
    DTensor { dims, buf: Buf::I64(Dev::fixed(exec.gpu(), s)), host_i64: None }
}

impl<'e> DecodeGraph<'e> {
    /// Moves copies of a session's states (after `past` tokens, `mask` the session's attention mask) into buffers
    /// with room for `capacity` tokens. Nothing runs on the device but the copies; the first [`Self::step`] runs
    /// and records.
    pub fn new(
        exec: &'e CudaExecutor,
        model: &Model,
        states: &BTreeMap<String, Held>,
        mask: &[Vec<i64>],
        past: usize,
        capacity: usize,
    ) -> Result<DecodeGraph<'e>> {
        let capacity = capacity.min(key_limit(exec, model));
        ensure!(past < capacity, "a capacity of {capacity} tokens leaves no room after {past}");
        if let Some(why) = unsupported(exec) {
            bail!("the decode step cannot be recorded: {why}");
        }
        let batch = mask.len();
        ensure!(
            batch > 0 && mask.iter().all(|r| r.len() == past),
            "the mask must be {batch}×{past}"
        );
        let g = exec.graph();
        let gpu = exec.gpu();
        let zero = gpu.upload(&[0i64])?;
        let mut slots = Vec::new();
        let mut appends = HashSet::new();
        let mut placed = HashMap::new();
        let mut rope_len = None;
        for st in &model.states {
            let held = states.get(&st.past).with_context(|| format!("no state `{}`", st.past))?;
            let mut uploaded = None;
            match st.kind {
                StateKind::RopeLen => {
                    let v = match held {
                        Held::Host(t) => t.as_i64()?.to_vec(),
                        Held::Device(d) => {
                            d.host_i64.clone().context("no host copy of the RoPE length")?
                        }
                    };
                    let v = *v.first().context("an empty RoPE length")?;
                    rope_len = Some((st.past.clone(), v));
                }
                StateKind::SsdState => {
                    let d = on_device(exec, &st.past, held, &mut uploaded)?;
                    let Buf::F32(s) = &d.buf else { bail!("`{}` is not an f32 state", st.past) };
                    let buf = DTensor {
                        dims: d.dims.clone(),
                        buf: Buf::F32(dup(gpu, s)?),
                        host_i64: None,
                    };
                    slots.push(Slot { past: st.past.clone(), kind: st.kind, buf });
                }
                StateKind::Key | StateKind::Value | StateKind::MaskValues => {
                    let d = on_device(exec, &st.past, held, &mut uploaded)?;
                    let id = g.find(&st.past).with_context(|| format!("no input `{}`", st.past))?;
                    let append = match g.readers(id).as_slice() {
                        [r] if matches!(g.node(*r).op, Op::Concat { axis: 2 })
                            && g.inputs_of(*r)[0].node == id
                            && g.inputs_of(*r)[1].node != id =>
                        {
                            *r
                        }
                        _ => bail!(
                            "the decode step cannot be recorded: `{}` is not read by one cache append",
                            st.past
                        ),
                    };
                    appends.insert(append);
                    placed.extend(placed_rows(g, st.kind, append).into_iter().map(|n| (n, append)));
                    let dims = &d.dims;
                    ensure!(
                        dims.len() >= 3 && dims[2] == past && dims[0] == batch,
                        "`{}` is {dims:?}, expected {batch} sequences of {past} tokens",
                        st.past
                    );
                    let (outer, inner) = (dims[0] * dims[1], dims[3..].iter().product::<usize>());
                    let mut cdims = dims.clone();
                    cdims[2] = capacity;
                    let mut buf = exec.zeros_for_input(&st.past, cdims.clone())?.buf;
                    use ops::elementwise::cuda::place_rows;
                    match (&mut buf, &d.buf) {
                        (_, Buf::Empty) => {}
                        (Buf::F32(c), Buf::F32(x)) => {
                            place_rows(gpu, x, outer, past, inner, capacity, &zero, c)?
                        }
                        (Buf::BF16(c), Buf::BF16(x)) => {
                            place_rows(gpu, x, outer, past, inner, capacity, &zero, c)?
                        }
                        (Buf::F16(c), Buf::F16(x)) => {
                            place_rows(gpu, x, outer, past, inner, capacity, &zero, c)?
                        }
                        _ => bail!("`{}` has an unexpected storage type", st.past),
                    }
                    let buf = DTensor { dims: cdims, buf, host_i64: None };
                    slots.push(Slot { past: st.past.clone(), kind: st.kind, buf });
                }
            }
        }
        let mut rope = Vec::new();
        for id in g.node_ids() {
            let Op::RotaryTables(r) = &g.node(id).op else { continue };
            let dim = r.dim;
            let n = batch * dim;
            let table = |_: ()| -> Result<DTensor> {
                let buf = with_act!(exec.dtype(), T => T::wrap_dev(gpu.zeros::<T>(n)?.into()));
                Ok(DTensor { dims: vec![batch, 1, dim], buf, host_i64: None })
            };
            rope.push(RopeSlot {
                node: id,
                rotary: r.clone(),
                cos: table(())?,
                sin: table(())?,
                len_out: gpu.zeros::<i64>(1)?,
            });
        }
        let mut host_mask = vec![-1i64; batch * capacity];
        for (b, row) in mask.iter().enumerate() {
            host_mask[b * capacity..b * capacity + past].copy_from_slice(row);
        }
        Ok(DecodeGraph {
            recorded: None,
            logits: None,
            first_logits: None,
            pool: None,
            exec,
            slots,
            rope,
            rope_len,
            appends,
            placed,
            weighed: weighed_routes(g),
            ids: gpu.zeros::<i64>(batch)?,
            mask: gpu.upload(&host_mask)?,
            pos: gpu.upload(&[past as i64])?,
            ones: gpu.upload(&vec![1i64; batch])?,
            batch,
            capacity,
            past,
            options: RecordOptions::default(),
            keep: KeepMemos::default(),
        })
    }

    /// How the step is recorded; takes effect only before the first [`Self::step`], which records it.
    pub fn set_options(&mut self, options: RecordOptions) {
        if self.recorded.is_none() {
            self.options = options;
        }
    }

    /// How the step is (or will be) recorded.
    pub fn options(&self) -> RecordOptions {
        self.options
    }

    /// How the recording was ordered by data, once recorded so.
    pub fn ordering(&self) -> Option<Ordering> {
        self.recorded.as_ref().and_then(Recording::ordering)
    }

    /// Tokens in the caches.
    pub fn past(&self) -> usize {
        self.past
    }

    /// Tokens the caches have room for.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Whether the step has been recorded (after the first [`Self::step`]).
    pub fn recorded(&self) -> bool {
        self.recorded.is_some()
    }

    /// The recording's nodes by kind (`kernel`, `memset`, `memcpy`, `alloc`, `free`, `other`), once recorded.
    pub fn node_counts(&self) -> Result<BTreeMap<&'static str, usize>> {
        let g = self.recorded.as_ref().context("the step is not recorded yet")?;
        Ok(g.node_counts()?)
    }

    /// Kernel-to-kernel edges of the recording that are programmatic dependencies, once recorded.
    pub fn programmatic_edges(&self) -> Option<usize> {
        self.recorded.as_ref().map(Recording::programmatic_edges)
    }

    /// Device memory of the recording's private pool, in bytes.
    pub fn pool_bytes(&self) -> usize {
        self.pool.as_ref().map_or(0, |p| p.bytes())
    }

    /// Host work of a step: the token ids, the row to write and the RoPE tables of the new position.
    fn prepare(&mut self, ids: &[i64]) -> Result<()> {
        let gpu = self.exec.gpu().clone();
        let s = gpu.stream();
        s.memcpy_htod(ids, &mut self.ids).context("copying the token ids")?;
        s.memcpy_htod(&[self.past as i64], &mut self.pos).context("copying the position")?;
        let pos = Tensor::i64(vec![self.batch, 1], vec![self.past as i64; self.batch])?;
        let len = self.rope_len.as_ref().map(|l| Tensor::i64(vec![1], vec![l.1])).transpose()?;
        let mut next_len = None;
        for r in &mut self.rope {
            let t = super::cpu::rotary_tables(&r.rotary, &pos, len.as_ref())?;
            for (dst, src) in [(&mut r.cos, &t[0]), (&mut r.sin, &t[1])] {
                let v = src.as_f32()?;
                match &mut dst.buf {
                    Buf::F32(d) => s.memcpy_htod(v, &mut **d),
                    Buf::BF16(d) => s.memcpy_htod(&narrow::<bf16>(v), &mut **d),
                    Buf::F16(d) => s.memcpy_htod(&narrow::<f16>(v), &mut **d),
                    Buf::I64(_) | Buf::Empty => unreachable!("RoPE tables are floating point"),
                }
                .context("copying the RoPE tables")?;
            }
            next_len = Some(t[2].as_i64()?[0]);
        }
        if let (Some(l), Some(next)) = (self.rope_len.as_mut(), next_len) {
            l.1 = next;
        }
        Ok(())
    }

    /// The device work of a step (the mask column, then the graph's nodes), issued on the stream; with `segments`,
    /// the segments of a recording (see the module documentation), the last one whatever follows the nodes.
    fn issue(&self, mut segments: Option<&mut Vec<Segment>>) -> Result<BTreeMap<String, DTensor>> {
        let exec = self.exec;
        let gpu = exec.gpu();
        // SAFETY: `self.mask` outlives the handle, dropped at the end of this function, and the work issued.
        let mut mask = unsafe { Dev::fixed(gpu, &self.mask) };
        ops::elementwise::cuda::place_rows(
            gpu,
            &self.ones,
            self.batch,
            1,
            1,
            self.capacity,
            &self.pos,
            &mut mask,
        )?;
        if let Some(segs) = segments.as_deref_mut() {
            segs.push(Segment {
                tail: gpu.recorded_tail()?,
                reads: vec![gpu.span(&self.ones), gpu.span(&self.pos)],
                writes: vec![gpu.span(&self.mask)],
            });
        }
        let g = exec.graph();
        let mut inputs = BTreeMap::new();
        // SAFETY: every buffer handed out below is a field of `self`, which outlives the run and the recording
        // (the recording is dropped first); none is freed while a run uses it.
        unsafe {
            inputs.insert("input_ids".into(), fixed_i64(exec, &self.ids, vec![self.batch, 1]));
            inputs.insert(
                "attention_mask".into(),
                fixed_i64(exec, &self.mask, vec![self.batch, self.capacity]),
            );
            if g.find("position_ids").is_some() {
                inputs.insert("position_ids".into(), fixed_i64(exec, &self.pos, vec![1, 1]));
            }
            for s in &self.slots {
                inputs.insert(s.past.clone(), fixed(exec, &s.buf));
            }
            let mut preset = HashMap::new();
            for r in &self.rope {
                if let Some((name, _)) = &self.rope_len {
                    inputs.insert(name.clone(), fixed_i64(exec, &r.len_out, vec![1]));
                }
                let outs = vec![
                    fixed(exec, &r.cos),
                    fixed(exec, &r.sin),
                    fixed_i64(exec, &r.len_out, vec![1]),
                ];
                preset.insert(r.node, outs);
            }
            let recorded = RecordedRun {
                appends: &self.appends,
                placed: &self.placed,
                weighed: self.options.weighed_routes.then_some(&self.weighed),
                pos: &self.pos,
                segments: segments.as_deref_mut(),
                keep: self.options.carried_keep_window.then_some(&self.keep),
            };
            let out = exec.run_nodes(inputs, preset, Some(recorded), &[], None, false)?;
            if let Some(segs) = segments {
                let all = vec![(0, u64::MAX)];
                segs.push(Segment { tail: gpu.recorded_tail()?, reads: all.clone(), writes: all });
            }
            Ok(out)
        }
    }

    /// Feeds one token per sequence (`ids[b]` to sequence b). The first call runs the step eagerly and records it;
    /// later calls replay the recording. Nothing waits for the device; [`Self::logits`] does.
    pub fn step(&mut self, ids: &[i64]) -> Result<()> {
        ensure!(ids.len() == self.batch, "{} token ids for a batch of {}", ids.len(), self.batch);
        ensure!(
            self.past < self.capacity,
            "the caches are full ({} tokens): a larger capacity is needed",
            self.capacity
        );
        self.prepare(ids)?;
        if let Some(g) = &self.recorded {
            g.launch().context("launching the recorded decode step")?;
            self.first_logits = None;
        } else {
            let gpu = self.exec.gpu().clone();
            gpu.begin_graph_pool()?;
            let r = self.record();
            self.pool = Some(gpu.end_graph_pool());
            r?;
        }
        self.past += 1;
        Ok(())
    }

    /// The eager first step (its logits kept on the host) and the recording of the same step.
    fn record(&mut self) -> Result<()> {
        let gpu = self.exec.gpu().clone();
        let mut out = self.issue(None).context("running the decode step before recording it")?;
        let logits = out.remove("logits").context("the graph has no `logits` output")?;
        self.first_logits = Some(download(&gpu, &logits)?);
        drop((out, logits));
        gpu.seal_graph_pool();
        gpu.begin_recording().context("starting to record the decode step")?;
        let mut segments = Vec::new();
        let by_data = self.options.ordered_by_data;
        let issued = self.issue(by_data.then_some(&mut segments));
        let order = (by_data && issued.is_ok()).then_some(segments.as_slice());
        let ended = gpu.end_recording(self.options.programmatic, order);
        let mut out = issued.context("recording the decode step")?;
        let graph = ended.context("instantiating the recorded decode step")?;
        let graph = graph.context("the recording of the decode step is empty")?;
        graph.upload().context("uploading the recorded decode step")?;
        self.logits = Some(out.remove("logits").context("the graph has no `logits` output")?);
        self.recorded = Some(graph);
        Ok(())
    }

    /// Feeds one token per sequence as [`Self::step`] does, replaying the recording (the step must be recorded) with
    /// the device's kernel trace reset before it, and returns the step's timeline (waits for it); `None` when the
    /// device keeps no trace (`CHEEMS_CUDA_TRACE`, `cheems_ops::cuda::trace`) or no kernel recorded anything.
    pub fn traced_step(&mut self, ids: &[i64]) -> Result<Option<ops::cuda::trace::StepProfile>> {
        let gpu = self.exec.gpu().clone();
        if !gpu.tracing() {
            return Ok(None);
        }
        ensure!(self.recorded.is_some(), "the step is not recorded yet");
        gpu.trace_reset()?;
        self.step(ids)?;
        let records = gpu.trace_records()?;
        let rec = self.recorded.as_ref().context("the step is not recorded yet")?;
        Ok(ops::cuda::trace::profile(&records, &gpu.recorded_kernels(rec)?))
    }

    /// The logits `[B, 1, V]` of the last step (waits for it).
    pub fn logits(&mut self) -> Result<Tensor> {
        if let Some(t) = self.first_logits.take() {
            return Ok(t);
        }
        let l = self.logits.as_ref().context("no decode step has run")?;
        download(self.exec.gpu(), l)
    }

    /// Each sequence's `k` best logits after the last step (waits for it): on a replayed step only they leave the
    /// device.
    pub fn logits_top_k(&mut self, k: usize) -> Result<TopK> {
        if let Some(t) = self.first_logits.take() {
            return TopK::of_logits(&t, k);
        }
        let l = self.logits.as_ref().context("no decode step has run")?;
        top_k(self.exec.gpu(), l, k)
    }

    /// The states as an eager session holds them: caches cut to the tokens seen, on the device.
    pub fn into_states(self) -> Result<BTreeMap<String, Held>> {
        let gpu = self.exec.gpu().clone();
        let mut out = BTreeMap::new();
        if let Some((name, l)) = &self.rope_len {
            out.insert(name.clone(), Held::Host(Tensor::i64(vec![1], vec![*l])?));
        }
        for s in &self.slots {
            let t = match s.kind {
                StateKind::Key | StateKind::Value | StateKind::MaskValues => {
                    let d = &s.buf.dims;
                    let (outer, inner) = (d[0] * d[1], d[3..].iter().product::<usize>());
                    let mut dims = d.clone();
                    dims[2] = self.past;
                    let (cols, len) = (self.capacity * inner, self.past * inner);
                    use ops::elementwise::cuda::slice_cols;
                    let buf = match &s.buf.buf {
                        Buf::F32(c) => {
                            let mut y = gpu.uninit::<f32>(outer * len)?;
                            slice_cols(&gpu, c, outer, cols, 0, len, &mut y)?;
                            Buf::F32(y.into())
                        }
                        Buf::BF16(c) => {
                            let mut y = gpu.uninit::<bf16>(outer * len)?;
                            slice_cols(&gpu, c, outer, cols, 0, len, &mut y)?;
                            Buf::BF16(y.into())
                        }
                        Buf::F16(c) => {
                            let mut y = gpu.uninit::<f16>(outer * len)?;
                            slice_cols(&gpu, c, outer, cols, 0, len, &mut y)?;
                            Buf::F16(y.into())
                        }
                        _ => bail!("`{}` has an unexpected storage type", s.past),
                    };
                    DTensor { dims, buf, host_i64: None }
                }
                StateKind::SsdState => {
                    let Buf::F32(c) = &s.buf.buf else { bail!("`{}` is not f32", s.past) };
                    DTensor {
                        dims: s.buf.dims.clone(),
                        buf: Buf::F32(dup(&gpu, c)?),
                        host_i64: None,
                    }
                }
                StateKind::RopeLen => continue,
            };
            out.insert(s.past.clone(), Held::Device(t));
        }
        gpu.synchronize()?;
        Ok(out)
    }
}
