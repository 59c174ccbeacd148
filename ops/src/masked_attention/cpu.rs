//! CPU implementation of masked attention: per (batch, head, block of queries), one `gemm` for
//! the scores, the bias and softmax row by row, and one `gemm` for the weighted values.

use gemm::{gemm, Parallelism};
use rayon::prelude::*;

use super::{AttentionParams, MaskMode};
use crate::select::desc;
use crate::{min_items, Result};

/// The masked-out bias.
const MIN: f32 = f32::MIN;

/// Queries handled together by one task.
const QUERY_BLOCK: usize = 32;

/// Attention output `[B, S, H, Dh]`; see the module documentation for the masks.
#[allow(clippy::too_many_arguments)]
pub fn masked_attention(
    p: &AttentionParams,
    mode: MaskMode,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    key_m: Option<&[f32]>,
    learned: Option<&[f32]>,
    attn_mask: &[i64],
) -> Result<Vec<f32>> {
    let len = |b: Option<&[f32]>| b.map(<[f32]>::len);
    p.validate(mode, q.len(), k.len(), v.len(), len(key_m), len(learned), attn_mask.len())?;
    let mut out = vec![0.0; q.len()];
    if out.is_empty() {
        return Ok(out);
    }
    let key_bias = key_bias(p, mode, key_m, learned);
    let blocks = p.q_len.div_ceil(QUERY_BLOCK);
    let tiles: Vec<Vec<f32>> = (0..p.batch * p.heads * blocks)
        .into_par_iter()
        .with_min_len(min_items(QUERY_BLOCK * p.kv_len * p.head_dim))
        .map(|task| {
            let (bh, block) = (task / blocks, task % blocks);
            let rows = QUERY_BLOCK * block..(QUERY_BLOCK * (block + 1)).min(p.q_len);
            attend(p, mode, bh, rows, q, k, v, &key_bias[bh * p.kv_len..][..p.kv_len], attn_mask)
        })
        .collect();
    let dh = p.head_dim;
    for (task, tile) in tiles.iter().enumerate() {
        let (bh, block) = (task / blocks, task % blocks);
        let (b, h) = (bh / p.heads, bh % p.heads);
        for (r, row) in tile.chunks_exact(dh).enumerate() {
            let i = QUERY_BLOCK * block + r;
            out[((b * p.q_len + i) * p.heads + h) * dh..][..dh].copy_from_slice(row);
        }
    }
    Ok(out)
}

/// The part of the bias that depends only on the key, `[B, H, T]`: 0 or `MIN` for the boolean
/// modes, `m` after the ratio threshold for `Additive`.
fn key_bias(
    p: &AttentionParams,
    mode: MaskMode,
    key_m: Option<&[f32]>,
    learned: Option<&[f32]>,
) -> Vec<f32> {
    let t = p.kv_len;
    let mut bias = vec![0.0; p.batch * p.heads * t];
    bias.par_chunks_mut(t).enumerate().with_min_len(min_items(t)).for_each(|(bh, row)| {
        let (b, h) = (bh / p.heads, bh % p.heads);
        let m = key_m.map(|m| &m[(b * p.mask_heads + h * p.mask_heads / p.heads) * t..][..t]);
        match (mode, m, learned) {
            (MaskMode::Boolean, Some(m), _) => {
                for (bias, &m) in row.iter_mut().zip(m) {
                    *bias = if m < 1.0 { MIN } else { 0.0 };
                }
            }
            (MaskMode::Additive { ratio, .. }, Some(m), _) => {
                row.copy_from_slice(m);
                drop_below_kth(row, ratio);
            }
            (MaskMode::Learned, _, Some(learned)) => {
                for (bias, &l) in row.iter_mut().zip(&learned[h * t..][..t]) {
                    *bias = if l != 0.0 { 0.0 } else { MIN };
                }
            }
            _ => {}
        }
    });
    bias
}

/// Sets the values below the `⌊len·ratio⌋`-th smallest to `MIN`, when `0 < ratio < 1`.
fn drop_below_kth(m: &mut [f32], ratio: f32) {
    let active = ratio > 0.0 && ratio < 1.0;
    let n = (m.len() as f32 * ratio) as usize;
    if !active || n == 0 {
        return;
    }
    let mut sorted = m.to_vec();
    let (_, &mut threshold, _) = sorted.select_nth_unstable_by(n - 1, f32::total_cmp);
    for v in m.iter_mut().filter(|v| **v < threshold) {
        *v = MIN;
    }
}

/// Keeps the `w` largest values of `bias` (the lower index on ties) and sets the others to `MIN`.
fn keep_largest(bias: &mut [f32], w: usize, order: &mut Vec<usize>) {
    order.clear();
    order.extend(0..bias.len());
    order.select_nth_unstable_by(w, |&a, &b| desc(bias[a], bias[b]).then(a.cmp(&b)));
    for &j in &order[w..] {
        bias[j] = MIN;
    }
}

/// Softmax in place: `exp(s − max)` in `f32`, normalised by the `f64` sum.
fn softmax(row: &mut [f32]) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0f64;
    for s in row.iter_mut() {
        *s = (*s - max).exp();
        sum += f64::from(*s);
    }
    let inv = 1.0 / sum;
    for s in row.iter_mut() {
        *s = (f64::from(*s) * inv) as f32;
    }
}

/// Output rows `[rows.len(), Dh]` of queries `rows` for `(b, h) = (bh / H, bh % H)`.
#[allow(clippy::too_many_arguments)]
fn attend(
    p: &AttentionParams,
    mode: MaskMode,
    bh: usize,
    rows: std::ops::Range<usize>,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    key_bias: &[f32],
    attn_mask: &[i64],
) -> Vec<f32> {
    let (t, dh, n) = (p.kv_len, p.head_dim, rows.len());
    let (b, h) = (bh / p.heads, bh % p.heads);
    let g = h / (p.heads / p.kv_heads);
    let offset = t - p.q_len;
    let kv_at = (b * p.kv_heads + g) * t * dh;
    let (k, v) = (&k[kv_at..][..t * dh], &v[kv_at..][..t * dh]);
    let q = &q[((b * p.q_len + rows.start) * p.heads + h) * dh..];
    let attn_mask = &attn_mask[b * t..][..t];
    // Keys after the block's last query position carry bias MIN in every mode, and s + MIN
    // rounds to MIN for any |s| < 2^103, so their scores are MIN without computing q·k.
    let visible_end = t.min(offset + rows.end);
    let mut scores = vec![MIN; n * t];
    // SAFETY: `validate` checked q [B,S,H,Dh] and k [B,G,T,Dh]; the n query rows read from `q`
    // (stride H·Dh) end inside it, `k` holds T ≥ visible_end rows of Dh, and `scores` n×T.
    unsafe {
        gemm(
            n,
            visible_end,
            dh,
            scores.as_mut_ptr(),
            1,
            t as isize,
            false,
            q.as_ptr(),
            1,
            (p.heads * dh) as isize,
            k.as_ptr(),
            dh as isize,
            1,
            0.0,
            p.scale,
            false,
            false,
            false,
            Parallelism::None,
        )
    };
    let mut bias = Vec::with_capacity(t);
    let mut order = Vec::new();
    for (r, row) in scores.chunks_exact_mut(t).enumerate() {
        let last = offset + rows.start + r;
        bias.clear();
        bias.extend((0..t).map(|j| if j <= last && attn_mask[j] > 0 { key_bias[j] } else { MIN }));
        if let MaskMode::Additive { keep_window: Some(w), .. } = mode {
            if t > w {
                keep_largest(&mut bias, w, &mut order);
            }
        }
        for (s, &b) in row[..visible_end].iter_mut().zip(&bias) {
            *s += b;
        }
        for (s, _) in row.iter_mut().zip(attn_mask).filter(|(_, &m)| m < 0) {
            *s = f32::NEG_INFINITY;
        }
        softmax(row);
    }
    let used = scores
        .chunks_exact(t)
        .map(|row| row.iter().rposition(|&p| p != 0.0).map_or(0, |j| j + 1))
        .max();
    let used = used.unwrap_or(0);
    let mut tile = vec![0.0; n * dh];
    // SAFETY: `scores` is n×T with used ≤ T, `v` holds T rows of Dh, and `tile` is n×Dh.
    unsafe {
        gemm(
            n,
            dh,
            used,
            tile.as_mut_ptr(),
            1,
            dh as isize,
            false,
            scores.as_ptr(),
            1,
            t as isize,
            v.as_ptr(),
            1,
            dh as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            Parallelism::None,
        )
    };
    tile
}
