//! Sampling of the next token and the incremental decoding loop (prefill, then one `decode` per new token).
//!
//! A draw: with temperature 0, the argmax (the first maximum, NaN skipped). Otherwise the vocabulary sorted by logit
//! in [`TopK`]'s order (descending, ±0 equal, lower id first on ties; NaN never drawn), cut to the `top_k` best
//! (0 = no cut), softmax of `logit / temperature` in f64, cut to the shortest prefix whose probability reaches
//! `top_p` (1 = no cut), then one uniform draw from [`SplitMix64`] seeded with `seed`: the same seed, model and
//! prompt give the same tokens. A decode step hands the sampler only the logits a draw can reach
//! ([`Sampler::reach`]), which a replayed CUDA step selects on the device.

use super::mqar::SplitMix64;
use crate::exec::session::Session;
use crate::exec::{Executor, TopK};
use crate::model::build::Model;
use anyhow::{ensure, Result};
use std::time::Instant;

/// Sampling settings.
#[derive(Clone, Debug, PartialEq)]
pub struct SamplingParams {
    /// Softmax temperature; 0 means greedy.
    pub temperature: f32,
    /// Keep the `top_k` most likely tokens (0 keeps all).
    pub top_k: usize,
    /// Keep the smallest set of most likely tokens whose probability reaches `top_p` (1 keeps all).
    pub top_p: f32,
    /// Seed of the sampler's random stream.
    pub seed: u64,
}

impl SamplingParams {
    /// Temperature finite and ≥ 0, `top_p` in (0, 1].
    pub fn validate(&self) -> Result<()> {
        ensure!(
            self.temperature.is_finite() && self.temperature >= 0.0,
            "--temperature must be a finite number >= 0 (0 = greedy), got {}",
            self.temperature
        );
        ensure!(
            self.top_p > 0.0 && self.top_p <= 1.0,
            "--top-p must be in (0, 1], got {}",
            self.top_p
        );
        Ok(())
    }
}

/// Draws tokens from logits with [`SamplingParams`].
pub struct Sampler {
    params: SamplingParams,
    rng: SplitMix64,
}

impl Sampler {
    /// A sampler with validated parameters.
    pub fn new(params: SamplingParams) -> Result<Sampler> {
        params.validate()?;
        let rng = SplitMix64::new(params.seed);
        Ok(Sampler { params, rng })
    }

    /// How many of a row's best logits a draw can reach: 1 when greedy, `top_k` when it cuts, `None` for all.
    pub fn reach(&self) -> Option<usize> {
        let p = &self.params;
        if p.temperature == 0.0 {
            Some(1)
        } else {
            (p.top_k > 0).then_some(p.top_k)
        }
    }

    /// The next token id for one row of logits.
    pub fn sample(&mut self, logits: &[f32]) -> Result<usize> {
        let top = TopK::of(logits, logits.len(), self.reach().unwrap_or(logits.len()))?;
        Ok(self.draw(&top.values, &top.ids))
    }

    /// The next token id from a row's best logits in [`TopK`]'s order (NaN last): at least [`Self::reach`] of
    /// them, or the whole row when that is `None`.
    pub fn draw(&mut self, values: &[f32], ids: &[i64]) -> usize {
        let p = &self.params;
        let id = |j: usize| ids.get(j).map_or(0, |&i| i as usize);
        if p.temperature == 0.0 || values.len() <= 1 {
            return id(0);
        }
        let mut n = values.iter().take_while(|v| !v.is_nan()).count();
        if n == 0 {
            return 0;
        }
        if p.top_k > 0 {
            n = n.min(p.top_k);
        }
        let max = values[0] as f64;
        let t = p.temperature as f64;
        let mut probs: Vec<f64> =
            values[..n].iter().map(|&x| ((x as f64 - max) / t).exp()).collect();
        let total: f64 = probs.iter().sum();
        probs.iter_mut().for_each(|x| *x /= total);
        if p.top_p < 1.0 {
            let mut acc = 0.0;
            let keep = probs
                .iter()
                .position(|&x| {
                    acc += x;
                    acc >= p.top_p as f64
                })
                .map_or(probs.len(), |i| i + 1);
            probs.truncate(keep);
        }
        let total: f64 = probs.iter().sum();
        let u = self.rng.unit_f64() * total;
        let mut acc = 0.0;
        for (k, &x) in probs.iter().enumerate() {
            acc += x;
            if u < acc {
                return id(k);
            }
        }
        id(probs.len() - 1)
    }
}

/// What a generation produced and how long it took.
#[derive(Clone, Debug, PartialEq)]
pub struct Generation {
    /// New token ids (the EOS that stopped it is not included).
    pub ids: Vec<i64>,
    /// Whether it stopped at the end-of-sequence token.
    pub stopped_at_eos: bool,
    /// Wall time of the prompt's prefill.
    pub prefill_seconds: f64,
    /// Wall time of sampling and the decode steps.
    pub decode_seconds: f64,
}

/// Prefills `prompt`, then samples up to `max_tokens` tokens, feeding each back with one decode step; stops at
/// `eos`. `on_token` sees each new id as soon as it is drawn.
pub fn generate(
    model: &Model,
    exec: &dyn Executor,
    prompt: &[i64],
    max_tokens: usize,
    sampler: &mut Sampler,
    eos: Option<i64>,
    mut on_token: impl FnMut(i64) -> Result<()>,
) -> Result<Generation> {
    ensure!(!prompt.is_empty(), "the prompt has no tokens");
    let v = model.config.vocab_size;
    let mut session = Session::new(model, exec);
    session.reserve(prompt.len() + max_tokens);
    let t0 = Instant::now();
    let step = session.prefill(&vec![prompt.to_vec()], None, &[])?;
    let prefill_seconds = t0.elapsed().as_secs_f64();
    let logits = step.logits.as_f32()?;
    let reach = sampler.reach().unwrap_or(v);
    let mut top = TopK::of(&logits[logits.len() - v..], v, reach)?;
    let t1 = Instant::now();
    let mut ids = Vec::new();
    let mut stopped_at_eos = false;
    while ids.len() < max_tokens {
        let next = sampler.draw(&top.values, &top.ids) as i64;
        if Some(next) == eos {
            stopped_at_eos = true;
            break;
        }
        ids.push(next);
        on_token(next)?;
        if ids.len() == max_tokens {
            break;
        }
        top = session.decode_top_k(&[next], reach)?;
    }
    Ok(Generation {
        ids,
        stopped_at_eos,
        prefill_seconds,
        decode_seconds: t1.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(temperature: f32, top_k: usize, top_p: f32) -> SamplingParams {
        SamplingParams { temperature, top_k, top_p, seed: 3 }
    }

    #[test]
    fn greedy_and_cuts() {
        let logits = [0.1, 2.0, 1.9, -1.0];
        assert_eq!(Sampler::new(params(0.0, 0, 1.0)).unwrap().sample(&logits).unwrap(), 1);
        let mut top1 = Sampler::new(params(1.0, 1, 1.0)).unwrap();
        assert!((0..50).all(|_| top1.sample(&logits).unwrap() == 1));
        let mut nucleus = Sampler::new(params(1.0, 0, 0.3)).unwrap();
        assert!((0..50).all(|_| nucleus.sample(&logits).unwrap() == 1));
        let mut two = Sampler::new(params(1.0, 2, 1.0)).unwrap();
        assert!((0..200).all(|_| matches!(two.sample(&logits).unwrap(), 1 | 2)));
    }

    #[test]
    fn same_seed_same_draws() {
        let logits: Vec<f32> = (0..50).map(|i| (i as f32 * 0.37).sin()).collect();
        let draw = || {
            let mut s = Sampler::new(params(0.9, 20, 0.95)).unwrap();
            (0..30).map(|_| s.sample(&logits).unwrap()).collect::<Vec<_>>()
        };
        assert_eq!(draw(), draw());
    }

    /// The draw's definition literally: the whole row sorted (NaN left out, ±0 equal, lower id first), cut to
    /// `top_k`, the softmax of `logit / temperature`, cut at `top_p`, one uniform draw over what is left.
    fn literal(p: &SamplingParams, rng: &mut SplitMix64, logits: &[f32]) -> usize {
        let mut order: Vec<usize> = (0..logits.len()).filter(|&i| !logits[i].is_nan()).collect();
        order.sort_by(|&a, &b| logits[b].partial_cmp(&logits[a]).unwrap().then(a.cmp(&b)));
        if p.temperature == 0.0 || order.is_empty() {
            return order.first().copied().unwrap_or(0);
        }
        if p.top_k > 0 {
            order.truncate(p.top_k);
        }
        let max = logits[order[0]] as f64;
        let w: Vec<f64> = order
            .iter()
            .map(|&i| ((logits[i] as f64 - max) / p.temperature as f64).exp())
            .collect();
        let total: f64 = w.iter().sum();
        let probs: Vec<f64> = w.iter().map(|x| x / total).collect();
        let mut acc = 0.0;
        let keep = probs
            .iter()
            .position(|&x| {
                acc += x;
                acc >= p.top_p as f64
            })
            .map_or(probs.len(), |j| j + 1);
        let u = rng.unit_f64() * probs[..keep].iter().sum::<f64>();
        let mut acc = 0.0;
        (0..keep)
            .find(|&j| {
                acc += probs[j];
                u < acc
            })
            .map_or(order[keep - 1], |j| order[j])
    }

    #[test]
    fn draws_follow_the_definition_from_the_reachable_logits() {
        let mut state = 11u64;
        let mut next = || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (state >> 33) as u32
        };
        for case in 0..60 {
            let n = 1 + (next() % 300) as usize;
            let row: Vec<f32> = (0..n)
                .map(|_| match next() % 40 {
                    0 => f32::NAN,
                    1 => 0.0,
                    2 => -0.0,
                    _ => (next() % 24) as f32 * 0.25 - 3.0,
                })
                .collect();
            let p = params(
                [0.0, 0.7, 1.3][case % 3],
                [0, 1, 5, 40][case % 4],
                [1.0, 0.9, 0.5][case % 3],
            );
            let mut s = Sampler::new(p.clone()).unwrap();
            let mut rng = SplitMix64::new(p.seed);
            let mut via_top_k = Sampler::new(p.clone()).unwrap();
            let top = TopK::of(&row, n, via_top_k.reach().unwrap_or(n)).unwrap();
            for _ in 0..5 {
                let want = literal(&p, &mut rng, &row);
                assert_eq!(s.sample(&row).unwrap(), want, "case {case} {p:?}");
                assert_eq!(
                    via_top_k.draw(&top.values, &top.ids),
                    want,
                    "case {case} from the top-k"
                );
            }
        }
    }

    #[test]
    fn bad_parameters_are_refused() {
        for (t, p) in [(-0.5, 1.0), (f32::NAN, 1.0), (1.0, 0.0), (1.0, 1.5)] {
            assert!(Sampler::new(params(t, 0, p)).is_err());
        }
    }
}
