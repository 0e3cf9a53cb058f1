//! The model runtime's linear layer `y = x W^T + b`, `shaders/linear.wgsl`: a matrix-vector
//! product for one row (`matvec`) and a tiled product for several (`tiled`).
//!
//! - Arguments: `LinearDims`, the kernel's uniform (GPU builds).
//! - CPU twin: [`linear`] (f32, each output one dot product; the model's own CPU path,
//!   `model::ops::Linear`, sums in another order and is checked against it in the tests).
//! - GPU host code: `Pass::linear` (resident operands), `Gpu::linear` (one upload, one readback).

use crate::error::{Error, Result};

// ---------------------------------------------------------------------------------------------
// CPU twin

/// Checks the operands of `y = x W^T + b`.
pub fn check_linear(
    x: &[f32],
    n: usize,
    w: &[f32],
    out_dim: usize,
    in_dim: usize,
    bias: Option<&[f32]>,
) -> Result<()> {
    if n.checked_mul(in_dim) != Some(x.len())
        || out_dim.checked_mul(in_dim) != Some(w.len())
        || bias.is_some_and(|b| b.len() != out_dim)
    {
        return Err(Error::invalid(format!(
            "linear: x has {} values for {n} x {in_dim}, W {} for {out_dim} x {in_dim}",
            x.len(),
            w.len()
        )));
    }
    Ok(())
}

/// `y = x W^T + b` (`n x out_dim`), each output summed in f32 in index order.
pub fn linear(
    x: &[f32],
    n: usize,
    w: &[f32],
    out_dim: usize,
    in_dim: usize,
    bias: Option<&[f32]>,
) -> Vec<f32> {
    let mut y = Vec::with_capacity(n * out_dim);
    for i in 0..n {
        let xi = &x[i * in_dim..(i + 1) * in_dim];
        for j in 0..out_dim {
            let wj = &w[j * in_dim..(j + 1) * in_dim];
            let s: f32 = xi.iter().zip(wj).map(|(a, b)| a * b).sum();
            y.push(s + bias.map_or(0.0, |b| b[j]));
        }
    }
    y
}

// ---------------------------------------------------------------------------------------------
// Arguments: the uniform of linear.wgsl

/// `LinearDims` of linear.wgsl, field for field (4 words).
#[cfg(feature = "gpu")]
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct LinearDims {
    n: u32,
    out_dim: u32,
    in_dim: u32,
    has_bias: u32,
}

#[cfg(feature = "gpu")]
pub(super) fn layout() -> super::UniformLayout {
    uniform_layout!(
        crate::shaders::LINEAR,
        LinearDims {
            n,
            out_dim,
            in_dim,
            has_bias
        }
    )
}

// ---------------------------------------------------------------------------------------------
// GPU host code

#[cfg(feature = "gpu")]
mod host {
    use super::LinearDims;
    use crate::backend::gpu::{grid, to_u32, DeviceTensor, Gpu, GpuResult, Pass};
    use crate::backend::GpuFailure;
    use crate::shaders;

    /// Output rows per `matvec` workgroup, and the `tiled` block edge (linear.wgsl).
    const MATVEC_ROWS: usize = 4;
    const TILE: usize = 16;

    impl Pass<'_> {
        /// Records `y = x W^T + b` over resident operands (`x`: `n x in_dim`, `w`:
        /// `out_dim x in_dim`, `y`: at least `n x out_dim`).
        #[allow(clippy::too_many_arguments)]
        pub fn linear(
            &mut self,
            x: &DeviceTensor,
            n: usize,
            w: &DeviceTensor,
            bias: Option<&DeviceTensor>,
            out_dim: usize,
            in_dim: usize,
            y: &DeviceTensor,
        ) -> GpuResult<()> {
            if x.len() < n * in_dim
                || w.len() != out_dim * in_dim
                || y.len() < n * out_dim
                || bias.is_some_and(|b| b.len() != out_dim)
            {
                return Err(GpuFailure::Unsupported(format!(
                    "linear: operands of {} / {} / {} values for {n} x {in_dim} -> {out_dim}",
                    x.len(),
                    w.len(),
                    y.len()
                )));
            }
            if n == 0 || out_dim == 0 {
                return Ok(());
            }
            let dims = LinearDims {
                n: to_u32(n, "rows")?,
                out_dim: to_u32(out_dim, "outputs")?,
                in_dim: to_u32(in_dim, "inputs")?,
                has_bias: bias.is_some() as u32,
            };
            // Without a bias, W stands in for the unused binding (read-only, so it may repeat).
            let tensors = [x, w, bias.unwrap_or(w), y];
            if n == 1 {
                let (gx, gy) = grid(out_dim.div_ceil(MATVEC_ROWS))?;
                self.kernel(&shaders::LINEAR, "matvec", &dims, &tensors, (gx, gy, 1));
            } else {
                let (gx, gy) = (out_dim.div_ceil(TILE), n.div_ceil(TILE));
                if gx > 65_535 || gy > 65_535 {
                    return Err(GpuFailure::Unsupported(format!(
                        "a {n} x {out_dim} linear layer exceeds one dispatch"
                    )));
                }
                self.kernel(
                    &shaders::LINEAR,
                    "tiled",
                    &dims,
                    &tensors,
                    (gx as u32, gy as u32, 1),
                );
            }
            Ok(())
        }
    }

    impl Gpu {
        /// [`super::linear`] on the GPU: one upload, one dispatch, one readback.
        pub async fn linear(
            &self,
            x: &[f32],
            n: usize,
            w: &[f32],
            out_dim: usize,
            in_dim: usize,
            bias: Option<&[f32]>,
        ) -> GpuResult<Vec<f32>> {
            let xt = self.tensor(x, "x")?;
            let wt = self.tensor(w, "W")?;
            let bt = bias.map(|b| self.tensor(b, "bias")).transpose()?;
            let yt = self.zeros(n * out_dim, "y")?;
            let mut pass = self.pass();
            pass.linear(&xt, n, &wt, bt.as_ref(), out_dim, in_dim, &yt)?;
            pass.submit();
            self.read_tensor(&yt, n * out_dim).await
        }
    }
}
