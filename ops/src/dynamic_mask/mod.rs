//! Per-key values of the dynamic mask: `m[b, h, j] = exp(A[h]·softplus(dt[b, j, h]))` in `f32`.
//!
//! `dt` is `[B, S, Hm]` (the `dt_proj` output per key), `A` is `[Hm]`, and `m` is `[B, Hm, S]`
//! (transposed, one contiguous row of keys per head), as `masked_attention` takes it.

pub mod cpu;
pub mod cuda;
#[cfg(test)]
mod tests;

pub use cpu::key_values;

use crate::{check_len, Result};

/// Sizes of [`key_values`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyValuesParams {
    /// Sequences in the batch (`B`).
    pub batch: usize,
    /// Keys per sequence (`S`).
    pub seq: usize,
    /// Mask heads (`Hm`): query heads or KV heads depending on the model.
    pub heads: usize,
}

impl KeyValuesParams {
    /// Checks `dt` `[B, S, Hm]` and `a` `[Hm]` (lengths in elements).
    pub fn validate(&self, dt: usize, a: usize) -> Result<()> {
        check_len("dt", dt, &[("batch", self.batch), ("seq", self.seq), ("heads", self.heads)])?;
        check_len("a", a, &[("heads", self.heads)])
    }
}
