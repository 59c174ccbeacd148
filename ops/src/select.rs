//! Top-k selection shared by the routing ops, with one documented tie-break.

use std::cmp::Ordering;

/// Orders `a` before `b` when `a` is larger; NaN counts as the largest value, ±0 compare equal.
pub(crate) fn desc(a: f32, b: f32) -> Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Less,
        (false, true) => Ordering::Greater,
        (false, false) => b.partial_cmp(&a).unwrap_or(Ordering::Equal),
    }
}

/// Indices of the `k` largest `values`, largest first; on ties the lower index comes first.
pub(crate) fn top_k(values: &[f32], k: usize) -> Vec<usize> {
    let order = |a: &usize, b: &usize| desc(values[*a], values[*b]).then(a.cmp(b));
    let mut idx: Vec<usize> = (0..values.len()).collect();
    if k > 0 && k < idx.len() {
        idx.select_nth_unstable_by(k - 1, order);
    }
    idx.truncate(k);
    idx.sort_unstable_by(order);
    idx
}

/// The `k` largest sums `sx[a] + sy[c]` as `(sum, a, c)`, largest first, ties in `(a, c)` order.
///
/// `sx` and `sy` must be sorted descending. Every `(a', c') ≤ (a, c)` componentwise then has a sum
/// at least as large (rounding is monotone) and comes earlier, so only pairs with
/// `(a + 1)·(c + 1) ≤ k` can be among the first `k`; the others are never formed.
pub(crate) fn product_top_k(sx: &[f32], sy: &[f32], k: usize) -> Vec<(f32, usize, usize)> {
    let mut cand = Vec::new();
    for (a, &x) in sx.iter().enumerate().take(k) {
        for (c, &y) in sy.iter().enumerate().take(k / (a + 1)) {
            cand.push((x + y, a, c));
        }
    }
    cand.sort_unstable_by(|p, q| desc(p.0, q.0).then((p.1, p.2).cmp(&(q.1, q.2))));
    cand.truncate(k);
    cand
}
