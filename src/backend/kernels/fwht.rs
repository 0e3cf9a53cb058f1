//! The random-sign fast Walsh-Hadamard rotation of the rows of a matrix, `shaders/fwht.wgsl`,
//! forward or inverse: the same bits as the CPU.
//!
//! - Arguments: `FwhtDims`, the kernel's uniform (GPU builds).
//! - CPU twin: [`rotate`] ([`crate::rotation`]).
//! - GPU host code: `Gpu::rotate`.

// ---------------------------------------------------------------------------------------------
// CPU twin

/// [`crate::rotation::forward`] or [`crate::rotation::inverse`].
pub fn rotate(values: &mut [f32], cols: usize, seed: u64, inverse: bool) {
    if inverse {
        crate::rotation::inverse(values, cols, seed);
    } else {
        crate::rotation::forward(values, cols, seed);
    }
}

// ---------------------------------------------------------------------------------------------
// Arguments: the uniform of fwht.wgsl

/// `FwhtDims` of fwht.wgsl, field for field (8 words).
#[cfg(feature = "gpu")]
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct FwhtDims {
    len: u32,
    cols: u32,
    block: u32,
    inverse: u32,
    scale: f32,
    groups_x: u32,
    _pad: [u32; 2],
}

#[cfg(feature = "gpu")]
pub(super) fn layout() -> super::UniformLayout {
    uniform_layout!(
        crate::shaders::FWHT,
        FwhtDims {
            len,
            cols,
            block,
            inverse,
            scale,
            groups_x
        }
    )
}

// ---------------------------------------------------------------------------------------------
// GPU host code

#[cfg(feature = "gpu")]
mod host {
    use super::FwhtDims;
    use crate::backend::gpu::{grid, to_u32, Gpu, GpuResult};
    use crate::shaders;

    /// Elements per workgroup segment in fwht.wgsl (its SEGMENT).
    const FWHT_SEGMENT: usize = 1024;

    impl Gpu {
        /// [`crate::backend::Backend::rotate`] on the GPU: `values` is written only once the whole
        /// result is back.
        pub async fn rotate(
            &self,
            values: &mut [f32],
            cols: usize,
            seed: u64,
            inverse: bool,
        ) -> GpuResult<()> {
            let rows = values.len() / cols;
            let block = crate::rotation::block_len(cols);
            let signs = self.upload(&crate::rotation::signs(cols, seed), "signs");
            let tiled = self.upload_tiled(values, rows, cols, cols, "values")?;
            let mut encoder = self.encoder();
            for (_, n, buffer) in &tiled.tiles {
                let len = n * cols;
                let (gx, gy) = grid(len.div_ceil(FWHT_SEGMENT))?;
                let dims = FwhtDims {
                    len: to_u32(len, "elements")?,
                    cols: to_u32(cols, "columns")?,
                    block: block as u32,
                    inverse: inverse as u32,
                    scale: crate::rotation::block_scale(block),
                    groups_x: gx,
                    _pad: [0; 2],
                };
                let uniform = self.uniform(&dims);
                self.dispatch(
                    &mut encoder,
                    &shaders::FWHT,
                    "main",
                    &[(0, &uniform), (1, &signs), (2, buffer)],
                    (gx, gy, 1),
                );
            }
            self.submit(encoder);
            values.copy_from_slice(&self.read_tiled(&tiled).await?);
            Ok(())
        }
    }
}
