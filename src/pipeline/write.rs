//! Writing: the `.lowbit` of a plan, streamed to any `Write` (header first, then each tensor's
//! section encoded again from the input and checked against what the analysis measured), and what
//! one tensor's section restores (the page's before/after view).

use std::borrow::Cow;
use std::io::Write;

use crate::backend::Backend;
use crate::checkpoint::InputTensor;
use crate::codec::{self, lossless, CodecParams, Shape2};
use crate::container;
use crate::dtype;
use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::source::Source;

use super::allocate::Plan;
use super::analyse::tensor_values;
use super::options::CompressOptions;

/// Writes the `.lowbit` of a plan to `out`: the header, then each tensor's section, encoded again
/// from `data` (the bytes the plan's tensor ranges point into) and checked against what the
/// analysis measured.
pub async fn write_container<S: Source + ?Sized>(
    backend: &Backend,
    plan: &mut Plan,
    opts: &CompressOptions,
    data: &S,
    progress: &mut dyn Progress,
    out: &mut dyn Write,
) -> Result<()> {
    if let Some((t, _)) = plan
        .checkpoint
        .tensors
        .iter()
        .zip(&plan.analyses)
        .zip(&plan.choice)
        .find(|((_, a), &i)| a.candidates[i].is_estimate())
        .map(|(ti, _)| ti)
    {
        return Err(Error::invalid(
            "internal error: the plan holds an estimated size (it was not settled before writing)",
        )
        .in_tensor(&t.name));
    }
    let header = container::encode_header(&plan.manifest)?;
    let io_err = |e| Error::io("output", e);
    out.write_all(&header).map_err(io_err)?;
    progress.stage("encode", plan.checkpoint.parameters());
    let count = plan.checkpoint.tensors.len() as u64;
    // shared-lowrank groups are coded as wholes, before the sections are streamed.
    let mut shared = super::shared::encode_groups(&plan.manifest, &|i| {
        tensor_values(data, &plan.checkpoint.tensors[i])
    })?;
    for (i, (t, record)) in plan
        .checkpoint
        .tensors
        .iter()
        .zip(&plan.manifest.tensors)
        .enumerate()
    {
        if progress.cancelled() {
            return Err(Error::Cancelled);
        }
        progress.working_on(&t.name, i as u64 + 1, count);
        let bytes = match &record.codec {
            CodecParams::SharedLowrank(_) => shared.members[i]
                .take()
                .ok_or_else(|| Error::invalid("internal error: a group member was not coded"))?,
            codec => {
                let raw = crate::checkpoint::tensor_bytes(data, t)?;
                encode_section(backend, codec, opts, t, raw).await?.0
            }
        };
        if bytes.len() as u64 != record.coded_bytes || container::crc32(&bytes) != record.crc32 {
            if let (Some(reason), None) = (backend.fallback(), &plan.backend.fallback) {
                return Err(Error::GpuFailedWhileWriting { reason });
            }
            return Err(Error::invalid(format!(
                "internal error: re-encoding gave other bytes ({} bytes) than the analysis measured ({}): a non-deterministic codec",
                bytes.len(),
                record.coded_bytes
            ))
            .in_tensor(&t.name));
        }
        out.write_all(&bytes).map_err(io_err)?;
        let padding = record.section_len() - record.coded_bytes;
        out.write_all(&vec![0u8; padding as usize])
            .map_err(io_err)?;
        progress.advance(t.numel(), &t.name);
    }
    for (record, bytes) in plan.manifest.groups.iter().zip(&shared.bases) {
        out.write_all(bytes).map_err(io_err)?;
        let padding = record.section_len() - record.coded_bytes;
        out.write_all(&vec![0u8; padding as usize])
            .map_err(io_err)?;
    }
    for record in &plan.manifest.files {
        let bytes = opts.model_files.get(&record.name).ok_or_else(|| {
            Error::invalid("internal error: a model file of the manifest was not given")
        })?;
        out.write_all(bytes).map_err(io_err)?;
    }
    out.flush().map_err(io_err)?;
    plan.backend.fallback = backend.fallback();
    Ok(())
}

/// Tensor `t`'s section coded with `codec` from its bytes `raw`, as the `.lowbit` holds it, and
/// how many of its bytes are side information. Not for shared-lowrank members: those are coded
/// with their group ([`super::shared::encode_groups`]).
pub(super) async fn encode_section(
    backend: &Backend,
    codec: &CodecParams,
    opts: &CompressOptions,
    t: &InputTensor,
    raw: Cow<'_, [u8]>,
) -> Result<(Vec<u8>, u64)> {
    let coded = match codec {
        CodecParams::Lossless => lossless::encode(&raw, t.dtype)?,
        CodecParams::SharedLowrank(_) => {
            return Err(Error::invalid(
                "internal error: a shared-lowrank member is coded with its group",
            ))
        }
        // An importance file's values are not in the header: take them from the options.
        CodecParams::Fwsvd(p) if p.importance.is_file() => {
            let rows = opts
                .importance
                .as_ref()
                .map(|m| m.rows_for(&t.name, &t.shape))
                .transpose()?
                .flatten()
                .unwrap_or_default();
            codec::fwsvd::encode_with_importance(
                &dtype::to_f32(t.dtype, &raw),
                Shape2::of(&t.shape).expect("checked"),
                p,
                &rows,
            )?
        }
        lossy => {
            let values = dtype::to_f32(t.dtype, &raw);
            drop(raw);
            let shape = Shape2::of(&t.shape).expect("checked");
            let columns = opts.input_energies(&t.name, &t.shape);
            lossy
                .encode_weighted_on(backend, &values, shape, columns)
                .await
                .map_err(|e| e.in_tensor(&t.name))?
        }
    };
    Ok((coded.bytes, coded.side_bytes as u64))
}

/// The values the `.lowbit` of `plan` restores for tensor `i` (a float tensor), as f32: its
/// section coded as [`write_container`] codes it from `data`, checked against the plan's record
/// (so these are the file's very bytes, not a re-run that could differ), then decoded as
/// `decompress` decodes it, through the tensor's own dtype (a BF16 tensor restores BF16 values).
/// The page's teaching view shows them beside the originals.
pub async fn restored_values<S: Source + ?Sized>(
    backend: &Backend,
    plan: &Plan,
    opts: &CompressOptions,
    data: &S,
    i: usize,
) -> Result<Vec<f32>> {
    let t = &plan.checkpoint.tensors[i];
    let record = &plan.manifest.tensors[i];
    let (section, bases) = match &record.codec {
        CodecParams::SharedLowrank(_) => {
            let mut shared = super::shared::encode_groups(&plan.manifest, &|j| {
                tensor_values(data, &plan.checkpoint.tensors[j])
            })?;
            let bases = plan
                .manifest
                .groups
                .iter()
                .zip(&shared.bases)
                .map(|(g, bytes)| codec::shared_lowrank::decode_basis(bytes, g.cols, &g.basis))
                .collect::<Result<Vec<_>>>()?;
            let section = shared.members[i]
                .take()
                .ok_or_else(|| Error::invalid("internal error: a group member was not coded"))?;
            (section, bases)
        }
        codec => {
            let raw = crate::checkpoint::tensor_bytes(data, t)?;
            (
                encode_section(backend, codec, opts, t, raw).await?.0,
                Vec::new(),
            )
        }
    };
    // A plan the page shows before it is settled may hold an estimate's size (no CRC): the
    // section is then the one `settle` will code, unchecked.
    let estimate = plan.analyses[i].candidates[plan.choice[i]].is_estimate();
    if !estimate
        && (section.len() as u64 != record.coded_bytes
            || container::crc32(&section) != record.crc32)
    {
        return Err(Error::invalid(
            "internal error: re-encoding gave other bytes than the analysis measured",
        )
        .in_tensor(&t.name));
    }
    let bytes = super::shared::decode_tensor(&section, record, &bases)?;
    Ok(dtype::to_f32(record.dtype, &bytes))
}
