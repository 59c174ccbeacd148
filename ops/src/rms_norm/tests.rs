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
