//! The model's side of a `.lowbit`: its small files (config, tokenizer) stored beside the weights,
//! and its tensors read back as a [`WeightSource`] so the runtime runs a compressed model without a
//! restored file.

use std::collections::BTreeMap;

use crate::container::{self, Container, FileRecord, TensorRecord};
use crate::dtype;
use crate::error::{Error, Result};
use crate::model::{ModelFiles, WeightSource};

use super::allocate::Plan;
use super::shared;

/// Adds `files` to the plan's manifest (after allocation: the bit budget is the weights', and the
/// files are stored verbatim beside them) and updates the plan's sizes.
pub fn attach_files(plan: &mut Plan, files: &ModelFiles) -> Result<()> {
    plan.manifest.files = files
        .iter()
        .map(|(name, bytes)| FileRecord {
            name: name.to_string(),
            bytes: bytes.len() as u64,
            crc32: container::crc32(bytes),
        })
        .collect();
    let header = container::encode_header(&plan.manifest)?.len() as u64;
    plan.output_bytes = plan.output_bytes - plan.header_len + header + files.bytes();
    plan.header_len = header;
    Ok(())
}

/// The model files a validated `.lowbit` holds (none for files made before they were stored).
pub fn files_of(c: &Container, file: &[u8]) -> Result<ModelFiles> {
    let mut files = ModelFiles::new();
    for (record, range) in c.manifest.files.iter().zip(&c.file_sections) {
        files.insert(&record.name, file[range.clone()].to_vec())?;
    }
    Ok(files)
}

/// The tensors of a `.lowbit`, each decoded when the runtime asks for it.
pub struct ContainerWeights<'a> {
    file: &'a [u8],
    container: &'a Container,
    by_name: BTreeMap<&'a str, usize>,
    bases: Vec<crate::codec::shared_lowrank::Basis>,
}

impl<'a> ContainerWeights<'a> {
    pub fn new(container: &'a Container, file: &'a [u8]) -> Result<ContainerWeights<'a>> {
        if container.manifest.source_format.is_vector_dataset()
            || crate::sequence::SequenceKind::of(container.manifest.source_format).is_some()
        {
            return Err(Error::invalid(
                "this .lowbit holds a dataset, not a model checkpoint",
            ));
        }
        Ok(ContainerWeights {
            file,
            by_name: (container.manifest.tensors.iter().enumerate())
                .map(|(i, t)| (t.name.as_str(), i))
                .collect(),
            bases: shared::decode_bases(container, file)?,
            container,
        })
    }

    fn record(&self, name: &str) -> Option<(&TensorRecord, usize)> {
        let i = *self.by_name.get(name)?;
        Some((&self.container.manifest.tensors[i], i))
    }
}

impl WeightSource for ContainerWeights<'_> {
    fn shape(&self, name: &str) -> Option<Vec<usize>> {
        self.record(name).map(|(r, _)| r.shape.clone())
    }

    fn load(&self, name: &str) -> Result<Vec<f32>> {
        let (record, i) = self
            .record(name)
            .ok_or_else(|| Error::invalid("no such tensor").in_tensor(name))?;
        if !record.dtype.is_float() {
            return Err(Error::unsupported(format!(
                "a {} tensor where the model needs floating-point weights",
                record.dtype
            ))
            .in_tensor(name));
        }
        let section = &self.file[self.container.sections[i].clone()];
        let bytes = shared::decode_tensor(section, record, &self.bases)?;
        Ok(dtype::to_f32(record.dtype, &bytes))
    }
}
