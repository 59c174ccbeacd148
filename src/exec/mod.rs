//! Executors: they run the graph IR node by node. [`cpu`] is the oracle every other path is checked against;
//! [`session`] keeps the recurrent state (KV cache, per-key mask values, SSD state, RoPE state) between calls.

pub mod cpu;
pub mod cuda;
pub mod session;

use crate::ir::{Bindings, Graph, Tensor};

/// Something that runs a graph on host tensors: the CPU executor, or a device executor at its boundary.
pub trait Executor {
    fn graph(&self) -> &Graph;
    /// Runs the graph; returns every graph output by name plus the output 0 of each node named in `taps`.
    fn run(
        &self,
        inputs: BTreeMap<String, Tensor>,
        taps: &[&str],
    ) -> Result<BTreeMap<String, Tensor>>;
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
}
use anyhow::{bail, Result};
use std::collections::BTreeMap;

/// Binds the graph's symbols from the concrete shapes of its inputs and checks every input against its fact.
pub fn bind_inputs(g: &Graph, inputs: &BTreeMap<String, Tensor>) -> Result<Bindings> {
    let mut pairs = Vec::new();
    for &id in g.inputs() {
        let node = g.node(id);
        let fact = &node.outputs[0];
        let Some(t) = inputs.get(&node.name) else {
            bail!("missing graph input `{}` ({fact})", node.name)
        };
        if t.dtype() != fact.dtype || t.dims().len() != fact.rank() {
            bail!("input `{}` is {t:?}, the graph expects {fact}", node.name);
        }
        for (d, &n) in fact.shape.iter().zip(t.dims()) {
            pairs.push((node.name.as_str(), fact, d, n as i64));
        }
    }
    for name in inputs.keys() {
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
