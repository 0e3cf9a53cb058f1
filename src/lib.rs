//! lowbit: compress model checkpoints and datasets on the user's own machine.
//!
//! The library holds all logic; the CLI (`main.rs`) and the browser bindings only convert types.

pub mod codec;
pub mod dtype;
pub mod entropy;
pub mod error;
pub mod linalg;
pub mod rng;

pub use error::{Error, Result};
