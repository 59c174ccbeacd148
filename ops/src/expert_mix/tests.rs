use proptest::prelude::*;

use super::*;
use crate::act::{erf, Act};
use crate::testutil::{assert_close, max_abs, Rng};
use crate::KernelError;

/// f32 softmax and activation against f64, relative to the largest output.
const ATOL: f64 = 2e-6;
const RTOL: f64 = 1e-5;

fn act64(act: Act, x: f64) -> f64 {
    match act {
        Act::Silu => x / (1.0 + (-x).exp()),
        Act::Relu => x.max(0.0),
        Act::Gelu => 0.5 * x * (1.0 + erf(x / 2f64.sqrt())),
        Act::GeluTanh => {
            0.5 * x
                * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x.powi(3))).tanh())
        }
    }
}

struct Case {
    p: ExpertMixParams,
    x: Vec<f32>,
    scores: Vec<f32>,
    ids: Vec<i64>,
    down: Vec<f32>,
    up: Vec<f32>,
}

impl Case {
    fn random(p: ExpertMixParams, seed: u64) -> Case {
        let mut rng = Rng::new(seed);
        let n = p.rows * p.heads * p.k;
        Case {
            x: rng.vec(p.rows * p.dim, -1.0, 1.0),
            scores: rng.vec(n, -3.0, 3.0),
            ids: (0..n).map(|_| rng.below(p.num_experts.max(1)) as i64).collect(),
            down: rng.vec(p.num_experts * p.dim, -0.5, 0.5),
            up: rng.vec(p.num_experts * p.dim, -1.0, 1.0),
            p,
        }
    }

    fn run(&self, act: Act, order: ExpertAct, norm: bool) -> Result<Vec<f32>> {
        expert_mix(
            &self.p,
            act,
            order,
            norm,
            &self.x,
            &self.scores,
            &self.ids,
            &self.down,
            &self.up,
        )
    }
}

fn reference(c: &Case, act: Act, order: ExpertAct, norm: bool) -> Vec<f64> {
    let p = &c.p;
    let mut out = vec![0.0; p.rows * p.dim];
    for r in 0..p.rows {
        for h in 0..p.heads {
            let at = (r * p.heads + h) * p.k;
            let s: Vec<f64> = c.scores[at..at + p.k].iter().map(|&s| f64::from(s)).collect();
            let max = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = s.iter().map(|v| (v - max).exp()).collect();
            let mut probs: Vec<f64> = e.iter().map(|v| v / e.iter().sum::<f64>()).collect();
            if norm {
                let total: f64 = probs.iter().sum();
                probs.iter_mut().for_each(|v| *v /= total);
            }
            for (&id, &prob) in c.ids[at..at + p.k].iter().zip(&probs) {
                let e = id as usize;
                let d: f64 = (0..p.dim)
                    .map(|i| f64::from(c.x[r * p.dim + i]) * f64::from(c.down[e * p.dim + i]))
                    .sum();
                let w = match order {
                    ExpertAct::BeforeSoftmax => act64(act, d) * prob,
                    ExpertAct::AfterSoftmax => act64(act, d * prob),
                };
                for i in 0..p.dim {
                    out[r * p.dim + i] += w * f64::from(c.up[e * p.dim + i]);
                }
            }
        }
    }
    out
}

const ACTS: [Act; 4] = [Act::Silu, Act::Relu, Act::Gelu, Act::GeluTanh];

fn check(c: &Case, act: Act, order: ExpertAct, norm: bool) {
    let got = c.run(act, order, norm).unwrap();
    let want = reference(c, act, order, norm);
    let what = format!("expert_mix {:?} {act:?} {order:?} norm={norm}", c.p);
    assert_close(&got, &want, ATOL * (1.0 + max_abs(&want)), RTOL, &what);
}

fn check_all(c: &Case) {
    for act in ACTS {
        for order in [ExpertAct::BeforeSoftmax, ExpertAct::AfterSoftmax] {
            for norm in [false, true] {
                check(c, act, order, norm);
            }
        }
    }
}

fn params(rows: usize, heads: usize, k: usize, dim: usize, num_experts: usize) -> ExpertMixParams {
    ExpertMixParams { rows, heads, k, dim, num_experts }
}

#[test]
fn edge_shapes() {
    let shapes = [
        (0, 2, 3, 8, 10),
        (3, 0, 3, 8, 10),
        (3, 2, 0, 8, 10),
        (3, 2, 3, 0, 10),
        (1, 1, 1, 1, 1),
        (3, 2, 3, 7, 5),
        (2, 4, 8, 31, 64),
        (2, 1, 32, 32, 1024),
        (3, 2, 2, 33, 16),
        (16, 4, 8, 256, 1024),
    ];
    for (i, &(r, h, k, d, e)) in shapes.iter().enumerate() {
        check_all(&Case::random(params(r, h, k, d, e), i as u64));
    }
}

#[test]
fn single_expert_has_weight_one() {
    let c = Case::random(params(4, 1, 1, 9, 6), 3);
    let got = c.run(Act::Relu, ExpertAct::BeforeSoftmax, false).unwrap();
    for r in 0..4 {
        let e = c.ids[r] as usize;
        let d: f32 = (0..9).map(|i| c.x[r * 9 + i] * c.down[e * 9 + i]).sum();
        let want: Vec<f64> =
            (0..9).map(|i| f64::from(d.max(0.0)) * f64::from(c.up[e * 9 + i])).collect();
        assert_close(&got[r * 9..][..9], &want, 1e-6, 1e-5, &format!("k = 1, row {r}"));
    }
    check_all(&c);
}

#[test]
fn repeated_ids_add_up() {
    let mut c = Case::random(params(3, 2, 4, 12, 3), 4);
    c.ids.iter_mut().for_each(|id| *id = 1);
    check_all(&c);
    let got = c.run(Act::Silu, ExpertAct::BeforeSoftmax, false).unwrap();
    for r in 0..3 {
        let d: f64 = (0..12).map(|i| f64::from(c.x[r * 12 + i]) * f64::from(c.down[12 + i])).sum();
        let want: Vec<f64> =
            (0..12).map(|i| 2.0 * act64(Act::Silu, d) * f64::from(c.up[12 + i])).collect();
        assert_close(
            &got[r * 12..][..12],
            &want,
            1e-6,
            1e-5,
            &format!("one expert in every slot, row {r}"),
        );
    }
}

#[test]
fn bad_ids_are_named_with_their_position() {
    let mut c = Case::random(params(2, 1, 2, 4, 5), 5);
    c.ids[3] = 5;
    let Err(KernelError::BadParams(msg)) = c.run(Act::Silu, ExpertAct::BeforeSoftmax, false) else {
        panic!()
    };
    assert!(msg.contains("`ids[3]` = 5 is outside the 5 experts"), "{msg}");
    c.ids[3] = -2;
    let Err(KernelError::BadParams(msg)) = c.run(Act::Silu, ExpertAct::BeforeSoftmax, false) else {
        panic!()
    };
    assert!(msg.contains("`ids[3]` = -2"), "{msg}");
    c.ids[3] = 0;
    c.up.pop();
    let Err(KernelError::BadParams(msg)) = c.run(Act::Silu, ExpertAct::BeforeSoftmax, false) else {
        panic!()
    };
    assert!(msg.contains("`up` has 19 elements, expected 20"), "{msg}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn random(r in 0usize..6, h in 1usize..4, k in 1usize..9, d in 0usize..40, e in 1usize..50, seed: u64, which in 0usize..4) {
        let c = Case::random(params(r, h, k, d, e), seed);
        for order in [ExpertAct::BeforeSoftmax, ExpertAct::AfterSoftmax] {
            check(&c, ACTS[which], order, seed % 2 == 0);
        }
    }
}

/// Launch choices, checked without a GPU.
mod plan {
    use crate::expert_mix::cuda::plan;

    /// Experts enough that no many-row call computes its down dots with a GEMM.
    const MANY: usize = 1 << 20;

    #[test]
    fn few_rows_split_their_columns_and_many_rows_do_not() {
        let one = plan(1, 1024, 32, MANY);
        assert_eq!((one.slices, one.width, one.lanes), (16, 64, 8));
        assert!(!one.whole_rows && one.split);
        let many = plan(4096, 1024, 32, MANY);
        assert_eq!((many.whole_rows, many.slices, many.width), (true, 1, 1024));
        assert_eq!(plan(16, 1024, 32, MANY).slices, 16);
        assert_eq!(plan(4, 3, 2, MANY).slices, 1);
    }

    #[test]
    fn down_dots_get_a_launch_of_their_own_when_a_row_is_cut_into_many_slices() {
        for rows in [1, 2, 16, 33] {
            assert!(plan(rows, 1024, 32, MANY).split, "{rows} rows");
        }
        assert!(!plan(40, 1024, 32, MANY).split);
        assert!(!plan(1, 448, 32, MANY).split);
        assert!(plan(1, 449, 32, MANY).split);
        assert!(!plan(1, 1024, 0, MANY).split);
        assert!(!plan(4096, 1024, 32, MANY).split);
    }

    #[test]
    fn many_rows_with_few_experts_per_slot_take_their_down_dots_from_a_gemm() {
        assert!(plan(4096, 1024, 32, 1024).dense);
        assert!(plan(264, 1024, 32, 64 * 32).dense);
        assert!(!plan(264, 1024, 32, 64 * 32 + 1).dense, "too many experts per slot");
        assert!(!plan(263, 1024, 32, 1024).dense, "few rows");
        assert!(!plan(4096, 1024, 0, 1).dense, "no slots");
        assert!(!plan(70_000, 1024, 32, 1024).dense, "scratch over 256 MiB");
        assert!(plan(65_536, 1024, 32, 1024).dense);
        assert!(!plan(4096, 1024, 32, 16384).dense, "the Cheems default of 16384 experts");
    }

    #[test]
    fn rows_that_fill_the_device_take_the_whole_row_kernel() {
        assert!(!plan(263, 1024, 32, MANY).whole_rows);
        assert_eq!(plan(263, 1024, 32, MANY).slices, 2);
        for rows in [264, 265, 300, 4096, 1 << 20] {
            for dim in [1, 7, 1024, 1025] {
                let p = plan(rows, dim, 32, MANY);
                assert!(p.whole_rows && p.slices == 1 && p.width >= dim, "{p:?}");
            }
        }
    }

    #[test]
    fn dot_lanes_follow_the_experts_per_row() {
        assert_eq!(plan(1, 64, 1, MANY).lanes, 32);
        assert_eq!(plan(1, 64, 8, MANY).lanes, 32);
        assert_eq!(plan(1, 64, 9, MANY).lanes, 16);
        assert_eq!(plan(1, 64, 33, MANY).lanes, 8);
        assert_eq!(plan(1, 64, 1024, MANY).lanes, 8);
        assert_eq!(plan(1, 64, 0, MANY).lanes, 32);
    }

    #[test]
    fn slices_cover_every_column_once() {
        for rows in [1, 2, 7, 16, 100, 263, 264, 265, 4096] {
            for dim in [1, 3, 8, 9, 63, 64, 65, 130, 1000, 1024, 1025, 4096, 8191] {
                for sel in [1, 7, 32, 300, 1024] {
                    let p = plan(rows, dim, sel, MANY);
                    assert_eq!(p.width % 8, 0, "{p:?}");
                    assert!(p.slices * p.width >= dim && (p.slices - 1) * p.width < dim, "{p:?}");
                    assert!((1..=264).contains(&p.slices), "{p:?}");
                    assert!(p.lanes.is_power_of_two() && (8..=32).contains(&p.lanes), "{p:?}");
                }
            }
        }
    }
}

/// CUDA against the CPU kernel, within a worst-case f32 rounding bound computed per element (see [`gpu::bound`]);
/// bf16 adds one rounding of the output (2⁻⁸ relative, with margin), f16 one of its own (2⁻¹¹, with margin).
mod gpu {
    use super::*;
    use crate::cuda::{test_gpu, Elem, Gpu};

    const U: f64 = 1.0 / (1u64 << 24) as f64;
    /// Largest |act'| of the four activations (GELU's is about 1.13), with margin.
    const LIPSCHITZ: f64 = 1.2;
    /// (atol, rtol) on top of the f32 bound: none in f32; one output rounding in bf16 and f16, whose outputs below
    /// 2⁻¹⁴ are subnormal, rounded to steps of 2⁻²⁴ (off by up to half a step).
    const TOL_F32: (f64, f64) = (0.0, 0.0);
    const TOL_BF16: (f64, f64) = (0.0, 0.00390625);
    const TOL_F16: (f64, f64) = (2.98023223876953125e-8, 0.00048828125);

    /// Error of an f32 activation: a few ulps, the rounding of erfc's argument (z² ulps of GELU's tail), and an
    /// absolute ulp of z where `1 + tanh` cancels.
    fn act_error(act: Act, z: f64) -> f64 {
        U * ((16.0 + z * z) * act64(act, z).abs() + 2.0 * z.abs())
    }

    /// Bound on |GPU − CPU| per output element: twice the worst-case f32 error of the kernel against the exact
    /// value (a length-n f32 sum is off by at most n·u·Σ|terms|, u = 2⁻²⁴), which also covers the CPU kernel's own
    /// smaller error. The dot's error reaches w through the activation (Lipschitz ≤ 1.2); the softmax weights
    /// carry 2k + 10 roundings (`norm_topk` divides by a sum that is 1 in exact arithmetic).
    pub(super) fn bound(c: &Case, act: Act, order: ExpertAct) -> Vec<f64> {
        let p = &c.p;
        let (dim, k) = (p.dim, p.k);
        let mut err = vec![0.0; p.rows * dim];
        let mut mag = vec![0.0; p.rows * dim];
        for r in 0..p.rows {
            for h in 0..p.heads {
                let at = (r * p.heads + h) * k;
                let s: Vec<f64> = c.scores[at..at + k].iter().map(|&s| f64::from(s)).collect();
                let max = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = s.iter().map(|v| (v - max).exp()).collect();
                let total: f64 = e.iter().sum();
                for (j, &id) in c.ids[at..at + k].iter().enumerate() {
                    let prob = e[j] / total;
                    let eo = id as usize * dim;
                    let terms =
                        (0..dim).map(|i| f64::from(c.x[r * dim + i]) * f64::from(c.down[eo + i]));
                    let (d, abs) = terms.fold((0.0, 0.0), |(d, a), t| (d + t, a + t.abs()));
                    let dd = U * (dim as f64 * abs + d.abs());
                    let dp = (2 * k + 10) as f64 * U * prob;
                    let (w, dw) = match order {
                        ExpertAct::BeforeSoftmax => {
                            let a = act64(act, d);
                            let w = a * prob;
                            let dw = LIPSCHITZ * dd * prob
                                + a.abs() * dp
                                + act_error(act, d) * prob
                                + U * w.abs();
                            (w, dw)
                        }
                        ExpertAct::AfterSoftmax => {
                            let y = d * prob;
                            let dy = dd * prob + d.abs() * dp + U * y.abs();
                            let w = act64(act, y);
                            (w, LIPSCHITZ * dy + act_error(act, y) + U * w.abs())
                        }
                    };
                    for col in 0..dim {
                        let u = f64::from(c.up[eo + col]).abs();
                        err[r * dim + col] += dw * u;
                        mag[r * dim + col] += w.abs() * u;
                    }
                }
            }
        }
        let n = (p.heads * k) as f64;
        err.iter().zip(&mag).map(|(&e, &m)| 2.0 * (e + (n + 2.0) * U * m)).collect()
    }

    /// `|got − want| ≤ bound + rtol·|want|` elementwise; NaN fails.
    fn assert_within(
        got: &[f32],
        want: &[f32],
        bound: &[f64],
        (atol, rtol): (f64, f64),
        what: &str,
    ) {
        assert_eq!(got.len(), want.len(), "{what}: length");
        for (i, ((&g, &w), &b)) in got.iter().zip(want).zip(bound).enumerate() {
            let excess =
                (f64::from(g) - f64::from(w)).abs() - (b + atol + rtol * f64::from(w).abs());
            assert!(
                !(excess.is_nan() || excess > 0.0),
                "{what}: element {i}: got {g}, want {w}, bound {b:e}"
            );
        }
    }

    /// The case with x, down and up rounded to T (the CPU kernel then sees exactly the GPU's inputs).
    fn rounded<T: Elem>(c: &Case) -> Case {
        let r = |v: &[f32]| v.iter().map(|&x| T::from_f32(x).to_f32()).collect();
        Case {
            p: c.p,
            x: r(&c.x),
            scores: c.scores.clone(),
            ids: c.ids.clone(),
            down: r(&c.down),
            up: r(&c.up),
        }
    }

    fn run<T: Elem>(
        gpu: &Gpu,
        c: &Case,
        act: Act,
        order: ExpertAct,
        norm: bool,
    ) -> crate::Result<Vec<f32>> {
        run_add::<T>(gpu, c, act, order, norm, None)
    }

    /// The mixture on the GPU, with the addend `add` (values of `T`) when given.
    fn run_add<T: Elem>(
        gpu: &Gpu,
        c: &Case,
        act: Act,
        order: ExpertAct,
        norm: bool,
        add: Option<&[f32]>,
    ) -> crate::Result<Vec<f32>> {
        let to = |v: &[f32]| v.iter().map(|&x| T::from_f32(x)).collect::<Vec<T>>();
        let (x, down, up) =
            (gpu.upload(&to(&c.x))?, gpu.upload(&to(&c.down))?, gpu.upload(&to(&c.up))?);
        let scores = gpu.upload(&c.scores)?;
        let ids = gpu.stream().clone_htod(&c.ids).unwrap();
        let add = add.map(|a| gpu.upload(&to(a))).transpose()?;
        let mut out = gpu.upload(&vec![T::from_f32(f32::NAN); c.p.rows * c.p.dim])?;
        let (o, a) = (order, add.as_ref());
        cuda::expert_mix(gpu, &c.p, act, o, norm, &x, &scores, &ids, &down, &up, a, &mut out)?;
        Ok(gpu.download(&out)?.into_iter().map(|v| v.to_f32()).collect())
    }

    /// With an addend, every plan (split, sliced, whole rows with and without the GEMM's down dots; 16-byte and scalar
    /// accesses; rows with a bad id) gives bit for bit the mixture followed by the elementwise add kernel; NaN rows
    /// stay NaN.
    fn check_add<T: Elem>(gpu: &Gpu, c: &Case, what: &str) {
        let n = c.p.rows * c.p.dim;
        let add: Vec<f32> = Rng::new(n as u64)
            .vec(n, -2.0, 2.0)
            .into_iter()
            .map(|v| T::from_f32(v).to_f32())
            .collect();
        let (act, order) = (Act::Silu, ExpertAct::BeforeSoftmax);
        let fused = run_add::<T>(gpu, c, act, order, false, Some(&add)).unwrap();
        let mix = run::<T>(gpu, c, act, order, false).unwrap();
        let to = |v: &[f32]| v.iter().map(|&x| T::from_f32(x)).collect::<Vec<T>>();
        let (dm, da) = (gpu.upload(&to(&mix)).unwrap(), gpu.upload(&to(&add)).unwrap());
        let mut sum = gpu.upload(&vec![T::from_f32(f32::NAN); n]).unwrap();
        crate::elementwise::cuda::add(gpu, &dm, &da, &mut sum).unwrap();
        let want: Vec<f32> = gpu.download(&sum).unwrap().into_iter().map(|v| v.to_f32()).collect();
        for (i, (g, w)) in fused.iter().zip(&want).enumerate() {
            assert!(
                g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan()),
                "expert_mix_{} + add {what} {:?}: element {i}: fused {g}, unfused {w}",
                T::NAME,
                c.p
            );
        }
    }

    #[test]
    fn an_addend_matches_the_mixture_then_the_add_kernel() {
        let Some(gpu) = test_gpu() else { return };
        let shapes = [
            (1, 4, 8, 1024, 1024),
            (2, 2, 8, 1025, 40),
            (3, 2, 3, 7, 5),
            (1, 1, 1, 4096, 3),
            (300, 4, 8, 1024, 1024),
            (265, 2, 3, 7, 5),
            (2, 4, 8, 31, 64),
            (266, 1, 1, 64, 70),
            (267, 1, 2, 7, 300),
        ];
        for (i, &(r, h, k, d, e)) in shapes.iter().enumerate() {
            let mut c = Case::random(params(r, h, k, d, e), 600 + i as u64);
            if i % 2 == 0 {
                c.ids[0] = e as i64;
            }
            check_add::<f32>(&gpu, &c, "edge");
            check_add::<half::bf16>(&gpu, &c, "edge");
            check_add::<half::f16>(&gpu, &c, "edge");
        }
        let c = Case::random(params(2, 1, 2, 4, 5), 9);
        let (act, order) = (Act::Silu, ExpertAct::BeforeSoftmax);
        let Err(KernelError::BadParams(msg)) =
            run_add::<f32>(&gpu, &c, act, order, false, Some(&[0.0; 7]))
        else {
            panic!()
        };
        assert!(msg.contains("`add` has 7 elements"), "{msg}");
    }

    fn check<T: Elem>(
        gpu: &Gpu,
        c: &Case,
        act: Act,
        order: ExpertAct,
        norm: bool,
        tol: (f64, f64),
    ) {
        let c = rounded::<T>(c);
        let want = c.run(act, order, norm).unwrap();
        let got = run::<T>(gpu, &c, act, order, norm).unwrap();
        let what = format!("expert_mix_{} {:?} {act:?} {order:?} norm={norm}", T::NAME, c.p);
        assert_within(&got, &want, &bound(&c, act, order), tol, &what);
    }

    fn check_all(c: &Case) {
        let Some(gpu) = test_gpu() else { return };
        for act in ACTS {
            for order in [ExpertAct::BeforeSoftmax, ExpertAct::AfterSoftmax] {
                for norm in [false, true] {
                    check::<f32>(&gpu, c, act, order, norm, TOL_F32);
                    check::<half::bf16>(&gpu, c, act, order, norm, TOL_BF16);
                    check::<half::f16>(&gpu, c, act, order, norm, TOL_F16);
                }
            }
        }
    }

    #[test]
    fn edge_shapes_match_the_cpu_kernel() {
        let shapes = [
            (0, 2, 3, 8, 10),
            (3, 0, 3, 8, 10),
            (3, 2, 0, 8, 10),
            (3, 2, 3, 0, 10),
            (1, 1, 1, 1, 1),
            (4, 1, 1, 9, 6),
            (3, 2, 3, 7, 5),
            (2, 4, 8, 31, 64),
            (2, 1, 32, 32, 1024),
            (3, 2, 2, 33, 16),
            (16, 4, 8, 256, 1024),
            (2, 2, 8, 1025, 40),
            (2, 1, 4, 4096, 8),
            (1, 32, 32, 64, 100),
            (2, 1, 40, 12, 50),
            (1, 4, 8, 1024, 1024),
            (5, 4, 8, 1024, 1024),
            (300, 4, 8, 1024, 1024),
            (264, 1, 1, 1, 1),
            (265, 2, 3, 7, 5),
            (270, 3, 5, 130, 40),
            (300, 2, 2, 33, 16),
            (280, 1, 40, 12, 50),
            (264, 32, 32, 64, 100),
            (270, 1, 1, 40, 100),
            (300, 1, 2, 33, 200),
            (3, 4, 8, 1000, 64),
            (2, 3, 5, 130, 40),
            (1, 1, 1, 4096, 3),
            (1, 2, 3, 520, 9),
        ];
        for (i, &(r, h, k, d, e)) in shapes.iter().enumerate() {
            check_all(&Case::random(params(r, h, k, d, e), 300 + i as u64));
        }
    }

    #[test]
    fn repeated_ids_add_up() {
        let mut c = Case::random(params(3, 2, 4, 12, 3), 4);
        c.ids.iter_mut().for_each(|id| *id = 1);
        check_all(&c);
        let mut c = Case::random(params(3, 2, 4, 64, 3), 5);
        c.ids.iter_mut().for_each(|id| *id = 2);
        check_all(&c);
    }

    /// With `d = 1` for every expert and `up[:, 0] = 1`, `relu(d)·p` sums the routing weights: `heads` per row.
    #[test]
    fn routing_weights_sum_to_one_per_head() {
        let Some(gpu) = test_gpu() else { return };
        let (rows, heads, k, dim, e) = (5, 3, 7, 8, 20);
        let mut c = Case::random(params(rows, heads, k, dim, e), 6);
        c.x.iter_mut().enumerate().for_each(|(i, v)| *v = if i % dim == 0 { 1.0 } else { 0.0 });
        c.down.iter_mut().enumerate().for_each(|(i, v)| *v = if i % dim == 0 { 1.0 } else { 0.0 });
        c.up.iter_mut().enumerate().for_each(|(i, v)| *v = if i % dim == 0 { 1.0 } else { 0.0 });
        for norm in [false, true] {
            let got = run::<f32>(&gpu, &c, Act::Relu, ExpertAct::BeforeSoftmax, norm).unwrap();
            for r in 0..rows {
                let s = got[r * dim];
                assert!(
                    (s - heads as f32).abs() <= 1e-5,
                    "row {r}: weights sum to {s}, want {heads}"
                );
            }
        }
    }

    /// Through the one-launch form (dim 8) and the split form (dim 1024, see `plan`).
    #[test]
    fn rows_with_an_id_out_of_range_are_nan() {
        let Some(gpu) = test_gpu() else { return };
        for dim in [8, 1024] {
            let (heads, k, e) = (2, 3, 5);
            let mut c = Case::random(params(4, heads, k, dim, e), 7);
            let want = c.run(Act::Silu, ExpertAct::BeforeSoftmax, false).unwrap();
            let b = bound(&c, Act::Silu, ExpertAct::BeforeSoftmax);
            c.ids[heads * k + 4] = 5;
            c.ids[3 * heads * k] = -1;
            let got = run::<f32>(&gpu, &c, Act::Silu, ExpertAct::BeforeSoftmax, false).unwrap();
            for r in 0..4 {
                let row = &got[r * dim..][..dim];
                if r == 1 || r == 3 {
                    assert!(row.iter().all(|v| v.is_nan()), "dim {dim}, row {r} with a bad id");
                } else {
                    let (want, b) = (&want[r * dim..][..dim], &b[r * dim..][..dim]);
                    assert_within(
                        row,
                        want,
                        b,
                        TOL_F32,
                        &format!("dim {dim}, row {r} beside bad ids"),
                    );
                }
            }
        }
    }

    #[test]
    fn bad_sizes_are_refused() {
        let Some(gpu) = test_gpu() else { return };
        let c = Case::random(params(2, 33, 32, 4, 5), 8);
        let Err(KernelError::BadParams(msg)) =
            run::<f32>(&gpu, &c, Act::Silu, ExpertAct::BeforeSoftmax, false)
        else {
            panic!()
        };
        assert!(msg.contains("heads 33 × k 32 exceeds"), "{msg}");
        let mut c = Case::random(params(2, 1, 2, 4, 5), 9);
        c.up.pop();
        let Err(KernelError::BadParams(msg)) =
            run::<f32>(&gpu, &c, Act::Silu, ExpertAct::BeforeSoftmax, false)
        else {
            panic!()
        };
        assert!(msg.contains("`up` has 19 elements, expected 20"), "{msg}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn random_shapes_match_the_cpu_kernel(
            r in 0usize..6, h in 1usize..5, k in 1usize..33, d in 0usize..600, e in 1usize..300,
            seed in any::<u64>(), which in 0usize..4,
        ) {
            let Some(gpu) = test_gpu() else { return Ok(()) };
            let c = Case::random(params(r, h, k, d, e), seed);
            for order in [ExpertAct::BeforeSoftmax, ExpertAct::AfterSoftmax] {
                check::<f32>(&gpu, &c, ACTS[which], order, seed % 2 == 0, TOL_F32);
                check::<half::bf16>(&gpu, &c, ACTS[which], order, seed % 2 == 1, TOL_BF16);
                check::<half::f16>(&gpu, &c, ACTS[which], order, seed % 2 == 1, TOL_F16);
            }
        }
    }
}
