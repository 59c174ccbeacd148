use std::collections::HashSet;

use proptest::prelude::*;

use super::*;
use crate::testutil::Rng;
use crate::KernelError;

/// Indices sorted by value descending, the lower index first on ties.
fn ranked(v: &[f64]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&a, &b| v[b].partial_cmp(&v[a]).unwrap().then(a.cmp(&b)));
    idx
}

/// MODEL.md's steps literally: full sort of both rows, all nk² candidates, top_k of them.
fn reference(p: &RouterTopKParams, logits: &[f32]) -> (Vec<f64>, Vec<i64>) {
    let (n, nk) = (p.tokens, p.num_keys);
    let (mut scores, mut ids) = (Vec::new(), Vec::new());
    for row in 0..n {
        let x: Vec<f64> = (0..nk).map(|i| f64::from(logits[row * nk + i])).collect();
        let y: Vec<f64> = (0..nk).map(|i| f64::from(logits[(n + row) * nk + i])).collect();
        let mut cand = Vec::new();
        for &i in &ranked(&x) {
            for &j in &ranked(&y) {
                cand.push((x[i] + y[j], (i * nk + j) as i64));
            }
        }
        for &c in &ranked(&cand.iter().map(|c| c.0).collect::<Vec<_>>())[..p.top_k] {
            scores.push(cand[c].0);
            ids.push(cand[c].1);
        }
    }
    (scores, ids)
}

fn check_invariants(p: &RouterTopKParams, logits: &[f32], scores: &[f32], ids: &[i64]) {
    let (n, nk) = (p.tokens, p.num_keys);
    for (row, (s, id)) in scores.chunks(p.top_k.max(1)).zip(ids.chunks(p.top_k.max(1))).enumerate()
    {
        assert!(s.windows(2).all(|w| w[0] >= w[1]), "scores not descending: {s:?}");
        assert_eq!(id.iter().collect::<HashSet<_>>().len(), id.len(), "duplicate ids {id:?}");
        let sum = |e: usize| logits[row * nk + e / nk] + logits[(n + row) * nk + e % nk];
        for (&s, &e) in s.iter().zip(id) {
            assert_eq!(s, sum(e as usize), "score of id {e} in row {row}");
        }
        let last = s.last().copied().unwrap_or(f32::INFINITY);
        let chosen: HashSet<usize> = id.iter().map(|&e| e as usize).collect();
        let beaten =
            (0..nk * nk).filter(|e| !chosen.contains(e)).map(sum).fold(f32::NEG_INFINITY, f32::max);
        assert!(beaten <= last, "row {row}: an unselected candidate scores {beaten} > {last}");
    }
}

fn check(tokens: usize, num_keys: usize, top_k: usize, quantized: bool, seed: u64) {
    let p = RouterTopKParams { tokens, num_keys, top_k };
    let mut rng = Rng::new(seed);
    let len = tokens * 2 * num_keys;
    let logits = if quantized { rng.quantized(len, 6, 0.5) } else { rng.vec(len, -3.0, 3.0) };
    let (scores, ids) = router_topk(&p, &logits).unwrap();
    check_invariants(&p, &logits, &scores, &ids);
    if quantized {
        let (want_scores, want_ids) = reference(&p, &logits);
        assert_eq!(ids, want_ids, "ids {p:?}");
        assert_eq!(
            scores.iter().map(|&s| f64::from(s)).collect::<Vec<_>>(),
            want_scores,
            "scores {p:?}"
        );
    }
}

#[test]
fn edge_shapes() {
    let shapes = [
        (0, 4, 3),
        (3, 0, 0),
        (3, 4, 0),
        (1, 1, 1),
        (3, 5, 25),
        (2, 31, 8),
        (3, 32, 64),
        (2, 33, 33),
        (5, 8, 1),
    ];
    for (i, &(n, nk, k)) in shapes.iter().enumerate() {
        check(n, nk, k, true, i as u64);
        check(n, nk, k, false, 100 + i as u64);
    }
}

#[test]
fn rows_mix_tokens_as_the_reference_view_does() {
    let p = RouterTopKParams { tokens: 2, num_keys: 2, top_k: 1 };
    let logits = [1.0, 0.0, 0.0, 5.0, 0.0, 2.0, 7.0, 0.0];
    let (scores, ids) = router_topk(&p, &logits).unwrap();
    assert_eq!(scores, [3.0, 12.0]);
    assert_eq!(ids, [1, 2]);
}

#[test]
fn equal_logits_pick_the_lowest_positions() {
    let p = RouterTopKParams { tokens: 1, num_keys: 4, top_k: 6 };
    let (_, ids) = router_topk(&p, &[0.0; 8]).unwrap();
    assert_eq!(ids, [0, 1, 2, 3, 4, 5]);
}

#[test]
fn errors_name_the_buffer() {
    let p = RouterTopKParams { tokens: 2, num_keys: 3, top_k: 4 };
    let Err(KernelError::BadParams(msg)) = router_topk(&p, &[0.0; 11]) else { panic!() };
    assert!(msg.contains("`logits` has 11 elements, expected 12"), "{msg}");
    let p = RouterTopKParams { tokens: 2, num_keys: 3, top_k: 10 };
    let Err(KernelError::BadParams(msg)) = router_topk(&p, &[0.0; 12]) else { panic!() };
    assert!(msg.contains("`top_k` 10 exceeds"), "{msg}");
}

fn arb_shape() -> impl Strategy<Value = (usize, usize, usize)> {
    (0usize..6, 1usize..24)
        .prop_flat_map(|(n, nk)| (0..=(nk * nk).min(80)).prop_map(move |k| (n, nk, k)))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn random_exact((n, nk, k) in arb_shape(), seed: u64) {
        check(n, nk, k, true, seed);
    }

    #[test]
    fn random_continuous((n, nk, k) in arb_shape(), seed: u64) {
        check(n, nk, k, false, seed);
    }
}

/// Launch choices, checked without a GPU.
mod plan {
    use super::*;
    use crate::router_topk::cuda::{candidates, ranks_candidates};

    fn p(tokens: usize, num_keys: usize, top_k: usize) -> RouterTopKParams {
        RouterTopKParams { tokens, num_keys, top_k }
    }

    #[test]
    fn candidates_count_the_pairs_that_can_rank() {
        for nk in 1..20 {
            for k in 0..=nk * nk {
                let n = k.min(nk);
                let brute = (0..n)
                    .flat_map(|a| (0..n).map(move |c| (a + 1) * (c + 1) <= k))
                    .filter(|&b| b)
                    .count();
                assert_eq!(candidates(&p(1, nk, k)), brute, "nk {nk} k {k}");
                assert!(brute >= k, "nk {nk} k {k}: {brute} candidates");
            }
        }
    }

    #[test]
    fn few_tokens_rank_and_many_merge() {
        assert!(ranks_candidates(&p(1, 128, 64)));
        assert!(ranks_candidates(&p(512, 128, 64)));
        assert!(!ranks_candidates(&p(513, 128, 64)));
        assert!(!ranks_candidates(&p(1, 128, 1024)), "{} candidates", candidates(&p(1, 128, 1024)));
        assert!(ranks_candidates(&p(1, 256, 256)));
    }
}

/// CUDA against the CPU kernel: the same sorts and the same f32 additions, so the outputs must agree bit for bit,
/// ties, tie-breaks and the cross-token pairing of rows included.
mod gpu {
    use super::*;
    use crate::cuda::{test_gpu, Elem, Gpu};

    fn run<T: Elem>(
        gpu: &Gpu,
        p: &RouterTopKParams,
        logits: &[T],
    ) -> crate::Result<(Vec<f32>, Vec<i64>)> {
        let n = p.tokens * p.top_k;
        let dl = gpu.upload(logits)?;
        let mut scores = gpu.upload(&vec![f32::NAN; n])?;
        let mut ids = gpu.stream().clone_htod(&vec![-1i64; n]).unwrap();
        cuda::router_topk(gpu, p, &dl, &mut scores, &mut ids)?;
        Ok((gpu.download(&scores)?, gpu.stream().clone_dtoh(&ids).unwrap()))
    }

    fn check<T: Elem>(tokens: usize, num_keys: usize, top_k: usize, quantized: bool, seed: u64) {
        let Some(gpu) = test_gpu() else { return };
        let p = RouterTopKParams { tokens, num_keys, top_k };
        let mut rng = Rng::new(seed);
        let len = tokens * 2 * num_keys;
        let logits = if quantized { rng.quantized(len, 6, 0.5) } else { rng.vec(len, -3.0, 3.0) };
        let logits: Vec<T> = logits.into_iter().map(T::from_f32).collect();
        let lf: Vec<f32> = logits.iter().map(|v| v.to_f32()).collect();
        let (want_scores, want_ids) = router_topk(&p, &lf).unwrap();
        let (scores, ids) = run(&gpu, &p, &logits).unwrap();
        let what = format!("router_topk_{} {p:?} quantized={quantized} seed {seed}", T::NAME);
        assert_eq!(ids, want_ids, "ids of {what}");
        assert_eq!(scores, want_scores, "scores of {what}");
        check_invariants(&p, &lf, &scores, &ids);
    }

    fn check_all(tokens: usize, num_keys: usize, top_k: usize, seed: u64) {
        for quantized in [true, false] {
            check::<f32>(tokens, num_keys, top_k, quantized, seed);
            check::<half::bf16>(tokens, num_keys, top_k, quantized, seed);
            check::<half::f16>(tokens, num_keys, top_k, quantized, seed);
        }
    }

    #[test]
    fn edge_shapes_match_the_cpu_kernel() {
        let shapes = [
            (0, 4, 3),
            (3, 4, 0),
            (1, 1, 1),
            (3, 8, 1),
            (3, 8, 64),
            (2, 5, 25),
            (2, 16, 256),
            (2, 32, 8),
            (4, 33, 300),
            (2, 127, 127),
            (2, 128, 1024),
            (3, 256, 1),
            (1, 256, 1024),
            (64, 64, 8),
            (1, 128, 64),
            (600, 128, 64),
            (600, 32, 8),
            (2, 128, 1024),
            (3, 64, 4096),
        ];
        for (i, &(n, nk, k)) in shapes.iter().enumerate() {
            check_all(n, nk, k, 300 + i as u64);
        }
    }

    #[test]
    fn rows_mix_tokens_and_ties_pick_the_lowest_positions() {
        let Some(gpu) = test_gpu() else { return };
        let p = RouterTopKParams { tokens: 2, num_keys: 2, top_k: 1 };
        let (scores, ids) = run(&gpu, &p, &[1.0f32, 0.0, 0.0, 5.0, 0.0, 2.0, 7.0, 0.0]).unwrap();
        assert_eq!((scores, ids), (vec![3.0, 12.0], vec![1, 2]));
        let p = RouterTopKParams { tokens: 1, num_keys: 4, top_k: 6 };
        let (_, ids) = run(&gpu, &p, &[0.0f32; 8]).unwrap();
        assert_eq!(ids, [0, 1, 2, 3, 4, 5]);
    }

    #[test]
    fn bad_sizes_are_refused() {
        let Some(gpu) = test_gpu() else { return };
        let p = RouterTopKParams { tokens: 1, num_keys: 257, top_k: 2 };
        let Err(KernelError::BadParams(msg)) = run(&gpu, &p, &[0.0f32; 514]) else { panic!() };
        assert!(msg.contains("`num_keys` 257 exceeds"), "{msg}");
        let p = RouterTopKParams { tokens: 2, num_keys: 3, top_k: 4 };
        let Err(KernelError::BadParams(msg)) = run(&gpu, &p, &[0.0f32; 11]) else { panic!() };
        assert!(msg.contains("`logits` has 11 elements"), "{msg}");
        let dl = gpu.zeros::<f32>(12).unwrap();
        let mut scores = gpu.zeros::<f32>(8).unwrap();
        let mut ids = gpu.stream().clone_htod(&[0i64; 7]).unwrap();
        let r = cuda::router_topk(&gpu, &p, &dl, &mut scores, &mut ids);
        assert!(matches!(r, Err(KernelError::BadParams(m)) if m.contains("`ids` has 7")));
    }

    fn arb_gpu_shape() -> impl Strategy<Value = (usize, usize, usize)> {
        (0usize..6, 1usize..=256)
            .prop_flat_map(|(n, nk)| (0..=(nk * nk).min(1100)).prop_map(move |k| (n, nk, k)))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn random_shapes_match_the_cpu_kernel((n, nk, k) in arb_gpu_shape(), seed in any::<u64>()) {
            check_all(n, nk, k, seed);
        }
    }
}
