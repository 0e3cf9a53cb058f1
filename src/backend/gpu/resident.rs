//! Arrays that stay on the device between kernels, and a [`Pass`]: kernels recorded into one
//! command buffer, submitted together. The model runtime (`model::device`) keeps its weights and
//! KV cache as [`DeviceTensor`]s, records a whole forward pass into one `Pass` and reads back only
//! what the step needs (logits, pooled embeddings): the forward kernels of `backend/kernels/`
//! (`linear`, `norm`, `elementwise`, `rope`, `attention`, `pool`) record into a `Pass`.
//!
//! A `DeviceTensor` is one buffer, so one storage binding: an array larger than the binding limit
//! is refused (`Unsupported`) when it is made, and the caller keeps the CPU path.

use super::{Gpu, GpuFailure, GpuResult};

/// An f32 array resident on the device (one storage buffer).
pub struct DeviceTensor {
    pub(in crate::backend) buffer: wgpu::Buffer,
    len: usize,
}

impl DeviceTensor {
    /// Values held.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Kernels recorded for one submission. Nothing runs until [`Pass::submit`]; buffers written by
/// one kernel are read by the next in recording order.
pub struct Pass<'g> {
    pub(in crate::backend) gpu: &'g Gpu,
    pub(in crate::backend) encoder: wgpu::CommandEncoder,
}

impl Gpu {
    /// `data` on the device; `Unsupported` when it exceeds one binding.
    pub fn tensor(&self, data: &[f32], label: &str) -> GpuResult<DeviceTensor> {
        self.check_binding(data.len() * 4, label)?;
        Ok(DeviceTensor {
            buffer: self.upload(data, label),
            len: data.len(),
        })
    }

    /// `len` zeros on the device; `Unsupported` when they exceed one binding.
    pub fn zeros(&self, len: usize, label: &str) -> GpuResult<DeviceTensor> {
        self.check_binding(len * 4, label)?;
        Ok(DeviceTensor {
            buffer: self.zeroed(len * 4, label),
            len,
        })
    }

    /// An empty pass.
    pub fn pass(&self) -> Pass<'_> {
        Pass {
            gpu: self,
            encoder: self.encoder(),
        }
    }

    /// The first `count` values of `t` (waits for the work submitted so far).
    pub async fn read_tensor(&self, t: &DeviceTensor, count: usize) -> GpuResult<Vec<f32>> {
        if count > t.len {
            return Err(GpuFailure::Unsupported(format!(
                "reading {count} values of a tensor of {}",
                t.len
            )));
        }
        self.read::<f32>(&t.buffer, count).await
    }
}

impl Pass<'_> {
    /// Submits the recorded kernels.
    pub fn submit(self) {
        self.gpu.submit(self.encoder);
    }

    /// Copies `len` values from `src[src_at..]` to `dst[dst_at..]` (in recording order).
    pub fn copy(
        &mut self,
        src: &DeviceTensor,
        src_at: usize,
        dst: &DeviceTensor,
        dst_at: usize,
        len: usize,
    ) -> GpuResult<()> {
        if src_at + len > src.len || dst_at + len > dst.len {
            return Err(GpuFailure::Unsupported(format!(
                "a copy of {len} values at {src_at} -> {dst_at} outside {} / {}",
                src.len, dst.len
            )));
        }
        if len > 0 {
            self.encoder.copy_buffer_to_buffer(
                &src.buffer,
                src_at as u64 * 4,
                &dst.buffer,
                dst_at as u64 * 4,
                len as u64 * 4,
            );
        }
        Ok(())
    }

    /// Records one dispatch of `entry` in `shader` with its uniform `dims` at binding 0 and
    /// `tensors` at the bindings 1, 2, ... in order.
    pub(in crate::backend) fn kernel<T: bytemuck::Pod>(
        &mut self,
        shader: &crate::shaders::Shader,
        entry: &'static str,
        dims: &T,
        tensors: &[&DeviceTensor],
        groups: (u32, u32, u32),
    ) {
        let uniform = self.gpu.uniform(dims);
        let mut bindings = vec![(0u32, &uniform)];
        bindings.extend(
            tensors
                .iter()
                .enumerate()
                .map(|(i, t)| (i as u32 + 1, &t.buffer)),
        );
        self.gpu
            .dispatch(&mut self.encoder, shader, entry, &bindings, groups);
    }
}
