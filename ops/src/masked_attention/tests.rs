use proptest::prelude::*;

use super::*;
use crate::testutil::{assert_close, in_shard, Rng};
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

/// `c` (one query per row) with `extra` slots of no key after its keys: random keys, values and mask values, and
/// `attn_mask` −1, which the result must not depend on.
fn with_absent_slots(c: &Case, extra: usize, seed: u64) -> Case {
    assert_eq!(c.p.q_len, 1, "slots with no key are for decode steps");
    let mut rng = Rng::new(seed);
    let (t, t2, dh) = (c.p.kv_len, c.p.kv_len + extra, c.p.head_dim);
    let grow = |x: &[f32], rows: usize, per: usize, rng: &mut Rng| -> Vec<f32> {
        let mut out = Vec::with_capacity(rows * t2 * per);
        for r in 0..rows {
            out.extend_from_slice(&x[r * t * per..(r + 1) * t * per]);
            out.extend(rng.vec(extra * per, -3.0, 3.0));
        }
        out
    };
    let p = AttentionParams { kv_len: t2, ..c.p };
    let kv_rows = p.batch * p.kv_heads;
    let mut attn_mask = Vec::new();
    for b in 0..p.batch {
        attn_mask.extend_from_slice(&c.attn_mask[b * t..(b + 1) * t]);
        attn_mask.extend(std::iter::repeat_n(-1, extra));
    }
    Case {
        p,
        mode: c.mode,
        q: c.q.clone(),
        k: grow(&c.k, kv_rows, dh, &mut rng),
        v: grow(&c.v, kv_rows, dh, &mut rng),
        key_m: c.key_m.as_ref().map(|m| grow(m, p.batch * p.mask_heads, 1, &mut rng)),
        learned: c.learned.as_ref().map(|l| grow(l, p.heads, 1, &mut rng)),
        attn_mask,
    }
}

/// Modes whose result does not count the slots (all but an active ratio).
fn slot_modes() -> impl Iterator<Item = MaskMode> {
    MODES.into_iter().filter(|m| !matches!(m, MaskMode::Additive { ratio, .. } if *ratio > 0.0))
}

/// The keep window spreads each row over a cluster of 8 blocks for up to 16 rows on sm_90 and later, one block per
/// row beyond and on earlier devices (no thread-block clusters).
#[test]
fn few_keep_window_rows_take_the_cluster() {
    let single = ("masked_attention_keep_window", 1, 1024);
    for rows in [1, 4, 16] {
        let cluster = ("masked_attention_keep_window_cluster", 8, 256);
        assert_eq!(cuda::keep_launch(rows, "sm_90"), cluster);
        assert_eq!(cuda::keep_launch(rows, "sm_100"), cluster);
        assert_eq!(cuda::keep_launch(rows, "sm_90a"), cluster);
        assert_eq!(cuda::keep_launch(rows, "sm_80"), single);
        assert_eq!(cuda::keep_launch(rows, "sm_89"), single);
    }
    for rows in [17, 64, 16384] {
        assert_eq!(cuda::keep_launch(rows, "sm_90"), single);
    }
}

/// Slots with no key change nothing, exactly: every mode without a ratio, with padding and fully masked rows,
/// with keep windows that the slots would otherwise cross.
#[test]
fn absent_slots_change_nothing() {
    for (m, mode) in slot_modes().enumerate() {
        for (n, &(b, t, h, g, extra)) in
            [(1, 1, 2, 1, 3), (2, 4, 4, 2, 9), (3, 17, 4, 4, 40), (1, 9, 2, 2, 1)]
                .iter()
                .enumerate()
        {
            for padding in [false, true] {
                let seed = (m * 100 + n * 2 + usize::from(padding)) as u64;
                let c = Case::random(params(b, 1, t, h, g, 8), mode, padding, seed);
                let wide = with_absent_slots(&c, extra, seed + 50);
                assert_eq!(
                    wide.run().unwrap(),
                    c.run().unwrap(),
                    "{mode:?} b{b} t{t} +{extra} {padding}"
                );
            }
        }
    }
}

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

/// Learned mask values at the edges of "not ±0": the zeros, NaN, the smallest subnormals, a
/// negative and a positive value.
const LEARNED_EDGES: [f32; 7] =
    [0.0, -0.0, f32::from_bits(1), -f32::from_bits(1), -0.75, f32::NAN, 1.0];

/// Case `c` with every learned value one of LEARNED_EDGES: value j of the `[H, T]` array takes
/// entry (5j + shift) mod 7, so that neighbouring keys differ.
fn with_learned_edges(mut c: Case, shift: usize) -> Case {
    for (j, v) in c.learned.as_mut().unwrap().iter_mut().enumerate() {
        *v = LEARNED_EDGES[(j * 5 + shift) % LEARNED_EDGES.len()];
    }
    c
}

/// A learned mask keeps a key whose value is not ±0: NaN, the smallest subnormals and negative
/// values keep it.
#[test]
fn learned_edge_values() {
    let c = Case::random(params(2, 9, 23, 4, 2, 8), MaskMode::Learned, true, 77);
    check(&with_learned_edges(c, 0), "learned edge values");
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

/// The order of the keep window as one integer per key, larger when it beats: (order key of the bias, −j), the
/// order key being `f32::total_cmp`'s with −0 as +0 (no NaN here); `masked_attention.cu`'s `beat_key`.
fn beat(bias: f32, j: usize) -> u64 {
    let u = if bias == 0.0 { 0.0f32 } else { bias }.to_bits();
    let k = if u & 0x8000_0000 != 0 { !u } else { u | 0x8000_0000 };
    (u64::from(k) << 32) | u64::from(u32::MAX - j as u32)
}

/// The `w`-th largest of `keys` (1 ≤ w ≤ len).
fn wth_largest(keys: &[u64], w: usize) -> u64 {
    let mut k = keys.to_vec();
    k.sort_unstable_by(|a, b| b.cmp(a));
    k[w - 1]
}

/// The keep window's step rule (`keep_window` in masked_attention.cu): slot `n` goes from `o` to `e`, and the old
/// threshold `t` becomes the least key above it, the largest below it, or stays.
fn stepped_threshold(t: u64, o: u64, e: u64, keys: &[u64]) -> u64 {
    let d = i32::from(e > t) - i32::from(o > t);
    if e == o || (d == 0 && o != t) {
        t
    } else if d > 0 {
        keys.iter().copied().filter(|&c| c > t).min().expect("a key above")
    } else {
        keys.iter().copied().filter(|&c| c < t).max().expect("a key below")
    }
}

/// The step rule gives the threshold a selection anew gives, as slots fill one by one with biases that tie, sit at
/// `MIN` (a key that changes nothing) or at −inf (below `MIN`), for windows below, across and above the filled keys.
#[test]
fn keep_window_step_rule_matches_a_new_selection() {
    let mut rng = Rng::new(7);
    for (cap, start) in [(12usize, 0usize), (40, 10), (300, 150), (64, 63)] {
        for w in [1, 2, cap / 3, cap / 2, cap - 1] {
            let masked = beat(f32::MIN, 0) >> 32;
            let mut keys: Vec<u64> =
                (0..cap).map(|j| (masked << 32) | u64::from(u32::MAX - j as u32)).collect();
            for (j, key) in keys.iter_mut().enumerate().take(start) {
                *key = beat(rng.below(5) as f32 * 0.5, j);
            }
            let mut t = wth_largest(&keys, w);
            for n in start..cap {
                let o = keys[n];
                let bias = match rng.below(8) {
                    0 => f32::MIN,
                    1 => f32::NEG_INFINITY,
                    _ => rng.below(5) as f32 * 0.5 - 1.0,
                };
                keys[n] = beat(bias, n);
                t = stepped_threshold(t, o, keys[n], &keys);
                assert_eq!(t, wth_largest(&keys, w), "capacity {cap}, window {w}, slot {n}");
            }
        }
    }
}

/// CUDA against the CPU kernel (itself checked against the f64 definition above), on inputs rounded
/// to the kernel's dtype first. f32: twice the CPU kernel's own tolerance against f64, as both sides
/// are within it; bf16 and f16: one rounding of the output (2⁻⁹ or 2⁻¹² relative) with a factor 4 to
/// spare.
mod gpu {
    use super::*;
    use crate::cuda::{test_gpu, Elem, Gpu};
    use cuda::{pick_kernel, Kernel};

    const ATOL_F32: f64 = 2.0 * ATOL;
    const RTOL_F32: f64 = 2.0 * RTOL;
    const ATOL_BF16: f64 = 2.0 * ATOL;
    const RTOL_BF16: f64 = 4.0 * 0.001953125;
    const ATOL_F16: f64 = 2.0 * ATOL;
    const RTOL_F16: f64 = 4.0 * 0.000244140625;
    /// Tensor-core prefill: each probability is rounded to bf16 (2⁻⁹ relative) before P·V and the
    /// row sum adds the rounded values (`mma` kernels) or the f32 ones (warpgroup kernels), so the
    /// normalised weights move by at most 2⁻⁸ relative and the output by at most 2⁻⁸·max|v| = 2⁻⁸
    /// for v in [-1, 1]; plus RTOL_BF16 for the output.
    const ATOL_MMA: f64 = 0.00390625;
    /// With V all ones a warpgroup kernel's output is Σ_j bf16(p_j) / Σ_j p_j, within 2⁻⁹ of 1,
    /// which the output's bf16 rounding takes to 1 or to 1 − 2⁻⁸, one unit below; the `mma`
    /// kernels' row sums add the rounded values, so theirs is exactly 1.
    const SUM_F32_BF16: f32 = 0.00390625;
    /// The same two for f16's probabilities (2⁻¹² relative): 2⁻¹¹ each.
    const ATOL_MMA_F16: f64 = 0.00048828125;
    const SUM_F32_F16: f32 = 0.00048828125;
    // The GQA decode kernel takes the tolerances above: expf in f32, as the CPU kernel; in bf16 and
    // f16 ex2.approx, whose relative error (about 2⁻²²) is far below the output rounding (2⁻⁹, 2⁻¹²).

    /// Which kernel runs: the launcher's choice, or one forced (`Prefill`: the launcher's choice
    /// among the prefill kernels).
    #[derive(Clone, Copy, Debug)]
    enum Path {
        Auto,
        Prefill,
        Decode,
        Gqa,
        /// Row tiles per warp.
        Mma(usize),
        Wgmma,
    }

    const PATHS: [Path; 2] = [Path::Prefill, Path::Decode];

    fn rounded<T: Elem>(c: &Case) -> Case {
        let round = |x: &[f32]| x.iter().map(|&v| T::from_f32(v).to_f32()).collect();
        Case {
            p: c.p,
            mode: c.mode,
            q: round(&c.q),
            k: round(&c.k),
            v: round(&c.v),
            key_m: c.key_m.clone(),
            learned: c.learned.clone(),
            attn_mask: c.attn_mask.clone(),
        }
    }

    fn on_gpu<T: Elem>(gpu: &Gpu, c: &Case, path: Path) -> Result<Vec<f32>> {
        let up = |x: &[f32]| gpu.upload(&x.iter().map(|&v| T::from_f32(v)).collect::<Vec<T>>());
        let (q, k, v) = (up(&c.q)?, up(&c.k)?, up(&c.v)?);
        let key_m = c.key_m.as_deref().map(|m| gpu.upload(m)).transpose()?;
        let learned = c.learned.as_deref().map(|l| gpu.upload(l)).transpose()?;
        let attn_mask = gpu
            .stream()
            .clone_htod(&c.attn_mask)
            .map_err(|e| KernelError::Driver(format!("upload: {e}")))?;
        let mut out = gpu.upload(&vec![T::from_f32(f32::NAN); c.q.len()])?;
        let args = (key_m.as_ref(), learned.as_ref());
        let kernel = kernel_of::<T>(&c.p, c.mode, path, gpu.arch());
        cuda::attention_on(
            gpu, &c.p, c.mode, &q, &k, &v, args.0, args.1, &attn_mask, &mut out, kernel, None,
        )?;
        Ok(gpu.download(&out)?.into_iter().map(|x| x.to_f32()).collect())
    }

    /// Runs `c` in `T` on `path` and compares with the CPU kernel; returns the GPU output.
    fn check_as<T: Elem>(gpu: &Gpu, c: &Case, path: Path, what: &str) -> Vec<f32> {
        let c = rounded::<T>(c);
        let want: Vec<f64> = c.run().unwrap().into_iter().map(f64::from).collect();
        let got = on_gpu::<T>(gpu, &c, path).unwrap();
        let tc = uses_tensor_cores::<T>(&c.p, c.mode, path, gpu.arch());
        let (atol, rtol) = match (T::NAME, tc) {
            ("f32", _) => (ATOL_F32, RTOL_F32),
            ("f16", true) => (ATOL_MMA_F16, RTOL_F16),
            ("f16", false) => (ATOL_F16, RTOL_F16),
            (_, true) => (ATOL_MMA, RTOL_BF16),
            (_, false) => (ATOL_BF16, RTOL_BF16),
        };
        let what = format!("{what} {} {path:?} {:?} {:?}", T::NAME, c.mode, c.p);
        assert_close(&got, &want, atol, rtol, &what);
        got
    }

    /// The kernel `path` runs for `p` in `mode` and `T` on `arch`.
    fn kernel_of<T: Elem>(p: &AttentionParams, mode: MaskMode, path: Path, arch: &str) -> Kernel {
        match path {
            Path::Auto => pick_kernel(p, mode, T::NAME, arch),
            Path::Prefill => {
                let long = AttentionParams { q_len: p.q_len.max(cuda::DECODE_MAX_Q_LEN + 1), ..*p };
                pick_kernel(&long, mode, T::NAME, arch)
            }
            Path::Decode => Kernel::Decode,
            Path::Gqa => Kernel::DecodeGqa,
            Path::Mma(tiles) => Kernel::Mma { tiles },
            Path::Wgmma => Kernel::Wgmma,
        }
    }

    /// Every tensor-core kernel that takes `p` in bf16 on `arch`: each row-tile form of the `mma` kernel, and the
    /// warpgroup kernel where it fits.
    fn tensor_core_paths(p: &AttentionParams, arch: &str) -> Vec<Path> {
        let mut paths: Vec<Path> = cuda::MMA_TILES.into_iter().map(Path::Mma).collect();
        if cuda::wgmma_fits(p, "bf16", arch) {
            paths.push(Path::Wgmma);
        }
        paths
    }

    /// Whether `path` runs a tensor-core prefill kernel for `p` in `mode` and `T` on `arch`.
    fn uses_tensor_cores<T: Elem>(
        p: &AttentionParams,
        mode: MaskMode,
        path: Path,
        arch: &str,
    ) -> bool {
        matches!(kernel_of::<T>(p, mode, path, arch), Kernel::Mma { .. } | Kernel::Wgmma)
    }

    /// Both dtypes of the tensor-core kernels on `path`.
    fn check_tc(gpu: &Gpu, c: &Case, path: Path, what: &str) {
        check_as::<half::bf16>(gpu, c, path, what);
        check_as::<half::f16>(gpu, c, path, what);
    }

    /// Every dtype on both kernels.
    fn check_all(gpu: &Gpu, c: &Case, what: &str) {
        for path in PATHS {
            check_as::<f32>(gpu, c, path, what);
            check_as::<half::bf16>(gpu, c, path, what);
            check_as::<half::f16>(gpu, c, path, what);
        }
    }

    /// Row `(b, h, i)` of `out` equals the mean of the values over all `T` keys.
    fn assert_uniform(c: &Case, out: &[f32], b: usize, h: usize, i: usize, what: &str) {
        let p = &c.p;
        let g = h / (p.heads / p.kv_heads);
        let row = &out[((b * p.q_len + i) * p.heads + h) * p.head_dim..][..p.head_dim];
        let want: Vec<f64> = (0..p.head_dim).map(|d| mean_of_values(c, b, g, d)).collect();
        assert_close(row, &want, ATOL_F32, RTOL_F32, &format!("{what}: uniform row {b} {h} {i}"));
    }

    const GPU_MODES: [MaskMode; 9] = [
        MaskMode::Causal,
        MaskMode::Boolean,
        MaskMode::Learned,
        MaskMode::Additive { ratio: 0.0, keep_window: None },
        MaskMode::Additive { ratio: 0.3, keep_window: None },
        MaskMode::Additive { ratio: 0.0, keep_window: Some(5) },
        MaskMode::Additive { ratio: 0.25, keep_window: Some(12) },
        MaskMode::Additive { ratio: 0.6, keep_window: Some(0) },
        MaskMode::Additive { ratio: 0.1, keep_window: Some(1) },
    ];

    /// Shapes of the edge-shape tests: empty, single, odd head dims, tile boundaries, the largest head dim.
    const EDGE_SHAPES: [(usize, usize, usize, usize, usize, usize); 16] = [
        (1, 0, 0, 2, 1, 4),
        (2, 0, 5, 2, 2, 4),
        (1, 1, 1, 1, 1, 0),
        (1, 1, 1, 1, 1, 1),
        (2, 3, 7, 2, 1, 4),
        (1, 31, 31, 2, 2, 8),
        (1, 33, 33, 4, 2, 31),
        (1, 1, 33, 4, 2, 33),
        (2, 5, 40, 3, 3, 7),
        (1, 70, 70, 1, 1, 3),
        (1, 40, 100, 2, 1, 64),
        (1, 65, 130, 2, 2, 16),
        (1, 9, 9, 2, 1, 96),
        (1, 20, 50, 2, 1, 200),
        (1, 17, 40, 2, 1, 256),
        (2, 100, 100, 8, 2, 128),
    ];

    /// Every edge shape in every mode, with and without padding, on `path` in `T` (one test per path and dtype,
    /// so that slow tools such as racecheck can take them in parallel).
    fn edge_shapes_on<T: Elem>(path: Path) {
        let Some(gpu) = test_gpu() else { return };
        for (n, &(b, s, t, h, g, dh)) in
            EDGE_SHAPES.iter().enumerate().filter(|(n, _)| in_shard(*n))
        {
            for (m, &mode) in GPU_MODES.iter().enumerate() {
                for padding in [false, true] {
                    let seed = (1000 + n * 100 + m * 2 + usize::from(padding)) as u64;
                    let c = Case::random(params(b, s, t, h, g, dh), mode, padding, seed);
                    check_as::<T>(&gpu, &c, path, "edge");
                }
            }
        }
    }

    #[test]
    fn edge_shapes_match_the_cpu_kernel_prefill_f32() {
        edge_shapes_on::<f32>(Path::Prefill);
    }

    #[test]
    fn edge_shapes_match_the_cpu_kernel_prefill_bf16() {
        edge_shapes_on::<half::bf16>(Path::Prefill);
    }

    #[test]
    fn edge_shapes_match_the_cpu_kernel_prefill_f16() {
        edge_shapes_on::<half::f16>(Path::Prefill);
    }

    #[test]
    fn edge_shapes_match_the_cpu_kernel_decode_f16() {
        edge_shapes_on::<half::f16>(Path::Decode);
    }

    #[test]
    fn edge_shapes_match_the_cpu_kernel_decode_f32() {
        edge_shapes_on::<f32>(Path::Decode);
    }

    #[test]
    fn edge_shapes_match_the_cpu_kernel_decode_bf16() {
        edge_shapes_on::<half::bf16>(Path::Decode);
    }

    #[test]
    fn decode_over_long_caches() {
        let Some(gpu) = test_gpu() else { return };
        for (n, &t) in [1, 7, 1000, 4097].iter().enumerate().filter(|(n, _)| in_shard(*n)) {
            for (g, dh) in [(2, 64), (1, 128), (8, 16)] {
                let modes = GPU_MODES.iter().copied().chain([
                    MaskMode::Additive { ratio: 0.5, keep_window: Some(2048) },
                    MaskMode::Additive { ratio: 0.0, keep_window: Some(t / 2) },
                ]);
                for (m, mode) in modes.enumerate() {
                    let seed = (n * 1000 + g * 100 + m) as u64;
                    let mut c = Case::random(params(2, 1, t, 8, g, dh), mode, false, seed);
                    c.attn_mask[t..t + t / 3].iter_mut().for_each(|m| *m = 0);
                    check_as::<f32>(&gpu, &c, Path::Auto, "decode");
                    check_as::<half::bf16>(&gpu, &c, Path::Auto, "decode");
                    check_as::<half::f16>(&gpu, &c, Path::Auto, "decode");
                }
            }
        }
    }

    #[test]
    fn prefill_after_a_cached_prefix() {
        let Some(gpu) = test_gpu() else { return };
        let modes = GPU_MODES.iter().copied().chain([
            MaskMode::Additive { ratio: 0.3, keep_window: Some(300) },
            MaskMode::Additive { ratio: 0.0, keep_window: Some(999) },
        ]);
        for (m, mode) in modes.enumerate().filter(|(m, _)| in_shard(*m)) {
            for (g, mask_heads) in [(2, 8), (2, 2), (1, 1)] {
                let p = AttentionParams { mask_heads, ..params(2, 200, 1000, 8, g, 64) };
                let mut c = Case::random(p, mode, false, 77 + m as u64);
                c.attn_mask[1000..1050].iter_mut().for_each(|m| *m = 0);
                check_as::<f32>(&gpu, &c, Path::Auto, "cached prefix");
                check_as::<half::bf16>(&gpu, &c, Path::Auto, "cached prefix");
                check_as::<half::f16>(&gpu, &c, Path::Auto, "cached prefix");
            }
        }
    }

    #[test]
    fn long_prefill_with_the_default_keep_window() {
        let Some(gpu) = test_gpu() else { return };
        for (_, mode) in [
            MaskMode::Causal,
            MaskMode::Additive { ratio: 0.25, keep_window: Some(2048) },
            MaskMode::Additive { ratio: 0.0, keep_window: Some(2048) },
        ]
        .into_iter()
        .enumerate()
        .filter(|(m, _)| in_shard(*m))
        {
            let c = Case::random(params(1, 4097, 4097, 2, 1, 64), mode, true, 5);
            check_as::<f32>(&gpu, &c, Path::Prefill, "long prefill");
        }
    }

    #[test]
    fn left_padded_rows_are_uniform_over_all_keys() {
        let Some(gpu) = test_gpu() else { return };
        for (m, &mode) in GPU_MODES.iter().enumerate().filter(|(m, _)| in_shard(*m)) {
            for (s, t) in [(70, 70), (5, 5), (40, 90)] {
                let mut c = Case::random(params(2, s, t, 4, 2, 16), mode, false, 300 + m as u64);
                let pad = t - s + 3;
                c.attn_mask[t..t + pad].iter_mut().for_each(|m| *m = 0);
                for path in PATHS {
                    let out = check_as::<f32>(&gpu, &c, path, "left padding");
                    for h in 0..4 {
                        for i in 0..3 {
                            assert_uniform(&c, &out, 1, h, i, &format!("{mode:?} {path:?}"));
                        }
                    }
                    check_as::<half::bf16>(&gpu, &c, path, "left padding");
                    check_as::<half::f16>(&gpu, &c, path, "left padding");
                }
            }
        }
    }

    #[test]
    fn boolean_heads_masked_everywhere_are_uniform() {
        let Some(gpu) = test_gpu() else { return };
        for (s, t) in [(1, 1), (1, 300), (3, 50), (100, 100)] {
            let p = AttentionParams { mask_heads: 4, ..params(2, s, t, 4, 2, 32) };
            let mut c = Case::random(p, MaskMode::Boolean, true, 9);
            let m = c.key_m.as_mut().unwrap();
            for hm in [1, 3] {
                m[hm * t..][..t].iter_mut().for_each(|v| *v = 0.5);
                m[(4 + hm) * t..][..t].iter_mut().for_each(|v| *v = 0.99);
            }
            for path in PATHS {
                let out = check_as::<f32>(&gpu, &c, path, "boolean uniform");
                for (b, h, i) in [(0, 1, 0), (0, 3, s - 1), (1, 1, s / 2), (1, 3, 0)] {
                    assert_uniform(&c, &out, b, h, i, &format!("Boolean {path:?}"));
                }
                check_as::<half::bf16>(&gpu, &c, path, "boolean uniform");
                check_as::<half::f16>(&gpu, &c, path, "boolean uniform");
            }
        }
    }

    #[test]
    fn learned_exact_zeros() {
        let Some(gpu) = test_gpu() else { return };
        let mut c = Case::random(params(2, 20, 60, 4, 4, 64), MaskMode::Learned, true, 11);
        let t = 60;
        let l = c.learned.as_mut().unwrap();
        l[2 * t..3 * t].iter_mut().for_each(|v| *v = 0.0);
        l[t..2 * t].iter_mut().step_by(2).for_each(|v| *v = -0.0);
        l[3 * t..].iter_mut().step_by(3).for_each(|v| *v = 1e-38);
        check_all(&gpu, &c, "learned zeros");
        let out = check_as::<f32>(&gpu, &c, Path::Prefill, "learned zeros");
        for i in [0, 7, 19] {
            assert_uniform(&c, &out, 0, 2, i, "Learned head of zeros");
        }
    }

    #[test]
    fn very_negative_finite_biases() {
        let Some(gpu) = test_gpu() else { return };
        let huge = [-1e30, -1e9, -3e38, f32::MIN, f32::MIN / 2.0];
        for (n, &(s, t)) in [(1, 1), (1, 200), (4, 37), (50, 120)].iter().enumerate() {
            for (m, keep_window) in [None, Some(10), Some(t / 2)].into_iter().enumerate() {
                let mode = MaskMode::Additive { ratio: 0.2, keep_window };
                let mut c =
                    Case::random(params(2, s, t, 4, 2, 16), mode, true, (n * 10 + m) as u64);
                let mut rng = Rng::new(n as u64);
                let key_m = c.key_m.as_mut().unwrap();
                for v in key_m.iter_mut() {
                    if rng.below(3) == 0 {
                        *v = huge[rng.below(huge.len())];
                    }
                }
                for v in key_m[..t].iter_mut() {
                    *v = huge[rng.below(huge.len())];
                }
                check_all(&gpu, &c, "very negative biases");
            }
        }
    }

    #[test]
    fn keep_window_ties_keep_the_lower_index() {
        let Some(gpu) = test_gpu() else { return };
        for (n, &(s, t, w)) in
            [(1, 50, 7), (1, 50, 49), (30, 50, 20), (12, 300, 64), (1, 3000, 1000)]
                .iter()
                .enumerate()
                .filter(|(n, _)| in_shard(*n))
        {
            for ratio in [0.0, 0.5] {
                let mode = MaskMode::Additive { ratio, keep_window: Some(w) };
                let mut c = Case::random(params(2, s, t, 4, 2, 32), mode, true, n as u64);
                let mut rng = Rng::new(40 + n as u64);
                c.key_m = Some(rng.quantized(2 * 4 * t, 3, 0.5));
                check_all(&gpu, &c, "keep-window ties");
                if s <= cuda::DECODE_MAX_Q_LEN {
                    let c = Case::random(params(2, s, t, 4, 2, 64), mode, true, n as u64);
                    let c = Case { key_m: Some(rng.quantized(2 * 4 * t, 3, 0.5)), ..c };
                    check_as::<f32>(&gpu, &c, Path::Gqa, "gqa keep-window ties");
                    check_as::<half::bf16>(&gpu, &c, Path::Gqa, "gqa keep-window ties");
                    check_as::<half::f16>(&gpu, &c, Path::Gqa, "gqa keep-window ties");
                }
            }
        }
    }

    /// Decode steps of a cache with room for more, the keep window carried over from step to step
    /// (`masked_attention_step`), against the same steps selected anew (`masked_attention`): the memo's threshold is
    /// the `W`-th largest bias over the slots (the reference order) and the outputs are the same bits. Slots fill one
    /// by one with biases that tie, sit at `MIN` or −inf, for few rows (clusters) and many (single blocks, and keys
    /// past those a block holds), windows below, across and above the filled keys; a step that skips a slot and a
    /// fresh memo select anew.
    #[test]
    fn keep_window_carried_over_steps_matches_a_new_selection() {
        let Some(gpu) = test_gpu() else { return };
        let cases = [
            (2, 2, 40, 10, 3),
            (2, 2, 300, 100, 150),
            (1, 4, 3000, 2990, 2048),
            (5, 4, 9000, 8980, 4500),
        ];
        for (n, &(b, hm, cap, start, w)) in cases.iter().enumerate().filter(|(n, _)| in_shard(*n)) {
            let (h, g, dh) = (hm * 2, hm, 64);
            let mode = MaskMode::Additive { ratio: 0.0, keep_window: Some(w) };
            let p = params(b, 1, cap, h, g, dh);
            let p = AttentionParams { mask_heads: hm, ..p };
            let mut rng = Rng::new(90 + n as u64);
            let mut c = Case::random(p, mode, false, n as u64);
            let mut key_m = rng.quantized(b * hm * cap, 4, 0.25);
            for bb in 0..b {
                for j in 0..cap {
                    c.attn_mask[bb * cap + j] =
                        if j >= start { -1 } else { i64::from(rng.below(6) != 0) };
                }
            }
            let up = |x: &[f32]| {
                gpu.upload(&x.iter().map(|&v| half::bf16::from_f32(v)).collect::<Vec<_>>())
            };
            let (q, k, v) = (up(&c.q).unwrap(), up(&c.k).unwrap(), up(&c.v).unwrap());
            let mut memo = gpu
                .upload(&vec![cuda::KEEP_MEMO_FRESH; cuda::keep_memo_len(p.batch, p.mask_heads)])
                .unwrap();
            for step in start..cap.min(start + 24) {
                let skipped = step == start + 5;
                for bb in 0..b {
                    c.attn_mask[bb * cap + step] = 1;
                    for r in 0..hm {
                        key_m[(bb * hm + r) * cap + step] = match rng.below(8) {
                            0 => f32::MIN,
                            1 => f32::NEG_INFINITY,
                            _ => rng.below(9) as f32 * 0.25 - 1.0,
                        };
                    }
                }
                if skipped {
                    continue;
                }
                let km = gpu.upload(&key_m).unwrap();
                let am = gpu.stream().clone_htod(&c.attn_mask).unwrap();
                let pos = gpu.upload(&[step as i64]).unwrap();
                let mut fresh =
                    gpu.upload(&vec![half::bf16::from_f32(f32::NAN); c.q.len()]).unwrap();
                let mut carried =
                    gpu.upload(&vec![half::bf16::from_f32(f32::NAN); c.q.len()]).unwrap();
                cuda::masked_attention(
                    &gpu,
                    &p,
                    mode,
                    &q,
                    &k,
                    &v,
                    Some(&km),
                    None,
                    &am,
                    &mut fresh,
                )
                .unwrap();
                let steps = cuda::KeepSteps { memo: &mut memo, pos: &pos };
                cuda::masked_attention_step(
                    &gpu,
                    &p,
                    mode,
                    &q,
                    &k,
                    &v,
                    &km,
                    &am,
                    &mut carried,
                    steps,
                )
                .unwrap();
                let words = gpu.download(&memo).unwrap();
                for row in 0..b * hm {
                    let bb = row / hm;
                    let keys: Vec<u64> = (0..cap)
                        .map(|j| {
                            let a = c.attn_mask[bb * cap + j];
                            let bias = if a > 0 { key_m[row * cap + j] } else { f32::MIN };
                            beat(bias, j)
                        })
                        .collect();
                    let got = (u64::from(words[2 * row]) << 32)
                        | u64::from(u32::MAX - words[2 * row + 1]);
                    let what =
                        format!("b{b} hm{hm} capacity {cap} window {w}, slot {step}, row {row}");
                    assert_eq!(got, wth_largest(&keys, w), "{what}: threshold");
                    assert_eq!(words[2 * b * hm + row], step as u32 + 1, "{what}: awaited slot");
                }
                let (x, y) = (gpu.download(&fresh).unwrap(), gpu.download(&carried).unwrap());
                let same = x.iter().zip(&y).all(|(u, v)| u.to_bits() == v.to_bits());
                assert!(same, "b{b} hm{hm} capacity {cap} window {w}, slot {step}: outputs differ");
            }
        }
    }

    #[test]
    fn rows_of_probabilities_sum_to_one() {
        let Some(gpu) = test_gpu() else { return };
        for (m, &mode) in GPU_MODES.iter().enumerate().filter(|(m, _)| in_shard(*m)) {
            for (s, t) in [(1, 77), (13, 37), (70, 200)] {
                let mut c = Case::random(params(2, s, t, 4, 2, 48), mode, true, 50 + m as u64);
                c.v.iter_mut().for_each(|v| *v = 1.0);
                for path in PATHS {
                    let out = on_gpu::<f32>(&gpu, &c, path).unwrap();
                    let worst = out.iter().map(|o| (o - 1.0).abs()).fold(0.0, f32::max);
                    assert!(worst <= 2e-6, "{mode:?} {path:?}: Σ_j p_j deviates from 1 by {worst}");
                }
            }
        }
    }

    #[test]
    fn bad_sizes_are_refused() {
        let Some(gpu) = test_gpu() else { return };
        let c = Case::random(params(1, 2, 3, 4, 2, 8), MaskMode::Boolean, false, 1);
        let bad =
            |c: &Case| matches!(on_gpu::<f32>(&gpu, c, Path::Auto), Err(KernelError::BadParams(_)));
        let mut wide = Case::random(params(1, 2, 3, 2, 1, 257), MaskMode::Causal, false, 1);
        assert!(bad(&wide), "head_dim 257");
        wide.p.head_dim = 256;
        assert!(bad(&wide), "q sized for head_dim 257");
        let mut short = Case::random(c.p, c.mode, false, 1);
        short.q.pop();
        assert!(bad(&short), "short q");
        let no_key_m = Case { key_m: None, ..Case::random(c.p, c.mode, false, 1) };
        assert!(bad(&no_key_m), "Boolean without key_m");
        let (q, k, v) =
            (gpu.zeros::<f32>(64).unwrap(), gpu.zeros::<f32>(48).unwrap(), gpu.zeros(48).unwrap());
        let key_m = gpu.zeros::<f32>(12).unwrap();
        let attn_mask = gpu.stream().clone_htod(&[1i64; 3]).unwrap();
        let mut out = gpu.zeros::<f32>(63).unwrap();
        let r = cuda::masked_attention(
            &gpu,
            &c.p,
            c.mode,
            &q,
            &k,
            &v,
            Some(&key_m),
            None,
            &attn_mask,
            &mut out,
        );
        assert!(matches!(r, Err(KernelError::BadParams(_))), "short out");
    }

    /// A mask mode (keep windows below `max_window`), mask heads per query or per KV head, and padding or not,
    /// for B sequences, G KV heads with `ratio` query heads each, T keys and min(S, T) queries of head dim `dh`.
    #[allow(clippy::too_many_arguments)]
    fn arb_modes(
        b: usize,
        g: usize,
        ratio: usize,
        t: usize,
        s: usize,
        dh: usize,
        seed: u64,
        max_window: usize,
    ) -> impl Strategy<Value = (AttentionParams, MaskMode, bool, u64)> {
        let s = s.min(t);
        let mode = prop_oneof![
            Just(MaskMode::Causal),
            Just(MaskMode::Boolean),
            Just(MaskMode::Learned),
            (0.0f32..0.9, proptest::option::of(0usize..max_window))
                .prop_map(|(ratio, keep_window)| MaskMode::Additive { ratio, keep_window }),
        ];
        (mode, any::<bool>(), any::<bool>()).prop_map(move |(mode, per_kv, padding)| {
            let mut p = params(b, s, t, g * ratio, g, dh);
            p.mask_heads = if per_kv { g } else { g * ratio };
            (p, mode, padding, seed)
        })
    }

    fn arb_gpu_case() -> impl Strategy<Value = (AttentionParams, MaskMode, bool, u64)> {
        (
            1usize..3,
            1usize..4,
            prop_oneof![Just(1usize), Just(2), Just(4)],
            1usize..300,
            0usize..300,
            prop_oneof![1usize..=256, Just(16), Just(64), Just(128)],
            any::<u64>(),
        )
            .prop_flat_map(|(b, g, ratio, t, s, dh, seed)| {
                arb_modes(b, g, ratio, t, s, dh, seed, 300)
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn random_shapes_match_the_cpu_kernel((p, mode, padding, seed) in arb_gpu_case()) {
            let Some(gpu) = test_gpu() else { return Ok(()) };
            let c = Case::random(p, mode, padding, seed);
            check_as::<f32>(&gpu, &c, Path::Auto, "random");
            check_all(&gpu, &c, "random");
        }
    }

    /// Query heads of the Doge-320M and Cheems-350M attention layers with their KV heads and head
    /// dimensions (tools/random_checkpoint.py).
    const HOT_SHAPES: [(usize, usize, usize); 2] = [(8, 4, 128), (16, 4, 64)];

    /// On sm_90 the warpgroup kernel takes every bf16 prefill of Dh 64 or 128 but those whose keep window is shorter
    /// than two fifths of the keys; the `mma` kernel takes those, and all of them before sm_90 and after it.
    #[test]
    fn bf16_prefill_of_the_model_shapes_runs_on_tensor_cores() {
        let causal = MaskMode::Causal;
        let additive = MaskMode::Additive { ratio: 0.5, keep_window: None };
        for (h, g, dh) in HOT_SHAPES {
            for s in [9, 1024, 4096, 8192, 16384] {
                let p = AttentionParams { mask_heads: g, ..params(1, s, s, h, g, dh) };
                // 32 rows a warp from 512 blocks of 128 queries on: S ≥ 8K for H = 8, S ≥ 4K for H = 16.
                let mma = Kernel::Mma { tiles: if h * s.div_ceil(128) >= 512 { 2 } else { 1 } };
                let window = |w| MaskMode::Additive { ratio: 0.0, keep_window: Some(w) };
                for mode in [causal, additive, MaskMode::Boolean, MaskMode::Learned, window(s)] {
                    assert_eq!(
                        pick_kernel(&p, mode, "bf16", "sm_90"),
                        Kernel::Wgmma,
                        "{p:?} {mode:?}"
                    );
                    for arch in ["sm_80", "sm_89", "sm_100"] {
                        assert_eq!(
                            pick_kernel(&p, mode, "bf16", arch),
                            mma,
                            "{p:?} {mode:?} {arch}"
                        );
                    }
                }
                if s > 9 {
                    for w in [s - 1, s.div_ceil(2), (2 * s).div_ceil(5)] {
                        assert_eq!(
                            pick_kernel(&p, window(w), "bf16", "sm_90"),
                            Kernel::Wgmma,
                            "{p:?} {w}"
                        );
                    }
                    assert_eq!(
                        pick_kernel(&p, window(2 * s / 5 - 1), "bf16", "sm_90"),
                        mma,
                        "{p:?}"
                    );
                }
                assert_eq!(pick_kernel(&p, causal, "f32", "sm_90"), Kernel::Scalar, "{p:?}");
                let step = AttentionParams { q_len: 1, ..p };
                assert_eq!(pick_kernel(&step, causal, "bf16", "sm_90"), Kernel::DecodeGqa, "{p:?}");
            }
        }
        let batched = params(2, 4096, 4096, 8, 4, 128);
        assert_eq!(pick_kernel(&batched, causal, "bf16", "sm_80"), Kernel::Mma { tiles: 2 });
        assert_eq!(pick_kernel(&batched, causal, "bf16", "sm_90"), Kernel::Wgmma);
        let odd = params(2, 4096, 4096, 3, 1, 64);
        assert_eq!(pick_kernel(&odd, causal, "bf16", "sm_80"), Kernel::Mma { tiles: 1 });
        assert_eq!(pick_kernel(&odd, causal, "bf16", "sm_90"), Kernel::Wgmma);
        for arch in ["sm_80", "sm_90"] {
            assert_eq!(
                pick_kernel(&params(1, 100, 100, 2, 1, 96), causal, "bf16", arch),
                Kernel::Scalar
            );
        }
    }

    /// The warpgroup kernels' shared memory (`tc::wg_smem_bytes`, `tc::tma_smem_bytes`) fits the H200's 227 KiB
    /// per block, twice over for the 64-key tiles whose launch bound asks two blocks; the launcher's formulas,
    /// queries per block and 256 threads are the source's.
    #[test]
    fn wgmma_shared_memory_fits() {
        let src = cuda::SOURCE.code;
        for dh in [64, 128] {
            let form = cuda::WgForm::of(dh);
            let (bytes, blocks) = (form.smem_bytes(dh), form.blocks_per_multiprocessor());
            assert!(blocks * bytes <= 227 * 1024, "Dh {dh}: {bytes} bytes");
            let forms: &[&str] = match form {
                cuda::WgForm::Pipelined => &["false, )", "true, _keep)"],
                cuda::WgForm::Blocks => {
                    &["false, false, )", "false, true, _flat)", "true, false, _keep)"]
                }
            };
            for (args, ty) in forms.iter().flat_map(|a| [(a, "bf16_t, bf16"), (a, "f16_t, f16")]) {
                let decls = match form {
                    cuda::WgForm::Pipelined => vec![format!("PREFILL_TMA({ty}, {args}")],
                    cuda::WgForm::Blocks => vec![
                        format!(
                            "PREFILL_WGMMA(E, NAME, {dh}, {}, {blocks}, {args}",
                            form.key_tile()
                        ),
                        format!("PREFILL_WGMMA_ALL({ty})"),
                    ],
                };
                for decl in decls {
                    assert!(src.contains(&decl), "masked_attention.cu instantiates {decl}");
                }
            }
        }
        assert!(
            src.contains("(WG_BQ + 2 * WG_STAGES * bk) * dh * 2 + WG_STAGES * bk * 8 + 1024"),
            "tc::wg_smem_bytes"
        );
        let tma = "TMA_STAGES * (2 * 128 * 128 * 2 + 2 * 128 * 4) + 2 * TMA_STAGES * 8 + WG_NT / 32 * 2048 + 1024";
        assert!(
            src.contains(tma) && src.contains("constexpr int TMA_STAGES = 3;"),
            "tc::tma_smem_bytes"
        );
        let block = format!(
            "constexpr int WG_BQ = {}, WG_NT = 256, WG_STAGES = {};",
            cuda::WGMMA_QUERIES,
            cuda::WGMMA_STAGES
        );
        assert!(src.contains(&block), "masked_attention.cu: {block}");
    }

    /// The Dh 64 warpgroup form takes the causal mode's biases through the branching kernel and every other mode's
    /// through `_flat`; the keep window has its own kernel, and the Dh 128 form one kernel for every mode.
    #[test]
    fn warpgroup_kernels_by_mode() {
        let additive = MaskMode::Additive { ratio: 0.5, keep_window: None };
        let blocks = cuda::WgForm::of(64);
        assert_eq!(
            blocks.kernel("bf16", 64, false, MaskMode::Causal),
            "masked_attention_bf16_prefill_wgmma_d64_k64"
        );
        for mode in [MaskMode::Boolean, additive, MaskMode::Learned] {
            assert_eq!(
                blocks.kernel("bf16", 64, false, mode),
                "masked_attention_bf16_prefill_wgmma_d64_k64_flat"
            );
            assert_eq!(
                blocks.kernel("bf16", 64, true, mode),
                "masked_attention_bf16_prefill_wgmma_d64_k64_keep"
            );
        }
        let tma = cuda::WgForm::of(128);
        for mode in [MaskMode::Causal, additive] {
            assert_eq!(
                tma.kernel("bf16", 128, false, mode),
                "masked_attention_bf16_prefill_tma_d128"
            );
            assert_eq!(
                tma.kernel("bf16", 128, true, mode),
                "masked_attention_bf16_prefill_tma_d128_keep"
            );
        }
    }

    /// The tensor-core, GQA decode and keep-window kernels the launcher names are in the compiled
    /// module (no GPU needed).
    #[test]
    fn tensor_core_kernels_compile_for_sm_90() {
        let Some(cubin) = crate::testutil::sm90_cubin(&cuda::SOURCE) else { return };
        for dh in [64, 128] {
            for elem in ["bf16", "f16"] {
                for tiles in cuda::MMA_TILES {
                    let name = format!("masked_attention_{elem}_prefill_mma_d{dh}_m{tiles}");
                    assert!(crate::testutil::has_symbol(&cubin, &name), "{name} missing");
                }
                for name in cuda::WgForm::of(dh).kernels(elem, dh) {
                    assert!(crate::testutil::has_symbol(&cubin, &name), "{name} missing");
                }
            }
            for elem in ["f32", "bf16", "f16"] {
                for nq in [1, 2, 4, 8] {
                    let name = format!("masked_attention_{elem}_decode_gqa_d{dh}_q{nq}");
                    assert!(crate::testutil::has_symbol(&cubin, &name), "{name} missing");
                }
            }
        }
        for rows in [1, 17] {
            let (name, _, _) = cuda::keep_launch(rows, "sm_90");
            assert!(crate::testutil::has_symbol(&cubin, name), "{name} missing");
        }
        for stage in [
            "order_keys",
            "keep_until",
            "keep_rank",
            "keep_theta",
            "keep_until_ranked",
            "keep_lists",
        ] {
            let name = format!("masked_attention_{stage}");
            assert!(crate::testutil::has_symbol(&cubin, &name), "{name} missing");
        }
    }

    /// Keep windows rank the keys of 4097 to 65536 positions, count beaters otherwise; the lists of a call stay
    /// within 256 MiB (no GPU needed).
    #[test]
    fn keep_window_launch_choices() {
        assert_eq!(cuda::until_kernel(1), cuda::UntilKernel::Counting);
        assert_eq!(cuda::until_kernel(4096), cuda::UntilKernel::Counting);
        assert_eq!(cuda::until_kernel(4097), cuda::UntilKernel::Ranked);
        assert_eq!(cuda::until_kernel(65536), cuda::UntilKernel::Ranked);
        assert_eq!(cuda::until_kernel(65537), cuda::UntilKernel::Counting);
        // Doge-320M at 16K: 4 mask heads, 128 tiles of 128 queries, W + 128 keys each, padded by a tile.
        assert_eq!(cuda::list_layout(4, 16384, 16384, 2048, 128), Some((2176, 2240)));
        assert_eq!(cuda::list_layout(1, 10, 10, 5, 64), Some((10, 128)));
        assert_eq!(cuda::list_layout(1, 100, 130, 64, 64), Some((128, 192)));
        assert_eq!(cuda::list_layout(64, 65536, 65536, 60000, 128), None);
        assert_eq!(cuda::list_layout(usize::MAX, 65536, 65536, 1, 128), None);
    }

    /// Order keys of `bhm` rows of `t` keys with ties (few distinct values), every `masked`-th at or below MIN's.
    fn tied_keys(bhm: usize, t: usize, levels: u64, masked: usize, seed: u64) -> Vec<u32> {
        let mut rng = Rng::new(seed);
        let step = (0x7fff_ffff / levels) as u32;
        (0..bhm * t)
            .map(|i| match i % masked.max(1) {
                0 if masked > 0 => [0x0080_0000, 0x0000_0007][rng.below(2)],
                _ => 0x8000_0000 + (rng.next_u64() % levels) as u32 * step,
            })
            .collect()
    }

    /// Per key, the first position p ≥ j at which `w` keys x ≤ p beat j ((key, -x) above (key_j, -j)); i32::MAX if
    /// none, 0 for keys at or below MIN's order key and for w = 0.
    fn until_reference(keys: &[u32], w: usize) -> Vec<i32> {
        let t = keys.len();
        (0..t)
            .map(|j| {
                if w == 0 || keys[j] <= 0x0080_0000 {
                    return 0;
                }
                let beats = |x: usize| keys[x] > keys[j] || (keys[x] == keys[j] && x < j);
                let mut n = (0..j).filter(|&x| beats(x)).count();
                if n >= w {
                    return j as i32;
                }
                for p in j + 1..t {
                    n += usize::from(beats(p));
                    if n >= w {
                        return p as i32;
                    }
                }
                i32::MAX
            })
            .collect()
    }

    /// The ranked per-key windows equal the reference and the counting kernel's (whose position for a key never kept
    /// is that of its W-th beater, at or before it; the windows are the same).
    #[test]
    fn ranked_keep_until_matches_the_reference_and_the_counting_kernel() {
        let Some(gpu) = test_gpu() else { return };
        let cases: [(usize, usize, u64, usize); 11] = [
            (1, 1, 3, 0),
            (2, 1, 3, 2),
            (5, 2, 2, 3),
            (130, 1, 4, 7),
            (257, 64, 3, 0),
            (1000, 999, 5, 11),
            (1000, 0, 5, 11),
            (4097, 2048, 16, 13),
            (4097, 2048, 1 << 24, 0),
            (16384, 2048, 64, 29),
            (40000, 3000, 1 << 20, 17),
        ];
        for (n, &(t, w, levels, masked)) in cases.iter().enumerate().filter(|(n, _)| in_shard(*n)) {
            let bhm = 3;
            let keys = tied_keys(bhm, t, levels, masked, 70 + n as u64);
            let up = gpu.upload(&keys).unwrap();
            let run = |how| {
                let until = cuda::keep_until_on(&gpu, &up, bhm, t, w, how).unwrap();
                gpu.download(&until).unwrap()
            };
            let (ranked, counting) =
                (run(cuda::UntilKernel::Ranked), run(cuda::UntilKernel::Counting));
            for r in 0..bhm {
                let row = &keys[r * t..][..t];
                let got = &ranked[r * t..][..t];
                let what = format!("T={t} W={w} levels={levels} row {r}");
                if t <= 4097 {
                    assert_eq!(
                        got,
                        &until_reference(row, w)[..],
                        "{what}: ranked against the reference"
                    );
                }
                let counted: Vec<i32> = counting[r * t..][..t]
                    .iter()
                    .enumerate()
                    .map(
                        |(j, &u)| if w == 0 || row[j] <= 0x0080_0000 { 0 } else { u.max(j as i32) },
                    )
                    .collect();
                let first = (0..t).find(|&j| got[j] != counted[j]);
                assert!(first.is_none(), "{what}: ranked against counting, first at {first:?}");
            }
        }
    }

    /// Each query tile's list holds, in order, the keys kept at one of its rows, padded with -1 to the end of the
    /// next key tile; -1 for tiles with a row that keeps no key or more keys than the cap, else -2 for tiles whose
    /// rows see at most W keys.
    #[test]
    fn keep_lists_hold_the_keys_kept_in_each_tile() {
        let Some(gpu) = test_gpu() else { return };
        for (n, &(s, t, w, rows, masked)) in [
            (1, 1, 1, 64, 0),
            (70, 70, 5, 64, 3),
            (40, 300, 64, 128, 0),
            (4097, 4097, 2048, 128, 9),
            (500, 600, 1, 64, 0),
        ]
        .iter()
        .enumerate()
        .filter(|(n, _)| in_shard(*n))
        {
            let bhm = 2;
            let mut keys = tied_keys(bhm, t, 8, masked, 90 + n as u64);
            // The first keys of row 1 at MIN: its first rows keep no key.
            keys[t..t + t.min(70)].iter_mut().for_each(|k| *k = 0x0080_0000);
            let until: Vec<i32> = keys.chunks(t).flat_map(|row| until_reference(row, w)).collect();
            let layout = cuda::list_layout(bhm, s, t, w, rows).unwrap();
            let (cap, stride) = layout;
            let up = gpu.upload(&until).unwrap();
            let lists = cuda::keep_lists_on(&gpu, &up, bhm, s, t, rows, w, layout).unwrap();
            let (list, count) =
                (gpu.download(&lists.list).unwrap(), gpu.download(&lists.count).unwrap());
            let tiles = s.div_ceil(rows);
            for r in 0..bhm {
                let u = &until[r * t..][..t];
                for qt in 0..tiles {
                    let (p0, tile) = (t - s + qt * rows, r * tiles + qt);
                    let p1 = (p0 + rows - 1).min(t - 1);
                    let kept: Vec<i32> =
                        (0..=p1).filter(|&j| u[j] > j.max(p0) as i32).map(|j| j as i32).collect();
                    let some = (0..=p0).any(|j| u[j] > j as i32);
                    let what = format!("S={s} T={t} W={w} rows={rows} row {r} tile {qt}");
                    if !some || kept.len() > cap {
                        assert_eq!(count[tile], -1, "{what}");
                        continue;
                    }
                    if p1 < w {
                        assert_eq!(count[tile], -2, "{what}");
                        continue;
                    }
                    assert_eq!(count[tile], kept.len() as i32, "{what}");
                    let got = &list[tile * stride..][..stride];
                    assert_eq!(&got[..kept.len()], &kept[..], "{what}");
                    let pad_end = stride.min(kept.len().next_multiple_of(64) + 64);
                    assert!(got[kept.len()..pad_end].iter().all(|&x| x == -1), "{what}: padding");
                }
            }
        }
    }

    /// Decode steps take the GQA kernel for Dh 64 and 128 in f32, bf16 and f16, the per-row kernel
    /// otherwise; the grid fills the H200 at B 1 and B 16 of the Doge-320M shape (no GPU needed).
    #[test]
    fn decode_launch_choices() {
        let step =
            |b, s, t, h, g, dh| AttentionParams { mask_heads: g, ..params(b, s, t, h, g, dh) };
        for elem in ["f32", "bf16", "f16"] {
            for dh in [64, 128] {
                for s in 1..=cuda::DECODE_MAX_Q_LEN {
                    let p = step(2, s, 100, 6, 2, dh);
                    let kernel = pick_kernel(&p, MaskMode::Causal, elem, "sm_90");
                    assert_eq!(kernel, Kernel::DecodeGqa, "{elem} {p:?}");
                }
            }
            for dh in [16, 32, 96, 256, 65] {
                let kernel =
                    pick_kernel(&step(1, 1, 64, 2, 1, dh), MaskMode::Causal, elem, "sm_90");
                assert_eq!(kernel, Kernel::Decode);
            }
        }
        let grid = cuda::gqa_grid(&step(1, 1, 4096, 8, 4, 128));
        let want = cuda::GqaGrid { queries: 2, groups: 1, chunk: 64, splits: 64 };
        assert_eq!(grid, want, "B1");
        let grid = cuda::gqa_grid(&step(16, 1, 4096, 8, 4, 128));
        assert_eq!(grid, cuda::GqaGrid { queries: 2, groups: 1, chunk: 512, splits: 8 }, "B16");
        assert!(16 * 4 * grid.splits >= 2 * 132, "B16 fills the 132 multiprocessors");
        // 3 heads per KV head and 8 queries: 24 queries per KV head, three blocks of 8.
        let grid = cuda::gqa_grid(&step(1, 8, 1000, 6, 2, 64));
        assert_eq!((grid.queries, grid.groups), (8, 3));
        assert_eq!(grid.splits, 1000usize.div_ceil(grid.chunk));
        assert_eq!(grid.chunk % 64, 0);
        let one = cuda::gqa_grid(&step(1, 1, 1, 1, 1, 64));
        assert_eq!(one, cuda::GqaGrid { queries: 1, groups: 1, chunk: 64, splits: 1 });
    }

    /// The GQA decode kernel on edge shapes: B 1 and 16, T around the 64-key slices, padding,
    /// H/G = 1, 2, 3 and 8 (query groups of up to 8, several per KV head), key_m per query or KV
    /// head, S up to `DECODE_MAX_Q_LEN`, every mode, Dh 64 and 128, every dtype.
    #[test]
    fn gqa_decode_edge_shapes_match_the_cpu_kernel() {
        let Some(gpu) = test_gpu() else { return };
        let shapes = [
            (1, 1, 1, 2, 1, 64),
            (1, 1, 63, 2, 2, 128),
            (1, 1, 65, 3, 1, 64),
            (2, 1, 200, 8, 4, 128),
            (16, 1, 130, 8, 4, 128),
            (2, 3, 77, 6, 2, 64),
            (1, 8, 300, 8, 1, 128),
            (2, 2, 129, 4, 4, 64),
            (1, 5, 1000, 16, 2, 64),
        ];
        let modes = GPU_MODES.iter().copied().chain([
            MaskMode::Additive { ratio: 0.0, keep_window: Some(64) },
            MaskMode::Additive { ratio: 0.0, keep_window: Some(1000) },
        ]);
        for (m, mode) in modes.enumerate() {
            for (n, &(b, s, t, h, g, dh)) in shapes.iter().enumerate().filter(|(n, _)| in_shard(*n))
            {
                for (x, mask_heads) in [h, g].into_iter().enumerate() {
                    for padding in [false, true] {
                        let p = AttentionParams { mask_heads, ..params(b, s, t, h, g, dh) };
                        let seed = (7000 + m * 100 + n * 4 + x * 2 + usize::from(padding)) as u64;
                        let c = Case::random(p, mode, padding, seed);
                        check_as::<f32>(&gpu, &c, Path::Gqa, "gqa edge");
                        check_as::<half::bf16>(&gpu, &c, Path::Gqa, "gqa edge");
                        check_as::<half::f16>(&gpu, &c, Path::Gqa, "gqa edge");
                    }
                }
            }
        }
    }

    /// Slots with no key on both decode kernels, f32 and bf16, against the CPU kernel over the keys alone.
    #[test]
    fn decode_kernels_leave_out_absent_slots() {
        let Some(gpu) = test_gpu() else { return };
        for (m, mode) in slot_modes()
            .chain([MaskMode::Additive { ratio: 0.0, keep_window: Some(64) }])
            .enumerate()
        {
            for (n, &(b, t, h, g, dh, extra)) in [
                (1, 1, 2, 1, 64, 300),
                (2, 70, 8, 4, 128, 200),
                (1, 100, 4, 4, 64, 4000),
                (3, 5, 6, 2, 64, 1),
            ]
            .iter()
            .enumerate()
            {
                for padding in [false, true] {
                    let seed = (9000 + m * 100 + n * 2 + usize::from(padding)) as u64;
                    let c = Case::random(params(b, 1, t, h, g, dh), mode, padding, seed);
                    let wide = with_absent_slots(&c, extra, seed + 50);
                    for path in [Path::Decode, Path::Gqa] {
                        for bf16 in [false, true] {
                            let what = format!(
                                "absent slots {mode:?} {path:?} bf16 {bf16} b{b} t{t} +{extra}"
                            );
                            let (got, want) = if bf16 {
                                let (w, c) =
                                    (rounded::<half::bf16>(&wide), rounded::<half::bf16>(&c));
                                (on_gpu::<half::bf16>(&gpu, &w, path).unwrap(), c.run().unwrap())
                            } else {
                                (on_gpu::<f32>(&gpu, &wide, path).unwrap(), c.run().unwrap())
                            };
                            let want: Vec<f64> = want.into_iter().map(f64::from).collect();
                            let (atol, rtol) =
                                if bf16 { (ATOL_BF16, RTOL_BF16) } else { (ATOL_F32, RTOL_F32) };
                            assert_close(&got, &want, atol, rtol, &what);
                        }
                    }
                }
            }
        }
    }

    /// Long caches at the Doge-320M decode shape (B 1 and 16, H 8, G 4, Dh 128, Hm = G), with
    /// the default keep window of 2048 and quantised `key_m` so that the window ends among ties.
    #[test]
    fn gqa_decode_over_long_caches_with_keep_window_ties() {
        let Some(gpu) = test_gpu() else { return };
        for (n, &(b, t)) in [(1, 4096), (16, 4096), (1, 2049), (2, 5000)].iter().enumerate() {
            for mode in [
                MaskMode::Causal,
                MaskMode::Additive { ratio: 0.0, keep_window: None },
                MaskMode::Additive { ratio: 0.0, keep_window: Some(2048) },
                MaskMode::Additive { ratio: 0.3, keep_window: Some(2048) },
            ] {
                let p = AttentionParams { mask_heads: 4, ..params(b, 1, t, 8, 4, 128) };
                let mut c = Case::random(p, mode, true, 300 + n as u64);
                let mut rng = Rng::new(400 + n as u64);
                c.key_m = Some(rng.quantized(b * 4 * t, 3, 0.5));
                check_as::<half::bf16>(&gpu, &c, Path::Auto, "gqa long");
                check_as::<half::f16>(&gpu, &c, Path::Auto, "gqa long");
                if b == 1 {
                    check_as::<f32>(&gpu, &c, Path::Gqa, "gqa long");
                }
            }
        }
    }

    /// Decode keep windows over more keys than the keep-window kernels hold in registers (8192 in
    /// one block; 2048 per block of a cluster of 8, 16384 in all), in both kernels (few rows take
    /// the cluster), with the window's last key on either side of a boundary and ties among the
    /// keys.
    #[test]
    fn decode_keep_window_beyond_the_held_keys() {
        let Some(gpu) = test_gpu() else { return };
        for (n, &(b, s, t, w)) in
            [(1, 1, 17000, 2048), (2, 1, 16500, 16390), (1, 3, 18000, 17000), (5, 1, 9000, 8195)]
                .iter()
                .enumerate()
        {
            let mode = MaskMode::Additive { ratio: 0.1, keep_window: Some(w) };
            let p = AttentionParams { mask_heads: 4, ..params(b, s, t, 8, 4, 128) };
            let mut c = Case::random(p, mode, true, 600 + n as u64);
            let mut rng = Rng::new(700 + n as u64);
            c.key_m = Some(rng.quantized(b * 4 * t, 3, 0.5));
            check_as::<half::bf16>(&gpu, &c, Path::Auto, "keep beyond cache");
            check_as::<half::f16>(&gpu, &c, Path::Auto, "keep beyond cache");
            check_as::<f32>(&gpu, &c, Path::Auto, "keep beyond cache");
        }
    }

    /// Rows of the GQA decode kernel whose keys are all masked are uniform over all `T` keys.
    #[test]
    fn gqa_decode_fully_masked_rows_are_uniform() {
        let Some(gpu) = test_gpu() else { return };
        for (s, t) in [(1, 1), (1, 300), (3, 50), (8, 70)] {
            let p = AttentionParams { mask_heads: 4, ..params(2, s, t, 4, 2, 64) };
            let mut c = Case::random(p, MaskMode::Boolean, true, 19);
            let m = c.key_m.as_mut().unwrap();
            for hm in [1, 3] {
                m[hm * t..][..t].iter_mut().for_each(|v| *v = 0.5);
                m[(4 + hm) * t..][..t].iter_mut().for_each(|v| *v = 0.99);
            }
            let out = check_as::<f32>(&gpu, &c, Path::Gqa, "gqa boolean uniform");
            for (b, h, i) in [(0, 1, 0), (0, 3, s - 1), (1, 1, s / 2), (1, 3, 0)] {
                assert_uniform(&c, &out, b, h, i, "Boolean gqa");
            }
            check_as::<half::bf16>(&gpu, &c, Path::Gqa, "gqa boolean uniform");
            check_as::<half::f16>(&gpu, &c, Path::Gqa, "gqa boolean uniform");
        }
    }

    const MMA_SHAPES: [(usize, usize, usize, usize, usize, usize); 10] = [
        (1, 1, 1, 2, 1, 64),
        (1, 1, 100, 2, 1, 128),
        (1, 9, 9, 2, 2, 64),
        (2, 65, 65, 4, 2, 64),
        (1, 63, 200, 3, 1, 128),
        (1, 130, 130, 2, 2, 128),
        (1, 64, 64, 1, 1, 64),
        (2, 129, 257, 4, 1, 128),
        (2, 200, 1000, 8, 2, 64),
        (1, 300, 300, 8, 4, 128),
    ];

    /// A learned mask's edge values on the tensor-core kernels: ±0 and NaN, the smallest
    /// subnormals and negative values (a key is kept when its value is not ±0).
    #[test]
    fn tensor_core_prefill_learned_edge_values() {
        let Some(gpu) = test_gpu() else { return };
        for (n, &(b, s, t, h, g, dh)) in
            [(1, 130, 300, 4, 2, 128), (2, 65, 200, 4, 2, 64)].iter().enumerate()
        {
            let c =
                Case::random(params(b, s, t, h, g, dh), MaskMode::Learned, true, 950 + n as u64);
            let c = with_learned_edges(c, n);
            for path in tensor_core_paths(&c.p, gpu.arch()) {
                check_tc(&gpu, &c, path, "mma learned edge values");
            }
        }
    }

    /// Biases of large magnitude on the tensor-core kernel: row maxima on both sides of the 4096
    /// below which the probabilities come from one fma per score, and very negative finite ones.
    #[test]
    fn tensor_core_prefill_large_biases() {
        let Some(gpu) = test_gpu() else { return };
        let offsets = [-5000.0, -1000.0, 0.0, 1000.0, 4000.0, 5000.0, -3e38];
        for (n, &(b, s, t, h, g, dh)) in
            [(1, 130, 300, 4, 2, 128), (2, 65, 200, 4, 2, 64)].iter().enumerate()
        {
            for keep_window in [None, Some(100)] {
                let mode = MaskMode::Additive { ratio: 0.0, keep_window };
                let p = AttentionParams { mask_heads: g, ..params(b, s, t, h, g, dh) };
                let mut c = Case::random(p, mode, true, 900 + n as u64);
                for (r, row) in c.key_m.as_mut().unwrap().chunks_mut(t).enumerate() {
                    let off = offsets[(r + n) % offsets.len()];
                    row.iter_mut().for_each(|v| *v += off);
                }
                for path in tensor_core_paths(&c.p, gpu.arch()) {
                    check_tc(&gpu, &c, path, "mma large biases");
                }
            }
        }
    }

    #[test]
    fn tensor_core_prefill_edge_shapes_match_the_cpu_kernel() {
        let Some(gpu) = test_gpu() else { return };
        for (n, &(b, s, t, h, g, dh)) in MMA_SHAPES.iter().enumerate().filter(|(n, _)| in_shard(*n))
        {
            for (m, &mode) in GPU_MODES.iter().enumerate() {
                for (x, mask_heads) in [h, g].into_iter().enumerate() {
                    for padding in [false, true] {
                        let p = AttentionParams { mask_heads, ..params(b, s, t, h, g, dh) };
                        let seed = (5000 + n * 100 + m * 4 + x * 2 + usize::from(padding)) as u64;
                        let c = Case::random(p, mode, padding, seed);
                        for path in tensor_core_paths(&c.p, gpu.arch()) {
                            check_tc(&gpu, &c, path, "mma edge");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn tensor_core_prefill_rows_are_uniform_when_fully_masked_and_sum_to_one() {
        let Some(gpu) = test_gpu() else { return };
        for (m, &mode) in GPU_MODES.iter().enumerate().filter(|(m, _)| in_shard(*m)) {
            for &(s, t, dh) in &[(70, 70, 64), (5, 5, 128), (40, 90, 128), (200, 260, 64)] {
                let mut c = Case::random(params(2, s, t, 4, 2, dh), mode, false, 900 + m as u64);
                // Sequence 1 is left-padded past its first queries' horizon: those rows see only MIN.
                let pad = t - s + 3;
                c.attn_mask[t..t + pad].iter_mut().for_each(|m| *m = 0);
                for path in tensor_core_paths(&c.p, gpu.arch()) {
                    uniform_and_summing::<half::bf16>(
                        &gpu,
                        &c,
                        path,
                        (ATOL_MMA, RTOL_BF16),
                        SUM_F32_BF16,
                    );
                    uniform_and_summing::<half::f16>(
                        &gpu,
                        &c,
                        path,
                        (ATOL_MMA_F16, RTOL_F16),
                        SUM_F32_F16,
                    );
                }
            }
        }
    }

    /// `c` (sequence 1 left-padded past its first queries' horizon) in `T` on `path`: the fully masked rows are the
    /// mean of the values within `tol`, and with every value 1 the outputs are 1, exactly on the `mma` kernels (their
    /// row sums add the rounded probabilities), within `sum` on the warpgroup kernels.
    fn uniform_and_summing<T: Elem>(gpu: &Gpu, c: &Case, path: Path, tol: (f64, f64), sum: f32) {
        let (mode, dh) = (c.mode, c.p.head_dim);
        let out = check_as::<T>(gpu, c, path, "mma left padding");
        let c = rounded::<T>(c);
        for h in 0..4 {
            for i in 0..3 {
                let g = h / 2;
                let row = &out[((c.p.q_len + i) * 4 + h) * dh..][..dh];
                let want: Vec<f64> = (0..dh).map(|d| mean_of_values(&c, 1, g, d)).collect();
                let what = format!("{} {mode:?} {path:?} uniform row 1 {h} {i}", T::NAME);
                assert_close(row, &want, tol.0, tol.1, &what);
            }
        }
        let mut ones = c;
        ones.v.iter_mut().for_each(|v| *v = 1.0);
        let out = on_gpu::<T>(gpu, &ones, path).unwrap();
        let worst = out.iter().map(|o| (o - 1.0).abs()).fold(0.0, f32::max);
        let what = format!("{mode:?} {path:?} S={} T={}", ones.p.q_len, ones.p.kv_len);
        let allowed = if matches!(path, Path::Wgmma) { sum } else { 0.0 };
        assert!(worst <= allowed, "{what}: Σ_j p_j / l is {worst} from 1 in {}", T::NAME);
    }

    /// The pipelined kernel walks its work items from any grid width with the same output, bit for bit: one block
    /// for every item, a few blocks carrying the tile pipeline across many items (of one key tile, too), and one a
    /// multiprocessor; with left padding (rows whose every key is masked), a cached prefix and the keep window.
    #[test]
    fn pipelined_prefill_gives_the_same_output_from_any_grid_width() {
        let Some(gpu) = test_gpu() else { return };
        if !cuda::wgmma_fits(&params(1, 200, 200, 4, 2, cuda::TMA_HEAD_DIM), "bf16", gpu.arch()) {
            return;
        }
        for (m, &mode) in GPU_MODES.iter().enumerate().filter(|(m, _)| in_shard(*m)) {
            for (n, &(s, t)) in [(300, 300), (200, 450), (129, 129)].iter().enumerate() {
                let p = params(2, s, t, 4, 2, cuda::TMA_HEAD_DIM);
                let mut c = Case::random(p, mode, false, 700 + 10 * m as u64 + n as u64);
                let pad = (t - s + 140).min(t);
                c.attn_mask[t..t + pad].iter_mut().for_each(|m| *m = 0);
                let items = 2 * 4 * s.div_ceil(cuda::WGMMA_QUERIES);
                let want = check_as::<half::bf16>(
                    &gpu,
                    &c,
                    Path::Wgmma,
                    "pipelined, one block a multiprocessor",
                );
                for blocks in [1, 2, 3, 7, items] {
                    cuda::TMA_BLOCKS.with(|b| b.set(Some(blocks)));
                    let got = on_gpu::<half::bf16>(&gpu, &rounded::<half::bf16>(&c), Path::Wgmma);
                    cuda::TMA_BLOCKS.with(|b| b.set(None));
                    let got = got.unwrap();
                    let same = got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(
                        same,
                        "{mode:?} S={s} T={t}: {blocks} blocks differ from one a multiprocessor"
                    );
                }
            }
        }
    }

    #[test]
    fn tensor_core_keep_window_ties_keep_the_lower_index() {
        let Some(gpu) = test_gpu() else { return };
        for (n, &(s, t, w)) in [
            (1, 50, 7),
            (30, 50, 20),
            (12, 300, 64),
            (65, 130, 1),
            (64, 64, 63),
            (300, 3000, 1000),
            (3, 5, 2),
            (20, 1001, 500),
        ]
        .iter()
        .enumerate()
        .filter(|(n, _)| in_shard(*n))
        {
            for (ratio, dh) in [(0.0, 64), (0.5, 128)] {
                let mode = MaskMode::Additive { ratio, keep_window: Some(w) };
                let mut c = Case::random(params(2, s, t, 4, 2, dh), mode, true, n as u64);
                let mut rng = Rng::new(60 + n as u64);
                c.key_m = Some(rng.quantized(2 * 4 * t, 3, 0.5));
                for path in tensor_core_paths(&c.p, gpu.arch()) {
                    check_tc(&gpu, &c, path, "mma keep-window ties");
                }
            }
        }
    }

    #[test]
    fn long_tensor_core_prefill_at_the_doge_shape() {
        let Some(gpu) = test_gpu() else { return };
        for (_, mode) in [
            MaskMode::Additive { ratio: 0.0, keep_window: None },
            MaskMode::Additive { ratio: 0.0, keep_window: Some(2048) },
            MaskMode::Causal,
        ]
        .into_iter()
        .enumerate()
        .filter(|(m, _)| in_shard(*m))
        {
            let p = AttentionParams { mask_heads: 4, ..params(1, 4096, 4096, 8, 4, 128) };
            let mut c = Case::random(p, mode, false, 21);
            if let Some(m) = c.key_m.as_mut() {
                let mut rng = Rng::new(22);
                m.iter_mut().for_each(|v| *v = rng.uniform(-3.0, 3.0));
            }
            check_tc(&gpu, &c, Path::Auto, "long mma");
        }
    }

    fn arb_mma_case() -> impl Strategy<Value = (AttentionParams, MaskMode, bool, u64)> {
        (
            1usize..3,
            1usize..4,
            prop_oneof![Just(1usize), Just(2), Just(3), Just(4)],
            1usize..400,
            1usize..400,
            prop_oneof![Just(64usize), Just(128)],
            any::<u64>(),
        )
            .prop_flat_map(|(b, g, ratio, t, s, dh, seed)| {
                arb_modes(b, g, ratio, t, s, dh, seed, 400)
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn tensor_core_prefill_random_shapes((p, mode, padding, seed) in arb_mma_case()) {
            let Some(gpu) = test_gpu() else { return Ok(()) };
            let c = Case::random(p, mode, padding, seed);
            for path in tensor_core_paths(&c.p, gpu.arch()) {
                check_tc(&gpu, &c, path, "mma random");
            }
        }
    }

    /// Median of 20 timed calls of `run` (CUDA events around each), after 5 warm-up calls, in ms.
    fn median_ms(gpu: &Gpu, mut run: impl FnMut()) -> f64 {
        for _ in 0..5 {
            run();
        }
        let mut ms = Vec::new();
        for _ in 0..20 {
            let flags = Some(cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT);
            let start = gpu.stream().record_event(flags).unwrap();
            run();
            let end = gpu.stream().record_event(flags).unwrap();
            ms.push(start.elapsed_ms(&end).unwrap());
        }
        ms.sort_by(f32::total_cmp);
        f64::from(ms[ms.len() / 2])
    }

    /// Median time of 20 launches (after 5 warm-up launches) of the bf16 prefill on every
    /// tensor-core variant ([`cuda::MMA_TILES`]) at the attention shapes of [`HOT_SHAPES`] (B 1,
    /// Hm = G), S = T = 1K, 4K, 8K, 16K. Run with
    /// `cargo test --release -p cheems-ops masked_attention::tests::gpu::time_ -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn time_bf16_prefill_at_the_model_shapes() {
        let Some(gpu) = test_gpu() else { return };
        for (h, g, dh, s) in HOT_SHAPES
            .into_iter()
            .flat_map(|(h, g, dh)| [1024, 4096, 8192, 16384].map(|s| (h, g, dh, s)))
        {
            let p = AttentionParams { mask_heads: g, ..params(1, s, s, h, g, dh) };
            let mut rng = Rng::new(s as u64);
            let bf = |x: Vec<f32>| x.into_iter().map(half::bf16::from_f32).collect::<Vec<_>>();
            let q = gpu.upload(&bf(rng.vec(s * h * dh, -1.0, 1.0))).unwrap();
            let k = gpu.upload(&bf(rng.vec(g * s * dh, -1.0, 1.0))).unwrap();
            let v = gpu.upload(&bf(rng.vec(g * s * dh, -1.0, 1.0))).unwrap();
            let key_m = gpu.upload(&rng.vec(g * s, 0.2, 3.0)).unwrap();
            let attn_mask = gpu.stream().clone_htod(&vec![1i64; s]).unwrap();
            let mut out = gpu.zeros::<half::bf16>(s * h * dh).unwrap();
            let flops = 4.0 * (h * dh) as f64 * (s as f64 * (s as f64 + 1.0) / 2.0);
            for (name, mode) in [
                ("causal", MaskMode::Causal),
                ("additive", MaskMode::Additive { ratio: 0.0, keep_window: None }),
                ("additive_w2048", MaskMode::Additive { ratio: 0.0, keep_window: Some(2048) }),
            ] {
                let km = (mode != MaskMode::Causal).then_some(&key_m);
                for path in tensor_core_paths(&p, gpu.arch()) {
                    let kernel = kernel_of::<half::bf16>(&p, mode, path, gpu.arch());
                    let run = || {
                        cuda::attention_on(
                            &gpu, &p, mode, &q, &k, &v, km, None, &attn_mask, &mut out, kernel,
                            None,
                        )
                        .unwrap()
                    };
                    let med = median_ms(&gpu, run);
                    let chosen = pick_kernel(&p, mode, "bf16", gpu.arch()) == kernel;
                    let chosen = if chosen { " (chosen)" } else { "" };
                    println!(
                        "masked_attention bf16 prefill {name} S=T={s} H={h} G={g} Dh={dh} \
                         {kernel:?}{chosen}: median {med:.4} ms, {:.1} TFLOP/s (causal FLOPs \
                         4·H·Dh·S(S+1)/2)",
                        flops / (med * 1e-3) / 1e12
                    );
                }
            }
        }
    }

    /// Median time of 20 launches (after 5 warm-up launches) of a bf16 decode step against a 4K
    /// cache at the Doge-320M attention shape (H 8, G 4, Dh 128, Hm = G), B 1 and 16, on the
    /// per-row and the GQA decode kernels, with the fewest bytes it must read (K and V once) and
    /// the bandwidth that implies. Run with
    /// `cargo test --release -p cheems-ops masked_attention::tests::gpu::time_ -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn time_bf16_decode_at_the_doge_320m_shape() {
        let Some(gpu) = test_gpu() else { return };
        let (h, g, dh, t) = (8, 4, 128, 4096);
        for b in [1, 16] {
            let p = AttentionParams { mask_heads: g, ..params(b, 1, t, h, g, dh) };
            let mut rng = Rng::new(b as u64);
            let bf = |x: Vec<f32>| x.into_iter().map(half::bf16::from_f32).collect::<Vec<_>>();
            let q = gpu.upload(&bf(rng.vec(b * h * dh, -1.0, 1.0))).unwrap();
            let k = gpu.upload(&bf(rng.vec(b * g * t * dh, -1.0, 1.0))).unwrap();
            let v = gpu.upload(&bf(rng.vec(b * g * t * dh, -1.0, 1.0))).unwrap();
            let key_m = gpu.upload(&rng.vec(b * g * t, 0.2, 3.0)).unwrap();
            let attn_mask = gpu.stream().clone_htod(&vec![1i64; b * t]).unwrap();
            let mut out = gpu.zeros::<half::bf16>(b * h * dh).unwrap();
            let bytes = 2.0 * (b * g * t * dh * 2) as f64;
            for (name, mode) in [
                ("causal", MaskMode::Causal),
                ("additive", MaskMode::Additive { ratio: 0.0, keep_window: None }),
                ("additive_w2048", MaskMode::Additive { ratio: 0.0, keep_window: Some(2048) }),
            ] {
                let km = (mode != MaskMode::Causal).then_some(&key_m);
                for kernel in [Kernel::Decode, Kernel::DecodeGqa] {
                    let run = || {
                        cuda::attention_on(
                            &gpu, &p, mode, &q, &k, &v, km, None, &attn_mask, &mut out, kernel,
                            None,
                        )
                        .unwrap()
                    };
                    let med = median_ms(&gpu, run);
                    let chosen = pick_kernel(&p, mode, "bf16", gpu.arch()) == kernel;
                    let chosen = if chosen { " (chosen)" } else { "" };
                    println!(
                        "masked_attention bf16 decode {name} B={b} T={t} H={h} G={g} Dh={dh} \
                         {kernel:?}{chosen}: median {med:.4} ms, {:.2} TB/s of K and V",
                        bytes / (med * 1e-3) / 1e12
                    );
                }
            }
        }
    }
}

/// Tests that read ptxas's report on the module (NVRTC only, no GPU). They sit outside `gpu`, whose tests
/// `tools/sanitize_kernels.py` runs under compute-sanitizer, where NVRTC's log has come back without ptxas's report.
mod ptxas {
    use super::*;
    use std::sync::OnceLock;

    /// ptxas's report on the module for sm_90, compiled once for the tests below; `None` without NVRTC.
    fn report() -> Option<&'static str> {
        static REPORT: OnceLock<Option<String>> = OnceLock::new();
        REPORT.get_or_init(|| crate::testutil::ptxas_report(&cuda::SOURCE, "sm_90")).as_deref()
    }

    /// What ptxas says of a function that spills nothing.
    const NO_SPILL: &str = "0 bytes spill stores, 0 bytes spill loads";

    /// The two lines of ptxas's properties of function `name` in `report`: its spills, then its usage.
    fn properties<'a>(report: &'a str, name: &str) -> (&'a str, &'a str) {
        let mut lines =
            report.lines().skip_while(|l| !l.ends_with(&format!("Function properties for {name}")));
        let spills =
            lines.nth(1).unwrap_or_else(|| panic!("no ptxas properties of {name}:\n{report}"));
        let usage = lines.next().unwrap_or_else(|| panic!("no ptxas usage of {name}"));
        (spills, usage)
    }

    /// ptxas keeps each warpgroup kernel's products in flight together (none of its "wgmma.mma_async instructions
    /// are serialized" advisories) and spills no register.
    #[test]
    fn wgmma_kernels_keep_their_products_in_flight() {
        let Some(report) = report() else { return };
        let forms = [64, 128].into_iter().flat_map(|dh| [(dh, "bf16"), (dh, "f16")]);
        for name in forms.flat_map(|(dh, elem)| cuda::WgForm::of(dh).kernels(elem, dh)) {
            let quoted = format!("'{name}'");
            let advisories: Vec<&str> = report
                .lines()
                .filter(|l| l.contains("Performance Loss") && l.contains(&quoted))
                .collect();
            assert!(advisories.is_empty(), "{advisories:#?}");
            let (spills, _) = properties(report, &name);
            assert!(spills.contains(NO_SPILL), "{name}: {spills}");
        }
    }

    /// The GQA decode kernels of up to four queries spill no register (the 16-bit forms of eight spill about 100 bytes
    /// at 255 registers), and each keeps its static shared memory under 48 KiB, a quarter of it for the forms of at most
    /// two queries, whose launch bound asks four blocks a multiprocessor.
    #[test]
    fn gqa_decode_kernels_fit() {
        let Some(report) = report() else { return };
        for (elem, dh, nq) in ["f32", "bf16", "f16"].into_iter().flat_map(|e| {
            [64, 128].into_iter().flat_map(move |dh| [1, 2, 4, 8].map(|nq| (e, dh, nq)))
        }) {
            let name = format!("masked_attention_{elem}_decode_gqa_d{dh}_q{nq}");
            let (spills, usage) = properties(report, &name);
            if nq <= 4 {
                assert!(spills.contains(NO_SPILL), "{name}: {spills}");
            }
            let smem: usize = usage
                .split(", ")
                .find_map(|f| f.strip_suffix(" bytes smem"))
                .and_then(|n| n.trim().parse().ok())
                .unwrap_or_else(|| panic!("{name}: no shared memory in {usage:?}"));
            let limit = if nq <= 2 { 48 * 1024 / 4 } else { 48 * 1024 };
            assert!(smem <= limit, "{name}: {smem} bytes of shared memory");
        }
    }
}
