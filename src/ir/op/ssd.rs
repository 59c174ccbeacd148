//! State space duality (SSD) layer: the selective recurrence of Cheems.

use super::arity;
use super::basic::want_shape;
use crate::ir::dim::Dim;
use crate::ir::fact::Fact;
use anyhow::{bail, Result};
use smallvec::{smallvec, SmallVec};

/// `S_t = exp(softplus(dt_t)·A)·S_{t−1} + softplus(dt_t)·x_t ⊗ B_t;  y_t = S_t · C_t` per batch row and head,
/// with `A` used as stored (MODEL.md §3.2). `chunk` is the checkpoint's `ssd_chunk_size`, used by chunked
/// kernels; it changes rounding only. Operands `(x, dt, A, B, C, state)`, and with `rope` two more, `cos` and `sin`
/// `[B,S,N]`: then `B` and `C` are given before RoPE and the op rotates them first, exactly as `Rope` would.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Ssd {
    pub heads: usize,
    /// P, the width of x per head.
    pub head_dim: usize,
    /// N, the width of B and C per head.
    pub state_dim: usize,
    pub chunk: usize,
    /// RoPE of `B` and `C` inside the op (the `ssd_rope` fusion).
    #[serde(default)]
    pub rope: bool,
}

impl Ssd {
    pub(crate) fn infer(&self, i: &[&Fact]) -> Result<SmallVec<[Fact; 1]>> {
        arity(i, if self.rope { 8 } else { 6 })?;
        if i[0].rank() != 4 {
            bail!("x {} must be [B,S,H,P]", i[0]);
        }
        let (b, s) = (i[0].shape[0].clone(), i[0].shape[1].clone());
        let (h, p, n) =
            (Dim::from(self.heads), Dim::from(self.head_dim), Dim::from(self.state_dim));
        want_shape(i[0], &[b.clone(), s.clone(), h.clone(), p.clone()], "x")?;
        want_shape(i[1], &[b.clone(), s.clone(), h.clone()], "dt")?;
        want_shape(i[2], std::slice::from_ref(&h), "A")?;
        want_shape(i[3], &[b.clone(), s.clone(), h.clone(), n.clone()], "B")?;
        want_shape(i[4], &[b.clone(), s.clone(), h.clone(), n.clone()], "C")?;
        want_shape(i[5], &[b.clone(), h, p, n.clone()], "state")?;
        if self.rope {
            want_shape(i[6], &[b.clone(), s.clone(), n.clone()], "cos")?;
            want_shape(i[7], &[b, s, n], "sin")?;
        }
        Ok(smallvec![i[0].clone(), i[5].clone()])
    }
}
