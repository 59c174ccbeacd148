//! The closed set of operations the compiler knows. Each variant's inference lives in a per-family module; the
//! arms here are one-liners, so adding a variant makes rustc list every `match` that must learn about it.

pub mod attention;
pub mod basic;
pub mod moe;
pub mod rope;
pub mod ssd;

use super::fact::Fact;
use super::tensor::Tensor;
use anyhow::{bail, Result};
use smallvec::SmallVec;
use std::fmt;
use std::sync::Arc;

pub use crate::model::config::{Act, ExpertAct};
pub use attention::{Attention, AttentionMask};
pub use moe::{ExpertMix, InnerValues, PkTopK, RouterTopK};
pub use rope::Rotary;
pub use ssd::Ssd;

/// Attributes of an RMSNorm over the last axis.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Norm {
    pub eps: f32,
}

/// A constant tensor (a weight). Equality is identity of the shared buffer.
#[derive(Clone)]
pub struct Const(pub Arc<Tensor>);

impl PartialEq for Const {
    fn eq(&self, other: &Const) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl fmt::Debug for Const {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// Every operation the compiler knows. Inputs are listed in operand order; `[..]` shapes are symbolic.
/// Serialisable except for `Const`, whose tensor is stored apart (the compiled artifact's weights file).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Op {
    /// A graph input; its fact is given when it is created.
    Input(Fact),
    /// A weight.
    #[serde(skip)]
    Const(Const),
    /// `table[ids]`. Inputs: `ids i64[B,S]`, `table [V,D]` → `[B,S,D]`.
    Embedding,
    /// `w ⊙ x / sqrt(mean(x²) + eps)` over the last axis. Inputs: `x [..,D]`, `w [D]`.
    RmsNorm(Norm),
    /// `x Wᵀ (+ b)`. Inputs: `x [..,I]`, `w [O,I]`, optional `b [O]` → `[..,O]`.
    Linear { bias: bool },
    /// `w ⊙ r + f` (learned residual scale). Inputs: `w [D]`, `r [..,D]`, `f [..,D]`.
    ScaledResidual,
    /// Fused `h = s ⊙ r + f` (or `r + f` unscaled) and `y = rms_norm(h, w)`. Inputs: `s [D]` when `scaled`, `r`,
    /// `f`, `w [D]` → `h`, `y`.
    ResidualRmsNorm { norm: Norm, scaled: bool },
    /// Columns `start..start+len` of the last axis.
    SliceLast { start: usize, len: usize },
    /// `a + b`, same shapes.
    Add,
    /// `down(act(gate(x)) ⊙ up(x))`. Inputs: `x`, `w_gate`, `w_up`, `w_down`, then `b_gate`, `b_up`, `b_down`
    /// when `bias`.
    GatedMlp { act: Act, bias: bool },
    /// `down(act(up(x)))`. Inputs: `x`, `w_up`, `w_down`, then `b_up`, `b_down` when `bias`.
    Mlp { act: Act, bias: bool },
    /// `[.., n·m] → [.., n, m]`.
    SplitLast { parts: usize },
    /// `[.., n, m] → [.., n·m]`.
    MergeLast,
    /// Axis permutation.
    Permute { perm: SmallVec<[usize; 4]> },
    /// Concatenation of two values along `axis`.
    Concat { axis: usize },
    /// `x ⊙ mask[:, P:]` when `P = 0` (a prefill from an empty cache), else `x` (Cheems' SSD input mask).
    /// Inputs: `x [B,S,D]`, `attention_mask i64[B,P+S]`.
    MaskTokens,
    /// `P + arange(S)` per row, with `P` the attention mask's length minus S. Inputs: `input_ids i64[B,S]`,
    /// `attention_mask i64[B,P+S]` → `i64[B,S]`.
    Positions,
    /// RoPE tables with the (dynamic-NTK) frequency state. Inputs: `positions i64[B,S]`, `rope_len i64[1]` →
    /// `cos [B,S,Dh]`, `sin [B,S,Dh]`, `rope_len' i64[1]`; stateless: `positions` alone → `cos`, `sin`.
    RotaryTables(Rotary),
    /// `x ⊙ cos + rotate_half(x) ⊙ sin`. Inputs: `x [B,S,H,Dh]`, `cos [B,S,Dh]`, `sin [B,S,Dh]`.
    Rope,
    /// `rope(rms_norm(x, w), cos, sin)`: the q/k prologue of the attention. Inputs: `x [B,S,H,Dh]`, `w [Dh]`,
    /// `cos [B,S,Dh]`, `sin [B,S,Dh]`.
    NormRope(Norm),
    /// The SSD recurrence over S tokens from a state. Inputs: `x [B,S,H,P]`, `dt [B,S,H]` (raw), `A [H]`,
    /// `B [B,S,H,N]`, `C [B,S,H,N]`, `state [B,H,P,N]` → `y [B,S,H,P]`, `state' [B,H,P,N]`.
    SsdScan(Ssd),
    /// Per-key dynamic mask values `exp(A ⊙ softplus(dt))`. Inputs: `dt [B,S,Hm]`, `A [Hm]` → `[B,Hm,S]`.
    DynamicMaskValues,
    /// Fused `dynamic_mask_values(linear(x, w, b), A)`: the mask values of the keys straight from the projection that
    /// gives their `dt`. Inputs: `x [B,S,I]`, `w [Hm,I]`, `A [Hm]`, then `b [Hm]` when `bias` → `[B,Hm,S]`.
    ProjectedMaskValues { bias: bool },
    /// Causal attention with a dynamic or learned mask. Inputs: `q [B,S,H,Dh]`, `k [B,G,T,Dh]`,
    /// `v [B,G,T,Dh]`, `attention_mask i64[B,T]`, then `m [B,Hm,T]` (dynamic modes) or
    /// `learned [H,L]` (learned mode) → `[B,S,H,Dh]`.
    MaskedAttention(Attention),
    /// Product-key top-k (Cheems CDMoE). Inputs: `q [B,S,2·He·R/2]`, `keys [He,nk,2,R/2]` → `scores [B,S,He,K]`,
    /// `ids i64[B,S,He,K]`.
    PkTopK(PkTopK),
    /// Router top-k of HF Doge's CDMoE (with its cross-token view). Inputs: `logits [B,S,2·nk]` →
    /// `scores [B,S,1,K]`, `ids i64[B,S,1,K]`.
    RouterTopK(RouterTopK),
    /// Private-expert mix. Inputs: `x [B,S,D]`, `scores [B,S,He,K]`, `ids`, `down [E,D]`, `up [E,D]` → `[B,S,D]`.
    ExpertMix(ExpertMix),
    /// Inner-function values of Doge-IFA. Inputs: `x [B,S,D]`, `vq [B,S,Hv·Rv]`, `v_keys [Hv,Rv,Nv]`,
    /// `v_embed [Nv,D]` → `[B,S,D]`.
    InnerValues(InnerValues),
}

/// Field-less mirror of [`Op`], used to index rules and in dumps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OpKind {
    Input,
    Const,
    Embedding,
    RmsNorm,
    Linear,
    ScaledResidual,
    ResidualRmsNorm,
    SliceLast,
    Add,
    GatedMlp,
    Mlp,
    SplitLast,
    MergeLast,
    Permute,
    Concat,
    MaskTokens,
    Positions,
    RotaryTables,
    Rope,
    NormRope,
    SsdScan,
    DynamicMaskValues,
    ProjectedMaskValues,
    MaskedAttention,
    PkTopK,
    RouterTopK,
    ExpertMix,
    InnerValues,
}

impl Op {
    pub fn kind(&self) -> OpKind {
        match self {
            Op::Input(_) => OpKind::Input,
            Op::Const(_) => OpKind::Const,
            Op::Embedding => OpKind::Embedding,
            Op::RmsNorm(_) => OpKind::RmsNorm,
            Op::Linear { .. } => OpKind::Linear,
            Op::ScaledResidual => OpKind::ScaledResidual,
            Op::ResidualRmsNorm { .. } => OpKind::ResidualRmsNorm,
            Op::SliceLast { .. } => OpKind::SliceLast,
            Op::Add => OpKind::Add,
            Op::GatedMlp { .. } => OpKind::GatedMlp,
            Op::Mlp { .. } => OpKind::Mlp,
            Op::SplitLast { .. } => OpKind::SplitLast,
            Op::MergeLast => OpKind::MergeLast,
            Op::Permute { .. } => OpKind::Permute,
            Op::Concat { .. } => OpKind::Concat,
            Op::MaskTokens => OpKind::MaskTokens,
            Op::Positions => OpKind::Positions,
            Op::RotaryTables(_) => OpKind::RotaryTables,
            Op::Rope => OpKind::Rope,
            Op::NormRope(_) => OpKind::NormRope,
            Op::SsdScan(_) => OpKind::SsdScan,
            Op::DynamicMaskValues => OpKind::DynamicMaskValues,
            Op::ProjectedMaskValues { .. } => OpKind::ProjectedMaskValues,
            Op::MaskedAttention(_) => OpKind::MaskedAttention,
            Op::PkTopK(_) => OpKind::PkTopK,
            Op::RouterTopK(_) => OpKind::RouterTopK,
            Op::ExpertMix(_) => OpKind::ExpertMix,
            Op::InnerValues(_) => OpKind::InnerValues,
        }
    }

    /// Output facts from input facts; errors say which operand is wrong and why.
    pub fn infer(&self, inputs: &[&Fact]) -> Result<SmallVec<[Fact; 1]>> {
        let one = |f: Fact| -> SmallVec<[Fact; 1]> { smallvec::smallvec![f] };
        Ok(match self {
            Op::Input(f) => {
                arity(inputs, 0)?;
                one(f.clone())
            }
            Op::Const(c) => {
                arity(inputs, 0)?;
                one(Fact::konst(c.0.dtype(), c.0.dims()))
            }
            Op::Embedding => one(basic::infer_embedding(inputs)?),
            Op::RmsNorm(_) => one(basic::infer_rms_norm(inputs)?),
            Op::Linear { bias } => one(basic::infer_linear(inputs, *bias)?),
            Op::ScaledResidual => one(basic::infer_scaled_residual(inputs)?),
            Op::ResidualRmsNorm { scaled, .. } => basic::infer_residual_rms_norm(inputs, *scaled)?,
            Op::SliceLast { start, len } => one(basic::infer_slice_last(inputs, *start, *len)?),
            Op::Add => one(basic::infer_add(inputs)?),
            Op::GatedMlp { bias, .. } => one(basic::infer_gated_mlp(inputs, *bias)?),
            Op::Mlp { bias, .. } => one(basic::infer_mlp(inputs, *bias)?),
            Op::SplitLast { parts } => one(basic::infer_split_last(inputs, *parts)?),
            Op::MergeLast => one(basic::infer_merge_last(inputs)?),
            Op::Permute { perm } => one(basic::infer_permute(inputs, perm)?),
            Op::Concat { axis } => one(basic::infer_concat(inputs, *axis)?),
            Op::MaskTokens => one(basic::infer_mask_tokens(inputs)?),
            Op::Positions => one(rope::infer_positions(inputs)?),
            Op::RotaryTables(r) => r.infer(inputs)?,
            Op::Rope => one(rope::infer_rope(inputs)?),
            Op::NormRope(_) => one(rope::infer_norm_rope(inputs)?),
            Op::SsdScan(s) => s.infer(inputs)?,
            Op::DynamicMaskValues => one(attention::infer_mask_values(inputs)?),
            Op::ProjectedMaskValues { bias } => {
                one(attention::infer_projected_mask_values(inputs, *bias)?)
            }
            Op::MaskedAttention(a) => one(a.infer(inputs)?),
            Op::PkTopK(p) => p.infer(inputs)?,
            Op::RouterTopK(r) => r.infer(inputs)?,
            Op::ExpertMix(e) => one(e.infer(inputs)?),
            Op::InnerValues(v) => one(v.infer(inputs)?),
        })
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Input(fact) => write!(f, "Input({fact})"),
            Op::Const(c) => write!(f, "Const({:?})", c.0),
            other => write!(f, "{other:?}"),
        }
    }
}

/// Checks the operand count.
pub(crate) fn arity(inputs: &[&Fact], n: usize) -> Result<()> {
    if inputs.len() != n {
        bail!("expects {n} operand(s), got {}", inputs.len());
    }
    Ok(())
}
