//! CPU implementation of the rotary embedding.

use rayon::prelude::*;

use super::RopeParams;
use crate::{min_items, Result};

/// `inv_freq[i] = 1 / θ^{(2i)/dim}` for `i < ⌈dim/2⌉`, as
/// `1.0 / (theta ** (arange(0, dim, 2).float() / dim))` in PyTorch: the exponent is an `f32`
/// quotient, the power of `θ as f32` is rounded to `f32`, and the reciprocal is taken in `f32`.
pub fn inv_freq(theta: f64, dim: usize) -> Vec<f32> {
    let base = f64::from(theta as f32);
    (0..dim)
        .step_by(2)
        .map(|i| {
            let exponent = i as f32 / dim as f32;
            1.0 / base.powf(f64::from(exponent)) as f32
        })
        .collect()
}

/// Dynamic-NTK base `θ·((factor·seq_len/max_position) − (factor − 1))^{dim/(dim−2)}` in `f64`.
///
/// `seq_len` is `max(position_ids) + 1`; callers apply it only when it exceeds the length the
/// current frequencies were computed for (see MODEL.md §2).
pub fn dynamic_ntk_theta(
    theta: f64,
    factor: f64,
    seq_len: usize,
    max_position: usize,
    dim: usize,
) -> f64 {
    let growth = factor * seq_len as f64 / max_position as f64 - (factor - 1.0);
    theta * growth.powf(dim as f64 / (dim as f64 - 2.0))
}

/// `(cos, sin)` tables `[positions.len(), 2·inv_freq.len()]` of `emb = concat(freqs, freqs)`,
/// `freqs[n, i] = (pos[n] as f32)·inv_freq[i]` in `f32`; `cos`/`sin` are correctly rounded.
pub fn tables(positions: &[i64], inv_freq: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let half = inv_freq.len();
    let dim = 2 * half;
    let mut cos = vec![0.0; positions.len() * dim];
    let mut sin = vec![0.0; positions.len() * dim];
    if dim == 0 {
        return (cos, sin);
    }
    cos.par_chunks_mut(dim)
        .zip(sin.par_chunks_mut(dim))
        .zip(positions)
        .with_min_len(min_items(8 * dim))
        .for_each(|((cos, sin), &pos)| {
            for (i, &f) in inv_freq.iter().enumerate() {
                let (s, c) = f64::from(pos as f32 * f).sin_cos();
                (cos[i], cos[half + i]) = (c as f32, c as f32);
                (sin[i], sin[half + i]) = (s as f32, s as f32);
            }
        });
    (cos, sin)
}

/// `x' = x ⊙ cos + rotate_half(x) ⊙ sin` for `x` `[rows, heads, dim]`, `cos`/`sin` `[rows, dim]`, in f32.
pub fn apply(p: &RopeParams, x: &[f32], cos: &[f32], sin: &[f32]) -> Result<Vec<f32>> {
    apply_rounded::<f32>(p, x, cos, sin)
}

/// [`apply`] as PyTorch computes it in the storage type `T`: each product rounded to `T`, then the sum (the values of
/// `x`, `cos` and `sin` are taken as given, normally already `T` values); plain f32 arithmetic for `T = f32`. The
/// reference of the CUDA kernels that rotate in `T` (`rope_apply`, the fused SSD decode step).
pub fn apply_rounded<T: crate::cuda::Elem>(
    p: &RopeParams,
    x: &[f32],
    cos: &[f32],
    sin: &[f32],
) -> Result<Vec<f32>> {
    p.validate(x.len(), cos.len(), sin.len())?;
    let mut y = vec![0.0; x.len()];
    if y.is_empty() {
        return Ok(y);
    }
    let r = |v: f32| T::from_f32(v).to_f32();
    let (half, row) = (p.dim / 2, p.heads * p.dim);
    y.par_chunks_mut(row)
        .zip(x.par_chunks(row))
        .zip(cos.par_chunks(p.dim).zip(sin.par_chunks(p.dim)))
        .with_min_len(min_items(2 * row))
        .for_each(|((y, x), (cos, sin))| {
            for (y, x) in y.chunks_exact_mut(p.dim).zip(x.chunks_exact(p.dim)) {
                for i in 0..half {
                    let (a, b) = (x[i], x[half + i]);
                    y[i] = r(r(a * cos[i]) + r(-b * sin[i]));
                    y[half + i] = r(r(b * cos[half + i]) + r(a * sin[half + i]));
                }
            }
        });
    Ok(y)
}
