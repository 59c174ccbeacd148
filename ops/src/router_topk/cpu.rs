//! CPU implementation of the Doge router top-k, parallel over tokens.

use rayon::prelude::*;

use super::RouterTopKParams;
use crate::select::{product_top_k, top_k};
use crate::{min_items, Result};

/// Selected `(scores, expert ids)`, each `[N, 1, top_k]`.
///
/// Only the first `top_k` entries of each sorted row can contribute, so the rows are partially
/// sorted; the result equals the full sort's.
pub fn router_topk(p: &RouterTopKParams, logits: &[f32]) -> Result<(Vec<f32>, Vec<i64>)> {
    p.validate(logits.len())?;
    let (n, nk, k) = (p.tokens, p.num_keys, p.top_k);
    let mut scores = vec![0.0; n * k];
    let mut ids = vec![0; n * k];
    if k == 0 {
        return Ok((scores, ids));
    }
    scores
        .par_chunks_mut(k)
        .zip(ids.par_chunks_mut(k))
        .enumerate()
        .with_min_len(min_items(4 * nk))
        .for_each(|(row, (scores, ids))| {
            let x = &logits[row * nk..][..nk];
            let y = &logits[(n + row) * nk..][..nk];
            let (ix, iy) = (top_k(x, k.min(nk)), top_k(y, k.min(nk)));
            let sx: Vec<f32> = ix.iter().map(|&i| x[i]).collect();
            let sy: Vec<f32> = iy.iter().map(|&i| y[i]).collect();
            for (slot, (sum, a, c)) in product_top_k(&sx, &sy, k).into_iter().enumerate() {
                scores[slot] = sum;
                ids[slot] = (ix[a] * nk + iy[c]) as i64;
            }
        });
    Ok((scores, ids))
}
