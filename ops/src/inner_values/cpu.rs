//! CPU implementation of the inner values, parallel over rows.

use rayon::prelude::*;

use super::InnerValuesParams;
use crate::select::top_k;
use crate::{min_items, Result};

/// `out[r] = x[r] ⊙ Σ_h Σ_{n ∈ top-k(sim_h)} v_embed[n]`.
pub fn inner_values(
    p: &InnerValuesParams,
    x: &[f32],
    vq: &[f32],
    v_keys: &[f32],
    v_embed: &[f32],
) -> Result<Vec<f32>> {
    p.validate(x.len(), vq.len(), v_keys.len(), v_embed.len())?;
    let (dim, nv, rv) = (p.dim, p.num_values, p.retrieval);
    let mut out = vec![0.0; x.len()];
    if dim == 0 {
        return Ok(out);
    }
    let work = p.heads * (rv * nv + p.k * dim);
    out.par_chunks_mut(dim)
        .zip(x.par_chunks(dim))
        .enumerate()
        .with_min_len(min_items(work))
        .for_each(|(row, (out, x))| {
            let mut acc = vec![0.0f64; dim];
            let mut sim = vec![0.0f64; nv];
            for h in 0..p.heads {
                sim.iter_mut().for_each(|s| *s = 0.0);
                let query = &vq[(row * p.heads + h) * rv..][..rv];
                for (&qi, keys) in
                    query.iter().zip(v_keys[h * rv * nv..][..rv * nv].chunks_exact(nv))
                {
                    for (s, &kv) in sim.iter_mut().zip(keys) {
                        *s += f64::from(qi) * f64::from(kv);
                    }
                }
                let sim32: Vec<f32> = sim.iter().map(|&s| s as f32).collect();
                for n in top_k(&sim32, p.k) {
                    for (a, &e) in acc.iter_mut().zip(&v_embed[n * dim..][..dim]) {
                        *a += f64::from(e);
                    }
                }
            }
            for ((o, &x), a) in out.iter_mut().zip(x).zip(acc) {
                *o = x * a as f32;
            }
        });
    Ok(out)
}
