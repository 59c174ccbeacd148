//! Retrieved inner values of the Doge-IFA attention (MODEL.md §6.1).
//!
//! Per row `r` and value head `h`: `sim[n] = Σ_i vq[r, h·Rv + i]·v_keys[h, i, n]`;
//! `idx_h` = the `k` largest `sim` (the lower index on ties);
//! `out[r] = x[r] ⊙ Σ_h Σ_{n ∈ idx_h} v_embed[n]`. Layouts: `x`, `out` `[rows, dim]`,
//! `vq` `[rows, Hv·Rv]`, `v_keys` `[Hv, Rv, Nv]`, `v_embed` `[Nv, dim]`. The similarity and the
//! sum of embeddings accumulate in `f64`.

pub mod cpu;
pub mod cuda;
#[cfg(test)]
mod tests;

pub use cpu::inner_values;

use crate::{check_len, KernelError, Result};

/// Sizes of [`inner_values`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InnerValuesParams {
    /// Tokens.
    pub rows: usize,
    /// Value heads (`Hv`).
    pub heads: usize,
    /// Retrieval query length per head (`Rv`).
    pub retrieval: usize,
    /// Value embeddings (`Nv`).
    pub num_values: usize,
    /// Values retrieved per head (`k ≤ Nv`).
    pub k: usize,
    /// Model dimension.
    pub dim: usize,
}

impl InnerValuesParams {
    /// Checks `k ≤ Nv`, `x` `[rows, dim]`, `vq` `[rows, Hv·Rv]`, `v_keys` `[Hv, Rv, Nv]` and
    /// `v_embed` `[Nv, dim]`.
    pub fn validate(&self, x: usize, vq: usize, v_keys: usize, v_embed: usize) -> Result<()> {
        if self.k > self.num_values {
            return Err(KernelError::BadParams(format!(
                "`k` {} exceeds `num_values` {}",
                self.k, self.num_values
            )));
        }
        let (r, h, rv, nv, dim) = (
            ("rows", self.rows),
            ("heads", self.heads),
            ("retrieval", self.retrieval),
            ("num_values", self.num_values),
            ("dim", self.dim),
        );
        check_len("x", x, &[r, dim])?;
        check_len("vq", vq, &[r, h, rv])?;
        check_len("v_keys", v_keys, &[h, rv, nv])?;
        check_len("v_embed", v_embed, &[nv, dim])
    }
}
