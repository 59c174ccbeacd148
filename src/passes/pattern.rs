//! The small pattern language of fusion rules: `any("x")` binds a value, `op(kind, [...])` matches output 0 of a
//! node of that kind, `.named("n")` binds the node, `.commutative()` also tries two operands swapped. A name bound
//! twice must bind the same value.

use crate::ir::{Graph, NodeId, OpKind, ValueId};
use std::collections::BTreeMap;

/// A pattern over values.
#[derive(Clone, Debug)]
pub enum Pat {
    Any(&'static str),
    Op { kind: OpKind, args: Vec<Pat>, name: Option<&'static str>, commutative: bool },
}

/// Binds a value.
pub fn any(name: &'static str) -> Pat {
    Pat::Any(name)
}

/// Matches output 0 of a node of `kind` whose operands match `args` (all operands, in order).
pub fn op<const N: usize>(kind: OpKind, args: [Pat; N]) -> Pat {
    Pat::Op { kind, args: args.into(), name: None, commutative: false }
}

impl Pat {
    /// Binds the matched node under `name`.
    pub fn named(self, n: &'static str) -> Pat {
        match self {
            Pat::Op { kind, args, commutative, .. } => {
                Pat::Op { kind, args, name: Some(n), commutative }
            }
            any => any,
        }
    }

    /// Also tries the first two operands swapped.
    pub fn commutative(self) -> Pat {
        match self {
            Pat::Op { kind, args, name, .. } => Pat::Op { kind, args, name, commutative: true },
            any => any,
        }
    }

    /// The root kind, for indexing rules.
    pub fn root_kind(&self) -> Option<OpKind> {
        match self {
            Pat::Op { kind, .. } => Some(*kind),
            Pat::Any(_) => None,
        }
    }
}

/// A successful match: the bound values and nodes, the root, and the interior values (matched node outputs
/// below the root).
#[derive(Clone, Debug)]
pub struct Match {
    pub root: NodeId,
    values: BTreeMap<&'static str, ValueId>,
    nodes: BTreeMap<&'static str, NodeId>,
    pub interior: Vec<ValueId>,
}

impl Match {
    /// The value bound to `name`; the rule's pattern guarantees it exists.
    pub fn value(&self, name: &str) -> ValueId {
        *self.values.get(name).unwrap_or_else(|| unreachable!("pattern binds value `{name}`"))
    }

    /// The node bound to `name`; the rule's pattern guarantees it exists.
    pub fn node(&self, name: &str) -> NodeId {
        *self.nodes.get(name).unwrap_or_else(|| unreachable!("pattern binds node `{name}`"))
    }
}

/// Matches `pat` rooted at node `root`.
pub fn matches(g: &Graph, pat: &Pat, root: NodeId) -> Option<Match> {
    let mut m =
        Match { root, values: BTreeMap::new(), nodes: BTreeMap::new(), interior: Vec::new() };
    go(g, pat, ValueId { node: root, port: 0 }, &mut m, true).then_some(m)
}

fn go(g: &Graph, pat: &Pat, v: ValueId, m: &mut Match, is_root: bool) -> bool {
    match pat {
        Pat::Any(name) => match m.values.get(name) {
            Some(bound) => *bound == v,
            None => {
                m.values.insert(name, v);
                true
            }
        },
        Pat::Op { kind, args, name, commutative } => {
            if v.port != 0 || g.node(v.node).op.kind() != *kind {
                return false;
            }
            let ins = g.inputs_of(v.node);
            if ins.len() != args.len() {
                return false;
            }
            let mut orders: Vec<Vec<usize>> = vec![(0..args.len()).collect()];
            if *commutative && args.len() >= 2 {
                let mut swapped: Vec<usize> = (0..args.len()).collect();
                swapped.swap(0, 1);
                orders.push(swapped);
            }
            for order in orders {
                let saved = m.clone();
                if order.iter().enumerate().all(|(i, &j)| go(g, &args[i], ins[j], m, false)) {
                    if let Some(n) = name {
                        m.nodes.insert(n, v.node);
                    }
                    if !is_root {
                        m.interior.push(v);
                    }
                    return true;
                }
                *m = saved;
            }
            false
        }
    }
}
