//! cheems: a compiler, ONNX exporter and native executor for the Wonderful Matrices language models (Cheems and
//! Doge). A checkpoint is read into a verified graph IR ([`ir`]) by [`model`], and run by [`exec`].

pub mod artifact;
pub mod cli;
pub mod eval;
pub mod exec;
pub mod ir;
pub mod model;
pub mod onnx;
pub mod passes;
pub mod runner;
