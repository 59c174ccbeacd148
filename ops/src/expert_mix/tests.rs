use proptest::prelude::*;

use super::*;
use crate::act::{erf, Act};
use crate::testutil::{assert_close, max_abs, Rng};
use crate::KernelError;

/// f32 softmax and activation against f64, relative to the largest output.
const ATOL: f64 = 2e-6;
const RTOL: f64 = 1e-5;

fn act64(act: Act, x: f64) -> f64 {
    match act {
        Act::Silu => x / (1.0 + (-x).exp()),
        Act::Relu => x.max(0.0),
        Act::Gelu => 0.5 * x * (1.0 + erf(x / 2f64.sqrt())),
        Act::GeluTanh => {
            0.5 * x
                * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x.powi(3))).tanh())
        }
    }
}

struct Case {
    p: ExpertMixParams,
    x: Vec<f32>,
    scores: Vec<f32>,
    ids: Vec<i64>,
    down: Vec<f32>,
    up: Vec<f32>,
}

impl Case {
    fn random(p: ExpertMixParams, seed: u64) -> Case {
        let mut rng = Rng::new(seed);
        let n = p.rows * p.heads * p.k;
        Case {
            x: rng.vec(p.rows * p.dim, -1.0, 1.0),
            scores: rng.vec(n, -3.0, 3.0),
            ids: (0..n).map(|_| rng.below(p.num_experts.max(1)) as i64).collect(),
            down: rng.vec(p.num_experts * p.dim, -0.5, 0.5),
            up: rng.vec(p.num_experts * p.dim, -1.0, 1.0),
            p,
        }
    }

    fn run(&self, act: Act, order: ExpertAct, norm: bool) -> Result<Vec<f32>> {
        expert_mix(
            &self.p,
            act,
            order,
            norm,
            &self.x,
            &self.scores,
            &self.ids,
            &self.down,
            &self.up,
        )
    }
}

fn reference(c: &Case, act: Act, order: ExpertAct, norm: bool) -> Vec<f64> {
    let p = &c.p;
    let mut out = vec![0.0; p.rows * p.dim];
    for r in 0..p.rows {
        for h in 0..p.heads {
            let at = (r * p.heads + h) * p.k;
            let s: Vec<f64> = c.scores[at..at + p.k].iter().map(|&s| f64::from(s)).collect();
            let max = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = s.iter().map(|v| (v - max).exp()).collect();
            let mut probs: Vec<f64> = e.iter().map(|v| v / e.iter().sum::<f64>()).collect();
            if norm {
                let total: f64 = probs.iter().sum();
                probs.iter_mut().for_each(|v| *v /= total);
            }
            for (&id, &prob) in c.ids[at..at + p.k].iter().zip(&probs) {
                let e = id as usize;
                let d: f64 = (0..p.dim)
                    .map(|i| f64::from(c.x[r * p.dim + i]) * f64::from(c.down[e * p.dim + i]))
                    .sum();
                let w = match order {
                    ExpertAct::BeforeSoftmax => act64(act, d) * prob,
                    ExpertAct::AfterSoftmax => act64(act, d * prob),
                };
                for i in 0..p.dim {
                    out[r * p.dim + i] += w * f64::from(c.up[e * p.dim + i]);
                }
            }
        }
    }
    out
}

const ACTS: [Act; 4] = [Act::Silu, Act::Relu, Act::Gelu, Act::GeluTanh];

fn check(c: &Case, act: Act, order: ExpertAct, norm: bool) {
    let got = c.run(act, order, norm).unwrap();
    let want = reference(c, act, order, norm);
    let what = format!("expert_mix {:?} {act:?} {order:?} norm={norm}", c.p);
    assert_close(&got, &want, ATOL * (1.0 + max_abs(&want)), RTOL, &what);
}

fn check_all(c: &Case) {
    for act in ACTS {
        for order in [ExpertAct::BeforeSoftmax, ExpertAct::AfterSoftmax] {
            for norm in [false, true] {
                check(c, act, order, norm);
            }
        }
    }
}

fn params(rows: usize, heads: usize, k: usize, dim: usize, num_experts: usize) -> ExpertMixParams {
    ExpertMixParams { rows, heads, k, dim, num_experts }
}

#[test]
fn edge_shapes() {
    let shapes = [
        (0, 2, 3, 8, 10),
        (3, 0, 3, 8, 10),
        (3, 2, 0, 8, 10),
        (3, 2, 3, 0, 10),
        (1, 1, 1, 1, 1),
        (3, 2, 3, 7, 5),
        (2, 4, 8, 31, 64),
        (2, 1, 32, 32, 1024),
        (3, 2, 2, 33, 16),
        (16, 4, 8, 256, 1024),
    ];
    for (i, &(r, h, k, d, e)) in shapes.iter().enumerate() {
        check_all(&Case::random(params(r, h, k, d, e), i as u64));
    }
}

#[test]
fn single_expert_has_weight_one() {
    let c = Case::random(params(4, 1, 1, 9, 6), 3);
    let got = c.run(Act::Relu, ExpertAct::BeforeSoftmax, false).unwrap();
    for r in 0..4 {
        let e = c.ids[r] as usize;
        let d: f32 = (0..9).map(|i| c.x[r * 9 + i] * c.down[e * 9 + i]).sum();
        let want: Vec<f64> =
            (0..9).map(|i| f64::from(d.max(0.0)) * f64::from(c.up[e * 9 + i])).collect();
        assert_close(&got[r * 9..][..9], &want, 1e-6, 1e-5, &format!("k = 1, row {r}"));
    }
    check_all(&c);
}

#[test]
fn repeated_ids_add_up() {
    let mut c = Case::random(params(3, 2, 4, 12, 3), 4);
    c.ids.iter_mut().for_each(|id| *id = 1);
    check_all(&c);
    let got = c.run(Act::Silu, ExpertAct::BeforeSoftmax, false).unwrap();
    for r in 0..3 {
        let d: f64 = (0..12).map(|i| f64::from(c.x[r * 12 + i]) * f64::from(c.down[12 + i])).sum();
        let want: Vec<f64> =
            (0..12).map(|i| 2.0 * act64(Act::Silu, d) * f64::from(c.up[12 + i])).collect();
        assert_close(
            &got[r * 12..][..12],
            &want,
            1e-6,
            1e-5,
            &format!("one expert in every slot, row {r}"),
        );
    }
}

#[test]
fn bad_ids_are_named_with_their_position() {
    let mut c = Case::random(params(2, 1, 2, 4, 5), 5);
    c.ids[3] = 5;
    let Err(KernelError::BadParams(msg)) = c.run(Act::Silu, ExpertAct::BeforeSoftmax, false) else {
        panic!()
    };
    assert!(msg.contains("`ids[3]` = 5 is outside the 5 experts"), "{msg}");
    c.ids[3] = -2;
    let Err(KernelError::BadParams(msg)) = c.run(Act::Silu, ExpertAct::BeforeSoftmax, false) else {
        panic!()
    };
    assert!(msg.contains("`ids[3]` = -2"), "{msg}");
    c.ids[3] = 0;
    c.up.pop();
    let Err(KernelError::BadParams(msg)) = c.run(Act::Silu, ExpertAct::BeforeSoftmax, false) else {
        panic!()
    };
    assert!(msg.contains("`up` has 19 elements, expected 20"), "{msg}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn random(r in 0usize..6, h in 1usize..4, k in 1usize..9, d in 0usize..40, e in 1usize..50, seed: u64, which in 0usize..4) {
        let c = Case::random(params(r, h, k, d, e), seed);
        for order in [ExpertAct::BeforeSoftmax, ExpertAct::AfterSoftmax] {
            check(&c, ACTS[which], order, seed % 2 == 0);
        }
    }
}
