//! Checkpoints: the normalised config, loading and variant detection, and the graph builder.

pub mod build;
pub mod checkpoint;
pub mod config;
pub mod detect;
