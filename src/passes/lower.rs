//! Lowering check: every node must have a kernel on the target; the unsupported ones are listed, never run
//! through a silent fallback.

use super::{Pass, PassContext};
use crate::ir::{Graph, Op};
use anyhow::{bail, Result};

/// Where a compiled graph runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Cpu,
    Cuda,
}

/// Whether `op` has a kernel on `target`.
pub fn supported(op: &Op, target: Target) -> bool {
    match target {
        Target::Cpu => true,
        Target::Cuda => match op {
            Op::Input(_)
            | Op::Const(_)
            | Op::Embedding
            | Op::RmsNorm(_)
            | Op::Linear { .. }
            | Op::ScaledResidual
            | Op::ResidualRmsNorm { .. }
            | Op::SliceLast { .. }
            | Op::Add
            | Op::GatedMlp { .. }
            | Op::Mlp { .. }
            | Op::SplitLast { .. }
            | Op::MergeLast
            | Op::Permute { .. }
            | Op::Concat { .. }
            | Op::MaskTokens
            | Op::Positions
            | Op::RotaryTables(_)
            | Op::Rope
            | Op::NormRope(_)
            | Op::SsdScan(_)
            | Op::DynamicMaskValues
            | Op::ProjectedMaskValues { .. }
            | Op::MaskedAttention(_)
            | Op::PkTopK(_)
            | Op::RouterTopK(_)
            | Op::ExpertMix(_)
            | Op::InnerValues(_) => true,
        },
    }
}

/// The lowering pass for a target.
pub struct Lower {
    pub target: Target,
}

impl Pass for Lower {
    fn name(&self) -> &'static str {
        "lower"
    }

    fn run(&self, g: &mut Graph, _cx: &mut PassContext) -> Result<bool> {
        let missing: Vec<String> = g
            .node_ids()
            .into_iter()
            .filter(|id| !supported(&g.node(*id).op, self.target))
            .map(|id| format!("`{}` ({:?})", g.node(id).name, g.node(id).op.kind()))
            .collect();
        if !missing.is_empty() {
            bail!(
                "{} node(s) have no {:?} kernel: {}",
                missing.len(),
                self.target,
                missing.join(", ")
            );
        }
        Ok(false)
    }
}
