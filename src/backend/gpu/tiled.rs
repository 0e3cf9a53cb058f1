//! Matrices resident on the GPU, split into tiles of whole rows so that each tile fits one storage
//! binding: the products of `kernels/matmul.rs` (and the randomized SVD built on them), the
//! rotation and the grouped-grid fit run tile by tile over these.

use super::{Gpu, GpuFailure, GpuResult};

/// A row-major matrix resident on the GPU, split into tiles of whole rows (one buffer each).
pub(in crate::backend) struct Tiled {
    pub(in crate::backend) cols: usize,
    /// (first row, rows, buffer)
    pub(in crate::backend) tiles: Vec<(usize, usize, wgpu::Buffer)>,
}

impl Gpu {
    /// Uploads a row-major `rows x cols` matrix in tiles of whole rows that fit one binding.
    /// `tile_cols` is the widest matrix that will share this row tiling (tiles are sized so that a
    /// tile of it fits one binding).
    pub(in crate::backend) fn upload_tiled(
        &self,
        values: &[f32],
        rows: usize,
        cols: usize,
        tile_cols: usize,
        label: &str,
    ) -> GpuResult<Tiled> {
        let rows_per_tile = self.rows_per_tile(cols.max(tile_cols))?;
        let mut tiles = Vec::new();
        let mut first = 0;
        while first < rows || (rows == 0 && tiles.is_empty()) {
            let n = rows_per_tile.min(rows - first);
            let buffer = self.upload(&values[first * cols..(first + n) * cols], label);
            tiles.push((first, n, buffer));
            first += n;
            if rows == 0 {
                break;
            }
        }
        Ok(Tiled { cols, tiles })
    }

    /// A zeroed matrix with the same row tiling as `like` and `cols` columns.
    pub(in crate::backend) fn zeroed_like(&self, like: &Tiled, cols: usize, label: &str) -> Tiled {
        Tiled {
            cols,
            tiles: like
                .tiles
                .iter()
                .map(|&(first, n, _)| (first, n, self.zeroed(n * cols * 4, label)))
                .collect(),
        }
    }

    /// Rows of `cols` f32 that one binding holds (at least 1).
    pub(in crate::backend) fn rows_per_tile(&self, cols: usize) -> GpuResult<usize> {
        let row_bytes = cols.max(1) as u64 * 4;
        if row_bytes > self.max_binding {
            return Err(GpuFailure::Unsupported(format!(
                "a row of {cols} values exceeds one binding ({} bytes)",
                self.max_binding
            )));
        }
        Ok((self.max_binding / row_bytes) as usize)
    }

    pub(in crate::backend) async fn read_tiled(&self, t: &Tiled) -> GpuResult<Vec<f32>> {
        let mut out = Vec::new();
        for (_, n, buffer) in &t.tiles {
            out.extend(self.read::<f32>(buffer, n * t.cols).await?);
        }
        Ok(out)
    }

    /// Uploads `values` (`rows(like) x cols`) with the row tiling of `like`.
    pub(in crate::backend) fn upload_tiled_like(
        &self,
        values: &[f32],
        like: &Tiled,
        cols: usize,
        label: &str,
    ) -> Tiled {
        Tiled {
            cols,
            tiles: like
                .tiles
                .iter()
                .map(|&(first, n, _)| {
                    (
                        first,
                        n,
                        self.upload(&values[first * cols..(first + n) * cols], label),
                    )
                })
                .collect(),
        }
    }
}
