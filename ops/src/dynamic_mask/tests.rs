use proptest::prelude::*;

use super::*;
use crate::testutil::{assert_close, Rng};
use crate::KernelError;

/// exp of an f32 product: relative error about (1 + |A·Δ|)·2⁻²⁴, |A·Δ| ≤ 12 here.
const RTOL: f64 = 2e-6;

fn reference(p: &KeyValuesParams, dt: &[f32], a: &[f32]) -> Vec<f64> {
    let mut m = vec![0.0; dt.len()];
    for b in 0..p.batch {
        for h in 0..p.heads {
            for j in 0..p.seq {
                let z = f64::from(dt[(b * p.seq + j) * p.heads + h]);
                let delta = if z > 20.0 { z } else { z.exp().ln_1p() };
                m[(b * p.heads + h) * p.seq + j] = (f64::from(a[h]) * delta).exp();
            }
        }
    }
    m
}

fn check(batch: usize, seq: usize, heads: usize, seed: u64) {
    let p = KeyValuesParams { batch, seq, heads };
    let mut rng = Rng::new(seed);
    let dt = rng.vec(batch * seq * heads, -6.0, 6.0);
    let a = rng.vec(heads, -2.0, 2.0);
    let got = key_values(&p, &dt, &a).unwrap();
    assert_close(&got, &reference(&p, &dt, &a), 0.0, RTOL, &format!("key_values {p:?}"));
}

#[test]
fn edge_shapes() {
    for (i, &(b, s, h)) in
        [(0, 3, 2), (2, 0, 2), (2, 3, 0), (1, 1, 1), (2, 7, 3), (1, 33, 4), (3, 32, 1), (2, 31, 2)]
            .iter()
            .enumerate()
    {
        check(b, s, h, i as u64);
    }
}

#[test]
fn zero_a_gives_ones() {
    let p = KeyValuesParams { batch: 1, seq: 3, heads: 2 };
    assert_eq!(key_values(&p, &[5.0, -1.0, 0.0, 30.0, -40.0, 2.0], &[0.0, 0.0]).unwrap(), [1.0; 6]);
}

#[test]
fn output_is_transposed() {
    let p = KeyValuesParams { batch: 1, seq: 2, heads: 2 };
    let m = key_values(&p, &[25.0, 30.0, 21.0, 22.0], &[1.0, -1.0]).unwrap();
    assert_eq!(m, [25f32.exp(), 21f32.exp(), (-30f32).exp(), (-22f32).exp()]);
}

#[test]
fn errors_name_the_buffer() {
    let p = KeyValuesParams { batch: 1, seq: 2, heads: 2 };
    let Err(KernelError::BadParams(msg)) = key_values(&p, &[0.0; 4], &[0.0; 3]) else { panic!() };
    assert!(msg.contains("`a` has 3 elements, expected 2"), "{msg}");
    let Err(KernelError::BadParams(msg)) = key_values(&p, &[0.0; 5], &[0.0; 2]) else { panic!() };
    assert!(msg.contains("`dt`"), "{msg}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn random(b in 0usize..4, s in 0usize..70, h in 0usize..5, seed: u64) {
        check(b, s, h, seed);
    }
}
