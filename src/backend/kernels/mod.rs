//! One file per WGSL kernel, named as its shader in `shaders/`: each holds the kernel's arguments
//! (the `#[repr(C)]` uniform struct that mirrors the shader's, field for field), its CPU twin (the
//! reference the GPU is checked against and the fallback), and its GPU host code (buffers,
//! dispatch grid, readback) as an `impl Gpu` block. [`super::Backend`] picks one of the two.
//!
//! [`uniform_layouts`] lists every Rust mirror's size and field offsets so that a test can hold
//! them against the WGSL structs as naga lays them out (`tests/shaders.rs`).

/// The layout of one Rust uniform mirror: `uniform_layout!(shaders::X, XDims { field, .. })`
/// lists the fields that carry data (padding, named `_...` on both sides, is left out: only its
/// total, through the struct's size, has to agree).
#[cfg(feature = "gpu")]
macro_rules! uniform_layout {
    ($shader:expr, $ty:ident { $($field:ident),* $(,)? }) => {
        $crate::backend::kernels::UniformLayout {
            shader: $shader.name,
            name: stringify!($ty),
            size: std::mem::size_of::<$ty>(),
            fields: vec![$(
                $crate::backend::kernels::UniformField::of(
                    stringify!($field),
                    std::mem::offset_of!($ty, $field),
                    |v: &$ty| &v.$field,
                )
            ),*],
        }
    };
}

pub mod attention;
pub mod elementwise;
pub mod fwht;
pub mod group_fit;
pub mod hyper;
pub mod kmeans_assign;
pub mod kmeans_update;
pub mod linear;
pub mod matmul;
pub mod norm;
pub mod pool;
pub mod rope;

/// A Rust uniform mirror as `#[repr(C)]` lays it out.
#[cfg(feature = "gpu")]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UniformLayout {
    /// The shader's file name (`shaders::Shader::name`).
    pub shader: &'static str,
    /// The struct's name, the same in Rust and WGSL.
    pub name: &'static str,
    /// Bytes.
    pub size: usize,
    /// The data fields in declaration order.
    pub fields: Vec<UniformField>,
}

/// One field of a uniform mirror.
#[cfg(feature = "gpu")]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UniformField {
    pub name: &'static str,
    /// Byte offset from the start of the struct.
    pub offset: usize,
    /// Bytes.
    pub size: usize,
    /// `u32` or `f32`: the scalar the field (or its vector or array) is made of.
    pub scalar: &'static str,
}

#[cfg(feature = "gpu")]
impl UniformField {
    /// The field `name` at `offset`, its type given by an accessor (so the macro needs no types).
    pub fn of<S, F: UniformScalar>(
        name: &'static str,
        offset: usize,
        _field: fn(&S) -> &F,
    ) -> UniformField {
        UniformField {
            name,
            offset,
            size: std::mem::size_of::<F>(),
            scalar: F::SCALAR,
        }
    }
}

/// The types a uniform field may have on the Rust side, by the WGSL scalar they mirror.
#[cfg(feature = "gpu")]
pub trait UniformScalar {
    const SCALAR: &'static str;
}

#[cfg(feature = "gpu")]
impl UniformScalar for u32 {
    const SCALAR: &'static str = "u32";
}

#[cfg(feature = "gpu")]
impl UniformScalar for f32 {
    const SCALAR: &'static str = "f32";
}

#[cfg(feature = "gpu")]
impl<T: UniformScalar, const N: usize> UniformScalar for [T; N] {
    const SCALAR: &'static str = T::SCALAR;
}

/// Every kernel's uniform mirror (one entry per uniform struct of `shaders/`).
#[cfg(feature = "gpu")]
pub fn uniform_layouts() -> Vec<UniformLayout> {
    vec![
        matmul::layout(),
        kmeans_assign::layout(),
        kmeans_update::layout(),
        fwht::layout(),
        group_fit::layout(),
        hyper::layout(),
        linear::layout(),
        norm::layout(),
        elementwise::layout(),
        rope::layout(),
        attention::layout(),
        pool::layout(),
    ]
}
