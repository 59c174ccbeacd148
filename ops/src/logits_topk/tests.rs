use proptest::prelude::*;

use super::*;
use crate::testutil::Rng;

/// The order literally: NaN below every number, ±0 equal, equal values by the lower id; a full sort.
fn reference(p: &LogitsTopKParams, logits: &[f32]) -> (Vec<f32>, Vec<i64>) {
    let (mut values, mut ids) = (Vec::new(), Vec::new());
    for row in logits.chunks(p.vocab.max(1)).take(p.rows) {
        let mut idx: Vec<usize> = (0..row.len()).collect();
        idx.sort_by(|&a, &b| {
            let (x, y) = (row[a], row[b]);
            let by_value = match (x.is_nan(), y.is_nan()) {
                (true, true) => std::cmp::Ordering::Equal,
                (true, false) => std::cmp::Ordering::Greater,
                (false, true) => std::cmp::Ordering::Less,
                (false, false) => y.partial_cmp(&x).unwrap(),
            };
            by_value.then(a.cmp(&b))
        });
        for &i in &idx[..p.k] {
            values.push(row[i]);
            ids.push(i as i64);
        }
    }
    (values, ids)
}

/// Rows with ties, ±0, ±∞ and NaN among ordinary values.
fn logits(rng: &mut Rng, n: usize, special: bool) -> Vec<f32> {
    let mut v = rng.quantized(n, 9, 0.25);
    if special {
        let pick = [f32::NAN, 0.0, -0.0, f32::INFINITY, f32::NEG_INFINITY, f32::MAX, -f32::MAX];
        for _ in 0..n / 7 + 1 {
            let (i, s) = (rng.below(n.max(1)), rng.below(pick.len()));
            if n > 0 {
                v[i] = pick[s];
            }
        }
    }
    v
}

/// The same ids and the same values bit for bit, NaN payloads aside (the device widens an f16 NaN to the canonical
/// NaN, the host keeps its payload).
fn same(got: &(Vec<f32>, Vec<i64>), want: &(Vec<f32>, Vec<i64>), what: &str) {
    assert_eq!(got.1, want.1, "ids of {what}");
    let bits = |v: &[f32]| {
        v.iter().map(|x| if x.is_nan() { f32::NAN } else { *x }.to_bits()).collect::<Vec<_>>()
    };
    assert_eq!(bits(&got.0), bits(&want.0), "values of {what}");
}

#[test]
fn keys_follow_the_order() {
    let ladder = [
        f32::NAN,
        f32::NEG_INFINITY,
        -f32::MAX,
        -1.0,
        -f32::MIN_POSITIVE,
        0.0,
        1e-45,
        1.0,
        f32::INFINITY,
    ];
    for w in ladder.windows(2) {
        assert!(key(w[0]) < key(w[1]), "{} before {}", w[0], w[1]);
    }
    assert_eq!(key(0.0), key(-0.0));
    assert_eq!(key(f32::NAN), key(-f32::NAN));
}

#[test]
fn cpu_kernel_matches_a_full_sort() {
    let mut rng = Rng::new(7);
    for (rows, vocab, k) in
        [(1, 1, 1), (3, 10, 0), (2, 10, 10), (4, 33, 5), (1, 1000, 40), (5, 257, 256)]
    {
        for special in [false, true] {
            let p = LogitsTopKParams { rows, vocab, k };
            let l = logits(&mut rng, rows * vocab, special);
            let what = format!("{p:?} special={special}");
            same(&logits_top_k(&p, &l).unwrap(), &reference(&p, &l), &what);
        }
    }
}

#[test]
fn ties_and_nan_rank_as_documented() {
    let p = LogitsTopKParams { rows: 1, vocab: 6, k: 6 };
    let (values, ids) =
        logits_top_k(&p, &[f32::NAN, -0.0, 2.0, 0.0, 2.0, f32::NEG_INFINITY]).unwrap();
    assert_eq!(ids, [2, 4, 1, 3, 5, 0]);
    assert_eq!(values[..5], [2.0, 2.0, -0.0, 0.0, f32::NEG_INFINITY]);
    assert!(values[5].is_nan());
}

#[test]
fn bad_sizes_are_refused() {
    let p = LogitsTopKParams { rows: 1, vocab: 4, k: 5 };
    let Err(KernelError::BadParams(msg)) = logits_top_k(&p, &[0.0; 4]) else { panic!() };
    assert!(msg.contains("`k` 5 exceeds the vocabulary of 4"), "{msg}");
    let p = LogitsTopKParams { rows: 2, vocab: 4, k: 1 };
    let Err(KernelError::BadParams(msg)) = logits_top_k(&p, &[0.0; 7]) else { panic!() };
    assert!(msg.contains("`logits` has 7 elements"), "{msg}");
}

/// CUDA against the CPU kernel: the same keys and tie-break, so the outputs must agree bit for bit.
mod gpu {
    use super::*;
    use crate::cuda::{test_gpu, Elem, Gpu};

    fn run<T: Elem>(
        gpu: &Gpu,
        p: &LogitsTopKParams,
        logits: &[T],
    ) -> crate::Result<(Vec<f32>, Vec<i64>)> {
        let n = p.rows * p.k;
        let dl = gpu.upload(logits)?;
        let mut values = gpu.upload(&vec![f32::NAN; n])?;
        let mut ids = gpu.stream().clone_htod(&vec![-1i64; n]).unwrap();
        cuda::logits_top_k(gpu, p, &dl, &mut values, &mut ids)?;
        Ok((gpu.download(&values)?, gpu.stream().clone_dtoh(&ids).unwrap()))
    }

    fn check<T: Elem>(rows: usize, vocab: usize, k: usize, special: bool, seed: u64) {
        let Some(gpu) = test_gpu() else { return };
        let p = LogitsTopKParams { rows, vocab, k };
        let l: Vec<T> = logits(&mut Rng::new(seed), rows * vocab, special)
            .into_iter()
            .map(T::from_f32)
            .collect();
        let lf: Vec<f32> = l.iter().map(|v| v.to_f32()).collect();
        let want = logits_top_k(&p, &lf).unwrap();
        let what = format!("logits_topk_{} {p:?} special={special} seed {seed}", T::NAME);
        same(&run(&gpu, &p, &l).unwrap(), &want, &what);
    }

    fn check_all(rows: usize, vocab: usize, k: usize, seed: u64) {
        for special in [false, true] {
            check::<f32>(rows, vocab, k, special, seed);
            check::<half::bf16>(rows, vocab, k, special, seed);
            check::<half::f16>(rows, vocab, k, special, seed);
        }
    }

    #[test]
    fn edge_shapes_match_the_cpu_kernel() {
        let shapes = [
            (0, 8, 3),
            (3, 8, 0),
            (1, 1, 1),
            (2, 5, 5),
            (1, 511, 1),
            (1, 512, 512),
            (2, 513, 40),
            (1, 1024, 1024),
            (3, 32768, 1),
            (1, 32768, 40),
            (2, 32768, 1024),
            (1, 151_936, 50),
            (64, 4099, 7),
            (1, 262_144, 1000),
        ];
        for (i, &(rows, vocab, k)) in shapes.iter().enumerate() {
            check_all(rows, vocab, k, 500 + i as u64);
        }
    }

    #[test]
    fn uniform_rows_keep_the_lowest_ids() {
        let Some(gpu) = test_gpu() else { return };
        let p = LogitsTopKParams { rows: 2, vocab: 3000, k: 600 };
        let mut l = vec![0.5f32; 6000];
        l[3000..].fill(f32::NAN);
        let (values, ids) = run(&gpu, &p, &l).unwrap();
        let first: Vec<i64> = (0..600).collect();
        assert_eq!(ids[..600], first[..]);
        assert_eq!(ids[600..], first[..]);
        assert!(
            values[..600].iter().all(|&v| v == 0.5) && values[600..].iter().all(|v| v.is_nan())
        );
    }

    #[test]
    fn bad_sizes_are_refused() {
        let Some(gpu) = test_gpu() else { return };
        let p = LogitsTopKParams { rows: 1, vocab: 2000, k: 1025 };
        let Err(KernelError::BadParams(msg)) = run(&gpu, &p, &[0.0f32; 2000]) else { panic!() };
        assert!(msg.contains("`k` 1025 exceeds the CUDA kernel's limit of 1024"), "{msg}");
        let p = LogitsTopKParams { rows: 2, vocab: 3, k: 2 };
        let dl = gpu.zeros::<f32>(6).unwrap();
        let mut values = gpu.zeros::<f32>(4).unwrap();
        let mut ids = gpu.stream().clone_htod(&[0i64; 3]).unwrap();
        let r = cuda::logits_top_k(&gpu, &p, &dl, &mut values, &mut ids);
        assert!(matches!(r, Err(KernelError::BadParams(m)) if m.contains("`ids` has 3")));
    }

    fn arb_gpu_shape() -> impl Strategy<Value = (usize, usize, usize)> {
        (0usize..5, 1usize..=70_000).prop_flat_map(|(rows, vocab)| {
            (0..=vocab.min(cuda::MAX_K)).prop_map(move |k| (rows, vocab, k))
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn random_shapes_match_the_cpu_kernel((rows, vocab, k) in arb_gpu_shape(), seed in any::<u64>()) {
            check_all(rows, vocab, k, seed);
        }
    }
}
