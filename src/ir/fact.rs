//! What is known about a value at compile time: its dtype and symbolic shape.

use super::dim::{Bindings, Dim};
use super::dtype::DType;
use anyhow::Result;
use smallvec::SmallVec;
use std::fmt;

/// A symbolic shape.
pub type Shape = SmallVec<[Dim; 4]>;

/// Dtype and shape of a value.
#[derive(Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Fact {
    pub dtype: DType,
    pub shape: Shape,
}

impl Fact {
    pub fn new(dtype: DType, shape: impl IntoIterator<Item = Dim>) -> Fact {
        Fact { dtype, shape: shape.into_iter().collect() }
    }

    /// A fact with only constant dims.
    pub fn konst(dtype: DType, dims: &[usize]) -> Fact {
        Fact::new(dtype, dims.iter().map(|&d| Dim::from(d)))
    }

    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    /// Concrete dims under `b`.
    pub fn eval(&self, b: &Bindings) -> Result<Vec<usize>> {
        self.shape.iter().map(|d| d.eval(b)).collect()
    }
}

impl fmt::Display for Fact {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}[", self.dtype)?;
        for (i, d) in self.shape.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{d}")?;
        }
        f.write_str("]")
    }
}

impl fmt::Debug for Fact {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}
