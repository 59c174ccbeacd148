//! Element-wise and data-movement glue between the fused ops.
//!
//! * [`cpu::add`]: `y = a + b`;
//! * [`cpu::scaled_residual`]: `y[r, c] = w[c]·res[r, c] + f[r, c]` (the learned residual scale);
//! * [`cpu::mask_rows`]: `y[r, :] = x[r, :]·mask[r]` (padding positions zeroed);
//! * [`cpu::swap_axes_12`]: `[A, B, C, D] → [A, C, B, D]` (heads-last to heads-first and back);
//! * [`cpu::concat`]: two tensors joined along an axis, given as `outer` rows of `inner_a` and `inner_b` elements;
//! * [`cpu::place_rows`]: rows written into a buffer with room for more at a row offset (a cache append; on CUDA
//!   the offset is read on the device, so that a replayed graph appends where the step is).

pub mod cpu;
pub mod cuda;
#[cfg(test)]
mod tests;
