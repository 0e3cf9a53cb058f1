// Row norms of the model runtime: RMSNorm (Llama) and LayerNorm (BERT), each row of x (rows x dim,
// row-major f32) into out. Host code, CPU twins and the uniform's Rust mirror `NormDims`:
// src/backend/kernels/norm.rs (checked against its CPU twins `rms_norm`, `layer_norm` in
// tests/it/runtime_gpu.rs).
//
// One workgroup of 256 invocations per row; the sums are reduced in workgroup memory. As on the
// CPU: rms: out = x / sqrt(mean(x^2) + eps) * w; layer: mean first, then the variance of x - mean
// (two passes, not E[x^2] - mean^2, which cancels), out = (x - mean) / sqrt(var + eps) * w + b.

struct NormDims {
    rows: u32,
    dim: u32,
    eps: f32,
    _pad0: u32,
}

@group(0) @binding(0) var<uniform> dims: NormDims;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> weight: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<storage, read> bias: array<f32>;

const WG: u32 = 256u;
var<workgroup> partial: array<f32, 256>;

// The sum over the workgroup of each invocation's `v` (every invocation gets it).
fn workgroup_sum(v: f32, lid: u32) -> f32 {
    partial[lid] = v;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride = stride / 2u) {
        if (lid < stride) {
            partial[lid] += partial[lid + stride];
        }
        workgroupBarrier();
    }
    let total = partial[0];
    workgroupBarrier();
    return total;
}

@compute @workgroup_size(256, 1, 1)
fn rms_norm(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let row = wg.y * groups.x + wg.x;
    let live = row < dims.rows;
    let base = row * dims.dim;
    var s = 0.0;
    if (live) {
        for (var j = lid.x; j < dims.dim; j += WG) {
            let v = x[base + j];
            s += v * v;
        }
    }
    let ms = workgroup_sum(s, lid.x) / f32(dims.dim);
    let scale = 1.0 / sqrt(ms + dims.eps);
    if (live) {
        for (var j = lid.x; j < dims.dim; j += WG) {
            out[base + j] = x[base + j] * scale * weight[j];
        }
    }
}

@compute @workgroup_size(256, 1, 1)
fn layer_norm(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let row = wg.y * groups.x + wg.x;
    let live = row < dims.rows;
    let base = row * dims.dim;
    var s = 0.0;
    if (live) {
        for (var j = lid.x; j < dims.dim; j += WG) {
            s += x[base + j];
        }
    }
    let mean = workgroup_sum(s, lid.x) / f32(dims.dim);
    var q = 0.0;
    if (live) {
        for (var j = lid.x; j < dims.dim; j += WG) {
            let d = x[base + j] - mean;
            q += d * d;
        }
    }
    let variance = workgroup_sum(q, lid.x) / f32(dims.dim);
    let scale = 1.0 / sqrt(variance + dims.eps);
    if (live) {
        for (var j = lid.x; j < dims.dim; j += WG) {
            out[base + j] = (x[base + j] - mean) * scale * weight[j] + bias[j];
        }
    }
}
