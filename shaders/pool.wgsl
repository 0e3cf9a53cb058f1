// Pooling of an encoder's token states into one sentence embedding: the mean, the maximum or the
// first (CLS) row of x (rows x dim, f32), per column. Host code, CPU twin and the uniform's Rust
// mirror `PoolDims`: src/backend/kernels/pool.rs (checked against its CPU twin `pool` in
// tests/it/runtime_gpu.rs). Scaling to unit length, when the model asks for it, is done on the
// host after the readback (dim values).

struct PoolDims {
    rows: u32,
    dim: u32,
    mode: u32, // 0: mean, 1: max, 2: the first row
    _pad0: u32,
}

@group(0) @binding(0) var<uniform> dims: PoolDims;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let j = gid.x;
    if (j >= dims.dim) {
        return;
    }
    if (dims.mode == 2u) {
        out[j] = x[j];
        return;
    }
    // Rows in order, as the CPU sums them.
    var acc = x[j];
    for (var i = 1u; i < dims.rows; i++) {
        let v = x[i * dims.dim + j];
        if (dims.mode == 1u) {
            acc = max(acc, v);
        } else {
            acc += v;
        }
    }
    if (dims.mode == 0u) {
        acc = acc / f32(dims.rows);
    }
    out[j] = acc;
}
