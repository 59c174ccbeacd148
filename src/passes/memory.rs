//! The activation memory plan of a graph for concrete sizes: every value a node computes gets a byte range of one
//! arena, and two values whose lifetimes overlap never share a byte.
//!
//! A value lives from the step (position in topological order) of the node that computes it to the step of its
//! last reader; graph outputs live to the end. Ranges are assigned greedily, largest value first, each at the
//! lowest offset that clears every placed value it is alive with; sizes are rounded up to [`ALIGN`] bytes. The
//! arena is at least the peak of the bytes alive at one step, and at most the sum of all values.
//!
//! The plan tells what activation memory a batch shape needs (`cheems inspect --memory`). Weights and graph inputs
//! are not part of it.

use crate::ir::{Bindings, DType, Graph, NodeId, Op, ValueId};
use anyhow::{Context, Result};
use std::collections::HashMap;

/// Every range starts at a multiple of this many bytes.
pub const ALIGN: usize = 256;

/// One value's place in the arena.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Slot {
    pub value: ValueId,
    /// The computing node's name and output port, for reports.
    pub name: String,
    pub bytes: usize,
    /// Steps (positions in the topological order) of the definition and of the last read.
    pub first: usize,
    pub last: usize,
    pub offset: usize,
}

/// The plan for one set of sizes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoryPlan {
    pub slots: Vec<Slot>,
    /// Bytes of the arena (the end of the highest range).
    pub arena_bytes: usize,
    /// Largest sum of aligned sizes alive at one step: no plan can use less.
    pub peak_live_bytes: usize,
    /// Sum of all aligned sizes: what allocating every value separately and never freeing would take.
    pub total_bytes: usize,
}

fn aligned(n: usize) -> usize {
    n.div_ceil(ALIGN) * ALIGN
}

/// Plans the values of `g` for `bindings`; `elem_bytes` gives the bytes per element a value is stored in (the
/// executor's storage choice, from the value and its declared dtype).
pub fn plan(
    g: &Graph,
    bindings: &Bindings,
    elem_bytes: impl Fn(ValueId, DType) -> usize,
) -> Result<MemoryPlan> {
    let order = g.topo_order()?;
    let step: HashMap<NodeId, usize> = order.iter().enumerate().map(|(i, &id)| (id, i)).collect();
    let end = order.len();
    let mut last_read: HashMap<ValueId, usize> = HashMap::new();
    for (i, &id) in order.iter().enumerate() {
        for v in g.inputs_of(id) {
            let e = last_read.entry(v).or_insert(i);
            *e = (*e).max(i);
        }
    }
    for (_, v) in g.outputs() {
        last_read.insert(*v, end);
    }
    let mut slots = Vec::new();
    for &id in &order {
        let node = g.node(id);
        if matches!(node.op, Op::Input(_) | Op::Const(_)) {
            continue;
        }
        for (port, fact) in node.outputs.iter().enumerate() {
            let value = ValueId { node: id, port: port as u16 };
            let dims = fact
                .eval(bindings)
                .with_context(|| format!("sizing output {port} of `{}`", node.name))?;
            let bytes = aligned(dims.iter().product::<usize>() * elem_bytes(value, fact.dtype));
            let first = step[&id];
            let last = last_read.get(&value).copied().unwrap_or(first);
            let name = format!("{}:{port}", node.name);
            slots.push(Slot { value, name, bytes, first, last, offset: 0 });
        }
    }
    let mut by_size: Vec<usize> = (0..slots.len()).collect();
    by_size.sort_by(|&a, &b| {
        let (x, y) = (&slots[a], &slots[b]);
        y.bytes.cmp(&x.bytes).then(x.first.cmp(&y.first)).then(x.name.cmp(&y.name))
    });
    let mut placed: Vec<usize> = Vec::new();
    for &i in &by_size {
        let (first, last, bytes) = (slots[i].first, slots[i].last, slots[i].bytes);
        let mut busy: Vec<(usize, usize)> = placed
            .iter()
            .map(|&j| &slots[j])
            .filter(|s| s.first <= last && first <= s.last)
            .map(|s| (s.offset, s.offset + s.bytes))
            .collect();
        busy.sort_unstable();
        let mut offset = 0;
        for (lo, hi) in busy {
            if lo >= offset + bytes {
                break;
            }
            offset = offset.max(hi);
        }
        slots[i].offset = offset;
        placed.push(i);
    }
    let arena_bytes = slots.iter().map(|s| s.offset + s.bytes).max().unwrap_or(0);
    let total_bytes = slots.iter().map(|s| s.bytes).sum();
    let mut delta = vec![0i64; end + 2];
    for s in &slots {
        delta[s.first] += s.bytes as i64;
        delta[s.last + 1] -= s.bytes as i64;
    }
    let (mut live, mut peak_live) = (0i64, 0i64);
    for d in delta {
        live += d;
        peak_live = peak_live.max(live);
    }
    Ok(MemoryPlan { slots, arena_bytes, peak_live_bytes: peak_live as usize, total_bytes })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{Dim, Op};
    use crate::ir::{Fact, Sym};

    fn chain(widths: &[i64]) -> Graph {
        let mut g = Graph::new();
        let s = Dim::sym("S");
        let mut v =
            g.input("x", Fact::new(DType::F32, [s.clone(), Dim::konst(widths[0])])).unwrap();
        let mut skip = v;
        for (i, _) in widths.iter().enumerate().skip(1) {
            let next = g.wire(format!("add{i}"), Op::Add, &[v, skip]).unwrap();
            skip = v;
            v = next;
        }
        g.output("y", v).unwrap();
        g
    }

    fn check(g: &Graph, p: &MemoryPlan) {
        for (i, a) in p.slots.iter().enumerate() {
            for b in &p.slots[i + 1..] {
                let alive_together = a.first <= b.last && b.first <= a.last;
                let disjoint = a.offset + a.bytes <= b.offset || b.offset + b.bytes <= a.offset;
                assert!(!alive_together || disjoint, "{} and {} overlap", a.name, b.name);
            }
            assert_eq!(a.offset % ALIGN, 0);
        }
        assert!(p.peak_live_bytes <= p.arena_bytes && p.arena_bytes <= p.total_bytes);
        let computed: usize = g
            .node_ids()
            .into_iter()
            .map(|id| g.node(id))
            .filter(|n| !matches!(n.op, Op::Input(_) | Op::Const(_)))
            .map(|n| n.outputs.len())
            .sum();
        assert_eq!(p.slots.len(), computed, "one slot per computed value");
    }

    #[test]
    fn values_alive_together_never_share_bytes() {
        let g = chain(&[64; 6]);
        let b = Bindings::from([(Sym::new("S"), 3)]);
        let p = plan(&g, &b, |_, d| d.size_of()).unwrap();
        check(&g, &p);
        // Each add reads the two previous values, so three of them are alive at a step: the arena needs three
        // slots of 3·64·4 = 768 bytes, not one per value.
        assert_eq!(p.arena_bytes, 3 * 768);
        assert_eq!(p.total_bytes, 5 * 768);
        assert_eq!(plan(&g, &b, |_, d| d.size_of()).unwrap(), p, "deterministic");
    }

    #[test]
    fn every_fixture_graph_gets_a_valid_plan() {
        let root = std::env::var_os("CHEEMS_FIXTURES")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| std::path::PathBuf::from("../shared/fixtures"));
        let Ok(dirs) = std::fs::read_dir(&root) else {
            panic!("fixtures not found under {}", root.display())
        };
        let mut n = 0;
        for d in dirs.flatten().filter(|d| d.path().join("config.json").is_file()) {
            let ck = crate::model::checkpoint::Checkpoint::open(&d.path()).unwrap();
            let m = crate::model::build::build(&ck.config, &ck.weights).unwrap();
            let at = |s: i64, p: i64| {
                let b =
                    Bindings::from([(Sym::new("B"), 2), (Sym::new("S"), s), (Sym::new("P"), p)]);
                plan(&m.graph, &b, |_, d| d.size_of()).unwrap()
            };
            let (short, long) = (at(5, 0), at(40, 0));
            check(&m.graph, &short);
            check(&m.graph, &long);
            assert!(long.arena_bytes > short.arena_bytes, "{}", d.path().display());
            assert!(short.arena_bytes < short.total_bytes, "{}: no reuse", d.path().display());
            check(&m.graph, &at(1, 9));
            n += 1;
        }
        assert!(n > 0, "no fixture under {}", root.display());
    }
}
