//! The model runtime's element-wise steps, `shaders/elementwise.wgsl`: the residual add,
//! SwiGLU's `silu(gate) * up` and GELU (erf form and tanh approximation).
//!
//! - Arguments: `ElementwiseDims`, the kernel's uniform (GPU builds); [`Elementwise`], the step.
//! - CPU twins: [`apply`] over [`silu`], [`gelu`], [`gelu_tanh`] (and [`erf`]): the model
//!   runtime's own activations (`model::ops` uses these).
//! - GPU host code: `Pass::elementwise` (resident), `Gpu::elementwise` (one upload, one readback).

/// Which element-wise step (`b` is the second operand of the two-operand steps).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Elementwise {
    /// `a += b` (the residual connections).
    Add,
    /// `a = silu(a) * b` (SwiGLU: `a` the gate projection, `b` the up projection).
    SwiGlu,
    /// `a = gelu(a)` with the exact error function.
    Gelu,
    /// `a = gelu_tanh(a)` (`gelu_new`).
    GeluTanh,
}

impl Elementwise {
    /// Whether the step reads a second operand `b`.
    pub fn binary(self) -> bool {
        matches!(self, Elementwise::Add | Elementwise::SwiGlu)
    }

    #[cfg(feature = "gpu")]
    fn entry(self) -> &'static str {
        match self {
            Elementwise::Add => "add",
            Elementwise::SwiGlu => "swiglu",
            Elementwise::Gelu => "gelu",
            Elementwise::GeluTanh => "gelu_tanh",
        }
    }
}

// ---------------------------------------------------------------------------------------------
// CPU twins

/// `step` on `a` in place (`b` as long as `a` for the two-operand steps, ignored otherwise).
pub fn apply(step: Elementwise, a: &mut [f32], b: &[f32]) {
    match step {
        Elementwise::Add => a.iter_mut().zip(b).for_each(|(x, y)| *x += y),
        Elementwise::SwiGlu => a.iter_mut().zip(b).for_each(|(g, u)| *g = silu(*g) * u),
        Elementwise::Gelu => a.iter_mut().for_each(|v| *v = gelu(*v)),
        Elementwise::GeluTanh => a.iter_mut().for_each(|v| *v = gelu_tanh(*v)),
    }
}

pub fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

/// GELU with the exact error function: `x/2 (1 + erf(x/sqrt 2))`.
pub fn gelu(x: f32) -> f32 {
    let x = x as f64;
    (0.5 * x * (1.0 + erf(x / std::f64::consts::SQRT_2))) as f32
}

/// GELU's tanh approximation (`gelu_new`).
pub fn gelu_tanh(x: f32) -> f32 {
    let x = x as f64;
    let c = (2.0 / std::f64::consts::PI).sqrt();
    (0.5 * x * (1.0 + (c * (x + 0.044715 * x * x * x)).tanh())) as f32
}

/// The error function to ~1e-15 (a Taylor series near zero, a continued fraction of erfc in the
/// tails): the standard library has none, and GELU's f32 result needs ~1e-8.
pub fn erf(x: f64) -> f64 {
    let a = x.abs();
    let r = if a < 2.5 {
        // erf(x) = 2/sqrt(pi) * sum_n (-1)^n x^(2n+1) / (n! (2n+1))
        let x2 = a * a;
        let (mut term, mut sum) = (a, a);
        for n in 1..200 {
            term *= -x2 / n as f64;
            let t = term / (2 * n + 1) as f64;
            sum += t;
            if t.abs() < 1e-17 * sum.abs() {
                break;
            }
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    } else if a < 6.0 {
        // erfc(x) = exp(-x^2)/sqrt(pi) * 1/(x + 1/2/(x + 1/(x + 3/2/(x + ...)))), from the tail.
        let mut f = 0.0;
        for k in (1..=60).rev() {
            f = (k as f64 / 2.0) / (a + f);
        }
        1.0 - (-a * a).exp() / std::f64::consts::PI.sqrt() / (a + f)
    } else {
        1.0
    };
    r.copysign(x)
}

// ---------------------------------------------------------------------------------------------
// Arguments: the uniform of elementwise.wgsl

/// `ElementwiseDims` of elementwise.wgsl, field for field (4 words).
#[cfg(feature = "gpu")]
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct ElementwiseDims {
    len: u32,
    groups_x: u32,
    _pad: [u32; 2],
}

#[cfg(feature = "gpu")]
pub(super) fn layout() -> super::UniformLayout {
    uniform_layout!(
        crate::shaders::ELEMENTWISE,
        ElementwiseDims { len, groups_x }
    )
}

// ---------------------------------------------------------------------------------------------
// GPU host code

#[cfg(feature = "gpu")]
mod host {
    use super::{Elementwise, ElementwiseDims};
    use crate::backend::gpu::{grid, to_u32, DeviceTensor, Gpu, GpuResult, Pass, WORKGROUP};
    use crate::backend::GpuFailure;
    use crate::shaders;

    impl Pass<'_> {
        /// Records `step` on the first `len` values of `a` (with `b` for the two-operand steps).
        pub fn elementwise(
            &mut self,
            step: Elementwise,
            a: &DeviceTensor,
            b: Option<&DeviceTensor>,
            len: usize,
        ) -> GpuResult<()> {
            if a.len() < len || (step.binary() && b.is_none_or(|b| b.len() < len)) {
                return Err(GpuFailure::Unsupported(format!(
                    "{step:?} on {len} values: operands too short or missing"
                )));
            }
            if len == 0 {
                return Ok(());
            }
            let (gx, gy) = grid(len.div_ceil(WORKGROUP))?;
            let dims = ElementwiseDims {
                len: to_u32(len, "values")?,
                groups_x: gx,
                _pad: [0; 2],
            };
            let tensors: Vec<&DeviceTensor> = match (step.binary(), b) {
                (true, Some(b)) => vec![a, b],
                _ => vec![a],
            };
            self.kernel(
                &shaders::ELEMENTWISE,
                step.entry(),
                &dims,
                &tensors,
                (gx, gy, 1),
            );
            Ok(())
        }
    }

    impl Gpu {
        /// [`super::apply`] on the GPU: one upload, one readback.
        pub async fn elementwise(
            &self,
            step: Elementwise,
            a: &[f32],
            b: &[f32],
        ) -> GpuResult<Vec<f32>> {
            let at = self.tensor(a, "a")?;
            let bt = match step.binary() {
                true => Some(self.tensor(b, "b")?),
                false => None,
            };
            let mut pass = self.pass();
            pass.elementwise(step, &at, bt.as_ref(), a.len())?;
            pass.submit();
            self.read_tensor(&at, a.len()).await
        }
    }
}
