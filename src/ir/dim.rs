//! Symbolic dimensions: integer polynomials over named symbols (`B`, `S`, `P`) in canonical form, so that
//! algebraically equal sizes are structurally equal (`B*S + S == S*(B+1)`).

use anyhow::{bail, Result};
use std::collections::BTreeMap;
use std::fmt;
use std::ops::{Add, Mul, Sub};

/// A named symbol. Names are short upper-case letters taken from the model (`B` batch, `S` new tokens,
/// `P` cached tokens).
#[derive(
    Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct Sym(pub String);

impl Sym {
    pub fn new(name: &str) -> Sym {
        Sym(name.to_string())
    }
}

/// Monomial (sorted symbols, repeated for powers) -> coefficient; never holds a zero coefficient. Serialised as
/// a list of `[coefficient, [symbols]]` terms; reading one back restores the canonical form.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(into = "Vec<(i64, Vec<Sym>)>", from = "Vec<(i64, Vec<Sym>)>")]
pub struct Dim(BTreeMap<Vec<Sym>, i64>);

/// Values of symbols at run time.
pub type Bindings = BTreeMap<Sym, i64>;

impl Dim {
    /// A constant size.
    pub fn konst(n: i64) -> Dim {
        let mut m = BTreeMap::new();
        if n != 0 {
            m.insert(Vec::new(), n);
        }
        Dim(m)
    }

    /// A symbol of size one power.
    pub fn sym(name: &str) -> Dim {
        Dim(BTreeMap::from([(vec![Sym::new(name)], 1)]))
    }

    /// The constant value, if the dimension has no symbol.
    pub fn as_konst(&self) -> Option<i64> {
        match self.0.len() {
            0 => Some(0),
            1 => self.0.get(&Vec::new()).copied(),
            _ => None,
        }
    }

    /// Symbols that occur in the dimension, sorted.
    pub fn symbols(&self) -> Vec<Sym> {
        let mut s: Vec<Sym> = self.0.keys().flatten().cloned().collect();
        s.sort();
        s.dedup();
        s
    }

    /// Evaluates with every symbol bound; an unbound symbol or a negative result is an error.
    pub fn eval(&self, b: &Bindings) -> Result<usize> {
        let mut total: i64 = 0;
        for (mono, coef) in &self.0 {
            let mut term = *coef;
            for s in mono {
                let Some(v) = b.get(s) else { bail!("symbol `{}` of `{self}` is not bound", s.0) };
                term *= v;
            }
            total += term;
        }
        usize::try_from(total).map_err(|_| anyhow::anyhow!("`{self}` evaluates to {total} < 0"))
    }

    /// Solves `self = value` for the one symbol of `self` not bound in `b`, when it occurs linearly; returns
    /// `None` when there is not exactly one such symbol or it occurs in a product.
    pub fn solve(&self, value: i64, b: &Bindings) -> Option<(Sym, i64)> {
        let free: Vec<Sym> = self.symbols().into_iter().filter(|s| !b.contains_key(s)).collect();
        let [x] = free.as_slice() else { return None };
        let mut rest: i64 = 0;
        let mut coef: i64 = 0;
        for (mono, c) in &self.0 {
            match mono.iter().filter(|s| *s == x).count() {
                0 => rest += c * mono.iter().map(|s| b[s]).product::<i64>(),
                1 if mono.len() == 1 => coef = *c,
                _ => return None,
            }
        }
        let num = value - rest;
        (coef != 0 && num % coef == 0).then(|| (x.clone(), num / coef))
    }

    fn insert(&mut self, mono: Vec<Sym>, coef: i64) {
        let e = self.0.entry(mono.clone()).or_insert(0);
        *e += coef;
        if *e == 0 {
            self.0.remove(&mono);
        }
    }
}

impl From<Dim> for Vec<(i64, Vec<Sym>)> {
    fn from(d: Dim) -> Self {
        d.0.into_iter().map(|(m, c)| (c, m)).collect()
    }
}

impl From<Vec<(i64, Vec<Sym>)>> for Dim {
    fn from(terms: Vec<(i64, Vec<Sym>)>) -> Dim {
        let mut d = Dim::konst(0);
        for (c, mut m) in terms {
            m.sort();
            d.insert(m, c);
        }
        d
    }
}

impl From<usize> for Dim {
    fn from(n: usize) -> Dim {
        Dim::konst(n as i64)
    }
}

impl Add for &Dim {
    type Output = Dim;
    fn add(self, rhs: &Dim) -> Dim {
        let mut out = self.clone();
        for (m, c) in &rhs.0 {
            out.insert(m.clone(), *c);
        }
        out
    }
}

impl Sub for &Dim {
    type Output = Dim;
    fn sub(self, rhs: &Dim) -> Dim {
        let mut out = self.clone();
        for (m, c) in &rhs.0 {
            out.insert(m.clone(), -c);
        }
        out
    }
}

impl Mul for &Dim {
    type Output = Dim;
    fn mul(self, rhs: &Dim) -> Dim {
        let mut out = Dim::konst(0);
        for (ma, ca) in &self.0 {
            for (mb, cb) in &rhs.0 {
                let mut m: Vec<Sym> = ma.iter().chain(mb).cloned().collect();
                m.sort();
                out.insert(m, ca * cb);
            }
        }
        out
    }
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("0");
        }
        // Constant term last, higher degrees after lower ones: `P+S`, `S+B*S`, `S+1`.
        let mut terms: Vec<(&Vec<Sym>, &i64)> =
            self.0.iter().filter(|(m, _)| !m.is_empty()).collect();
        terms.sort_by(|a, b| a.0.len().cmp(&b.0.len()).then(a.0.cmp(b.0)));
        let konst = self.0.get(&Vec::new());
        let mut first = true;
        for (mono, coef) in terms {
            let sign = if *coef < 0 {
                "-"
            } else if first {
                ""
            } else {
                "+"
            };
            let mag = coef.abs();
            let body = mono.iter().map(|s| s.0.as_str()).collect::<Vec<_>>().join("*");
            if mag == 1 {
                write!(f, "{sign}{body}")?;
            } else {
                write!(f, "{sign}{mag}*{body}")?;
            }
            first = false;
        }
        if let Some(c) = konst {
            if first {
                write!(f, "{c}")?;
            } else if *c < 0 {
                write!(f, "-{}", c.abs())?;
            } else {
                write!(f, "+{c}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_form_makes_algebraic_equals_structural() {
        let (b, s) = (Dim::sym("B"), Dim::sym("S"));
        let lhs = &(&b * &s) + &s;
        let rhs = &s * &(&b + &Dim::konst(1));
        assert_eq!(lhs, rhs);
        assert_eq!(lhs.to_string(), "S+B*S");
        let bind = Bindings::from([(Sym::new("B"), 4), (Sym::new("S"), 3)]);
        assert_eq!(lhs.eval(&bind).unwrap(), 15);
    }

    #[test]
    fn constants_and_cancellation() {
        let p = Dim::sym("P");
        let s = Dim::sym("S");
        let t = &p + &s;
        assert_eq!((&t - &p), s);
        assert_eq!((&t - &t).as_konst(), Some(0));
        assert_eq!(Dim::from(7usize).as_konst(), Some(7));
        assert_eq!(t.to_string(), "P+S");
        assert_eq!((&s + &Dim::konst(-2)).to_string(), "S-2");
        assert!(t.eval(&Bindings::new()).unwrap_err().to_string().contains("`P`"));
        assert_eq!(t.symbols(), vec![Sym::new("P"), Sym::new("S")]);
        let b = Bindings::from([(Sym::new("S"), 3)]);
        assert_eq!(t.solve(10, &b), Some((Sym::new("P"), 7)));
        assert_eq!(t.solve(10, &Bindings::new()), None);
        assert_eq!((&p * &s).solve(6, &b), None);
    }
}
