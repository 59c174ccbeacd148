//! Executors: they run the graph IR node by node. [`cpu`] is the oracle every other path is checked against;
//! [`session`] keeps the recurrent state (KV cache, per-key mask values, SSD state, RoPE state) between calls.

pub mod cpu;
pub mod cuda;
pub mod cuda_graph;
pub mod session;

use crate::ir::{Bindings, Graph, Tensor};

/// A recurrent-state value carried between the calls of a session, where the executor keeps it: a host tensor,
/// or a buffer on the executor's device (never copied to the host between steps).
pub enum Held {
    Host(Tensor),
    Device(cuda::DTensor),
}

/// The `k` largest logits of each row, best first, in the order of `cheems_ops::logits_topk` (NaN below every
/// number, equal values by the lower id): what a sampler draws from.
#[derive(Clone, Debug, PartialEq)]
pub struct TopK {
    /// Logits kept a row.
    pub k: usize,
    /// `[rows, k]`.
    pub values: Vec<f32>,
    /// `[rows, k]` token ids.
    pub ids: Vec<i64>,
}

impl TopK {
    /// Of host logits, rows of `vocab`; `k` is cut to `vocab`.
    pub fn of(logits: &[f32], vocab: usize, k: usize) -> Result<TopK> {
        use cheems_ops::logits_topk::{logits_top_k, LogitsTopKParams};
        let k = k.min(vocab);
        let p = LogitsTopKParams { rows: logits.len() / vocab.max(1), vocab, k };
        let (values, ids) = logits_top_k(&p, logits)?;
        Ok(TopK { k, values, ids })
    }

    /// Of host logits `[.., V]`, every row.
    pub fn of_logits(logits: &Tensor, k: usize) -> Result<TopK> {
        TopK::of(logits.as_f32()?, logits.dims().last().copied().unwrap_or(0), k)
    }
}

/// Decode steps of a session replayed from one recording of the step ([`cuda_graph`]); it holds the session's
/// state, in buffers with room for [`Replay::capacity`] tokens, until given back.
pub trait Replay {
    /// Feeds one token per sequence; returns the logits `[B, 1, V]`.
    fn step(&mut self, ids: &[i64]) -> Result<Tensor>;
    /// Feeds one token per sequence; returns each sequence's `k` best logits.
    fn step_top_k(&mut self, ids: &[i64], k: usize) -> Result<TopK> {
        TopK::of_logits(&self.step(ids)?, k)
    }
    /// Tokens in the caches.
    fn past(&self) -> usize;
    /// Tokens the caches have room for.
    fn capacity(&self) -> usize;
    /// The state as a session holds it between ordinary steps.
    fn into_states(self: Box<Self>) -> Result<BTreeMap<String, Held>>;
    /// Before the first step: how the step is recorded (where the replayer records at all).
    fn set_options(&mut self, _options: cuda_graph::RecordOptions) {}
    /// The kernels of the recorded step, once recorded (where the replayer records at all).
    fn recorded_kernels(&self) -> Option<usize> {
        None
    }
}

impl Replay for cuda_graph::DecodeGraph<'_> {
    fn step(&mut self, ids: &[i64]) -> Result<Tensor> {
        cuda_graph::DecodeGraph::step(self, ids)?;
        self.logits()
    }
    fn step_top_k(&mut self, ids: &[i64], k: usize) -> Result<TopK> {
        cuda_graph::DecodeGraph::step(self, ids)?;
        self.logits_top_k(k)
    }
    fn past(&self) -> usize {
        cuda_graph::DecodeGraph::past(self)
    }
    fn capacity(&self) -> usize {
        cuda_graph::DecodeGraph::capacity(self)
    }
    fn recorded_kernels(&self) -> Option<usize> {
        self.node_counts().ok().and_then(|c| c.get("kernel").copied())
    }
    fn into_states(self: Box<Self>) -> Result<BTreeMap<String, Held>> {
        cuda_graph::DecodeGraph::into_states(*self)
    }
    fn set_options(&mut self, options: cuda_graph::RecordOptions) {
        cuda_graph::DecodeGraph::set_options(self, options)
    }
}

/// Something that runs a graph on host tensors: the CPU executor, or a device executor at its boundary.
pub trait Executor {
    fn graph(&self) -> &Graph;
    /// Runs the graph; returns every graph output by name plus the output 0 of each node named in `taps`.
    fn run(
        &self,
        inputs: BTreeMap<String, Tensor>,
        taps: &[&str],
    ) -> Result<BTreeMap<String, Tensor>>;

    /// One session step: `states` holds the `past.*` inputs (keyed by input name) and receives the matching
    /// `present.*` outputs (`carry` maps each present output to its past input); the other inputs and the
    /// returned outputs are host tensors.
    fn run_step(
        &self,
        mut inputs: BTreeMap<String, Tensor>,
        states: &mut BTreeMap<String, Held>,
        carry: &[(String, String)],
        taps: &[&str],
    ) -> Result<BTreeMap<String, Tensor>> {
        for (name, held) in std::mem::take(states) {
            match held {
                Held::Host(t) => inputs.insert(name, t),
                Held::Device(_) => bail!("`{name}` is held on a device this executor cannot read"),
            };
        }
        let mut out = self.run(inputs, taps)?;
        for (present, past) in carry {
            let t = out
                .remove(present)
                .with_context(|| format!("the graph did not produce `{present}`"))?;
            states.insert(past.clone(), Held::Host(t));
        }
        Ok(out)
    }

    /// Decode steps replayed from a recording for a session after `past` tokens (`states`, `mask` its attention
    /// mask), with room for `capacity` tokens: `None` when this executor does not record steps, an error saying
    /// why when this graph cannot be recorded.
    fn replay<'s>(
        &'s self,
        _model: &Model,
        _states: &BTreeMap<String, Held>,
        _mask: &[Vec<i64>],
        _past: usize,
        _capacity: usize,
    ) -> Option<Result<Box<dyn Replay + 's>>> {
        None
    }
}

impl Executor for cpu::CpuExecutor {
    fn graph(&self) -> &Graph {
        cpu::CpuExecutor::graph(self)
    }
    fn run(
        &self,
        inputs: BTreeMap<String, Tensor>,
        taps: &[&str],
    ) -> Result<BTreeMap<String, Tensor>> {
        cpu::CpuExecutor::run(self, inputs, taps)
    }
}

impl Executor for cuda::CudaExecutor {
    fn graph(&self) -> &Graph {
        cuda::CudaExecutor::graph(self)
    }
    fn run(
        &self,
        inputs: BTreeMap<String, Tensor>,
        taps: &[&str],
    ) -> Result<BTreeMap<String, Tensor>> {
        cuda::CudaExecutor::run(self, inputs, taps)
    }

    fn run_step(
        &self,
        inputs: BTreeMap<String, Tensor>,
        states: &mut BTreeMap<String, Held>,
        carry: &[(String, String)],
        taps: &[&str],
    ) -> Result<BTreeMap<String, Tensor>> {
        cuda::CudaExecutor::run_step(self, inputs, states, carry, taps)
    }

    fn replay<'s>(
        &'s self,
        model: &Model,
        states: &BTreeMap<String, Held>,
        mask: &[Vec<i64>],
        past: usize,
        capacity: usize,
    ) -> Option<Result<Box<dyn Replay + 's>>> {
        let g = cuda_graph::DecodeGraph::new(self, model, states, mask, past, capacity);
        Some(g.map(|g| Box::new(g) as Box<dyn Replay + 's>))
    }
}
use crate::ir::{NodeId, ValueId};
use crate::model::build::Model;
use anyhow::{bail, Context, Result};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// Binds the graph's symbols from the concrete shapes of its inputs and checks every input against its fact.
pub fn bind_inputs(g: &Graph, inputs: &BTreeMap<String, Tensor>) -> Result<Bindings> {
    bind_inputs_with_shapes(g, inputs, &BTreeMap::new())
}

/// [`bind_inputs`] where some inputs are given by their shape alone (values held on a device, in the storage
/// dtype the executor chose for them).
pub fn bind_inputs_with_shapes(
    g: &Graph,
    inputs: &BTreeMap<String, Tensor>,
    shapes: &BTreeMap<String, Vec<usize>>,
) -> Result<Bindings> {
    let mut pairs = Vec::new();
    for &id in g.inputs() {
        let node = g.node(id);
        let fact = &node.outputs[0];
        let dims = match (inputs.get(&node.name), shapes.get(&node.name)) {
            (Some(t), _) => {
                if t.dtype() != fact.dtype || t.dims().len() != fact.rank() {
                    bail!("input `{}` is {t:?}, the graph expects {fact}", node.name);
                }
                t.dims()
            }
            (None, Some(d)) => {
                if d.len() != fact.rank() {
                    bail!("input `{}` has shape {d:?}, the graph expects {fact}", node.name);
                }
                d.as_slice()
            }
            (None, None) => bail!("missing graph input `{}` ({fact})", node.name),
        };
        for (d, &n) in fact.shape.iter().zip(dims) {
            pairs.push((node.name.as_str(), fact, d, n as i64));
        }
    }
    for name in inputs.keys().chain(shapes.keys()) {
        if g.find(name).is_none_or(|id| !g.inputs().contains(&id)) {
            bail!("`{name}` is not an input of the graph");
        }
    }
    let mut b = Bindings::new();
    loop {
        let mut progress = false;
        for (_, _, d, n) in &pairs {
            if let Some((s, v)) = d.solve(*n, &b) {
                b.insert(s, v);
                progress = true;
            }
        }
        if !progress {
            break;
        }
    }
    for (name, fact, d, n) in &pairs {
        match d.eval(&b) {
            Ok(v) if v as i64 == *n => {}
            Ok(v) => bail!(
                "input `{name}`: axis `{d}` of {fact} is {n}, but the other inputs make it {v}"
            ),
            Err(e) => bail!("input `{name}` of {fact}: {e}"),
        }
    }
    Ok(b)
}

/// The values of one run of a graph, each kept until its last read: by the nodes that take it as an operand, and
/// as a returned value (graph outputs, then the output 0 of each tapped node). Both executors run through it.
pub(crate) struct Values<V> {
    wanted: Vec<(String, ValueId)>,
    remaining: HashMap<ValueId, usize>,
    live: HashMap<ValueId, Arc<V>>,
}

impl<V> Values<V> {
    /// Counts the reads of every value of `g` over `order`, with the outputs of the nodes named in `taps`.
    pub(crate) fn new(g: &Graph, order: &[NodeId], taps: &[&str]) -> Result<Values<V>> {
        let mut wanted: Vec<(String, ValueId)> = g.outputs().to_vec();
        for t in taps {
            let Some(id) = g.find(t) else { bail!("no node named `{t}` to tap") };
            wanted.push((t.to_string(), id.into()));
        }
        let mut remaining = HashMap::new();
        for &id in order {
            for v in g.inputs_of(id) {
                *remaining.entry(v).or_insert(0) += 1;
            }
        }
        for (_, v) in &wanted {
            *remaining.entry(*v).or_insert(0) += 1;
        }
        Ok(Values { wanted, remaining, live: HashMap::new() })
    }

    /// Whether a value of node `id` is returned by the run.
    pub(crate) fn returns(&self, id: NodeId) -> bool {
        self.wanted.iter().any(|(_, v)| v.node == id)
    }

    /// The operands of node `id`; a value is released here by its last reader, so that a kernel may take it.
    pub(crate) fn operands(&mut self, g: &Graph, id: NodeId) -> Result<Vec<Arc<V>>> {
        let mut args = Vec::new();
        for v in g.inputs_of(id) {
            let left = self.remaining.get_mut(&v).expect("every operand is counted");
            *left -= 1;
            let t = if *left == 0 { self.live.remove(&v) } else { self.live.get(&v).cloned() };
            args.push(t.with_context(|| {
                format!("value {v:?} read by `{}` is missing", g.node(id).name)
            })?);
        }
        Ok(args)
    }

    /// Value `v` if it is computed and still held, without counting a read.
    pub(crate) fn peek(&self, v: ValueId) -> Option<Arc<V>> {
        self.live.get(&v).cloned()
    }

    /// Keeps the outputs of node `id` that are read later.
    pub(crate) fn keep(&mut self, id: NodeId, outs: Vec<Arc<V>>) {
        for (port, t) in outs.into_iter().enumerate() {
            let v = ValueId { node: id, port: port as u16 };
            if self.remaining.get(&v).copied().unwrap_or(0) > 0 {
                self.live.insert(v, t);
            }
        }
    }

    /// The returned values by name; `own` turns a value into an owned one (it is still shared when returned under
    /// another name too).
    pub(crate) fn finish(
        mut self,
        mut own: impl FnMut(Arc<V>) -> Result<V>,
    ) -> Result<BTreeMap<String, V>> {
        let mut out = BTreeMap::new();
        let wanted = std::mem::take(&mut self.wanted);
        for (i, (name, v)) in wanted.iter().enumerate() {
            let again = wanted[i + 1..].iter().any(|(_, w)| w == v);
            let t = if again { self.live.get(v).cloned() } else { self.live.remove(v) };
            let t = t.with_context(|| format!("output `{name}` was not computed"))?;
            out.insert(name.clone(), own(t)?);
        }
        Ok(out)
    }
}
