//! Perplexity of a token sequence, with the windowing of `tools/train_lm.py`: consecutive non-overlapping
//! windows of `context` ids (the last may be shorter; a window of one id is skipped), each run from an empty
//! state; a window's negative log-likelihood sums `−log p(w[t+1] | w[..=t])` for `t = 0..len−2`; perplexity is
//! `exp(Σ NLL / Σ (len − 1))`.

use super::progress_bar;
use crate::exec::session::Session;
use crate::runner::Loaded;
use anyhow::{ensure, Result};
use serde::Serialize;

/// One window's contribution.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Window {
    /// Index of the window's first token in the whole sequence.
    pub start: usize,
    /// Tokens in the window.
    pub tokens: usize,
    /// Summed negative log-likelihood (nats) of its `tokens − 1` predictions.
    pub nll: f64,
}

/// The result of a perplexity run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PplReport {
    /// Window length.
    pub context: usize,
    /// Tokens in the text.
    pub tokens: usize,
    /// Scored predictions (Σ window length − 1).
    pub predicted: usize,
    /// Summed negative log-likelihood (nats).
    pub nll: f64,
    /// `exp(nll / predicted)`.
    pub ppl: f64,
    /// Every scored window.
    pub windows: Vec<Window>,
    /// Wall time.
    pub seconds: f64,
}

/// `(start, ids)` of every scored window.
pub fn windows(ids: &[i64], context: usize) -> Vec<(usize, &[i64])> {
    ids.chunks(context.max(1))
        .enumerate()
        .map(|(i, w)| (i * context, w))
        .filter(|(_, w)| w.len() >= 2)
        .collect()
}

/// `−Σ log softmax(row)[target]` over the rows `0..len−1` of `[len, V]` logits, in f64.
pub fn window_nll(logits: &[f32], vocab: usize, ids: &[i64]) -> f64 {
    let mut nll = 0.0;
    for (t, &next) in ids.iter().enumerate().skip(1) {
        let row = &logits[(t - 1) * vocab..t * vocab];
        let max = row.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x)) as f64;
        let sum: f64 = row.iter().map(|&x| (x as f64 - max).exp()).sum();
        nll += max + sum.ln() - row[next as usize] as f64;
    }
    nll
}

/// Perplexity of `ids` under a loaded checkpoint; `limit` stops after that many windows.
pub fn perplexity(
    loaded: &Loaded,
    ids: &[i64],
    context: usize,
    limit: Option<usize>,
    show: bool,
) -> Result<PplReport> {
    ensure!(context >= 2, "the context must be at least 2 tokens, got {context}");
    let mut wins = windows(ids, context);
    if let Some(n) = limit {
        wins.truncate(n);
    }
    ensure!(!wins.is_empty(), "the text has fewer than 2 tokens: nothing to predict");
    let t0 = std::time::Instant::now();
    let v = loaded.model.config.vocab_size;
    let bar = progress_bar(wins.iter().map(|(_, w)| w.len() as u64).sum(), "tokens", show);
    let mut out = Vec::with_capacity(wins.len());
    for (start, w) in wins {
        let mut session = Session::new(&loaded.model, &loaded.exec);
        let step = session.prefill(&vec![w.to_vec()], None, &[])?;
        let nll = window_nll(step.logits.as_f32()?, v, w);
        out.push(Window { start, tokens: w.len(), nll });
        bar.inc(w.len() as u64);
    }
    bar.finish_and_clear();
    let nll: f64 = out.iter().map(|w| w.nll).sum();
    let predicted: usize = out.iter().map(|w| w.tokens - 1).sum();
    Ok(PplReport {
        context,
        tokens: ids.len(),
        predicted,
        nll,
        ppl: (nll / predicted as f64).exp(),
        windows: out,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_skip_single_tokens() {
        let ids: Vec<i64> = (0..9).collect();
        let w = windows(&ids, 4);
        assert_eq!(w.len(), 2);
        assert_eq!((w[0].0, w[1].0), (0, 4));
        assert_eq!(windows(&ids, 3).len(), 3);
    }

    #[test]
    fn uniform_logits_give_the_vocabulary_size() {
        let nll = window_nll(&[0.0; 12], 4, &[1, 2, 3, 0]);
        assert!((nll / 3.0 - 4f64.ln()).abs() < 1e-12);
    }
}
