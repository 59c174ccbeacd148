use proptest::prelude::*;

use super::*;
use crate::testutil::{assert_close, Rng};
use crate::KernelError;

/// f32 scores, softmax and value sums against f64, for q, k, v in [-1, 1] and Dh ≤ 64.
const ATOL: f64 = 2e-6;
const RTOL: f64 = 1e-5;
/// Prefill rows against decode steps: both f32, different gemm shapes.
const DECODE_ATOL: f64 = 2e-6;

const MIN: f64 = f32::MIN as f64;

struct Case {
    p: AttentionParams,
    mode: MaskMode,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    key_m: Option<Vec<f32>>,
    learned: Option<Vec<f32>>,
    attn_mask: Vec<i64>,
}

impl Case {
    /// Random inputs; `key_m` straddles 1 so that `Boolean` drops some keys, and `learned` is
    /// zero for about a quarter of the keys.
    fn random(p: AttentionParams, mode: MaskMode, padding: bool, seed: u64) -> Case {
        let mut rng = Rng::new(seed);
        let t = p.kv_len;
        let attn_mask =
            (0..p.batch * t).map(|_| i64::from(!padding || rng.below(5) != 0)).collect();
        Case {
            q: rng.vec(p.batch * p.q_len * p.heads * p.head_dim, -1.0, 1.0),
            k: rng.vec(p.batch * p.kv_heads * t * p.head_dim, -1.0, 1.0),
            v: rng.vec(p.batch * p.kv_heads * t * p.head_dim, -1.0, 1.0),
            key_m: (p.mask_heads > 0).then(|| rng.vec(p.batch * p.mask_heads * t, 0.3, 2.5)),
            learned: Some(
                (0..p.heads * t)
                    .map(|_| if rng.below(4) == 0 { 0.0 } else { rng.uniform(0.5, 1.5) })
                    .collect(),
            ),
            attn_mask,
            p,
            mode,
        }
    }

    fn run(&self) -> Result<Vec<f32>> {
        masked_attention(
            &self.p,
            self.mode,
            &self.q,
            &self.k,
            &self.v,
            self.key_m.as_deref(),
            self.learned.as_deref(),
            &self.attn_mask,
        )
    }
}

/// Bias row of `(b, h, i)`, straight from the definition.
fn reference_bias(c: &Case, b: usize, h: usize, i: usize) -> Vec<f64> {
    let p = &c.p;
    let t = p.kv_len;
    let hm = if p.mask_heads > 0 { h * p.mask_heads / p.heads } else { 0 };
    let key_m = |j: usize| f64::from(c.key_m.as_ref().unwrap()[(b * p.mask_heads + hm) * t + j]);
    let visible = |j: usize| j + p.q_len <= t + i && c.attn_mask[b * t + j] != 0;
    let mut bias: Vec<f64> = match c.mode {
        MaskMode::Causal => (0..t).map(|j| if visible(j) { 0.0 } else { MIN }).collect(),
        MaskMode::Boolean => {
            (0..t).map(|j| if visible(j) && key_m(j) >= 1.0 { 0.0 } else { MIN }).collect()
        }
        MaskMode::Learned => {
            let learned = c.learned.as_ref().unwrap();
            (0..t)
                .map(|j| if visible(j) && learned[h * t + j] != 0.0 { 0.0 } else { MIN })
                .collect()
        }
        MaskMode::Additive { ratio, .. } => {
            let mut m: Vec<f64> = (0..t).map(key_m).collect();
            let n = (t as f32 * ratio) as usize;
            if ratio > 0.0 && ratio < 1.0 && n > 0 {
                let mut sorted = m.clone();
                sorted.sort_by(f64::total_cmp);
                let tau = sorted[n - 1];
                m.iter_mut().filter(|v| **v < tau).for_each(|v| *v = MIN);
            }
            (0..t).map(|j| if visible(j) { m[j] } else { MIN }).collect()
        }
    };
    if let MaskMode::Additive { keep_window: Some(w), .. } = c.mode {
        if t > w {
            let mut order: Vec<usize> = (0..t).collect();
            order.sort_by(|&x, &y| bias[y].partial_cmp(&bias[x]).unwrap().then(x.cmp(&y)));
            for &j in &order[w..] {
                bias[j] = MIN;
            }
        }
    }
    bias
}

fn reference(c: &Case) -> Vec<f64> {
    let p = &c.p;
    let (t, dh) = (p.kv_len, p.head_dim);
    let mut out = vec![0.0; c.q.len()];
    for b in 0..p.batch {
        for h in 0..p.heads {
            let g = h / (p.heads / p.kv_heads);
            for i in 0..p.q_len {
                let bias = reference_bias(c, b, h, i);
                let qi = &c.q[((b * p.q_len + i) * p.heads + h) * dh..][..dh];
                let kv = |buf: &[f32], j: usize, d: usize| {
                    f64::from(buf[((b * p.kv_heads + g) * t + j) * dh + d])
                };
                let scores: Vec<f64> = (0..t)
                    .map(|j| {
                        let dot: f64 = (0..dh).map(|d| f64::from(qi[d]) * kv(&c.k, j, d)).sum();
                        dot * f64::from(p.scale) + bias[j]
                    })
                    .collect();
                let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                let sum: f64 = e.iter().sum();
                for d in 0..dh {
                    out[((b * p.q_len + i) * p.heads + h) * dh + d] =
                        (0..t).map(|j| e[j] / sum * kv(&c.v, j, d)).sum();
                }
            }
        }
    }
    out
}

fn params(
    batch: usize,
    q_len: usize,
    kv_len: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
) -> AttentionParams {
    let scale = 1.0 / (head_dim.max(1) as f32).sqrt();
    AttentionParams { batch, q_len, kv_len, heads, kv_heads, head_dim, mask_heads: heads, scale }
}

fn check(c: &Case, what: &str) {
    let got = c.run().unwrap();
    assert_close(&got, &reference(c), ATOL, RTOL, &format!("{what} {:?} {:?}", c.mode, c.p));
}

const MODES: [MaskMode; 7] = [
    MaskMode::Causal,
    MaskMode::Boolean,
    MaskMode::Learned,
    MaskMode::Additive { ratio: 0.0, keep_window: None },
    MaskMode::Additive { ratio: 0.3, keep_window: None },
    MaskMode::Additive { ratio: 0.0, keep_window: Some(5) },
    MaskMode::Additive { ratio: 0.25, keep_window: Some(12) },
];

#[test]
fn edge_shapes() {
    let shapes = [
        (1, 0, 0, 2, 1, 4),
        (2, 0, 5, 2, 2, 4),
        (1, 1, 1, 1, 1, 1),
        (1, 1, 1, 1, 1, 0),
        (2, 3, 7, 2, 1, 4),
        (1, 31, 31, 2, 2, 8),
        (1, 32, 32, 2, 1, 16),
        (1, 33, 33, 4, 2, 31),
        (1, 1, 33, 4, 2, 33),
        (2, 5, 40, 3, 3, 7),
        (1, 70, 70, 1, 1, 3),
        (1, 40, 100, 2, 1, 64),
    ];
    for (n, &(b, s, t, h, g, dh)) in shapes.iter().enumerate() {
        for (m, &mode) in MODES.iter().enumerate() {
            for padding in [false, true] {
                let seed = (n * 100 + m * 2 + usize::from(padding)) as u64;
                check(&Case::random(params(b, s, t, h, g, dh), mode, padding, seed), "edge");
            }
        }
    }
}

#[test]
fn mask_heads_per_kv_head() {
    for (m, &mode) in MODES.iter().enumerate() {
        let p = AttentionParams { mask_heads: 2, ..params(2, 9, 20, 6, 2, 8) };
        check(&Case::random(p, mode, true, m as u64), "Hm = G");
    }
}

#[test]
fn causal_mode_ignores_absent_key_values() {
    let p = AttentionParams { mask_heads: 0, ..params(2, 6, 6, 2, 1, 4) };
    let mut c = Case::random(p, MaskMode::Causal, true, 1);
    c.learned = None;
    assert!(c.key_m.is_none());
    check(&c, "causal without key_m");
}

#[test]
fn rows_of_probabilities_sum_to_one() {
    for (m, &mode) in MODES.iter().enumerate() {
        let mut c = Case::random(params(2, 13, 37, 4, 2, 5), mode, true, 50 + m as u64);
        c.v.iter_mut().for_each(|v| *v = 1.0);
        let out = c.run().unwrap();
        let worst = out.iter().map(|o| (o - 1.0).abs()).fold(0.0, f32::max);
        assert!(worst <= 1e-6, "{mode:?}: Σ_j p_j deviates from 1 by {worst}");
    }
}

fn mean_of_values(c: &Case, b: usize, g: usize, d: usize) -> f64 {
    let (t, dh) = (c.p.kv_len, c.p.head_dim);
    (0..t).map(|j| f64::from(c.v[((b * c.p.kv_heads + g) * t + j) * dh + d])).sum::<f64>()
        / t as f64
}

#[test]
fn fully_masked_rows_are_uniform_over_all_keys() {
    let mut c = Case::random(params(2, 4, 9, 2, 1, 3), MaskMode::Causal, false, 3);
    c.attn_mask[..9].iter_mut().for_each(|m| *m = 0);
    let mut boolean = Case::random(params(1, 4, 9, 2, 2, 3), MaskMode::Boolean, false, 4);
    let t = boolean.p.kv_len;
    boolean.key_m.as_mut().unwrap()[t..].iter_mut().for_each(|m| *m = 0.5);
    for (c, b, h) in [(&c, 0, 0), (&c, 0, 1), (&boolean, 0, 1)] {
        let out = c.run().unwrap();
        let g = h / (c.p.heads / c.p.kv_heads);
        for i in 0..c.p.q_len {
            let row = &out[((b * c.p.q_len + i) * c.p.heads + h) * c.p.head_dim..][..c.p.head_dim];
            let want: Vec<f64> = (0..c.p.head_dim).map(|d| mean_of_values(c, b, g, d)).collect();
            assert_close(
                row,
                &want,
                ATOL,
                RTOL,
                &format!("{:?} uniform row b={b} h={h} i={i}", c.mode),
            );
        }
        check(c, "fully masked");
    }
}

#[test]
fn keep_window_larger_than_keys_changes_nothing() {
    let c = Case::random(
        params(1, 8, 8, 2, 2, 4),
        MaskMode::Additive { ratio: 0.0, keep_window: Some(8) },
        false,
        5,
    );
    let plain = Case {
        mode: MaskMode::Additive { ratio: 0.0, keep_window: None },
        ..Case::random(c.p, c.mode, false, 5)
    };
    assert_eq!(c.run().unwrap(), plain.run().unwrap());
}

#[test]
fn ratio_of_one_or_more_is_inactive() {
    let off = Case::random(
        params(1, 8, 8, 2, 2, 4),
        MaskMode::Additive { ratio: 0.0, keep_window: None },
        false,
        6,
    );
    for ratio in [1.0, 1.5] {
        let c = Case {
            mode: MaskMode::Additive { ratio, keep_window: None },
            ..Case::random(off.p, off.mode, false, 6)
        };
        assert_eq!(c.run().unwrap(), off.run().unwrap(), "ratio {ratio}");
    }
}

#[test]
fn prefill_rows_equal_decode_steps() {
    // Key 0 stays visible to every head, so no row is fully masked (those differ by design).
    for mode in [
        MaskMode::Causal,
        MaskMode::Boolean,
        MaskMode::Learned,
        MaskMode::Additive { ratio: 0.0, keep_window: Some(6) },
    ] {
        let mut full = Case::random(params(1, 40, 40, 2, 1, 8), mode, false, 8);
        if let Some(m) = full.key_m.as_mut() {
            m[0] = 1.5;
            m[40] = 1.5;
        }
        if let Some(l) = full.learned.as_mut() {
            l[0] = 1.0;
            l[40] = 1.0;
        }
        let prefill = full.run().unwrap();
        let (h, dh, t_all) = (2, 8, 40);
        for t in [1, 7, 33, 40] {
            let p = AttentionParams { q_len: 1, kv_len: t, ..full.p };
            let keys = |buf: &[f32]| buf[..t * dh].to_vec();
            let step = Case {
                p,
                mode,
                q: full.q[(t - 1) * h * dh..][..h * dh].to_vec(),
                k: keys(&full.k),
                v: keys(&full.v),
                key_m: full
                    .key_m
                    .as_ref()
                    .map(|m| (0..h).flat_map(|hm| m[hm * t_all..][..t].to_vec()).collect()),
                learned: full
                    .learned
                    .as_ref()
                    .map(|l| (0..h).flat_map(|hh| l[hh * t_all..][..t].to_vec()).collect()),
                attn_mask: full.attn_mask[..t].to_vec(),
            };
            let got = step.run().unwrap();
            let want: Vec<f64> =
                prefill[(t - 1) * h * dh..][..h * dh].iter().map(|&x| f64::from(x)).collect();
            assert_close(&got, &want, DECODE_ATOL, RTOL, &format!("{mode:?} decode at T={t}"));
        }
    }
}

#[test]
fn validation_errors() {
    let ok = Case::random(params(1, 2, 3, 4, 2, 5), MaskMode::Boolean, false, 1);
    let err = |c: Case| match c.run() {
        Err(KernelError::BadParams(msg)) => msg,
        Ok(_) => panic!("accepted {:?} {:?}", c.mode, c.p),
        Err(e) => panic!("unexpected error {e}"),
    };
    let with = |f: &dyn Fn(&mut Case)| {
        let mut c = Case::random(ok.p, ok.mode, false, 1);
        f(&mut c);
        c
    };
    assert!(err(with(&|c| c.p.kv_heads = 3)).contains("not a multiple"));
    assert!(err(with(&|c| c.p.q_len = 4)).contains("exceeds `kv_len`"));
    assert!(err(with(&|c| c.p.mask_heads = 3)).contains("neither"));
    assert!(err(with(&|c| c.key_m = None)).contains("needs `key_m`"));
    assert!(err(with(&|c| c.q.truncate(39))).contains("`q` has 39 elements, expected 40"));
    assert!(err(with(&|c| c.v.push(0.0))).contains("`v`"));
    assert!(err(with(&|c| c.attn_mask.push(1))).contains("`attn_mask`"));
    assert!(err(with(&|c| c.key_m.as_mut().unwrap().push(1.0))).contains("`key_m`"));
    assert!(err(with(&|c| {
        c.mode = MaskMode::Learned;
        c.learned = None;
    }))
    .contains("needs `learned`"));
}

fn arb_case() -> impl Strategy<Value = (AttentionParams, MaskMode, bool, u64)> {
    (
        1usize..3,
        1usize..4,
        prop_oneof![Just(1usize), Just(2), Just(4)],
        1usize..40,
        0usize..40,
        0usize..24,
        any::<u64>(),
    )
        .prop_flat_map(|(b, g, ratio, t, s, dh, seed)| {
            let s = s.min(t);
            let mode = prop_oneof![
                Just(MaskMode::Causal),
                Just(MaskMode::Boolean),
                Just(MaskMode::Learned),
                (0.0f32..0.9, proptest::option::of(0usize..30))
                    .prop_map(|(ratio, keep_window)| MaskMode::Additive { ratio, keep_window }),
            ];
            (mode, any::<bool>(), any::<bool>()).prop_map(move |(mode, per_kv, padding)| {
                let mut p = params(b, s, t, g * ratio, g, dh);
                p.mask_heads = if per_kv { g } else { g * ratio };
                (p, mode, padding, seed)
            })
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn random((p, mode, padding, seed) in arb_case()) {
        check(&Case::random(p, mode, padding, seed), "random");
    }
}
