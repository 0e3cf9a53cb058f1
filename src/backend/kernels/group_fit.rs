//! The grouped scalar grid's per-group fit, `shaders/group_fit.wgsl`: for each group of `group`
//! consecutive values of a row, the f16 (scale, minimum) with the smallest squared error (min/max
//! range, then shrunk ranges, each as is and refitted by least squares), and the group's codes.
//! The scalar codec (`codec::scalar`, grid `Grouped`) stores what this returns.
//!
//! - Arguments: `GroupDims`, the kernel's uniform (GPU builds).
//! - CPU twin: [`fit_groups`], checked by [`check_groups`]; [`group_errors`] measures a fit.
//! - GPU host code: `Gpu::fit_groups`.

use half::f16;

use crate::error::{Error, Result};

/// The result of [`crate::backend::Backend::fit_groups`].
#[derive(Clone, Debug, PartialEq)]
pub struct GroupFits {
    /// (scale, minimum) per group in storage order, each exactly an f16 value.
    pub fits: Vec<(f32, f32)>,
    /// One code per value, `0 ..= 2^bits - 1`.
    pub codes: Vec<u32>,
}

// ---------------------------------------------------------------------------------------------
// CPU twin

/// Checks the operands of the grouped-grid fit (see [`crate::backend::Backend::fit_groups`]).
pub fn check_groups(
    values: &[f32],
    rows: usize,
    cols: usize,
    bits: u8,
    group: usize,
) -> Result<()> {
    if rows.checked_mul(cols) != Some(values.len()) {
        return Err(Error::invalid(format!(
            "{} values for a {rows} x {cols} matrix",
            values.len()
        )));
    }
    if !(1..=8).contains(&bits) || group == 0 {
        return Err(Error::option(format!(
            "grouped scalar grid needs 1-8 bits and a group > 0 (got {bits}b g{group})"
        )));
    }
    Ok(())
}

/// Scale and offset of one group, as stored (f16) and as used (the f16 values widened to f32).
#[derive(Clone, Copy)]
struct GroupFit {
    scale: f16,
    minimum: f16,
}

#[inline]
fn quantize_grouped(v: f32, scale: f32, minimum: f32, top: f32) -> f32 {
    if scale > 0.0 {
        ((v - minimum) / scale).round().clamp(0.0, top)
    } else {
        0.0
    }
}

fn group_error(group: &[f32], scale: f32, minimum: f32, top: f32) -> f64 {
    group
        .iter()
        .map(|&v| {
            let q = quantize_grouped(v, scale, minimum, top);
            ((q * scale + minimum - v) as f64).powi(2)
        })
        .sum()
}

/// Fits a group's scale and offset. With `search`, tries shrunk ranges and refits (scale,
/// offset) by least squares on the resulting codes, keeping the smallest squared error; without
/// it, the plain min/max range. The error is always measured with the f16-rounded values that
/// are stored.
fn fit_group(group: &[f32], bits: u8, search: bool) -> GroupFit {
    let top = ((1u32 << bits) - 1) as f32;
    let lo = group.iter().copied().fold(f32::INFINITY, f32::min);
    let hi = group.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let stored = |scale: f32, minimum: f32| GroupFit {
        scale: f16::from_f32(scale.max(0.0)),
        minimum: f16::from_f32(minimum),
    };
    let plain = stored((hi - lo) / top, lo);
    if !search || hi <= lo {
        return plain;
    }
    let eval = |f: GroupFit| group_error(group, f.scale.to_f32(), f.minimum.to_f32(), top);
    let mut best = (eval(plain), plain);
    for i in 0..12 {
        let shrink = 1.0 - 0.04 * i as f32;
        let half = 0.5 * (hi - lo) * shrink;
        let mid = 0.5 * (hi + lo);
        let (scale, minimum) = (2.0 * half / top, mid - half);
        for f in [stored(scale, minimum), refit(group, scale, minimum, top)] {
            let e = eval(f);
            if e < best.0 {
                best = (e, f);
            }
        }
    }
    best.1
}

/// Least-squares (scale, offset) for the codes that (scale, minimum) gives the group.
fn refit(group: &[f32], scale: f32, minimum: f32, top: f32) -> GroupFit {
    let n = group.len() as f64;
    let (mut sq, mut sqq, mut sx, mut sqx) = (0f64, 0f64, 0f64, 0f64);
    for &v in group {
        let q = quantize_grouped(v, scale, minimum, top) as f64;
        sq += q;
        sqq += q * q;
        sx += v as f64;
        sqx += q * v as f64;
    }
    let det = n * sqq - sq * sq;
    let (s, m) = if det.abs() > 1e-12 {
        let s = (n * sqx - sq * sx) / det;
        (s, (sx - s * sq) / n)
    } else {
        (scale as f64, minimum as f64)
    };
    GroupFit {
        scale: f16::from_f32((s as f32).max(0.0)),
        minimum: f16::from_f32(m as f32),
    }
}

/// The groups of a row-major `rows x cols` matrix: consecutive runs of `group` elements within
/// each row (the last group of a row may be shorter). Yields (start, len) in storage order.
fn groups(rows: usize, cols: usize, group: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..rows).flat_map(move |r| {
        (0..cols)
            .step_by(group)
            .map(move |c| (r * cols + c, group.min(cols - c)))
    })
}

/// The grouped grid's (scale, minimum) per group and codes: the CPU twin of
/// `shaders/group_fit.wgsl`, and what the scalar codec stores.
pub fn fit_groups(
    values: &[f32],
    rows: usize,
    cols: usize,
    bits: u8,
    group: usize,
    search: bool,
) -> GroupFits {
    let top = ((1u32 << bits) - 1) as f32;
    let mut fits = Vec::with_capacity(rows * cols.div_ceil(group.max(1)));
    let mut codes = Vec::with_capacity(values.len());
    for (start, len) in groups(rows, cols, group) {
        let g = &values[start..start + len];
        let fit = fit_group(g, bits, search);
        let (scale, minimum) = (fit.scale.to_f32(), fit.minimum.to_f32());
        fits.push((scale, minimum));
        codes.extend(
            g.iter()
                .map(|&v| quantize_grouped(v, scale, minimum, top) as u32),
        );
    }
    GroupFits { fits, codes }
}

/// The squared error of every group (storage order) when `x` is coded with `fits`: value =
/// code x scale + minimum, as the scalar decoder computes it.
pub fn group_errors(
    x: &[f32],
    rows: usize,
    cols: usize,
    group: usize,
    fits: &GroupFits,
) -> Vec<f64> {
    let mut out = Vec::new();
    for r in 0..rows {
        for c0 in (0..cols).step_by(group) {
            let start = r * cols + c0;
            let (s, m) = fits.fits[out.len()];
            out.push(
                (start..start + group.min(cols - c0))
                    .map(|i| ((fits.codes[i] as f32 * s + m - x[i]) as f64).powi(2))
                    .sum(),
            );
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Arguments: the uniform of group_fit.wgsl

/// `GroupDims` of group_fit.wgsl, field for field (8 words).
#[cfg(feature = "gpu")]
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct GroupDims {
    rows: u32,
    cols: u32,
    group: u32,
    bits: u32,
    search: u32,
    groups_x: u32,
    _pad: [u32; 2],
}

#[cfg(feature = "gpu")]
pub(super) fn layout() -> super::UniformLayout {
    uniform_layout!(
        crate::shaders::GROUP_FIT,
        GroupDims {
            rows,
            cols,
            group,
            bits,
            search,
            groups_x
        }
    )
}

// ---------------------------------------------------------------------------------------------
// GPU host code

#[cfg(feature = "gpu")]
mod host {
    use super::{GroupDims, GroupFits};
    use crate::backend::gpu::{grid, to_u32, Gpu, GpuResult, WORKGROUP};
    use crate::shaders;

    impl Gpu {
        /// [`crate::backend::Backend::fit_groups`] on the GPU, row tiles of the values.
        pub async fn fit_groups(
            &self,
            values: &[f32],
            rows: usize,
            cols: usize,
            bits: u8,
            group: usize,
            search: bool,
        ) -> GpuResult<GroupFits> {
            let per_row = cols.div_ceil(group);
            // A tile's fits take up to two floats per value (groups of one).
            let tiled = self.upload_tiled(values, rows, cols, 2 * cols, "values")?;
            let mut outputs = Vec::new();
            let mut encoder = self.encoder();
            for (_, n, buffer) in &tiled.tiles {
                let groups = n * per_row;
                self.check_binding(groups * 8, "the group fits")?;
                let (gx, gy) = grid(groups.div_ceil(WORKGROUP))?;
                let dims = GroupDims {
                    rows: to_u32(*n, "rows")?,
                    cols: to_u32(cols, "columns")?,
                    group: to_u32(group, "group")?,
                    bits: bits as u32,
                    search: search as u32,
                    groups_x: gx,
                    _pad: [0; 2],
                };
                let uniform = self.uniform(&dims);
                let fits = self.zeroed(groups * 8, "fits");
                let codes = self.zeroed(n * cols * 4, "codes");
                self.dispatch(
                    &mut encoder,
                    &shaders::GROUP_FIT,
                    "main",
                    &[(0, &uniform), (1, buffer), (2, &fits), (3, &codes)],
                    (gx, gy, 1),
                );
                outputs.push((groups, n * cols, fits, codes));
            }
            self.submit(encoder);
            let mut out = GroupFits {
                fits: Vec::with_capacity(rows * per_row),
                codes: Vec::with_capacity(values.len()),
            };
            for (groups, len, fits, codes) in &outputs {
                let f = self.read::<f32>(fits, 2 * groups).await?;
                out.fits.extend(f.chunks_exact(2).map(|p| (p[0], p[1])));
                out.codes.extend(self.read::<u32>(codes, *len).await?);
            }
            Ok(out)
        }
    }
}
