//! Executors: they run the graph IR node by node. [`cpu`] is the oracle every other path is checked against;
//! [`session`] keeps the recurrent state (KV cache, per-key mask values, SSD state, RoPE state) between calls.

pub mod cpu;
pub mod cuda;
pub mod session;

use crate::ir::{Bindings, Graph, Tensor};

/// A recurrent-state value carried between the calls of a session, where the executor keeps it: a host tensor,
/// or a buffer on the executor's device (never copied to the host between steps).
pub enum Held {
    Host(Tensor),
    Device(cuda::DTensor),
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
}
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;

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

/// Returned values by name, and the number of reads of every value.
pub(crate) type ReadPlan =
    (Vec<(String, crate::ir::ValueId)>, std::collections::HashMap<crate::ir::ValueId, usize>);

/// The values a run returns (graph outputs, then the output 0 of each tapped node) and, for every value, how many
/// times it is read (by nodes and as a returned value): the executors free a value when its count reaches zero.
pub(crate) fn plan_reads(
    g: &Graph,
    order: &[crate::ir::NodeId],
    taps: &[&str],
) -> Result<ReadPlan> {
    let mut wanted: Vec<(String, crate::ir::ValueId)> = g.outputs().to_vec();
    for t in taps {
        let Some(id) = g.find(t) else { bail!("no node named `{t}` to tap") };
        wanted.push((t.to_string(), id.into()));
    }
    let mut reads = std::collections::HashMap::new();
    for &id in order {
        for v in g.inputs_of(id) {
            *reads.entry(v).or_insert(0) += 1;
        }
    }
    for (_, v) in &wanted {
        *reads.entry(*v).or_insert(0) += 1;
    }
    Ok((wanted, reads))
}
