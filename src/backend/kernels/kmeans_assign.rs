//! Nearest-centroid assignment, `shaders/kmeans_assign.wgsl`: the code of every point and its
//! squared distance (and, inside the Lloyd loop, the objective and the count of changed codes).
//!
//! - Arguments: `AssignDims`, the kernel's uniform (GPU builds).
//! - CPU twin: [`assign`] ([`crate::kmeans::assign`]), checked by [`check_assign`].
//! - GPU host code: `Gpu::kmeans_assign`, and the pass `PointSet::assign` that the Lloyd loop of
//!   `gpu/points.rs` runs on a resident point set.

use crate::error::Result;
use crate::kmeans::Codebook;

/// Floats of centroids staged per chunk by kmeans_assign.wgsl (its STAGE): the largest dimension
/// the kernel takes.
#[cfg(feature = "gpu")]
pub(crate) const ASSIGN_STAGE: usize = 2048;

// ---------------------------------------------------------------------------------------------
// CPU twin

/// Checks the operands (see [`crate::kmeans::check_assign`]).
pub fn check_assign(points: &[f32], dim: usize, codebook: &Codebook) -> Result<()> {
    crate::kmeans::check_assign(points, dim, codebook)
}

/// [`crate::kmeans::assign`]: nearest centroid of every point and its squared distance.
pub fn assign(points: &[f32], dim: usize, codebook: &Codebook) -> Result<(Vec<u32>, Vec<f32>)> {
    crate::kmeans::assign(points, dim, codebook)
}

// ---------------------------------------------------------------------------------------------
// Arguments: the uniform of kmeans_assign.wgsl

/// `AssignDims` of kmeans_assign.wgsl, field for field (8 words).
#[cfg(feature = "gpu")]
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct AssignDims {
    n: u32,
    dim: u32,
    k: u32,
    _pad0: u32,
    first_partial: u32,
    groups_x: u32,
    _pad: [u32; 2],
}

#[cfg(feature = "gpu")]
pub(super) fn layout() -> super::UniformLayout {
    uniform_layout!(
        crate::shaders::KMEANS_ASSIGN,
        AssignDims {
            n,
            dim,
            k,
            first_partial,
            groups_x
        }
    )
}

// ---------------------------------------------------------------------------------------------
// GPU host code

#[cfg(feature = "gpu")]
mod host {
    use super::AssignDims;
    use crate::backend::gpu::{grid, Gpu, GpuResult, PointSet, WORKGROUP};
    use crate::kmeans::Codebook;
    use crate::shaders;

    impl Gpu {
        /// [`crate::backend::Backend::kmeans_assign`] on the GPU.
        pub async fn kmeans_assign(
            &self,
            points: &[f32],
            dim: usize,
            codebook: &Codebook,
        ) -> GpuResult<(Vec<u32>, Vec<f32>)> {
            let n = points.len() / dim;
            let set = self.point_set(points, dim, codebook.k(), n)?;
            let centroids = self.upload(&codebook.centroids, "centroids");
            set.assign(self, &centroids).await?;
            Ok((set.read_codes(self).await?, set.read_distances(self).await?))
        }
    }

    impl PointSet {
        /// One assignment pass: codes and distances stay on the GPU; returns the objective (summed
        /// in f64 from the workgroups' partial sums) and how many codes changed.
        pub(in crate::backend) async fn assign(
            &self,
            gpu: &Gpu,
            centroids: &wgpu::Buffer,
        ) -> GpuResult<(f64, u32)> {
            gpu.write(&self.changed, &[0u32]);
            let mut encoder = gpu.encoder();
            let mut first_partial = 0;
            for t in &self.tiles {
                if t.n == 0 {
                    continue;
                }
                let groups = t.n.div_ceil(WORKGROUP);
                let (gx, gy) = grid(groups)?;
                let dims = AssignDims {
                    n: t.n as u32,
                    dim: self.dim as u32,
                    k: self.k as u32,
                    _pad0: 0,
                    first_partial: first_partial as u32,
                    groups_x: gx,
                    _pad: [0; 2],
                };
                let uniform = gpu.uniform(&dims);
                gpu.dispatch(
                    &mut encoder,
                    &shaders::KMEANS_ASSIGN,
                    "main",
                    &[
                        (0, &uniform),
                        (1, &t.points),
                        (2, centroids),
                        (3, &t.codes),
                        (4, &t.distances),
                        (5, &self.partial_objective),
                        (6, &self.changed),
                    ],
                    (gx, gy, 1),
                );
                first_partial += groups;
            }
            gpu.submit(encoder);
            let partial = gpu
                .read::<f32>(&self.partial_objective, self.partials)
                .await?;
            let changed = gpu.read::<u32>(&self.changed, 1).await?[0];
            Ok((partial.iter().map(|&v| v as f64).sum(), changed))
        }
    }
}
