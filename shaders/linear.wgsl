// A linear layer y = x W^T + b: x is n x in_dim, W is out_dim x in_dim (the checkpoints' layout),
// y is n x out_dim, all row-major f32. Host code, CPU twin and the uniform's Rust mirror
// `LinearDims`: src/backend/kernels/linear.rs (checked against its CPU twin `linear` in
// tests/it/runtime_gpu.rs).
//
// Two entry points, as the CPU runtime has two paths:
// - `matvec` (n = 1, a decoder making one token): bound by reading W once. A workgroup of 64 x 4
//   invocations makes 4 output rows; the 64 invocations of a row read neighbouring words of it
//   and sum their partial sums in workgroup memory.
// - `tiled` (n > 1: a prompt, a window, a sentence): 16 x 16 outputs per workgroup from 16 x 16
//   tiles of x and W staged in workgroup memory.

struct LinearDims {
    n: u32,        // rows of x and y
    out_dim: u32,  // rows of W, columns of y
    in_dim: u32,   // columns of x and W
    has_bias: u32, // 0: no bias (the bias binding is a placeholder)
}

@group(0) @binding(0) var<uniform> dims: LinearDims;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

const LANES: u32 = 64u;
const ROWS: u32 = 4u;
const TILE: u32 = 16u;

var<workgroup> partial: array<f32, 256>; // [ROWS][LANES]
var<workgroup> x_tile: array<f32, 256>;  // [TILE rows of x][TILE columns]
var<workgroup> w_tile: array<f32, 256>;  // [TILE rows of W][TILE columns]

fn with_bias(v: f32, col: u32) -> f32 {
    if (dims.has_bias != 0u) {
        return v + bias[col];
    }
    return v;
}

@compute @workgroup_size(64, 4, 1)
fn matvec(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let row = (wg.y * groups.x + wg.x) * ROWS + lid.y;
    var s = 0.0;
    if (row < dims.out_dim) {
        let base = row * dims.in_dim;
        for (var k = lid.x; k < dims.in_dim; k += LANES) {
            s += w[base + k] * x[k];
        }
    }
    let slot = lid.y * LANES + lid.x;
    partial[slot] = s;
    workgroupBarrier();
    for (var stride = LANES / 2u; stride > 0u; stride = stride / 2u) {
        if (lid.x < stride) {
            partial[slot] += partial[slot + stride];
        }
        workgroupBarrier();
    }
    if (lid.x == 0u && row < dims.out_dim) {
        y[row] = with_bias(partial[slot], row);
    }
}

@compute @workgroup_size(16, 16, 1)
fn tiled(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let col = wg.x * TILE + lid.x; // output column: a row of W
    let row = wg.y * TILE + lid.y; // output row: a row of x
    let w_row = wg.x * TILE + lid.y; // the row of W this invocation stages
    var s = 0.0;
    let steps = (dims.in_dim + TILE - 1u) / TILE;
    for (var t = 0u; t < steps; t++) {
        let k = t * TILE + lid.x;
        var xv = 0.0;
        if (row < dims.n && k < dims.in_dim) {
            xv = x[row * dims.in_dim + k];
        }
        var wv = 0.0;
        if (w_row < dims.out_dim && k < dims.in_dim) {
            wv = w[w_row * dims.in_dim + k];
        }
        x_tile[lid.y * TILE + lid.x] = xv;
        w_tile[lid.y * TILE + lid.x] = wv;
        workgroupBarrier();
        for (var kk = 0u; kk < TILE; kk++) {
            s += x_tile[lid.y * TILE + kk] * w_tile[lid.x * TILE + kk];
        }
        workgroupBarrier();
    }
    if (row < dims.n && col < dims.out_dim) {
        y[row * dims.out_dim + col] = with_bias(s, col);
    }
}
