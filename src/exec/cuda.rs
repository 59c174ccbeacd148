//! The CUDA executor: runs a (lowered) graph node by node on one device through the `cheems-ops` CUDA kernels,
//! with activations in f32, bf16 or f16 (f32 accumulation; SSD state, per-key mask values and routing scores in
//! f32).
//! Host tensors go in and out at the graph's boundary; [`CudaExecutor::run_device`] keeps them on the device.

use super::cpu::rotary_tables;
use crate::ir::op::{Act, Attention, AttentionMask, ExpertAct, ExpertMix, PkTopK};
use crate::ir::{DType, Graph, NodeId, Op, Tensor, ValueId};
use crate::passes::lower::{supported, Target};
use anyhow::{bail, ensure, Context, Result};
use cheems_ops as ops;
use cheems_ops::cuda::{Elem, Gpu};
use cheems_ops::cudarc::cublas::{CudaBlas, Gemm};
use cheems_ops::cudarc::driver::CudaSlice;
use half::{bf16, f16};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// Activation dtype of a CUDA run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ActDType {
    F32,
    BF16,
    F16,
}

impl ActDType {
    pub fn name(self) -> &'static str {
        self.storage().name()
    }

    /// The storage dtype of the activations (and of the weights uploaded for them).
    pub fn storage(self) -> DType {
        match self {
            ActDType::F32 => DType::F32,
            ActDType::BF16 => DType::BF16,
            ActDType::F16 => DType::F16,
        }
    }

    /// The activation dtype whose storage is `d`, if the executor runs one.
    pub fn of_storage(d: DType) -> Option<ActDType> {
        [ActDType::F32, ActDType::BF16, ActDType::F16].into_iter().find(|a| a.storage() == d)
    }
}

/// `$body` with the type `$t` standing for the element type of the activation dtype `$dtype`.
macro_rules! with_act {
    ($dtype:expr, $t:ident => $body:expr) => {
        match $dtype {
            ActDType::F32 => {
                type $t = f32;
                $body
            }
            ActDType::BF16 => {
                type $t = half::bf16;
                $body
            }
            ActDType::F16 => {
                type $t = half::f16;
                $body
            }
        }
    };
}
pub(crate) use with_act;

/// What a recorded decode step adds to a run ([`CudaExecutor::run_nodes`]).
pub(crate) struct RecordedRun<'a> {
    /// The cache appends, which write in place.
    pub appends: &'a std::collections::HashSet<NodeId>,
    /// Nodes (to their append) whose rows the append computes into the cache itself: mask values, and the
    /// rotation of keys (with or without the q/k norm) with the permute after it (`cuda_graph::placed_rows`).
    pub placed: &'a HashMap<NodeId, NodeId>,
    /// Product-key top-k nodes to the expert mix that alone reads them (`cuda_graph::weighed_routes`): the top-k
    /// weighs the mix's experts, and the mix only sums, where the sizes allow.
    pub weighed: Option<&'a HashMap<NodeId, NodeId>>,
    /// The row they write, on the device.
    pub pos: &'a CudaSlice<i64>,
    /// When the recording is ordered by data: where each node's segment goes.
    pub segments: Option<&'a mut Vec<ops::cuda::order::Segment>>,
    /// When keep windows carry over from step to step: their memos.
    pub keep: Option<&'a super::cuda_graph::KeepMemos>,
}

/// Whether attention node `at` over operands `a` is a decode step whose keep window can carry over from the step
/// before: an `Additive` mask with a keep window and no active ratio, one query a sequence.
fn carries_keep(at: &Attention, a: &[Arc<DTensor>]) -> bool {
    let AttentionMask::Additive { ratio, keep_window: Some(_) } = at.mask else { return false };
    !(ratio > 0.0 && ratio < 1.0)
        && a.len() == 5
        && a[0].dims.get(1) == Some(&1)
        && a[4].dims.len() >= 2
}

/// Whether attention node `id` of a recorded step reads its keys, values and mask values from cache appends
/// (`appends`) and its attention mask from the graph input: memory in which a step writes only the slot of its key.
fn reads_caches(g: &Graph, id: NodeId, appends: &std::collections::HashSet<NodeId>) -> bool {
    let ins = g.inputs_of(id);
    let is_input =
        |n: NodeId| matches!(g.node(n).op, Op::Input(_)) && g.node(n).name == "attention_mask";
    ins.len() == 5
        && [1, 2, 4].iter().all(|&i| appends.contains(&ins[i].node))
        && is_input(ins[3].node)
}

/// A device buffer of one of the storage types; `Empty` stands for any tensor with no element (a device
/// allocation cannot have zero bytes), such as the caches before the first token.
pub enum Buf {
    F32(Dev<f32>),
    BF16(Dev<bf16>),
    F16(Dev<f16>),
    I64(Dev<i64>),
    Empty,
}

/// A device buffer that a tensor owns, a view of a contiguous range of another tensor's buffer (no copy), or a
/// fixed buffer: memory that outlives every run (a recorded decode step's state and inputs), which a kernel may
/// update in place. A view keeps its owner tensor alive; views and fixed buffers never free the memory they point
/// into. All three dereference to the `CudaSlice` the kernels take.
///
/// An owned buffer made by the executor goes back to its device's spare buffers when dropped
/// ([`Gpu::recycle`]), so that the outputs of the next call reuse it without a driver allocation.
pub struct Dev<T> {
    slice: std::mem::ManuallyDrop<CudaSlice<T>>,
    owner: Option<Arc<DTensor>>,
    home: Option<Arc<Gpu>>,
    fixed: bool,
}

impl<T> From<CudaSlice<T>> for Dev<T> {
    fn from(s: CudaSlice<T>) -> Dev<T> {
        Dev { slice: std::mem::ManuallyDrop::new(s), owner: None, home: None, fixed: false }
    }
}

impl<T> Dev<T> {
    /// An owned buffer that returns to `gpu`'s spare buffers when dropped.
    fn recycled_by(s: CudaSlice<T>, gpu: &Arc<Gpu>) -> Dev<T> {
        Dev {
            slice: std::mem::ManuallyDrop::new(s),
            owner: None,
            home: Some(gpu.clone()),
            fixed: false,
        }
    }
}

impl<T> std::ops::Deref for Dev<T> {
    type Target = CudaSlice<T>;
    fn deref(&self) -> &CudaSlice<T> {
        &self.slice
    }
}

impl<T> std::ops::DerefMut for Dev<T> {
    fn deref_mut(&mut self) -> &mut CudaSlice<T> {
        &mut self.slice
    }
}

impl<T> Drop for Dev<T> {
    fn drop(&mut self) {
        // SAFETY: `slice` is taken exactly once, here.
        let s = unsafe { std::mem::ManuallyDrop::take(&mut self.slice) };
        if self.owner.is_some() || self.fixed {
            // The memory belongs to `owner` (freed stream-ordered after this view's readers) or to whoever made
            // the fixed buffer.
            s.leak();
        } else if let Some(gpu) = &self.home {
            gpu.recycle(s);
        } else {
            drop(s);
        }
    }
}

impl<T: cheems_ops::cudarc::driver::DeviceRepr> Dev<T> {
    /// Elements `offset..offset + len` of `owner`'s buffer `of`, without a copy.
    fn view(
        gpu: &Gpu,
        owner: &Arc<DTensor>,
        of: &CudaSlice<T>,
        offset: usize,
        len: usize,
    ) -> Result<Dev<T>> {
        ensure!(offset + len <= of.len(), "view {offset}+{len} outside a buffer of {}", of.len());
        // SAFETY: the range lies inside `of`'s live allocation, which `owner` keeps alive for as long as the view
        // exists; the view leaks instead of freeing on drop.
        let s = unsafe { alias(gpu, of, offset, len) };
        Ok(Dev {
            slice: std::mem::ManuallyDrop::new(s),
            owner: Some(owner.clone()),
            home: None,
            fixed: false,
        })
    }

    /// A fixed buffer over all of `of`, which the caller keeps alive (and does not otherwise use) for as long as
    /// the returned handle and every run that reads or writes it.
    ///
    /// # Safety
    /// `of` must outlive the handle and the work issued through it.
    pub(crate) unsafe fn fixed(gpu: &Gpu, of: &CudaSlice<T>) -> Dev<T> {
        let s = alias(gpu, of, 0, of.len());
        Dev { slice: std::mem::ManuallyDrop::new(s), owner: None, home: None, fixed: true }
    }

    /// Whether this buffer is a view of another tensor's memory.
    fn is_view(&self) -> bool {
        self.owner.is_some()
    }

    /// This buffer when it may be written in place (owned or fixed); a view is copied into a new buffer first.
    fn writable(self, gpu: &Arc<Gpu>) -> Result<Dev<T>>
    where
        T: cheems_ops::cudarc::driver::ValidAsZeroBits,
    {
        if !self.is_view() {
            return Ok(self);
        }
        dup(gpu, &self.slice)
    }
}

/// A copy of `s` in a new buffer that returns to `gpu`'s spare buffers when dropped.
pub(crate) fn dup<T>(gpu: &Arc<Gpu>, s: &CudaSlice<T>) -> Result<Dev<T>>
where
    T: cheems_ops::cudarc::driver::DeviceRepr + cheems_ops::cudarc::driver::ValidAsZeroBits,
{
    let mut d = gpu.uninit::<T>(s.len())?;
    gpu.stream().memcpy_dtod(s, &mut d).context("copying a device buffer")?;
    Ok(Dev::recycled_by(d, gpu))
}

/// A second `CudaSlice` handle on elements `offset..offset + len` of `of`; it must be leaked, not dropped.
///
/// # Safety
/// The range must lie inside `of`'s allocation, which must stay alive while the handle is used.
unsafe fn alias<T: cheems_ops::cudarc::driver::DeviceRepr>(
    gpu: &Gpu,
    of: &CudaSlice<T>,
    offset: usize,
    len: usize,
) -> CudaSlice<T> {
    use cheems_ops::cudarc::driver::DevicePtr;
    let (base, _record) = of.device_ptr(gpu.stream());
    let ptr = base + (offset * std::mem::size_of::<T>()) as u64;
    gpu.stream().upgrade_device_ptr::<T>(ptr, len)
}

/// A device tensor; small i64 tensors (ids, masks, positions) keep a host copy for host-side glue.
pub struct DTensor {
    pub dims: Vec<usize>,
    pub buf: Buf,
    pub host_i64: Option<Vec<i64>>,
}

/// Activation element types: access to the matching [`Buf`] variant.
pub trait ActElem: Elem
where
    CudaBlas: Gemm<Self>,
{
    const DTYPE: ActDType;
    fn get(b: &Buf) -> Option<&CudaSlice<Self>>;
    fn wrap_dev(d: Dev<Self>) -> Buf;
}

impl ActElem for f32 {
    const DTYPE: ActDType = ActDType::F32;
    fn get(b: &Buf) -> Option<&CudaSlice<f32>> {
        match b {
            Buf::F32(s) => Some(s),
            _ => None,
        }
    }
    fn wrap_dev(d: Dev<f32>) -> Buf {
        Buf::F32(d)
    }
}

impl ActElem for bf16 {
    const DTYPE: ActDType = ActDType::BF16;
    fn get(b: &Buf) -> Option<&CudaSlice<bf16>> {
        match b {
            Buf::BF16(s) => Some(s),
            _ => None,
        }
    }
    fn wrap_dev(d: Dev<bf16>) -> Buf {
        Buf::BF16(d)
    }
}

impl ActElem for f16 {
    const DTYPE: ActDType = ActDType::F16;
    fn get(b: &Buf) -> Option<&CudaSlice<f16>> {
        match b {
            Buf::F16(s) => Some(s),
            _ => None,
        }
    }
    fn wrap_dev(d: Dev<f16>) -> Buf {
        Buf::F16(d)
    }
}

impl DTensor {
    fn len(&self) -> usize {
        self.dims.iter().product()
    }

    /// The device memory of the tensor's buffer, `None` for an empty one.
    pub(crate) fn span(&self, gpu: &Gpu) -> Option<ops::cuda::order::Span> {
        match &self.buf {
            Buf::F32(s) => Some(gpu.span(s)),
            Buf::BF16(s) => Some(gpu.span(s)),
            Buf::F16(s) => Some(gpu.span(s)),
            Buf::I64(s) => Some(gpu.span(s)),
            Buf::Empty => None,
        }
    }

    /// Elements `offset..offset + len` of `t` as a tensor of `dims`, sharing `t`'s memory (no copy).
    fn view(
        gpu: &Gpu,
        t: &Arc<DTensor>,
        offset: usize,
        len: usize,
        dims: Vec<usize>,
    ) -> Result<DTensor> {
        let buf = match &t.buf {
            Buf::F32(s) => Buf::F32(Dev::view(gpu, t, s, offset, len)?),
            Buf::BF16(s) => Buf::BF16(Dev::view(gpu, t, s, offset, len)?),
            Buf::F16(s) => Buf::F16(Dev::view(gpu, t, s, offset, len)?),
            Buf::I64(s) => Buf::I64(Dev::view(gpu, t, s, offset, len)?),
            Buf::Empty => Buf::Empty,
        };
        let host_i64 = t.host_i64.as_ref().map(|h| h[offset..offset + len].to_vec());
        Ok(DTensor { dims, buf, host_i64 })
    }

    fn act<T: ActElem>(&self) -> Result<&CudaSlice<T>>
    where
        CudaBlas: Gemm<T>,
    {
        T::get(&self.buf)
            .with_context(|| format!("expected a {} tensor of {:?}", T::NAME, self.dims))
    }

    fn f32(&self) -> Result<&CudaSlice<f32>> {
        match &self.buf {
            Buf::F32(s) => Ok(s),
            _ => bail!("expected an f32 tensor of {:?}", self.dims),
        }
    }

    fn i64(&self) -> Result<&CudaSlice<i64>> {
        match &self.buf {
            Buf::I64(s) => Ok(s),
            _ => bail!("expected an i64 tensor of {:?}", self.dims),
        }
    }

    fn host(&self) -> Result<&[i64]> {
        self.host_i64
            .as_deref()
            .with_context(|| format!("no host copy of the i64 tensor {:?}", self.dims))
    }
}

/// How a value is stored on the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Store {
    Act,
    F32,
    I64,
}

/// Whether operand `port` of `op` is read in f32 whatever the activation dtype.
fn wants_f32(op: &Op, port: usize) -> bool {
    matches!(
        (op, port),
        (Op::SsdScan(_), 2 | 5)
            | (Op::DynamicMaskValues, 1)
            | (Op::ProjectedMaskValues { .. }, 2)
            | (Op::MaskedAttention(_), 4)
    )
}

/// Storage of every value: i64 facts, f32 for state/scores/mask values and what feeds f32 operands, else the
/// activation dtype.
fn plan_storage(g: &Graph, order: &[NodeId]) -> HashMap<ValueId, Store> {
    let mut st: HashMap<ValueId, Store> = HashMap::new();
    for &id in order {
        let node = g.node(id);
        let ins = g.inputs_of(id);
        for (port, f) in node.outputs.iter().enumerate() {
            let v = ValueId { node: id, port: port as u16 };
            let s = match (&node.op, port) {
                _ if f.dtype == DType::I64 => Store::I64,
                (Op::DynamicMaskValues | Op::ProjectedMaskValues { .. }, _)
                | (Op::SsdScan(_), 1)
                | (Op::PkTopK(_) | Op::RouterTopK(_), 0) => Store::F32,
                (Op::Concat { .. }, _) if ins.iter().any(|i| st.get(i) == Some(&Store::F32)) => {
                    Store::F32
                }
                _ => Store::Act,
            };
            st.insert(v, s);
        }
    }
    for _ in 0..2 {
        for &id in order {
            let node = g.node(id);
            let ins = g.inputs_of(id);
            for (port, v) in ins.iter().enumerate() {
                let src = &g.node(v.node).op;
                if !matches!(src, Op::Input(_) | Op::Const(_)) || st.get(v) == Some(&Store::I64) {
                    continue;
                }
                let out_f32 = st.get(&ValueId { node: id, port: 0 }) == Some(&Store::F32);
                if wants_f32(&node.op, port) || (matches!(node.op, Op::Concat { .. }) && out_f32) {
                    st.insert(*v, Store::F32);
                }
            }
            if matches!(node.op, Op::Concat { .. })
                && ins.iter().any(|i| st.get(i) == Some(&Store::F32))
            {
                st.insert(ValueId { node: id, port: 0 }, Store::F32);
            }
        }
    }
    st
}

/// The dtype each weight (`Const` node, by name) is uploaded in under `dtype` activations: a compiled artifact
/// stores its weights this way, so that loading it uploads the same bits as compiling at load time.
pub fn const_dtypes(graph: &Graph, dtype: ActDType) -> Result<BTreeMap<String, DType>> {
    let order = graph.topo_order()?;
    let storage = plan_storage(graph, &order);
    let mut out = BTreeMap::new();
    for &id in &order {
        let node = graph.node(id);
        if !matches!(node.op, Op::Const(_)) {
            continue;
        }
        let d = match (storage[&ValueId { node: id, port: 0 }], node.outputs[0].dtype) {
            (Store::I64, _) | (_, DType::I64) => DType::I64,
            (Store::Act, _) => dtype.storage(),
            _ => DType::F32,
        };
        out.insert(node.name.clone(), d);
    }
    Ok(out)
}

/// Linears (not graph outputs) every reader of which is a `SliceLast`, with those readers.
fn split_linears(g: &Graph, order: &[NodeId]) -> HashMap<NodeId, Vec<NodeId>> {
    let mut readers: HashMap<ValueId, Vec<NodeId>> = HashMap::new();
    for &id in order {
        for v in g.inputs_of(id) {
            readers.entry(v).or_default().push(id);
        }
    }
    let outputs: Vec<ValueId> = g.outputs().iter().map(|(_, v)| *v).collect();
    let mut split = HashMap::new();
    for &id in order {
        if !matches!(g.node(id).op, Op::Linear { .. }) {
            continue;
        }
        let v = ValueId { node: id, port: 0 };
        let Some(r) = readers.get(&v) else { continue };
        if !outputs.contains(&v)
            && r.iter().all(|&n| matches!(g.node(n).op, Op::SliceLast { .. }))
            && r.iter().all(|&n| g.inputs_of(n).len() == 1)
        {
            split.insert(id, r.clone());
        }
    }
    split
}

/// A graph bound to a device, with its weights uploaded.
pub struct CudaExecutor {
    graph: Graph,
    order: Vec<NodeId>,
    gpu: Arc<Gpu>,
    dtype: ActDType,
    storage: HashMap<ValueId, Store>,
    consts: HashMap<NodeId, Arc<DTensor>>,
    /// Linears whose output only `SliceLast` nodes read (packed projections), with those nodes: for more than
    /// one row, each slice is one GEMM over a view of the packed weight, written straight into the slice's
    /// output (a row-major slice of several rows is not contiguous, a range of weight rows is).
    split: HashMap<NodeId, Vec<NodeId>>,
}

fn upload_f32(gpu: &Gpu, t: &Tensor, store: Store, dtype: ActDType) -> Result<DTensor> {
    let dims = t.dims().to_vec();
    if t.is_empty() {
        let host_i64 = (t.dtype() == DType::I64).then(Vec::new);
        return Ok(DTensor { dims, buf: Buf::Empty, host_i64 });
    }
    let buf = match (store, t.dtype()) {
        (Store::I64, _) | (_, DType::I64) => {
            let v = t.as_i64()?;
            let buf = Buf::I64(gpu.upload(v)?.into());
            return Ok(DTensor { dims, buf, host_i64: Some(v.to_vec()) });
        }
        (Store::F32, _) => Buf::F32(gpu.upload(t.as_f32()?)?.into()),
        (Store::Act, _) => with_act!(dtype, T => T::wrap_dev(narrowed::<T>(gpu, t.as_f32()?)?)),
    };
    Ok(DTensor { dims, buf, host_i64: None })
}

/// `v` rounded to `T` (to nearest, ties to even).
pub(crate) fn narrow<T: Elem>(v: &[f32]) -> Vec<T> {
    v.iter().map(|&x| T::from_f32(x)).collect()
}

/// `v` rounded to `T` on the device.
fn narrowed<T: Elem>(gpu: &Gpu, v: &[f32]) -> Result<Dev<T>> {
    Ok(gpu.upload(&narrow::<T>(v))?.into())
}

/// Copies a device tensor back as an f32 or i64 host tensor.
pub fn download(gpu: &Gpu, t: &DTensor) -> Result<Tensor> {
    let dims = t.dims.clone();
    match &t.buf {
        Buf::F32(s) => Tensor::f32(dims, gpu.download(s)?),
        Buf::BF16(s) => Tensor::f32(dims, widened(gpu, s)?),
        Buf::F16(s) => Tensor::f32(dims, widened(gpu, s)?),
        Buf::I64(s) => Tensor::i64(dims, gpu.download(s)?),
        Buf::Empty => Ok(Tensor::zeros_f32(dims)),
    }
}

/// `s` in f32 on the host.
fn widened<T: Elem>(gpu: &Gpu, s: &CudaSlice<T>) -> Result<Vec<f32>> {
    Ok(gpu.download(s)?.into_iter().map(|x| x.to_f32()).collect())
}

/// Each row's `k` best logits of device logits `[.., V]` (f32, bf16 or f16): by the top-k kernel, which sends only them
/// to the host, where `k` fits it; else from the downloaded logits.
pub fn top_k(gpu: &Gpu, t: &DTensor, k: usize) -> Result<super::TopK> {
    use ops::logits_topk::{cuda::logits_top_k, LogitsTopKParams};
    let v = t.dims.last().copied().unwrap_or(0);
    let k = k.min(v);
    let rows = t.dims.iter().product::<usize>() / v.max(1);
    if k > ops::logits_topk::cuda::MAX_K || rows * k == 0 {
        return super::TopK::of_logits(&download(gpu, t)?, k);
    }
    let p = LogitsTopKParams { rows, vocab: v, k };
    let mut values = gpu.uninit::<f32>(rows * k)?;
    let mut ids = gpu.uninit::<i64>(rows * k)?;
    match &t.buf {
        Buf::F32(s) => logits_top_k(gpu, &p, s, &mut values, &mut ids)?,
        Buf::BF16(s) => logits_top_k(gpu, &p, s, &mut values, &mut ids)?,
        Buf::F16(s) => logits_top_k(gpu, &p, s, &mut values, &mut ids)?,
        Buf::I64(_) | Buf::Empty => bail!("the logits are not floating point on the device"),
    }
    Ok(super::TopK { k, values: gpu.download(&values)?, ids: gpu.download(&ids)? })
}

impl CudaExecutor {
    /// Checks that every node has a CUDA kernel, plans storage and uploads the weights.
    pub fn new(graph: Graph, gpu: Arc<Gpu>, dtype: ActDType) -> Result<CudaExecutor> {
        graph.verify().context("verifying the graph before execution")?;
        let order = graph.topo_order()?;
        let missing: Vec<String> = order
            .iter()
            .filter(|id| !supported(&graph.node(**id).op, Target::Cuda))
            .map(|id| graph.node(*id).name.clone())
            .collect();
        ensure!(missing.is_empty(), "no CUDA kernel for: {}", missing.join(", "));
        let storage = plan_storage(&graph, &order);
        let mut consts = HashMap::new();
        for &id in &order {
            if let Op::Const(c) = &graph.node(id).op {
                let store = storage[&ValueId { node: id, port: 0 }];
                let t = upload_f32(&gpu, &c.0, store, dtype)
                    .with_context(|| format!("uploading `{}`", graph.node(id).name))?;
                consts.insert(id, Arc::new(t));
            }
        }
        let split = split_linears(&graph, &order);
        Ok(CudaExecutor { graph, order, gpu, dtype, storage, consts, split })
    }

    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    pub fn gpu(&self) -> &Arc<Gpu> {
        &self.gpu
    }

    pub fn dtype(&self) -> ActDType {
        self.dtype
    }

    /// Uploads a host input of the graph in the storage its readers expect.
    pub fn upload_input(&self, name: &str, t: &Tensor) -> Result<DTensor> {
        let id = self
            .graph
            .find(name)
            .with_context(|| format!("`{name}` is not an input of the graph"))?;
        upload_f32(&self.gpu, t, self.storage[&ValueId { node: id, port: 0 }], self.dtype)
    }

    /// A zero tensor of `dims` for input `name`, in the storage its readers expect.
    pub(crate) fn zeros_for_input(&self, name: &str, dims: Vec<usize>) -> Result<DTensor> {
        let id = self
            .graph
            .find(name)
            .with_context(|| format!("`{name}` is not an input of the graph"))?;
        let n = dims.iter().product();
        let gpu = &self.gpu;
        let buf = match (self.storage[&ValueId { node: id, port: 0 }], self.dtype) {
            (Store::I64, _) => Buf::I64(gpu.zeros::<i64>(n)?.into()),
            (Store::F32, _) => Buf::F32(gpu.zeros::<f32>(n)?.into()),
            (Store::Act, d) => with_act!(d, T => T::wrap_dev(gpu.zeros::<T>(n)?.into())),
        };
        Ok(DTensor { dims, buf, host_i64: None })
    }

    /// Runs with host tensors in and out (graph outputs plus the output 0 of each tapped node).
    pub fn run(
        &self,
        inputs: BTreeMap<String, Tensor>,
        taps: &[&str],
    ) -> Result<BTreeMap<String, Tensor>> {
        super::bind_inputs(&self.graph, &inputs)?;
        let mut dev = BTreeMap::new();
        for (name, t) in &inputs {
            dev.insert(name.clone(), self.upload_input(name, t)?);
        }
        let out = self.run_device(dev, taps, None)?;
        out.iter().map(|(k, v)| Ok((k.clone(), download(&self.gpu, v)?))).collect()
    }

    /// A session step (see [`super::Executor::run_step`]): the states stay on the device; host-held ones (the
    /// initial zeros) are uploaded once.
    pub fn run_step(
        &self,
        inputs: BTreeMap<String, Tensor>,
        states: &mut BTreeMap<String, super::Held>,
        carry: &[(String, String)],
        taps: &[&str],
    ) -> Result<BTreeMap<String, Tensor>> {
        let mut all: BTreeMap<String, Tensor> = inputs.clone();
        let mut shapes = BTreeMap::new();
        for (name, held) in states.iter() {
            match held {
                super::Held::Host(t) => {
                    all.insert(name.clone(), t.clone());
                }
                super::Held::Device(d) => {
                    shapes.insert(name.clone(), d.dims.clone());
                }
            }
        }
        super::bind_inputs_with_shapes(&self.graph, &all, &shapes)?;
        let mut dev = BTreeMap::new();
        for (name, t) in &inputs {
            dev.insert(name.clone(), self.upload_input(name, t)?);
        }
        for (name, held) in std::mem::take(states) {
            let d = match held {
                super::Held::Host(t) => self.upload_input(&name, &t)?,
                super::Held::Device(d) => d,
            };
            dev.insert(name, d);
        }
        let mut out = self.run_device(dev, taps, None)?;
        for (present, past) in carry {
            let t = out
                .remove(present)
                .with_context(|| format!("the graph did not produce `{present}`"))?;
            states.insert(past.clone(), super::Held::Device(t));
        }
        out.iter().map(|(k, v)| Ok((k.clone(), download(&self.gpu, v)?))).collect()
    }

    /// Runs with device tensors in and out; `timings` receives each node's time (stream-synchronised) when given.
    pub fn run_device(
        &self,
        inputs: BTreeMap<String, DTensor>,
        taps: &[&str],
        timings: Option<&mut super::cpu::Timings>,
    ) -> Result<BTreeMap<String, DTensor>> {
        self.run_device_profiled(inputs, taps, timings, true)
    }

    /// [`Self::run_device`]; with `synchronise` false, `timings` receives the host's time to issue each node (its
    /// launches, allocations and host-side work) while the device runs behind.
    pub fn run_device_profiled(
        &self,
        inputs: BTreeMap<String, DTensor>,
        taps: &[&str],
        timings: Option<&mut super::cpu::Timings>,
        synchronise: bool,
    ) -> Result<BTreeMap<String, DTensor>> {
        self.run_nodes(inputs, HashMap::new(), None, taps, timings, synchronise)
    }

    /// [`Self::run_device_profiled`] with the outputs of the `preset` nodes given instead of computed, and, with
    /// `recorded`, as a recorded decode step: each of its `appends` (a `Concat` along axis 2 of a cache with room
    /// for more rows, and the step's rows) writes its rows into the cache in place at the row `pos` holds on the
    /// device, the cache itself being the output; with `segments`, each node's work is a segment of its own.
    pub(crate) fn run_nodes(
        &self,
        mut inputs: BTreeMap<String, DTensor>,
        mut preset: HashMap<NodeId, Vec<DTensor>>,
        mut recorded: Option<RecordedRun<'_>>,
        taps: &[&str],
        mut timings: Option<&mut super::cpu::Timings>,
        synchronise: bool,
    ) -> Result<BTreeMap<String, DTensor>> {
        let g = &self.graph;
        let mut values = super::Values::<DTensor>::new(g, &self.order, taps)?;
        let mut pending: HashMap<NodeId, DTensor> = HashMap::new();
        let appends = recorded.as_ref().map(|r| (r.appends, r.pos));
        let placed = recorded.as_ref().map(|r| r.placed);
        let weighed = recorded.as_ref().and_then(|r| r.weighed);
        let mut weights: HashMap<NodeId, Arc<DTensor>> = HashMap::new();
        let mut deferred: HashMap<NodeId, (&Op, Vec<Arc<DTensor>>)> = HashMap::new();
        let keep = recorded.as_ref().and_then(|r| r.keep.map(|k| (k, r.pos)));
        for &id in &self.order {
            let node = g.node(id);
            let mut args = values.operands(g, id)?;
            let tracked = recorded.as_ref().is_some_and(|r| r.segments.is_some());
            let mut reads: Vec<_> = match tracked {
                true => args.iter().filter_map(|a| a.span(&self.gpu)).collect(),
                false => Vec::new(),
            };
            let start = std::time::Instant::now();
            let mut early = None;
            if let (Op::Linear { bias }, Some(slices)) = (&node.op, self.split.get(&id)) {
                let rows = args[0].len() / args[1].dims[1].max(1);
                if rows > 1 && !values.returns(id) {
                    for &sid in slices {
                        let Op::SliceLast { start, len } = g.node(sid).op else {
                            unreachable!("split linears feed slices only")
                        };
                        let b = bias.then(|| &args[2]);
                        let t = with_act!(self.dtype, T => {
                            self.slice_linear::<T>(&args[0], &args[1], b, start, len)
                        });
                        pending.insert(
                            sid,
                            t.with_context(|| format!("running node `{}`", node.name))?,
                        );
                    }
                    let mut dims = args[0].dims.clone();
                    *dims.last_mut().expect("ranked") = args[1].dims[0];
                    early = Some(vec![Arc::new(DTensor { dims, buf: Buf::Empty, host_i64: None })]);
                }
            }
            if let Some(t) = pending.remove(&id) {
                early = Some(vec![Arc::new(t)]);
            }
            if let Some(outs) = preset.remove(&id) {
                early = Some(outs.into_iter().map(Arc::new).collect());
            }
            if let (Op::PkTopK(pk), Some(&mix)) = (&node.op, weighed.and_then(|w| w.get(&id))) {
                let Op::ExpertMix(e) = &g.node(mix).op else {
                    unreachable!("weighed_routes pairs a top-k with an expert mix")
                };
                let ins = g.inputs_of(mix);
                if let (Some(x), Some(down)) = (values.peek(ins[0]), values.peek(ins[3])) {
                    let r = with_act!(self.dtype, T => self.weighed_route::<T>(pk, e, &args, &x, &down))
                        .with_context(|| format!("running node `{}` on CUDA", node.name))?;
                    if let Some((outs, w)) = r {
                        if tracked {
                            reads.extend([&x, &down].iter().filter_map(|a| a.span(&self.gpu)));
                        }
                        weights.insert(mix, Arc::new(w));
                        early = Some(outs.into_iter().map(Arc::new).collect());
                    }
                }
            }
            if let (Op::ExpertMix(e), Some(w)) = (&node.op, weights.remove(&id)) {
                if tracked {
                    reads.extend(w.span(&self.gpu));
                }
                let t = with_act!(self.dtype, T => self.summed_mix::<T>(e, &args, &w))
                    .with_context(|| format!("running node `{}` on CUDA", node.name))?;
                early = Some(vec![Arc::new(t)]);
            }
            let mut memo_span = None;
            if let (Op::MaskedAttention(at), Some((memos, pos)), Some((set, _))) =
                (&node.op, keep, appends)
            {
                if carries_keep(at, &args) && reads_caches(g, id, set) {
                    let len = ops::masked_attention::cuda::keep_memo_len(
                        args[0].dims[0],
                        args[4].dims[1],
                    );
                    let t = memos
                        .with(self, id, len, |memo| {
                            memo_span = Some(self.gpu.span(&*memo));
                            let steps = ops::masked_attention::cuda::KeepSteps { memo, pos };
                            with_act!(self.dtype, T => self.attention::<T>(at, &args, Some(steps)))
                        })
                        .with_context(|| format!("running node `{}` on CUDA", node.name))?;
                    early = Some(vec![Arc::new(t)]);
                }
            }
            if let Some(&append) = placed.and_then(|p| p.get(&id)) {
                let d = &args[0].dims;
                ensure!(d.len() >= 3, "node `{}`: operand 0 is {d:?}, not [B, S, ..]", node.name);
                let dims = match &node.op {
                    Op::Permute { perm } if perm.len() == d.len() => {
                        perm.iter().map(|&k| d[k]).collect()
                    }
                    Op::NormRope(_) | Op::Rope => d.clone(),
                    Op::ProjectedMaskValues { .. } => vec![d[0], args[1].dims[0], d[1]],
                    Op::DynamicMaskValues => vec![d[0], d[2], d[1]],
                    op => bail!(
                        "node `{}`: {:?} rows are not placed in a cache",
                        node.name,
                        op.kind()
                    ),
                };
                if !matches!(node.op, Op::Permute { .. }) {
                    deferred.insert(append, (&node.op, std::mem::take(&mut args)));
                }
                early = Some(vec![Arc::new(DTensor { dims, buf: Buf::Empty, host_i64: None })]);
            }
            if let Some((_, pos)) = appends.filter(|(set, _)| set.contains(&id)) {
                let t = match deferred.remove(&id) {
                    Some((op, inputs)) => {
                        if tracked {
                            reads.extend(inputs.iter().filter_map(|a| a.span(&self.gpu)));
                        }
                        self.place_rows(std::mem::take(&mut args), op, &inputs, pos)
                    }
                    None => self.append(&node.op, std::mem::take(&mut args), pos),
                }
                .with_context(|| format!("appending to the cache at node `{}`", node.name))?;
                early = Some(vec![Arc::new(t)]);
            }
            let outs: Vec<Arc<DTensor>> = if let Some(o) = early {
                o
            } else {
                match &node.op {
                    Op::Input(_) => {
                        let t = inputs
                            .remove(&node.name)
                            .with_context(|| format!("missing graph input `{}`", node.name))?;
                        vec![Arc::new(t)]
                    }
                    Op::Const(_) => vec![self.consts[&id].clone()],
                    op => {
                        let r = with_act!(self.dtype, T => self.eval::<T>(op, args));
                        r.with_context(|| {
                            format!("running node `{}` ({:?}) on CUDA", node.name, op.kind())
                        })?
                        .into_iter()
                        .map(Arc::new)
                        .collect()
                    }
                }
            };
            if let Some(t) = timings.as_deref_mut() {
                if synchronise {
                    self.gpu.synchronize()?;
                }
                t.push((node.name.clone(), start.elapsed()));
            }
            if let Some(segs) = recorded.as_mut().and_then(|r| r.segments.as_deref_mut()) {
                let mut writes = self.gpu.take_handed_out();
                writes.extend(outs.iter().filter_map(|t| t.span(&self.gpu)));
                writes.extend(memo_span);
                let tail = self
                    .gpu
                    .recorded_tail()
                    .with_context(|| format!("after node `{}`", node.name))?;
                segs.push(ops::cuda::order::Segment { tail, reads, writes });
            }
            values.keep(id, outs);
        }
        values.finish(|t| self.owned(t))
    }

    /// A recorded step's product-key top-k (operands `a`) that also weighs the experts of the mix `e` reading it,
    /// over the mix's rows `x` and down rows: the top-k's outputs and the weights `[rows, He·k]`; `None` where the
    /// sizes take other launches (more pairs than the top-k's row form takes, or a mix that weighs as it sums).
    fn weighed_route<T: ActElem>(
        &self,
        pk: &PkTopK,
        e: &ExpertMix,
        a: &[Arc<DTensor>],
        x: &DTensor,
        down: &DTensor,
    ) -> Result<Option<(Vec<DTensor>, DTensor)>>
    where
        CudaBlas: Gemm<T>,
    {
        let d = &a[0].dims;
        let p = pk_params(pk, a);
        let mix = mix_params(x, &[d[0], d[1], pk.heads, pk.k], down);
        if !ops::pk_topk::cuda::weighs(&p, std::mem::size_of::<T>())
            || !ops::expert_mix::cuda::sums_apart(&mix)
        {
            return Ok(None);
        }
        let n = p.rows * pk.heads * pk.k;
        let gpu = &*self.gpu;
        let (mut s, mut ids, mut w) =
            (gpu.uninit::<f32>(n)?, gpu.uninit::<i64>(n)?, gpu.uninit::<f32>(n)?);
        let weighing = ops::pk_topk::cuda::Weighing {
            x: x.act::<T>()?,
            down: down.act::<T>()?,
            mix,
            act: ops_act(e.act),
            order: mix_order(e.order),
            norm_topk: e.norm_topk,
        };
        let (q, keys) = (a[0].act::<T>()?, a[1].act::<T>()?);
        ops::pk_topk::cuda::pk_topk_weighed(gpu, &p, q, keys, &weighing, &mut s, &mut ids, &mut w)?;
        let dims = vec![d[0], d[1], pk.heads, pk.k];
        let w = DTensor {
            dims: dims.clone(),
            buf: Buf::F32(Dev::recycled_by(w, &self.gpu)),
            host_i64: None,
        };
        Ok(Some((self.routed(dims, s, ids), w)))
    }

    /// A router's outputs, scores f32 and ids i64 of shape `dims`, in buffers the pool takes back.
    fn routed(
        &self,
        dims: Vec<usize>,
        scores: CudaSlice<f32>,
        ids: CudaSlice<i64>,
    ) -> Vec<DTensor> {
        let home = &self.gpu;
        vec![
            DTensor {
                dims: dims.clone(),
                buf: Buf::F32(Dev::recycled_by(scores, home)),
                host_i64: None,
            },
            DTensor { dims, buf: Buf::I64(Dev::recycled_by(ids, home)), host_i64: None },
        ]
    }

    /// The expert mix `e` over operands `a` from the weights `w` its top-k computed (`weighed_route`).
    fn summed_mix<T: ActElem>(
        &self,
        e: &ExpertMix,
        a: &[Arc<DTensor>],
        w: &DTensor,
    ) -> Result<DTensor>
    where
        CudaBlas: Gemm<T>,
    {
        let p = mix_params(&a[0], &a[1].dims, &a[3]);
        let (dims, mut y) = self.act_out::<T>(a[0].dims.clone())?;
        let add = if e.add { Some(a[5].act::<T>()?) } else { None };
        ops::expert_mix::cuda::expert_sum(
            &self.gpu,
            &p,
            w.f32()?,
            a[2].i64()?,
            a[4].act::<T>()?,
            add,
            &mut y,
        )?;
        Ok(DTensor { dims, buf: T::wrap_dev(Dev::recycled_by(y, &self.gpu)), host_i64: None })
    }

    fn copy(&self, t: &DTensor) -> Result<DTensor> {
        let buf = match &t.buf {
            Buf::F32(s) => Buf::F32(dup(&self.gpu, s)?),
            Buf::BF16(s) => Buf::BF16(dup(&self.gpu, s)?),
            Buf::F16(s) => Buf::F16(dup(&self.gpu, s)?),
            Buf::I64(s) => Buf::I64(dup(&self.gpu, s)?),
            Buf::Empty => Buf::Empty,
        };
        Ok(DTensor { dims: t.dims.clone(), buf, host_i64: t.host_i64.clone() })
    }

    /// The cache `a[0]` (`[B, X, capacity, …]`, this node its only reader) with the rows of `a[1]` written at
    /// row `pos[0]` of axis 2.
    fn append(&self, op: &Op, mut a: Vec<Arc<DTensor>>, pos: &CudaSlice<i64>) -> Result<DTensor> {
        ensure!(matches!(op, Op::Concat { axis: 2 }), "a cache append is a Concat along axis 2");
        let new = a.pop().context("two operands")?;
        let mut cache = Arc::try_unwrap(a.pop().context("two operands")?)
            .map_err(|_| anyhow::anyhow!("the cache is read by another node too"))?;
        let (c, n) = (&cache.dims, &new.dims);
        ensure!(
            c.len() == n.len() && c.len() >= 3 && c[..2] == n[..2] && c[3..] == n[3..],
            "rows of {n:?} do not fit a cache of {c:?}"
        );
        let (outer, inner) = (c[0] * c[1], c[3..].iter().product::<usize>());
        let (rows, cap) = (n[2], c[2]);
        let gpu = &*self.gpu;
        match (&mut cache.buf, &new.buf) {
            (Buf::F32(d), Buf::F32(x)) => {
                ops::elementwise::cuda::place_rows(gpu, x, outer, rows, inner, cap, pos, d)?
            }
            (Buf::BF16(d), Buf::BF16(x)) => {
                ops::elementwise::cuda::place_rows(gpu, x, outer, rows, inner, cap, pos, d)?
            }
            (Buf::F16(d), Buf::F16(x)) => {
                ops::elementwise::cuda::place_rows(gpu, x, outer, rows, inner, cap, pos, d)?
            }
            _ => bail!("the cache and the rows appended to it differ in dtype"),
        }
        Ok(cache)
    }

    /// The cache `a[0]` (this node its only reader) with the rows that `op` computes from `inputs`, its operands,
    /// written from slot `pos[0]`: the mask values of keys (`DynamicMaskValues`, `ProjectedMaskValues`; a cache
    /// `[B, Hm, capacity]`), or their rotation (`Rope`, `NormRope` with the q/k norm; a cache `[B, G, capacity,
    /// Dh]`).
    fn place_rows(
        &self,
        mut a: Vec<Arc<DTensor>>,
        op: &Op,
        inputs: &[Arc<DTensor>],
        pos: &CudaSlice<i64>,
    ) -> Result<DTensor> {
        a.truncate(1);
        let mut cache = Arc::try_unwrap(a.pop().context("two operands")?)
            .map_err(|_| anyhow::anyhow!("the cache is read by another node too"))?;
        if let Op::NormRope(_) | Op::Rope = op {
            let (Some(x), [_, g, cap, dh]) = (inputs.first(), &cache.dims[..]) else {
                bail!("rows of {} operands into a cache of {:?}", inputs.len(), cache.dims)
            };
            let d = &x.dims;
            ensure!(
                d.len() == 4 && d[2] == *g && d[3] == *dh,
                "keys {d:?} do not fit a cache of {:?}",
                cache.dims
            );
            let (seq, cap) = (d[1], *cap);
            match &mut cache.buf {
                Buf::F32(c) => self.rotate_at::<f32>(op, seq, inputs, pos, cap, c)?,
                Buf::BF16(c) => self.rotate_at::<bf16>(op, seq, inputs, pos, cap, c)?,
                Buf::F16(c) => self.rotate_at::<f16>(op, seq, inputs, pos, cap, c)?,
                Buf::I64(_) | Buf::Empty => bail!("the key cache is not floating point"),
            }
            return Ok(cache);
        }
        if let Op::ProjectedMaskValues { bias } = *op {
            let cap = cache.dims.get(2).copied().context("a mask-value cache of rank 3")?;
            let Buf::F32(c) = &mut cache.buf else { bail!("the mask-value cache is not f32") };
            with_act!(self.dtype, T => {
                self.projected_mask_values::<T>(inputs, bias, Some((pos, cap)), c)?
            });
            return Ok(cache);
        }
        let ([dt, av], &[b, hm, cap]) = (inputs, &cache.dims[..]) else {
            bail!("mask values from {} operands into a cache of {:?}", inputs.len(), cache.dims)
        };
        let d = &dt.dims;
        ensure!(
            d.len() == 3 && d[0] == b && d[2] == hm,
            "`dt` {d:?} does not fit a cache of {:?}",
            cache.dims
        );
        let p = ops::dynamic_mask::KeyValuesParams { batch: d[0], seq: d[1], heads: d[2] };
        let Buf::F32(c) = &mut cache.buf else { bail!("the mask-value cache is not f32") };
        let gpu = &*self.gpu;
        with_act!(self.dtype, T => {
            ops::dynamic_mask::cuda::key_values_at(gpu, &p, dt.act::<T>()?, av.f32()?, pos, cap, c)?
        });
        Ok(cache)
    }

    /// `t` with new dims over the same elements in the same order: the tensor itself when this was its last
    /// reader, else a view of its buffer (no copy either way).
    fn reshaped(&self, t: Arc<DTensor>, dims: Vec<usize>) -> Result<DTensor> {
        let t = match Arc::try_unwrap(t) {
            Ok(t) => return Ok(DTensor { dims, ..t }),
            Err(shared) => shared,
        };
        DTensor::view(&self.gpu, &t, 0, t.len(), dims)
    }

    /// The tensor itself when this was its last reader, else a copy.
    fn owned(&self, t: Arc<DTensor>) -> Result<DTensor> {
        Arc::try_unwrap(t).or_else(|shared| self.copy(&shared))
    }

    fn act_out<T: ActElem>(&self, dims: Vec<usize>) -> Result<(Vec<usize>, CudaSlice<T>)>
    where
        CudaBlas: Gemm<T>,
    {
        let n = dims.iter().product();
        Ok((dims, self.gpu.uninit::<T>(n)?))
    }

    /// The rotated keys of a `Rope` (`x`, `cos`, `sin`) or `NormRope` (`x`, `w`, `cos`, `sin`) node's operands `a`
    /// (`x` `[B, seq, G, Dh]`) into a key cache `[B, G, capacity, Dh]` from slot `pos[0]`.
    fn rotate_at<T: ActElem>(
        &self,
        op: &Op,
        seq: usize,
        a: &[Arc<DTensor>],
        pos: &CudaSlice<i64>,
        capacity: usize,
        cache: &mut CudaSlice<T>,
    ) -> Result<()>
    where
        CudaBlas: Gemm<T>,
    {
        let d = &a[0].dims;
        let (rows, heads, dim) = (d[0] * d[1], d[2], d[3]);
        let t = |k: usize| a.get(k).context("a missing operand")?.act::<T>();
        match op {
            Op::NormRope(n) => {
                let p = ops::norm_rope::NormRopeParams { rows, heads, dim, eps: n.eps };
                let (x, w, cos, sin) = (t(0)?, t(1)?, t(2)?, t(3)?);
                ops::norm_rope::cuda::norm_rope_at(
                    &self.gpu, &p, seq, x, w, cos, sin, pos, capacity, cache,
                )?
            }
            Op::Rope => {
                let p = ops::rope::RopeParams { rows, heads, dim };
                let (x, cos, sin) = (t(0)?, t(1)?, t(2)?);
                ops::rope::cuda::apply_at(&self.gpu, &p, seq, x, cos, sin, pos, capacity, cache)?
            }
            _ => bail!("{:?} does not rotate keys", op.kind()),
        }
        Ok(())
    }

    /// The mask values `exp(A·softplus(x·wᵀ (+ b)))` of a `ProjectedMaskValues` node's operands `a` into `m`
    /// (`[B, Hm, S]`, or with `at` a cache `[B, Hm, capacity]` from slot `pos[0]`): one mask GEMV for a few rows,
    /// else the linear and then the mask values.
    fn projected_mask_values<T: ActElem>(
        &self,
        a: &[Arc<DTensor>],
        bias: bool,
        at: Option<(&CudaSlice<i64>, usize)>,
        m: &mut CudaSlice<f32>,
    ) -> Result<()>
    where
        CudaBlas: Gemm<T>,
    {
        let (x, w, av) = (&a[0], &a[1], a[2].f32()?);
        let d = &x.dims;
        ensure!(d.len() == 3 && w.dims.len() == 2, "`x` {d:?} and `w` {:?} of mask values", w.dims);
        let (rows, out, inp) = (d[0] * d[1], w.dims[0], w.dims[1]);
        let b = if bias { Some(a[3].act::<T>()?) } else { None };
        let gpu = &*self.gpu;
        if rows <= ops::matmul::cuda::GEMV_MAX_ROWS && inp > 0 {
            use ops::matmul::cuda::MaskOut;
            let p = ops::matmul::LinearParams { rows, in_features: inp, out_features: out };
            let dest = match at {
                Some((pos, capacity)) => MaskOut::Cache { pos, capacity },
                None => MaskOut::Values,
            };
            let (xs, ws) = (x.act::<T>()?, w.act::<T>()?);
            ops::matmul::cuda::mask_linear(gpu, &p, d[1], xs, ws, b, av, dest, m)?;
            return Ok(());
        }
        let dt = self.linear::<T>(x.act::<T>()?, rows, w, bias.then(|| &*a[3]))?;
        let dt = Dev::recycled_by(dt, &self.gpu);
        let kp = ops::dynamic_mask::KeyValuesParams { batch: d[0], seq: d[1], heads: out };
        match at {
            Some((pos, cap)) => {
                ops::dynamic_mask::cuda::key_values_at(gpu, &kp, &dt, av, pos, cap, m)?
            }
            None => ops::dynamic_mask::cuda::key_values(gpu, &kp, &dt, av, m)?,
        }
        Ok(())
    }

    fn linear<T: ActElem>(
        &self,
        x: &CudaSlice<T>,
        rows: usize,
        w: &DTensor,
        b: Option<&DTensor>,
    ) -> Result<CudaSlice<T>>
    where
        CudaBlas: Gemm<T>,
    {
        let (out, inp) = (w.dims[0], w.dims[1]);
        let p = ops::matmul::LinearParams { rows, in_features: inp, out_features: out };
        let mut y = self.gpu.uninit::<T>(rows * out)?;
        let bias = match b {
            Some(b) => Some(b.act::<T>()?),
            None => None,
        };
        ops::matmul::cuda::linear(&self.gpu, &p, x, w.act::<T>()?, bias, &mut y)?;
        Ok(y)
    }

    /// Columns `start..start + len` of `x·wᵀ (+ b)` as one GEMM over weight rows `start..start + len`.
    fn slice_linear<T: ActElem>(
        &self,
        x: &DTensor,
        w: &Arc<DTensor>,
        b: Option<&Arc<DTensor>>,
        start: usize,
        len: usize,
    ) -> Result<DTensor>
    where
        CudaBlas: Gemm<T>,
    {
        let inp = w.dims[1];
        let rows = x.len() / inp.max(1);
        let view = |t: &Arc<DTensor>, per: usize| {
            let dims = if per == 1 { vec![len] } else { vec![len, per] };
            DTensor::view(&self.gpu, t, start * per, len * per, dims)
        };
        let wv = view(w, inp)?;
        let bv = match b {
            Some(b) => Some(view(b, 1)?),
            None => None,
        };
        let y = self.linear::<T>(x.act::<T>()?, rows, &wv, bv.as_ref())?;
        let mut dims = x.dims.clone();
        *dims.last_mut().expect("ranked") = len;
        Ok(DTensor { dims, buf: T::wrap_dev(Dev::recycled_by(y, &self.gpu)), host_i64: None })
    }

    /// Masked attention over the operands `a` (q, k, v, the attention mask, and the mask values or learned mask);
    /// with `steps`, a decode step whose keep window carries over from the step before.
    fn attention<T: ActElem>(
        &self,
        at: &Attention,
        a: &[Arc<DTensor>],
        steps: Option<ops::masked_attention::cuda::KeepSteps<'_>>,
    ) -> Result<DTensor>
    where
        CudaBlas: Gemm<T>,
    {
        let (gpu, home) = (&*self.gpu, &self.gpu);
        let (q, k) = (&a[0].dims, &a[1].dims);
        let t = k[2];
        let mut mask_heads = 0;
        let (mut key_m, mut learned_buf) = (None, None);
        let mode = at.mask.kernel_mode();
        match at.mask {
            AttentionMask::Causal => {}
            AttentionMask::Boolean | AttentionMask::Additive { .. } => {
                mask_heads = a[4].dims[1];
                key_m = Some(a[4].f32()?);
            }
            AttentionMask::Learned => {
                let l = a[4].dims[1];
                ensure!(
                    t <= l,
                    "{t} keys exceed the learned mask's {l} positions (max_position_embeddings)"
                );
                let mut sl = Dev::recycled_by(gpu.uninit::<f32>(at.heads * t)?, home);
                ops::elementwise::cuda::slice_cols(gpu, a[4].f32()?, at.heads, l, 0, t, &mut sl)?;
                learned_buf = Some(sl);
            }
        }
        let p = ops::masked_attention::AttentionParams {
            batch: q[0],
            q_len: q[1],
            kv_len: t,
            heads: at.heads,
            kv_heads: at.kv_heads,
            head_dim: at.head_dim,
            mask_heads,
            scale: at.scale,
        };
        let (dims, mut y) = self.act_out::<T>(q.clone())?;
        let (q, k, v, am) = (a[0].act::<T>()?, a[1].act::<T>()?, a[2].act::<T>()?, a[3].i64()?);
        match (steps, key_m) {
            (Some(steps), Some(key_m)) => ops::masked_attention::cuda::masked_attention_step(
                gpu, &p, mode, q, k, v, key_m, am, &mut y, steps,
            )?,
            (Some(_), None) => bail!("a keep window carried over steps needs the mask values"),
            (None, _) => ops::masked_attention::cuda::masked_attention(
                gpu,
                &p,
                mode,
                q,
                k,
                v,
                key_m,
                learned_buf.as_deref(),
                am,
                &mut y,
            )?,
        }
        Ok(DTensor { dims, buf: T::wrap_dev(Dev::recycled_by(y, home)), host_i64: None })
    }

    fn eval<T: ActElem>(&self, op: &Op, mut a: Vec<Arc<DTensor>>) -> Result<Vec<DTensor>>
    where
        CudaBlas: Gemm<T>,
    {
        let gpu = &*self.gpu;
        let home = &self.gpu;
        let wrap = |dims: Vec<usize>, s: CudaSlice<T>| DTensor {
            dims,
            buf: T::wrap_dev(Dev::recycled_by(s, home)),
            host_i64: None,
        };
        let f32t = |dims: Vec<usize>, s: CudaSlice<f32>| DTensor {
            dims,
            buf: Buf::F32(Dev::recycled_by(s, home)),
            host_i64: None,
        };
        let one = |t: DTensor| Ok(vec![t]);
        match op {
            Op::Input(_) | Op::Const(_) => unreachable!("bound by run_device"),
            Op::Embedding => {
                let (ids, table) = (&a[0], &a[1]);
                let (v, d) = (table.dims[0], table.dims[1]);
                let mut dims = ids.dims.clone();
                dims.push(d);
                let (dims, mut y) = self.act_out::<T>(dims)?;
                ops::embedding::cuda::gather(gpu, table.act::<T>()?, v, d, ids.i64()?, &mut y)?;
                one(wrap(dims, y))
            }
            Op::RmsNorm(n) => {
                let cols = a[1].len();
                let p = ops::rms_norm::RmsNormParams {
                    rows: a[0].len() / cols.max(1),
                    cols,
                    eps: n.eps,
                };
                let (dims, mut y) = self.act_out::<T>(a[0].dims.clone())?;
                ops::rms_norm::cuda::rms_norm(gpu, &p, a[0].act::<T>()?, a[1].act::<T>()?, &mut y)?;
                one(wrap(dims, y))
            }
            Op::ResidualRmsNorm { norm, scaled } => {
                let (s, rest) =
                    if *scaled { (Some(a[0].act::<T>()?), &a[1..]) } else { (None, &a[..]) };
                let (r, f, w) = (&rest[0], &rest[1], &rest[2]);
                let cols = w.len();
                let p = ops::rms_norm::RmsNormParams {
                    rows: r.len() / cols.max(1),
                    cols,
                    eps: norm.eps,
                };
                let (dims, mut h) = self.act_out::<T>(r.dims.clone())?;
                let mut y = gpu.uninit::<T>(r.len())?;
                ops::rms_norm::cuda::residual_rms_norm(
                    gpu,
                    &p,
                    s,
                    r.act::<T>()?,
                    f.act::<T>()?,
                    w.act::<T>()?,
                    &mut h,
                    &mut y,
                )?;
                Ok(vec![wrap(dims.clone(), h), wrap(dims, y)])
            }
            Op::Linear { bias } => {
                let inp = a[1].dims[1];
                let y = self.linear::<T>(
                    a[0].act::<T>()?,
                    a[0].len() / inp.max(1),
                    &a[1],
                    bias.then(|| &*a[2]),
                )?;
                let mut dims = a[0].dims.clone();
                *dims.last_mut().expect("ranked") = a[1].dims[0];
                one(wrap(dims, y))
            }
            Op::ScaledResidual => {
                let (dims, mut y) = self.act_out::<T>(a[1].dims.clone())?;
                ops::elementwise::cuda::scaled_residual(
                    gpu,
                    a[0].act::<T>()?,
                    a[1].act::<T>()?,
                    a[2].act::<T>()?,
                    &mut y,
                )?;
                one(wrap(dims, y))
            }
            Op::Add => {
                let (dims, mut y) = self.act_out::<T>(a[0].dims.clone())?;
                ops::elementwise::cuda::add(gpu, a[0].act::<T>()?, a[1].act::<T>()?, &mut y)?;
                one(wrap(dims, y))
            }
            Op::GatedMlp { act, bias } => {
                let x = a[0].act::<T>()?;
                let inp = a[1].dims[1];
                let rows = a[0].len() / inp.max(1);
                let b = |i: usize| bias.then(|| &*a[4 + i]);
                let hidden = a[1].dims[0];
                let mut h = Dev::recycled_by(gpu.uninit::<T>(rows * hidden)?, home);
                if (1..=ops::matmul::cuda::GEMV_MAX_ROWS).contains(&rows) && inp > 0 {
                    let p =
                        ops::matmul::LinearParams { rows, in_features: inp, out_features: hidden };
                    let bias = match bias {
                        true => Some((a[4].act::<T>()?, a[5].act::<T>()?)),
                        false => None,
                    };
                    let (wg, wu) = (a[1].act::<T>()?, a[2].act::<T>()?);
                    ops::matmul::cuda::gated_linear(
                        gpu,
                        &p,
                        ops_act(*act),
                        x,
                        wg,
                        wu,
                        bias,
                        &mut h,
                    )?;
                } else {
                    let gate = Dev::recycled_by(self.linear::<T>(x, rows, &a[1], b(0))?, home);
                    let up = Dev::recycled_by(self.linear::<T>(x, rows, &a[2], b(1))?, home);
                    ops::act::cuda::act_mul(gpu, ops_act(*act), &gate, &up, &mut h)?;
                }
                one(wrap(a[0].dims.clone(), self.linear::<T>(&h, rows, &a[3], b(2))?))
            }
            Op::Mlp { act, bias } => {
                let x = a[0].act::<T>()?;
                let inp = a[1].dims[1];
                let rows = a[0].len() / inp.max(1);
                let b = |i: usize| bias.then(|| &*a[3 + i]);
                let up = Dev::recycled_by(self.linear::<T>(x, rows, &a[1], b(0))?, home);
                let mut ones = Dev::recycled_by(gpu.uninit::<T>(up.len())?, home);
                gpu.fill(&mut ones, 1.0)?;
                let mut h = Dev::recycled_by(gpu.uninit::<T>(up.len())?, home);
                ops::act::cuda::act_mul(gpu, ops_act(*act), &up, &ones, &mut h)?;
                one(wrap(a[0].dims.clone(), self.linear::<T>(&h, rows, &a[2], b(1))?))
            }
            Op::SplitLast { parts } => {
                let mut dims = a[0].dims.clone();
                let n = dims.pop().expect("ranked");
                dims.extend([*parts, n / parts]);
                one(self.reshaped(a.remove(0), dims)?)
            }
            Op::MergeLast => {
                let mut dims = a[0].dims.clone();
                let m = dims.pop().expect("ranked");
                let n = dims.pop().expect("ranked");
                dims.push(n * m);
                one(self.reshaped(a.remove(0), dims)?)
            }
            Op::SliceLast { start, len } => {
                let n = *a[0].dims.last().expect("ranked");
                let rows = a[0].len() / n.max(1);
                let mut dims = a[0].dims.clone();
                *dims.last_mut().expect("ranked") = *len;
                if rows == 1 && *len > 0 {
                    return one(DTensor::view(gpu, &a[0], *start, *len, dims)?);
                }
                let mut y = gpu.uninit::<T>(rows * len)?;
                ops::elementwise::cuda::slice_cols(
                    gpu,
                    a[0].act::<T>()?,
                    rows,
                    n,
                    *start,
                    *len,
                    &mut y,
                )?;
                one(wrap(dims, y))
            }
            Op::Permute { perm } => {
                ensure!(
                    perm.as_slice() == [0, 2, 1, 3],
                    "only the [0, 2, 1, 3] permutation has a CUDA kernel"
                );
                let d = &a[0].dims;
                let dims4 = [d[0], d[1], d[2], d[3]];
                let dims = vec![d[0], d[2], d[1], d[3]];
                if d[1] == 1 || d[2] == 1 {
                    return one(self.reshaped(a.remove(0), dims)?);
                }
                match &a[0].buf {
                    Buf::F32(s) => {
                        let mut y = gpu.uninit::<f32>(s.len())?;
                        ops::elementwise::cuda::swap_axes_12(gpu, s, dims4, &mut y)?;
                        one(f32t(dims, y))
                    }
                    _ => {
                        let mut y = gpu.uninit::<T>(a[0].len())?;
                        ops::elementwise::cuda::swap_axes_12(gpu, a[0].act::<T>()?, dims4, &mut y)?;
                        one(wrap(dims, y))
                    }
                }
            }
            Op::Concat { axis } => {
                let (da, db) = (&a[0].dims, &a[1].dims);
                let outer: usize = da[..*axis].iter().product();
                let (ia, ib): (usize, usize) =
                    (da[*axis..].iter().product(), db[*axis..].iter().product());
                let mut dims = da.clone();
                dims[*axis] += db[*axis];
                if matches!(a[0].buf, Buf::Empty) || matches!(a[1].buf, Buf::Empty) {
                    let keep =
                        if matches!(a[0].buf, Buf::Empty) { a.remove(1) } else { a.remove(0) };
                    let t = self.owned(keep)?;
                    return one(DTensor { dims, ..t });
                }
                match (&a[0].buf, &a[1].buf) {
                    (Buf::F32(x), Buf::F32(y)) => {
                        let mut out = gpu.uninit::<f32>(outer * (ia + ib))?;
                        ops::elementwise::cuda::concat(gpu, x, y, outer, ia, ib, &mut out)?;
                        one(f32t(dims, out))
                    }
                    _ => {
                        let mut out = gpu.uninit::<T>(outer * (ia + ib))?;
                        ops::elementwise::cuda::concat(
                            gpu,
                            a[0].act::<T>()?,
                            a[1].act::<T>()?,
                            outer,
                            ia,
                            ib,
                            &mut out,
                        )?;
                        one(wrap(dims, out))
                    }
                }
            }
            Op::MaskTokens => {
                let (x, mask) = (&a[0], &a[1]);
                let (s, d) = (x.dims[1], x.dims[2]);
                if mask.dims[1] != s {
                    return one(self.owned(a.remove(0))?);
                }
                let (dims, mut y) = self.act_out::<T>(x.dims.clone())?;
                ops::elementwise::cuda::mask_rows(gpu, x.act::<T>()?, mask.i64()?, d, &mut y)?;
                one(wrap(dims, y))
            }
            Op::Positions => {
                let (b, s) = (a[0].dims[0], a[0].dims[1]);
                let p = a[1].dims[1] - s;
                let pos: Vec<i64> = (0..b).flat_map(|_| (p..p + s).map(|x| x as i64)).collect();
                one(DTensor {
                    dims: vec![b, s],
                    buf: Buf::I64(gpu.upload(&pos)?.into()),
                    host_i64: Some(pos),
                })
            }
            Op::RotaryTables(r) => {
                let pos = Tensor::i64(a[0].dims.clone(), a[0].host()?.to_vec())?;
                let len = match a.get(1) {
                    Some(t) => Some(Tensor::i64(t.dims.clone(), t.host()?.to_vec())?),
                    None => None,
                };
                let host = rotary_tables(r, &pos, len.as_ref())?;
                let mut out = Vec::new();
                for (i, t) in host.iter().enumerate() {
                    let store = if i < 2 { Store::Act } else { Store::I64 };
                    out.push(upload_f32(gpu, t, store, T::DTYPE)?);
                }
                Ok(out)
            }
            Op::Rope => {
                let d = &a[0].dims;
                let p = ops::rope::RopeParams { rows: d[0] * d[1], heads: d[2], dim: d[3] };
                let (dims, mut y) = self.act_out::<T>(d.clone())?;
                ops::rope::cuda::apply(
                    gpu,
                    &p,
                    a[0].act::<T>()?,
                    a[1].act::<T>()?,
                    a[2].act::<T>()?,
                    &mut y,
                )?;
                one(wrap(dims, y))
            }
            Op::NormRope(n) => {
                let d = &a[0].dims;
                let p = ops::norm_rope::NormRopeParams {
                    rows: d[0] * d[1],
                    heads: d[2],
                    dim: d[3],
                    eps: n.eps,
                };
                let (dims, mut y) = self.act_out::<T>(d.clone())?;
                ops::norm_rope::cuda::norm_rope(
                    gpu,
                    &p,
                    a[0].act::<T>()?,
                    a[1].act::<T>()?,
                    a[2].act::<T>()?,
                    a[3].act::<T>()?,
                    &mut y,
                )?;
                one(wrap(dims, y))
            }
            Op::SsdScan(s) => {
                let d = &a[0].dims.clone();
                let p = ops::ssd_scan::SsdScanParams {
                    batch: d[0],
                    seq: d[1],
                    heads: s.heads,
                    head_dim: s.head_dim,
                    state_dim: s.state_dim,
                };
                let rope_args = if s.rope { Some((a.remove(6), a.remove(6))) } else { None };
                let state_dims = a[5].dims.clone();
                let mut state = match self.owned(a.remove(5))?.buf {
                    Buf::F32(s) => s.writable(home)?,
                    _ => bail!("expected an f32 SSD state of {state_dims:?}"),
                };
                let (dims, mut y) = self.act_out::<T>(d.clone())?;
                let (x, dt, am) = (a[0].act::<T>()?, a[1].act::<T>()?, a[2].f32()?);
                let (bm, c) = (a[3].act::<T>()?, a[4].act::<T>()?);
                let tables = match &rope_args {
                    Some((cos, sin)) => Some((cos.act::<T>()?, sin.act::<T>()?)),
                    None => None,
                };
                if p.seq == 1 {
                    let rope = tables.map(|(cos, sin)| ops::ssd_scan::cuda::StepRope { cos, sin });
                    ops::ssd_scan::cuda::ssd_step(
                        gpu, &p, x, dt, am, bm, c, rope, &mut state, &mut y,
                    )?;
                } else {
                    let rotated = match tables {
                        Some((cos, sin)) => {
                            let rp = ops::rope::RopeParams {
                                rows: d[0] * d[1],
                                heads: s.heads,
                                dim: s.state_dim,
                            };
                            let rotate = |m: &CudaSlice<T>| -> Result<Dev<T>> {
                                let mut out = Dev::recycled_by(gpu.uninit::<T>(m.len())?, home);
                                ops::rope::cuda::apply(gpu, &rp, m, cos, sin, &mut out)?;
                                Ok(out)
                            };
                            Some((rotate(bm)?, rotate(c)?))
                        }
                        None => None,
                    };
                    let (bm, c) = rotated.as_ref().map_or((bm, c), |(b, c)| (&**b, &**c));
                    ops::ssd_scan::cuda::ssd_chunk_scan(
                        gpu, &p, 64, x, dt, am, bm, c, &mut state, &mut y,
                    )?;
                }
                Ok(vec![
                    wrap(dims, y),
                    DTensor { dims: state_dims, buf: Buf::F32(state), host_i64: None },
                ])
            }
            Op::DynamicMaskValues => {
                let d = &a[0].dims;
                let p = ops::dynamic_mask::KeyValuesParams { batch: d[0], seq: d[1], heads: d[2] };
                let mut m = gpu.uninit::<f32>(a[0].len())?;
                ops::dynamic_mask::cuda::key_values(
                    gpu,
                    &p,
                    a[0].act::<T>()?,
                    a[1].f32()?,
                    &mut m,
                )?;
                one(f32t(vec![d[0], d[2], d[1]], m))
            }
            Op::ProjectedMaskValues { bias } => {
                let (d, hm) = (&a[0].dims, a[1].dims[0]);
                let dims = vec![d[0], hm, d[1]];
                let mut m = gpu.uninit::<f32>(dims.iter().product())?;
                self.projected_mask_values::<T>(&a, *bias, None, &mut m)?;
                one(f32t(dims, m))
            }
            Op::MaskedAttention(at) => one(self.attention::<T>(at, &a, None)?),
            Op::PkTopK(pk) => {
                let d = &a[0].dims;
                let p = pk_params(pk, &a);
                let n = p.rows * pk.heads * pk.k;
                let (mut s, mut ids) = (gpu.uninit::<f32>(n)?, gpu.uninit::<i64>(n)?);
                ops::pk_topk::cuda::pk_topk(
                    gpu,
                    &p,
                    a[0].act::<T>()?,
                    a[1].act::<T>()?,
                    &mut s,
                    &mut ids,
                )?;
                Ok(self.routed(vec![d[0], d[1], pk.heads, pk.k], s, ids))
            }
            Op::RouterTopK(r) => {
                let d = &a[0].dims;
                let p = ops::router_topk::RouterTopKParams {
                    tokens: d[0] * d[1],
                    num_keys: r.num_keys,
                    top_k: r.k,
                };
                let n = p.tokens * r.k;
                let (mut s, mut ids) = (gpu.uninit::<f32>(n)?, gpu.uninit::<i64>(n)?);
                ops::router_topk::cuda::router_topk(gpu, &p, a[0].act::<T>()?, &mut s, &mut ids)?;
                Ok(self.routed(vec![d[0], d[1], 1, r.k], s, ids))
            }
            Op::ExpertMix(e) => {
                let p = mix_params(&a[0], &a[1].dims, &a[3]);
                let (dims, mut y) = self.act_out::<T>(a[0].dims.clone())?;
                ops::expert_mix::cuda::expert_mix(
                    gpu,
                    &p,
                    ops_act(e.act),
                    mix_order(e.order),
                    e.norm_topk,
                    a[0].act::<T>()?,
                    a[1].f32()?,
                    a[2].i64()?,
                    a[3].act::<T>()?,
                    a[4].act::<T>()?,
                    a.get(5).map(|t| t.act::<T>()).transpose()?,
                    &mut y,
                )?;
                one(wrap(dims, y))
            }
            Op::InnerValues(iv) => {
                let (x, vk) = (&a[0].dims, &a[2].dims);
                let p = ops::inner_values::InnerValuesParams {
                    rows: x[0] * x[1],
                    heads: iv.heads,
                    retrieval: vk[1],
                    num_values: vk[2],
                    k: iv.k,
                    dim: x[2],
                };
                let (dims, mut y) = self.act_out::<T>(x.clone())?;
                ops::inner_values::cuda::inner_values(
                    gpu,
                    &p,
                    a[0].act::<T>()?,
                    a[1].act::<T>()?,
                    a[2].act::<T>()?,
                    a[3].act::<T>()?,
                    &mut y,
                )?;
                one(wrap(dims, y))
            }
        }
    }
}

fn ops_act(a: Act) -> ops::act::Act {
    match a {
        Act::Silu => ops::act::Act::Silu,
        Act::Relu => ops::act::Act::Relu,
        Act::Gelu => ops::act::Act::Gelu,
        Act::GeluTanh => ops::act::Act::GeluTanh,
    }
}

fn mix_order(o: ExpertAct) -> ops::expert_mix::ExpertAct {
    match o {
        ExpertAct::BeforeSoftmax => ops::expert_mix::ExpertAct::BeforeSoftmax,
        ExpertAct::AfterSoftmax => ops::expert_mix::ExpertAct::AfterSoftmax,
    }
}

/// The sizes of product-key top-k `pk` over operands `a` (`q` `[B, S, 2·He·R/2]`, `keys` `[He, nk, 2, R/2]`).
fn pk_params(pk: &PkTopK, a: &[Arc<DTensor>]) -> ops::pk_topk::PkTopKParams {
    ops::pk_topk::PkTopKParams {
        rows: a[0].dims[0] * a[0].dims[1],
        heads: pk.heads,
        num_keys: pk.num_keys,
        half: a[1].dims[3],
        k: pk.k,
    }
}

/// The sizes of an expert mix over `x` `[B, S, D]` with scores `[B, S, He, k]` (`scores`) and down rows `[E, D]`.
fn mix_params(x: &DTensor, scores: &[usize], down: &DTensor) -> ops::expert_mix::ExpertMixParams {
    ops::expert_mix::ExpertMixParams {
        rows: x.dims[0] * x.dims[1],
        heads: scores[2],
        k: scores[3],
        dim: x.dims[2],
        num_experts: down.dims[0],
    }
}
