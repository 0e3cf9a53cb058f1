//! Pooling an encoder's token states into a sentence embedding, `shaders/pool.wgsl`.
//!
//! - Arguments: `PoolDims`, the kernel's uniform (GPU builds); [`Pool`], the mode.
//! - CPU twin: [`pool`] (the arithmetic of `model::bert`'s pooling, before unit length).
//! - GPU host code: `Pass::pool` (resident), `Gpu::pool` (one upload, one readback).

/// How the token states become one vector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pool {
    Mean,
    Max,
    /// The first token's state.
    First,
}

// ---------------------------------------------------------------------------------------------
// CPU twin

/// The pooled `dim` values of `x` (`rows x dim`, `rows >= 1`), rows taken in order.
pub fn pool(x: &[f32], rows: usize, dim: usize, mode: Pool) -> Vec<f32> {
    match mode {
        Pool::First => x[..dim].to_vec(),
        Pool::Mean => (0..dim)
            .map(|j| (0..rows).map(|i| x[i * dim + j]).sum::<f32>() / rows as f32)
            .collect(),
        Pool::Max => (0..dim)
            .map(|j| {
                (0..rows)
                    .map(|i| x[i * dim + j])
                    .fold(f32::NEG_INFINITY, f32::max)
            })
            .collect(),
    }
}

// ---------------------------------------------------------------------------------------------
// Arguments: the uniform of pool.wgsl

/// `PoolDims` of pool.wgsl, field for field (4 words).
#[cfg(feature = "gpu")]
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct PoolDims {
    rows: u32,
    dim: u32,
    mode: u32,
    _pad0: u32,
}

#[cfg(feature = "gpu")]
pub(super) fn layout() -> super::UniformLayout {
    uniform_layout!(crate::shaders::POOL, PoolDims { rows, dim, mode })
}

// ---------------------------------------------------------------------------------------------
// GPU host code

#[cfg(feature = "gpu")]
mod host {
    use super::{Pool, PoolDims};
    use crate::backend::gpu::{to_u32, DeviceTensor, Gpu, GpuResult, Pass, WORKGROUP};
    use crate::backend::GpuFailure;
    use crate::shaders;

    impl Pass<'_> {
        /// Records the pooling of `rows` rows of `x` (`dim` wide) into `out`.
        pub fn pool(
            &mut self,
            x: &DeviceTensor,
            rows: usize,
            dim: usize,
            mode: Pool,
            out: &DeviceTensor,
        ) -> GpuResult<()> {
            if rows == 0 || x.len() < rows * dim || out.len() < dim {
                return Err(GpuFailure::Unsupported(format!(
                    "pool: {} values for {rows} rows of {dim}",
                    x.len()
                )));
            }
            let groups = dim.div_ceil(WORKGROUP);
            if groups > 65_535 {
                return Err(GpuFailure::Unsupported(format!("pool: {dim} columns")));
            }
            let dims = PoolDims {
                rows: to_u32(rows, "rows")?,
                dim: to_u32(dim, "width")?,
                mode: match mode {
                    Pool::Mean => 0,
                    Pool::Max => 1,
                    Pool::First => 2,
                },
                _pad0: 0,
            };
            self.kernel(
                &shaders::POOL,
                "main",
                &dims,
                &[x, out],
                (groups.max(1) as u32, 1, 1),
            );
            Ok(())
        }
    }

    impl Gpu {
        /// [`super::pool`] on the GPU: one upload, one readback.
        pub async fn pool(
            &self,
            x: &[f32],
            rows: usize,
            dim: usize,
            mode: Pool,
        ) -> GpuResult<Vec<f32>> {
            let xt = self.tensor(x, "x")?;
            let out = self.zeros(dim, "pooled")?;
            let mut pass = self.pass();
            pass.pool(&xt, rows, dim, mode, &out)?;
            pass.submit();
            self.read_tensor(&out, dim).await
        }
    }
}
