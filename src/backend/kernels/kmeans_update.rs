//! The k-means centroid update, `shaders/kmeans_update.wgsl`: every centroid moved to the mean of
//! its points, with the points per centroid (one Lloyd update before the empty-cluster split,
//! which stays on the CPU).
//!
//! - Arguments: `UpdateDims`, the kernel's uniform (GPU builds).
//! - CPU twin: [`cluster_means`] ([`crate::kmeans::cluster_means`]), checked by [`check_codes`].
//! - GPU host code: `Gpu::cluster_means`, and the pass `PointSet::update` that the Lloyd loop of
//!   `gpu/points.rs` runs on a resident point set.

use crate::error::Result;
use crate::kmeans::Codebook;

/// Points per partial-sum chunk in kmeans_update.wgsl (its CHUNK).
#[cfg(feature = "gpu")]
pub(crate) const UPDATE_CHUNK: usize = 1024;

// ---------------------------------------------------------------------------------------------
// CPU twin

/// Checks the operands (see [`crate::kmeans::check_codes`]).
pub fn check_codes(points: &[f32], dim: usize, codes: &[u32], codebook: &Codebook) -> Result<()> {
    crate::kmeans::check_codes(points, dim, codes, codebook)
}

/// [`crate::kmeans::cluster_means`] on a copy of the codebook.
pub fn cluster_means(
    points: &[f32],
    dim: usize,
    codes: &[u32],
    codebook: &Codebook,
) -> (Codebook, Vec<u32>) {
    let mut moved = codebook.clone();
    let counts = crate::kmeans::cluster_means(points, dim, codes, &mut moved);
    (moved, counts.into_iter().map(|c| c as u32).collect())
}

// ---------------------------------------------------------------------------------------------
// Arguments: the uniform of kmeans_update.wgsl (both entry points)

/// `UpdateDims` of kmeans_update.wgsl, field for field (8 words).
#[cfg(feature = "gpu")]
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct UpdateDims {
    n: u32,
    dim: u32,
    k: u32,
    _pad0: u32,
    first_chunk: u32,
    chunks: u32,
    groups_x: u32,
    _pad: u32,
}

#[cfg(feature = "gpu")]
pub(super) fn layout() -> super::UniformLayout {
    uniform_layout!(
        crate::shaders::KMEANS_UPDATE,
        UpdateDims {
            n,
            dim,
            k,
            first_chunk,
            chunks,
            groups_x
        }
    )
}

// ---------------------------------------------------------------------------------------------
// GPU host code

#[cfg(feature = "gpu")]
mod host {
    use super::{UpdateDims, UPDATE_CHUNK};
    use crate::backend::gpu::{grid, to_u32, Gpu, GpuResult, PointSet, WORKGROUP};
    use crate::kmeans::Codebook;
    use crate::shaders;

    impl Gpu {
        /// [`crate::backend::Backend::cluster_means`] on the GPU.
        pub async fn cluster_means(
            &self,
            points: &[f32],
            dim: usize,
            codes: &[u32],
            codebook: &Codebook,
        ) -> GpuResult<(Codebook, Vec<u32>)> {
            let n = points.len() / dim;
            let set = self.point_set(points, dim, codebook.k(), n)?;
            set.write_codes(self, codes);
            let centroids = self.upload(&codebook.centroids, "centroids");
            let counts = set.update(self, &centroids).await?;
            let moved = self
                .read::<f32>(&centroids, codebook.centroids.len())
                .await?;
            Ok((
                Codebook {
                    dim,
                    centroids: moved,
                },
                counts,
            ))
        }
    }

    impl PointSet {
        /// One centroid update (means of the current codes, in place); returns the points per
        /// centroid.
        pub(in crate::backend) async fn update(
            &self,
            gpu: &Gpu,
            centroids: &wgpu::Buffer,
        ) -> GpuResult<Vec<u32>> {
            let mut encoder = gpu.encoder();
            let mut first_chunk = 0;
            let centroid_blocks = to_u32(self.k.div_ceil(WORKGROUP), "centroid blocks")?;
            for t in &self.tiles {
                if t.n == 0 {
                    continue;
                }
                let chunks = t.n.div_ceil(UPDATE_CHUNK);
                let (gx, gy) = grid(chunks)?;
                let dims = UpdateDims {
                    n: t.n as u32,
                    dim: self.dim as u32,
                    k: self.k as u32,
                    _pad0: 0,
                    first_chunk: first_chunk as u32,
                    chunks: 0,
                    groups_x: gx,
                    _pad: 0,
                };
                let uniform = gpu.uniform(&dims);
                gpu.dispatch(
                    &mut encoder,
                    &shaders::KMEANS_UPDATE,
                    "sum_chunks",
                    &[
                        (0, &uniform),
                        (1, &t.points),
                        (2, &t.codes),
                        (3, &self.partial_sums),
                        (4, &self.partial_counts),
                    ],
                    (gx, gy, centroid_blocks),
                );
                first_chunk += chunks;
            }
            let (gx, gy) = grid((self.k * self.dim).div_ceil(WORKGROUP))?;
            let dims = UpdateDims {
                n: 0,
                dim: self.dim as u32,
                k: self.k as u32,
                _pad0: 0,
                first_chunk: 0,
                chunks: self.chunks as u32,
                groups_x: gx,
                _pad: 0,
            };
            let uniform = gpu.uniform(&dims);
            gpu.dispatch(
                &mut encoder,
                &shaders::KMEANS_UPDATE,
                "move_centroids",
                &[
                    (0, &uniform),
                    (3, &self.partial_sums),
                    (4, &self.partial_counts),
                    (5, centroids),
                    (6, &self.counts),
                ],
                (gx, gy, 1),
            );
            gpu.submit(encoder);
            gpu.read::<u32>(&self.counts, self.k).await
        }
    }
}
