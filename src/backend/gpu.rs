//! The GPU backend: every wgpu call of the crate. It owns the device, the pipelines of every kernel
//! in [`crate::shaders`], and the host side of each kernel (uniforms, buffers, dispatch grids,
//! readback).
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

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytemuck::{Pod, Zeroable};
use faer::Mat;

use super::{GpuFailure, GroupFits};
use crate::kmeans::{Codebook, Fit};
use crate::linalg::{self, Svd};
use crate::rng::Rng;
use crate::shaders;

pub use wgpu::DeviceType;

type GpuResult<T> = std::result::Result<T, GpuFailure>;

/// Most workgroups along one dimension of a dispatch (WebGPU's guaranteed limit).
const MAX_GROUPS_PER_DIM: u32 = 65_535;
/// Edge of the square block of C that one matmul workgroup computes (matmul.wgsl's TILE).
const MATMUL_TILE: usize = 64;
/// Floats of centroids staged per chunk by kmeans_assign.wgsl (its STAGE).
const ASSIGN_STAGE: usize = 2048;
/// Points per partial-sum chunk in kmeans_update.wgsl (its CHUNK).
const UPDATE_CHUNK: usize = 1024;
/// Elements per workgroup segment in fwht.wgsl (its SEGMENT).
const FWHT_SEGMENT: usize = 1024;
/// Invocations per workgroup of the 1-D kernels.
const WORKGROUP: usize = 256;
/// Cholesky-QR is used while the Gram matrix's Cholesky factor has a diagonal ratio above this;
/// past it (a numerically rank-deficient panel) the panel is orthonormalized by Householder QR on
/// the CPU. CholeskyQR2 in f32 keeps orthogonality to ~1e-6 up to a condition number of ~1e3.
const CHOLESKY_MIN_DIAGONAL_RATIO: f64 = 1e-3;

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

// The uniform blocks of the kernels: 8 words each, field for field the WGSL structs.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct MatmulDims {
    m: u32,
    n: u32,
    k: u32,
    trans_a: u32,
    accumulate: u32,
    _pad: [u32; 3],
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct AssignDims {
    n: u32,
    dim: u32,
    k: u32,
    _pad0: u32,
    first_partial: u32,
    groups_x: u32,
    _pad: [u32; 2],
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
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

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct FwhtDims {
    len: u32,
    cols: u32,
    block: u32,
    inverse: u32,
    scale: f32,
    groups_x: u32,
    _pad: [u32; 2],
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct GroupDims {
    rows: u32,
    cols: u32,
    group: u32,
    bits: u32,
    search: u32,
    groups_x: u32,
    _pad: [u32; 2],
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct HyperDims {
    pairs: u32,
    t: u32,
    rings: u32,
    groups_x: u32,
    centre: [f32; 2],
    corner: [f32; 2],
    half_side: f32,
    h: f32,
    shear: f32,
    tolerance: f32,
    radii: [f32; 12],
    factors: [f32; 12],
}

/// hyper.wgsl's `K`: a pair whose best and second-best codewords are within
/// `K (M sqrt(d) + d)` of each other is decided on the CPU (see the kernel's header).
const HYPER_TOLERANCE: f32 = 1.0 / 65536.0;
/// Bit 31 of a code from hyper.wgsl: the kernel could not decide this pair with certainty.
const HYPER_AMBIGUOUS: u32 = 1 << 31;

/// The result of [`Gpu::hyper_codes`].
#[derive(Clone, Debug, PartialEq)]
pub struct HyperCodes {
    /// One code per pair, equal to `codec::hyper::nearest_codes`.
    pub codes: Vec<u32>,
    /// How many of them the kernel left to the CPU (near-ties, ring and edge boundaries).
    pub decided_on_cpu: usize,
}

/// A row-major matrix resident on the GPU, split into tiles of whole rows (one buffer each).
struct Tiled {
    cols: usize,
    /// (first row, rows, buffer)
    tiles: Vec<(usize, usize, wgpu::Buffer)>,
}

fn failed(what: &str, e: impl std::fmt::Display) -> GpuFailure {
    GpuFailure::Failed(format!("{what}: {e}"))
}

/// Workgroups for `groups` in a grid of at most 65535 along x (and y).
fn grid(groups: usize) -> GpuResult<(u32, u32)> {
    let x = groups.clamp(1, MAX_GROUPS_PER_DIM as usize);
    let y = groups.div_ceil(x).max(1);
    if y > MAX_GROUPS_PER_DIM as usize {
        return Err(GpuFailure::Unsupported(format!(
            "{groups} workgroups exceed a dispatch"
        )));
    }
    Ok((x as u32, y as u32))
}

fn to_u32(v: usize, what: &str) -> GpuResult<u32> {
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
        let mut rng = Rng::new(1);
        let a: Vec<f32> = (0..n * n).map(|_| rng.normal() as f32).collect();
        let time = |f: &dyn Fn() -> bool| {
            let t = std::time::Instant::now();
            let ok = f();
            (ok, t.elapsed().as_secs_f64())
        };
        let gpu_run = || super::block_on(self.matmul(&a, n, n, false, &a, n)).is_ok();
        let cpu_run = || super::cpu::matmul(&a, n, n, false, &a, n).is_ok();
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

    fn check_binding(&self, bytes: usize, what: &str) -> GpuResult<()> {
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
    fn upload<T: Pod>(&self, data: &[T], label: &str) -> wgpu::Buffer {
        let bytes: &[u8] = bytemuck::cast_slice(data);
        let buffer = self.zeroed(bytes.len(), label);
        if !bytes.is_empty() {
            self.queue.write_buffer(&buffer, 0, bytes);
        }
        buffer
    }

    fn zeroed(&self, bytes: usize, label: &str) -> wgpu::Buffer {
        self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: (bytes.max(4) as u64).next_multiple_of(4),
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_SRC
                | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    }

    fn uniform<T: Pod>(&self, value: &T) -> wgpu::Buffer {
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

    /// Records one dispatch of `entry` in `shader` with `bindings` (binding index, buffer).
    fn dispatch(
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

    fn encoder(&self) -> wgpu::CommandEncoder {
        self.device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("lowbit"),
            })
    }

    fn submit(&self, encoder: wgpu::CommandEncoder) {
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
    async fn sync(&self) -> GpuResult<()> {
        let done = self.zeroed(4, "sync");
        self.read::<u32>(&done, 1).await.map(|_| ())
    }

    /// Copies the first `count` elements of `src` back to the CPU (waiting for the work that
    /// writes it).
    async fn read<T: Pod>(&self, src: &wgpu::Buffer, count: usize) -> GpuResult<Vec<T>> {
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

    /// Uploads a row-major `rows x cols` matrix in tiles of whole rows that fit one binding.
    /// `tile_cols` is the widest matrix that will share this row tiling (tiles are sized so that a
    /// tile of it fits one binding).
    fn upload_tiled(
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
    fn zeroed_like(&self, like: &Tiled, cols: usize, label: &str) -> Tiled {
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
    fn rows_per_tile(&self, cols: usize) -> GpuResult<usize> {
        let row_bytes = cols.max(1) as u64 * 4;
        if row_bytes > self.max_binding {
            return Err(GpuFailure::Unsupported(format!(
                "a row of {cols} values exceeds one binding ({} bytes)",
                self.max_binding
            )));
        }
        Ok((self.max_binding / row_bytes) as usize)
    }

    async fn read_tiled(&self, t: &Tiled) -> GpuResult<Vec<f32>> {
        let mut out = Vec::new();
        for (_, n, buffer) in &t.tiles {
            out.extend(self.read::<f32>(buffer, n * t.cols).await?);
        }
        Ok(out)
    }

    // -----------------------------------------------------------------------------------------
    // Matrix products

    /// Records `c (+)= op(a) b` for one set of buffers.
    #[allow(clippy::too_many_arguments)]
    fn record_matmul(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        a: &wgpu::Buffer,
        b: &wgpu::Buffer,
        c: &wgpu::Buffer,
        m: usize,
        n: usize,
        k: usize,
        transpose_a: bool,
        accumulate: bool,
    ) -> GpuResult<()> {
        if m == 0 || n == 0 {
            return Ok(());
        }
        let dims = MatmulDims {
            m: to_u32(m, "rows")?,
            n: to_u32(n, "columns")?,
            k: to_u32(k, "inner dimension")?,
            trans_a: transpose_a as u32,
            accumulate: accumulate as u32,
            _pad: [0; 3],
        };
        let gx = n.div_ceil(MATMUL_TILE);
        let gy = m.div_ceil(MATMUL_TILE);
        if gx > MAX_GROUPS_PER_DIM as usize || gy > MAX_GROUPS_PER_DIM as usize {
            return Err(GpuFailure::Unsupported(format!(
                "a {m} x {n} product exceeds one dispatch"
            )));
        }
        let uniform = self.uniform(&dims);
        self.dispatch(
            encoder,
            &shaders::MATMUL,
            "main",
            &[(0, &uniform), (1, a), (2, b), (3, c)],
            (gx as u32, gy as u32, 1),
        );
        Ok(())
    }

    /// `Y_t = W_t * B` for every row tile of `w` (B small, `w.cols x b_cols`).
    fn tiled_times_small(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        w: &Tiled,
        b: &wgpu::Buffer,
        b_cols: usize,
        out: &Tiled,
    ) -> GpuResult<()> {
        for ((_, n, wt), (_, _, ot)) in w.tiles.iter().zip(&out.tiles) {
            self.record_matmul(encoder, wt, b, ot, *n, b_cols, w.cols, false, false)?;
        }
        Ok(())
    }

    /// `C = sum_t A_t^T B_t` over matching row tiles (`a.cols x b.cols`, into `c`).
    fn tiled_transpose_times_tiled(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        a: &Tiled,
        b: &Tiled,
        c: &wgpu::Buffer,
    ) -> GpuResult<()> {
        if a.tiles.iter().all(|t| t.1 == 0) {
            encoder.clear_buffer(c, 0, None);
        }
        for (i, ((_, n, at), (_, _, bt))) in a.tiles.iter().zip(&b.tiles).enumerate() {
            self.record_matmul(encoder, at, bt, c, a.cols, b.cols, *n, true, i > 0)?;
        }
        Ok(())
    }

    pub async fn matmul(
        &self,
        a: &[f32],
        a_rows: usize,
        a_cols: usize,
        transpose_a: bool,
        b: &[f32],
        b_cols: usize,
    ) -> GpuResult<Vec<f32>> {
        let (m, k) = if transpose_a {
            (a_cols, a_rows)
        } else {
            (a_rows, a_cols)
        };
        let mut encoder = self.encoder();
        if transpose_a {
            // A^T B with A tiled by rows: B is tiled by the same rows, the result accumulates.
            self.check_binding(m * b_cols * 4, "the product")?;
            let at = self.upload_tiled(a, a_rows, a_cols, b_cols, "A")?;
            let bt = self.upload_tiled_like(b, &at, b_cols, "B");
            let c = self.zeroed(m * b_cols * 4, "C");
            self.tiled_transpose_times_tiled(&mut encoder, &at, &bt, &c)?;
            self.submit(encoder);
            self.read::<f32>(&c, m * b_cols).await
        } else {
            self.check_binding(k * b_cols * 4, "B")?;
            let at = self.upload_tiled(a, m, k, b_cols, "A")?;
            let bb = self.upload(b, "B");
            let c = self.zeroed_like(&at, b_cols, "C");
            self.tiled_times_small(&mut encoder, &at, &bb, b_cols, &c)?;
            self.submit(encoder);
            self.read_tiled(&c).await
        }
    }

    /// Seconds per product `C = A B` (`m x k` times `k x n`, each in one binding) over `repeats`
    /// dispatches on buffers already on the device, after one warm-up: the kernel's own rate,
    /// which the transfers every `matmul` call pays would hide. For the benchmark; native only
    /// (the browser has no monotonic clock here).
    #[cfg(not(target_arch = "wasm32"))]
    pub async fn time_resident_matmul(
        &self,
        m: usize,
        k: usize,
        n: usize,
        repeats: usize,
    ) -> GpuResult<f64> {
        for (bytes, what) in [(m * k * 4, "A"), (k * n * 4, "B"), (m * n * 4, "C")] {
            self.check_binding(bytes, what)?;
        }
        let mut rng = Rng::new(1);
        let mut random =
            |len: usize| -> Vec<f32> { (0..len).map(|_| rng.normal() as f32).collect() };
        let a = self.upload(&random(m * k), "A");
        let b = self.upload(&random(k * n), "B");
        let c = self.zeroed(m * n * 4, "C");
        let run = |count: usize| -> GpuResult<()> {
            let mut encoder = self.encoder();
            for _ in 0..count {
                self.record_matmul(&mut encoder, &a, &b, &c, m, n, k, false, false)?;
            }
            self.submit(encoder);
            Ok(())
        };
        run(1)?;
        self.sync().await?;
        let start = std::time::Instant::now();
        run(repeats.max(1))?;
        self.sync().await?;
        Ok(start.elapsed().as_secs_f64() / repeats.max(1) as f64)
    }

    /// Uploads `values` (`rows(like) x cols`) with the row tiling of `like`.
    fn upload_tiled_like(&self, values: &[f32], like: &Tiled, cols: usize, label: &str) -> Tiled {
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

    pub async fn gram(&self, y: &[f32], rows: usize, cols: usize) -> GpuResult<Vec<f32>> {
        self.check_binding(cols * cols * 4, "the Gram matrix")?;
        let yt = self.upload_tiled(y, rows, cols, cols, "Y")?;
        let g = self.zeroed(cols * cols * 4, "G");
        let mut encoder = self.encoder();
        self.tiled_transpose_times_tiled(&mut encoder, &yt, &yt, &g)?;
        self.submit(encoder);
        self.read::<f32>(&g, cols * cols).await
    }

    // -----------------------------------------------------------------------------------------
    // Randomized subspace iteration

    /// Orthonormalizes the columns of the tiled `y` in place: CholeskyQR2 (Gram matrix on the GPU,
    /// its Cholesky factor on the CPU in f64, `Y R^-1` on the GPU, twice), or, when the panel is
    /// numerically rank deficient, Householder QR on the CPU.
    async fn orthonormalize(&self, y: Tiled) -> GpuResult<Tiled> {
        let l = y.cols;
        let mut y = y;
        for _pass in 0..2 {
            let g = self.zeroed(l * l * 4, "G");
            let mut encoder = self.encoder();
            self.tiled_transpose_times_tiled(&mut encoder, &y, &y, &g)?;
            self.submit(encoder);
            let gram = self.read::<f32>(&g, l * l).await?;
            let Some(r_inv) = inverse_cholesky_factor(&gram, l) else {
                let rows: usize = y.tiles.iter().map(|t| t.1).sum();
                let values = self.read_tiled(&y).await?;
                let q = linalg::orthonormalize(linalg::view_row_major(&values, rows, l));
                return Ok(self.upload_tiled_like(&linalg::to_row_major(q.as_ref()), &y, l, "Q"));
            };
            let r_inv = self.upload(&r_inv, "R^-1");
            let q = self.zeroed_like(&y, l, "Q");
            let mut encoder = self.encoder();
            self.tiled_times_small(&mut encoder, &y, &r_inv, l, &q)?;
            self.submit(encoder);
            y = q;
        }
        Ok(y)
    }

    #[allow(clippy::too_many_arguments)]
    pub async fn rsi(
        &self,
        w: &[f32],
        rows: usize,
        cols: usize,
        k: usize,
        oversample: usize,
        power_iters: usize,
        rng: &mut Rng,
    ) -> GpuResult<Svd> {
        let k = k.min(rows).min(cols);
        if k == 0 {
            return Ok(Svd {
                u: Mat::zeros(rows, 0),
                sigma: Vec::new(),
                vt: Mat::zeros(0, cols),
            });
        }
        // Work on the tall orientation, as linalg::rsi does: a wide matrix is uploaded transposed.
        if rows < cols {
            let mut t = vec![0f32; w.len()];
            for i in 0..rows {
                for j in 0..cols {
                    t[j * rows + i] = w[i * cols + j];
                }
            }
            let s = Box::pin(self.rsi(&t, cols, rows, k, oversample, power_iters, rng)).await?;
            return Ok(Svd {
                u: s.vt.transpose().to_owned(),
                sigma: s.sigma,
                vt: s.u.transpose().to_owned(),
            });
        }
        let (m, n) = (rows, cols);
        let l = (k + oversample).min(n);
        for (bytes, what) in [(n * l * 4, "the sketch"), (l * n * 4, "the core")] {
            self.check_binding(bytes, what)?;
        }
        let omega = linalg::to_row_major(linalg::gaussian_matrix(n, l, rng).as_ref());
        let wt = self.upload_tiled(w, m, n, n, "W")?;
        let omega = self.upload(&omega, "Omega");

        let y = self.zeroed_like(&wt, l, "Y");
        let mut encoder = self.encoder();
        self.tiled_times_small(&mut encoder, &wt, &omega, l, &y)?;
        self.submit(encoder);
        let mut q = self.orthonormalize(y).await?;
        for _ in 0..power_iters {
            // P = orth(W^T Q): n x l, one tile (n <= m, and n*l fits as checked above).
            let p = self.zeroed(n * l * 4, "P");
            let mut encoder = self.encoder();
            self.tiled_transpose_times_tiled(&mut encoder, &wt, &q, &p)?;
            self.submit(encoder);
            let p = self
                .orthonormalize(Tiled {
                    cols: l,
                    tiles: vec![(0, n, p)],
                })
                .await?;
            let y = self.zeroed_like(&wt, l, "Y");
            let mut encoder = self.encoder();
            self.tiled_times_small(&mut encoder, &wt, &p.tiles[0].2, l, &y)?;
            self.submit(encoder);
            q = self.orthonormalize(y).await?;
        }
        // Core B = Q^T W (l x n), read back for its SVD in f64 on the CPU.
        let core = self.zeroed(l * n * 4, "core");
        let mut encoder = self.encoder();
        self.tiled_transpose_times_tiled(&mut encoder, &q, &wt, &core)?;
        self.submit(encoder);
        let core = self.read::<f32>(&core, l * n).await?;
        let core64 = Mat::<f64>::from_fn(l, n, |i, j| core[i * n + j] as f64);
        let svd = core64.thin_svd().map_err(|e| {
            GpuFailure::Unsupported(format!("SVD of the sketch core did not converge: {e:?}"))
        })?;
        let ub: Vec<f32> = (0..l)
            .flat_map(|i| (0..k).map(move |j| (i, j)))
            .map(|(i, j)| svd.U()[(i, j)] as f32)
            .collect();
        let ub = self.upload(&ub, "Ub");
        let u = self.zeroed_like(&wt, k, "U");
        let mut encoder = self.encoder();
        self.tiled_times_small(&mut encoder, &q, &ub, k, &u)?;
        self.submit(encoder);
        let u = self.read_tiled(&u).await?;
        Ok(Svd {
            u: Mat::<f32>::from_fn(m, k, |i, j| u[i * k + j]),
            sigma: (0..k).map(|j| svd.S()[j] as f32).collect(),
            vt: Mat::<f32>::from_fn(k, n, |i, j| svd.V()[(j, i)] as f32),
        })
    }

    // -----------------------------------------------------------------------------------------
    // k-means

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
                self.queue
                    .write_buffer(&centroids, 0, bytemuck::cast_slice(&codebook.centroids));
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

    /// Uploads the points (tiled) with the arrays the k-means kernels write.
    fn point_set(&self, points: &[f32], dim: usize, k: usize, n: usize) -> GpuResult<PointSet> {
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

    // -----------------------------------------------------------------------------------------
    // Rotation and grouped scalar grid

    pub async fn rotate(
        &self,
        values: &mut [f32],
        cols: usize,
        seed: u64,
        inverse: bool,
    ) -> GpuResult<()> {
        let rows = values.len() / cols;
        let block = crate::rotation::block_len(cols);
        let signs = self.upload(&crate::rotation::signs(cols, seed), "signs");
        let tiled = self.upload_tiled(values, rows, cols, cols, "values")?;
        let mut encoder = self.encoder();
        for (_, n, buffer) in &tiled.tiles {
            let len = n * cols;
            let (gx, gy) = grid(len.div_ceil(FWHT_SEGMENT))?;
            let dims = FwhtDims {
                len: to_u32(len, "elements")?,
                cols: to_u32(cols, "columns")?,
                block: block as u32,
                inverse: inverse as u32,
                scale: crate::rotation::block_scale(block),
                groups_x: gx,
                _pad: [0; 2],
            };
            let uniform = self.uniform(&dims);
            self.dispatch(
                &mut encoder,
                &shaders::FWHT,
                "main",
                &[(0, &uniform), (1, &signs), (2, buffer)],
                (gx, gy, 1),
            );
        }
        self.submit(encoder);
        values.copy_from_slice(&self.read_tiled(&tiled).await?);
        Ok(())
    }

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

impl Gpu {
    /// Hyper-Compression's per-pair search (`shaders/hyper.wgsl`), pairs tiled by the binding
    /// limit; the pairs the kernel marks ambiguous are decided by `codec::hyper::nearest_code`,
    /// so the codes are the CPU's. Declines (`Unsupported`) squares whose squared pitch is near
    /// the bottom of f32's normal range, or values whose squares are near its top, where the
    /// kernel's tolerance argument does not hold.
    pub async fn hyper_codes(
        &self,
        pairs: &[f32],
        g: &crate::codec::hyper::Geometry,
    ) -> GpuResult<HyperCodes> {
        let n = pairs.len() / 2;
        let h = g.pitch();
        let largest = pairs
            .iter()
            .chain(&g.centre)
            .fold(g.side, |m, &v| m.max(v.abs()));
        // 2^-100 and 2^50: squares (and the tolerance) stay normal f32 numbers with room to spare.
        if !(h * h >= 2f32.powi(-100) && largest < 2f32.powi(50)) {
            return Err(GpuFailure::Unsupported(format!(
                "hyper search: pitch {h:e} or magnitude {largest:e} outside the kernel's f32 range"
            )));
        }
        let mut radii = [0f32; 12];
        let mut factors = [0f32; 12];
        for j in 0..g.radii.len() {
            radii[j] = g.radii[j];
            factors[j] = g.shrink_factor(j as u32);
        }
        let tiled = self.upload_tiled(pairs, n, 2, 2, "pairs")?;
        let mut outputs = Vec::new();
        let mut encoder = self.encoder();
        for (_, count, buffer) in &tiled.tiles {
            let (gx, gy) = grid(count.div_ceil(WORKGROUP))?;
            let dims = HyperDims {
                pairs: to_u32(*count, "pairs")?,
                t: g.t,
                rings: g.rings,
                groups_x: gx,
                centre: g.centre,
                corner: g.corner(),
                half_side: 0.5 * g.side,
                h,
                shear: g.shear(),
                tolerance: HYPER_TOLERANCE,
                radii,
                factors,
            };
            let uniform = self.uniform(&dims);
            let codes = self.zeroed(count * 4, "codes");
            self.dispatch(
                &mut encoder,
                &shaders::HYPER,
                "main",
                &[(0, &uniform), (1, buffer), (2, &codes)],
                (gx, gy, 1),
            );
            outputs.push((*count, codes));
        }
        self.submit(encoder);
        let mut out = HyperCodes {
            codes: Vec::with_capacity(n),
            decided_on_cpu: 0,
        };
        for (count, codes) in &outputs {
            out.codes.extend(self.read::<u32>(codes, *count).await?);
        }
        for (i, code) in out.codes.iter_mut().enumerate() {
            if *code & HYPER_AMBIGUOUS != 0 {
                *code = crate::codec::hyper::nearest_code([pairs[2 * i], pairs[2 * i + 1]], g);
                out.decided_on_cpu += 1;
            }
        }
        Ok(out)
    }
}

/// A point set resident on the GPU with the arrays of the assignment and update kernels.
struct PointSet {
    dim: usize,
    k: usize,
    tiles: Vec<PointTile>,
    partial_objective: wgpu::Buffer,
    changed: wgpu::Buffer,
    partial_sums: wgpu::Buffer,
    partial_counts: wgpu::Buffer,
    counts: wgpu::Buffer,
    /// Partial-sum chunks over all tiles.
    chunks: usize,
    /// Assignment workgroups over all tiles (one partial objective each).
    partials: usize,
}

/// One tile of a point set: its points and their codes and distances (each within one binding).
struct PointTile {
    n: usize,
    points: wgpu::Buffer,
    codes: wgpu::Buffer,
    distances: wgpu::Buffer,
}

impl PointSet {
    async fn read_codes(&self, gpu: &Gpu) -> GpuResult<Vec<u32>> {
        let mut out = Vec::new();
        for t in &self.tiles {
            out.extend(gpu.read::<u32>(&t.codes, t.n).await?);
        }
        Ok(out)
    }

    async fn read_distances(&self, gpu: &Gpu) -> GpuResult<Vec<f32>> {
        let mut out = Vec::new();
        for t in &self.tiles {
            out.extend(gpu.read::<f32>(&t.distances, t.n).await?);
        }
        Ok(out)
    }

    fn write_codes(&self, gpu: &Gpu, codes: &[u32]) {
        let mut first = 0;
        for t in &self.tiles {
            if t.n > 0 {
                gpu.queue.write_buffer(
                    &t.codes,
                    0,
                    bytemuck::cast_slice(&codes[first..first + t.n]),
                );
            }
            first += t.n;
        }
    }
    /// One assignment pass: codes and distances stay on the GPU; returns the objective (summed in
    /// f64 from the workgroups' partial sums) and how many codes changed.
    async fn assign(&self, gpu: &Gpu, centroids: &wgpu::Buffer) -> GpuResult<(f64, u32)> {
        gpu.queue.write_buffer(&self.changed, 0, &[0u8; 4]);
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

    /// One centroid update (means of the current codes, in place); returns the points per
    /// centroid.
    async fn update(&self, gpu: &Gpu, centroids: &wgpu::Buffer) -> GpuResult<Vec<u32>> {
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

/// `R^-1` (row-major, `l x l`) for the Cholesky factor `R^T R = G` of a Gram matrix, computed in
/// f64; `None` when `G` is not numerically positive definite enough for Cholesky-QR in f32 (see
/// [`CHOLESKY_MIN_DIAGONAL_RATIO`]).
fn inverse_cholesky_factor(gram: &[f32], l: usize) -> Option<Vec<f32>> {
    // Cholesky G = R^T R, R upper triangular, row-major in f64.
    let mut r = vec![0f64; l * l];
    for j in 0..l {
        let mut d = gram[j * l + j] as f64;
        for p in 0..j {
            d -= r[p * l + j] * r[p * l + j];
        }
        if d.is_nan() || d <= 0.0 {
            return None;
        }
        let d = d.sqrt();
        r[j * l + j] = d;
        for i in j + 1..l {
            let mut s = gram[j * l + i] as f64;
            for p in 0..j {
                s -= r[p * l + j] * r[p * l + i];
            }
            r[j * l + i] = s / d;
        }
    }
    let diag: Vec<f64> = (0..l).map(|j| r[j * l + j]).collect();
    let max = diag.iter().copied().fold(0.0, f64::max);
    let min = diag.iter().copied().fold(f64::INFINITY, f64::min);
    if min.is_nan() || min <= CHOLESKY_MIN_DIAGONAL_RATIO * max {
        return None;
    }
    // Back substitution for R^-1 (upper triangular), column by column.
    let mut inv = vec![0f64; l * l];
    for c in 0..l {
        for i in (0..=c).rev() {
            let mut s = if i == c { 1.0 } else { 0.0 };
            for p in i + 1..=c {
                s -= r[i * l + p] * inv[p * l + c];
            }
            inv[i * l + c] = s / r[i * l + i];
        }
    }
    Some(inv.into_iter().map(|v| v as f32).collect())
}
