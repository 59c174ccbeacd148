//! ONNX export with the `ai.cheems` custom ops (see `SCHEMA.md` in this folder, the contract with every reader),
//! and running exported files in tract.
//!
//! [`export::write`] lowers the export form of a model (`BuildOptions { stateless: true }`) to an ONNX file:
//! standard ops for the dense blocks, one custom node per Wonderful Matrices op (`SsdScan`, `DynamicMaskValues`,
//! `MaskedAttention`, `PkTopK`, `RouterTopK`, `ExpertMix`, `InnerValues`) with a model-local function body made
//! of standard ops so that stock onnxruntime runs it, or (`inline`) the bodies written in place of the nodes.

pub mod custom;
pub mod export;
pub mod pb;
pub mod tract;

pub use export::{write, ExportOptions, Summary, DEFAULT_OPSET, OPSETS};
pub use pb::FloatType;
