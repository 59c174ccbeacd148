//! Product-key expert routing of the Cheems CDMoE (MODEL.md §3.2, steps 1–5).
//!
//! Per row and expert head `h`, with queries `q[row]` laid out `[2, He, half]` and
//! `keys` `[He, nk, 2, half]`:
//! `sim[a][kk] = Σ_n q[row, a, h, n]·keys[h, kk, a, n]` for the axes `a ∈ {x, y}`;
//! `(sx, ix)`, `(sy, iy)` = top-`k` of each axis, largest first;
//! candidates `sx[i] + sy[j]` with expert id `ix[i]·nk + iy[j]`; the result is the top-`k`
//! candidates, largest first. Ties go to the lower index on each axis and to the lower
//! candidate position `i·k + j` in the final selection. Outputs are `[rows, He, k]`.
//! The dot products accumulate in `f64`; the candidate sums are `f32`.

pub mod cpu;
pub mod cuda;
#[cfg(test)]
mod tests;

pub use cpu::pk_topk;

use crate::{check_len, KernelError, Result};

/// Sizes of [`pk_topk`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PkTopKParams {
    /// Tokens.
    pub rows: usize,
    /// Expert heads (`He`).
    pub heads: usize,
    /// Keys per axis (`nk`); expert ids are below `nk²`.
    pub num_keys: usize,
    /// Query length per axis and head (`R/2`).
    pub half: usize,
    /// Experts selected per head (`Kₑ ≤ nk`), also the per-axis top-k.
    pub k: usize,
}

impl PkTopKParams {
    /// Checks `k ≤ nk`, `q` `[rows, 2, He, half]` and `keys` `[He, nk, 2, half]`.
    pub fn validate(&self, q: usize, keys: usize) -> Result<()> {
        if self.k > self.num_keys {
            return Err(KernelError::BadParams(format!(
                "`k` {} exceeds `num_keys` {}",
                self.k, self.num_keys
            )));
        }
        let (h, half) = (("heads", self.heads), ("half", self.half));
        check_len("q", q, &[("rows", self.rows), ("2", 2), h, half])?;
        check_len("keys", keys, &[h, ("num_keys", self.num_keys), ("2", 2), half])?;
        check_len(
            "ids",
            self.rows.wrapping_mul(self.heads).wrapping_mul(self.k),
            &[("rows", self.rows), h, ("k", self.k)],
        )
    }
}
