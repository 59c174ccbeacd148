//! Kernels of `cheems`: the numerical building blocks of the Cheems and Doge language models.
//!
//! Each op is a module with a `Params` struct (plain sizes and attributes), a `validate` method
//! that checks every buffer length against it, and a CPU implementation in `cpu.rs`. All buffers
//! are contiguous row-major `f32` slices and indices are `i64`. The CPU kernels are what the CPU
//! executor, the oracle of the project, runs: they are exact to `f32` rounding and use rayon where
//! the work splits. Each op's tests compare it with a scalar `f64` reference written from the
//! formula in the module documentation.

#![warn(missing_docs)]

/// The CUDA bindings the launchers take their buffers from.
pub use cudarc;

pub mod act;
pub mod cuda;
pub mod dynamic_mask;
pub mod elementwise;
pub mod embedding;
pub mod expert_mix;
pub mod inner_values;
pub mod logits_topk;
pub mod masked_attention;
pub mod matmul;
pub mod norm_rope;
pub mod pk_topk;
pub mod rms_norm;
pub mod rope;
pub mod router_topk;
mod select;
pub mod ssd_scan;

#[cfg(test)]
pub(crate) mod testutil;

/// Errors returned by the kernels.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// A size, a buffer length or an index does not agree with the op's parameters.
    #[error("bad kernel parameters: {0}")]
    BadParams(String),
    /// NVRTC rejected a kernel source; `log` is the compiler's log as text.
    #[error("compiling {file}:\n{log}")]
    Compile {
        /// The kernel source file.
        file: String,
        /// NVRTC's log.
        log: String,
    },
    /// A CUDA driver, NVRTC or cuBLAS call failed.
    #[error("CUDA: {0}")]
    Driver(String),
    /// A CUDA library or device is missing; the message says what was looked for and where.
    #[error("{0}")]
    Unavailable(String),
}

/// Result of a kernel call.
pub type Result<T> = std::result::Result<T, KernelError>;

/// Work (roughly, multiply-adds) below which a rayon task is not worth its overhead.
const PAR_GRAIN: usize = 1 << 15;

/// Minimum number of items per rayon task when each item costs `work_per_item`.
pub(crate) fn min_items(work_per_item: usize) -> usize {
    (PAR_GRAIN / work_per_item.max(1)).max(1)
}

/// Checks that buffer `name` holds exactly the product of the named `dims`.
pub(crate) fn check_len(name: &str, len: usize, dims: &[(&str, usize)]) -> Result<()> {
    let want = dims.iter().try_fold(1usize, |acc, &(_, d)| acc.checked_mul(d));
    if want == Some(len) {
        return Ok(());
    }
    let shape = dims.iter().map(|(n, d)| format!("{n} {d}")).collect::<Vec<_>>().join(" × ");
    Err(KernelError::BadParams(match want {
        Some(want) => format!("`{name}` has {len} elements, expected {want} ({shape})"),
        None => format!("`{name}`: the size {shape} overflows usize"),
    }))
}

/// `Σ a[i]·b[i]` accumulated in `f64` (eight interleaved partial sums, which vectorise), rounded
/// once to `f32`.
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut lanes = [0.0f64; 8];
    for (a, b) in a.chunks_exact(8).zip(b.chunks_exact(8)) {
        for ((lane, &x), &y) in lanes.iter_mut().zip(a).zip(b) {
            *lane += f64::from(x) * f64::from(y);
        }
    }
    let tail = a.len() - a.len() % 8;
    let rest: f64 =
        a[tail..].iter().zip(&b[tail..]).map(|(&x, &y)| f64::from(x) * f64::from(y)).sum();
    (lanes.iter().sum::<f64>() + rest) as f32
}
