//! CPU implementation of the expert mixture, parallel over rows.

use rayon::prelude::*;

use super::{ExpertAct, ExpertMixParams};
use crate::act::Act;
use crate::{dot, min_items, Result};

/// `out[r] = Σ_h Σ_k w[r,h,k]·up[ids[r,h,k]]`, see the module documentation for `w`.
#[allow(clippy::too_many_arguments)]
pub fn expert_mix(
    p: &ExpertMixParams,
    act: Act,
    order: ExpertAct,
    norm_topk: bool,
    x: &[f32],
    scores: &[f32],
    ids: &[i64],
    down: &[f32],
    up: &[f32],
) -> Result<Vec<f32>> {
    p.validate(x.len(), scores.len(), ids, down.len(), up.len())?;
    let dim = p.dim;
    let mut out = vec![0.0; x.len()];
    if dim == 0 {
        return Ok(out);
    }
    out.par_chunks_mut(dim)
        .zip(x.par_chunks(dim))
        .enumerate()
        .with_min_len(min_items(2 * p.heads * p.k * dim))
        .for_each(|(row, (out, x))| {
            let mut acc = vec![0.0f64; dim];
            for h in 0..p.heads {
                let at = (row * p.heads + h) * p.k;
                let probs = routing_weights(&scores[at..at + p.k], norm_topk);
                for (&id, &prob) in ids[at..at + p.k].iter().zip(&probs) {
                    let e = id as usize * dim;
                    let d = dot(x, &down[e..e + dim]);
                    let w = f64::from(match order {
                        ExpertAct::BeforeSoftmax => act.apply(d) * prob,
                        ExpertAct::AfterSoftmax => act.apply(d * prob),
                    });
                    for (a, &u) in acc.iter_mut().zip(&up[e..e + dim]) {
                        *a += w * f64::from(u);
                    }
                }
            }
            for (o, a) in out.iter_mut().zip(acc) {
                *o = a as f32;
            }
        });
    Ok(out)
}

/// `softmax(scores)` in `f32` (sum in `f64`), then divided by its sum when `norm_topk`.
fn routing_weights(scores: &[f32], norm_topk: bool) -> Vec<f32> {
    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = scores.iter().map(|&s| (s - max).exp()).collect();
    let sum: f64 = exps.iter().map(|&e| f64::from(e)).sum();
    let mut probs: Vec<f32> = exps.iter().map(|&e| (f64::from(e) / sum) as f32).collect();
    if norm_topk {
        let total: f64 = probs.iter().map(|&p| f64::from(p)).sum();
        probs.iter_mut().for_each(|p| *p = (f64::from(*p) / total) as f32);
    }
    probs
}
