//! Dense matrix products on `gemm` (f32 accumulation), multi-threaded when the product is large.
//!
//! * [`linear`]: `y[r, o] = Σ_i x[r, i]·w[o, i] + bias[o]` with `x` `[rows, in]`, `w` `[out, in]`
//!   (the PyTorch `Linear` layout), optional `bias` `[out]`, and `y` `[rows, out]`.
//! * [`mask_linear`]: the dynamic mask values `exp(A·softplus(x Wᵀ + bias))` of a projection (the `dt` of
//!   [`crate::dynamic_mask`]'s keys).
//! * [`matmul`]: `c[i, j] = Σ_l a[i, l]·b[l, j]` with `a` `[m, k]`, `b` `[k, n]`, `c` `[m, n]`.

pub mod cpu;
pub mod cuda;
#[cfg(test)]
mod tests;

pub use cpu::{linear, mask_linear, matmul};

use crate::{check_len, Result};

/// Sizes of [`linear`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinearParams {
    /// Rows of `x` and `y`.
    pub rows: usize,
    /// Columns of `x` and of `w`.
    pub in_features: usize,
    /// Rows of `w`, columns of `y`, length of `bias`.
    pub out_features: usize,
}

impl LinearParams {
    /// Checks `x` `[rows, in]`, `w` `[out, in]` and `bias` `[out]` (lengths in elements).
    pub fn validate(&self, x: usize, w: usize, bias: Option<usize>) -> Result<()> {
        check_len("x", x, &[("rows", self.rows), ("in_features", self.in_features)])?;
        check_len(
            "w",
            w,
            &[("out_features", self.out_features), ("in_features", self.in_features)],
        )?;
        if let Some(bias) = bias {
            check_len("bias", bias, &[("out_features", self.out_features)])?;
        }
        check_len(
            "y",
            self.rows.wrapping_mul(self.out_features),
            &[("rows", self.rows), ("out", self.out_features)],
        )
    }
}

/// Sizes of [`matmul`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MatmulParams {
    /// Rows of `a` and `c`.
    pub m: usize,
    /// Columns of `a`, rows of `b`.
    pub k: usize,
    /// Columns of `b` and `c`.
    pub n: usize,
}

impl MatmulParams {
    /// Checks `a` `[m, k]` and `b` `[k, n]` (lengths in elements).
    pub fn validate(&self, a: usize, b: usize) -> Result<()> {
        check_len("a", a, &[("m", self.m), ("k", self.k)])?;
        check_len("b", b, &[("k", self.k), ("n", self.n)])?;
        check_len("c", self.m.wrapping_mul(self.n), &[("m", self.m), ("n", self.n)])
    }
}
