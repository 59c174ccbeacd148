//! Top-k of the LM head's logits: the candidates a sampler draws from, `k = 1` being the argmax.
//!
//! For each of `rows` rows of `vocab` logits, the `k` largest as `(value, id)`, largest first, in the order of
//! [`key`]: larger values first, ±0 equal, NaN below every number (a NaN logit comes only after every number of
//! its row), and on equal keys the lower id first. Only the `k` pairs leave the device, not the row.

pub mod cpu;
pub mod cuda;
#[cfg(test)]
mod tests;

pub use cpu::logits_top_k;

use crate::{check_len, KernelError, Result};

/// Sizes of [`logits_top_k`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogitsTopKParams {
    /// Rows of logits (sequences, or positions).
    pub rows: usize,
    /// Logits a row (the vocabulary).
    pub vocab: usize,
    /// Candidates kept a row (`k ≤ vocab`).
    pub k: usize,
}

impl LogitsTopKParams {
    /// Checks `k ≤ vocab`, `vocab` below 2³¹ and `logits` `[rows, vocab]`.
    pub fn validate(&self, logits: usize) -> Result<()> {
        if self.k > self.vocab {
            return Err(KernelError::BadParams(format!(
                "`k` {} exceeds the vocabulary of {}",
                self.k, self.vocab
            )));
        }
        if i32::try_from(self.vocab).is_err() {
            return Err(KernelError::BadParams(format!(
                "a vocabulary of {} exceeds 2^31 - 1",
                self.vocab
            )));
        }
        check_len("logits", logits, &[("rows", self.rows), ("vocab", self.vocab)])
    }
}

/// The order key of a logit, increasing with the rank order: NaN → 0, ±0 → 2³¹, otherwise the bits with the sign
/// bit set for a positive value and every bit flipped for a negative one (so −∞ → 0x007f_ffff > 0).
pub fn key(v: f32) -> u32 {
    if v.is_nan() {
        return 0;
    }
    let b = if v == 0.0 { 0 } else { v.to_bits() };
    if b & 0x8000_0000 != 0 {
        !b
    } else {
        b | 0x8000_0000
    }
}
