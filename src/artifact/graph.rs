//! The graph file of an artifact (`graph.json`): nodes in the graph's deterministic topological order, one JSON
//! object per line, operands as `[node index, port]`. Weights appear as `{"weight": dims}` and are read from the
//! weights file by node name; every other op is stored with its attributes. Reading wires the nodes again
//! (re-inferring every fact), so a file that does not describe a valid graph fails with the node named.

use crate::ir::op::{Const, Op};
use crate::ir::{Graph, NodeId, ValueId};
use crate::model::checkpoint::Weights;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One node: its name, then either its op or the dims of its weight, then its operands.
#[derive(Serialize, Deserialize)]
struct NodeRecord {
    name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    op: Option<Op>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    weight: Option<Vec<usize>>,
    inputs: Vec<(usize, u16)>,
}

/// The graph's inputs (node indices, in the graph's input order) and outputs (name, node index, port).
#[derive(Serialize, Deserialize)]
struct Boundary {
    inputs: Vec<usize>,
    outputs: Vec<(String, usize, u16)>,
}

/// Writes `g` as text; the same graph always gives the same bytes.
pub fn write_graph(g: &Graph) -> Result<String> {
    let order = g.topo_order()?;
    let index: BTreeMap<NodeId, usize> = order.iter().enumerate().map(|(i, id)| (*id, i)).collect();
    let mut out = String::from("{\"nodes\": [\n");
    for (i, &id) in order.iter().enumerate() {
        let node = g.node(id);
        let (op, weight) = match &node.op {
            Op::Const(c) => (None, Some(c.0.dims().to_vec())),
            op => (Some(op.clone()), None),
        };
        let inputs = g.inputs_of(id).iter().map(|v| (index[&v.node], v.port)).collect();
        let rec = NodeRecord { name: node.name.clone(), op, weight, inputs };
        out.push_str(
            &serde_json::to_string(&rec).with_context(|| format!("node `{}`", node.name))?,
        );
        out.push_str(if i + 1 < order.len() { ",\n" } else { "\n" });
    }
    let boundary = Boundary {
        inputs: g.inputs().iter().map(|id| index[id]).collect(),
        outputs: g.outputs().iter().map(|(n, v)| (n.clone(), index[&v.node], v.port)).collect(),
    };
    let b = serde_json::to_string(&boundary)?;
    out.push_str("],\n");
    out.push_str(&b[1..]);
    out.push('\n');
    Ok(out)
}

#[derive(Deserialize)]
struct GraphFile {
    nodes: Vec<NodeRecord>,
    inputs: Vec<usize>,
    outputs: Vec<(String, usize, u16)>,
}

/// Reads a graph written by [`write_graph`], taking each weight from `weights` (by node name, f32); `file` names
/// the graph file in errors.
pub fn read_graph(text: &str, weights: &Weights, file: &std::path::Path) -> Result<Graph> {
    let gf: GraphFile = serde_json::from_str(text)
        .with_context(|| format!("{}: not a cheems graph file", file.display()))?;
    let mut g = Graph::new();
    let mut ids: Vec<NodeId> = Vec::with_capacity(gf.nodes.len());
    for (i, rec) in gf.nodes.into_iter().enumerate() {
        let mut inputs = Vec::with_capacity(rec.inputs.len());
        for &(n, port) in &rec.inputs {
            let Some(&node) = ids.get(n) else {
                bail!(
                    "{}: node {i} `{}` reads node {n}, which does not come before it",
                    file.display(),
                    rec.name
                )
            };
            inputs.push(ValueId { node, port });
        }
        let op = match (rec.op, rec.weight) {
            (Some(op), None) => op,
            (None, Some(dims)) => {
                let t = weights
                    .take(&rec.name, &dims)
                    .with_context(|| format!("weight of node `{}`", rec.name))?;
                Op::Const(Const(t))
            }
            _ => bail!(
                "{}: node {i} `{}` must have exactly one of `op` and `weight`",
                file.display(),
                rec.name
            ),
        };
        let v = g.wire(rec.name, op, &inputs).with_context(|| format!("{}", file.display()))?;
        ids.push(v.node);
    }
    let node = |n: usize, what: &str| -> Result<NodeId> {
        ids.get(n).copied().with_context(|| {
            format!("{}: {what} refers to node {n}, but there are {}", file.display(), ids.len())
        })
    };
    let inputs = gf.inputs.iter().map(|&n| node(n, "an input")).collect::<Result<Vec<_>>>()?;
    g.set_inputs(inputs).with_context(|| format!("{}", file.display()))?;
    for (name, n, port) in gf.outputs {
        let v = ValueId { node: node(n, "an output")?, port };
        g.output(&name, v).with_context(|| format!("{}: output `{name}`", file.display()))?;
    }
    let unused = weights.unused();
    if !unused.is_empty() {
        bail!(
            "{}: {} tensor(s) no node of the graph uses: {}",
            weights.source().display(),
            unused.len(),
            unused.join(", ")
        );
    }
    Ok(g)
}
