//! The model runtime's row norms, `shaders/norm.wgsl`: RMSNorm (Llama-style decoders) and
//! LayerNorm (BERT-style encoders).
//!
//! - Arguments: `NormDims`, the kernel's uniform (GPU builds).
//! - CPU twins: [`rms_norm`], [`layer_norm`]: the model runtime's own (`model::ops` uses these).
//! - GPU host code: `Pass::rms_norm`, `Pass::layer_norm` (resident), `Gpu::rms_norm`,
//!   `Gpu::layer_norm` (one upload, one readback).

// ---------------------------------------------------------------------------------------------
// CPU twins

/// RMSNorm of each `dim`-wide row of `x`: `x / sqrt(mean(x^2) + eps) * w`.
pub fn rms_norm(x: &[f32], w: &[f32], eps: f32) -> Vec<f32> {
    let dim = w.len();
    let mut out = Vec::with_capacity(x.len());
    for row in x.chunks_exact(dim) {
        let ms = row.iter().map(|v| v * v).sum::<f32>() / dim as f32;
        let scale = 1.0 / (ms + eps).sqrt();
        out.extend(row.iter().zip(w).map(|(v, w)| v * scale * w));
    }
    out
}

/// LayerNorm of each row of `x` in place: `(x - mean) / sqrt(var + eps) * w + b`.
pub fn layer_norm(x: &mut [f32], w: &[f32], b: &[f32], eps: f32) {
    let dim = w.len();
    for row in x.chunks_exact_mut(dim) {
        let mean = row.iter().sum::<f32>() / dim as f32;
        let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / dim as f32;
        let scale = 1.0 / (var + eps).sqrt();
        for ((v, w), b) in row.iter_mut().zip(w).zip(b) {
            *v = (*v - mean) * scale * w + b;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Arguments: the uniform of norm.wgsl

/// `NormDims` of norm.wgsl, field for field (4 words).
#[cfg(feature = "gpu")]
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct NormDims {
    rows: u32,
    dim: u32,
    eps: f32,
    _pad0: u32,
}

#[cfg(feature = "gpu")]
pub(super) fn layout() -> super::UniformLayout {
    uniform_layout!(crate::shaders::NORM, NormDims { rows, dim, eps })
}

// ---------------------------------------------------------------------------------------------
// GPU host code

#[cfg(feature = "gpu")]
mod host {
    use super::NormDims;
    use crate::backend::gpu::{grid, to_u32, DeviceTensor, Gpu, GpuResult, Pass};
    use crate::backend::GpuFailure;
    use crate::shaders;

    impl Pass<'_> {
        /// Records `out = norm(x)` for `rows` rows of `weight.len()`: RMSNorm without `bias`,
        /// LayerNorm with it.
        pub fn norm(
            &mut self,
            x: &DeviceTensor,
            rows: usize,
            weight: &DeviceTensor,
            bias: Option<&DeviceTensor>,
            eps: f32,
            out: &DeviceTensor,
        ) -> GpuResult<()> {
            let dim = weight.len();
            if x.len() < rows * dim
                || out.len() < rows * dim
                || bias.is_some_and(|b| b.len() != dim)
            {
                return Err(GpuFailure::Unsupported(format!(
                    "norm: {} / {} values for {rows} rows of {dim}",
                    x.len(),
                    out.len()
                )));
            }
            if rows == 0 || dim == 0 {
                return Ok(());
            }
            let dims = NormDims {
                rows: to_u32(rows, "rows")?,
                dim: to_u32(dim, "width")?,
                eps,
                _pad0: 0,
            };
            let (gx, gy) = grid(rows)?;
            match bias {
                None => self.kernel(
                    &shaders::NORM,
                    "rms_norm",
                    &dims,
                    &[x, weight, out],
                    (gx, gy, 1),
                ),
                Some(b) => self.kernel(
                    &shaders::NORM,
                    "layer_norm",
                    &dims,
                    &[x, weight, out, b],
                    (gx, gy, 1),
                ),
            }
            Ok(())
        }
    }

    impl Gpu {
        /// [`super::rms_norm`] (no `bias`) or [`super::layer_norm`] on the GPU: one upload, one
        /// readback.
        pub async fn norm(
            &self,
            x: &[f32],
            weight: &[f32],
            bias: Option<&[f32]>,
            eps: f32,
        ) -> GpuResult<Vec<f32>> {
            let rows = x.len() / weight.len().max(1);
            let xt = self.tensor(x, "x")?;
            let wt = self.tensor(weight, "weight")?;
            let bt = bias.map(|b| self.tensor(b, "bias")).transpose()?;
            let out = self.zeros(x.len(), "out")?;
            let mut pass = self.pass();
            pass.norm(&xt, rows, &wt, bt.as_ref(), eps, &out)?;
            pass.submit();
            self.read_tensor(&out, x.len()).await
        }
    }
}
