//! Elementwise activations, the gated product of the MLP, and softplus.
//!
//! * `Silu(x) = x / (1 + e^{-x})`
//! * `Relu(x) = max(x, 0)` (NaN propagates)
//! * `Gelu(x) = 0.5·x·(1 + erf(x/√2))`, with `erf` evaluated in `f64` (see [`erf`])
//! * `GeluTanh(x) = 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`
//! * [`act_mul`]: `y = act(gate) ⊙ up`
//! * [`softplus`]: `z` if `z > 20`, else `ln(1 + e^z)` (PyTorch's threshold)
//!
//! Silu, Relu and GeluTanh are computed in `f32` as PyTorch's CPU kernels write them; Gelu is
//! computed in `f64` and rounded once.

pub mod cpu;
pub mod cuda;
#[cfg(test)]
mod tests;

pub use cpu::{act_mul, erf, softplus};

/// An elementwise activation function (the `hidden_act` of a model config).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Act {
    /// `x·sigmoid(x)` ("silu").
    Silu,
    /// `max(x, 0)` ("relu").
    Relu,
    /// Exact erf GELU ("gelu").
    Gelu,
    /// Tanh approximation of GELU ("gelu_pytorch_tanh").
    GeluTanh,
}
