//! Where a model's weights come from: any [`WeightSource`] hands out one tensor at a time as f32,
//! so a model is built straight from a safetensors file or from a decoded `.lowbit`
//! (`pipeline::read::ContainerWeights`) without writing a restored file.

use crate::dtype;
use crate::error::{Error, Result};
use crate::io::safetensors::{self, Header};

/// Named tensors, read on demand as f32.
pub trait WeightSource {
    /// The shape of tensor `name`, or `None` when there is no such tensor.
    fn shape(&self, name: &str) -> Option<Vec<usize>>;
    /// The values of tensor `name` in row-major order, as f32.
    fn load(&self, name: &str) -> Result<Vec<f32>>;
}

/// The tensors of a safetensors file held in memory (an mmap natively).
pub struct SafetensorsWeights<'a> {
    file: &'a [u8],
    header: Header,
}

impl<'a> SafetensorsWeights<'a> {
    pub fn new(file: &'a [u8]) -> Result<SafetensorsWeights<'a>> {
        Ok(SafetensorsWeights {
            file,
            header: safetensors::read_header(file)?,
        })
    }
}

impl WeightSource for SafetensorsWeights<'_> {
    fn shape(&self, name: &str) -> Option<Vec<usize>> {
        let i = self.header.position(name)?;
        Some(self.header.tensors[i].shape.clone())
    }

    fn load(&self, name: &str) -> Result<Vec<f32>> {
        let i = self
            .header
            .position(name)
            .ok_or_else(|| Error::invalid("no such tensor").in_tensor(name))?;
        let entry = &self.header.tensors[i];
        if !entry.dtype.is_float() {
            return Err(Error::unsupported(format!(
                "a {} tensor where the model needs floating-point weights",
                entry.dtype
            ))
            .in_tensor(name));
        }
        Ok(dtype::to_f32(
            entry.dtype,
            safetensors::tensor_bytes(self.file, &self.header, i),
        ))
    }
}

/// Loads tensor `name` (or, failing that, `prefix + name` for each prefix) and checks its shape.
pub fn load_shaped(
    source: &dyn WeightSource,
    prefixes: &[&str],
    name: &str,
    shape: &[usize],
) -> Result<Vec<f32>> {
    let full = resolve(source, prefixes, name).ok_or_else(|| {
        Error::invalid("the model needs this tensor and the file lacks it").in_tensor(name)
    })?;
    let found = source.shape(&full).unwrap_or_default();
    // A 1-D tensor may be stored as [1, n] and the reverse; the element order is the same.
    let squeeze = |s: &[usize]| s.iter().copied().filter(|&d| d != 1).collect::<Vec<_>>();
    if found != shape && squeeze(&found) != squeeze(shape) {
        return Err(Error::invalid(format!(
            "shape {found:?}, but config.json implies {shape:?}"
        ))
        .in_tensor(&full));
    }
    let values = source.load(&full).map_err(|e| e.in_tensor(&full))?;
    if values.iter().any(|v| !v.is_finite()) {
        return Err(Error::invalid("holds NaN or infinite values").in_tensor(&full));
    }
    Ok(values)
}

/// The stored name of tensor `name`: itself, or the first `prefix + name` that exists.
pub fn resolve(source: &dyn WeightSource, prefixes: &[&str], name: &str) -> Option<String> {
    std::iter::once(String::new())
        .chain(prefixes.iter().map(|p| p.to_string()))
        .map(|p| format!("{p}{name}"))
        .find(|n| source.shape(n).is_some())
}
