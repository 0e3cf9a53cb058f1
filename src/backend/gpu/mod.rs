//! The GPU backend's shared machinery: the wgpu device and queue, the pipelines of every kernel in
//! [`crate::shaders`], buffers, dispatch, readback and error handling. The host code of each
//! kernel (its uniform, buffers and dispatch grid) lives beside its CPU twin in
//! `backend/kernels/<kernel>.rs`, one file per `shaders/<kernel>.wgsl`; the data that several
//! kernels share while resident on the device is here ([`tiled`]: matrices split into row tiles,
//! [`points`]: the k-means point set).
//!
//! Limits: a storage binding holds at most `max_binding` bytes (128 MiB by default in browsers).
//! Matrices and point sets larger than that are split into tiles of whole rows, one buffer each,
//! and the kernels run tile by tile (products over a tiled dimension accumulate). Arrays that are
//! not tiled (the sketch, a codebook, the partial sums of one k-means pass) must fit one binding;
//! when one does not, the call answers `Unsupported` and that call runs on the CPU.
//!
//! Errors: wgpu reports validation errors, out-of-memory and device loss asynchronously, to the
//! handlers installed in [`Gpu::new`]; every readback checks them, so a failed dispatch surfaces
//! as `GpuFailure::Failed` at the next read and the caller falls back to the CPU.

pub(super) mod points;
pub mod resident;
pub(super) mod tiled;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytemuck::Pod;

use super::GpuFailure;
use crate::shaders;

pub(super) use points::PointSet;
pub use resident::{DeviceTensor, Pass};
pub(super) use tiled::Tiled;

pub use wgpu::DeviceType;

pub type GpuResult<T> = std::result::Result<T, GpuFailure>;

/// Most workgroups along one dimension of a dispatch (WebGPU's guaranteed limit).
pub(super) const MAX_GROUPS_PER_DIM: u32 = 65_535;
/// Invocations per workgroup of the 1-D kernels.
pub(super) const WORKGROUP: usize = 256;

/// Settings of a GPU backend (tests lower the binding limit to exercise tiling).
#[derive(Clone, Debug, Default)]
pub struct GpuOptions {
    /// Use at most this many bytes per storage binding (`None`: the device's limit).
    pub max_binding_bytes: Option<u64>,
}

pub struct Gpu {
    device: wgpu::Device,
    queue: wgpu::Queue,
    info: wgpu::AdapterInfo,
    /// Bytes one storage binding may hold (the device limit, or less if asked).
    max_binding: u64,
    pipelines: HashMap<(&'static str, &'static str), wgpu::ComputePipeline>,
    /// The first asynchronous error or device loss wgpu reported.
    device_error: Arc<Mutex<Option<String>>>,
    /// Why the run gave up the GPU (set once; later calls run on the CPU).
    fallback: Mutex<Option<String>>,
}

pub(super) fn failed(what: &str, e: impl std::fmt::Display) -> GpuFailure {
    GpuFailure::Failed(format!("{what}: {e}"))
}

/// Workgroups for `groups` in a grid of at most 65535 along x (and y).
pub(super) fn grid(groups: usize) -> GpuResult<(u32, u32)> {
    let x = groups.clamp(1, MAX_GROUPS_PER_DIM as usize);
    let y = groups.div_ceil(x).max(1);
    if y > MAX_GROUPS_PER_DIM as usize {
        return Err(GpuFailure::Unsupported(format!(
            "{groups} workgroups exceed a dispatch"
        )));
    }
    Ok((x as u32, y as u32))
}

pub(super) fn to_u32(v: usize, what: &str) -> GpuResult<u32> {
    u32::try_from(v).map_err(|_| GpuFailure::Unsupported(format!("{what} ({v}) exceeds 32 bits")))
}

impl Gpu {
    /// Opens the first adapter wgpu offers (high-performance preference; `WGPU_BACKEND` and
    /// `WGPU_ADAPTER_NAME` are honoured natively), with the adapter's own limits, and creates every
    /// pipeline of the registry (so a kernel the device rejects fails here, not mid-run).
    pub async fn new(options: GpuOptions) -> std::result::Result<Gpu, String> {
        let instance =
            wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle().with_env());
        let adapter = instance
            .request_adapter(&wgpu::RequestAdapterOptions {
                power_preference: wgpu::PowerPreference::HighPerformance,
                ..Default::default()
            })
            .await
            .map_err(|e| e.to_string())?;
        let info = adapter.get_info();
        let limits = adapter.limits();
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("lowbit"),
                required_features: wgpu::Features::empty(),
                required_limits: limits.clone(),
                experimental_features: wgpu::ExperimentalFeatures::disabled(),
                memory_hints: wgpu::MemoryHints::Performance,
                trace: wgpu::Trace::Off,
            })
            .await
            .map_err(|e| format!("{} refused a device: {e}", info.name))?;
        let device_error = Arc::new(Mutex::new(None::<String>));
        {
            let slot = device_error.clone();
            device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
                let mut slot = slot.lock().unwrap_or_else(|p| p.into_inner());
                slot.get_or_insert_with(|| e.to_string());
            }));
            let slot = device_error.clone();
            device.set_device_lost_callback(move |reason, message| {
                let mut slot = slot.lock().unwrap_or_else(|p| p.into_inner());
                slot.get_or_insert_with(|| format!("device lost ({reason:?}): {message}"));
            });
        }
        let device_limit = limits
            .max_storage_buffer_binding_size
            .min(limits.max_buffer_size);
        let max_binding = options
            .max_binding_bytes
            .map_or(device_limit, |b| b.min(device_limit))
            .max(4);
        let mut pipelines = HashMap::new();
        for shader in shaders::ALL {
            let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(shader.name),
                source: wgpu::ShaderSource::Wgsl(shader.source.into()),
            });
            for &entry in shader.entry_points {
                let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                    label: Some(shader.name),
                    layout: None,
                    module: &module,
                    entry_point: Some(entry),
                    compilation_options: Default::default(),
                    cache: None,
                });
                pipelines.insert((shader.name, entry), pipeline);
            }
        }
        let gpu = Gpu {
            device,
            queue,
            info,
            max_binding,
            pipelines,
            device_error,
            fallback: Mutex::new(None),
        };
        // Pipeline creation errors arrive asynchronously: make them count now.
        gpu.sync().await.map_err(|e| match e {
            GpuFailure::Failed(m) | GpuFailure::Unsupported(m) => m,
        })?;
        Ok(gpu)
    }

    /// `name (device type, API)`.
    pub fn describe(&self) -> String {
        format!(
            "{} ({:?}, {:?})",
            self.info.name, self.info.device_type, self.info.backend
        )
    }

    pub fn device_type(&self) -> wgpu::DeviceType {
        self.info.device_type
    }

    /// Destroys the device, as a driver reset would: the next kernel fails (tests of the fallback).
    #[doc(hidden)]
    pub fn simulate_device_loss(&self) {
        self.device.destroy();
    }

    /// The byte limit of one storage binding in use.
    pub fn max_binding_bytes(&self) -> u64 {
        self.max_binding
    }

    pub fn fallback(&self) -> Option<String> {
        self.fallback
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Gives up the GPU for the rest of the run (the first reason is kept).
    pub fn give_up(&self, reason: String) {
        let mut slot = self.fallback.lock().unwrap_or_else(|p| p.into_inner());
        slot.get_or_insert(reason);
    }

    /// `auto`'s verdict on this adapter: `Ok(why)` to use it, `Err(why)` to stay on the CPU.
    pub async fn auto_verdict(&self) -> std::result::Result<String, String> {
        match self.info.device_type {
            wgpu::DeviceType::DiscreteGpu | wgpu::DeviceType::IntegratedGpu => {
                Ok(format!("real GPU: {}", self.describe()))
            }
            wgpu::DeviceType::Cpu => Err(format!(
                "the only adapter is emulated on the CPU ({}), 30-50x slower than the CPU path",
                self.describe()
            )),
            _ => self.calibrate().await,
        }
    }

    /// Times one 512 x 512 x 512 product on both sides (after a warm-up) for adapters that do not
    /// say what they are (virtual GPUs, the browser's WebGPU).
    #[cfg(not(target_arch = "wasm32"))]
    async fn calibrate(&self) -> std::result::Result<String, String> {
        let n = 512;
        let mut rng = crate::rng::Rng::new(1);
        let a: Vec<f32> = (0..n * n).map(|_| rng.normal() as f32).collect();
        let time = |f: &dyn Fn() -> bool| {
            let t = std::time::Instant::now();
            let ok = f();
            (ok, t.elapsed().as_secs_f64())
        };
        let gpu_run = || super::block_on(self.matmul(&a, n, n, false, &a, n)).is_ok();
        let cpu_run = || super::kernels::matmul::matmul(&a, n, n, false, &a, n).is_ok();
        let _ = gpu_run();
        let (ok, gpu_s) = time(&gpu_run);
        let (_, cpu_s) = time(&cpu_run);
        let what = format!(
            "{}: calibration product {:.1} ms on the GPU, {:.1} ms on the CPU",
            self.describe(),
            gpu_s * 1e3,
            cpu_s * 1e3
        );
        if ok && gpu_s < cpu_s {
            Ok(what)
        } else {
            Err(what)
        }
    }

    /// In the browser the adapter's kind is hidden; a fallback (software) adapter reports itself
    /// as such, anything else is taken to be a GPU.
    #[cfg(target_arch = "wasm32")]
    async fn calibrate(&self) -> std::result::Result<String, String> {
        if self.info.device_type == wgpu::DeviceType::Cpu {
            Err(format!("software adapter: {}", self.describe()))
        } else {
            Ok(format!("WebGPU adapter: {}", self.describe()))
        }
    }

    // -----------------------------------------------------------------------------------------
    // Buffers, dispatch, readback

    pub(super) fn check_binding(&self, bytes: usize, what: &str) -> GpuResult<()> {
        if bytes as u64 > self.max_binding {
            return Err(GpuFailure::Unsupported(format!(
                "{what} needs {bytes} bytes in one binding (limit {})",
                self.max_binding
            )));
        }
        Ok(())
    }

    /// A storage buffer holding `data`. (Written through the queue rather than mapped at creation:
    /// on a lost device mapping panics inside wgpu, while queue writes only report an error.)
    pub(super) fn upload<T: Pod>(&self, data: &[T], label: &str) -> wgpu::Buffer {
        let bytes: &[u8] = bytemuck::cast_slice(data);
        let buffer = self.zeroed(bytes.len(), label);
        if !bytes.is_empty() {
            self.queue.write_buffer(&buffer, 0, bytes);
        }
        buffer
    }

    pub(super) fn zeroed(&self, bytes: usize, label: &str) -> wgpu::Buffer {
        self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: (bytes.max(4) as u64).next_multiple_of(4),
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_SRC
                | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    }

    pub(super) fn uniform<T: Pod>(&self, value: &T) -> wgpu::Buffer {
        let bytes = bytemuck::bytes_of(value);
        let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("dims"),
            size: bytes.len() as u64,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        self.queue.write_buffer(&buffer, 0, bytes);
        buffer
    }

    /// Overwrites the start of `buffer` with `data` (through the queue, ordered with the
    /// dispatches).
    pub(super) fn write<T: Pod>(&self, buffer: &wgpu::Buffer, data: &[T]) {
        self.queue
            .write_buffer(buffer, 0, bytemuck::cast_slice(data));
    }

    /// Records one dispatch of `entry` in `shader` with `bindings` (binding index, buffer).
    pub(super) fn dispatch(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        shader: &shaders::Shader,
        entry: &'static str,
        bindings: &[(u32, &wgpu::Buffer)],
        groups: (u32, u32, u32),
    ) {
        let pipeline = &self.pipelines[&(shader.name, entry)];
        let entries: Vec<wgpu::BindGroupEntry> = bindings
            .iter()
            .map(|&(binding, buffer)| wgpu::BindGroupEntry {
                binding,
                resource: buffer.as_entire_binding(),
            })
            .collect();
        let bind_group = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(shader.name),
            layout: &pipeline.get_bind_group_layout(0),
            entries: &entries,
        });
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some(shader.name),
            timestamp_writes: None,
        });
        pass.set_pipeline(pipeline);
        pass.set_bind_group(0, &bind_group, &[]);
        pass.dispatch_workgroups(groups.0, groups.1, groups.2);
    }

    pub(super) fn encoder(&self) -> wgpu::CommandEncoder {
        self.device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("lowbit"),
            })
    }

    pub(super) fn submit(&self, encoder: wgpu::CommandEncoder) {
        self.queue.submit([encoder.finish()]);
    }

    fn check_device(&self) -> GpuResult<()> {
        match self
            .device_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        {
            Some(e) => Err(GpuFailure::Failed(e)),
            None => Ok(()),
        }
    }

    /// Waits for all submitted work and reports any error it raised.
    pub(super) async fn sync(&self) -> GpuResult<()> {
        let done = self.zeroed(4, "sync");
        self.read::<u32>(&done, 1).await.map(|_| ())
    }

    /// Copies the first `count` elements of `src` back to the CPU (waiting for the work that
    /// writes it).
    pub(super) async fn read<T: Pod>(&self, src: &wgpu::Buffer, count: usize) -> GpuResult<Vec<T>> {
        let bytes = (count * std::mem::size_of::<T>()) as u64;
        let size = bytes.max(4);
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut encoder = self.encoder();
        encoder.copy_buffer_to_buffer(src, 0, &staging, 0, size);
        self.submit(encoder);
        let (tx, rx) = futures_channel::oneshot::channel();
        staging.slice(..).map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        #[cfg(not(target_arch = "wasm32"))]
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| failed("waiting for the GPU", e))?;
        let mapped = rx
            .await
            .map_err(|_| GpuFailure::Failed("the GPU dropped a readback".to_string()))
            .and_then(|r| r.map_err(|e| failed("mapping a readback buffer", e)));
        self.check_device()?;
        mapped?;
        let out = {
            let view = staging
                .slice(..)
                .get_mapped_range()
                .map_err(|e| failed("reading a mapped buffer", e))?;
            bytemuck::pod_collect_to_vec::<u8, T>(&view[..bytes as usize])
        };
        staging.unmap();
        Ok(out)
    }
}
