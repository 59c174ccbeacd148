//! CPU implementation of product-key routing, parallel over rows.

use rayon::prelude::*;

use super::PkTopKParams;
use crate::select::{product_top_k, top_k};
use crate::{dot, min_items, Result};

/// Selected `(scores, expert ids)`, each `[rows, He, k]`.
pub fn pk_topk(p: &PkTopKParams, q: &[f32], keys: &[f32]) -> Result<(Vec<f32>, Vec<i64>)> {
    p.validate(q.len(), keys.len())?;
    let per_row = p.heads * p.k;
    let mut scores = vec![0.0; p.rows * per_row];
    let mut ids = vec![0; p.rows * per_row];
    if per_row == 0 {
        return Ok((scores, ids));
    }
    let work = 2 * p.heads * p.num_keys * p.half;
    scores
        .par_chunks_mut(per_row)
        .zip(ids.par_chunks_mut(per_row))
        .enumerate()
        .with_min_len(min_items(work))
        .for_each(|(row, (scores, ids))| {
            let q = &q[row * 2 * p.heads * p.half..][..2 * p.heads * p.half];
            for h in 0..p.heads {
                let (sx, ix) = axis_top_k(p, q, keys, h, 0);
                let (sy, iy) = axis_top_k(p, q, keys, h, 1);
                for (slot, (sum, a, c)) in product_top_k(&sx, &sy, p.k).into_iter().enumerate() {
                    scores[h * p.k + slot] = sum;
                    ids[h * p.k + slot] = (ix[a] * p.num_keys + iy[c]) as i64;
                }
            }
        });
    Ok((scores, ids))
}

/// Top-`k` `(similarities, key indices)` of head `h` on `axis` (0 = x, 1 = y) for one row.
fn axis_top_k(
    p: &PkTopKParams,
    q: &[f32],
    keys: &[f32],
    h: usize,
    axis: usize,
) -> (Vec<f32>, Vec<usize>) {
    let q = &q[(axis * p.heads + h) * p.half..][..p.half];
    let sim: Vec<f32> = (0..p.num_keys)
        .map(|key| dot(q, &keys[((h * p.num_keys + key) * 2 + axis) * p.half..][..p.half]))
        .collect();
    let idx = top_k(&sim, p.k);
    (idx.iter().map(|&i| sim[i]).collect(), idx)
}
