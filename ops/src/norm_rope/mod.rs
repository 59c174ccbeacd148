//! RMSNorm then RoPE of attention heads (the q/k prologue of the masked attention).
//!
//! `y = rope(rms_norm(x, w), cos, sin)` per head vector: `x`, `y` `[rows, heads, dim]`, `w` `[dim]` shared by the
//! heads, `cos`/`sin` `[rows, dim]` shared by a row's heads; the norm and the rotation as [`crate::rms_norm`] and
//! [`crate::rope`] state them, the normalised head rounded to the storage type before it is rotated.

pub mod cpu;
pub mod cuda;
#[cfg(test)]
mod tests;

pub use cpu::norm_rope;

use crate::rope::RopeParams;
use crate::{check_len, KernelError, Result};

/// Sizes and epsilon of [`norm_rope`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NormRopeParams {
    /// Rows of `x` (tokens), each with its own `cos`/`sin` row.
    pub rows: usize,
    /// Heads per row, normalised and rotated independently.
    pub heads: usize,
    /// Head dimension: the normalised and rotated axis (even).
    pub dim: usize,
    /// Added to the mean of squares before the square root.
    pub eps: f32,
}

impl NormRopeParams {
    /// The rotation's sizes.
    pub fn rope(&self) -> RopeParams {
        RopeParams { rows: self.rows, heads: self.heads, dim: self.dim }
    }

    /// Checks that `dim` is even, `x` is `[rows, heads, dim]`, `w` `[dim]` and `cos`, `sin` `[rows, dim]`.
    pub fn validate(&self, x: usize, w: usize, cos: usize, sin: usize) -> Result<()> {
        if self.dim % 2 != 0 {
            return Err(KernelError::BadParams(format!("norm_rope `dim` {} is odd", self.dim)));
        }
        check_len("w", w, &[("dim", self.dim)])?;
        self.rope().validate(x, cos, sin)
    }
}
