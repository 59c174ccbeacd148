//! CPU implementation of the SSD recurrence, parallel over (batch, head).

use rayon::prelude::*;

use super::SsdScanParams;
use crate::act::softplus;
use crate::{dot, min_items, Result};

/// The per-token inputs of the scan.
struct Inputs<'a> {
    x: &'a [f32],
    dt: &'a [f32],
    a: &'a [f32],
    b: &'a [f32],
    c: &'a [f32],
}

/// Runs the recurrence over `seq` tokens from `state0`; returns `(y [B,S,H,P], state [B,H,P,N])`.
pub fn ssd_scan(
    p: &SsdScanParams,
    x: &[f32],
    dt: &[f32],
    a: &[f32],
    b: &[f32],
    c: &[f32],
    state0: &[f32],
) -> Result<(Vec<f32>, Vec<f32>)> {
    p.validate(x.len(), dt.len(), a.len(), b.len(), c.len(), state0.len())?;
    let mut state = state0.to_vec();
    let mut y = vec![0.0; x.len()];
    let block = p.head_dim * p.state_dim;
    if block == 0 {
        return Ok((y, state));
    }
    let inputs = Inputs { x, dt, a, b, c };
    let per_head: Vec<Vec<f32>> = state
        .par_chunks_mut(block)
        .enumerate()
        .with_min_len(min_items(p.seq * block))
        .map(|(bh, s)| scan_head(p, &inputs, bh, s))
        .collect();
    for (bh, head_y) in per_head.iter().enumerate() {
        let (batch, h) = (bh / p.heads, bh % p.heads);
        for (t, yt) in head_y.chunks_exact(p.head_dim).enumerate() {
            let at = ((batch * p.seq + t) * p.heads + h) * p.head_dim;
            y[at..at + p.head_dim].copy_from_slice(yt);
        }
    }
    Ok((y, state))
}

/// Scans head `bh % H` of sequence `bh / H`, updating its state `s` `[P, N]`; returns `y` `[S, P]`.
fn scan_head(p: &SsdScanParams, inputs: &Inputs, bh: usize, s: &mut [f32]) -> Vec<f32> {
    let (batch, h) = (bh / p.heads, bh % p.heads);
    let (hp, n) = (p.head_dim, p.state_dim);
    let mut y = vec![0.0; p.seq * hp];
    for (t, yt) in y.chunks_exact_mut(hp).enumerate() {
        let token = (batch * p.seq + t) * p.heads + h;
        let delta = softplus(inputs.dt[token]);
        let decay = (delta * inputs.a[h]).exp();
        let xt = &inputs.x[token * hp..][..hp];
        let (bt, ct) = (&inputs.b[token * n..][..n], &inputs.c[token * n..][..n]);
        for ((row, &xp), yp) in s.chunks_exact_mut(n).zip(xt).zip(yt) {
            let dx = delta * xp;
            for (sv, &bv) in row.iter_mut().zip(bt) {
                *sv = *sv * decay + dx * bv;
            }
            *yp = dot(row, ct);
        }
    }
    y
}
