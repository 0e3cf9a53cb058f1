// Tiled f32 matrix product C = op(A) * B (+ C), op(A) = A or A^T, all row-major.
// Host code, CPU twin and the uniform's Rust mirror `MatmulDims`: src/backend/kernels/matmul.rs
// (checked against its CPU twin `matmul`, faer, in tests/backend.rs).
//
// Used by the randomized subspace iteration: W * Omega and Y * R^-1 (op = identity), W^T * Q, Q^T * W
// and the Cholesky-QR Gram matrix Y^T * Y (op = transpose). `accumulate = 1` adds into C, so a
// product over a row-tiled A (a matrix larger than one storage binding) is a sum of tile products.
//
// Each workgroup computes a 64 x 64 block of C from 64 x 16 and 16 x 64 tiles staged in workgroup
// memory (8 KiB of the 16 KiB WebGPU guarantees); each of the 16 x 16 invocations keeps a 4 x 4 block
// of C in registers, strided by 16 so that neighbouring invocations read neighbouring words.

struct MatmulDims {
    m: u32,          // rows of C and of op(A)
    n: u32,          // columns of C and of B
    k: u32,          // columns of op(A), rows of B
    trans_a: u32,    // 0: A is m x k; 1: A is k x m (op(A) = A^T)
    accumulate: u32, // 0: C = op(A) B; 1: C += op(A) B
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> dims: MatmulDims;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;

const TILE: u32 = 64u;
const DEPTH: u32 = 16u;

var<workgroup> a_tile: array<f32, 1024>; // [DEPTH][TILE]: a_tile[kk * TILE + row]
var<workgroup> b_tile: array<f32, 1024>; // [DEPTH][TILE]: b_tile[kk * TILE + col]

fn load_a(row: u32, kk: u32) -> f32 {
    if (row >= dims.m || kk >= dims.k) {
        return 0.0;
    }
    if (dims.trans_a == 0u) {
        return a[row * dims.k + kk];
    }
    return a[kk * dims.m + row];
}

@compute @workgroup_size(16, 16, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let row0 = wg.y * TILE;
    let col0 = wg.x * TILE;
    let tid = lid.y * 16u + lid.x;
    // One vec4 of C per row of the 4 x 4 block, named rather than indexed: with an array<f32, 16>
    // indexed inside loops this kernel ran at 0.5 TFLOP/s on an H200, with these at 8.8 (the array
    // was most likely placed in local memory, not registers).
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    let steps = (dims.k + DEPTH - 1u) / DEPTH;
    for (var s = 0u; s < steps; s++) {
        let k0 = s * DEPTH;
        for (var i = 0u; i < 4u; i++) {
            let idx = tid + 256u * i;
            // Walk memory contiguously: along k for A, along rows for A^T.
            var r: u32;
            var kk: u32;
            if (dims.trans_a == 0u) {
                r = idx / DEPTH;
                kk = idx % DEPTH;
            } else {
                r = idx % TILE;
                kk = idx / TILE;
            }
            a_tile[kk * TILE + r] = load_a(row0 + r, k0 + kk);
            let bk = idx / TILE;
            let bc = idx % TILE;
            var bv = 0.0;
            if (k0 + bk < dims.k && col0 + bc < dims.n) {
                bv = b[(k0 + bk) * dims.n + col0 + bc];
            }
            b_tile[bk * TILE + bc] = bv;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < DEPTH; kk++) {
            let base = kk * TILE;
            let bv = vec4<f32>(
                b_tile[base + lid.x],
                b_tile[base + lid.x + 16u],
                b_tile[base + lid.x + 32u],
                b_tile[base + lid.x + 48u],
            );
            acc0 = acc0 + a_tile[base + lid.y] * bv;
            acc1 = acc1 + a_tile[base + lid.y + 16u] * bv;
            acc2 = acc2 + a_tile[base + lid.y + 32u] * bv;
            acc3 = acc3 + a_tile[base + lid.y + 48u] * bv;
        }
        workgroupBarrier();
    }
    store_row(row0 + lid.y, col0 + lid.x, acc0);
    store_row(row0 + lid.y + 16u, col0 + lid.x, acc1);
    store_row(row0 + lid.y + 32u, col0 + lid.x, acc2);
    store_row(row0 + lid.y + 48u, col0 + lid.x, acc3);
}

// Writes (or adds) the 4 values of `v` at columns col, col + 16, col + 32, col + 48 of `row`.
fn store_row(row: u32, col: u32, v: vec4<f32>) {
    if (row >= dims.m) {
        return;
    }
    for (var j = 0u; j < 4u; j++) {
        let cj = col + 16u * j;
        if (cj < dims.n) {
            let o = row * dims.n + cj;
            if (dims.accumulate == 1u) {
                c[o] = c[o] + v[j];
            } else {
                c[o] = v[j];
            }
        }
    }
}
