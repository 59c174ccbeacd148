use proptest::prelude::*;

use super::*;
use crate::rope::{inv_freq, tables};
use crate::testutil::{assert_close, Rng};

/// f32 norm (a few ulps) then two products and a sum, against f64.
const ATOL: f64 = 1e-6;
const RTOL: f64 = 4e-6;

/// The formula in f64: each head normalised, then rotated.
fn reference(p: &NormRopeParams, x: &[f32], w: &[f32], cos: &[f32], sin: &[f32]) -> Vec<f64> {
    let (d, half) = (p.dim, p.dim / 2);
    let mut y = vec![0.0; x.len()];
    for v in 0..p.rows * p.heads {
        let head = &x[v * d..(v + 1) * d];
        let mean = head.iter().map(|&e| f64::from(e).powi(2)).sum::<f64>() / d as f64;
        let scale = 1.0 / (mean + f64::from(p.eps)).sqrt();
        let n: Vec<f64> = (0..d).map(|c| f64::from(w[c]) * f64::from(head[c]) * scale).collect();
        let r = v / p.heads;
        for c in 0..d {
            let partner = if c < half { -n[c + half] } else { n[c - half] };
            y[v * d + c] = n[c] * f64::from(cos[r * d + c]) + partner * f64::from(sin[r * d + c]);
        }
    }
    y
}

struct Case {
    p: NormRopeParams,
    x: Vec<f32>,
    w: Vec<f32>,
    cos: Vec<f32>,
    sin: Vec<f32>,
}

fn case(rows: usize, heads: usize, dim: usize, seed: u64) -> Case {
    let p = NormRopeParams { rows, heads, dim, eps: 1e-6 };
    let mut rng = Rng::new(seed);
    let x = rng.vec(rows * heads * dim, -3.0, 3.0);
    let w = rng.vec(dim, -2.0, 2.0);
    let positions: Vec<i64> = (0..rows).map(|_| rng.below(5000) as i64).collect();
    let (cos, sin) = tables(&positions, &inv_freq(10_000.0, dim));
    Case { p, x, w, cos, sin }
}

fn check(rows: usize, heads: usize, dim: usize, seed: u64) {
    let c = case(rows, heads, dim, seed);
    let got = norm_rope(&c.p, &c.x, &c.w, &c.cos, &c.sin).unwrap();
    let want = reference(&c.p, &c.x, &c.w, &c.cos, &c.sin);
    assert_close(&got, &want, ATOL, RTOL, &format!("norm_rope {:?}", c.p));
}

const EDGE: [(usize, usize, usize); 9] = [
    (0, 2, 8),
    (3, 0, 8),
    (1, 1, 2),
    (3, 7, 4),
    (2, 3, 62),
    (2, 1, 64),
    (5, 8, 128),
    (2, 2, 66),
    (1, 2, 1026),
];

#[test]
fn edge_shapes() {
    for (i, &(rows, heads, dim)) in EDGE.iter().enumerate() {
        check(rows, heads, dim, i as u64);
    }
}

#[test]
fn is_the_norm_then_the_rotation() {
    let c = case(4, 3, 10, 9);
    let normed = crate::rms_norm::rms_norm(
        &crate::rms_norm::RmsNormParams { rows: 12, cols: 10, eps: 1e-6 },
        &c.x,
        &c.w,
    )
    .unwrap();
    let want = crate::rope::apply(&c.p.rope(), &normed, &c.cos, &c.sin).unwrap();
    assert_eq!(norm_rope(&c.p, &c.x, &c.w, &c.cos, &c.sin).unwrap(), want);
    let bf = cpu::norm_rope_rounded::<half::bf16>(&c.p, &c.x, &c.w, &c.cos, &c.sin).unwrap();
    assert!(bf.iter().all(|v| half::bf16::from_f32(*v).to_f32() == *v), "bf16 values");
}

#[test]
fn errors_name_the_buffer() {
    let p = NormRopeParams { rows: 2, heads: 1, dim: 3, eps: 1e-6 };
    let Err(crate::KernelError::BadParams(msg)) =
        norm_rope(&p, &[0.0; 6], &[0.0; 3], &[0.0; 6], &[0.0; 6])
    else {
        panic!()
    };
    assert!(msg.contains("odd"), "{msg}");
    let p = NormRopeParams { rows: 2, heads: 1, dim: 4, eps: 1e-6 };
    let Err(crate::KernelError::BadParams(msg)) =
        norm_rope(&p, &[0.0; 8], &[0.0; 5], &[0.0; 8], &[0.0; 8])
    else {
        panic!()
    };
    assert!(msg.contains("`w` has 5 elements, expected 4"), "{msg}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn random_shapes(rows in 0usize..24, heads in 0usize..5, half in 1usize..80, seed: u64) {
        check(rows, heads, 2 * half, seed);
    }
}

/// CUDA against the CPU kernel and against the two unfused CUDA kernels. Unfused: bit for bit in f32, bf16 and f16
/// (the same block sum, roundings and rotation). CPU: f32 within the norm's f32 sum against the CPU's f64 one (a few
/// ulps, carried through the rotation); bf16 within the normalised value's two roundings plus the rotation's three,
/// each at most bf16's unit roundoff 2⁻⁸ relative, so 5·2⁻⁸·(|n_c·cos| + |n_p·sin|) per element; f16 the same at
/// 2⁻¹¹, plus its subnormals' absolute steps.
mod gpu {
    use super::cuda::MAX_DIM;
    use super::*;
    use crate::cuda::{test_gpu, Elem, Gpu};

    const RTOL_F32: f64 = 2e-5;
    const BF16_ROUNDINGS: f64 = 5.0 * 0.00390625;
    /// The same five roundings at f16's unit roundoff 2⁻¹¹.
    const F16_ROUNDINGS: f64 = 5.0 * 0.00048828125;
    /// Five roundings of f16 subnormals, each off by at most half their step 2⁻²⁴.
    const F16_FLOOR: f64 = 5.0 * 2.98023223876953125e-8;

    fn up<T: Elem>(gpu: &Gpu, v: &[f32]) -> cudarc::driver::CudaSlice<T> {
        gpu.upload(&v.iter().map(|&x| T::from_f32(x)).collect::<Vec<T>>()).unwrap()
    }

    fn back<T: Elem>(gpu: &Gpu, d: &cudarc::driver::CudaSlice<T>) -> Vec<f32> {
        gpu.download(d).unwrap().into_iter().map(|v| v.to_f32()).collect()
    }

    /// The fused kernel's output and the unfused kernels', both from the inputs rounded to `T`.
    fn run<T: Elem>(gpu: &Gpu, c: &Case) -> (Vec<f32>, Vec<f32>) {
        let (x, w, cos, sin) =
            (up::<T>(gpu, &c.x), up::<T>(gpu, &c.w), up::<T>(gpu, &c.cos), up::<T>(gpu, &c.sin));
        let mut y = up::<T>(gpu, &vec![f32::NAN; c.x.len()]);
        cuda::norm_rope(gpu, &c.p, &x, &w, &cos, &sin, &mut y).unwrap();
        let np = crate::rms_norm::RmsNormParams {
            rows: c.p.rows * c.p.heads,
            cols: c.p.dim,
            eps: c.p.eps,
        };
        let mut normed = up::<T>(gpu, &vec![f32::NAN; c.x.len()]);
        let mut two = up::<T>(gpu, &vec![f32::NAN; c.x.len()]);
        if !c.x.is_empty() {
            crate::rms_norm::cuda::rms_norm(gpu, &np, &x, &w, &mut normed).unwrap();
            crate::rope::cuda::apply(gpu, &c.p.rope(), &normed, &cos, &sin, &mut two).unwrap();
        }
        (back(gpu, &y), back(gpu, &two))
    }

    fn check_gpu(rows: usize, heads: usize, dim: usize, seed: u64) {
        let Some(gpu) = test_gpu() else { return };
        let c = case(rows, heads, dim, seed);
        let what = format!("{:?}", c.p);
        let (fused, two) = run::<f32>(&gpu, &c);
        assert_eq!(
            fused.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            two.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            "f32 fused vs unfused {what}"
        );
        let want = norm_rope(&c.p, &c.x, &c.w, &c.cos, &c.sin).unwrap();
        let wide: Vec<f64> = want.iter().map(|&v| f64::from(v)).collect();
        assert_close(&fused, &wide, 1e-6, RTOL_F32, &format!("f32 against the CPU {what}"));

        check_narrow::<half::bf16>(&gpu, &c, BF16_ROUNDINGS, 1e-30);
        check_narrow::<half::f16>(&gpu, &c, F16_ROUNDINGS, F16_FLOOR);
    }

    /// The kernels in `T` (bf16 or f16): fused and unfused bit for bit, and the CPU kernel on the rounded inputs
    /// within `roundings`·(|n_c·cos| + |n_p·sin|) + `floor` per element.
    fn check_narrow<T: Elem>(gpu: &Gpu, c: &Case, roundings: f64, floor: f64) {
        let (rows, heads, dim) = (c.p.rows, c.p.heads, c.p.dim);
        let what = format!("{} {:?}", T::NAME, c.p);
        let q = |v: &[f32]| -> Vec<f32> { v.iter().map(|&x| T::from_f32(x).to_f32()).collect() };
        let cq = Case { p: c.p, x: q(&c.x), w: q(&c.w), cos: q(&c.cos), sin: q(&c.sin) };
        let (fused, two) = run::<T>(gpu, &cq);
        assert_eq!(
            fused.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            two.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            "fused vs unfused {what}"
        );
        let np = crate::rms_norm::RmsNormParams { rows: rows * heads, cols: dim, eps: c.p.eps };
        let n = crate::rms_norm::rms_norm(&np, &cq.x, &cq.w).unwrap();
        let want = norm_rope(&cq.p, &cq.x, &cq.w, &cq.cos, &cq.sin).unwrap();
        let half = dim / 2;
        for (i, (&g, &e)) in fused.iter().zip(&want).enumerate() {
            let (v, k) = (i / dim, i % dim);
            let r = v / heads;
            let p = if k < half { k + half } else { k - half };
            let terms =
                (n[i] * cq.cos[r * dim + k]).abs() + (n[v * dim + p] * cq.sin[r * dim + k]).abs();
            let bound = roundings * f64::from(terms) + floor;
            assert!(
                (f64::from(g) - f64::from(e)).abs() <= bound,
                "element {i}: {g} against {e} (bound {bound}) {what}"
            );
        }
    }

    #[test]
    fn edge_shapes_match_the_cpu_and_the_unfused_kernels() {
        for (i, &(rows, heads, dim)) in
            EDGE.iter().chain(&[(3, 2, 2048), (1, 1, MAX_DIM)]).enumerate()
        {
            check_gpu(rows, heads, dim, 500 + i as u64);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn random_shapes_match_the_cpu_and_the_unfused_kernels(
            rows in 1usize..40, heads in 1usize..9, half in 1usize..160, seed: u64,
        ) {
            check_gpu(rows, heads, 2 * half, seed);
        }
    }

    /// `norm_rope_at` against `norm_rope` whose rows are put into the cache on the host: bit for bit, the other slots
    /// untouched, and nothing written outside the capacity (past it, or before slot 0 for a negative position).
    fn check_at<T: Elem>(
        seqs: usize,
        seq: usize,
        heads: usize,
        dim: usize,
        cap: usize,
        at: i64,
        seed: u64,
    ) {
        let Some(gpu) = test_gpu() else { return };
        let mut c = case(seqs * seq, heads, dim, seed);
        let round =
            |v: &[f32]| -> Vec<f32> { v.iter().map(|&x| T::from_f32(x).to_f32()).collect() };
        (c.x, c.w, c.cos, c.sin) = (round(&c.x), round(&c.w), round(&c.cos), round(&c.sin));
        let (x, w, cos, sin) = (
            up::<T>(&gpu, &c.x),
            up::<T>(&gpu, &c.w),
            up::<T>(&gpu, &c.cos),
            up::<T>(&gpu, &c.sin),
        );
        let mut y = up::<T>(&gpu, &vec![f32::NAN; c.x.len()]);
        cuda::norm_rope(&gpu, &c.p, &x, &w, &cos, &sin, &mut y).unwrap();
        let y = back(&gpu, &y);
        let start: Vec<f32> =
            (0..seqs * heads * cap * dim).map(|i| (i % 251) as f32 - 125.0).collect();
        let want = crate::testutil::placed_on_host(&start, &y, [seqs, seq, heads, dim], cap, at);
        let pos = gpu.upload(&[at]).unwrap();
        let mut cache = up::<T>(&gpu, &start);
        cuda::norm_rope_at(&gpu, &c.p, seq, &x, &w, &cos, &sin, &pos, cap, &mut cache).unwrap();
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        let what = format!(
            "norm_rope_at_{} {seqs}×{seq} tokens, {heads}×{dim}, slot {at} of {cap}",
            T::NAME
        );
        assert_eq!(bits(&back(&gpu, &cache)), bits(&want), "{what}");
    }

    #[test]
    fn rows_written_into_a_cache_are_norm_rope_then_place_rows() {
        let shapes = [
            (1, 1, 4, 128, 64, 17),
            (2, 1, 8, 64, 9, 8),
            (3, 2, 2, 130, 7, 0),
            (2, 3, 3, 2048, 5, 2),
            (1, 2, 1, 6, 4, 3),
            (2, 2, 2, 4, 3, 5),
            (2, 3, 3, 64, 5, -2),
            (1, 1, 4, 128, 64, -1),
        ];
        for (i, &(b, s, h, d, cap, at)) in shapes.iter().enumerate() {
            check_at::<f32>(b, s, h, d, cap, at, 700 + i as u64);
            check_at::<half::bf16>(b, s, h, d, cap, at, 710 + i as u64);
            check_at::<half::f16>(b, s, h, d, cap, at, 720 + i as u64);
        }
        let Some(gpu) = test_gpu() else { return };
        let z = |n: usize| gpu.zeros::<f32>(n).unwrap();
        let (p, pos) =
            (NormRopeParams { rows: 3, heads: 1, dim: 4, eps: 1e-6 }, gpu.upload(&[0i64]).unwrap());
        let r = cuda::norm_rope_at(&gpu, &p, 2, &z(12), &z(4), &z(12), &z(12), &pos, 4, &mut z(16));
        assert!(
            matches!(r, Err(crate::KernelError::BadParams(_))),
            "3 rows are not sequences of 2 tokens"
        );
        let p = NormRopeParams { rows: 2, heads: 1, dim: 4, eps: 1e-6 };
        let r = cuda::norm_rope_at(&gpu, &p, 1, &z(8), &z(4), &z(8), &z(8), &pos, 4, &mut z(15));
        assert!(matches!(r, Err(crate::KernelError::BadParams(m)) if m.contains("`cache`")));
    }

    #[test]
    fn bad_sizes_are_refused() {
        let Some(gpu) = test_gpu() else { return };
        let z = |n: usize| gpu.zeros::<f32>(n).unwrap();
        let p = NormRopeParams { rows: 2, heads: 1, dim: 4, eps: 1e-6 };
        let mut y = z(7);
        let r = cuda::norm_rope(&gpu, &p, &z(8), &z(4), &z(8), &z(8), &mut y);
        assert!(matches!(r, Err(crate::KernelError::BadParams(m)) if m.contains("`y`")));
        let p = NormRopeParams { rows: 1, heads: 1, dim: MAX_DIM + 2, eps: 1e-6 };
        let n = MAX_DIM + 2;
        let r = cuda::norm_rope(&gpu, &p, &z(n), &z(n), &z(n), &z(n), &mut z(n));
        assert!(matches!(r, Err(crate::KernelError::BadParams(m)) if m.contains("exceeds")));
    }
}

/// Every kernel the launchers name is in the compiled module (no GPU needed).
#[test]
fn kernels_compile_for_sm_90() {
    let Some(cubin) = crate::testutil::sm90_cubin(&cuda::SOURCE) else { return };
    for name in ["norm_rope_f32", "norm_rope_bf16", "norm_rope_at_f32", "norm_rope_at_bf16"] {
        assert!(crate::testutil::has_symbol(&cubin, name), "{name} missing");
    }
}
