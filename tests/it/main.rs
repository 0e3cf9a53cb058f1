//! The integration tests, as one test binary (one link instead of one per file): each module is a
//! theme. They run the library through its public API and the built CLI (`CARGO_BIN_EXE_lowbit`).
//!
//! - `architecture`: the module graph has no cycles, and no function grows past its limit;
//! - `backend`, `shaders`: every kernel on the GPU (an emulated adapter in CI) against the CPU;
//!   `runtime_gpu`: the model runtime's kernels and whole forward passes on the GPU against the CPU;
//! - `cli`, `methods_report`, `shared_lowrank`, `vectors`, `sequences`: end to end, by feature;
//! - `golden`: pinned `.lowbit` bytes;
//! - `model`: the model runtime against an independent float64 reference (tests/fixtures/models);
//!   `try_it`: the page's Try-it helpers on the same models;
//! - `container_hostile`, `mutations`, `readers_hostile`: damaged and lying inputs give named
//!   errors (or a well-formed file), never a panic or an allocation past the stated bounds;
//! - `pytorch`: a checkpoint written by torch, end to end, and the formats lowbit names and refuses;
//!   `gguf`: a GGUF written by the `gguf` package, end to end, every ggml type lowbit reads.

mod architecture;
mod backend;
mod calibration;
mod cli;
mod common;
mod container_hostile;
mod gguf;
mod golden;
mod methods_report;
mod model;
mod mutations;
mod pytorch;
mod readers_hostile;
mod runtime_gpu;
mod sequences;
mod shaders;
mod shared_lowrank;
mod try_it;
mod vectors;
