use proptest::prelude::*;

use super::cpu::erfc;
use super::*;
use crate::testutil::{assert_close, Rng};
use crate::KernelError;

/// `(x, erf(x), erfc(x))` from CPython's `math.erf` / `math.erfc`.
const ERF_TABLE: &[(f64, f64, f64)] = &[
    (0.0, 0.0, 1.0),
    (1e-08, 1.1283791670955126e-08, 0.9999999887162083),
    (0.001, 0.0011283787909692365, 0.9988716212090307),
    (0.1, 0.1124629160182849, 0.8875370839817152),
    (0.5, 0.5204998778130465, 0.4795001221869535),
    (1.0, 0.8427007929497149, 0.15729920705028513),
    (1.5, 0.9661051464753108, 0.033894853524689274),
    (2.0, 0.9953222650189527, 0.004677734981047265),
    (2.4999, 0.9995928300996666, 0.0004071699003334514),
    (2.5, 0.999593047982555, 0.0004069520174449589),
    (3.0, 0.9999779095030014, 2.2090496998585438e-05),
    (3.7, 0.9999998328489421, 1.6715105790914596e-07),
    (4.5, 0.9999999998033839, 1.9661604415428873e-10),
    (5.5, 0.9999999999999927, 7.357847917974398e-15),
    (6.0, 1.0, 2.1519736712498916e-17),
];

/// Relative accuracy of the `f64` erf/erfc against the table.
const ERF_RTOL: f64 = 1e-13;
/// f32 activations against the f64 formulas: a few ulps of the result.
const ACT_ATOL: f64 = 1e-37;
const ACT_RTOL: f64 = 4e-7;

fn reference(act: Act, x: f32) -> f64 {
    let x = f64::from(x);
    match act {
        Act::Silu => x / (1.0 + (-x).exp()),
        Act::Relu => x.max(0.0),
        Act::Gelu => 0.5 * x * erfc(-x / 2f64.sqrt()),
        Act::GeluTanh => {
            let inner = (2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x.powi(3));
            0.5 * x * (1.0 + inner.tanh())
        }
    }
}

fn reference_softplus(z: f32) -> f64 {
    let z = f64::from(z);
    if z > 20.0 {
        z
    } else {
        z.exp().ln_1p()
    }
}

const ACTS: [Act; 4] = [Act::Silu, Act::Relu, Act::Gelu, Act::GeluTanh];

#[test]
fn erf_matches_table() {
    for &(x, e, c) in ERF_TABLE {
        for (got, want, what) in [
            (erf(x), e, "erf"),
            (erf(-x), -e, "erf(-x)"),
            (erfc(x), c, "erfc"),
            (erfc(-x), 2.0 - c, "erfc(-x)"),
        ] {
            let err = (got - want).abs();
            assert!(err <= ERF_RTOL * want.abs(), "{what}({x}) = {got:e}, want {want:e}");
        }
    }
    assert!(erf(f64::NAN).is_nan());
    assert_eq!(erf(f64::INFINITY), 1.0);
    assert_eq!(erf(f64::NEG_INFINITY), -1.0);
}

#[test]
fn activations_on_a_grid() {
    let xs: Vec<f32> = (-4000..=4000).map(|i| i as f32 / 200.0).collect();
    for act in ACTS {
        let got: Vec<f32> = xs.iter().map(|&x| act.apply(x)).collect();
        let want: Vec<f64> = xs.iter().map(|&x| reference(act, x)).collect();
        let atol = if act == Act::GeluTanh { 2e-7 } else { ACT_ATOL };
        assert_close(&got, &want, atol, ACT_RTOL, &format!("{act:?} on [-20, 20]"));
    }
}

#[test]
fn activation_edge_values() {
    for act in ACTS {
        assert_eq!(act.apply(0.0), 0.0, "{act:?}(0)");
        assert!(act.apply(f32::NAN).is_nan(), "{act:?}(NaN)");
        assert_eq!(act.apply(1e30), 1e30, "{act:?}(1e30)");
        assert_eq!(act.apply(-1e30), 0.0, "{act:?}(-1e30)");
    }
    let tiny = Act::Gelu.apply(-10.0);
    assert!(
        tiny < 0.0 && (f64::from(tiny) / -7.619853e-23 - 1.0).abs() < 1e-6,
        "gelu(-10) = {tiny:e}"
    );
}

#[test]
fn softplus_threshold_and_tails() {
    let zs: Vec<f32> =
        (-2000..=2000).map(|i| i as f32 / 40.0).chain([20.0, 20.000002, 88.0, 1e30]).collect();
    let got: Vec<f32> = zs.iter().map(|&z| softplus(z)).collect();
    let want: Vec<f64> = zs.iter().map(|&z| reference_softplus(z)).collect();
    assert_close(&got, &want, 1e-37, ACT_RTOL, "softplus");
    assert_eq!(softplus(20.5), 20.5);
    assert!(softplus(-100.0) > 0.0);
}

#[test]
fn act_mul_edge_shapes() {
    for n in [0, 1, 31, 32, 33, 1025, 100_000] {
        let mut rng = Rng::new(n as u64);
        let gate = rng.vec(n, -6.0, 6.0);
        let up = rng.vec(n, -2.0, 2.0);
        for act in ACTS {
            let got = act_mul(act, &gate, &up).unwrap();
            let want: Vec<f64> =
                gate.iter().zip(&up).map(|(&g, &u)| reference(act, g) * f64::from(u)).collect();
            assert_close(&got, &want, 2e-7, 1e-6, &format!("act_mul {act:?} n={n}"));
        }
    }
}

#[test]
fn act_mul_rejects_mismatched_lengths() {
    let Err(KernelError::BadParams(msg)) = act_mul(Act::Silu, &[1.0; 3], &[1.0; 2]) else {
        panic!("accepted mismatched lengths");
    };
    assert!(msg.contains("`up` has 2 elements, expected 3"), "{msg}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn act_mul_random(n in 0usize..300, seed: u64, which in 0usize..4) {
        let act = ACTS[which];
        let mut rng = Rng::new(seed);
        let gate = rng.vec(n, -30.0, 30.0);
        let up = rng.vec(n, -3.0, 3.0);
        let got = act_mul(act, &gate, &up).unwrap();
        let want: Vec<f64> = gate.iter().zip(&up).map(|(&g, &u)| reference(act, g) * f64::from(u)).collect();
        assert_close(&got, &want, 1e-6, 1e-6, &format!("act_mul {act:?} n={n}"));
    }
}

/// CUDA against the CPU kernel. f32: the device's expf/erfcf/tanhf are within a few ulps of the host's, the
/// rounding of x/√2 moves GELU's tail by about x²·2⁻²⁴ relative, and `1 + tanh` cancels for negative inputs
/// (about |x|·2⁻²⁴ absolute, times |up| ≤ 3); bf16 rounds the activation and then the product (2⁻⁹ each), f16 the
/// same two (2⁻¹² each).
mod gpu {
    use super::*;
    use crate::cuda::{test_gpu, Elem, Gpu};

    const ATOL: f64 = 4e-6;
    const RTOL_F32: f64 = 1e-5;
    const RTOL_BF16: f64 = 2.0 * 0.00390625;
    const RTOL_F16: f64 = 2.0 * 0.00048828125;

    fn run<T: Elem>(gpu: &Gpu, act: Act, gate: &[T], up: &[T]) -> crate::Result<Vec<f32>> {
        let (dg, du) = (gpu.upload(gate)?, gpu.upload(up)?);
        let mut y = gpu.upload(&vec![T::from_f32(f32::NAN); gate.len()])?;
        cuda::act_mul(gpu, act, &dg, &du, &mut y)?;
        Ok(gpu.download(&y)?.into_iter().map(|v| v.to_f32()).collect())
    }

    fn check<T: Elem>(gpu: &Gpu, act: Act, gate: &[f32], up: &[f32], rtol: f64) {
        let to = |v: &[f32]| v.iter().map(|&x| T::from_f32(x)).collect::<Vec<T>>();
        let (gate, up) = (to(gate), to(up));
        let wide = |v: &[T]| v.iter().map(|x| x.to_f32()).collect::<Vec<f32>>();
        let want: Vec<f64> =
            act_mul(act, &wide(&gate), &wide(&up)).unwrap().into_iter().map(f64::from).collect();
        let got = run(gpu, act, &gate, &up).unwrap();
        assert_close(
            &got,
            &want,
            ATOL,
            rtol,
            &format!("act_mul_{} {act:?} n={}", T::NAME, gate.len()),
        );
    }

    fn check_all(gate: &[f32], up: &[f32]) {
        let Some(gpu) = test_gpu() else { return };
        for act in ACTS {
            check::<f32>(&gpu, act, gate, up, RTOL_F32);
            check::<half::bf16>(&gpu, act, gate, up, RTOL_BF16);
            check::<half::f16>(&gpu, act, gate, up, RTOL_F16);
        }
    }

    #[test]
    fn edge_shapes_match_the_cpu_kernel() {
        for n in [0, 1, 3, 4, 5, 31, 1025, 4099, (1 << 20) + 3] {
            let mut rng = Rng::new(n as u64);
            check_all(&rng.vec(n, -8.0, 8.0), &rng.vec(n, -3.0, 3.0));
        }
        let grid: Vec<f32> = (-4000..=4000).map(|i| i as f32 / 200.0).collect();
        check_all(&grid, &vec![1.0; grid.len()]);
    }

    #[test]
    fn edge_values_match_the_cpu_kernel() {
        let Some(gpu) = test_gpu() else { return };
        let gate = [0.0, -0.0, 1e30, -1e30, 88.0, -88.0, 1e-30, -1e-30, f32::NAN];
        for act in ACTS {
            let got = run::<f32>(&gpu, act, &gate, &[1.0; 9]).unwrap();
            let want = act_mul(act, &gate, &[1.0; 9]).unwrap();
            for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
                let same = (g.is_nan() && w.is_nan()) || (g - w).abs() <= 1e-6 * w.abs();
                assert!(same, "{act:?}({}) = {g}, the CPU gives {w}", gate[i]);
            }
        }
    }

    #[test]
    fn mismatched_lengths_are_refused() {
        let Some(gpu) = test_gpu() else { return };
        let Err(KernelError::BadParams(msg)) = run::<f32>(&gpu, Act::Silu, &[1.0; 3], &[1.0; 2])
        else {
            panic!()
        };
        assert!(msg.contains("`up` has 2 elements, expected 3"), "{msg}");
        let (g, u) = (gpu.zeros::<f32>(3).unwrap(), gpu.zeros::<f32>(3).unwrap());
        let mut y = gpu.zeros::<f32>(4).unwrap();
        let r = cuda::act_mul(&gpu, Act::Relu, &g, &u, &mut y);
        assert!(matches!(r, Err(KernelError::BadParams(m)) if m.contains("`y` has 4")));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn random_shapes_match_the_cpu_kernel(n in 0usize..5000, seed in any::<u64>()) {
            let mut rng = Rng::new(seed);
            check_all(&rng.vec(n, -30.0, 30.0), &rng.vec(n, -3.0, 3.0));
        }
    }
}
