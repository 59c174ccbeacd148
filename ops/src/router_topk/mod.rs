//! Expert routing of the HF Doge CDMoE router (MODEL.md §5.2, step 7).
//!
//! The router logits `[N, 2·nk]` (N = B·T tokens) are reinterpreted as `[2, N, nk]` over the
//! contiguous buffer, as the reference's `view(2, B*T, nk)` does: row `ρ` pairs the x-logits
//! `flat[ρ·nk .. (ρ+1)·nk]` with the y-logits `flat[(N+ρ)·nk .. (N+ρ+1)·nk]`, which mixes tokens
//! when `N > 1` (kept on purpose to match the reference). Each row is sorted descending
//! (`(sx, ix)`, `(sy, iy)`), the `nk²` candidates `sx[a] + sy[c]` with id `ix[a]·nk + iy[c]` are
//! taken in row-major `(a, c)` order, and the `top_k` largest are returned, largest first.
//! Ties go to the lower index in each row sort and to the earlier candidate. Sums are `f32`.

pub mod cpu;
pub mod cuda;
#[cfg(test)]
mod tests;

pub use cpu::router_topk;

use crate::{check_len, KernelError, Result};

/// Sizes of [`router_topk`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouterTopKParams {
    /// Tokens (`N = B·T`).
    pub tokens: usize,
    /// Keys per axis (`nk`); expert ids are below `nk²`.
    pub num_keys: usize,
    /// Experts selected per token (`top_k ≤ nk²`).
    pub top_k: usize,
}

impl RouterTopKParams {
    /// Checks `top_k ≤ nk²` and `logits` `[N, 2·nk]`.
    pub fn validate(&self, logits: usize) -> Result<()> {
        let candidates = self.num_keys.checked_mul(self.num_keys);
        if candidates.is_none_or(|c| self.top_k > c) {
            return Err(KernelError::BadParams(format!(
                "`top_k` {} exceeds `num_keys`² = {}²",
                self.top_k, self.num_keys
            )));
        }
        check_len(
            "logits",
            logits,
            &[("tokens", self.tokens), ("2", 2), ("num_keys", self.num_keys)],
        )?;
        check_len(
            "ids",
            self.tokens.wrapping_mul(self.top_k),
            &[("tokens", self.tokens), ("top_k", self.top_k)],
        )
    }
}
