//! The compression pipeline of a checkpoint or a vector dataset, one file per stage:
//!
//! ```text
//! detect   what kind of input a file is (checkpoint, .lowbit, sequence file)
//! options  what the user asks for (Settings -> CompressOptions)
//! analyse  every option of every tensor, measured (coded, or the scalar grids' sizes estimated)
//! allocate one option per tensor for the target -> Plan (with the container manifest)
//! screen   the expensive codecs tried on a sample of rows first, measured in full unless dominated
//! settle   the chosen options whose sizes were estimated coded, allocated again until all are exact
//! search   (asked for) the allocator's choice improved by running the compressed model
//! write    the .lowbit of a plan, streamed
//! read     a .lowbit back to the original kind of file
//! inspect  what a file holds, from its header
//! model    the model's files stored beside its weights; a .lowbit's tensors for the runtime
//! shared   shared-lowrank's sibling sets (allocator items of several tensors)
//! ```
//!
//! No printing, no paths: bytes in (any [`crate::Source`]), bytes out (any `Write`). The report of
//! a plan is built by [`crate::report::build_report`]; the front door that strings the stages
//! together is [`crate::api`].

pub mod allocate;
pub mod analyse;
pub mod detect;
pub mod inspect;
pub mod model;
pub mod options;
pub mod read;
pub mod screen;
pub mod search;
pub mod settle;
pub mod shared;
pub mod write;

pub use crate::codec::vectors::VectorMeasure;
pub use allocate::{allocate, Plan};
pub use analyse::{
    analyse_on, analyse_tensor, analyse_tensor_on, Analysed, MeasuredOption, TensorAnalysis,
    VectorStats, MIN_LOSSY_PARAMETERS, SPECTRUM_LENGTH,
};
pub use detect::{input_kind, InputKind};
pub use inspect::{inspect, InspectedTensor, Inspection};
pub use options::{
    glob_match, method_names, parse_method, CompressOptions, Override, OverrideRule, Settings,
    Target,
};
pub use read::{decode_tensor, decompress, DecompressSummary};
pub use settle::settle;
pub use write::write_container;
