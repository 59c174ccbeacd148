//! CPU implementation of the logits top-k, parallel over rows.

use rayon::prelude::*;

use super::{key, LogitsTopKParams};
use crate::{min_items, Result};

/// The `(values, ids)` of each row's `k` largest logits, each `[rows, k]`, largest first.
pub fn logits_top_k(p: &LogitsTopKParams, logits: &[f32]) -> Result<(Vec<f32>, Vec<i64>)> {
    p.validate(logits.len())?;
    let (v, k) = (p.vocab, p.k);
    let mut values = vec![0.0; p.rows * k];
    let mut ids = vec![0; p.rows * k];
    if k == 0 {
        return Ok((values, ids));
    }
    values
        .par_chunks_mut(k)
        .zip(ids.par_chunks_mut(k))
        .enumerate()
        .with_min_len(min_items(v))
        .for_each(|(r, (values, ids))| {
            let row = &logits[r * v..][..v];
            let order = |a: &usize, b: &usize| key(row[*b]).cmp(&key(row[*a])).then(a.cmp(b));
            let mut idx: Vec<usize> = (0..v).collect();
            if k < v {
                idx.select_nth_unstable_by(k - 1, order);
                idx.truncate(k);
            }
            idx.sort_unstable_by(order);
            for (slot, &i) in idx.iter().enumerate() {
                values[slot] = row[i];
                ids[slot] = i as i64;
            }
        });
    Ok((values, ids))
}
