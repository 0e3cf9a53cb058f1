//! Dataset compressors: files that are not checkpoints but collections of records.

pub mod vectors;
