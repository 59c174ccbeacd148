//! Packs sibling linears: `x Wᵢᵀ` for several constant `Wᵢ` reading the same `x` => one `x [W₁;W₂;…]ᵀ` and a slice
//! per original output (fused QKV, the C/B/X/dt projections of SSD). Weights are concatenated at compile time.

use super::{Pass, PassContext};
use crate::ir::op::{Const, Op};
use crate::ir::{Graph, NodeId, Patch, Tensor, ValueId};
use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The packing pass.
pub struct PackLinears;

/// Bias-free linears with a constant weight, grouped by input value (deterministic order).
fn groups(g: &Graph) -> BTreeMap<ValueId, Vec<NodeId>> {
    let mut by_input: BTreeMap<ValueId, Vec<NodeId>> = BTreeMap::new();
    for id in g.node_ids() {
        if g.node(id).op != (Op::Linear { bias: false }) {
            continue;
        }
        let ins = g.inputs_of(id);
        if matches!(g.node(ins[1].node).op, Op::Const(_)) && ins[1].port == 0 {
            by_input.entry(ins[0]).or_default().push(id);
        }
    }
    by_input.retain(|_, v| v.len() >= 2);
    by_input
}

fn weight(g: &Graph, id: NodeId) -> Arc<Tensor> {
    let w = g.inputs_of(id)[1];
    let Op::Const(c) = &g.node(w.node).op else {
        unreachable!("grouped linears have constant weights")
    };
    c.0.clone()
}

impl Pass for PackLinears {
    fn name(&self) -> &'static str {
        "pack_linears"
    }

    fn run(&self, g: &mut Graph, cx: &mut PassContext) -> Result<bool> {
        let mut changed = false;
        for (x, linears) in groups(g) {
            let first = g.node(linears[0]).name.clone();
            let weights: Vec<Arc<Tensor>> = linears.iter().map(|&id| weight(g, id)).collect();
            let inp = weights[0].dims()[1];
            let mut rows = 0;
            let mut data = Vec::new();
            for w in &weights {
                rows += w.dims()[0];
                data.extend_from_slice(w.as_f32()?);
            }
            let packed = Tensor::f32(vec![rows, inp], data)?;
            let mut patch = Patch::default();
            let w = patch.wire(
                format!("{first}.packed_weight"),
                Op::Const(Const(Arc::new(packed))),
                &[],
            );
            let y =
                patch.wire(format!("{first}.packed"), Op::Linear { bias: false }, &[x.into(), w]);
            let mut start = 0;
            for (id, wt) in linears.iter().zip(&weights) {
                let len = wt.dims()[0];
                let name = format!("{}.slice", g.node(*id).name);
                let s = patch.wire(name, Op::SliceLast { start, len }, &[y]);
                patch.replace((*id).into(), s);
                start += len;
            }
            g.apply(patch).with_context(|| {
                format!("packing the linears reading `{}`", g.node(x.node).name)
            })?;
            *cx.rewrites.entry("pack_linears").or_insert(0) += 1;
            changed = true;
        }
        Ok(changed)
    }
}
