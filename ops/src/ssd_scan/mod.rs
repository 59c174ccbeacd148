//! SSD (state-space duality) recurrence of the Cheems SSD layer, for prefill and decode.
//!
//! Per batch `b` and head `h`, sequentially over `t`, with state `S ∈ R^{P×N}` starting at
//! `state0[b, h]`:
//! `Δ = softplus(dt[b,t,h])`, `S[p,n] ← S[p,n]·exp(Δ·A[h]) + (Δ·x[b,t,h,p])·B[b,t,h,n]`,
//! `y[b,t,h,p] = Σ_n S[p,n]·C[b,t,h,n]`.
//! `A` is used as stored (positive values make the state grow). Layouts: `x` `[B,S,H,P]`,
//! `dt` `[B,S,H]` (before softplus), `A` `[H]`, `B`/`C` `[B,S,H,N]`, states `[B,H,P,N]`.
//! The state update is `f32`; the output dot accumulates in `f64`.

pub mod cpu;
pub mod cuda;
#[cfg(test)]
mod tests;

pub use cpu::ssd_scan;

use crate::{check_len, Result};

/// Sizes of [`ssd_scan`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SsdScanParams {
    /// Sequences in the batch (`B`).
    pub batch: usize,
    /// Tokens per sequence (`S`; 1 for a decode step).
    pub seq: usize,
    /// Heads (`H`), each with its own state, `A` and `dt`.
    pub heads: usize,
    /// Head dimension (`P`): rows of the state.
    pub head_dim: usize,
    /// State dimension (`N`): columns of the state, length of `B` and `C` per head.
    pub state_dim: usize,
}

impl SsdScanParams {
    /// Checks every buffer of [`ssd_scan`] against the sizes (lengths in elements).
    pub fn validate(
        &self,
        x: usize,
        dt: usize,
        a: usize,
        b: usize,
        c: usize,
        state0: usize,
    ) -> Result<()> {
        let (bs, s, h) = (("batch", self.batch), ("seq", self.seq), ("heads", self.heads));
        let (p, n) = (("head_dim", self.head_dim), ("state_dim", self.state_dim));
        check_len("x", x, &[bs, s, h, p])?;
        check_len("dt", dt, &[bs, s, h])?;
        check_len("a", a, &[h])?;
        check_len("b", b, &[bs, s, h, n])?;
        check_len("c", c, &[bs, s, h, n])?;
        check_len("state0", state0, &[bs, h, p, n])
    }
}
