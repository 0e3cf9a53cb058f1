// k-means assignment: the nearest centroid of every point (lowest index among equals) and its
// squared distance, ||x||^2 + (||c||^2 - 2 x.c) clamped at 0, the formula of the CPU kernel
// `kmeans::assign` that this is checked against. Host code, CPU twin and the uniform's Rust mirror
// `AssignDims`: src/backend/kernels/kmeans_assign.rs.
//
// One invocation per point; the centroids are staged through workgroup memory in chunks of at most
// 2048 floats (8 KiB), with their squared norms computed once per chunk. Besides codes and distances,
// every workgroup writes the sum of its distances (the objective, summed in f64 on the CPU) and
// counts the points whose code changed (Lloyd's stopping test) in one atomic counter.
//
// The points of one dispatch are one tile of a point set that may span several storage buffers
// (each tile has its own codes and distances); `first_partial` places the tile's workgroups in the
// objective's partial sums.

struct AssignDims {
    n: u32,              // points in this tile
    dim: u32,
    k: u32,
    _pad2: u32,
    first_partial: u32,  // index of the tile's first workgroup in partial_objective
    groups_x: u32,       // workgroups along x in this dispatch (the grid is 2-D past 65535)
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> dims: AssignDims;
@group(0) @binding(1) var<storage, read> points: array<f32>;
@group(0) @binding(2) var<storage, read> centroids: array<f32>;
@group(0) @binding(3) var<storage, read_write> codes: array<u32>;
@group(0) @binding(4) var<storage, read_write> distances: array<f32>;
@group(0) @binding(5) var<storage, read_write> partial_objective: array<f32>;
@group(0) @binding(6) var<storage, read_write> changed: array<atomic<u32>>;

const STAGE: u32 = 2048u;
const MAX_PRIVATE_DIM: u32 = 64u;

var<workgroup> staged: array<f32, 2048>;
var<workgroup> staged_norm: array<f32, 256>;
var<workgroup> reduce: array<f32, 256>;

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let group = wg.y * dims.groups_x + wg.x;
    let i = group * 256u + lid;
    let d = dims.dim;
    let live = i < dims.n;
    let base = i * d;

    var x: array<f32, 64>;
    var norm_x = 0.0;
    if (live) {
        for (var j = 0u; j < d; j++) {
            let v = points[base + j];
            if (j < MAX_PRIVATE_DIM) {
                x[j] = v;
            }
            norm_x = norm_x + v * v;
        }
    }

    let per_chunk = min(256u, STAGE / d);
    var best = 3.4e38;
    var best_code = 0u;
    for (var c0 = 0u; c0 < dims.k; c0 += per_chunk) {
        let count = min(per_chunk, dims.k - c0);
        workgroupBarrier();
        for (var e = lid; e < count * d; e += 256u) {
            staged[e] = centroids[c0 * d + e];
        }
        workgroupBarrier();
        if (lid < count) {
            var s = 0.0;
            for (var j = 0u; j < d; j++) {
                let v = staged[lid * d + j];
                s = s + v * v;
            }
            staged_norm[lid] = s;
        }
        workgroupBarrier();
        if (live) {
            for (var c = 0u; c < count; c++) {
                var dot = 0.0;
                for (var j = 0u; j < d; j++) {
                    var xj: f32;
                    if (d <= MAX_PRIVATE_DIM) {
                        xj = x[j];
                    } else {
                        xj = points[base + j];
                    }
                    dot = dot + xj * (-2.0 * staged[c * d + j]);
                }
                let acc = staged_norm[c] + dot;
                if (acc < best) {
                    best = acc;
                    best_code = c0 + c;
                }
            }
        }
    }

    var dist = 0.0;
    if (live) {
        dist = max(norm_x + best, 0.0);
        if (codes[i] != best_code) {
            atomicAdd(&changed[0], 1u);
        }
        codes[i] = best_code;
        distances[i] = dist;
    }
    reduce[lid] = dist;
    workgroupBarrier();
    for (var s = 128u; s > 0u; s = s >> 1u) {
        if (lid < s) {
            reduce[lid] = reduce[lid] + reduce[lid + s];
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        partial_objective[dims.first_partial + group] = reduce[0];
    }
}
