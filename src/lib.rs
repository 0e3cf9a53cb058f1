//! lowbit: compress model checkpoints and datasets on the user's own machine.
//!
//! The library holds all logic; the CLI (`main.rs`) and the browser bindings only convert types.
//! Entry points: [`compress`], [`decompress`], [`plan`], [`inspect`], all working on bytes in memory
//! (an mmap natively) and writing to any `std::io::Write`.

pub mod alloc;
pub mod backend;
pub mod checkpoint;
pub mod codec;
pub mod compress;
pub mod container;
pub mod dataset;
pub mod demo;
pub mod dtype;
pub mod entropy;
pub mod error;
pub mod io;
pub mod kmeans;
pub mod linalg;
pub mod progress;
pub mod report;
pub mod rng;
pub mod rotation;
pub mod shaders;
pub mod shared_basis;
pub mod source;
pub mod svg;
pub mod teach;
#[cfg(target_arch = "wasm32")]
pub mod wasm;

pub use backend::{Backend, BackendChoice};
pub use compress::{
    compress, decompress, inspect, plan, CompressOptions, DecompressSummary, Inspection, Override,
    OverrideRule, Target,
};
pub use error::{Error, Result};
pub use progress::{NoProgress, Progress};
pub use report::Report;
pub use source::Source;
