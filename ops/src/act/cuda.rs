//! CUDA launcher of [`super::act_mul`].

use super::Act;
use crate::cuda::{launch_error, Elem, Gpu, Source};
use crate::{KernelError, Result};
use cudarc::driver::{CudaSlice, LaunchConfig, PushKernelArg};

/// The kernel source.
pub const SOURCE: Source = Source { file: "act.cu", code: include_str!("act.cu") };

/// The activation's number in the kernels (`act.cu`, `expert_mix.cu`).
pub(crate) fn code(act: Act) -> i32 {
    match act {
        Act::Silu => 0,
        Act::Relu => 1,
        Act::Gelu => 2,
        Act::GeluTanh => 3,
    }
}

/// `y = act(gate) ⊙ up` on the device; for bf16 the activation is rounded to bf16 before the product, as PyTorch
/// computes `act(gate) * up` in bf16.
pub fn act_mul<T: Elem>(
    gpu: &Gpu,
    act: Act,
    gate: &CudaSlice<T>,
    up: &CudaSlice<T>,
    y: &mut CudaSlice<T>,
) -> Result<()> {
    for (name, len) in [("up", up.len()), ("y", y.len())] {
        if len != gate.len() {
            return Err(KernelError::BadParams(format!(
                "`{name}` has {len} elements, expected {} (the length of `gate`)",
                gate.len()
            )));
        }
    }
    if gate.is_empty() {
        return Ok(());
    }
    let n = i64::try_from(gate.len())
        .map_err(|_| KernelError::BadParams(format!("{} elements exceed i64", gate.len())))?;
    let blocks = gate.len().div_ceil(4 * 256).min(1 << 16) as u32;
    let act = code(act);
    let name = format!("act_mul_{}", T::NAME);
    let func = gpu.function(&SOURCE, &name)?;
    let cfg =
        LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
    let mut launch = gpu.stream().launch_builder(&func);
    launch.arg(gate).arg(up).arg(y).arg(&n).arg(&act);
    // SAFETY: the argument list matches `act_mul_<T>` in act.cu, gate, up and y all hold n elements, and the kernel
    // strides over exactly n elements.
    unsafe { launch.launch(cfg) }.map_err(|e| launch_error(&name, e))?;
    Ok(())
}
