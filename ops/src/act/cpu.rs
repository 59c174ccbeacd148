//! CPU implementation of the activations.

use rayon::prelude::*;

use super::Act;
use crate::{min_items, KernelError, Result};

/// `√(2/π)`.
const SQRT_2_OVER_PI: f32 = 0.797_884_6;

impl Act {
    /// The activation of one value.
    pub fn apply(self, x: f32) -> f32 {
        match self {
            Act::Silu => x / (1.0 + (-x).exp()),
            Act::Relu => {
                if x < 0.0 {
                    0.0
                } else {
                    x
                }
            }
            Act::Gelu => {
                let x = f64::from(x);
                (0.5 * x * erfc(-x * std::f64::consts::FRAC_1_SQRT_2)) as f32
            }
            Act::GeluTanh => {
                let inner = SQRT_2_OVER_PI * (x + 0.044715 * (x * x * x));
                0.5 * x * (1.0 + inner.tanh())
            }
        }
    }
}

/// `y[i] = act(gate[i])·up[i]`.
pub fn act_mul(act: Act, gate: &[f32], up: &[f32]) -> Result<Vec<f32>> {
    if gate.len() != up.len() {
        return Err(KernelError::BadParams(format!(
            "`up` has {} elements, expected {} (the length of `gate`)",
            up.len(),
            gate.len()
        )));
    }
    Ok(gate
        .par_iter()
        .zip(up)
        .with_min_len(min_items(8))
        .map(|(&g, &u)| act.apply(g) * u)
        .collect())
}

/// `softplus(z) = ln(1 + e^z)`, or `z` itself when `z > 20`.
pub fn softplus(z: f32) -> f32 {
    if z > 20.0 {
        z
    } else {
        z.exp().ln_1p()
    }
}

/// Below this `|x|` the Taylor series of `erf` is used, above it the continued fraction of `erfc`.
const SERIES_LIMIT: f64 = 2.0;

/// The error function, to about 1e-14 relative accuracy.
///
/// `|x| < 2`: the Maclaurin series `2/√π · Σ_n (-1)^n x^{2n+1} / (n!·(2n+1))`;
/// otherwise `1 − erfc(|x|)` with the sign of `x`, `erfc` from its Laplace continued fraction.
pub fn erf(x: f64) -> f64 {
    if x.is_nan() {
        x
    } else if x.abs() < SERIES_LIMIT {
        erf_series(x)
    } else {
        (1.0 - erfc_fraction(x.abs())).copysign(x)
    }
}

/// `erfc(x) = 1 − erf(x)`, accurate also where it is tiny (`x ≫ 1`).
pub(crate) fn erfc(x: f64) -> f64 {
    if x >= SERIES_LIMIT {
        erfc_fraction(x)
    } else if x <= -SERIES_LIMIT {
        2.0 - erfc_fraction(-x)
    } else {
        1.0 - erf_series(x)
    }
}

fn erf_series(x: f64) -> f64 {
    let x2 = x * x;
    let (mut power, mut sum) = (x, x);
    for n in 1..100 {
        power *= -x2 / f64::from(n);
        let term = power / f64::from(2 * n + 1);
        sum += term;
        if term.abs() <= 1e-17 * sum.abs() {
            break;
        }
    }
    sum * std::f64::consts::FRAC_2_SQRT_PI
}

/// `erfc(x) = e^{-x²}/√π · 1/(x + (1/2)/(x + 1/(x + (3/2)/(x + …))))` for `x ≥ 2`.
fn erfc_fraction(x: f64) -> f64 {
    let mut f = x;
    for k in (1..=60).rev() {
        f = x + f64::from(k) / 2.0 / f;
    }
    (-x * x).exp() * std::f64::consts::FRAC_2_SQRT_PI / 2.0 / f
}
