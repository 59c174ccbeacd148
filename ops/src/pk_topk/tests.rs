use std::collections::HashSet;

use proptest::prelude::*;

use super::*;
use crate::testutil::{assert_close, Rng};
use crate::KernelError;

/// f32 sums of f64-accumulated dots against the f64 sums.
const SCORE_ATOL: f64 = 1e-5;
const SCORE_RTOL: f64 = 1e-6;

/// Similarities `[2][nk]` of `(row, h)` in f64.
fn sims(p: &PkTopKParams, q: &[f32], keys: &[f32], row: usize, h: usize) -> [Vec<f64>; 2] {
    let axis = |a: usize| -> Vec<f64> {
        (0..p.num_keys)
            .map(|kk| {
                (0..p.half)
                    .map(|n| {
                        f64::from(q[row * 2 * p.heads * p.half + (a * p.heads + h) * p.half + n])
                            * f64::from(keys[((h * p.num_keys + kk) * 2 + a) * p.half + n])
                    })
                    .sum()
            })
            .collect()
    };
    [axis(0), axis(1)]
}

/// Indices sorted by value descending, the lower index first on ties.
fn ranked(v: &[f64]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&a, &b| v[b].partial_cmp(&v[a]).unwrap().then(a.cmp(&b)));
    idx
}

/// MODEL.md's steps literally: per-axis top-k, the k² candidates in (i, j) order, top-k of them.
fn reference(p: &PkTopKParams, q: &[f32], keys: &[f32]) -> (Vec<f64>, Vec<i64>) {
    let (mut scores, mut ids) = (Vec::new(), Vec::new());
    for row in 0..p.rows {
        for h in 0..p.heads {
            let [x, y] = sims(p, q, keys, row, h);
            let (ix, iy) = (&ranked(&x)[..p.k], &ranked(&y)[..p.k]);
            let mut cand = Vec::new();
            for &i in ix {
                for &j in iy {
                    cand.push((x[i] + y[j], (i * p.num_keys + j) as i64));
                }
            }
            let order = ranked(&cand.iter().map(|c| c.0).collect::<Vec<_>>());
            for &c in &order[..p.k] {
                scores.push(cand[c].0);
                ids.push(cand[c].1);
            }
        }
    }
    (scores, ids)
}

fn inputs(p: &PkTopKParams, quantized: bool, seed: u64) -> (Vec<f32>, Vec<f32>) {
    let mut rng = Rng::new(seed);
    let (nq, nkeys) = (p.rows * 2 * p.heads * p.half, p.heads * p.num_keys * 2 * p.half);
    if quantized {
        (rng.quantized(nq, 3, 0.25), rng.quantized(nkeys, 3, 0.25))
    } else {
        (rng.vec(nq, -1.0, 1.0), rng.vec(nkeys, -1.0, 1.0))
    }
}

/// Exact comparison on quantized inputs, where every sum is exact and ties are frequent.
fn check_exact(p: PkTopKParams, seed: u64) {
    let (q, keys) = inputs(&p, true, seed);
    let (scores, ids) = pk_topk(&p, &q, &keys).unwrap();
    let (want_scores, want_ids) = reference(&p, &q, &keys);
    assert_eq!(ids, want_ids, "ids {p:?}");
    assert_eq!(
        scores.iter().map(|&s| f64::from(s)).collect::<Vec<_>>(),
        want_scores,
        "scores {p:?}"
    );
    check_invariants(&p, &scores, &ids);
}

/// The claim of the two-stage search: its result is the top-k of all nk² sums.
fn check_against_brute_force(p: PkTopKParams, seed: u64) {
    let (q, keys) = inputs(&p, false, seed);
    let (scores, ids) = pk_topk(&p, &q, &keys).unwrap();
    check_invariants(&p, &scores, &ids);
    for row in 0..p.rows {
        for h in 0..p.heads {
            let [x, y] = sims(&p, &q, &keys, row, h);
            let all: Vec<f64> = (0..p.num_keys * p.num_keys)
                .map(|id| x[id / p.num_keys] + y[id % p.num_keys])
                .collect();
            let best: Vec<f64> = ranked(&all)[..p.k].iter().map(|&id| all[id]).collect();
            let at = (row * p.heads + h) * p.k;
            let what = format!("{p:?} row {row} head {h}");
            assert_close(
                &scores[at..at + p.k],
                &best,
                SCORE_ATOL,
                SCORE_RTOL,
                &format!("top-k sums {what}"),
            );
            let of_ids: Vec<f64> = ids[at..at + p.k].iter().map(|&id| all[id as usize]).collect();
            assert_close(
                &scores[at..at + p.k],
                &of_ids,
                SCORE_ATOL,
                SCORE_RTOL,
                &format!("score of id {what}"),
            );
        }
    }
}

fn check_invariants(p: &PkTopKParams, scores: &[f32], ids: &[i64]) {
    for (s, id) in scores.chunks(p.k.max(1)).zip(ids.chunks(p.k.max(1))) {
        assert!(s.windows(2).all(|w| w[0] >= w[1]), "scores not descending: {s:?}");
        assert_eq!(id.iter().collect::<HashSet<_>>().len(), id.len(), "duplicate ids {id:?}");
        assert!(
            id.iter().all(|&i| (0..(p.num_keys * p.num_keys) as i64).contains(&i)),
            "id out of range {id:?}"
        );
    }
}

fn params(rows: usize, heads: usize, num_keys: usize, half: usize, k: usize) -> PkTopKParams {
    PkTopKParams { rows, heads, num_keys, half, k }
}

const EDGE: &[(usize, usize, usize, usize, usize)] = &[
    (0, 2, 4, 3, 2),
    (3, 0, 4, 3, 2),
    (3, 2, 4, 3, 0),
    (2, 1, 4, 0, 2),
    (1, 1, 1, 1, 1),
    (3, 2, 5, 7, 5),
    (2, 3, 31, 8, 8),
    (2, 2, 32, 32, 16),
    (1, 4, 33, 16, 33),
    (4, 2, 16, 4, 1),
];

#[test]
fn edge_shapes() {
    for (i, &(r, h, nk, half, k)) in EDGE.iter().enumerate() {
        check_exact(params(r, h, nk, half, k), i as u64);
        check_against_brute_force(params(r, h, nk, half, k), 100 + i as u64);
    }
}

#[test]
fn zero_keys_pick_the_lowest_positions() {
    let p = params(2, 2, 8, 4, 3);
    let (q, _) = inputs(&p, false, 1);
    let (scores, ids) = pk_topk(&p, &q, &vec![0.0; 2 * 8 * 2 * 4]).unwrap();
    assert_eq!(scores, vec![0.0; 12]);
    assert_eq!(ids, [0, 1, 2].repeat(4));
}

#[test]
fn errors_name_the_buffer() {
    let p = params(2, 2, 4, 3, 2);
    let Err(KernelError::BadParams(msg)) = pk_topk(&p, &[0.0; 23], &[0.0; 48]) else { panic!() };
    assert!(msg.contains("`q` has 23 elements, expected 24"), "{msg}");
    let Err(KernelError::BadParams(msg)) = pk_topk(&p, &[0.0; 24], &[0.0; 47]) else { panic!() };
    assert!(msg.contains("`keys`"), "{msg}");
    let Err(KernelError::BadParams(msg)) = pk_topk(&params(2, 2, 4, 3, 5), &[0.0; 24], &[0.0; 48])
    else {
        panic!()
    };
    assert!(msg.contains("`k` 5 exceeds `num_keys` 4"), "{msg}");
}

fn arb_params() -> impl Strategy<Value = PkTopKParams> {
    (0usize..5, 1usize..4, 1usize..40, 1usize..12)
        .prop_flat_map(|(r, h, nk, half)| (0..=nk).prop_map(move |k| params(r, h, nk, half, k)))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn random_exact(p in arb_params(), seed: u64) {
        check_exact(p, seed);
    }

    #[test]
    fn random_against_brute_force(p in arb_params(), seed: u64) {
        check_against_brute_force(p, seed);
    }
}
