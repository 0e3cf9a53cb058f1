// Rotary positions (the Hugging Face convention: element k of a head pairs with element
// k + head_dim/2), in place on x (rows x heads*head_dim, f32), row r at the position whose cos and
// sin the host put in table row r. Host code, CPU twin and the uniform's Rust mirror `RopeDims`:
// src/backend/kernels/rope.rs (checked against its CPU twin `rope` in tests/it/runtime_gpu.rs).
//
// The angles pos * theta^(-2k/d) are computed on the host in f64, as the CPU runtime does: in f32
// on the GPU, cos and sin of an angle of thousands of radians would lose digits.

struct RopeDims {
    rows: u32,
    heads: u32,
    head_dim: u32,
    groups_x: u32, // workgroups along x (the dispatch is 2-D past 65535 workgroups)
}

@group(0) @binding(0) var<uniform> dims: RopeDims;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;
@group(0) @binding(2) var<storage, read> table: array<f32>; // rows x half x (cos, sin)

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let half = dims.head_dim / 2u;
    let i = (wg.y * dims.groups_x + wg.x) * 256u + lid.x; // one pair per invocation
    if (i >= dims.rows * dims.heads * half) {
        return;
    }
    let k = i % half;
    let head = i / half; // row * heads + head
    let row = head / dims.heads;
    let base = head * dims.head_dim;
    let c = table[(row * half + k) * 2u];
    let s = table[(row * half + k) * 2u + 1u];
    let a = x[base + k];
    let b = x[base + k + half];
    x[base + k] = a * c - b * s;
    x[base + k + half] = b * c + a * s;
}
