//! The graph IR: dtypes, symbolic dims, facts, ops, the graph and its patches, runtime tensors.

pub mod dim;
pub mod dtype;
pub mod dump;
pub mod fact;
pub mod graph;
pub mod op;
pub mod patch;
pub mod tensor;

pub use dim::{Bindings, Dim, Sym};
pub use dtype::DType;
pub use fact::Fact;
pub use graph::{Graph, Node, NodeId, ValueId};
pub use op::{Op, OpKind};
pub use patch::{Patch, PatchValue};
pub use tensor::Tensor;
