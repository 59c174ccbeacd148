//! Stable text and Graphviz forms of a graph (golden tests, `--dump-after`, `cheems dump`).

use super::graph::{Graph, NodeId, ValueId};
use super::op::Op;
use anyhow::Result;
use std::fmt::Write;

fn value(v: ValueId) -> String {
    if v.port == 0 {
        format!("%{}", v.node.index())
    } else {
        format!("%{}:{}", v.node.index(), v.port)
    }
}

fn op_text(op: &Op) -> String {
    match op {
        Op::Input(_) => "Input".to_string(),
        Op::Const(_) => "Const".to_string(),
        other => format!("{other:?}"),
    }
}

fn facts(g: &Graph, id: NodeId) -> String {
    g.node(id).outputs.iter().map(|f| f.to_string()).collect::<Vec<_>>().join(", ")
}

impl Graph {
    /// One line per node in topological order, then the outputs. Deterministic for a given graph.
    pub fn dump(&self) -> Result<String> {
        let mut s = String::new();
        for id in self.topo_order()? {
            let node = self.node(id);
            let args: Vec<String> = self.inputs_of(id).into_iter().map(value).collect();
            let args =
                if args.is_empty() { String::new() } else { format!("({})", args.join(", ")) };
            writeln!(
                s,
                "%{} {} = {}{} -> {}",
                id.index(),
                node.name,
                op_text(&node.op),
                args,
                facts(self, id)
            )?;
        }
        for (name, v) in self.outputs() {
            writeln!(s, "output {name} = {}", value(*v))?;
        }
        Ok(s)
    }

    /// Graphviz DOT: inputs and constants as ellipses, ops as boxes, edges labelled with the value's fact.
    pub fn dot(&self) -> Result<String> {
        let mut s = String::from(
            "digraph cheems {\n  rankdir=TB;\n  node [fontname=\"monospace\", fontsize=10];\n",
        );
        for id in self.topo_order()? {
            let node = self.node(id);
            let (shape, label) = match &node.op {
                Op::Input(_) | Op::Const(_) => {
                    ("ellipse", format!("{}\\n{}", node.name, facts(self, id)))
                }
                op => ("box", format!("{}\\n{:?}", node.name, op.kind())),
            };
            writeln!(
                s,
                "  n{} [shape={shape}, label=\"{}\"];",
                id.index(),
                label.replace('"', "\\\"")
            )?;
            for v in self.inputs_of(id) {
                let f = self.fact(v)?;
                writeln!(s, "  n{} -> n{} [label=\"{f}\"];", v.node.index(), id.index())?;
            }
        }
        for (i, (name, v)) in self.outputs().iter().enumerate() {
            writeln!(s, "  out{i} [shape=doubleoctagon, label=\"{name}\"];")?;
            writeln!(s, "  n{} -> out{i};", v.node.index())?;
        }
        s.push_str("}\n");
        Ok(s)
    }
}
