#![doc = include_str!("../README.md")]
//!
//! ## The crate's shape
//! The library holds all logic; the CLI (`main.rs`) and the browser bindings (`wasm.rs`) only
//! convert types. [`api`] is the front door ([`compress`], [`decompress`], [`plan`], [`inspect`],
//! [`api::compress_input`] for any input); [`pipeline`] holds the stages; [`codec`] the methods;
//! [`backend`] the kernels (CPU and WGSL); [`model`] the runtime that runs a model to judge it;
//! [`sequence`] the lossless sequence-file pipeline;
//! [`report`] the report. docs/ARCHITECTURE.md draws the module map and the rule that keeps it
//! acyclic.

pub mod alloc;
pub mod api;
pub mod backend;
pub mod checkpoint;
pub mod checksum;
pub mod codec;
pub mod container;
pub mod demo;
pub mod distortion;
pub mod dtype;
pub mod entropy;
pub mod error;
pub mod io;
pub mod kmeans;
pub mod linalg;
pub mod model;
pub mod parallel;
pub mod pipeline;
pub mod progress;
pub mod report;
pub mod rng;
pub mod rotation;
pub mod sequence;
pub mod shaders;
pub mod source;
pub mod svg;
pub mod teach;
#[cfg(target_arch = "wasm32")]
pub mod wasm;

pub use api::{compress, plan};
pub use backend::{Backend, BackendChoice};
pub use error::{Error, Result};
pub use pipeline::{
    decompress, inspect, CompressOptions, DecompressSummary, Inspection, Override, OverrideRule,
    Settings, Target,
};
pub use progress::{NoProgress, Progress};
pub use report::Report;
pub use source::Source;
