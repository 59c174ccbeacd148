use super::*;
use crate::testutil::Rng;

#[test]
fn cpu_glue_matches_its_definitions() {
    assert_eq!(cpu::add(&[1.0, 2.0], &[3.0, -1.0]).unwrap(), vec![4.0, 1.0]);
    assert_eq!(
        cpu::scaled_residual(&[2.0, 3.0], &[1.0, 1.0, 2.0, 2.0], &[0.5; 4]).unwrap(),
        vec![2.5, 3.5, 4.5, 6.5]
    );
    assert_eq!(
        cpu::mask_rows(&[1.0, 2.0, 3.0, 4.0], &[0, 1], 2).unwrap(),
        vec![0.0, 0.0, 3.0, 4.0]
    );
    let x: Vec<f32> = (0..24).map(|v| v as f32).collect();
    let y = cpu::swap_axes_12(&x, [1, 2, 3, 4]).unwrap();
    assert_eq!(&y[..8], &[0.0, 1.0, 2.0, 3.0, 12.0, 13.0, 14.0, 15.0]);
    assert_eq!(cpu::swap_axes_12(&y, [1, 3, 2, 4]).unwrap(), x, "swapping twice is the identity");
    assert_eq!(
        cpu::concat(&[1.0, 2.0], &[7.0, 8.0, 9.0, 10.0], 2, 1, 2).unwrap(),
        vec![1.0, 7.0, 8.0, 2.0, 9.0, 10.0]
    );
    assert_eq!(
        cpu::slice_cols(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 3, 1, 2).unwrap(),
        vec![2.0, 3.0, 5.0, 6.0]
    );
    assert!(cpu::slice_cols(&[1.0, 2.0], 2, 1, 2).is_err());
    let mut dst = vec![0.0; 8];
    cpu::place_rows(&[1.0, 2.0, 3.0, 4.0], &mut dst, 2, 1, 2, 2, 1).unwrap();
    assert_eq!(dst, vec![0.0, 0.0, 1.0, 2.0, 0.0, 0.0, 3.0, 4.0]);
    assert!(
        cpu::place_rows(&[1.0, 2.0, 3.0, 4.0], &mut dst, 2, 1, 2, 2, 2).is_err(),
        "past the capacity"
    );
    assert!(cpu::add(&[1.0], &[1.0, 2.0]).is_err());
    assert!(cpu::scaled_residual(&[1.0, 2.0, 3.0], &[0.0; 4], &[0.0; 4]).is_err());
}

/// CUDA against the CPU glue: exact for f32 (one rounding per element, same order), one bf16 rounding for bf16.
mod gpu {
    use super::*;
    use crate::cuda::{test_gpu, Elem, Gpu};

    fn up<T: Elem>(g: &crate::cuda::Gpu, v: &[f32]) -> cudarc::driver::CudaSlice<T> {
        g.upload(&v.iter().map(|&x| T::from_f32(x)).collect::<Vec<T>>()).unwrap()
    }

    fn down<T: Elem>(g: &crate::cuda::Gpu, v: &cudarc::driver::CudaSlice<T>) -> Vec<f32> {
        g.download(v).unwrap().into_iter().map(|x| x.to_f32()).collect()
    }

    fn rounded<T: Elem>(v: &[f32]) -> Vec<f32> {
        v.iter().map(|&x| T::from_f32(x).to_f32()).collect()
    }

    fn run<T: Elem>(seed: u64, dims: [usize; 4]) {
        let Some(g) = test_gpu() else { return };
        let mut rng = Rng::new(seed);
        let n: usize = dims.iter().product();
        let cols = dims[3];
        let (a, b) = (rounded::<T>(&rng.vec(n, -2.0, 2.0)), rounded::<T>(&rng.vec(n, -2.0, 2.0)));
        let w = rounded::<T>(&rng.vec(cols, 0.5, 1.5));
        let mut y = g.upload(&vec![T::from_f32(f32::NAN); n]).unwrap();
        cuda::add(&g, &up::<T>(&g, &a), &up::<T>(&g, &b), &mut y).unwrap();
        assert_eq!(down(&g, &y), rounded::<T>(&cpu::add(&a, &b).unwrap()), "add {dims:?}");
        cuda::scaled_residual(&g, &up::<T>(&g, &w), &up::<T>(&g, &a), &up::<T>(&g, &b), &mut y)
            .unwrap();
        assert_eq!(
            down(&g, &y),
            rounded::<T>(&cpu::scaled_residual(&w, &a, &b).unwrap()),
            "residual {dims:?}"
        );
        let mask: Vec<i64> = (0..n / cols.max(1)).map(|r| (r % 3 != 0) as i64).collect();
        cuda::mask_rows(&g, &up::<T>(&g, &a), &g.upload(&mask).unwrap(), cols, &mut y).unwrap();
        assert_eq!(down(&g, &y), cpu::mask_rows(&a, &mask, cols).unwrap(), "mask_rows {dims:?}");
        cuda::swap_axes_12(&g, &up::<T>(&g, &a), dims, &mut y).unwrap();
        assert_eq!(down(&g, &y), cpu::swap_axes_12(&a, dims).unwrap(), "swap {dims:?}");
        let (outer, ia, ib) = (dims[0] * dims[1], dims[2] * dims[3], 3 * dims[3]);
        let c = rounded::<T>(&rng.vec(outer * ib, -1.0, 1.0));
        let mut out = g.zeros::<T>(outer * (ia + ib)).unwrap();
        cuda::concat(&g, &up::<T>(&g, &a), &up::<T>(&g, &c), outer, ia, ib, &mut out).unwrap();
        assert_eq!(down(&g, &out), cpu::concat(&a, &c, outer, ia, ib).unwrap(), "concat {dims:?}");
        let (rows, cols) = (n / cols.max(1), cols);
        if cols >= 2 {
            let mut sl = g.zeros::<T>(rows * (cols - 1)).unwrap();
            cuda::slice_cols(&g, &up::<T>(&g, &a), rows, cols, 1, cols - 1, &mut sl).unwrap();
            assert_eq!(
                down(&g, &sl),
                cpu::slice_cols(&a, cols, 1, cols - 1).unwrap(),
                "slice {dims:?}"
            );
        }
    }

    #[test]
    fn glue_matches_the_cpu() {
        for (i, dims) in
            [[0, 1, 1, 1], [1, 1, 1, 1], [2, 3, 5, 7], [1, 17, 4, 128], [3, 2, 1000, 33]]
                .into_iter()
                .enumerate()
        {
            run::<f32>(i as u64, dims);
            run::<half::bf16>(50 + i as u64, dims);
        }
    }

    /// `place_rows` against the CPU for every position of small caches and random larger ones, all three element
    /// types (a copy: exact); rows a device position puts outside the capacity are left out.
    #[test]
    fn place_rows_matches_the_cpu() {
        let Some(g) = test_gpu() else { return };
        let mut rng = Rng::new(77);
        let mut cases = vec![(1, 1, 1, 1), (1, 3, 1, 4), (2, 1, 5, 3), (3, 2, 64, 7)];
        for _ in 0..6 {
            let (outer, inner) = (1 + rng.below(9), 1 + rng.below(130));
            let rows = 1 + rng.below(5);
            cases.push((outer, rows, inner, rows + rng.below(40)));
        }
        for (outer, rows, inner, cap) in cases {
            for pos in [0, (cap - rows) / 2, cap - rows] {
                let x = rng.vec(outer * rows * inner, -4.0, 4.0);
                let base = rng.vec(outer * cap * inner, -4.0, 4.0);
                let mut want = base.clone();
                cpu::place_rows(&x, &mut want, outer, rows, inner, cap, pos).unwrap();
                let at = g.upload(&[pos as i64]).unwrap();
                let mut d = up::<f32>(&g, &base);
                cuda::place_rows(&g, &up::<f32>(&g, &x), outer, rows, inner, cap, &at, &mut d)
                    .unwrap();
                assert_eq!(down(&g, &d), want, "f32 {outer}×{rows}×{inner} cap {cap} at {pos}");
                let mut d = up::<half::bf16>(&g, &base);
                cuda::place_rows(
                    &g,
                    &up::<half::bf16>(&g, &x),
                    outer,
                    rows,
                    inner,
                    cap,
                    &at,
                    &mut d,
                )
                .unwrap();
                assert_eq!(down(&g, &d), rounded::<half::bf16>(&want), "bf16 at {pos}");
                let xi: Vec<i64> = x.iter().map(|v| (v * 1000.0) as i64).collect();
                let mut wi: Vec<i64> = base.iter().map(|v| (v * 1000.0) as i64).collect();
                let mut di = g.upload(&wi).unwrap();
                cpu::place_rows(&xi, &mut wi, outer, rows, inner, cap, pos).unwrap();
                cuda::place_rows(
                    &g,
                    &g.upload(&xi).unwrap(),
                    outer,
                    rows,
                    inner,
                    cap,
                    &at,
                    &mut di,
                )
                .unwrap();
                assert_eq!(g.download(&di).unwrap(), wi, "i64 at {pos}");
            }
        }
        let mut small = g.zeros::<f32>(4).unwrap();
        let at = g.upload(&[0i64]).unwrap();
        let r = cuda::place_rows(&g, &g.zeros::<f32>(6).unwrap(), 1, 3, 2, 2, &at, &mut small);
        assert!(matches!(r, Err(crate::KernelError::BadParams(_))), "more rows than the capacity");
        // Positions whose rows run past the capacity (or start before it) write only the rows inside it.
        let (outer, rows, inner, cap) = (3, 2, 5, 4);
        let x = rng.vec(outer * rows * inner, -4.0, 4.0);
        let base = rng.vec(outer * cap * inner, -4.0, 4.0);
        for pos in [-3i64, -1, 3, 4, 9] {
            let mut want = base.clone();
            for o in 0..outer {
                for r in 0..rows {
                    let at = pos + r as i64;
                    if (0..cap as i64).contains(&at) {
                        let to = (o * cap + at as usize) * inner;
                        want[to..to + inner].copy_from_slice(&x[(o * rows + r) * inner..][..inner]);
                    }
                }
            }
            let mut d = up::<f32>(&g, &base);
            let at = g.upload(&[pos]).unwrap();
            cuda::place_rows(&g, &up::<f32>(&g, &x), outer, rows, inner, cap, &at, &mut d).unwrap();
            assert_eq!(down(&g, &d), want, "rows from {pos} into a capacity of {cap}");
        }
    }

    /// `Gpu::fill` sets every element to the value rounded to the element type.
    #[test]
    fn fill_sets_every_element() {
        let Some(g) = test_gpu() else { return };
        for n in [1, 3, 1000] {
            let mut a = g.zeros::<f32>(n).unwrap();
            g.fill(&mut a, 1.0).unwrap();
            assert_eq!(g.download(&a).unwrap(), vec![1.0; n]);
            let mut b = g.zeros::<half::bf16>(n).unwrap();
            g.fill(&mut b, 0.1).unwrap();
            assert_eq!(g.download(&b).unwrap(), vec![half::bf16::from_f32(0.1); n]);
        }
    }

    fn check_casts<T: Elem + PartialEq + std::fmt::Debug>(g: &Gpu, x: &[f32]) {
        let mut b = g.zeros::<T>(x.len()).unwrap();
        cuda::cast_from_f32(g, &g.upload(x).unwrap(), &mut b).unwrap();
        let want: Vec<T> = x.iter().map(|&v| T::from_f32(v)).collect();
        assert_eq!(g.download(&b).unwrap(), want, "f32 → {}", T::NAME);
        let mut back = g.zeros::<f32>(x.len()).unwrap();
        cuda::cast_to_f32(g, &b, &mut back).unwrap();
        let wide: Vec<u32> = want.iter().map(|v| v.to_f32().to_bits()).collect();
        let got: Vec<u32> = g.download(&back).unwrap().iter().map(|v| v.to_bits()).collect();
        assert_eq!(got, wide, "{} → f32", T::NAME);
    }

    /// Casts round as `half` does (to nearest, ties to even), f16 overflowing to ±∞ from 65520 and keeping its
    /// subnormals; the way back is exact.
    #[test]
    fn casts_round_to_nearest_even() {
        let Some(g) = test_gpu() else { return };
        let mut x: Vec<f32> = Rng::new(9).vec(1000, -100.0, 100.0);
        x.extend([
            65504.0,
            65519.0,
            65520.0,
            -7e4,
            1e-6,
            -3e-8,
            2.9e-8,
            1e30,
            f32::INFINITY,
            -0.0,
            1.0 + 1.0 / 2048.0,
        ]);
        check_casts::<half::bf16>(&g, &x);
        check_casts::<half::f16>(&g, &x);
        let mut same = g.zeros::<f32>(1).unwrap();
        assert!(cuda::cast_to_f32(&g, &g.zeros::<f32>(1).unwrap(), &mut same).is_err());
    }

    #[test]
    fn mismatched_buffers_are_refused() {
        let Some(g) = test_gpu() else { return };
        let (a, b) = (g.zeros::<f32>(4).unwrap(), g.zeros::<f32>(5).unwrap());
        let mut y = g.zeros::<f32>(4).unwrap();
        assert!(matches!(cuda::add(&g, &a, &b, &mut y), Err(crate::KernelError::BadParams(_))));
    }
}
