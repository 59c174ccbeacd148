//! CPU implementation of the dynamic-mask key values.

use rayon::prelude::*;

use super::KeyValuesParams;
use crate::act::softplus;
use crate::{min_items, Result};

/// `m[b, h, j] = exp(a[h]·softplus(dt[b, j, h]))`, returned as `[B, Hm, S]`.
pub fn key_values(p: &KeyValuesParams, dt: &[f32], a: &[f32]) -> Result<Vec<f32>> {
    p.validate(dt.len(), a.len())?;
    let mut m = vec![0.0; dt.len()];
    if m.is_empty() {
        return Ok(m);
    }
    m.par_chunks_mut(p.seq).enumerate().with_min_len(min_items(16 * p.seq)).for_each(
        |(bh, row)| {
            let (b, h) = (bh / p.heads, bh % p.heads);
            for (j, m) in row.iter_mut().enumerate() {
                *m = (a[h] * softplus(dt[(b * p.seq + j) * p.heads + h])).exp();
            }
        },
    );
    Ok(m)
}
