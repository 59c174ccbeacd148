//! Rotary position embedding (non-interleaved, "rotate_half").
//!
//! * [`inv_freq`]: `inv_freq[i] = 1 / θ^{2i/dim}`, `i < dim/2`, in `f32` as PyTorch computes it.
//! * [`dynamic_ntk_theta`]: `θ' = θ·((f·L/M) − (f − 1))^{dim/(dim−2)}` (dynamic NTK scaling).
//! * [`tables`]: `freqs[n, i] = pos[n]·inv_freq[i]` (f32), `emb = concat(freqs, freqs)`,
//!   `cos = cos(emb)`, `sin = sin(emb)`, each `[N, dim]`.
//! * [`apply`]: `x' = x ⊙ cos + rotate_half(x) ⊙ sin` with
//!   `rotate_half(x) = concat(−x[dim/2:], x[:dim/2])`, on `x` `[rows, heads, dim]` with one
//!   `cos`/`sin` row per `x` row, shared by its heads; [`apply_rounded`] the same in a storage type's rounding.

pub mod cpu;
pub mod cuda;
#[cfg(test)]
mod tests;

pub use cpu::{apply, apply_rounded, dynamic_ntk_theta, inv_freq, tables};

use crate::{check_len, KernelError, Result};

/// Sizes of [`apply`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RopeParams {
    /// Rows of `x` (tokens), each with its own `cos`/`sin` row.
    pub rows: usize,
    /// Heads per row, rotated with the same `cos`/`sin` row.
    pub heads: usize,
    /// Rotated head dimension (even).
    pub dim: usize,
}

impl RopeParams {
    /// Checks that `dim` is even, `x` is `[rows, heads, dim]` and `cos`, `sin` are `[rows, dim]`.
    pub fn validate(&self, x: usize, cos: usize, sin: usize) -> Result<()> {
        if self.dim % 2 != 0 {
            return Err(KernelError::BadParams(format!("rope `dim` {} is odd", self.dim)));
        }
        check_len("x", x, &[("rows", self.rows), ("heads", self.heads), ("dim", self.dim)])?;
        check_len("cos", cos, &[("rows", self.rows), ("dim", self.dim)])?;
        check_len("sin", sin, &[("rows", self.rows), ("dim", self.dim)])
    }

    /// Checks that the rows are sequences of `seq` tokens that fit a cache `[B, heads, capacity, dim]` of `cache`
    /// elements, with a position (`pos` elements) to write them at: the rows of the `_at` kernels.
    pub fn validate_cache(
        &self,
        seq: usize,
        capacity: usize,
        pos: usize,
        cache: usize,
    ) -> Result<()> {
        if seq == 0 || self.rows % seq != 0 || seq > capacity || pos == 0 {
            return Err(KernelError::BadParams(format!(
                "{} rows are not sequences of {seq} tokens, a cache of {capacity} slots has no room for them, or \
                 the position is missing",
                self.rows
            )));
        }
        let shape = [
            ("batch", self.rows / seq),
            ("heads", self.heads),
            ("capacity", capacity),
            ("dim", self.dim),
        ];
        check_len("cache", cache, &shape)
    }
}
