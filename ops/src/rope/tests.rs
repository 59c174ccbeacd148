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
fn rounding_in_f32_is_plain_apply() {
    let p = RopeParams { rows: 3, heads: 2, dim: 10 };
    let mut rng = Rng::new(8);
    let x = rng.vec(60, -3.0, 3.0);
    let (cos, sin) = tables(&[0, 7, 4000], &inv_freq(10_000.0, 10));
    assert_eq!(
        apply_rounded::<f32>(&p, &x, &cos, &sin).unwrap(),
        apply(&p, &x, &cos, &sin).unwrap()
    );
    let bf = apply_rounded::<half::bf16>(&p, &x, &cos, &sin).unwrap();
    assert!(bf.iter().all(|v| half::bf16::from_f32(*v).to_f32() == *v), "bf16 values");
    assert!(
        apply_rounded::<f32>(&RopeParams { rows: 1, heads: 1, dim: 4 }, &x, &cos, &sin).is_err()
    );
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

/// CUDA against the CPU kernels. Tables: both sides take cos/sin of the same f32 angle in f64 and round once, so
/// they agree except where the f64 value lies within an f64 ulp of an f32 rounding boundary (one f32 ulp, 2⁻²³
/// relative); bf16 and f16 tables are those values rounded once more. Apply: f32 is the CPU kernel bit for bit (the
/// same two products and sum, no fused multiply-add); bf16 and f16 are PyTorch's order in that type bit for bit (each
/// product rounded, then the sum) and within three roundings of |x·cos| + |x'·sin| of the CPU's f32 result.
mod gpu {
    use super::*;
    use crate::cuda::{test_gpu, Elem, Gpu};

    const TABLE_RTOL_F32: f64 = 2.0 * 6e-8;
    /// (atol, rtol) of the narrow tables: one more rounding, 2⁻⁸ in bf16; 2⁻¹¹ in f16, whose values below 2⁻¹⁴
    /// are subnormal, rounded to steps of 2⁻²⁴.
    const TABLE_BF16: (f64, f64) = (1e-45, 0.00390625);
    const TABLE_F16: (f64, f64) = (5.960464477539063e-8, 0.00048828125);
    /// (floor, rel) of a narrow rotation: three roundings of 2⁻⁹ (bf16) or 2⁻¹² (f16) with margin; f16's
    /// subnormals add half a step of 2⁻²⁴ each.
    const APPLY_BF16: (f64, f64) = (0.0, 4.0 * 0.001953125);
    const APPLY_F16: (f64, f64) = (3.0 * 2.98023223876953125e-8, 4.0 * 0.000244140625);

    fn run_tables<T: Elem>(
        gpu: &Gpu,
        positions: &[i64],
        freqs: &[f32],
    ) -> crate::Result<(Vec<f32>, Vec<f32>)> {
        let n = positions.len() * 2 * freqs.len();
        let pos = gpu.stream().clone_htod(positions).unwrap();
        let inv = gpu.upload(freqs)?;
        let mut cos = gpu.upload(&vec![T::from_f32(f32::NAN); n])?;
        let mut sin = gpu.upload(&vec![T::from_f32(f32::NAN); n])?;
        cuda::tables(gpu, &pos, &inv, &mut cos, &mut sin)?;
        let back = |v: Vec<T>| v.into_iter().map(|x| x.to_f32()).collect();
        Ok((back(gpu.download(&cos)?), back(gpu.download(&sin)?)))
    }

    fn check_tables(positions: &[i64], theta: f64, dim: usize) {
        let Some(gpu) = test_gpu() else { return };
        let freqs = inv_freq(theta, dim);
        let (want_cos, want_sin) = tables(positions, &freqs);
        let what = format!("θ={theta} dim={dim} {} positions", positions.len());
        let (cos, sin) = run_tables::<f32>(&gpu, positions, &freqs).unwrap();
        let wide = |v: &[f32]| v.iter().map(|&x| f64::from(x)).collect::<Vec<_>>();
        assert_close(&cos, &wide(&want_cos), 1e-45, TABLE_RTOL_F32, &format!("cos f32 {what}"));
        assert_close(&sin, &wide(&want_sin), 1e-45, TABLE_RTOL_F32, &format!("sin f32 {what}"));
        let want = (&want_cos[..], &want_sin[..]);
        check_narrow_tables::<half::bf16>(&gpu, positions, &freqs, want, TABLE_BF16, &what);
        check_narrow_tables::<half::f16>(&gpu, positions, &freqs, want, TABLE_F16, &what);
    }

    /// `T`'s tables against the CPU's f32 tables rounded to `T`, within `(atol, rtol)`.
    fn check_narrow_tables<T: Elem>(
        gpu: &Gpu,
        positions: &[i64],
        freqs: &[f32],
        (want_cos, want_sin): (&[f32], &[f32]),
        (atol, rtol): (f64, f64),
        what: &str,
    ) {
        let (cos, sin) = run_tables::<T>(gpu, positions, freqs).unwrap();
        let narrow =
            |v: &[f32]| v.iter().map(|&x| f64::from(T::from_f32(x).to_f32())).collect::<Vec<_>>();
        let t = T::NAME;
        assert_close(&cos, &narrow(want_cos), atol, rtol, &format!("cos {t} {what}"));
        assert_close(&sin, &narrow(want_sin), atol, rtol, &format!("sin {t} {what}"));
    }

    #[test]
    fn tables_match_the_cpu_kernel() {
        let positions: Vec<i64> =
            (0..300).chain([4095, 65_535, 1_000_000, (1 << 24) + 1, 1 << 40, -7]).collect();
        for (theta, dim) in
            [(10_000.0, 2), (10_000.0, 64), (10_000.0, 66), (500_000.0, 128), (1e6, 7)]
        {
            check_tables(&positions, theta, dim);
        }
        check_tables(&[], 10_000.0, 64);
        check_tables(&[3, 4], 10_000.0, 0);
        let mut rng = Rng::new(5);
        let many: Vec<i64> = (0..3000).map(|_| rng.below(200_000) as i64).collect();
        check_tables(&many, 10_000.0, 128);
    }

    fn run_apply<T: Elem>(
        gpu: &Gpu,
        p: &RopeParams,
        x: &[T],
        cos: &[T],
        sin: &[T],
    ) -> crate::Result<Vec<T>> {
        let (dx, dc, ds) = (gpu.upload(x)?, gpu.upload(cos)?, gpu.upload(sin)?);
        let mut y = gpu.upload(&vec![T::from_f32(f32::NAN); x.len()])?;
        cuda::apply(gpu, p, &dx, &dc, &ds, &mut y)?;
        gpu.download(&y)
    }

    fn check_apply(rows: usize, heads: usize, dim: usize, seed: u64) {
        let Some(gpu) = test_gpu() else { return };
        let p = RopeParams { rows, heads, dim };
        let mut rng = Rng::new(seed);
        let x = rng.vec(rows * heads * dim, -3.0, 3.0);
        let positions: Vec<i64> = (0..rows).map(|_| rng.below(5000) as i64).collect();
        let (cos, sin) = tables(&positions, &inv_freq(10_000.0, dim));
        let got = run_apply::<f32>(&gpu, &p, &x, &cos, &sin).unwrap();
        assert_eq!(got, apply(&p, &x, &cos, &sin).unwrap(), "rope_apply_f32 {p:?}");
        check_narrow_apply::<half::bf16>(&gpu, &p, (&x, &cos, &sin), APPLY_BF16);
        check_narrow_apply::<half::f16>(&gpu, &p, (&x, &cos, &sin), APPLY_F16);
    }

    /// `T`'s rotation: PyTorch's order in `T` bit for bit, and the CPU's f32 result within `(floor, rel)`: `rel` of
    /// |x·cos| + |x'·sin|, plus `floor`.
    fn check_narrow_apply<T: Elem>(
        gpu: &Gpu,
        p: &RopeParams,
        (x, cos, sin): (&[f32], &[f32], &[f32]),
        (floor, rel): (f64, f64),
    ) {
        let (heads, dim) = (p.heads, p.dim);
        let to = |v: &[f32]| v.iter().map(|&x| T::from_f32(x)).collect::<Vec<_>>();
        let (xb, cb, sb) = (to(x), to(cos), to(sin));
        let got = run_apply::<T>(gpu, p, &xb, &cb, &sb).unwrap();
        let wide = |v: &[T]| v.iter().map(|x| x.to_f32()).collect::<Vec<_>>();
        let (xw, cw, sw) = (wide(&xb), wide(&cb), wide(&sb));
        let want = apply_rounded::<T>(p, &xw, &cw, &sw).unwrap();
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        let t = T::NAME;
        assert_eq!(
            bits(&wide(&got)),
            bits(&want),
            "rope_apply_{t} {p:?} against PyTorch's {t} order"
        );
        let want32 = apply(p, &xw, &cw, &sw).unwrap();
        let half = dim / 2;
        for (i, (&g, &w)) in wide(&got).iter().zip(&want32).enumerate() {
            let (base, d) = (i - i % dim, i % dim);
            let cs = i / dim / heads * dim;
            let partner = if d < half { base + d + half } else { base + d - half };
            let terms = (xw[i] * cw[cs + d]).abs() + (xw[partner] * sw[cs + d]).abs();
            let tol = rel * f64::from(terms) + floor;
            assert!(
                f64::from((g - w).abs()) <= tol,
                "rope_apply_{t} {p:?} element {i}: got {g}, CPU f32 {w}, tolerance {tol:e}"
            );
        }
    }

    #[test]
    fn apply_edge_shapes_match_the_cpu_kernel() {
        let shapes = [
            (0, 2, 8),
            (3, 0, 8),
            (3, 2, 0),
            (1, 1, 2),
            (3, 7, 4),
            (2, 3, 62),
            (5, 4, 128),
            (7, 3, 130),
            (1, 1, 4096),
            (300, 8, 64),
        ];
        for (i, &(rows, heads, dim)) in shapes.iter().enumerate() {
            check_apply(rows, heads, dim, 300 + i as u64);
        }
    }

    /// `apply_at` against `apply` whose rows are put into the cache on the host: bit for bit, the other slots
    /// untouched, and nothing written outside the capacity (past it, or before slot 0 for a negative position).
    fn check_apply_at<T: Elem>(
        seqs: usize,
        seq: usize,
        heads: usize,
        dim: usize,
        cap: usize,
        at: i64,
        seed: u64,
    ) {
        let Some(gpu) = test_gpu() else { return };
        let p = RopeParams { rows: seqs * seq, heads, dim };
        let mut rng = Rng::new(seed);
        let t = |v: Vec<f32>| v.into_iter().map(T::from_f32).collect::<Vec<T>>();
        let x = t(rng.vec(p.rows * heads * dim, -3.0, 3.0));
        let positions: Vec<i64> = (0..p.rows).map(|_| rng.below(5000) as i64).collect();
        let (cos, sin) = tables(&positions, &inv_freq(10_000.0, dim));
        let (cos, sin) = (t(cos), t(sin));
        let y = run_apply::<T>(&gpu, &p, &x, &cos, &sin).unwrap();
        let start: Vec<T> =
            (0..seqs * heads * cap * dim).map(|i| T::from_f32((i % 251) as f32)).collect();
        let want = crate::testutil::placed_on_host(&start, &y, [seqs, seq, heads, dim], cap, at);
        let (dx, dc, ds) =
            (gpu.upload(&x).unwrap(), gpu.upload(&cos).unwrap(), gpu.upload(&sin).unwrap());
        let (pos, mut cache) = (gpu.upload(&[at]).unwrap(), gpu.upload(&start).unwrap());
        cuda::apply_at(&gpu, &p, seq, &dx, &dc, &ds, &pos, cap, &mut cache).unwrap();
        let bits = |v: &[T]| v.iter().map(|x| x.to_f32().to_bits()).collect::<Vec<_>>();
        let what = format!(
            "rope_apply_at_{} {seqs}×{seq} tokens, {heads}×{dim}, slot {at} of {cap}",
            T::NAME
        );
        assert_eq!(bits(&gpu.download(&cache).unwrap()), bits(&want), "{what}");
    }

    #[test]
    fn rows_written_into_a_cache_are_apply_then_place_rows() {
        let shapes = [
            (1, 1, 4, 64, 64, 17),
            (2, 1, 8, 128, 9, 8),
            (3, 2, 2, 130, 7, 0),
            (2, 3, 3, 2, 5, 2),
            (1, 2, 1, 6, 4, 3),
            (2, 2, 2, 4, 3, 5),
            (2, 3, 3, 64, 5, -2),
            (1, 1, 4, 128, 64, -1),
        ];
        for (i, &(b, s, h, d, cap, at)) in shapes.iter().enumerate() {
            check_apply_at::<f32>(b, s, h, d, cap, at, 800 + i as u64);
            check_apply_at::<half::bf16>(b, s, h, d, cap, at, 810 + i as u64);
            check_apply_at::<half::f16>(b, s, h, d, cap, at, 820 + i as u64);
        }
        let Some(gpu) = test_gpu() else { return };
        let z = |n: usize| gpu.zeros::<f32>(n).unwrap();
        let (p, pos) = (RopeParams { rows: 3, heads: 1, dim: 4 }, gpu.upload(&[0i64]).unwrap());
        let r = cuda::apply_at(&gpu, &p, 2, &z(12), &z(12), &z(12), &pos, 4, &mut z(16));
        assert!(
            matches!(r, Err(KernelError::BadParams(_))),
            "3 rows are not sequences of 2 tokens"
        );
        let p = RopeParams { rows: 2, heads: 1, dim: 4 };
        let r = cuda::apply_at(&gpu, &p, 1, &z(8), &z(8), &z(8), &pos, 4, &mut z(15));
        assert!(matches!(r, Err(KernelError::BadParams(m)) if m.contains("`cache`")));
    }

    #[test]
    fn bad_sizes_are_refused() {
        let Some(gpu) = test_gpu() else { return };
        let p = RopeParams { rows: 2, heads: 1, dim: 3 };
        let Err(KernelError::BadParams(msg)) =
            run_apply::<f32>(&gpu, &p, &[0.0; 6], &[0.0; 6], &[0.0; 6])
        else {
            panic!()
        };
        assert!(msg.contains("odd"), "{msg}");
        let p = RopeParams { rows: 2, heads: 1, dim: 4 };
        let (x, c) = (gpu.zeros::<f32>(8).unwrap(), gpu.zeros::<f32>(8).unwrap());
        let mut y = gpu.zeros::<f32>(7).unwrap();
        let r = cuda::apply(&gpu, &p, &x, &c, &c, &mut y);
        assert!(matches!(r, Err(KernelError::BadParams(m)) if m.contains("`y` has 7")));
        let pos = gpu.stream().clone_htod(&[1i64, 2]).unwrap();
        let inv = gpu.upload(&[1.0f32, 0.5]).unwrap();
        let (mut cos, mut sin) = (gpu.zeros::<f32>(8).unwrap(), gpu.zeros::<f32>(7).unwrap());
        let r = cuda::tables(&gpu, &pos, &inv, &mut cos, &mut sin);
        assert!(matches!(r, Err(KernelError::BadParams(m)) if m.contains("`sin` has 7")));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn random_shapes_match_the_cpu_kernel(
            rows in 0usize..40, heads in 0usize..5, half in 0usize..80, seed in any::<u64>(),
        ) {
            check_apply(rows, heads, 2 * half, seed);
        }
    }
}

/// Every kernel the launchers name is in the compiled module (no GPU needed).
#[test]
fn kernels_compile_for_sm_90() {
    let Some(cubin) = crate::testutil::sm90_cubin(&cuda::SOURCE) else { return };
    for t in ["f32", "bf16", "f16"] {
        for k in ["rope_tables", "rope_apply", "rope_apply_at"] {
            let name = format!("{k}_{t}");
            assert!(crate::testutil::has_symbol(&cubin, &name), "{name} missing");
        }
    }
}
