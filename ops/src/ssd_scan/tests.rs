use proptest::prelude::*;

use super::*;
use crate::testutil::{assert_close, max_abs, Rng};
use crate::KernelError;

/// f32 recurrence against f64: error grows with the number of steps, relative to the largest value.
const TOL_PER_STEP: f64 = 2e-7;
const RTOL: f64 = 1e-5;

struct Case {
    p: SsdScanParams,
    x: Vec<f32>,
    dt: Vec<f32>,
    a: Vec<f32>,
    b: Vec<f32>,
    c: Vec<f32>,
    state0: Vec<f32>,
}

impl Case {
    fn random(p: SsdScanParams, a_range: (f32, f32), dt_range: (f32, f32), seed: u64) -> Case {
        let mut rng = Rng::new(seed);
        let tokens = p.batch * p.seq * p.heads;
        Case {
            x: rng.vec(tokens * p.head_dim, -1.0, 1.0),
            dt: rng.vec(tokens, dt_range.0, dt_range.1),
            a: rng.vec(p.heads, a_range.0, a_range.1),
            b: rng.vec(tokens * p.state_dim, -1.0, 1.0),
            c: rng.vec(tokens * p.state_dim, -1.0, 1.0),
            state0: rng.vec(p.batch * p.heads * p.head_dim * p.state_dim, -1.0, 1.0),
            p,
        }
    }

    fn run(&self) -> (Vec<f32>, Vec<f32>) {
        ssd_scan(&self.p, &self.x, &self.dt, &self.a, &self.b, &self.c, &self.state0).unwrap()
    }
}

fn softplus64(z: f64) -> f64 {
    if z > 20.0 {
        z
    } else {
        z.exp().ln_1p()
    }
}

fn reference(k: &Case) -> (Vec<f64>, Vec<f64>) {
    let p = &k.p;
    let (hp, n) = (p.head_dim, p.state_dim);
    let mut y = vec![0.0; k.x.len()];
    let mut state: Vec<f64> = k.state0.iter().map(|&v| f64::from(v)).collect();
    for b in 0..p.batch {
        for h in 0..p.heads {
            let s = &mut state[(b * p.heads + h) * hp * n..][..hp * n];
            for t in 0..p.seq {
                let tok = (b * p.seq + t) * p.heads + h;
                let delta = softplus64(f64::from(k.dt[tok]));
                let decay = (delta * f64::from(k.a[h])).exp();
                for i in 0..hp {
                    let mut acc = 0.0;
                    for j in 0..n {
                        let upd =
                            delta * f64::from(k.x[tok * hp + i]) * f64::from(k.b[tok * n + j]);
                        s[i * n + j] = s[i * n + j] * decay + upd;
                        acc += s[i * n + j] * f64::from(k.c[tok * n + j]);
                    }
                    y[tok * hp + i] = acc;
                }
            }
        }
    }
    (y, state)
}

fn check(k: &Case, what: &str) {
    let (y, state) = k.run();
    let (want_y, want_state) = reference(k);
    let steps = (k.p.seq + 1) as f64;
    let atol_y = TOL_PER_STEP * steps * (1.0 + max_abs(&want_y));
    let atol_s = TOL_PER_STEP * steps * (1.0 + max_abs(&want_state));
    assert_close(&y, &want_y, atol_y, RTOL, &format!("{what} y {:?}", k.p));
    assert_close(&state, &want_state, atol_s, RTOL, &format!("{what} state {:?}", k.p));
}

fn params(
    batch: usize,
    seq: usize,
    heads: usize,
    head_dim: usize,
    state_dim: usize,
) -> SsdScanParams {
    SsdScanParams { batch, seq, heads, head_dim, state_dim }
}

#[test]
fn edge_shapes() {
    let shapes = [
        (1, 0, 2, 4, 4),
        (0, 3, 2, 4, 4),
        (1, 3, 0, 4, 4),
        (1, 3, 2, 0, 4),
        (1, 3, 2, 4, 0),
        (1, 1, 1, 1, 1),
        (2, 7, 3, 5, 3),
        (1, 31, 2, 32, 32),
        (1, 33, 1, 31, 33),
        (2, 64, 4, 16, 16),
    ];
    for (i, &(b, s, h, hp, n)) in shapes.iter().enumerate() {
        check(&Case::random(params(b, s, h, hp, n), (-2.0, 0.5), (-3.0, 1.0), i as u64), "edge");
    }
}

#[test]
fn empty_sequence_keeps_the_state() {
    let k = Case::random(params(2, 0, 3, 4, 5), (-1.0, 1.0), (-1.0, 1.0), 7);
    let (y, state) = k.run();
    assert!(y.is_empty());
    assert_eq!(state, k.state0);
}

#[test]
fn positive_a_grows_the_state() {
    let mut k = Case::random(params(2, 40, 2, 8, 8), (1.0, 1.0), (-4.0, -1.0), 3);
    k.state0.iter_mut().for_each(|v| *v = v.abs());
    k.x.iter_mut().for_each(|v| *v = 0.0);
    let (_, state) = k.run();
    assert!(state.iter().zip(&k.state0).all(|(s, s0)| s > s0), "A = +1 must make |S| grow");
    check(&k, "A=+1 no input");
    check(&Case::random(params(2, 40, 3, 8, 8), (1.0, 1.0), (-4.0, -1.0), 4), "A=+1");
    check(&Case::random(params(1, 20, 2, 4, 6), (0.5, 2.0), (-2.0, 2.0), 5), "A>0");
}

#[test]
fn scanning_in_two_calls_equals_one_call() {
    let full = Case::random(params(2, 9, 3, 5, 4), (-1.5, 1.0), (-3.0, 2.0), 11);
    let p = full.p;
    let prefix = |v: &[f32], per_token: usize, len: usize, off: usize| -> Vec<f32> {
        (0..p.batch)
            .flat_map(|b| v[(b * p.seq + off) * per_token..][..len * per_token].to_vec())
            .collect()
    };
    let part = |off: usize, len: usize, state0: Vec<f32>| Case {
        p: SsdScanParams { seq: len, ..p },
        x: prefix(&full.x, p.heads * p.head_dim, len, off),
        dt: prefix(&full.dt, p.heads, len, off),
        a: full.a.clone(),
        b: prefix(&full.b, p.heads * p.state_dim, len, off),
        c: prefix(&full.c, p.heads * p.state_dim, len, off),
        state0,
    };
    let (y_full, s_full) = full.run();
    let (y_head, s_head) = part(0, p.seq - 1, full.state0.clone()).run();
    let (y_last, s_last) = part(p.seq - 1, 1, s_head).run();
    assert_eq!(s_last, s_full, "final state after S-1 then 1 tokens");
    let per_token = p.heads * p.head_dim;
    for b in 0..p.batch {
        let full_b = &y_full[b * p.seq * per_token..][..p.seq * per_token];
        assert_eq!(
            &full_b[..(p.seq - 1) * per_token],
            &y_head[b * (p.seq - 1) * per_token..][..(p.seq - 1) * per_token]
        );
        assert_eq!(&full_b[(p.seq - 1) * per_token..], &y_last[b * per_token..][..per_token]);
    }
}

#[test]
fn errors_name_the_buffer() {
    let k = Case::random(params(1, 2, 2, 3, 4), (-1.0, 1.0), (-1.0, 1.0), 1);
    let p = k.p;
    let Err(KernelError::BadParams(msg)) =
        ssd_scan(&p, &k.x, &k.dt, &k.a[..1], &k.b, &k.c, &k.state0)
    else {
        panic!()
    };
    assert!(msg.contains("`a` has 1 elements, expected 2"), "{msg}");
    let Err(KernelError::BadParams(msg)) =
        ssd_scan(&p, &k.x, &k.dt, &k.a, &k.b, &k.c, &k.state0[1..])
    else {
        panic!()
    };
    assert!(msg.contains("`state0`"), "{msg}");
    let Err(KernelError::BadParams(msg)) =
        ssd_scan(&p, &k.x, &k.dt, &k.a, &k.c[1..], &k.c, &k.state0)
    else {
        panic!()
    };
    assert!(msg.contains("`b`"), "{msg}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn random(b in 1usize..3, s in 0usize..40, h in 1usize..4, hp in 1usize..20, n in 1usize..20, seed: u64) {
        check(&Case::random(params(b, s, h, hp, n), (-2.0, 1.0), (-4.0, 2.0), seed), "random");
    }
}
