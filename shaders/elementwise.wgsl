// Element-wise steps of the model runtime, in place on a (len values, f32): the residual add
// (a += b), SwiGLU's gate (a = silu(a) * b, b the up projection) and GELU (erf form, and the tanh
// approximation `gelu_new`). Host code, CPU twins and the uniform's Rust mirror
// `ElementwiseDims`: src/backend/kernels/elementwise.rs (checked against its CPU twins in
// tests/it/runtime_gpu.rs).
//
// GELU's CPU twin evaluates erf in f64 to ~1e-15; here erf is Abramowitz & Stegun 7.1.26 in f32
// (absolute error below 1.5e-7, so GELU's below ~1e-7 |x| plus f32 rounding).

struct ElementwiseDims {
    len: u32,
    groups_x: u32, // workgroups along x (the dispatch is 2-D past 65535 workgroups)
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> dims: ElementwiseDims;
@group(0) @binding(1) var<storage, read_write> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;

fn index(wg: vec3<u32>, lid: vec3<u32>) -> u32 {
    return (wg.y * dims.groups_x + wg.x) * 256u + lid.x;
}

@compute @workgroup_size(256, 1, 1)
fn add(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = index(wg, lid);
    if (i < dims.len) {
        a[i] = a[i] + b[i];
    }
}

@compute @workgroup_size(256, 1, 1)
fn swiglu(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = index(wg, lid);
    if (i < dims.len) {
        let g = a[i];
        a[i] = g / (1.0 + exp(-g)) * b[i];
    }
}

fn erf(x: f32) -> f32 {
    let z = abs(x);
    let t = 1.0 / (1.0 + 0.3275911 * z);
    let poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))));
    let r = 1.0 - poly * exp(-z * z);
    return select(r, -r, x < 0.0);
}

@compute @workgroup_size(256, 1, 1)
fn gelu(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = index(wg, lid);
    if (i < dims.len) {
        let v = a[i];
        a[i] = 0.5 * v * (1.0 + erf(v * 0.70710678118654752));
    }
}

@compute @workgroup_size(256, 1, 1)
fn gelu_tanh(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = index(wg, lid);
    if (i < dims.len) {
        let v = a[i];
        // tanh(u) = 1 - 2 / (exp(2u) + 1), u clamped so that exp stays finite (tanh(20) is 1 in f32).
        let u = 0.7978845608028654 * (v + 0.044715 * v * v * v);
        let th = 1.0 - 2.0 / (exp(2.0 * clamp(u, -20.0, 20.0)) + 1.0);
        a[i] = 0.5 * v * (1.0 + th);
    }
}
