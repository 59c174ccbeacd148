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

/// Launch choices, checked without a GPU.
mod plan {
    use super::*;
    use crate::pk_topk::cuda::{candidates, form_plan, plan, ROW_TASKS, SMEM_MAX, WIDE_MAX};

    #[test]
    fn candidates_count_the_pairs_that_can_rank() {
        for k in 0..40 {
            let brute = (0..k)
                .flat_map(|i| (0..k).map(move |j| (i + 1) * (j + 1) <= k))
                .filter(|&b| b)
                .count();
            assert_eq!(candidates(k), brute, "k {k}");
        }
        assert_eq!(candidates(8), 20);
    }

    #[test]
    fn cheems_shape_stages_its_keys_and_fills_the_device() {
        let p = params(4096, 4, 32, 32, 8);
        let plan = plan(&p, 2).unwrap();
        assert!(plan.keys_in_smem && plan.wide_keys);
        assert_eq!(plan.warps, 8);
        assert_eq!(plan.stride, 33);
        assert_eq!(plan.key_bytes, 2 * 32 * 33 * 8);
        assert!(plan.smem_bytes() <= 48 * 1024, "{plan:?}");
        let blocks = p.rows.div_ceil(plan.rows_per_block) * p.heads;
        assert!((396..=528).contains(&blocks), "{blocks} blocks");
        let one = plan_of(1, 4, 32, 32, 8);
        assert!(one.row_form && one.wide_keys, "{one:?}");
        assert_eq!((one.rows_per_block, one.warps), (1, 8));
    }

    #[test]
    fn few_pairs_take_the_row_form() {
        assert!(plan_of(66, 4, 32, 32, 8).row_form);
        assert!(!plan_of(67, 4, 32, 32, 8).row_form);
        assert!(plan_of(ROW_TASKS, 1, 32, 32, 8).row_form);
        assert!(!plan_of(ROW_TASKS + 1, 1, 32, 32, 8).row_form);
        let warp = form_plan(&params(1, 4, 32, 32, 8), 2, false).unwrap();
        assert!(!warp.row_form && warp.rows_per_block == 8, "{warp:?}");
        let row = plan_of(1, 4, 32, 32, 8);
        assert_eq!(row.smem_bytes(), row.key_bytes + row.warp_bytes);
        assert!(row.warp_bytes >= warp.warp_bytes + 4 * (2 * 32 + row.cand_pad + 8 + 1));
    }

    fn plan_of(r: usize, h: usize, nk: usize, half: usize, k: usize) -> crate::pk_topk::cuda::Plan {
        plan(&params(r, h, nk, half, k), 2).unwrap()
    }

    #[test]
    fn checkpoint_shapes_stage_their_keys() {
        for (nk, half) in [(127, 32), (64, 128), (32, 32)] {
            let p = plan_of(4096, 4, nk, half, 8);
            assert!(p.keys_in_smem && p.warps == 8, "nk {nk} half {half}: {p:?}");
        }
    }

    #[test]
    fn keys_too_large_for_f64_stay_in_their_own_type() {
        for (nk, half) in [(127, 32), (64, 128)] {
            let p = plan_of(4096, 4, nk, half, 8);
            assert!(p.keys_in_smem && !p.wide_keys, "nk {nk} half {half}: {p:?}");
            assert_eq!(p.key_bytes, (2 * nk * (half | 1) * 2).next_multiple_of(16));
        }
    }

    #[test]
    fn large_keys_are_read_from_device_memory() {
        let big = plan_of(2, 2, 256, 130, 8);
        assert!(!big.keys_in_smem);
        assert_eq!(big.key_bytes, 0);
        let full = plan_of(1, 1, 256, 3, 256);
        assert!(full.warps >= 1 && full.smem_bytes() <= SMEM_MAX, "{full:?}");
    }

    #[test]
    fn every_plan_fits_and_aligns() {
        let shapes = [1, 2, 5, 31, 32, 33, 64, 127, 128, 255, 256].into_iter().flat_map(|nk| {
            [0, 1, 2, 7, 8, 9, 32, 64, 128, 130, 1000].into_iter().flat_map(move |half| {
                [1, nk / 2 + 1, nk]
                    .into_iter()
                    .flat_map(move |k| [1, 4096].map(|rows| (rows, nk, half, k)))
            })
        });
        for (rows, nk, half, k) in shapes {
            let p = plan_of(rows, 3, nk, half, k);
            assert!(p.warps >= 1 && p.warps <= 8, "{p:?}");
            assert!(p.smem_bytes() <= SMEM_MAX, "{p:?}");
            assert!(p.row_form || !p.wide_keys || p.smem_bytes() <= WIDE_MAX, "{p:?}");
            assert!(!p.wide_keys || p.keys_in_smem, "{p:?}");
            assert_eq!((p.key_bytes % 16, p.warp_bytes % 16, p.stride % 2), (0, 0, 1), "{p:?}");
            assert!(p.cand_pad >= candidates(k) && p.cand_pad % 2 == 0, "{p:?}");
            assert!(
                p.row_form && p.rows_per_block == 1 || p.rows_per_block % p.warps == 0,
                "{p:?}"
            );
        }
    }

    #[test]
    fn a_scratch_too_large_for_one_warp_is_refused() {
        let Err(KernelError::BadParams(msg)) = plan(&params(1, 1, 256, 6000, 256), 2) else {
            panic!()
        };
        assert!(msg.contains("shared memory"), "{msg}");
    }
}

/// CUDA against the CPU kernel. Both round f64 similarities once to f32 and form the candidate sums with the same
/// f32 additions, so they agree bit for bit, ties included (quantized inputs are checked for exact equality). On
/// continuous inputs the f64 sums are added in different orders and can round to neighbouring f32 values when
/// one lies within an f64 ulp of an f32 rounding boundary; a score may then move by an ulp of a similarity
/// (|sim| ≤ half), and ids may swap only between scores that equal within that.
mod gpu {
    use super::*;
    use crate::cuda::{test_gpu, Elem, Gpu};

    const NEAR_RTOL: f64 = 4.0 * f32::EPSILON as f64;

    fn near_atol(p: &PkTopKParams) -> f64 {
        4.0 * f64::from(f32::EPSILON) * p.half.max(1) as f64
    }

    fn to<T: Elem>(v: &[f32]) -> Vec<T> {
        v.iter().map(|&x| T::from_f32(x)).collect()
    }

    fn back<T: Elem>(v: &[T]) -> Vec<f32> {
        v.iter().map(|x| x.to_f32()).collect()
    }

    fn run<T: Elem>(
        gpu: &Gpu,
        p: &PkTopKParams,
        q: &[T],
        keys: &[T],
    ) -> crate::Result<(Vec<f32>, Vec<i64>)> {
        let n = p.rows * p.heads * p.k;
        let (dq, dk) = (gpu.upload(q)?, gpu.upload(keys)?);
        let mut scores = gpu.upload(&vec![f32::NAN; n])?;
        let mut ids = gpu.stream().clone_htod(&vec![-1i64; n]).unwrap();
        cuda::pk_topk(gpu, p, &dq, &dk, &mut scores, &mut ids)?;
        Ok((gpu.download(&scores)?, gpu.stream().clone_dtoh(&ids).unwrap()))
    }

    /// Two threads launching the same kernel with different shared-memory sizes (both past the 48 KB default):
    /// each launch must find the kernel allowed its size whatever the other thread set in between.
    #[test]
    fn concurrent_launches_with_different_shared_memory() {
        let Some(gpu) = test_gpu() else { return };
        let shapes = [
            PkTopKParams { rows: 1, heads: 2, num_keys: 251, half: 36, k: 197 },
            PkTopKParams { rows: 3, heads: 2, num_keys: 251, half: 36, k: 60 },
        ];
        for p in &shapes {
            let plan = cuda::plan(p, 4).unwrap();
            assert!(plan.smem_bytes() > 48 * 1024, "{p:?}: {plan:?}");
        }
        std::thread::scope(|s| {
            for p in shapes {
                let gpu = gpu.clone();
                s.spawn(move || {
                    let (q, keys) = inputs(&p, false, 3);
                    for _ in 0..40 {
                        run::<f32>(&gpu, &p, &q, &keys).unwrap();
                    }
                });
            }
        });
    }

    fn check<T: Elem>(p: PkTopKParams, quantized: bool, seed: u64) {
        let Some(gpu) = test_gpu() else { return };
        let (q, keys) = inputs(&p, quantized, seed);
        let (q, keys): (Vec<T>, Vec<T>) = (to(&q), to(&keys));
        let (qf, kf) = (back(&q), back(&keys));
        let (want_scores, want_ids) = pk_topk(&p, &qf, &kf).unwrap();
        let (scores, ids) = run(&gpu, &p, &q, &keys).unwrap();
        let what = format!("pk_topk_{} {p:?} quantized={quantized} seed {seed}", T::NAME);
        check_invariants(&p, &scores, &ids);
        if quantized {
            assert_eq!(ids, want_ids, "ids of {what}");
            assert_eq!(scores, want_scores, "scores of {what}");
            return;
        }
        let want: Vec<f64> = want_scores.iter().map(|&s| f64::from(s)).collect();
        assert_close(&scores, &want, near_atol(&p), NEAR_RTOL, &what);
        for (slot, (&got, &want)) in ids.iter().zip(&want_ids).enumerate() {
            if got == want {
                continue;
            }
            let (row, h) = (slot / (p.heads * p.k), slot / p.k % p.heads);
            let [x, y] = sims(&p, &qf, &kf, row, h);
            let nk = p.num_keys as i64;
            let sum = |id: i64| x[(id / nk) as usize] + y[(id % nk) as usize];
            let gap = (sum(got) - sum(want)).abs();
            assert!(
                gap <= near_atol(&p) + NEAR_RTOL * sum(want).abs(),
                "{what}: slot {slot} picked id {got} ({}) where the CPU picked {want} ({})",
                sum(got),
                sum(want)
            );
        }
    }

    fn check_all(p: PkTopKParams, seed: u64) {
        for quantized in [true, false] {
            check::<f32>(p, quantized, seed);
            check::<half::bf16>(p, quantized, seed);
            check::<half::f16>(p, quantized, seed);
        }
    }

    #[test]
    fn edge_shapes_match_the_cpu_kernel() {
        let shapes = [
            (0, 2, 8, 4, 2),
            (3, 2, 4, 3, 0),
            (3, 2, 5, 0, 2),
            (1, 1, 1, 1, 1),
            (3, 2, 8, 5, 1),
            (3, 2, 8, 5, 8),
            (2, 3, 32, 16, 8),
            (2, 2, 127, 9, 127),
            (1, 2, 128, 64, 128),
            (2, 1, 128, 128, 16),
            (1, 1, 256, 3, 256),
            (2, 2, 256, 130, 8),
            (3, 4, 64, 128, 8),
            (37, 3, 32, 32, 8),
            (300, 2, 32, 32, 8),
            (4500, 2, 16, 8, 4),
            (1, 4, 32, 32, 8),
            (5, 1, 32, 33, 32),
            (1500, 3, 20, 33, 5),
            (2500, 2, 16, 64, 4),
            (2500, 2, 16, 65, 4),
            (3000, 2, 8, 70, 4),
            (2000, 3, 64, 128, 8),
            (4096, 4, 32, 32, 8),
        ];
        for (i, &(r, h, nk, half, k)) in shapes.iter().enumerate() {
            check_all(params(r, h, nk, half, k), 300 + i as u64);
        }
    }

    /// The similarities are the CPU kernel's f64 sums in the same order, so continuous inputs agree bit for bit too.
    #[test]
    fn continuous_inputs_match_bit_for_bit() {
        let Some(gpu) = test_gpu() else { return };
        for (i, &(r, h, nk, half, k)) in
            [(64, 4, 32, 32, 8), (9, 2, 31, 13, 31), (3, 1, 200, 70, 12)].iter().enumerate()
        {
            let p = params(r, h, nk, half, k);
            let (q, keys) = inputs(&p, false, 900 + i as u64);
            let (want_scores, want_ids) = pk_topk(&p, &q, &keys).unwrap();
            let (scores, ids) = run(&gpu, &p, &q, &keys).unwrap();
            assert_eq!(ids, want_ids, "ids of {p:?}");
            assert_eq!(scores, want_scores, "scores of {p:?}");
        }
    }

    /// The row form and the warp form compute the same similarities, orders and candidate positions: the same bits
    /// on continuous inputs, ties and every way of holding the keys (f64, their own type, device memory).
    #[test]
    fn both_forms_agree_bit_for_bit() {
        let Some(gpu) = test_gpu() else { return };
        let shapes = [
            (1, 4, 32, 32, 8),
            (3, 2, 8, 5, 8),
            (2, 3, 31, 13, 31),
            (1, 1, 1, 1, 1),
            (2, 2, 127, 9, 127),
            (1, 2, 128, 64, 128),
            (2, 2, 256, 130, 8),
            (1, 1, 256, 3, 256),
            (70, 4, 32, 32, 8),
            (4, 2, 64, 128, 40),
        ];
        for (i, &(r, h, nk, half, k)) in shapes.iter().enumerate() {
            let p = params(r, h, nk, half, k);
            for quantized in [false, true] {
                let (q, keys) = inputs(&p, quantized, 700 + i as u64);
                let (q, keys): (Vec<half::bf16>, Vec<half::bf16>) = (to(&q), to(&keys));
                let forms = [true, false].map(|row| {
                    let plan = cuda::form_plan(&p, 2, row).unwrap();
                    assert_eq!(plan.row_form, row, "{p:?}: {plan:?}");
                    let n = p.rows * p.heads * p.k;
                    let (dq, dk) = (gpu.upload(&q).unwrap(), gpu.upload(&keys).unwrap());
                    let mut scores = gpu.upload(&vec![f32::NAN; n]).unwrap();
                    let mut ids = gpu.stream().clone_htod(&vec![-1i64; n]).unwrap();
                    cuda::pk_topk_as(&gpu, &p, Some(row), None, &dq, &dk, &mut scores, &mut ids)
                        .unwrap();
                    let scores: Vec<u32> =
                        gpu.download(&scores).unwrap().iter().map(|s| s.to_bits()).collect();
                    (scores, gpu.stream().clone_dtoh(&ids).unwrap())
                });
                assert_eq!(
                    forms[0], forms[1],
                    "{p:?} quantized={quantized}: row form against warp form"
                );
            }
        }
    }

    /// The row form's weights, then `expert_sum`, against `pk_topk` then `expert_mix` (its two-launch form): the same
    /// scores, ids and mixture, bit for bit, for every activation order and with and without an addend.
    #[test]
    fn weighed_top_k_then_sum_is_the_top_k_then_the_mix() {
        use crate::act::Act;
        use crate::expert_mix::{cuda as mix, ExpertAct, ExpertMixParams};
        let Some(gpu) = test_gpu() else { return };
        let cases = [
            (1, 4, 32, 32, 8, 1024, Act::Silu, ExpertAct::BeforeSoftmax, false, true),
            (4, 4, 32, 32, 8, 1024, Act::Gelu, ExpertAct::AfterSoftmax, true, false),
            (16, 4, 32, 32, 8, 1024, Act::Silu, ExpertAct::BeforeSoftmax, false, true),
            (3, 2, 20, 13, 20, 520, Act::Relu, ExpertAct::BeforeSoftmax, true, true),
            (2, 3, 9, 8, 1, 1000, Act::GeluTanh, ExpertAct::AfterSoftmax, false, false),
            (1, 1, 64, 3, 40, 777, Act::Silu, ExpertAct::BeforeSoftmax, false, true),
        ];
        for (i, &(r, h, nk, half, k, dim, act, order, norm_topk, add)) in cases.iter().enumerate() {
            let p = params(r, h, nk, half, k);
            let m = ExpertMixParams { rows: r, heads: h, k, dim, num_experts: nk * nk };
            assert!(cuda::weighs(&p, 2) && mix::sums_apart(&m), "{p:?} {m:?}");
            let mut rng = Rng::new(1300 + i as u64);
            let (q, keys) = inputs(&p, false, 1300 + i as u64);
            let x = rng.vec(r * dim, -1.0, 1.0);
            let (down, up) =
                (rng.vec(m.num_experts * dim, -0.5, 0.5), rng.vec(m.num_experts * dim, -1.0, 1.0));
            let addend = rng.vec(r * dim, -1.0, 1.0);
            let up_load = |v: &[f32]| gpu.upload(&to::<half::bf16>(v)).unwrap();
            let (dq, dk, dx, dd, du, da) = (
                up_load(&q),
                up_load(&keys),
                up_load(&x),
                up_load(&down),
                up_load(&up),
                up_load(&addend),
            );
            let n = r * h * k;
            let run = |weighed: bool| {
                let mut scores = gpu.upload(&vec![f32::NAN; n]).unwrap();
                let mut ids = gpu.stream().clone_htod(&vec![-1i64; n]).unwrap();
                let mut out = gpu.upload(&vec![half::bf16::NAN; r * dim]).unwrap();
                let add = add.then_some(&da);
                if weighed {
                    let mut w = gpu.upload(&vec![f32::NAN; n]).unwrap();
                    let weighing =
                        cuda::Weighing { x: &dx, down: &dd, mix: m, act, order, norm_topk };
                    cuda::pk_topk_weighed(
                        &gpu,
                        &p,
                        &dq,
                        &dk,
                        &weighing,
                        &mut scores,
                        &mut ids,
                        &mut w,
                    )
                    .unwrap();
                    mix::expert_sum(&gpu, &m, &w, &ids, &du, add, &mut out).unwrap();
                } else {
                    cuda::pk_topk(&gpu, &p, &dq, &dk, &mut scores, &mut ids).unwrap();
                    mix::expert_mix(
                        &gpu, &m, act, order, norm_topk, &dx, &scores, &ids, &dd, &du, add,
                        &mut out,
                    )
                    .unwrap();
                }
                let scores: Vec<u32> =
                    gpu.download(&scores).unwrap().iter().map(|s| s.to_bits()).collect();
                let out: Vec<u16> =
                    gpu.download(&out).unwrap().iter().map(|v| v.to_bits()).collect();
                (scores, gpu.stream().clone_dtoh(&ids).unwrap(), out)
            };
            let (fused, apart) = (run(true), run(false));
            assert!(
                fused.2.iter().all(|&b| !half::bf16::from_bits(b).is_nan()),
                "case {i}: NaN in the mix"
            );
            assert_eq!(
                fused, apart,
                "case {i}: {p:?} {m:?} weighed in the top-k against the two-launch mix"
            );
        }
    }

    #[test]
    fn weighing_is_refused_outside_the_row_form_and_for_other_sizes() {
        use crate::act::Act;
        use crate::expert_mix::{cuda as mix, ExpertAct, ExpertMixParams};
        let Some(gpu) = test_gpu() else { return };
        let check = |p: PkTopKParams, m: ExpertMixParams, want: &str| {
            let n = p.rows * p.heads * p.k;
            let dq = gpu.zeros::<f32>(p.rows * 2 * p.heads * p.half).unwrap();
            let dk = gpu.zeros::<f32>(p.heads * p.num_keys * 2 * p.half).unwrap();
            let (dx, dd) = (
                gpu.zeros::<f32>(m.rows * m.dim).unwrap(),
                gpu.zeros::<f32>(m.num_experts * m.dim).unwrap(),
            );
            let (mut s, mut w) = (gpu.zeros::<f32>(n).unwrap(), gpu.zeros::<f32>(n).unwrap());
            let mut ids = gpu.stream().clone_htod(&vec![0i64; n]).unwrap();
            let weighing = cuda::Weighing {
                x: &dx,
                down: &dd,
                mix: m,
                act: Act::Silu,
                order: ExpertAct::BeforeSoftmax,
                norm_topk: false,
            };
            let r = cuda::pk_topk_weighed(&gpu, &p, &dq, &dk, &weighing, &mut s, &mut ids, &mut w);
            assert!(matches!(&r, Err(KernelError::BadParams(msg)) if msg.contains(want)), "{r:?}");
        };
        let mix_of = |p: &PkTopKParams| ExpertMixParams {
            rows: p.rows,
            heads: p.heads,
            k: p.k,
            dim: 1024,
            num_experts: p.num_keys * p.num_keys,
        };
        let many = params(300, 1, 8, 4, 2);
        check(many, mix_of(&many), "at most 264");
        let p = params(1, 2, 8, 4, 2);
        check(p, ExpertMixParams { k: 3, ..mix_of(&p) }, "differ from the top-k's");
        let m = ExpertMixParams { rows: 300, heads: 1, k: 2, dim: 1024, num_experts: 64 };
        assert!(!mix::sums_apart(&m));
        let (w, ids) =
            (gpu.zeros::<f32>(600).unwrap(), gpu.stream().clone_htod(&[0i64; 600]).unwrap());
        let (up, mut out) =
            (gpu.zeros::<f32>(64 * 1024).unwrap(), gpu.zeros::<f32>(300 * 1024).unwrap());
        let r = mix::expert_sum(&gpu, &m, &w, &ids, &up, None, &mut out);
        assert!(
            matches!(&r, Err(KernelError::BadParams(msg)) if msg.contains("sum apart")),
            "{r:?}"
        );
    }

    #[test]
    fn equal_similarities_pick_the_lowest_positions() {
        let Some(gpu) = test_gpu() else { return };
        let p = params(2, 2, 8, 4, 3);
        let (q, _) = inputs(&p, false, 1);
        let (scores, ids) = run(&gpu, &p, &q, &vec![0.0f32; 2 * 8 * 2 * 4]).unwrap();
        assert_eq!(scores, vec![0.0; 12]);
        assert_eq!(ids, [0, 1, 2].repeat(4));
    }

    #[test]
    fn bad_sizes_are_refused() {
        let Some(gpu) = test_gpu() else { return };
        let p = params(2, 1, 257, 2, 4);
        let (q, keys) = (vec![0.0f32; 2 * 2 * 2], vec![0.0f32; 257 * 2 * 2]);
        let Err(KernelError::BadParams(msg)) = run(&gpu, &p, &q, &keys) else { panic!() };
        assert!(msg.contains("`num_keys` 257 exceeds"), "{msg}");
        let p = params(2, 2, 4, 3, 2);
        let (dq, dk) = (gpu.zeros::<f32>(24).unwrap(), gpu.zeros::<f32>(48).unwrap());
        let mut scores = gpu.zeros::<f32>(7).unwrap();
        let mut ids = gpu.stream().clone_htod(&[0i64; 8]).unwrap();
        let r = cuda::pk_topk(&gpu, &p, &dq, &dk, &mut scores, &mut ids);
        assert!(matches!(r, Err(KernelError::BadParams(m)) if m.contains("`scores` has 7")));
        let dq = gpu.zeros::<f32>(23).unwrap();
        let mut scores = gpu.zeros::<f32>(8).unwrap();
        let r = cuda::pk_topk(&gpu, &p, &dq, &dk, &mut scores, &mut ids);
        assert!(matches!(r, Err(KernelError::BadParams(m)) if m.contains("`q` has 23")));
    }

    fn arb_gpu_params() -> impl Strategy<Value = PkTopKParams> {
        (0usize..5, 1usize..4, 1usize..=256, 0usize..40)
            .prop_flat_map(|(r, h, nk, half)| (0..=nk).prop_map(move |k| params(r, h, nk, half, k)))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn random_shapes_match_the_cpu_kernel(p in arb_gpu_params(), seed in any::<u64>()) {
            check_all(p, seed);
        }
    }
}
