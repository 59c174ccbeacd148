//! Ordering a recording by data instead of by issue order.
//!
//! Work captured from one stream is a chain: each node waits for the one issued before it. A caller that issues
//! its work in segments (one per graph node of its own, say) and says what memory each segment read and wrote lets
//! [`Gpu::end_recording`](super::Gpu::end_recording) replace the chain between segments by the edges the data
//! needs: a segment follows the segments that wrote memory it reads or writes, and those that read memory it
//! writes. Segments with no such relation may then run at the same time. Inside a segment the chain stays.
//! Work that addresses memory the caller cannot name (kernels of other libraries, which share a workspace, and
//! any node that is not a kernel, copy or memset) is kept in issue order with all other such work.

use super::graph::{check, edges, kernel_function, node_type, nodes};
use crate::{KernelError, Result};
use cudarc::driver::sys;
use std::collections::{HashMap, HashSet};

/// Device memory `[start, end)`, in bytes.
pub type Span = (u64, u64);

/// One segment of a recording.
#[derive(Clone, Debug, Default)]
pub struct Segment {
    /// The recording's last node once the segment was issued ([`Gpu::recorded_tail`]); the segment is empty when
    /// that is the segment before's too.
    ///
    /// [`Gpu::recorded_tail`]: super::Gpu::recorded_tail
    pub tail: Option<usize>,
    /// Memory the segment's work reads.
    pub reads: Vec<Span>,
    /// Memory the segment's work writes (a span both read and written is listed here).
    pub writes: Vec<Span>,
}

/// The shape of a recording ordered by data.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ordering {
    /// Segments that issued work.
    pub segments: usize,
    /// Edges between them.
    pub edges: usize,
    /// The most segments on one path; the others may overlap it.
    pub longest_path: usize,
}

/// A span that stands for memory only foreign work touches (a shared library workspace).
const FOREIGN: Span = (u64::MAX - 1, u64::MAX);

fn overlaps(a: &[Span], b: &[Span]) -> bool {
    a.iter().any(|x| b.iter().any(|y| x.0 < y.1 && y.0 < x.1))
}

/// For each segment (its reads, its writes), the earlier segments it must follow: those that wrote memory it
/// reads or writes, and those that read memory it writes, leaving out any implied through another of them.
pub fn dependencies(segs: &[(Vec<Span>, Vec<Span>)]) -> Vec<Vec<usize>> {
    let n = segs.len();
    let words = n.div_ceil(64);
    // before[j]: bit i set when segment i is ordered before segment j, directly or not.
    let mut before: Vec<Vec<u64>> = Vec::with_capacity(n);
    let mut out = Vec::with_capacity(n);
    for (j, (rj, wj)) in segs.iter().enumerate() {
        let direct: Vec<usize> = (0..j)
            .filter(|&i| {
                let (ri, wi) = &segs[i];
                overlaps(wi, rj) || overlaps(wi, wj) || overlaps(ri, wj)
            })
            .collect();
        let mut implied = vec![0u64; words];
        for &i in &direct {
            for (a, b) in implied.iter_mut().zip(&before[i]) {
                *a |= b;
            }
        }
        let kept: Vec<usize> =
            direct.into_iter().filter(|&i| implied[i / 64] >> (i % 64) & 1 == 0).collect();
        let mut mine = implied;
        for &i in &kept {
            mine[i / 64] |= 1 << (i % 64);
        }
        before.push(mine);
        out.push(kept);
    }
    out
}

/// The most segments on one path of `deps` (as [`dependencies`] returns them).
pub fn longest_path(deps: &[Vec<usize>]) -> usize {
    let mut depth = vec![0usize; deps.len()];
    for (j, d) in deps.iter().enumerate() {
        depth[j] = 1 + d.iter().map(|&i| depth[i]).max().unwrap_or(0);
    }
    depth.into_iter().max().unwrap_or(0)
}

fn change_edges(
    graph: sys::CUgraph,
    from: &[sys::CUgraphNode],
    to: &[sys::CUgraphNode],
    add: bool,
) -> Result<()> {
    if from.is_empty() {
        return Ok(());
    }
    let null = std::ptr::null();
    // SAFETY: the nodes belong to `graph`, one `to` per `from`; null edge data means plain edges.
    let r = unsafe {
        if add {
            sys::cuGraphAddDependencies_v2(graph, from.as_ptr(), to.as_ptr(), null, from.len())
        } else {
            sys::cuGraphRemoveDependencies_v2(graph, from.as_ptr(), to.as_ptr(), null, from.len())
        }
    };
    check(r, if add { "adding data edges" } else { "removing issue-order edges" })
}

/// Reorders a captured chain by the data of `segs` (see the module documentation); `own` holds this crate's
/// kernel functions. A graph with memory allocation or free nodes is left in issue order (`None`: the driver does
/// not let their graphs' edges be removed); one that is not one chain, or whose nodes the segments do not all
/// cover, is an error.
pub(super) fn order_by_data(
    graph: sys::CUgraph,
    segs: &[Segment],
    own: &HashSet<usize>,
) -> Result<Option<Ordering>> {
    use sys::CUgraphNodeType::{
        CU_GRAPH_NODE_TYPE_MEM_ALLOC as ALLOC, CU_GRAPH_NODE_TYPE_MEM_FREE as FREE,
    };
    let all = nodes(graph)?;
    for &node in &all {
        if matches!(node_type(node)?, ALLOC | FREE) {
            return Ok(None);
        }
    }
    let bad =
        |what: &str| Err(KernelError::Driver(format!("ordering a recording by data: {what}")));
    let (from, to, _) = edges(graph)?;
    let mut pred: HashMap<usize, sys::CUgraphNode> = HashMap::new();
    let mut succs: HashMap<usize, usize> = HashMap::new();
    for (&f, &t) in from.iter().zip(&to) {
        if pred.insert(t as usize, f).is_some()
            || *succs.entry(f as usize).and_modify(|c| *c += 1).or_insert(1) > 1
        {
            return bad("the capture is not one chain");
        }
    }
    // The non-empty segments: first and last node, and the spans with foreign work's.
    struct Run {
        first: sys::CUgraphNode,
        last: sys::CUgraphNode,
    }
    let mut runs = Vec::new();
    let mut spans = Vec::new();
    let mut covered = 0usize;
    let mut prev: Option<usize> = None;
    for s in segs {
        let Some(tail) = s.tail else { continue };
        if Some(tail) == prev {
            continue;
        }
        let mut node = tail as sys::CUgraphNode;
        let (mut reads, mut writes) = (s.reads.clone(), s.writes.clone());
        loop {
            covered += 1;
            use sys::CUgraphNodeType::{
                CU_GRAPH_NODE_TYPE_KERNEL as KERNEL, CU_GRAPH_NODE_TYPE_MEMCPY as MEMCPY,
                CU_GRAPH_NODE_TYPE_MEMSET as MEMSET,
            };
            match node_type(node)? {
                KERNEL if own.contains(&(kernel_function(node)? as usize)) => {}
                KERNEL => writes.push(FOREIGN),
                MEMCPY | MEMSET => {}
                _ => {
                    reads.push((0, u64::MAX));
                    writes.push((0, u64::MAX));
                }
            }
            match pred.get(&(node as usize)) {
                Some(&p) if Some(p as usize) != prev => node = p,
                Some(_) => break,
                None if prev.is_none() => break,
                None => return bad("a segment's tail does not follow the segment before it"),
            }
        }
        runs.push(Run { first: node, last: tail as sys::CUgraphNode });
        spans.push((reads, writes));
        prev = Some(tail);
    }
    if covered != all.len() || prev.is_some_and(|p| succs.contains_key(&p)) {
        return bad("the segments do not cover the whole recording");
    }
    let deps = dependencies(&spans);
    let (mut rf, mut rt) = (Vec::new(), Vec::new());
    for r in runs.iter().skip(1) {
        rf.push(pred[&(r.first as usize)]);
        rt.push(r.first);
    }
    change_edges(graph, &rf, &rt, false)?;
    let (mut af, mut at) = (Vec::new(), Vec::new());
    for (j, d) in deps.iter().enumerate() {
        for &i in d {
            af.push(runs[i].last);
            at.push(runs[j].first);
        }
    }
    change_edges(graph, &af, &at, true)?;
    Ok(Some(Ordering { segments: runs.len(), edges: af.len(), longest_path: longest_path(&deps) }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(reads: &[Span], writes: &[Span]) -> (Vec<Span>, Vec<Span>) {
        (reads.to_vec(), writes.to_vec())
    }

    /// Reads after writes, writes after reads and writes after writes order segments; reads after reads and
    /// disjoint memory do not; a dependency implied through another is left out.
    #[test]
    fn dependencies_follow_the_data() {
        let (a, b, c, d) = ((0, 16), (16, 32), (32, 48), (48, 64));
        let segs = [
            seg(&[a], &[b]),                   // 0: b ← a
            seg(&[a], &[c]),                   // 1: c ← a (a read twice: no order)
            seg(&[b, c], &[d]),                // 2: d ← b, c
            seg(&[d], &[a]), // 3: a ← d (writes what 0 and 1 read: implied through 2)
            seg(&[], &[(8, 20)]), // 4: overlaps a (read by 3? no, written by 3) and b (read by 2)
            seg(&[(100, 200)], &[(200, 300)]), // 5: unrelated
        ];
        let deps = dependencies(&segs);
        assert_eq!(deps, vec![vec![], vec![], vec![0, 1], vec![2], vec![3], vec![]]);
        assert_eq!(longest_path(&deps), 4);
    }

    /// Touching spans (one ends where the next begins) do not overlap; a span inside another does.
    #[test]
    fn spans_overlap_only_when_they_share_a_byte() {
        assert!(!overlaps(&[(0, 16)], &[(16, 32)]));
        assert!(overlaps(&[(0, 16)], &[(15, 16)]));
        assert!(overlaps(&[(0, 64)], &[(8, 9)]));
        assert!(!overlaps(&[], &[(0, u64::MAX)]));
        let segs = [seg(&[], &[FOREIGN]), seg(&[(0, 8)], &[(8, 16)]), seg(&[], &[FOREIGN])];
        assert_eq!(dependencies(&segs), vec![vec![], vec![], vec![0]]);
    }

    /// Five kernels in segments: two independent ones, one reading both, and two writing what the first two
    /// read. Ordered by data (with and without programmatic edges) the recording has the edges the data needs,
    /// and every replay gives the chain's values exactly (small integers in f32).
    #[test]
    fn recordings_ordered_by_data_give_the_chains_values() {
        use crate::cuda::{test_gpu, Gpu};
        use crate::elementwise::cuda::add;
        if test_gpu().is_none() {
            return;
        }
        // A stream of its own: a recording takes in all work issued on its stream.
        let gpu = Gpu::new(0).unwrap();
        let n = 1 << 20;
        for programmatic in [true, false] {
            let mut x0 = gpu.upload(&vec![1.0f32; n]).unwrap();
            let mut y0 = gpu.upload(&vec![2.0f32; n]).unwrap();
            let b = gpu.upload(&vec![1.0f32; n]).unwrap();
            let (mut x1, mut y1, mut z) = (
                gpu.zeros::<f32>(n).unwrap(),
                gpu.zeros::<f32>(n).unwrap(),
                gpu.zeros::<f32>(n).unwrap(),
            );
            let (sx0, sy0, sb, sx1, sy1, sz) = (
                gpu.span(&x0),
                gpu.span(&y0),
                gpu.span(&b),
                gpu.span(&x1),
                gpu.span(&y1),
                gpu.span(&z),
            );
            gpu.synchronize().unwrap();
            gpu.begin_recording().unwrap();
            let mut segs = Vec::new();
            let issued = (|| -> Result<()> {
                let mut cut = |reads: Vec<Span>, writes: Vec<Span>| -> Result<()> {
                    segs.push(Segment { tail: gpu.recorded_tail()?, reads, writes });
                    Ok(())
                };
                add(&gpu, &x0, &b, &mut x1)?;
                cut(vec![sx0, sb], vec![sx1])?;
                add(&gpu, &y0, &b, &mut y1)?;
                cut(vec![sy0, sb], vec![sy1])?;
                add(&gpu, &x1, &y1, &mut z)?;
                cut(vec![sx1, sy1], vec![sz])?;
                add(&gpu, &z, &b, &mut x0)?;
                cut(vec![sz, sb], vec![sx0])?;
                add(&gpu, &z, &b, &mut y0)?;
                cut(vec![sz, sb], vec![sy0])
            })();
            let rec =
                gpu.end_recording(programmatic, Some(&segs)).unwrap().expect("work was recorded");
            issued.unwrap();
            assert_eq!(rec.ordering(), Some(Ordering { segments: 5, edges: 4, longest_path: 3 }));
            assert_eq!(rec.node_counts().unwrap(), [("kernel", 5)].into());
            let (mut hx, mut hy) = (1.0f32, 2.0f32);
            for r in 1..=3 {
                rec.launch().unwrap();
                let (x1v, y1v) = (hx + 1.0, hy + 1.0);
                let zv = x1v + y1v;
                (hx, hy) = (zv + 1.0, zv + 1.0);
                for (what, buf, want) in [("x0", &x0, hx), ("y0", &y0, hy), ("z", &z, zv)] {
                    let got = gpu.download(buf).unwrap();
                    let bad = got.iter().position(|&v| v != want);
                    assert!(
                        bad.is_none(),
                        "programmatic {programmatic}, replay {r}: {what} {bad:?}, want {want}"
                    );
                }
            }
        }
    }

    /// Many segments (more than one word of the bit sets) in one chain keep one edge each.
    #[test]
    fn long_chains_keep_one_edge_a_segment() {
        let segs: Vec<_> = (0..200u64).map(|i| seg(&[(i, i + 1)], &[(i + 1, i + 2)])).collect();
        let deps = dependencies(&segs);
        assert!(deps[0].is_empty());
        for (j, d) in deps.iter().enumerate().skip(1) {
            assert_eq!(d, &vec![j - 1]);
        }
        assert_eq!(longest_path(&deps), 200);
    }
}
