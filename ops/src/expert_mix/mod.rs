//! Single-neuron expert mixture of the CDMoE (MODEL.md §3.2 steps 6–7, §5.2 step 7, §6.1).
//!
//! Per row `r`, head `h` and selected slot `k` with expert `e = ids[r,h,k]`:
//! `p = softmax_k(scores[r,h,:])` (`f32`), divided by `Σ_k p` if `norm_topk`;
//! `d = x[r]·down[e]`; `w = act(d)·p_k` (`BeforeSoftmax`) or `act(d·p_k)` (`AfterSoftmax`);
//! `out[r] = Σ_h Σ_k w·up[e]`. Layouts: `x`, `out` `[rows, dim]`; `scores`, `ids`
//! `[rows, heads, k]`; `down`, `up` `[E, dim]`. Dots and the output sum accumulate in `f64`.

pub mod cpu;
pub mod cuda;
#[cfg(test)]
mod tests;

pub use cpu::expert_mix;

use crate::{check_len, KernelError, Result};

/// Where the activation sits relative to the routing weight.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ExpertAct {
    /// `act(x·down[e])·p` (Cheems, HF Doge).
    BeforeSoftmax,
    /// `act(x·down[e]·p)` (Doge-IFA).
    AfterSoftmax,
}

/// Sizes of [`expert_mix`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExpertMixParams {
    /// Tokens.
    pub rows: usize,
    /// Expert heads, each with its own softmax over its `k` scores.
    pub heads: usize,
    /// Experts selected per head.
    pub k: usize,
    /// Model dimension (length of `x` rows and of the expert vectors).
    pub dim: usize,
    /// Rows of `down` and `up` (`E`); ids must lie in `0..E`.
    pub num_experts: usize,
}

impl ExpertMixParams {
    /// Checks `x` `[rows, dim]`, `scores` and `ids` `[rows, heads, k]`, `down` and `up`
    /// `[E, dim]`, and that every id lies in `0..E`.
    pub fn validate(
        &self,
        x: usize,
        scores: usize,
        ids: &[i64],
        down: usize,
        up: usize,
    ) -> Result<()> {
        let (r, dim, e) =
            (("rows", self.rows), ("dim", self.dim), ("num_experts", self.num_experts));
        let rhk = [r, ("heads", self.heads), ("k", self.k)];
        check_len("x", x, &[r, dim])?;
        check_len("scores", scores, &rhk)?;
        check_len("ids", ids.len(), &rhk)?;
        check_len("down", down, &[e, dim])?;
        check_len("up", up, &[e, dim])?;
        match ids.iter().position(|&id| !usize::try_from(id).is_ok_and(|id| id < self.num_experts))
        {
            Some(n) => Err(KernelError::BadParams(format!(
                "`ids[{n}]` = {} is outside the {} experts",
                ids[n], self.num_experts
            ))),
            None => Ok(()),
        }
    }
}
