//! Sampling of the next token and the incremental decoding loop (prefill, then one `decode` per new token).
//!
//! A draw: with temperature 0, the argmax (first maximum). Otherwise the vocabulary sorted by logit (descending,
//! lower id first on ties), cut to the `top_k` best (0 = no cut), softmax of `logit / temperature` in f64, cut to
//! the shortest prefix whose probability reaches `top_p` (1 = no cut), then one uniform draw from [`SplitMix64`]
//! seeded with `seed`: the same seed, model and prompt give the same tokens.

use super::mqar::{argmax, SplitMix64};
use crate::exec::session::Session;
use crate::runner::Loaded;
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

    /// The next token id for one row of logits.
    pub fn sample(&mut self, logits: &[f32]) -> usize {
        let p = &self.params;
        if p.temperature == 0.0 || logits.len() <= 1 {
            return argmax(logits);
        }
        let mut order: Vec<usize> = (0..logits.len()).filter(|&i| !logits[i].is_nan()).collect();
        if order.is_empty() {
            return 0;
        }
        order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
        if p.top_k > 0 {
            order.truncate(p.top_k);
        }
        let max = logits[order[0]] as f64;
        let t = p.temperature as f64;
        let mut probs: Vec<f64> =
            order.iter().map(|&i| ((logits[i] as f64 - max) / t).exp()).collect();
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
            order.truncate(keep);
        }
        let total: f64 = probs.iter().sum();
        let u = self.rng.unit_f64() * total;
        let mut acc = 0.0;
        for (k, &x) in probs.iter().enumerate() {
            acc += x;
            if u < acc {
                return order[k];
            }
        }
        order[order.len() - 1]
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
    loaded: &Loaded,
    prompt: &[i64],
    max_tokens: usize,
    sampler: &mut Sampler,
    eos: Option<i64>,
    mut on_token: impl FnMut(i64) -> Result<()>,
) -> Result<Generation> {
    ensure!(!prompt.is_empty(), "the prompt has no tokens");
    let v = loaded.model.config.vocab_size;
    let mut session = Session::new(&loaded.model, &loaded.exec);
    session.reserve(prompt.len() + max_tokens);
    let t0 = Instant::now();
    let step = session.prefill(&vec![prompt.to_vec()], None, &[])?;
    let prefill_seconds = t0.elapsed().as_secs_f64();
    let mut logits = step.logits.into_f32()?;
    let mut last = logits.len() / v - 1;
    let t1 = Instant::now();
    let mut ids = Vec::new();
    let mut stopped_at_eos = false;
    while ids.len() < max_tokens {
        let next = sampler.sample(&logits[last * v..(last + 1) * v]) as i64;
        if Some(next) == eos {
            stopped_at_eos = true;
            break;
        }
        ids.push(next);
        on_token(next)?;
        if ids.len() == max_tokens {
            break;
        }
        logits = session.decode(&[next], &[])?.logits.into_f32()?;
        last = 0;
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
        assert_eq!(Sampler::new(params(0.0, 0, 1.0)).unwrap().sample(&logits), 1);
        let mut top1 = Sampler::new(params(1.0, 1, 1.0)).unwrap();
        assert!((0..50).all(|_| top1.sample(&logits) == 1));
        let mut nucleus = Sampler::new(params(1.0, 0, 0.3)).unwrap();
        assert!((0..50).all(|_| nucleus.sample(&logits) == 1));
        let mut two = Sampler::new(params(1.0, 2, 1.0)).unwrap();
        assert!((0..200).all(|_| matches!(two.sample(&logits), 1 | 2)));
    }

    #[test]
    fn same_seed_same_draws() {
        let logits: Vec<f32> = (0..50).map(|i| (i as f32 * 0.37).sin()).collect();
        let draw = || {
            let mut s = Sampler::new(params(0.9, 20, 0.95)).unwrap();
            (0..30).map(|_| s.sample(&logits)).collect::<Vec<_>>()
        };
        assert_eq!(draw(), draw());
    }

    #[test]
    fn bad_parameters_are_refused() {
        for (t, p) in [(-0.5, 1.0), (f32::NAN, 1.0), (1.0, 0.0), (1.0, 1.5)] {
            assert!(Sampler::new(params(t, 0, p)).is_err());
        }
    }
}
