//! Attention with the Wonderful Matrices dynamic mask (and the learned mask of Doge-IFA).

use super::arity;
use super::basic::{want_dim, want_dtype, want_rank, want_shape};
use crate::ir::dim::Dim;
use crate::ir::dtype::DType;
use crate::ir::fact::Fact;
use anyhow::{bail, Result};

/// How the mask input enters the scores (MODEL.md §3.2, §4.2, §5.2, §6.1). Query `i` sits at absolute position
/// `T−S+i`; key `j` is visible when `j ≤ T−S+i` and `attention_mask[b,j] = 1`; masked scores get `+MIN`
/// (`f32::MIN`), so a fully masked row is uniform over all keys, as in the references.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum AttentionMask {
    /// Visibility only.
    Causal,
    /// Key `j` of head `h` is dropped when `m[h,j] < 1`.
    Boolean,
    /// `+m[h,j]` on visible keys; `ratio` drops keys below the `int(T·ratio)`-th smallest `m` of the row's
    /// head; `keep_window` keeps the `W` largest biases per row when `T > W`.
    Additive { ratio: f32, keep_window: Option<usize> },
    /// Key `j` of head `h` is dropped where the learned `mask[h,j]` is exactly zero.
    Learned,
}

impl AttentionMask {
    /// The same mask as the kernels of `cheems_ops::masked_attention` take it.
    pub fn kernel_mode(&self) -> cheems_ops::masked_attention::MaskMode {
        use cheems_ops::masked_attention::MaskMode;
        match *self {
            AttentionMask::Causal => MaskMode::Causal,
            AttentionMask::Boolean => MaskMode::Boolean,
            AttentionMask::Additive { ratio, keep_window } => {
                MaskMode::Additive { ratio, keep_window }
            }
            AttentionMask::Learned => MaskMode::Learned,
        }
    }
}

/// `softmax(q·kᵀ·scale + bias)·v` with GQA (query head `h` reads KV head `h/(H/G)`, mask head `h·Hm/H`).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Attention {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub scale: f32,
    pub mask: AttentionMask,
}

pub(crate) fn infer_mask_values(i: &[&Fact]) -> Result<Fact> {
    arity(i, 2)?;
    want_dtype(i[0], DType::F32, "dt")?;
    want_rank(i[0], 3, "dt")?;
    let s = &i[0].shape;
    want_shape(i[1], std::slice::from_ref(&s[2]), "A")?;
    Ok(Fact::new(DType::F32, [s[0].clone(), s[2].clone(), s[1].clone()]))
}

/// `ProjectedMaskValues`: the facts of its linear (`x`, `w`, then `b` when `bias`), then those of the mask values.
pub(crate) fn infer_projected_mask_values(i: &[&Fact], bias: bool) -> Result<Fact> {
    arity(i, if bias { 4 } else { 3 })?;
    want_rank(i[0], 3, "x")?;
    let mut linear = vec![i[0], i[1]];
    linear.extend(bias.then(|| i[3]));
    let dt = super::basic::infer_linear(&linear, bias)?;
    infer_mask_values(&[&dt, i[2]])
}

impl Attention {
    pub(crate) fn infer(&self, i: &[&Fact]) -> Result<Fact> {
        let extra = !matches!(self.mask, AttentionMask::Causal);
        arity(i, if extra { 5 } else { 4 })?;
        if self.kv_heads == 0 || self.heads % self.kv_heads != 0 {
            bail!("{} heads do not group over {} KV heads", self.heads, self.kv_heads);
        }
        want_rank(i[0], 4, "q")?;
        want_rank(i[1], 4, "k")?;
        let (b, s) = (i[0].shape[0].clone(), i[0].shape[1].clone());
        let t = i[1].shape[2].clone();
        let (h, g, d) = (Dim::from(self.heads), Dim::from(self.kv_heads), Dim::from(self.head_dim));
        want_shape(i[0], &[b.clone(), s, h.clone(), d.clone()], "q")?;
        want_shape(i[1], &[b.clone(), g.clone(), t.clone(), d.clone()], "k")?;
        want_shape(i[2], &[b.clone(), g.clone(), t.clone(), d], "v")?;
        want_dtype(i[3], DType::I64, "attention_mask")?;
        want_rank(i[3], 2, "attention_mask")?;
        want_dim(&i[3].shape[0], &b, "batch of attention_mask")?;
        want_dim(&i[3].shape[1], &t, "length of attention_mask")?;
        match self.mask {
            AttentionMask::Causal => {}
            AttentionMask::Boolean | AttentionMask::Additive { .. } => {
                want_rank(i[4], 3, "m")?;
                let hm = &i[4].shape[1];
                if hm != &h && hm != &g {
                    bail!("m {} must have H={h} or G={g} mask heads", i[4]);
                }
                want_shape(i[4], &[b, hm.clone(), t], "m")?;
            }
            AttentionMask::Learned => {
                want_dtype(i[4], DType::F32, "learned mask")?;
                want_rank(i[4], 2, "learned mask")?;
                want_dim(&i[4].shape[0], &h, "heads of the learned mask")?;
            }
        }
        Ok(i[0].clone())
    }
}
