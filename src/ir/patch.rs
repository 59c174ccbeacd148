//! Patches: the only way passes change a graph. A patch wires new nodes (inferred as they are added) and
//! replaces existing values with new ones; `Graph::apply` checks that each replacement has the fact of the value
//! it replaces, reroutes the readers and removes what became dead.

use super::graph::{Graph, ValueId};
use super::op::Op;
use anyhow::{bail, Context, Result};

/// A value in a patch: one already in the graph, or output `port` of the patch's `n`-th new node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatchValue {
    Graph(ValueId),
    New { node: usize, port: u16 },
}

impl From<ValueId> for PatchValue {
    fn from(v: ValueId) -> PatchValue {
        PatchValue::Graph(v)
    }
}

impl PatchValue {
    /// Output `port` of the same node.
    pub fn port(self, port: u16) -> PatchValue {
        match self {
            PatchValue::Graph(v) => PatchValue::Graph(ValueId { node: v.node, port }),
            PatchValue::New { node, .. } => PatchValue::New { node, port },
        }
    }
}

/// New nodes plus replacements.
#[derive(Clone, Debug, Default)]
pub struct Patch {
    nodes: Vec<(String, Op, Vec<PatchValue>)>,
    replacements: Vec<(ValueId, PatchValue)>,
}

impl Patch {
    /// Adds a node to be wired when the patch is applied; returns its output 0.
    pub fn wire(&mut self, name: impl Into<String>, op: Op, inputs: &[PatchValue]) -> PatchValue {
        self.nodes.push((name.into(), op, inputs.to_vec()));
        PatchValue::New { node: self.nodes.len() - 1, port: 0 }
    }

    /// The graph values this patch replaces.
    pub fn replaced(&self) -> Vec<ValueId> {
        self.replacements.iter().map(|(old, _)| *old).collect()
    }

    /// Replaces every use of `old` by `new`.
    pub fn replace(&mut self, old: ValueId, new: PatchValue) {
        self.replacements.push((old, new));
    }
}

impl Graph {
    /// Applies `patch` atomically: on error the graph is left unchanged.
    pub fn apply(&mut self, patch: Patch) -> Result<()> {
        let mut g = self.clone();
        let mut wired: Vec<ValueId> = Vec::with_capacity(patch.nodes.len());
        let resolve = |wired: &[ValueId], v: PatchValue| -> Result<ValueId> {
            match v {
                PatchValue::Graph(v) => Ok(v),
                PatchValue::New { node, port } => match wired.get(node) {
                    Some(w) => Ok(ValueId { node: w.node, port }),
                    None => bail!("patch node {node} is used before it is wired"),
                },
            }
        };
        for (name, op, inputs) in patch.nodes {
            let ins: Vec<ValueId> =
                inputs.iter().map(|v| resolve(&wired, *v)).collect::<Result<_>>()?;
            wired.push(g.wire(name, op, &ins)?);
        }
        for (old, new) in patch.replacements {
            let new = resolve(&wired, new)?;
            let (fo, fn_) = (g.fact(old)?.clone(), g.fact(new)?.clone());
            if fo != fn_ {
                let name = &g.node(old.node).name;
                bail!(
                    "replacement of `{name}`:{} has fact {fn_}, the replaced value has {fo}",
                    old.port
                );
            }
            g.reroute(old, new);
        }
        g.remove_dead();
        g.topo_order().context("the patch created a cycle")?;
        *self = g;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::op::Norm;
    use crate::ir::{DType, Dim, Fact, NodeId};

    fn small() -> (Graph, ValueId, ValueId, ValueId) {
        let mut g = Graph::new();
        let x = g.input("x", Fact::new(DType::F32, [Dim::sym("B"), Dim::konst(4)])).unwrap();
        let w = g.input("w", Fact::konst(DType::F32, &[4])).unwrap();
        let n = g.wire("norm", Op::RmsNorm(Norm { eps: 1e-6 }), &[x, w]).unwrap();
        let y = g.wire("sum", Op::Add, &[n, x]).unwrap();
        g.output("y", y).unwrap();
        (g, x, w, n)
    }

    #[test]
    fn readers_are_each_reading_node_once() {
        let (mut g, x, w, n) = small();
        let twice = g.wire("twice", Op::Add, &[x, x]).unwrap();
        let names = |ids: Vec<NodeId>| -> Vec<String> {
            ids.into_iter().map(|i| g.node(i).name.clone()).collect()
        };
        assert_eq!(names(g.readers(x.node)), ["norm", "sum", "twice"]);
        assert_eq!(names(g.readers(w.node)), ["norm"]);
        assert_eq!(names(g.readers(n.node)), ["sum"]);
        assert!(g.readers(twice.node).is_empty());
    }

    #[test]
    fn wire_errors_name_the_node_and_operand() {
        let (mut g, x, _, _) = small();
        let w8 = g.input("w8", Fact::konst(DType::F32, &[8])).unwrap();
        let e = g.wire("bad", Op::RmsNorm(Norm { eps: 1e-5 }), &[x, w8]).unwrap_err();
        let msg = format!("{e:#}");
        assert!(msg.contains("inferring node `bad`"), "{msg}");
        assert!(msg.contains("w f32[8] must be f32[4]"), "{msg}");
        assert!(g
            .wire("norm", Op::Add, &[x, x])
            .unwrap_err()
            .to_string()
            .contains("`norm` already exists"));
    }

    #[test]
    fn replacement_reroutes_readers_and_removes_the_dead() {
        let (mut g, x, _, n) = small();
        let mut p = Patch::default();
        let doubled = p.wire("doubled", Op::Add, &[x.into(), x.into()]);
        p.replace(n, doubled);
        g.apply(p).unwrap();
        g.verify().unwrap();
        assert!(g.find("norm").is_none(), "the replaced node is dead and removed");
        let sum = g.find("sum").unwrap();
        let d = g.find("doubled").unwrap();
        assert_eq!(g.inputs_of(sum).as_slice(), &[d.into(), x]);
        assert!(g.find("w").is_some(), "graph inputs are never removed");
    }

    #[test]
    fn a_replacement_with_another_fact_is_rejected_and_the_graph_unchanged() {
        let (mut g, _, w, n) = small();
        let before = g.dump().unwrap();
        let mut p = Patch::default();
        p.replace(n, w.into());
        let e = g.apply(p).unwrap_err().to_string();
        assert!(e.contains("replacement of `norm`"), "{e}");
        assert_eq!(g.dump().unwrap(), before);
    }

    #[test]
    fn dump_is_deterministic_and_lists_outputs() {
        let (g, ..) = small();
        let text = g.dump().unwrap();
        assert_eq!(
            text,
            "%0 x = Input -> f32[B,4]\n%1 w = Input -> f32[4]\n\
             %2 norm = RmsNorm(Norm { eps: 1e-6 })(%0, %1) -> f32[B,4]\n%3 sum = Add(%2, %0) -> f32[B,4]\n\
             output y = %3\n"
        );
        assert_eq!(g.clone().dump().unwrap(), text);
        assert!(g.dot().unwrap().starts_with("digraph cheems {"));
    }
}
