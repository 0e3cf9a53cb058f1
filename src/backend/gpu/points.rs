//! A k-means point set resident on the GPU (points in row tiles, each with its codes and
//! distances, and the partial sums both k-means kernels write), and the Lloyd loop that runs
//! `kernels/kmeans_assign.rs` and `kernels/kmeans_update.rs` on it with the points uploaded once.
//! The CPU twin of the loop is [`crate::kmeans::fit_detailed`].

use super::{to_u32, Gpu, GpuFailure, GpuResult, WORKGROUP};
use crate::backend::kernels::kmeans_assign::ASSIGN_STAGE;
use crate::backend::kernels::kmeans_update::UPDATE_CHUNK;
use crate::kmeans::{Codebook, Fit};
use crate::rng::Rng;

/// A point set resident on the GPU with the arrays of the assignment and update kernels.
pub(in crate::backend) struct PointSet {
    pub(in crate::backend) dim: usize,
    pub(in crate::backend) k: usize,
    pub(in crate::backend) tiles: Vec<PointTile>,
    pub(in crate::backend) partial_objective: wgpu::Buffer,
    pub(in crate::backend) changed: wgpu::Buffer,
    pub(in crate::backend) partial_sums: wgpu::Buffer,
    pub(in crate::backend) partial_counts: wgpu::Buffer,
    pub(in crate::backend) counts: wgpu::Buffer,
    /// Partial-sum chunks over all tiles.
    pub(in crate::backend) chunks: usize,
    /// Assignment workgroups over all tiles (one partial objective each).
    pub(in crate::backend) partials: usize,
}

/// One tile of a point set: its points and their codes and distances (each within one binding).
pub(in crate::backend) struct PointTile {
    pub(in crate::backend) n: usize,
    pub(in crate::backend) points: wgpu::Buffer,
    pub(in crate::backend) codes: wgpu::Buffer,
    pub(in crate::backend) distances: wgpu::Buffer,
}

impl PointSet {
    pub(in crate::backend) async fn read_codes(&self, gpu: &Gpu) -> GpuResult<Vec<u32>> {
        let mut out = Vec::new();
        for t in &self.tiles {
            out.extend(gpu.read::<u32>(&t.codes, t.n).await?);
        }
        Ok(out)
    }

    pub(in crate::backend) async fn read_distances(&self, gpu: &Gpu) -> GpuResult<Vec<f32>> {
        let mut out = Vec::new();
        for t in &self.tiles {
            out.extend(gpu.read::<f32>(&t.distances, t.n).await?);
        }
        Ok(out)
    }

    pub(in crate::backend) fn write_codes(&self, gpu: &Gpu, codes: &[u32]) {
        let mut first = 0;
        for t in &self.tiles {
            if t.n > 0 {
                gpu.write(&t.codes, &codes[first..first + t.n]);
            }
            first += t.n;
        }
    }
}

impl Gpu {
    /// Uploads the points (tiled) with the arrays the k-means kernels write.
    pub(in crate::backend) fn point_set(
        &self,
        points: &[f32],
        dim: usize,
        k: usize,
        n: usize,
    ) -> GpuResult<PointSet> {
        if dim > ASSIGN_STAGE {
            return Err(GpuFailure::Unsupported(format!(
                "vectors of dimension {dim} exceed the assignment kernel's {ASSIGN_STAGE}"
            )));
        }
        let tiled = self.upload_tiled(points, n, dim, dim, "points")?;
        let chunks: usize = tiled.tiles.iter().map(|t| t.1.div_ceil(UPDATE_CHUNK)).sum();
        let partials: usize = tiled.tiles.iter().map(|t| t.1.div_ceil(WORKGROUP)).sum();
        self.check_binding(chunks * k * dim * 4, "the partial sums")?;
        self.check_binding(k * dim * 4, "the codebook")?;
        to_u32(n, "points")?;
        let tiles = tiled
            .tiles
            .into_iter()
            .map(|(_, n, points)| PointTile {
                n,
                points,
                // No code is u32::MAX, so the first assignment counts every point as changed.
                codes: self.upload(&vec![u32::MAX; n], "codes"),
                distances: self.zeroed(n * 4, "distances"),
            })
            .collect();
        Ok(PointSet {
            dim,
            k,
            tiles,
            partial_objective: self.zeroed(partials * 4, "partial objective"),
            changed: self.zeroed(4, "changed"),
            partial_sums: self.zeroed(chunks * k * dim * 4, "partial sums"),
            partial_counts: self.zeroed(chunks * k * 4, "partial counts"),
            counts: self.zeroed(k * 4, "counts"),
            chunks,
            partials,
        })
    }

    /// k-means on the GPU ([`crate::backend::Backend::kmeans_fit`]): seeding on the CPU, then the
    /// Lloyd loop with the points resident.
    pub async fn kmeans_fit(
        &self,
        points: &[f32],
        dim: usize,
        k: usize,
        iters: usize,
        rng: &mut Rng,
    ) -> GpuResult<Fit> {
        let seeded = crate::kmeans::seed(points, dim, k, rng)
            .map_err(|e| GpuFailure::Unsupported(e.to_string()))?;
        let Some(mut codebook) = seeded else {
            return Ok(Fit {
                codebook: Codebook {
                    dim,
                    centroids: Vec::new(),
                },
                objective: Vec::new(),
                iterations: 0,
            });
        };
        let n = points.len() / dim;
        let k = codebook.k();
        let set = self.point_set(points, dim, k, n)?;
        let centroids = self.upload(&codebook.centroids, "centroids");
        let mut objective = Vec::new();
        let mut iterations = 0;
        for it in 0..iters {
            let (sum, changed) = set.assign(self, &centroids).await?;
            objective.push(sum);
            if it > 0 && changed == 0 {
                break;
            }
            let counts = set.update(self, &centroids).await?;
            if counts.contains(&0) {
                // The empty-cluster split needs every code and distance: rare, done on the CPU.
                let mut counts: Vec<usize> = counts.iter().map(|&c| c as usize).collect();
                let mut codes = set.read_codes(self).await?;
                let distances = set.read_distances(self).await?;
                codebook.centroids = self.read::<f32>(&centroids, k * dim).await?;
                crate::kmeans::split_empty(
                    points,
                    &mut codebook,
                    &mut codes,
                    &distances,
                    &mut counts,
                );
                self.write(&centroids, &codebook.centroids);
                set.write_codes(self, &codes);
            }
            iterations += 1;
        }
        codebook.centroids = self.read::<f32>(&centroids, k * dim).await?;
        Ok(Fit {
            codebook,
            objective,
            iterations,
        })
    }
}
