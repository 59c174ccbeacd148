//! RMS normalisation over the last axis.
//!
//! `y[r, c] = w[c] · (x[r, c] · 1/√(mean_c(x[r, :]²) + eps))` with `x`, `y` `[rows, cols]` and
//! `w` `[cols]`. The mean of squares is accumulated in `f64` and rounded to `f32`; the rest is
//! `f32` in PyTorch's order (scale `x` first, then multiply by `w`).

pub mod cpu;
pub mod cuda;
#[cfg(test)]
mod tests;

pub use cpu::rms_norm;

use crate::{check_len, Result};

/// Sizes and epsilon of [`rms_norm`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RmsNormParams {
    /// Number of rows normalised independently.
    pub rows: usize,
    /// Length of each row (the normalised axis).
    pub cols: usize,
    /// Added to the mean of squares before the square root.
    pub eps: f32,
}

impl RmsNormParams {
    /// Checks `x` `[rows, cols]` and `w` `[cols]` (lengths in elements).
    pub fn validate(&self, x: usize, w: usize) -> Result<()> {
        check_len("x", x, &[("rows", self.rows), ("cols", self.cols)])?;
        check_len("w", w, &[("cols", self.cols)])
    }
}
