//! Runtime tensors: contiguous, row-major, host memory.

use super::dtype::DType;
use anyhow::{bail, Result};
use std::fmt;

/// Host storage of a tensor, typed.
#[derive(Clone, PartialEq)]
pub enum Storage {
    F32(Vec<f32>),
    I64(Vec<i64>),
}

/// A contiguous row-major tensor in host memory.
#[derive(Clone, PartialEq)]
pub struct Tensor {
    dims: Vec<usize>,
    storage: Storage,
}

impl Tensor {
    /// An f32 tensor; `data.len()` must equal the product of `dims`.
    pub fn f32(dims: Vec<usize>, data: Vec<f32>) -> Result<Tensor> {
        check_len(&dims, data.len())?;
        Ok(Tensor { dims, storage: Storage::F32(data) })
    }

    /// An i64 tensor; `data.len()` must equal the product of `dims`.
    pub fn i64(dims: Vec<usize>, data: Vec<i64>) -> Result<Tensor> {
        check_len(&dims, data.len())?;
        Ok(Tensor { dims, storage: Storage::I64(data) })
    }

    /// An f32 tensor of zeros.
    pub fn zeros_f32(dims: Vec<usize>) -> Tensor {
        let n = dims.iter().product();
        Tensor { dims, storage: Storage::F32(vec![0.0; n]) }
    }

    pub fn dtype(&self) -> DType {
        match self.storage {
            Storage::F32(_) => DType::F32,
            Storage::I64(_) => DType::I64,
        }
    }

    pub fn dims(&self) -> &[usize] {
        &self.dims
    }

    pub fn len(&self) -> usize {
        self.dims.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The f32 elements; an error names the actual dtype.
    pub fn as_f32(&self) -> Result<&[f32]> {
        match &self.storage {
            Storage::F32(v) => Ok(v),
            Storage::I64(_) => bail!("expected an f32 tensor, found i64{:?}", self.dims),
        }
    }

    /// The i64 elements; an error names the actual dtype.
    pub fn as_i64(&self) -> Result<&[i64]> {
        match &self.storage {
            Storage::I64(v) => Ok(v),
            Storage::F32(_) => bail!("expected an i64 tensor, found f32{:?}", self.dims),
        }
    }

    /// Consumes the tensor into its f32 elements.
    pub fn into_f32(self) -> Result<Vec<f32>> {
        match self.storage {
            Storage::F32(v) => Ok(v),
            Storage::I64(_) => bail!("expected an f32 tensor, found i64{:?}", self.dims),
        }
    }

    /// Same elements, new dims of equal element count.
    pub fn reshaped(mut self, dims: Vec<usize>) -> Result<Tensor> {
        check_len(&dims, self.len())?;
        self.dims = dims;
        Ok(self)
    }
}

fn check_len(dims: &[usize], len: usize) -> Result<()> {
    let n: usize = dims.iter().product();
    if n != len {
        bail!("tensor of shape {dims:?} needs {n} elements, got {len}");
    }
    Ok(())
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{:?}", self.dtype(), self.dims)
    }
}
