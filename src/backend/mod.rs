//! Where the heavy kernels run: `Backend::Cpu` (the reference, always compiled, the fallback and the
//! test oracle) or `Backend::Gpu` (the WGSL kernels of `shaders/` through wgpu: Vulkan, Metal or DX12
//! natively, WebGPU in the browser). One method per kernel; the codecs call these, and the model
//! runtime records the forward kernels into a resident pass (`gpu::Pass`); nothing else touches the
//! GPU. Each kernel is one file of [`kernels`], named as its shader, holding its
//! arguments, its CPU twin and its GPU host code; [`gpu`] is the device they share. The backend
//! imports nothing from the codecs (they import it): see docs/BACKENDS.md.
//!
//! Choosing: `auto` takes the GPU only when the adapter is a real GPU (discrete or
//! integrated), or, for adapters of unknown kind, when a calibration product runs faster on it than
//! on the CPU. Emulated adapters (lavapipe, SwiftShader: device type `Cpu`) are 30-50x slower than
//! the CPU path, so `auto` never picks them; `--backend gpu` forces them (tests do).
//!
//! Fallback: a GPU error or device loss during a run moves the rest of the run to the CPU (the call
//! that failed is redone there) and the reason is kept for the report. A kernel that cannot run a
//! particular problem (too large for a storage binding where it cannot be tiled) runs that one call
//! on the CPU without giving up the GPU.
//!
//! The methods are `async` because reading GPU memory back is (in the browser it cannot block);
//! on the CPU backend the futures are ready at once ([`ready`]), natively [`block_on`] drives them.

pub mod check;
#[cfg(feature = "gpu")]
pub mod gpu;
pub mod kernels;

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::kmeans::{Codebook, Fit};
use crate::linalg::Svd;
use crate::rng::Rng;
use kernels::{fwht, group_fit, hyper, kmeans_assign, kmeans_update, matmul};

pub use kernels::group_fit::GroupFits;

/// Runs the GPU expression when the backend is a GPU that has not failed, else (or when it fails)
/// the CPU expression. A `Failed` GPU error is recorded so the rest of the run uses the CPU.
macro_rules! run {
    ($backend:expr, $g:ident => $gpu:expr, $cpu:expr) => {{
        match $backend {
            Backend::Cpu => $cpu,
            #[cfg(feature = "gpu")]
            Backend::Gpu($g) => {
                if $g.fallback().is_some() {
                    $cpu
                } else {
                    match $gpu {
                        Ok(v) => Ok(v),
                        Err(GpuFailure::Unsupported(_)) => $cpu,
                        Err(GpuFailure::Failed(reason)) => {
                            $g.give_up(reason);
                            $cpu
                        }
                    }
                }
            }
        }
    }};
}

/// What the user asked for (`--backend`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendChoice {
    Cpu,
    Gpu,
    #[default]
    Auto,
}

impl BackendChoice {
    pub fn name(self) -> &'static str {
        match self {
            BackendChoice::Cpu => "cpu",
            BackendChoice::Gpu => "gpu",
            BackendChoice::Auto => "auto",
        }
    }
}

impl std::str::FromStr for BackendChoice {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "cpu" => Ok(BackendChoice::Cpu),
            "gpu" => Ok(BackendChoice::Gpu),
            "auto" => Ok(BackendChoice::Auto),
            other => Err(Error::option(format!(
                "--backend takes cpu, gpu or auto, not {other:?}"
            ))),
        }
    }
}

/// What ran, for the report.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BackendSummary {
    pub requested: BackendChoice,
    /// `cpu` or `gpu` (the backend the run started on).
    pub used: String,
    /// The GPU adapter, when one was found (`name (device type, API)`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adapter: Option<String>,
    /// Why this backend was chosen.
    pub reason: String,
    /// Set when the GPU failed during the run and the rest ran on the CPU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<String>,
}

/// Where kernels run.
pub enum Backend {
    Cpu,
    #[cfg(feature = "gpu")]
    Gpu(Box<gpu::Gpu>),
}

/// Why a GPU call did not give a result.
#[derive(Debug)]
pub enum GpuFailure {
    /// This problem does not fit the kernel (e.g. a matrix over the binding limit where it cannot
    /// be tiled): run this call on the CPU, keep the GPU.
    Unsupported(String),
    /// The device failed (validation error, out of memory, device lost): the rest of the run goes
    /// to the CPU.
    Failed(String),
}

impl Backend {
    /// The backend for `choice`, and why. `Gpu` fails when no adapter can be had; `Auto` then
    /// settles for the CPU.
    pub async fn new(choice: BackendChoice) -> Result<(Backend, String)> {
        match choice {
            BackendChoice::Cpu => Ok((Backend::Cpu, "requested".to_string())),
            #[cfg(feature = "gpu")]
            BackendChoice::Gpu => match gpu::Gpu::new(gpu::GpuOptions::default()).await {
                Ok(g) => Ok((Backend::Gpu(Box::new(g)), "requested".to_string())),
                Err(e) => Err(Error::unsupported(format!(
                    "--backend gpu: no usable GPU adapter ({e})"
                ))),
            },
            #[cfg(not(feature = "gpu"))]
            BackendChoice::Gpu => Err(Error::unsupported(
                "--backend gpu: this build has no GPU support (feature `gpu`)",
            )),
            #[cfg(feature = "gpu")]
            BackendChoice::Auto => match gpu::Gpu::new(gpu::GpuOptions::default()).await {
                Err(e) => Ok((Backend::Cpu, format!("no GPU adapter ({e})"))),
                Ok(g) => match g.auto_verdict().await {
                    Ok(why) => Ok((Backend::Gpu(Box::new(g)), why)),
                    Err(why) => Ok((Backend::Cpu, why)),
                },
            },
            #[cfg(not(feature = "gpu"))]
            BackendChoice::Auto => Ok((Backend::Cpu, "built without GPU support".to_string())),
        }
    }

    /// `cpu` or `gpu`.
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Cpu => "cpu",
            #[cfg(feature = "gpu")]
            Backend::Gpu(_) => "gpu",
        }
    }

    /// The adapter's description, if this is the GPU backend.
    pub fn adapter(&self) -> Option<String> {
        match self {
            Backend::Cpu => None,
            #[cfg(feature = "gpu")]
            Backend::Gpu(g) => Some(g.describe()),
        }
    }

    /// Why the GPU was given up during the run, if it was.
    pub fn fallback(&self) -> Option<String> {
        match self {
            Backend::Cpu => None,
            #[cfg(feature = "gpu")]
            Backend::Gpu(g) => g.fallback(),
        }
    }

    /// The report's record of this backend.
    pub fn summary(&self, requested: BackendChoice, reason: &str) -> BackendSummary {
        BackendSummary {
            requested,
            used: self.name().to_string(),
            adapter: self.adapter(),
            reason: reason.to_string(),
            fallback: self.fallback(),
        }
    }

    /// `op(A) * B` for row-major `A` (`a_rows x a_cols`; `op(A) = A^T` when `transpose_a`) and `B`
    /// (`rows(op(A))`... `cols(op(A)) x b_cols`). Returns the row-major product.
    pub async fn matmul(
        &self,
        a: &[f32],
        a_rows: usize,
        a_cols: usize,
        transpose_a: bool,
        b: &[f32],
        b_cols: usize,
    ) -> Result<Vec<f32>> {
        matmul::check_matmul(a, a_rows, a_cols, transpose_a, b, b_cols)?;
        run!(
            self,
            g => g.matmul(a, a_rows, a_cols, transpose_a, b, b_cols).await,
            matmul::matmul(a, a_rows, a_cols, transpose_a, b, b_cols)
        )
    }

    /// The Gram matrix `Y^T Y` of a row-major `rows x cols` matrix (`cols x cols`).
    pub async fn gram(&self, y: &[f32], rows: usize, cols: usize) -> Result<Vec<f32>> {
        matmul::check_matmul(y, rows, cols, true, y, cols)?;
        run!(self, g => g.gram(y, rows, cols).await, matmul::gram(y, rows, cols))
    }

    #[allow(clippy::too_many_arguments)]
    /// Rank-`k` truncated SVD of the row-major `rows x cols` matrix by randomized subspace
    /// iteration ([`crate::linalg::rsi`]); on the GPU the matrix stays resident and only the small
    /// Gram matrices, the core and the left factor are read back.
    pub async fn rsi(
        &self,
        w: &[f32],
        rows: usize,
        cols: usize,
        k: usize,
        oversample: usize,
        power_iters: usize,
        rng: &mut Rng,
    ) -> Result<Svd> {
        if w.len() != rows * cols {
            return Err(Error::invalid(format!(
                "{} values for a {rows} x {cols} matrix",
                w.len()
            )));
        }
        let start = rng.clone();
        run!(
            self,
            g => g.rsi(w, rows, cols, k, oversample, power_iters, rng).await,
            {
                *rng = start;
                matmul::rsi(w, rows, cols, k, oversample, power_iters, rng)
            }
        )
    }

    /// Nearest centroid of every point and its squared distance ([`crate::kmeans::assign`]).
    pub async fn kmeans_assign(
        &self,
        points: &[f32],
        dim: usize,
        codebook: &Codebook,
    ) -> Result<(Vec<u32>, Vec<f32>)> {
        let cpu_result = || kmeans_assign::assign(points, dim, codebook);
        kmeans_assign::check_assign(points, dim, codebook)?;
        run!(self, g => g.kmeans_assign(points, dim, codebook).await, cpu_result())
    }

    /// Every centroid moved to the mean of the points coded to it (centroids without points keep
    /// their place), and the number of points per centroid: one Lloyd update before the
    /// empty-cluster split.
    pub async fn cluster_means(
        &self,
        points: &[f32],
        dim: usize,
        codes: &[u32],
        codebook: &Codebook,
    ) -> Result<(Codebook, Vec<u32>)> {
        kmeans_update::check_codes(points, dim, codes, codebook)?;
        run!(
            self,
            g => g.cluster_means(points, dim, codes, codebook).await,
            Ok(kmeans_update::cluster_means(points, dim, codes, codebook))
        )
    }

    /// k-means ([`crate::kmeans::fit_detailed`]): seeding on the CPU, the Lloyd loop on the backend
    /// with the points resident.
    pub async fn kmeans_fit(
        &self,
        points: &[f32],
        dim: usize,
        k: usize,
        iters: usize,
        rng: &mut Rng,
    ) -> Result<Fit> {
        let start = rng.clone();
        run!(
            self,
            g => g.kmeans_fit(points, dim, k, iters, rng).await,
            {
                *rng = start;
                crate::kmeans::fit_detailed(points, dim, k, iters, rng)
            }
        )
    }

    /// The random-sign Hadamard rotation of each row ([`crate::rotation`]), in place; `inverse`
    /// undoes it. Same bits on both backends.
    pub async fn rotate(
        &self,
        values: &mut [f32],
        cols: usize,
        seed: u64,
        inverse: bool,
    ) -> Result<()> {
        if cols == 0 || !values.len().is_multiple_of(cols) {
            return Err(Error::invalid(format!(
                "{} values do not make rows of {cols}",
                values.len()
            )));
        }
        // The GPU writes `values` only once it has the whole result, so a failed GPU call leaves
        // them as they were for the CPU to redo.
        run!(
            self,
            g => g.rotate(values, cols, seed, inverse).await,
            {
                fwht::rotate(values, cols, seed, inverse);
                Ok(())
            }
        )
    }

    /// The grouped scalar grid's per-group (scale, minimum) search and codes
    /// ([`group_fit::fit_groups`], what the scalar codec's `Grouped` grid stores): groups of
    /// `group` consecutive values within each row of the row-major matrix, `bits` per code.
    pub async fn fit_groups(
        &self,
        values: &[f32],
        rows: usize,
        cols: usize,
        bits: u8,
        group: usize,
        search: bool,
    ) -> Result<GroupFits> {
        group_fit::check_groups(values, rows, cols, bits, group)?;
        run!(
            self,
            g => g.fit_groups(values, rows, cols, bits, group, search).await,
            Ok(group_fit::fit_groups(values, rows, cols, bits, group, search))
        )
    }

    /// Hyper-Compression's per-pair nearest-codeword search ([`hyper::nearest_codes`]):
    /// one code per pair `(pairs[2i], pairs[2i+1])`. The same codes on both backends (the kernel
    /// hands the pairs it cannot decide with certainty in f32 to the CPU function).
    pub async fn hyper_codes(&self, pairs: &[f32], geometry: &hyper::Geometry) -> Result<Vec<u32>> {
        hyper::check_hyper(pairs, geometry)?;
        run!(
            self,
            g => g.hyper_codes(pairs, geometry).await.map(|c| c.codes),
            Ok(hyper::hyper_codes(pairs, geometry))
        )
    }
}

/// Drives a future to completion on the calling thread (native), sleeping while it waits.
#[cfg(not(target_arch = "wasm32"))]
pub fn block_on<F: Future>(future: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(std::sync::Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut future = pin!(future);
    loop {
        match future.as_mut().poll(&mut cx) {
            Poll::Ready(v) => return v,
            Poll::Pending => std::thread::park(),
        }
    }
}

/// The output of a future that never waits: any computation on [`Backend::Cpu`]. Lets synchronous
/// callers (and the browser build without WebGPU) use the async kernels.
pub fn ready<F: Future>(future: F) -> F::Output {
    let mut cx = Context::from_waker(Waker::noop());
    match pin!(future).poll(&mut cx) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("a CPU-backend computation waited: only GPU readback may wait"),
    }
}
