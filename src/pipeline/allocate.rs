//! Allocation: one measured option per tensor (or per sibling set of shared-lowrank) so that the
//! whole file meets the target with the least total distortion, and the container manifest that
//! choice gives.

use crate::alloc::{self, OptionPoint};
use crate::backend::BackendSummary;
use crate::checkpoint::Checkpoint;
use crate::codec::CodecParams;
use crate::container::{self, Manifest, TensorRecord};
use crate::error::{Error, Result};

use super::analyse::{Analysed, TensorAnalysis};
use super::options::{CompressOptions, Target};

/// The allocator's decision for a whole checkpoint, with everything measured on the way.
#[derive(Clone, Debug)]
pub struct Plan {
    pub checkpoint: Checkpoint,
    pub analyses: Vec<TensorAnalysis>,
    /// Index into each tensor's candidates.
    pub choice: Vec<usize>,
    pub manifest: Manifest,
    pub header_len: u64,
    /// Where the kernels ran (and whether the GPU was given up).
    pub backend: BackendSummary,
    pub output_bytes: u64,
    /// What the search after the allocation did, if one ran (`pipeline::search`).
    pub search: Option<super::search::SearchSummary>,
}

impl Plan {
    /// The plan with another choice of options (a plan without sibling sets, before its model
    /// files are attached): its manifest and sizes again.
    pub(crate) fn rechoose(&mut self, choice: Vec<usize>) -> Result<()> {
        if !self.manifest.groups.is_empty() || !self.manifest.files.is_empty() {
            return Err(Error::invalid(
                "internal error: a plan with sibling sets or model files was chosen again",
            ));
        }
        self.manifest = manifest_for(&self.checkpoint, &self.analyses, &choice);
        (self.header_len, self.output_bytes) = output_size(&self.manifest)?;
        self.choice = choice;
        Ok(())
    }
}

pub(crate) fn option_points(
    ckpt: &Checkpoint,
    analyses: &[TensorAnalysis],
) -> Vec<Vec<OptionPoint>> {
    ckpt.tensors
        .iter()
        .zip(analyses)
        .map(|(t, a)| {
            a.candidates
                .iter()
                .map(|c| OptionPoint {
                    bytes: container::section_len(t.numel(), c.coded_bytes),
                    distortion: c.distortion.value(),
                })
                .collect()
        })
        .collect()
}

fn manifest_for(ckpt: &Checkpoint, analyses: &[TensorAnalysis], choice: &[usize]) -> Manifest {
    // When every tensor is exact, keep the source header verbatim so that decompression gives back
    // the very same file (key order, spacing and padding included), as a lossless tool should.
    let all_exact = analyses
        .iter()
        .zip(choice)
        .all(|(a, &i)| a.candidates[i].codec == CodecParams::Lossless);
    Manifest {
        version: container::VERSION,
        source_format: ckpt.format,
        source_metadata: ckpt.metadata.clone(),
        source_header: if all_exact {
            ckpt.exact_header.clone()
        } else {
            None
        },
        source_bytes: None,
        groups: Vec::new(),
        files: Vec::new(),
        tensors: ckpt
            .tensors
            .iter()
            .zip(analyses)
            .zip(choice)
            .map(|((t, a), &i)| {
                let c = &a.candidates[i];
                TensorRecord {
                    name: t.name.clone(),
                    dtype: t.dtype,
                    shape: t.shape.clone(),
                    codec: c.codec.clone(),
                    coded_bytes: c.coded_bytes,
                    side_bytes: c.side_bytes,
                    crc32: c.manifest_crc(),
                }
            })
            .collect(),
    }
}

fn output_size(manifest: &Manifest) -> Result<(u64, u64)> {
    let header = container::encode_header(manifest)?.len() as u64;
    Ok((
        header,
        header
            + manifest
                .tensors
                .iter()
                .map(TensorRecord::section_len)
                .sum::<u64>()
            + manifest
                .groups
                .iter()
                .map(container::GroupRecord::section_len)
                .sum::<u64>(),
    ))
}

/// The most bytes a file of `parameters` parameters may take at `bpw` bits per weight.
pub(crate) fn allowed_bytes(bpw: f64, parameters: u64) -> u64 {
    (bpw * parameters as f64 / 8.0).floor() as u64
}

/// The allocator: one measured option per tensor (or per sibling set), meeting `opts.target`.
pub fn allocate(a: &Analysed, opts: &CompressOptions) -> Result<Plan> {
    opts.validate()?;
    let (checkpoint, shared) = (a.checkpoint.clone(), &a.shared);
    let mut analyses = a.analyses.clone();
    let manifest_of = |analyses: &[TensorAnalysis], c: &[usize]| {
        shared.manifest(
            manifest_for(&checkpoint, analyses, &shared.tensor_choice(c)),
            c,
        )
    };
    let points = shared.points(&option_points(&checkpoint, &analyses));
    let choice = match opts.target {
        Target::BitsPerWeight(bpw) => {
            let allowed = allowed_bytes(bpw, checkpoint.parameters());
            // The header's size depends a little on the choice: allocate, measure, shrink the
            // section budget by any excess, repeat (converges in one or two rounds).
            let cheapest: Vec<usize> = points
                .iter()
                .map(|o| {
                    (0..o.len())
                        .min_by_key(|&i| (o[i].bytes, i))
                        .expect("every tensor has an option")
                })
                .collect();
            let (min_header, min_total) = output_size(&manifest_of(&analyses, &cheapest))?;
            if min_total > allowed {
                return Err(Error::option(format!(
                    "--bpw {bpw} is below the smallest file lowbit can make for this input: {:.3} bits per weight \
                     ({min_total} bytes, of which {min_header} header; tensors stored exactly cannot shrink further)",
                    8.0 * min_total as f64 / checkpoint.parameters().max(1) as f64
                )));
            }
            let mut budget = allowed.saturating_sub(min_header);
            let mut choice = cheapest;
            for _ in 0..8 {
                let Some(c) = opts.allocator.allocate(&points, budget) else {
                    break;
                };
                let (_, total) = output_size(&manifest_of(&analyses, &c))?;
                if total <= allowed {
                    choice = c;
                    break;
                }
                budget = budget.saturating_sub(total - allowed);
            }
            choice
        }
        Target::MaxError(max_error) => {
            let picks = alloc::allocate_max_error(&points, max_error, |t, i| {
                shared.item_error(&analyses, t, i)
            });
            picks
                .into_iter()
                .enumerate()
                // The exact option always qualifies unless a forced method removed it; then take
                // the most accurate option and say so in the report.
                .map(|(t, p)| p.unwrap_or_else(|| shared.most_accurate(&analyses, t)))
                .collect()
        }
    };
    let manifest = manifest_of(&analyses, &choice);
    let choice = shared.finish(&mut analyses, &choice);
    let (header_len, output_bytes) = output_size(&manifest)?;
    Ok(Plan {
        checkpoint,
        analyses,
        choice,
        manifest,
        header_len,
        output_bytes,
        backend: a.backend.clone(),
        search: None,
    })
}
