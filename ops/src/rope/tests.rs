use proptest::prelude::*;

use super::*;
use crate::testutil::{assert_close, Rng};
use crate::KernelError;

/// `inv_freq` against the exact power: the f32 exponent alone moves it by ~|ln θ|·2⁻²⁴.
const INV_FREQ_RTOL: f64 = 2e-6;
/// cos/sin of the f32 angle are correctly rounded: half an ulp.
const TABLE_RTOL: f64 = 6e-8;
const TABLE_ATOL: f64 = 1e-45;
/// Two f32 products and a sum against f64.
const APPLY_ATOL: f64 = 1e-6;
const APPLY_RTOL: f64 = 1e-6;

fn reference_apply(p: &RopeParams, x: &[f32], cos: &[f32], sin: &[f32]) -> Vec<f64> {
    let half = p.dim / 2;
    let mut y = vec![0.0; x.len()];
    for r in 0..p.rows {
        for h in 0..p.heads {
            let base = (r * p.heads + h) * p.dim;
            for d in 0..p.dim {
                let rotated = if d < half { -x[base + d + half] } else { x[base + d - half] };
                y[base + d] = f64::from(x[base + d]) * f64::from(cos[r * p.dim + d])
                    + f64::from(rotated) * f64::from(sin[r * p.dim + d]);
            }
        }
    }
    y
}

fn check_apply(rows: usize, heads: usize, dim: usize, seed: u64) {
    let p = RopeParams { rows, heads, dim };
    let mut rng = Rng::new(seed);
    let x = rng.vec(rows * heads * dim, -3.0, 3.0);
    let positions: Vec<i64> = (0..rows).map(|_| rng.below(5000) as i64).collect();
    let (cos, sin) = tables(&positions, &inv_freq(10_000.0, dim));
    let got = apply(&p, &x, &cos, &sin).unwrap();
    let want = reference_apply(&p, &x, &cos, &sin);
    assert_close(&got, &want, APPLY_ATOL, APPLY_RTOL, &format!("rope apply {p:?}"));
}

#[test]
fn inv_freq_matches_the_power() {
    for (theta, dim) in [(10_000.0, 64), (10_000.0, 128), (500_000.0, 2), (1e6, 96), (10_000.0, 7)]
    {
        let got = inv_freq(theta, dim);
        assert_eq!(got.len(), dim.div_ceil(2));
        let want: Vec<f64> =
            (0..got.len()).map(|i| theta.powf(-(2.0 * i as f64) / dim as f64)).collect();
        assert_close(&got, &want, 0.0, INV_FREQ_RTOL, &format!("inv_freq θ={theta} dim={dim}"));
        assert_eq!(got[0], 1.0);
    }
    assert!(inv_freq(10_000.0, 0).is_empty());
}

#[test]
fn dynamic_ntk_values() {
    assert_eq!(dynamic_ntk_theta(10_000.0, 4.0, 2048, 2048, 64), 10_000.0);
    let want = 10_000.0 * 5f64.powf(64.0 / 62.0);
    assert_eq!(dynamic_ntk_theta(10_000.0, 4.0, 4096, 2048, 64), want);
    assert!(dynamic_ntk_theta(10_000.0, 4.0, 3000, 2048, 128) > 10_000.0);
}

#[test]
fn tables_are_rounded_cos_and_sin() {
    let positions: Vec<i64> = (0..300).chain([4095, 65_535, 1_000_000, -7]).collect();
    let freqs = inv_freq(10_000.0, 66);
    let (cos, sin) = tables(&positions, &freqs);
    let dim = 2 * freqs.len();
    let mut want_cos = Vec::new();
    let mut want_sin = Vec::new();
    for &pos in &positions {
        for &f in freqs.iter().chain(&freqs) {
            let angle = f64::from(pos as f32 * f);
            want_cos.push(angle.cos());
            want_sin.push(angle.sin());
        }
    }
    assert_eq!(cos.len(), positions.len() * dim);
    assert_close(&cos, &want_cos, TABLE_ATOL, TABLE_RTOL, "cos table");
    assert_close(&sin, &want_sin, TABLE_ATOL, TABLE_RTOL, "sin table");
    let (c, s) = tables(&[], &freqs);
    assert!(c.is_empty() && s.is_empty());
    let (c, s) = tables(&[3, 4], &[]);
    assert!(c.is_empty() && s.is_empty());
}

#[test]
fn apply_edge_shapes() {
    let shapes = [
        (0, 2, 8),
        (3, 0, 8),
        (3, 2, 0),
        (1, 1, 2),
        (3, 7, 4),
        (2, 3, 62),
        (2, 1, 64),
        (2, 2, 66),
        (33, 4, 128),
    ];
    for (i, &(rows, heads, dim)) in shapes.iter().enumerate() {
        check_apply(rows, heads, dim, i as u64);
    }
}

#[test]
fn position_zero_is_the_identity() {
    let p = RopeParams { rows: 1, heads: 2, dim: 6 };
    let x: Vec<f32> = (0..12).map(|i| i as f32 - 5.5).collect();
    let (cos, sin) = tables(&[0], &inv_freq(10_000.0, 6));
    assert_eq!(apply(&p, &x, &cos, &sin).unwrap(), x);
}

#[test]
fn errors_name_the_buffer() {
    let p = RopeParams { rows: 2, heads: 1, dim: 3 };
    let Err(KernelError::BadParams(msg)) = apply(&p, &[0.0; 6], &[0.0; 6], &[0.0; 6]) else {
        panic!()
    };
    assert!(msg.contains("odd"), "{msg}");
    let p = RopeParams { rows: 2, heads: 1, dim: 4 };
    let Err(KernelError::BadParams(msg)) = apply(&p, &[0.0; 8], &[0.0; 8], &[0.0; 7]) else {
        panic!()
    };
    assert!(msg.contains("`sin` has 7 elements, expected 8"), "{msg}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn apply_random(rows in 0usize..40, heads in 0usize..5, half in 0usize..40, seed: u64) {
        check_apply(rows, heads, 2 * half, seed);
    }
}
