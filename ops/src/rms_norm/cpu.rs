//! CPU implementation of RMS normalisation.

use rayon::prelude::*;

use super::RmsNormParams;
use crate::{min_items, Result};

/// `y = w ⊙ (x / √(mean(x²) + eps))` per row.
pub fn rms_norm(p: &RmsNormParams, x: &[f32], w: &[f32]) -> Result<Vec<f32>> {
    p.validate(x.len(), w.len())?;
    let mut y = vec![0.0; x.len()];
    if p.cols == 0 {
        return Ok(y);
    }
    y.par_chunks_mut(p.cols).zip(x.par_chunks(p.cols)).with_min_len(min_items(p.cols)).for_each(
        |(y, x)| {
            let squares: f64 = x.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
            let mean = (squares / p.cols as f64) as f32;
            let scale = 1.0 / (mean + p.eps).sqrt();
            for ((y, &x), &w) in y.iter_mut().zip(x).zip(w) {
                *y = w * (x * scale);
            }
        },
    );
    Ok(y)
}
