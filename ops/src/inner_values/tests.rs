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
