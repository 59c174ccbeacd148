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

/// CUDA against the CPU kernel (itself checked against the f64 formula above), on `dt` rounded to
/// the kernel's dtype first: `expf`, `log1pf` and the product each within 2 ulp, amplified by
/// `|A·Δ| ≤ 12` in the exponent, stay under 1e-5 relative.
mod gpu {
    use super::*;
    use crate::cuda::{test_gpu, Elem};

    const RTOL_GPU: f64 = 1e-5;

    fn run<T: Elem>(batch: usize, seq: usize, heads: usize, seed: u64) {
        let Some(gpu) = test_gpu() else { return };
        let p = KeyValuesParams { batch, seq, heads };
        let mut rng = Rng::new(seed);
        let dt: Vec<T> =
            rng.vec(batch * seq * heads, -6.0, 6.0).into_iter().map(T::from_f32).collect();
        let mut a = rng.vec(heads, -2.0, 2.0);
        if let Some(a0) = a.first_mut() {
            *a0 = 0.0;
        }
        let dtf: Vec<f32> = dt.iter().map(|v| v.to_f32()).collect();
        let want: Vec<f64> = key_values(&p, &dtf, &a).unwrap().into_iter().map(f64::from).collect();
        let (ddt, da) = (gpu.upload(&dt).unwrap(), gpu.upload(&a).unwrap());
        let mut dm = gpu.upload(&vec![f32::NAN; dt.len()]).unwrap();
        cuda::key_values(&gpu, &p, &ddt, &da, &mut dm).unwrap();
        let got = gpu.download(&dm).unwrap();
        assert_close(&got, &want, 0.0, RTOL_GPU, &format!("dynamic_mask_{} {p:?}", T::NAME));
    }

    #[test]
    fn edge_shapes_match_the_cpu_kernel() {
        let shapes =
            [(0, 3, 2), (2, 0, 2), (2, 3, 0), (1, 1, 1), (2, 7, 3), (1, 33, 4), (2, 4097, 8)];
        for (i, &(b, s, h)) in shapes.iter().enumerate() {
            run::<f32>(b, s, h, 100 + i as u64);
            run::<half::bf16>(b, s, h, 200 + i as u64);
            run::<half::f16>(b, s, h, 200 + i as u64);
        }
    }

    /// Keys written into a cache at a slot held on the device: the CPU kernel's values at slots pos..pos + S of
    /// each row, every other slot as it was, slots outside the capacity (past it, or before slot 0 for a negative
    /// position) left out.
    fn run_at<T: Elem>(batch: usize, seq: usize, heads: usize, cap: usize, pos: i64, seed: u64) {
        let Some(gpu) = test_gpu() else { return };
        let p = KeyValuesParams { batch, seq, heads };
        let mut rng = Rng::new(seed);
        let dt: Vec<T> =
            rng.vec(batch * seq * heads, -6.0, 6.0).into_iter().map(T::from_f32).collect();
        let a = rng.vec(heads, -2.0, 2.0);
        let dtf: Vec<f32> = dt.iter().map(|v| v.to_f32()).collect();
        let m = key_values(&p, &dtf, &a).unwrap();
        let before = rng.vec(batch * heads * cap, 5.0, 6.0);
        let mut want: Vec<f64> = before.iter().map(|&v| f64::from(v)).collect();
        for r in 0..batch * heads {
            for j in 0..seq {
                if let Some(slot) = usize::try_from(pos + j as i64).ok().filter(|&s| s < cap) {
                    want[r * cap + slot] = f64::from(m[r * seq + j]);
                }
            }
        }
        let (ddt, da) = (gpu.upload(&dt).unwrap(), gpu.upload(&a).unwrap());
        let dpos = gpu.upload(&[pos]).unwrap();
        let mut cache = gpu.upload(&before).unwrap();
        cuda::key_values_at(&gpu, &p, &ddt, &da, &dpos, cap, &mut cache).unwrap();
        let got = gpu.download(&cache).unwrap();
        let what = format!("dynamic_mask_at_{} {p:?} capacity {cap} at {pos}", T::NAME);
        assert_close(&got, &want, 0.0, RTOL_GPU, &what);
    }

    #[test]
    fn keys_written_into_a_cache_match_the_cpu_kernel() {
        let shapes = [
            (1, 1, 1, 1, 0),
            (2, 1, 4, 9, 8),
            (3, 2, 2, 7, 3),
            (2, 3, 2, 7, 5),
            (8, 1, 8, 4128, 4096),
            (2, 3, 2, 7, -2),
            (1, 1, 2, 4, -1),
        ];
        for (i, &(b, s, h, cap, pos)) in shapes.iter().enumerate() {
            run_at::<f32>(b, s, h, cap, pos, 300 + i as u64);
            run_at::<half::bf16>(b, s, h, cap, pos, 400 + i as u64);
            run_at::<half::f16>(b, s, h, cap, pos, 400 + i as u64);
        }
        let Some(gpu) = test_gpu() else { return };
        let p = KeyValuesParams { batch: 1, seq: 2, heads: 2 };
        let (dt, a, pos) = (
            gpu.zeros::<f32>(4).unwrap(),
            gpu.zeros::<f32>(2).unwrap(),
            gpu.zeros::<i64>(1).unwrap(),
        );
        let mut short = gpu.zeros::<f32>(5).unwrap();
        assert!(matches!(
            cuda::key_values_at(&gpu, &p, &dt, &a, &pos, 3, &mut short),
            Err(KernelError::BadParams(_))
        ));
    }

    #[test]
    fn large_inputs_use_the_softplus_threshold() {
        let Some(gpu) = test_gpu() else { return };
        let p = KeyValuesParams { batch: 1, seq: 3, heads: 2 };
        let dt = [25.0f32, 30.0, 21.0, -40.0, 20.5, 0.0];
        let a = [0.5f32, -1.0];
        let want: Vec<f64> = key_values(&p, &dt, &a).unwrap().into_iter().map(f64::from).collect();
        let (ddt, da) = (gpu.upload(&dt).unwrap(), gpu.upload(&a).unwrap());
        let mut dm = gpu.zeros::<f32>(6).unwrap();
        cuda::key_values(&gpu, &p, &ddt, &da, &mut dm).unwrap();
        assert_close(&gpu.download(&dm).unwrap(), &want, 0.0, RTOL_GPU, "threshold");
    }

    #[test]
    fn a_short_output_buffer_is_refused() {
        let Some(gpu) = test_gpu() else { return };
        let p = KeyValuesParams { batch: 1, seq: 2, heads: 2 };
        let (dt, a) = (gpu.zeros::<f32>(4).unwrap(), gpu.zeros::<f32>(2).unwrap());
        let mut m = gpu.zeros::<f32>(3).unwrap();
        assert!(matches!(
            cuda::key_values(&gpu, &p, &dt, &a, &mut m),
            Err(KernelError::BadParams(_))
        ));
        let mut m = gpu.zeros::<f32>(4).unwrap();
        let a = gpu.zeros::<f32>(3).unwrap();
        assert!(matches!(
            cuda::key_values(&gpu, &p, &dt, &a, &mut m),
            Err(KernelError::BadParams(_))
        ));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn random_shapes_match_the_cpu_kernel(b in 1usize..4, s in 1usize..3000, h in 1usize..9, seed: u64) {
            run::<f32>(b, s, h, seed);
            run::<half::bf16>(b, s, h, seed);
            run::<half::f16>(b, s, h, seed);
        }
    }
}
