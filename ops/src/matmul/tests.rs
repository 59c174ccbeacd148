use proptest::prelude::*;

use super::*;
use crate::testutil::{assert_close, Rng};
use crate::KernelError;

/// f32 gemm against the f64 sum, for operands in [-1, 1] and up to ~1000 terms.
const ATOL: f64 = 2e-5;
const RTOL: f64 = 1e-5;

fn reference_linear(p: &LinearParams, x: &[f32], w: &[f32], bias: Option<&[f32]>) -> Vec<f64> {
    let mut y = vec![0.0; p.rows * p.out_features];
    for r in 0..p.rows {
        for o in 0..p.out_features {
            let mut acc = bias.map_or(0.0, |b| f64::from(b[o]));
            for i in 0..p.in_features {
                acc += f64::from(x[r * p.in_features + i]) * f64::from(w[o * p.in_features + i]);
            }
            y[r * p.out_features + o] = acc;
        }
    }
    y
}

fn reference_matmul(p: &MatmulParams, a: &[f32], b: &[f32]) -> Vec<f64> {
    let mut c = vec![0.0; p.m * p.n];
    for i in 0..p.m {
        for j in 0..p.n {
            for l in 0..p.k {
                c[i * p.n + j] += f64::from(a[i * p.k + l]) * f64::from(b[l * p.n + j]);
            }
        }
    }
    c
}

fn check_linear(rows: usize, in_features: usize, out_features: usize, with_bias: bool, seed: u64) {
    let p = LinearParams { rows, in_features, out_features };
    let mut rng = Rng::new(seed);
    let x = rng.vec(rows * in_features, -1.0, 1.0);
    let w = rng.vec(out_features * in_features, -1.0, 1.0);
    let bias = rng.vec(out_features, -1.0, 1.0);
    let bias = with_bias.then_some(bias.as_slice());
    let got = linear(&p, &x, &w, bias).unwrap();
    let want = reference_linear(&p, &x, &w, bias);
    assert_close(&got, &want, ATOL, RTOL, &format!("linear {p:?} bias={with_bias}"));
}

fn check_matmul(m: usize, k: usize, n: usize, seed: u64) {
    let p = MatmulParams { m, k, n };
    let mut rng = Rng::new(seed);
    let a = rng.vec(m * k, -1.0, 1.0);
    let b = rng.vec(k * n, -1.0, 1.0);
    let got = matmul(&p, &a, &b).unwrap();
    assert_close(&got, &reference_matmul(&p, &a, &b), ATOL, RTOL, &format!("matmul {p:?}"));
}

const EDGE_SHAPES: &[(usize, usize, usize)] = &[
    (0, 4, 5),
    (3, 0, 5),
    (3, 4, 0),
    (1, 1, 1),
    (3, 7, 2),
    (2, 31, 33),
    (33, 32, 31),
    (31, 33, 32),
    (1, 1025, 3),
    (64, 64, 64),
    (70, 129, 96),
];

#[test]
fn linear_edge_shapes() {
    for (i, &(r, k, n)) in EDGE_SHAPES.iter().enumerate() {
        check_linear(r, k, n, false, i as u64);
        check_linear(r, k, n, true, 100 + i as u64);
    }
}

#[test]
fn matmul_edge_shapes() {
    for (i, &(m, k, n)) in EDGE_SHAPES.iter().enumerate() {
        check_matmul(m, k, n, i as u64);
    }
}

#[test]
fn linear_without_inputs_is_the_bias() {
    let p = LinearParams { rows: 2, in_features: 0, out_features: 3 };
    let y = linear(&p, &[], &[], Some(&[1.0, -2.0, 0.5])).unwrap();
    assert_eq!(y, [1.0, -2.0, 0.5, 1.0, -2.0, 0.5]);
}

#[test]
fn errors_name_the_buffer() {
    let p = LinearParams { rows: 2, in_features: 3, out_features: 4 };
    let msg = |r: Result<Vec<f32>>| match r {
        Err(KernelError::BadParams(m)) => m,
        Ok(_) => panic!("accepted bad sizes"),
        Err(e) => panic!("unexpected error {e}"),
    };
    assert!(msg(linear(&p, &[0.0; 5], &[0.0; 12], None)).contains("`x` has 5 elements, expected 6"));
    assert!(msg(linear(&p, &[0.0; 6], &[0.0; 11], None)).contains("`w`"));
    assert!(msg(linear(&p, &[0.0; 6], &[0.0; 12], Some(&[0.0; 3]))).contains("`bias`"));
    let q = MatmulParams { m: 2, k: 3, n: 4 };
    assert!(msg(matmul(&q, &[0.0; 6], &[0.0; 13])).contains("`b` has 13 elements, expected 12"));
    let huge = LinearParams { rows: usize::MAX, in_features: 0, out_features: 2 };
    assert!(msg(linear(&huge, &[], &[], None)).contains("overflows"));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn linear_random(rows in 0usize..40, k in 0usize..70, n in 0usize..40, bias: bool, seed: u64) {
        check_linear(rows, k, n, bias, seed);
    }

    #[test]
    fn matmul_random(m in 0usize..40, k in 0usize..70, n in 0usize..40, seed: u64) {
        check_matmul(m, k, n, seed);
    }
}

/// `mask_linear` is `key_values` of `linear` (the same f32 values), and names rows that do not split into sequences.
#[test]
fn mask_linear_is_key_values_of_linear() {
    let mut rng = Rng::new(7);
    let p = LinearParams { rows: 6, in_features: 9, out_features: 4 };
    let (x, w, b, a) = (
        rng.vec(54, -1.0, 1.0),
        rng.vec(36, -1.0, 1.0),
        rng.vec(4, -1.0, 1.0),
        rng.vec(4, -2.0, 0.5),
    );
    let got = mask_linear(&p, 3, &x, &w, Some(&b), &a).unwrap();
    let dt = linear(&p, &x, &w, Some(&b)).unwrap();
    let kp = crate::dynamic_mask::KeyValuesParams { batch: 2, seq: 3, heads: 4 };
    assert_eq!(got, crate::dynamic_mask::key_values(&kp, &dt, &a).unwrap());
    assert!(matches!(mask_linear(&p, 4, &x, &w, None, &a), Err(KernelError::BadParams(_))));
}

/// cuBLAS against the CPU `linear`: f32 without TF32 only reorders the sums (relative 1e-5 of the row's
/// magnitude); bf16 inputs with f32 accumulation round the output once (2⁻⁸ relative) on top of that, f16 inputs
/// once as well (2⁻¹¹ relative).
mod gpu {
    use super::*;
    use crate::act::Act;
    use crate::cuda::{test_gpu, Elem};
    use crate::testutil::{assert_close, in_shard, Rng};

    const RTOL_BF16: f64 = 2.0 * 0.00390625;
    const RTOL_F16: f64 = 2.0 * 0.00048828125;
    /// One unit of a `dt` rounding (2⁻⁷ in bf16, 2⁻¹⁰ in f16; see `run_mask`).
    const DT_RTOL_BF16: f64 = 0.0078125;
    const DT_RTOL_F16: f64 = 0.0009765625;

    fn run<T: Elem>(rows: usize, inp: usize, out: usize, bias: bool, seed: u64, rtol: f64)
    where
        cudarc::cublas::CudaBlas: cudarc::cublas::Gemm<T>,
    {
        let Some(gpu) = test_gpu() else { return };
        let mut rng = Rng::new(seed);
        let q = |v: Vec<f32>| -> Vec<T> { v.into_iter().map(T::from_f32).collect() };
        let (x, w, b) = (
            q(rng.vec(rows * inp, -1.0, 1.0)),
            q(rng.vec(out * inp, -1.0, 1.0)),
            q(rng.vec(out, -1.0, 1.0)),
        );
        let f = |v: &[T]| -> Vec<f32> { v.iter().map(|x| x.to_f32()).collect() };
        let p = LinearParams { rows, in_features: inp, out_features: out };
        let want: Vec<f64> = linear(&p, &f(&x), &f(&w), bias.then(|| f(&b)).as_deref())
            .unwrap()
            .into_iter()
            .map(f64::from)
            .collect();
        let (dx, dw, db) =
            (gpu.upload(&x).unwrap(), gpu.upload(&w).unwrap(), gpu.upload(&b).unwrap());
        let mut dy = gpu.upload(&vec![T::from_f32(f32::NAN); rows * out]).unwrap();
        cuda::linear(&gpu, &p, &dx, &dw, bias.then_some(&db), &mut dy).unwrap();
        let got = f(&gpu.download(&dy).unwrap());
        let unbiased = linear(&p, &f(&x), &f(&w), None).unwrap();
        let peak = unbiased.iter().fold(0f64, |m, v| m.max(f64::from(v.abs())));
        // The bias epilogue adds to the GEMM output already rounded to T, so that rounding is relative to the
        // pre-bias value (up to `peak`), which can be far larger than the biased result.
        let atol = 1e-5 * (inp as f64).sqrt() + rtol * peak;
        assert_close(&got, &want, atol, rtol, &format!("linear_{} {rows}x{inp}x{out}", T::NAME));
    }

    /// The gated GEMV against the two GEMVs and `act_mul` it replaces (bit for bit), and against the CPU (`linear`
    /// twice, then `act_mul` with the device's roundings) within the `linear` tolerance.
    fn run_gated<T: Elem>(
        rows: usize,
        inp: usize,
        out: usize,
        bias: bool,
        act: Act,
        seed: u64,
        rtol: f64,
    ) where
        cudarc::cublas::CudaBlas: cudarc::cublas::Gemm<T>,
    {
        let Some(gpu) = test_gpu() else { return };
        let mut rng = Rng::new(seed);
        let q = |v: Vec<f32>| -> Vec<T> { v.into_iter().map(T::from_f32).collect() };
        let f = |v: &[T]| -> Vec<f32> { v.iter().map(|x| x.to_f32()).collect() };
        let x = q(rng.vec(rows * inp, -1.0, 1.0));
        let (wg, wu) = (q(rng.vec(out * inp, -1.0, 1.0)), q(rng.vec(out * inp, -1.0, 1.0)));
        let (bg, bu) = (q(rng.vec(out, -1.0, 1.0)), q(rng.vec(out, -1.0, 1.0)));
        let p = LinearParams { rows, in_features: inp, out_features: out };
        let up = |v: &[T]| gpu.upload(v).unwrap();
        let (dx, dwg, dwu, dbg, dbu) = (up(&x), up(&wg), up(&wu), up(&bg), up(&bu));
        let nan = || gpu.upload(&vec![T::from_f32(f32::NAN); rows * out]).unwrap();
        let (mut g, mut u, mut h, mut fused) = (nan(), nan(), nan(), nan());
        cuda::linear(&gpu, &p, &dx, &dwg, bias.then_some(&dbg), &mut g).unwrap();
        cuda::linear(&gpu, &p, &dx, &dwu, bias.then_some(&dbu), &mut u).unwrap();
        crate::act::cuda::act_mul(&gpu, act, &g, &u, &mut h).unwrap();
        let b = bias.then_some((&dbg, &dbu));
        cuda::gated_linear(&gpu, &p, act, &dx, &dwg, &dwu, b, &mut fused).unwrap();
        let (want, got) = (gpu.download(&h).unwrap(), gpu.download(&fused).unwrap());
        let what = format!("gated_gemv_{} {rows}x{inp}x{out} {act:?} bias {bias}", T::NAME);
        assert_eq!(f(&got), f(&want), "{what}: differs from gemv, gemv, act_mul");
        let lin =
            |w: &[T], b: &[T]| linear(&p, &f(&x), &f(w), bias.then(|| f(b)).as_deref()).unwrap();
        let (cg, cu) = (lin(&wg, &bg), lin(&wu, &bu));
        let round = |v: f32| T::from_f32(v).to_f32();
        let cpu: Vec<f64> = cg
            .iter()
            .zip(&cu)
            .map(|(&g, &u)| f64::from(round(round(act.apply(round(g))) * round(u))))
            .collect();
        let atol = 1e-5 * (inp as f64).sqrt() + 4.0 * rtol;
        assert_close(&f(&got), &cpu, atol, 4.0 * rtol, &what);
    }

    #[test]
    fn gated_gemv_matches_its_parts_and_the_cpu() {
        let acts = [Act::Silu, Act::Relu, Act::Gelu, Act::GeluTanh];
        for (i, &(r, k, n)) in
            [(1, 1, 1), (1, 7, 5), (2, 64, 196), (4, 130, 33), (3, 1024, 300), (1, 4096, 64)]
                .iter()
                .enumerate()
        {
            for bias in [false, true] {
                let act = acts[i % 4];
                run_gated::<f32>(r, k, n, bias, act, 40 + i as u64, 1e-5);
                run_gated::<half::bf16>(r, k, n, bias, act, 50 + i as u64, RTOL_BF16);
                run_gated::<half::f16>(r, k, n, bias, act, 70 + i as u64, RTOL_F16);
            }
        }
        let Some(gpu) = test_gpu() else { return };
        let p = LinearParams { rows: 5, in_features: 4, out_features: 2 };
        let (x, w) = (gpu.zeros::<f32>(20).unwrap(), gpu.zeros::<f32>(8).unwrap());
        let mut h = gpu.zeros::<f32>(10).unwrap();
        let r = cuda::gated_linear(&gpu, &p, Act::Silu, &x, &w, &w, None, &mut h);
        assert!(
            matches!(r, Err(crate::KernelError::BadParams(_))),
            "more rows than the GEMV takes"
        );
    }

    /// The mask GEMV against the GEMV and `dynamic_mask` (or `dynamic_mask_at`) it replaces, bit for bit, and
    /// against the CPU's `linear` and `key_values` with `dt` rounded where the device rounds it (the product, then
    /// with a bias the sum). Tolerance: m = exp(a·softplus(dt)) moves by at most |a|·|Δdt| relatively; the device's
    /// `dt` differs from the CPU's by the sums' order (`dt_atol`) and, in bf16, where that moves a value across a
    /// rounding boundary, one unit (2⁻⁷ relative; 2⁻¹⁰ in f16) of each rounding; on top, the device's expf and log1pf against the
    /// CPU's (1e-5 relative, as in the dynamic-mask tests).
    #[allow(clippy::too_many_arguments)]
    fn run_mask<T: Elem>(
        rows: usize,
        seq: usize,
        inp: usize,
        out: usize,
        bias: bool,
        cache: Option<(usize, i64)>,
        seed: u64,
        dt_rtol: f64,
    ) where
        cudarc::cublas::CudaBlas: cudarc::cublas::Gemm<T>,
    {
        use crate::dynamic_mask::{cuda as dm, KeyValuesParams};
        let Some(gpu) = test_gpu() else { return };
        let mut rng = Rng::new(seed);
        let q = |v: Vec<f32>| -> Vec<T> { v.into_iter().map(T::from_f32).collect() };
        let f = |v: &[T]| -> Vec<f32> { v.iter().map(|x| x.to_f32()).collect() };
        let (x, w, b) = (
            q(rng.vec(rows * inp, -1.0, 1.0)),
            q(rng.vec(out * inp, -1.0, 1.0)),
            q(rng.vec(out, -1.0, 1.0)),
        );
        let a = rng.vec(out, -2.0, 0.5);
        let p = LinearParams { rows, in_features: inp, out_features: out };
        let kp = KeyValuesParams { batch: rows / seq, seq, heads: out };
        let up = |v: &[T]| gpu.upload(v).unwrap();
        let (dx, dw, db, da) = (up(&x), up(&w), up(&b), gpu.upload(&a).unwrap());
        let mut dt = gpu.upload(&vec![T::from_f32(f32::NAN); rows * out]).unwrap();
        cuda::linear(&gpu, &p, &dx, &dw, bias.then_some(&db), &mut dt).unwrap();
        let slots = cache.map_or(seq, |(cap, _)| cap);
        let start: Vec<f32> = rng.vec(kp.batch * out * slots, 5.0, 6.0);
        let (mut want, mut got) = (gpu.upload(&start).unwrap(), gpu.upload(&start).unwrap());
        let what = format!(
            "mask_gemv_{} {rows}x{inp}x{out} seq {seq} bias {bias} cache {cache:?}",
            T::NAME
        );
        let pos = gpu.upload(&[cache.map_or(0, |(_, at)| at)]).unwrap();
        let dest = match cache {
            Some((capacity, _)) => {
                dm::key_values_at(&gpu, &kp, &dt, &da, &pos, capacity, &mut want).unwrap();
                cuda::MaskOut::Cache { pos: &pos, capacity }
            }
            None => {
                dm::key_values(&gpu, &kp, &dt, &da, &mut want).unwrap();
                cuda::MaskOut::Values
            }
        };
        cuda::mask_linear(&gpu, &p, seq, &dx, &dw, bias.then_some(&db), &da, dest, &mut got)
            .unwrap();
        let (want, got) = (gpu.download(&want).unwrap(), gpu.download(&got).unwrap());
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&got), bits(&want), "{what}: differs from gemv then dynamic_mask");
        let (round, bf) = (|v: f32| T::from_f32(v).to_f32(), f(&b));
        let unbiased = linear(&p, &f(&x), &f(&w), None).unwrap();
        let cpu_dt: Vec<f32> = unbiased
            .iter()
            .enumerate()
            .map(|(i, &v)| if bias { round(round(v) + bf[i % out]) } else { round(v) })
            .collect();
        let cpu = crate::dynamic_mask::key_values(&kp, &cpu_dt, &a).unwrap();
        let dt_atol = 1e-5 * (inp as f64).sqrt();
        let at = cache.map_or(0, |(_, at)| at);
        for bh in 0..kp.batch * out {
            for j in 0..slots {
                let g = f64::from(got[bh * slots + j]);
                let Some(k) = usize::try_from(j as i64 - at).ok().filter(|&k| k < seq) else {
                    assert_eq!(
                        g,
                        f64::from(start[bh * slots + j]),
                        "{what}: slot {j} of row {bh} written"
                    );
                    continue;
                };
                let (bb, h) = (bh / out, bh % out);
                let i = (bb * seq + k) * out + h;
                let (d, u) = (f64::from(cpu_dt[i]), f64::from(unbiased[i]));
                let m = f64::from(cpu[bh * seq + k]);
                let tol =
                    m * f64::from(a[h].abs()) * (dt_atol + dt_rtol * (d.abs() + u.abs())) * 1.01
                        + 1e-5 * m;
                assert!(
                    (g - m).abs() <= tol,
                    "{what}: m[{bh}, {k}] = {g}, the CPU's {m} (tolerance {tol})"
                );
            }
        }
    }

    #[test]
    fn mask_gemv_matches_its_parts_and_the_cpu() {
        let shapes = [
            (1, 1, 1, 1, None),
            (1, 1, 512, 8, Some((64, 17))),
            (2, 1, 512, 8, Some((64, 63))),
            (4, 2, 130, 5, Some((9, 7))),
            (3, 3, 7, 16, None),
            (4, 1, 1024, 33, Some((5, 0))),
            (2, 2, 64, 8, Some((4, 3))),
            (4, 2, 64, 8, Some((4, -1))),
            (1, 1, 64, 8, Some((4, -1))),
        ];
        for (i, &(r, s, k, n, cache)) in shapes.iter().enumerate() {
            for bias in [false, true] {
                run_mask::<f32>(r, s, k, n, bias, cache, 60 + i as u64, 0.0);
                run_mask::<half::bf16>(r, s, k, n, bias, cache, 70 + i as u64, DT_RTOL_BF16);
                run_mask::<half::f16>(r, s, k, n, bias, cache, 80 + i as u64, DT_RTOL_F16);
            }
        }
        let Some(gpu) = test_gpu() else { return };
        let (x, w, a) = (
            gpu.zeros::<f32>(20).unwrap(),
            gpu.zeros::<f32>(8).unwrap(),
            gpu.zeros::<f32>(2).unwrap(),
        );
        let mut m = gpu.zeros::<f32>(10).unwrap();
        let p = LinearParams { rows: 5, in_features: 4, out_features: 2 };
        let r = cuda::mask_linear(&gpu, &p, 5, &x, &w, None, &a, cuda::MaskOut::Values, &mut m);
        assert!(
            matches!(r, Err(crate::KernelError::BadParams(_))),
            "more rows than the GEMV takes"
        );
        let p = LinearParams { rows: 3, in_features: 4, out_features: 2 };
        let x = gpu.zeros::<f32>(12).unwrap();
        let mut m = gpu.zeros::<f32>(6).unwrap();
        let r = cuda::mask_linear(&gpu, &p, 2, &x, &w, None, &a, cuda::MaskOut::Values, &mut m);
        assert!(
            matches!(r, Err(crate::KernelError::BadParams(_))),
            "3 rows are not sequences of 2"
        );
    }

    #[test]
    fn linears_match_the_cpu() {
        for (i, &(r, k, n)) in [
            (0, 4, 4),
            (1, 1, 1),
            (3, 7, 5),
            (17, 64, 196),
            (128, 256, 512),
            (1, 4096, 64),
            (2, 1024, 300),
            (4, 130, 33),
            (5, 64, 40),
        ]
        .iter()
        .enumerate()
        .filter(|(i, _)| in_shard(*i))
        {
            for bias in [false, true] {
                run::<f32>(r, k, n, bias, i as u64, 1e-5);
                run::<half::bf16>(r, k, n, bias, 10 + i as u64, RTOL_BF16);
                run::<half::f16>(r, k, n, bias, 20 + i as u64, RTOL_F16);
            }
        }
    }
}

/// The matrix-vector kernels the launcher names for few-row linears are in the compiled module (no GPU needed).
#[test]
fn gemv_kernels_compile_for_sm_90() {
    let Some(cubin) = crate::testutil::sm90_cubin(&cuda::SOURCE) else { return };
    for rows in 1..=cuda::GEMV_MAX_ROWS {
        for name in [
            cuda::gemv_kernel::<f32>(rows),
            cuda::gemv_kernel::<half::bf16>(rows),
            cuda::gated_gemv_kernel::<f32>(rows),
            cuda::gated_gemv_kernel::<half::bf16>(rows),
            cuda::mask_gemv_kernel::<f32>(rows),
            cuda::mask_gemv_kernel::<half::bf16>(rows),
            cuda::gemv_kernel::<half::f16>(rows),
            cuda::gated_gemv_kernel::<half::f16>(rows),
            cuda::mask_gemv_kernel::<half::f16>(rows),
        ] {
            assert!(crate::testutil::has_symbol(&cubin, &name), "{name} missing");
        }
    }
}
