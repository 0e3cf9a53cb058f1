//! The model runtime's rotary positions, `shaders/rope.wgsl`, in place on query and key rows.
//!
//! - Arguments: `RopeDims`, the kernel's uniform (GPU builds), and the cos/sin table of
//!   [`rope_table`] (angles in f64 on the host, as the CPU runtime computes them).
//! - CPU twin: [`rope`] (the arithmetic of `model::llama`'s rotation).
//! - GPU host code: `Pass::rope` (resident), `Gpu::rope` (one upload, one readback).

// ---------------------------------------------------------------------------------------------
// CPU twin

/// `(cos, sin)` of `pos * f` for each frequency `f` of `inv_freq`, for the `rows` positions from
/// `first`: `rows x inv_freq.len() x 2` values, computed in f64 and rounded to f32.
pub fn rope_table(inv_freq: &[f64], first: usize, rows: usize) -> Vec<f32> {
    let mut t = Vec::with_capacity(rows * inv_freq.len() * 2);
    for r in 0..rows {
        let pos = (first + r) as f64;
        for f in inv_freq {
            let a = pos * f;
            t.extend([a.cos() as f32, a.sin() as f32]);
        }
    }
    t
}

/// Rotates each `head_dim`-wide head of each row of `x` (`heads` per row) by the row's entry of
/// `table` ([`rope_table`]): element `k` pairs with `k + head_dim/2`.
pub fn rope(x: &mut [f32], heads: usize, head_dim: usize, table: &[f32]) {
    let half = head_dim / 2;
    for (r, row) in x.chunks_exact_mut(heads * head_dim).enumerate() {
        let t = &table[r * half * 2..(r + 1) * half * 2];
        for head in row.chunks_exact_mut(head_dim) {
            for k in 0..half {
                let (c, s) = (t[2 * k], t[2 * k + 1]);
                let (a, b) = (head[k], head[k + half]);
                head[k] = a * c - b * s;
                head[k + half] = b * c + a * s;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Arguments: the uniform of rope.wgsl

/// `RopeDims` of rope.wgsl, field for field (4 words).
#[cfg(feature = "gpu")]
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct RopeDims {
    rows: u32,
    heads: u32,
    head_dim: u32,
    groups_x: u32,
}

#[cfg(feature = "gpu")]
pub(super) fn layout() -> super::UniformLayout {
    uniform_layout!(
        crate::shaders::ROPE,
        RopeDims {
            rows,
            heads,
            head_dim,
            groups_x
        }
    )
}

// ---------------------------------------------------------------------------------------------
// GPU host code

#[cfg(feature = "gpu")]
mod host {
    use super::RopeDims;
    use crate::backend::gpu::{grid, to_u32, DeviceTensor, Gpu, GpuResult, Pass, WORKGROUP};
    use crate::backend::GpuFailure;
    use crate::shaders;

    impl Pass<'_> {
        /// Records the rotation of `rows` rows of `x` (`heads x head_dim` each) by `table`.
        pub fn rope(
            &mut self,
            x: &DeviceTensor,
            rows: usize,
            heads: usize,
            head_dim: usize,
            table: &DeviceTensor,
        ) -> GpuResult<()> {
            let pairs = rows * heads * (head_dim / 2);
            if x.len() < rows * heads * head_dim || table.len() < rows * (head_dim / 2) * 2 {
                return Err(GpuFailure::Unsupported(format!(
                    "rope: {} values / a table of {} for {rows} rows of {heads} x {head_dim}",
                    x.len(),
                    table.len()
                )));
            }
            if pairs == 0 {
                return Ok(());
            }
            let (gx, gy) = grid(pairs.div_ceil(WORKGROUP))?;
            let dims = RopeDims {
                rows: to_u32(rows, "rows")?,
                heads: to_u32(heads, "heads")?,
                head_dim: to_u32(head_dim, "head width")?,
                groups_x: gx,
            };
            self.kernel(&shaders::ROPE, "main", &dims, &[x, table], (gx, gy, 1));
            Ok(())
        }
    }

    impl Gpu {
        /// [`super::rope`] on the GPU: one upload, one readback.
        pub async fn rope(
            &self,
            x: &[f32],
            heads: usize,
            head_dim: usize,
            table: &[f32],
        ) -> GpuResult<Vec<f32>> {
            let rows = x.len() / (heads * head_dim).max(1);
            let xt = self.tensor(x, "x")?;
            let tt = self.tensor(table, "rope table")?;
            let mut pass = self.pass();
            pass.rope(&xt, rows, heads, head_dim, &tt)?;
            pass.submit();
            self.read_tensor(&xt, x.len()).await
        }
    }
}
