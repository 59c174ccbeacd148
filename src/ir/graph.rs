//! The graph IR: nodes with ops and inferred facts over a petgraph `StableDiGraph`. Passes use this wrapper
//! only; operand order lives on the edges (`Port`), since petgraph's incoming-edge order is not operand order.

use super::fact::Fact;
use super::op::{Op, OpKind};
use anyhow::{bail, Context, Result};
use petgraph::stable_graph::{NodeIndex, StableDiGraph};
use petgraph::visit::EdgeRef;
use petgraph::Direction;
use smallvec::SmallVec;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::fmt;

/// A node handle; stable across removals.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub(crate) NodeIndex<u32>);

impl NodeId {
    pub fn index(self) -> usize {
        self.0.index()
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "%{}", self.0.index())
    }
}

/// Output `port` of `node`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ValueId {
    pub node: NodeId,
    pub port: u16,
}

impl From<NodeId> for ValueId {
    fn from(node: NodeId) -> ValueId {
        ValueId { node, port: 0 }
    }
}

/// Edge weight: output `src` of the source feeds operand `dst` of the target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Port {
    pub src: u16,
    pub dst: u16,
}

/// A node: a unique hierarchical name, an op and the facts of its outputs.
#[derive(Clone, Debug)]
pub struct Node {
    pub name: String,
    pub op: Op,
    pub outputs: SmallVec<[Fact; 1]>,
}

/// A dataflow graph with named inputs and outputs.
#[derive(Clone, Default)]
pub struct Graph {
    g: StableDiGraph<Node, Port>,
    names: BTreeMap<String, NodeId>,
    inputs: Vec<NodeId>,
    outputs: Vec<(String, ValueId)>,
}

impl Graph {
    pub fn new() -> Graph {
        Graph::default()
    }

    /// Adds a graph input named `name`.
    pub fn input(&mut self, name: &str, fact: Fact) -> Result<ValueId> {
        let v = self.wire(name, Op::Input(fact), &[])?;
        self.inputs.push(v.node);
        Ok(v)
    }

    /// Adds a node, inferring its output facts now; errors name the node and its op.
    pub fn wire(&mut self, name: impl Into<String>, op: Op, inputs: &[ValueId]) -> Result<ValueId> {
        let name = name.into();
        if self.names.contains_key(&name) {
            bail!("a node named `{name}` already exists");
        }
        let facts: Vec<&Fact> = inputs
            .iter()
            .map(|v| self.fact(*v))
            .collect::<Result<_>>()
            .with_context(|| format!("wiring `{name}`"))?;
        let outputs =
            op.infer(&facts).with_context(|| format!("inferring node `{name}` ({op})"))?;
        let id = NodeId(self.g.add_node(Node { name: name.clone(), op, outputs }));
        for (dst, v) in inputs.iter().enumerate() {
            self.g.add_edge(v.node.0, id.0, Port { src: v.port, dst: dst as u16 });
        }
        self.names.insert(name, id);
        Ok(ValueId { node: id, port: 0 })
    }

    /// Declares the graph inputs in order (a graph read back from a file): exactly the `Input` nodes, each once.
    pub fn set_inputs(&mut self, ids: Vec<NodeId>) -> Result<()> {
        for id in &ids {
            let node = self.g.node_weight(id.0).with_context(|| format!("no node {id:?}"))?;
            if !matches!(node.op, Op::Input(_)) {
                bail!("node `{}` is declared an input but is {}", node.name, node.op);
            }
        }
        let n_inputs = self.g.node_weights().filter(|n| matches!(n.op, Op::Input(_))).count();
        let mut distinct = ids.clone();
        distinct.sort();
        distinct.dedup();
        if distinct.len() != ids.len() || ids.len() != n_inputs {
            bail!("{} input(s) declared for {n_inputs} `Input` node(s)", ids.len());
        }
        self.inputs = ids;
        Ok(())
    }

    /// Marks `v` as a graph output called `name`.
    pub fn output(&mut self, name: &str, v: ValueId) -> Result<()> {
        self.fact(v)?;
        if self.outputs.iter().any(|(n, _)| n == name) {
            bail!("output `{name}` is declared twice");
        }
        self.outputs.push((name.to_string(), v));
        Ok(())
    }

    pub fn node(&self, id: NodeId) -> &Node {
        &self.g[id.0]
    }

    /// The node called `name`.
    pub fn find(&self, name: &str) -> Option<NodeId> {
        self.names.get(name).copied()
    }

    /// The fact of a value; an error if the node or port does not exist.
    pub fn fact(&self, v: ValueId) -> Result<&Fact> {
        let node = self.g.node_weight(v.node.0).with_context(|| format!("no node {:?}", v.node))?;
        node.outputs
            .get(v.port as usize)
            .with_context(|| format!("node `{}` has no output {}", node.name, v.port))
    }

    /// Operands of `id`, in operand order.
    pub fn inputs_of(&self, id: NodeId) -> SmallVec<[ValueId; 4]> {
        let mut edges: SmallVec<[(u16, ValueId); 4]> = self
            .g
            .edges_directed(id.0, Direction::Incoming)
            .map(|e| (e.weight().dst, ValueId { node: NodeId(e.source()), port: e.weight().src }))
            .collect();
        edges.sort_by_key(|e| e.0);
        edges.into_iter().map(|e| e.1).collect()
    }

    /// Number of readers of `v`, graph outputs included.
    pub fn uses(&self, v: ValueId) -> usize {
        let edges = self
            .g
            .edges_directed(v.node.0, Direction::Outgoing)
            .filter(|e| e.weight().src == v.port)
            .count();
        edges + self.outputs.iter().filter(|(_, o)| *o == v).count()
    }

    /// The nodes that read any output of `id`, in index order, each once.
    pub fn readers(&self, id: NodeId) -> Vec<NodeId> {
        let mut readers: Vec<NodeId> =
            self.g.edges_directed(id.0, Direction::Outgoing).map(|e| NodeId(e.target())).collect();
        readers.sort();
        readers.dedup();
        readers
    }

    /// Graph inputs, in creation order.
    pub fn inputs(&self) -> &[NodeId] {
        &self.inputs
    }

    /// Graph outputs, in declaration order.
    pub fn outputs(&self) -> &[(String, ValueId)] {
        &self.outputs
    }

    /// The output called `name`.
    pub fn output_named(&self, name: &str) -> Option<ValueId> {
        self.outputs.iter().find(|(n, _)| n == name).map(|(_, v)| *v)
    }

    pub fn node_count(&self) -> usize {
        self.g.node_count()
    }

    /// All node ids in index order.
    pub fn node_ids(&self) -> Vec<NodeId> {
        let mut ids: Vec<NodeId> = self.g.node_indices().map(NodeId).collect();
        ids.sort();
        ids
    }

    /// Number of nodes of each kind.
    pub fn census(&self) -> BTreeMap<OpKind, usize> {
        let mut m = BTreeMap::new();
        for n in self.g.node_weights() {
            *m.entry(n.op.kind()).or_insert(0) += 1;
        }
        m
    }

    /// Kahn's algorithm with a min-heap on node index: a deterministic topological order.
    pub fn topo_order(&self) -> Result<Vec<NodeId>> {
        let mut indeg: BTreeMap<NodeIndex<u32>, usize> = BTreeMap::new();
        for n in self.g.node_indices() {
            indeg.insert(n, self.g.edges_directed(n, Direction::Incoming).count());
        }
        let mut ready: BinaryHeap<Reverse<NodeIndex<u32>>> =
            indeg.iter().filter(|(_, d)| **d == 0).map(|(n, _)| Reverse(*n)).collect();
        let mut order = Vec::with_capacity(indeg.len());
        while let Some(Reverse(n)) = ready.pop() {
            order.push(NodeId(n));
            for e in self.g.edges_directed(n, Direction::Outgoing) {
                let d = indeg.get_mut(&e.target()).expect("every node has an in-degree");
                *d -= 1;
                if *d == 0 {
                    ready.push(Reverse(e.target()));
                }
            }
        }
        if order.len() != indeg.len() {
            bail!("the graph has a cycle");
        }
        Ok(order)
    }

    /// Checks the invariants: acyclic, unique names, operand ports `0..n`, outputs exist, and every stored fact
    /// equals what inference computes from the inputs today.
    pub fn verify(&self) -> Result<()> {
        self.topo_order()?;
        if self.names.len() != self.g.node_count() {
            bail!("{} names for {} nodes", self.names.len(), self.g.node_count());
        }
        for id in self.node_ids() {
            let node = self.node(id);
            if self.names.get(&node.name) != Some(&id) {
                bail!("node `{}` is not registered under its name", node.name);
            }
            let mut ports: Vec<u16> =
                self.g.edges_directed(id.0, Direction::Incoming).map(|e| e.weight().dst).collect();
            ports.sort();
            if ports.iter().enumerate().any(|(i, p)| *p as usize != i) {
                bail!("node `{}` has operand ports {ports:?}, not 0..{}", node.name, ports.len());
            }
            let ins = self.inputs_of(id);
            let facts: Vec<&Fact> = ins.iter().map(|v| self.fact(*v)).collect::<Result<_>>()?;
            let inferred = node
                .op
                .infer(&facts)
                .with_context(|| format!("re-inferring node `{}` ({})", node.name, node.op))?;
            if inferred != node.outputs {
                bail!(
                    "node `{}`: stored facts {:?} differ from inferred {:?}",
                    node.name,
                    node.outputs,
                    inferred
                );
            }
        }
        for (name, v) in &self.outputs {
            self.fact(*v).with_context(|| format!("graph output `{name}`"))?;
        }
        Ok(())
    }

    /// Points every reader of `old` (and any graph output) at `new`.
    pub(crate) fn reroute(&mut self, old: ValueId, new: ValueId) {
        let readers: Vec<_> = self
            .g
            .edges_directed(old.node.0, Direction::Outgoing)
            .filter(|e| e.weight().src == old.port)
            .map(|e| (e.id(), e.target(), e.weight().dst))
            .collect();
        for (edge, target, dst) in readers {
            self.g.remove_edge(edge);
            self.g.add_edge(new.node.0, target, Port { src: new.port, dst });
        }
        for (_, o) in self.outputs.iter_mut() {
            if *o == old {
                *o = new;
            }
        }
    }

    /// Removes nodes no output depends on; graph inputs stay.
    pub(crate) fn remove_dead(&mut self) {
        let mut live = std::collections::BTreeSet::new();
        let mut stack: Vec<NodeIndex<u32>> = self
            .outputs
            .iter()
            .map(|(_, v)| v.node.0)
            .chain(self.inputs.iter().map(|n| n.0))
            .collect();
        while let Some(n) = stack.pop() {
            if live.insert(n) {
                stack.extend(self.g.neighbors_directed(n, Direction::Incoming));
            }
        }
        let dead: Vec<NodeIndex<u32>> =
            self.g.node_indices().filter(|n| !live.contains(n)).collect();
        for n in dead {
            if let Some(node) = self.g.remove_node(n) {
                self.names.remove(&node.name);
            }
        }
    }
}
