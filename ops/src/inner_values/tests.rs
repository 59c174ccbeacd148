use proptest::prelude::*;

use super::*;
use crate::testutil::{assert_close, Rng};
use crate::KernelError;

/// One f32 rounding of an f64 sum, then one f32 product.
const ATOL: f64 = 1e-6;
const RTOL: f64 = 3e-7;

struct Case {
    p: InnerValuesParams,
    x: Vec<f32>,
    vq: Vec<f32>,
    v_keys: Vec<f32>,
    v_embed: Vec<f32>,
}

impl Case {
    /// Quantized `vq` and `v_keys`: the similarities are exact and often tied.
    fn random(p: InnerValuesParams, seed: u64) -> Case {
        let mut rng = Rng::new(seed);
        Case {
            x: rng.vec(p.rows * p.dim, -2.0, 2.0),
            vq: rng.quantized(p.rows * p.heads * p.retrieval, 2, 0.5),
            v_keys: rng.quantized(p.heads * p.retrieval * p.num_values, 2, 0.5),
            v_embed: rng.vec(p.num_values * p.dim, -1.0, 1.0),
            p,
        }
    }

    fn run(&self) -> Result<Vec<f32>> {
        inner_values(&self.p, &self.x, &self.vq, &self.v_keys, &self.v_embed)
    }
}

fn reference(c: &Case) -> Vec<f64> {
    let p = &c.p;
    let (rv, nv, dim) = (p.retrieval, p.num_values, p.dim);
    let mut out = vec![0.0; p.rows * dim];
    for r in 0..p.rows {
        let mut values = vec![0.0; dim];
        for h in 0..p.heads {
            let sim: Vec<f64> = (0..nv)
                .map(|n| {
                    (0..rv)
                        .map(|i| {
                            f64::from(c.vq[(r * p.heads + h) * rv + i])
                                * f64::from(c.v_keys[(h * rv + i) * nv + n])
                        })
                        .sum()
                })
                .collect();
            let mut order: Vec<usize> = (0..nv).collect();
            order.sort_by(|&a, &b| sim[b].partial_cmp(&sim[a]).unwrap().then(a.cmp(&b)));
            for &n in &order[..p.k] {
                for (d, value) in values.iter_mut().enumerate() {
                    *value += f64::from(c.v_embed[n * dim + d]);
                }
            }
        }
        for (d, value) in values.iter().enumerate() {
            out[r * dim + d] = f64::from(c.x[r * dim + d]) * value;
        }
    }
    out
}

fn check(c: &Case) {
    assert_close(&c.run().unwrap(), &reference(c), ATOL, RTOL, &format!("inner_values {:?}", c.p));
}

fn params(
    rows: usize,
    heads: usize,
    retrieval: usize,
    num_values: usize,
    k: usize,
    dim: usize,
) -> InnerValuesParams {
    InnerValuesParams { rows, heads, retrieval, num_values, k, dim }
}

#[test]
fn edge_shapes() {
    let shapes = [
        (0, 2, 4, 8, 2, 16),
        (3, 0, 4, 8, 2, 16),
        (3, 2, 0, 8, 2, 16),
        (3, 2, 4, 8, 0, 16),
        (3, 2, 4, 8, 2, 0),
        (1, 1, 1, 1, 1, 1),
        (3, 2, 5, 7, 3, 9),
        (2, 4, 31, 32, 2, 33),
        (2, 2, 32, 33, 33, 31),
        (4, 1, 8, 64, 8, 128),
    ];
    for (i, &(r, h, rv, nv, k, dim)) in shapes.iter().enumerate() {
        check(&Case::random(params(r, h, rv, nv, k, dim), i as u64));
    }
}

#[test]
fn zero_keys_retrieve_the_first_values() {
    let mut c = Case::random(params(2, 2, 3, 5, 2, 4), 9);
    c.v_keys.iter_mut().for_each(|k| *k = 0.0);
    c.x.iter_mut().for_each(|x| *x = 1.0);
    let got = c.run().unwrap();
    for (d, &got) in got.iter().take(4).enumerate() {
        let want = 2.0 * (c.v_embed[d] + c.v_embed[4 + d]);
        assert!((got - want).abs() <= 1e-6, "dim {d}: got {got}, want {want}");
    }
    check(&c);
}

#[test]
fn errors_name_the_buffer() {
    let c = Case::random(params(2, 2, 3, 5, 2, 4), 1);
    let p = c.p;
    let Err(KernelError::BadParams(msg)) =
        inner_values(&p, &c.x, &c.vq[1..], &c.v_keys, &c.v_embed)
    else {
        panic!()
    };
    assert!(msg.contains("`vq` has 11 elements, expected 12"), "{msg}");
    let Err(KernelError::BadParams(msg)) =
        inner_values(&p, &c.x, &c.vq, &c.v_keys, &c.v_embed[1..])
    else {
        panic!()
    };
    assert!(msg.contains("`v_embed`"), "{msg}");
    let p = params(2, 2, 3, 5, 6, 4);
    let Err(KernelError::BadParams(msg)) = inner_values(&p, &c.x, &c.vq, &c.v_keys, &c.v_embed)
    else {
        panic!()
    };
    assert!(msg.contains("`k` 6 exceeds `num_values` 5"), "{msg}");
}

fn arb_params() -> impl Strategy<Value = InnerValuesParams> {
    (0usize..6, 1usize..4, 1usize..12, 1usize..40, 0usize..40).prop_flat_map(
        |(r, h, rv, nv, dim)| (0..=nv).prop_map(move |k| params(r, h, rv, nv, k, dim)),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn random(p in arb_params(), seed: u64) {
        check(&Case::random(p, seed));
    }
}

/// CUDA against the CPU kernel. The similarities are bit-identical (the same f64 sums in the same order), so the
/// same values are selected; their f32 sum over n = Hv·k rows differs from the CPU's rounded f64 sum by at most
/// n·u·Σ|v| (u = 2⁻²⁴), times |x|, plus one rounding of the product; bf16 adds one output rounding (2⁻⁸ with margin),
/// f16 one of its own (2⁻¹¹ with margin).
mod gpu {
    use super::*;
    use crate::cuda::{test_gpu, Elem, Gpu};
    use crate::testutil::max_abs;

    const U: f64 = 1.0 / (1u64 << 24) as f64;
    const RTOL_F32: f64 = 2.0 * U;
    const RTOL_BF16: f64 = 0.00390625;
    const RTOL_F16: f64 = 0.00048828125;

    /// The case with continuous similarities (ties only by accident).
    fn continuous(p: InnerValuesParams, seed: u64) -> Case {
        let mut c = Case::random(p, seed);
        let mut rng = Rng::new(seed ^ 0x5eed);
        c.vq = rng.vec(c.vq.len(), -1.0, 1.0);
        c.v_keys = rng.vec(c.v_keys.len(), -1.0, 1.0);
        c
    }

    fn rounded<T: Elem>(c: &Case) -> Case {
        let r = |v: &[f32]| v.iter().map(|&x| T::from_f32(x).to_f32()).collect();
        Case { p: c.p, x: r(&c.x), vq: r(&c.vq), v_keys: r(&c.v_keys), v_embed: r(&c.v_embed) }
    }

    fn run<T: Elem>(gpu: &Gpu, c: &Case) -> crate::Result<Vec<f32>> {
        let up = |v: &[f32]| gpu.upload(&v.iter().map(|&x| T::from_f32(x)).collect::<Vec<T>>());
        let (x, vq, v_keys, v_embed) = (up(&c.x)?, up(&c.vq)?, up(&c.v_keys)?, up(&c.v_embed)?);
        let mut out = gpu.upload(&vec![T::from_f32(f32::NAN); c.p.rows * c.p.dim])?;
        cuda::inner_values(gpu, &c.p, &x, &vq, &v_keys, &v_embed, &mut out)?;
        Ok(gpu.download(&out)?.into_iter().map(|v| v.to_f32()).collect())
    }

    fn check<T: Elem>(c: &Case, rtol: f64) {
        let Some(gpu) = test_gpu() else { return };
        let c = rounded::<T>(c);
        let want: Vec<f64> = c.run().unwrap().into_iter().map(f64::from).collect();
        let got = run::<T>(&gpu, &c).unwrap();
        let n = (c.p.heads * c.p.k) as f64;
        let x: Vec<f64> = c.x.iter().map(|&v| f64::from(v)).collect();
        let v: Vec<f64> = c.v_embed.iter().map(|&v| f64::from(v)).collect();
        let atol = (n + 1.0) * U * n * max_abs(&v) * max_abs(&x);
        assert_close(&got, &want, atol, rtol, &format!("inner_values_{} {:?}", T::NAME, c.p));
    }

    fn check_all(p: InnerValuesParams, seed: u64) {
        for c in [Case::random(p, seed), continuous(p, seed)] {
            check::<f32>(&c, RTOL_F32);
            check::<half::bf16>(&c, RTOL_BF16);
            check::<half::f16>(&c, RTOL_F16);
        }
    }

    #[test]
    fn edge_shapes_match_the_cpu_kernel() {
        let shapes = [
            (0, 2, 4, 8, 2, 16),
            (3, 0, 4, 8, 2, 16),
            (3, 2, 0, 8, 2, 16),
            (3, 2, 4, 8, 0, 16),
            (3, 2, 4, 8, 2, 0),
            (1, 1, 1, 1, 1, 1),
            (3, 2, 5, 7, 3, 9),
            (3, 2, 8, 16, 3, 64),
            (2, 4, 31, 32, 2, 33),
            (2, 2, 32, 33, 33, 31),
            (4, 1, 8, 64, 8, 128),
            (2, 2, 16, 1000, 10, 1024),
            (2, 3, 8, 4096, 5, 256),
            (1, 1, 4, 4096, 4096, 8),
        ];
        for (i, &(r, h, rv, nv, k, dim)) in shapes.iter().enumerate() {
            check_all(params(r, h, rv, nv, k, dim), 300 + i as u64);
        }
    }

    #[test]
    fn equal_similarities_retrieve_the_first_values() {
        let Some(gpu) = test_gpu() else { return };
        let mut c = Case::random(params(2, 2, 3, 5, 2, 4), 9);
        c.v_keys.iter_mut().for_each(|k| *k = 0.0);
        c.x.iter_mut().for_each(|x| *x = 1.0);
        let got = run::<f32>(&gpu, &c).unwrap();
        for (d, &got) in got.iter().take(4).enumerate() {
            let want = 2.0 * (c.v_embed[d] + c.v_embed[4 + d]);
            assert!((got - want).abs() <= 1e-6, "dim {d}: got {got}, want {want}");
        }
    }

    #[test]
    fn bad_sizes_are_refused() {
        let Some(gpu) = test_gpu() else { return };
        let c = Case::random(params(1, 1, 2, 4097, 1, 4), 1);
        let Err(KernelError::BadParams(msg)) = run::<f32>(&gpu, &c) else { panic!() };
        assert!(msg.contains("`num_values` 4097 exceeds"), "{msg}");
        let c = Case::random(params(1, 2, 2, 4096, 2049, 4), 2);
        let Err(KernelError::BadParams(msg)) = run::<f32>(&gpu, &c) else { panic!() };
        assert!(msg.contains("heads 2 × k 2049 exceeds"), "{msg}");
        let mut c = Case::random(params(2, 2, 3, 5, 2, 4), 3);
        c.vq.pop();
        let Err(KernelError::BadParams(msg)) = run::<f32>(&gpu, &c) else { panic!() };
        assert!(msg.contains("`vq` has 11 elements, expected 12"), "{msg}");
    }

    fn arb_gpu_params() -> impl Strategy<Value = InnerValuesParams> {
        (0usize..6, 1usize..4, 1usize..12, 1usize..600, 0usize..300).prop_flat_map(
            |(r, h, rv, nv, dim)| (0..=nv.min(64)).prop_map(move |k| params(r, h, rv, nv, k, dim)),
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn random_shapes_match_the_cpu_kernel(p in arb_gpu_params(), seed in any::<u64>()) {
            check_all(p, seed);
        }
    }
}
