use proptest::prelude::*;

use super::*;
use crate::testutil::{assert_close, Rng};
use crate::KernelError;

/// f32 result against the f64 formula: a few ulps.
const ATOL: f64 = 1e-30;
const RTOL: f64 = 1e-6;

fn reference(p: &RmsNormParams, x: &[f32], w: &[f32]) -> Vec<f64> {
    let mut y = vec![0.0; x.len()];
    for r in 0..p.rows {
        let row = &x[r * p.cols..(r + 1) * p.cols];
        let mean = row.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / p.cols as f64;
        let scale = 1.0 / (mean + f64::from(p.eps)).sqrt();
        for c in 0..p.cols {
            y[r * p.cols + c] = f64::from(w[c]) * f64::from(row[c]) * scale;
        }
    }
    y
}

fn check(rows: usize, cols: usize, magnitude: f32, seed: u64) {
    let p = RmsNormParams { rows, cols, eps: 1e-6 };
    let mut rng = Rng::new(seed);
    let x = rng.vec(rows * cols, -magnitude, magnitude);
    let w = rng.vec(cols, -2.0, 2.0);
    let got = rms_norm(&p, &x, &w).unwrap();
    assert_close(
        &got,
        &reference(&p, &x, &w),
        ATOL,
        RTOL,
        &format!("rms_norm {p:?} |x|<{magnitude}"),
    );
}

#[test]
fn edge_shapes() {
    let shapes = [
        (0, 5),
        (3, 0),
        (1, 1),
        (3, 7),
        (2, 31),
        (2, 32),
        (2, 33),
        (2, 1024),
        (4, 1025),
        (1, 8192),
    ];
    for (i, &(rows, cols)) in shapes.iter().enumerate() {
        check(rows, cols, 3.0, i as u64);
    }
    check(64, 256, 1.0, 99);
}

#[test]
fn large_and_small_magnitudes_stay_finite() {
    check(3, 1000, 1e18, 1);
    check(3, 1000, 1e-3, 2);
}

#[test]
fn eps_dominates_zero_rows() {
    let p = RmsNormParams { rows: 1, cols: 4, eps: 0.25 };
    let y = rms_norm(&p, &[0.0, 0.0, 0.0, 1.0], &[1.0, 1.0, 1.0, 3.0]).unwrap();
    assert_eq!(y, [0.0, 0.0, 0.0, 3.0 * (1.0 / 0.5f32.sqrt())]);
}

#[test]
fn errors_name_the_buffer() {
    let p = RmsNormParams { rows: 2, cols: 3, eps: 1e-6 };
    let Err(KernelError::BadParams(msg)) = rms_norm(&p, &[0.0; 5], &[1.0; 3]) else { panic!() };
    assert!(msg.contains("`x` has 5 elements, expected 6"), "{msg}");
    let Err(KernelError::BadParams(msg)) = rms_norm(&p, &[0.0; 6], &[1.0; 2]) else { panic!() };
    assert!(msg.contains("`w` has 2 elements, expected 3"), "{msg}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn random(rows in 0usize..20, cols in 0usize..300, seed: u64) {
        check(rows, cols, 4.0, seed);
    }
}

/// CUDA against the CPU kernel (itself checked against the f64 formula above). f32: a few ulps of the f32
/// result; bf16: one bf16 rounding of the normalised value plus one of the product (2·2⁻⁸ relative); f16: the same
/// two roundings (2·2⁻¹¹).
mod gpu {
    use super::*;
    use crate::cuda::{test_gpu, Elem};

    const RTOL_F32: f64 = 1e-5;
    pub(super) const RTOL_BF16: f64 = 2.0 * 0.00390625;
    pub(super) const RTOL_F16: f64 = 2.0 * 0.00048828125;

    fn run<T: Elem>(rows: usize, cols: usize, seed: u64, rtol: f64) {
        let Some(gpu) = test_gpu() else { return };
        let p = RmsNormParams { rows, cols, eps: 1e-6 };
        let mut rng = Rng::new(seed);
        let x: Vec<T> = rng.vec(rows * cols, -3.0, 3.0).into_iter().map(T::from_f32).collect();
        let w: Vec<T> = rng.vec(cols, -2.0, 2.0).into_iter().map(T::from_f32).collect();
        let xf: Vec<f32> = x.iter().map(|v| v.to_f32()).collect();
        let wf: Vec<f32> = w.iter().map(|v| v.to_f32()).collect();
        let want: Vec<f64> = rms_norm(&p, &xf, &wf).unwrap().into_iter().map(f64::from).collect();
        let (dx, dw) = (gpu.upload(&x).unwrap(), gpu.upload(&w).unwrap());
        let mut dy = gpu.upload(&vec![T::from_f32(f32::NAN); rows * cols]).unwrap();
        cuda::rms_norm(&gpu, &p, &dx, &dw, &mut dy).unwrap();
        let got: Vec<f32> = gpu.download(&dy).unwrap().into_iter().map(|v| v.to_f32()).collect();
        assert_close(&got, &want, 1e-6, rtol, &format!("rms_norm_{} {rows}x{cols}", T::NAME));
    }

    #[test]
    fn edge_shapes_match_the_cpu_kernel() {
        for (i, &(rows, cols)) in
            [(0, 8), (1, 1), (3, 7), (2, 31), (2, 1024), (4, 1025), (1, 8192)].iter().enumerate()
        {
            run::<f32>(rows, cols, 100 + i as u64, RTOL_F32);
            run::<half::bf16>(rows, cols, 200 + i as u64, RTOL_BF16);
            run::<half::f16>(rows, cols, 200 + i as u64, RTOL_F16);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn random_shapes_match_the_cpu_kernel(rows in 1usize..64, cols in 1usize..3000, seed in any::<u64>()) {
            run::<f32>(rows, cols, seed, RTOL_F32);
            run::<half::bf16>(rows, cols, seed, RTOL_BF16);
            run::<half::f16>(rows, cols, seed, RTOL_F16);
        }
    }

    #[test]
    fn a_short_output_buffer_is_refused() {
        let Some(gpu) = test_gpu() else { return };
        let p = RmsNormParams { rows: 2, cols: 4, eps: 1e-6 };
        let (x, w) = (gpu.zeros::<f32>(8).unwrap(), gpu.zeros::<f32>(4).unwrap());
        let mut y = gpu.zeros::<f32>(7).unwrap();
        assert!(matches!(cuda::rms_norm(&gpu, &p, &x, &w, &mut y), Err(KernelError::BadParams(_))));
    }
}

/// The fused residual + norm against the two CPU steps (residual rounded to the dtype, then the norm).
mod gpu_fused {
    use super::gpu::{RTOL_BF16, RTOL_F16};
    use super::*;
    use crate::cuda::{test_gpu, Elem};
    use crate::elementwise::cpu::{add, scaled_residual};

    fn run<T: Elem>(rows: usize, cols: usize, scaled: bool, seed: u64, rtol: f64) {
        let Some(gpu) = test_gpu() else { return };
        let p = RmsNormParams { rows, cols, eps: 1e-6 };
        let mut rng = Rng::new(seed);
        let q =
            |v: Vec<f32>| -> Vec<f32> { v.into_iter().map(|x| T::from_f32(x).to_f32()).collect() };
        let (s, r, f, w) = (
            q(rng.vec(cols, 0.6, 1.4)),
            q(rng.vec(rows * cols, -3.0, 3.0)),
            q(rng.vec(rows * cols, -3.0, 3.0)),
            q(rng.vec(cols, -2.0, 2.0)),
        );
        let h_want =
            q(if scaled { scaled_residual(&s, &r, &f).unwrap() } else { add(&r, &f).unwrap() });
        let y_want: Vec<f64> =
            rms_norm(&p, &h_want, &w).unwrap().into_iter().map(f64::from).collect();
        let up =
            |v: &[f32]| gpu.upload(&v.iter().map(|&x| T::from_f32(x)).collect::<Vec<T>>()).unwrap();
        let (ds, dr, df, dw) = (up(&s), up(&r), up(&f), up(&w));
        let mut dh = up(&vec![f32::NAN; rows * cols]);
        let mut dy = up(&vec![f32::NAN; rows * cols]);
        cuda::residual_rms_norm(&gpu, &p, scaled.then_some(&ds), &dr, &df, &dw, &mut dh, &mut dy)
            .unwrap();
        let back = |d: &cudarc::driver::CudaSlice<T>| -> Vec<f32> {
            gpu.download(d).unwrap().into_iter().map(|v| v.to_f32()).collect()
        };
        assert_eq!(back(&dh), h_want, "residual {}x{} scaled {scaled}", rows, cols);
        assert_close(
            &back(&dy),
            &y_want,
            1e-6,
            rtol,
            &format!("residual_rms_norm_{} {rows}x{cols}", T::NAME),
        );
    }

    #[test]
    fn fused_residual_norm_matches_the_two_cpu_steps() {
        for (i, &(rows, cols)) in
            [(0, 8), (1, 1), (3, 7), (2, 1024), (4, 1025), (5, 64)].iter().enumerate()
        {
            for scaled in [false, true] {
                run::<f32>(rows, cols, scaled, 300 + i as u64, 1e-5);
                run::<half::bf16>(rows, cols, scaled, 400 + i as u64, RTOL_BF16);
                run::<half::f16>(rows, cols, scaled, 500 + i as u64, RTOL_F16);
            }
        }
    }
}
