//! The model runtime's attention, softmax inside, `shaders/attention.wgsl`: causal over a KV
//! cache with grouped-query heads (decoders), or every query over every key of one sentence
//! (encoders).
//!
//! - Arguments: [`AttentionShape`], sent as `AttentionDims`, the kernel's uniform (GPU builds).
//! - CPU twin: [`attention`] (the arithmetic of `model::llama` and `model::bert`'s attention).
//! - GPU host code: `Pass::attention` (resident, keys and values in the cache), `Gpu::attention`
//!   (one upload, one readback).

use crate::error::{Error, Result};

/// The shape of one attention call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttentionShape {
    /// Query rows of this call.
    pub rows: usize,
    pub heads: usize,
    /// Key/value heads (`heads` is a multiple of it; equal without grouped-query attention).
    pub kv_heads: usize,
    pub head_dim: usize,
    /// Positions before the first query row (their keys are in the cache; 0 for encoders).
    pub past: usize,
    /// Causal (row `i` sees keys `0..=past + i`) or bidirectional (every key).
    pub causal: bool,
}

impl AttentionShape {
    /// Key and value rows the call reads.
    pub fn keys(&self) -> usize {
        self.past + self.rows
    }

    /// Checks the shape and the operand lengths (`q`, then keys and values).
    pub fn check(&self, q: usize, k: usize, v: usize) -> Result<()> {
        let s = self;
        let kv = s.keys() * s.kv_heads * s.head_dim;
        if s.kv_heads == 0
            || !s.heads.is_multiple_of(s.kv_heads)
            || q != s.rows * s.heads * s.head_dim
            || k < kv
            || v < kv
            || (!s.causal && s.past != 0)
        {
            return Err(Error::invalid(format!(
                "attention: {q} / {k} / {v} values for {s:?}"
            )));
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// CPU twin

/// `softmax(q K^T / sqrt(head_dim)) V` for each query row and head (`rows x heads*head_dim`);
/// `k` and `v` are `keys x kv_heads*head_dim`.
pub fn attention(q: &[f32], k: &[f32], v: &[f32], s: &AttentionShape) -> Vec<f32> {
    let (d, heads, kvh) = (s.head_dim, s.heads, s.kv_heads);
    let group = heads / kvh;
    let scale = 1.0 / (d as f32).sqrt();
    let mut ctx = vec![0.0f32; s.rows * heads * d];
    let mut scores = Vec::with_capacity(s.keys());
    for i in 0..s.rows {
        let seen = if s.causal { s.past + i + 1 } else { s.keys() };
        for head in 0..heads {
            let qh = &q[(i * heads + head) * d..][..d];
            let kvo = (head / group) * d;
            scores.clear();
            scores.extend((0..seen).map(|j| {
                let kj = &k[j * kvh * d + kvo..][..d];
                qh.iter().zip(kj).map(|(a, b)| a * b).sum::<f32>() * scale
            }));
            let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0.0f32;
            for p in scores.iter_mut() {
                *p = (*p - max).exp();
                sum += *p;
            }
            let out = &mut ctx[(i * heads + head) * d..][..d];
            for (j, &p) in scores.iter().enumerate() {
                let vj = &v[j * kvh * d + kvo..][..d];
                out.iter_mut().zip(vj).for_each(|(a, b)| *a += p / sum * b);
            }
        }
    }
    ctx
}

// ---------------------------------------------------------------------------------------------
// Arguments: the uniform of attention.wgsl

/// `AttentionDims` of attention.wgsl, field for field (8 words).
#[cfg(feature = "gpu")]
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct AttentionDims {
    rows: u32,
    heads: u32,
    kv_heads: u32,
    head_dim: u32,
    past: u32,
    keys: u32,
    causal: u32,
    scale: f32,
}

#[cfg(feature = "gpu")]
pub(super) fn layout() -> super::UniformLayout {
    uniform_layout!(
        crate::shaders::ATTENTION,
        AttentionDims {
            rows,
            heads,
            kv_heads,
            head_dim,
            past,
            keys,
            causal,
            scale
        }
    )
}

// ---------------------------------------------------------------------------------------------
// GPU host code

#[cfg(feature = "gpu")]
mod host {
    use super::{AttentionDims, AttentionShape};
    use crate::backend::gpu::{grid, to_u32, DeviceTensor, Gpu, GpuResult, Pass};
    use crate::backend::GpuFailure;
    use crate::shaders;

    impl Pass<'_> {
        /// Records the attention of `q` over the first `shape.keys()` rows of `k` and `v` into
        /// `ctx`, with `scores` as scratch (at least `rows * heads * keys` values: see
        /// [`AttentionShape::scratch`]).
        pub fn attention(
            &mut self,
            shape: &AttentionShape,
            [q, k, v]: [&DeviceTensor; 3],
            scores: &DeviceTensor,
            ctx: &DeviceTensor,
        ) -> GpuResult<()> {
            let s = shape;
            let rows = s.rows * s.heads * s.head_dim;
            // The shape and the cache (checked as the CPU twin's operands), then the buffers.
            if let Err(e) = s.check(rows, k.len(), v.len()) {
                return Err(GpuFailure::Unsupported(e.to_string()));
            }
            if q.len() < rows || ctx.len() < rows || scores.len() < s.scratch() {
                return Err(GpuFailure::Unsupported(format!(
                    "attention: buffers too short for {s:?}"
                )));
            }
            if s.rows == 0 || s.heads == 0 || s.head_dim == 0 {
                return Ok(());
            }
            let dims = AttentionDims {
                rows: to_u32(s.rows, "rows")?,
                heads: to_u32(s.heads, "heads")?,
                kv_heads: to_u32(s.kv_heads, "key/value heads")?,
                head_dim: to_u32(s.head_dim, "head width")?,
                past: to_u32(s.past, "past positions")?,
                keys: to_u32(s.keys(), "keys")?,
                causal: s.causal as u32,
                scale: 1.0 / (s.head_dim as f32).sqrt(),
            };
            let (gx, gy) = grid(s.rows * s.heads)?;
            self.kernel(
                &shaders::ATTENTION,
                "main",
                &dims,
                &[q, k, v, scores, ctx],
                (gx, gy, 1),
            );
            Ok(())
        }
    }

    impl AttentionShape {
        /// Values of the scratch buffer the GPU kernel needs (one score per row, head and key).
        pub fn scratch(&self) -> usize {
            (self.rows * self.heads * self.keys()).max(1)
        }
    }

    impl Gpu {
        /// [`super::attention`] on the GPU: one upload, one readback.
        pub async fn attention(
            &self,
            q: &[f32],
            k: &[f32],
            v: &[f32],
            shape: &AttentionShape,
        ) -> GpuResult<Vec<f32>> {
            let (qt, kt, vt) = (
                self.tensor(q, "q")?,
                self.tensor(k, "k")?,
                self.tensor(v, "v")?,
            );
            let scores = self.zeros(shape.scratch(), "scores")?;
            let ctx = self.zeros(q.len(), "ctx")?;
            let mut pass = self.pass();
            pass.attention(shape, [&qt, &kt, &vt], &scores, &ctx)?;
            pass.submit();
            self.read_tensor(&ctx, q.len()).await
        }
    }
}
