// k-means centroid update, in two passes because WGSL has no float atomics. Host code,
// CPU twin and the uniform's Rust mirror `UpdateDims`: src/backend/kernels/kmeans_update.rs;
// checked against `kmeans::cluster_means` (the CPU update before its empty-cluster split, which
// stays on the CPU).
//
// `sum_chunks`: one workgroup per (chunk of 1024 points, block of 256 centroids). The chunk's codes
//   are staged in workgroup memory; invocation c walks them and adds the coordinates of its members,
//   32 dimensions at a time in registers. Every point is read by exactly one invocation. Writes the
//   chunk's per-centroid sums and counts.
// `move_centroids`: one invocation per (centroid, dimension): sums the chunks in chunk order (so the
//   result does not depend on scheduling) and moves the centroid to the mean; a centroid with no
//   points keeps its place (the CPU then re-seeds it).

struct UpdateDims {
    n: u32,           // points in this tile (sum_chunks) / unused (move_centroids)
    dim: u32,
    k: u32,
    _pad1: u32,
    first_chunk: u32, // index of the tile's first chunk in the partial arrays
    chunks: u32,      // move_centroids: chunks in all tiles
    groups_x: u32,    // workgroups along x (the grid is 2-D past 65535)
    _pad0: u32,
}

@group(0) @binding(0) var<uniform> dims: UpdateDims;
@group(0) @binding(1) var<storage, read> points: array<f32>;
@group(0) @binding(2) var<storage, read> codes: array<u32>;
@group(0) @binding(3) var<storage, read_write> partial_sums: array<f32>;
@group(0) @binding(4) var<storage, read_write> partial_counts: array<u32>;

const CHUNK: u32 = 1024u;
const LANES: u32 = 32u;

var<workgroup> chunk_codes: array<u32, 1024>;

@compute @workgroup_size(256, 1, 1)
fn sum_chunks(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let chunk = wg.y * dims.groups_x + wg.x;
    let p0 = chunk * CHUNK;
    let c = wg.z * 256u + lid;
    let d = dims.dim;
    let count = min(CHUNK, dims.n - min(p0, dims.n));
    for (var e = lid; e < CHUNK; e += 256u) {
        var code = 0xffffffffu;
        if (e < count) {
            code = codes[p0 + e];
        }
        chunk_codes[e] = code;
    }
    workgroupBarrier();
    if (c >= dims.k || count == 0u) {
        return;
    }
    let out = (dims.first_chunk + chunk) * dims.k + c;
    var members = 0u;
    for (var j0 = 0u; j0 < d; j0 += LANES) {
        let width = min(LANES, d - j0);
        var acc: array<f32, 32>;
        for (var j = 0u; j < LANES; j++) {
            acc[j] = 0.0;
        }
        members = 0u;
        for (var e = 0u; e < count; e++) {
            if (chunk_codes[e] == c) {
                members += 1u;
                let base = (p0 + e) * d + j0;
                for (var j = 0u; j < width; j++) {
                    acc[j] = acc[j] + points[base + j];
                }
            }
        }
        for (var j = 0u; j < width; j++) {
            partial_sums[out * d + j0 + j] = acc[j];
        }
    }
    partial_counts[out] = members;
}

@group(0) @binding(5) var<storage, read_write> centroids: array<f32>;
@group(0) @binding(6) var<storage, read_write> counts: array<u32>;

@compute @workgroup_size(256, 1, 1)
fn move_centroids(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let e = (wg.y * dims.groups_x + wg.x) * 256u + lid;
    let d = dims.dim;
    if (e >= dims.k * d) {
        return;
    }
    let c = e / d;
    let j = e % d;
    var sum = 0.0;
    var members = 0u;
    for (var ch = 0u; ch < dims.chunks; ch++) {
        let o = ch * dims.k + c;
        let m = partial_counts[o];
        if (m > 0u) {
            sum = sum + partial_sums[o * d + j];
            members += m;
        }
    }
    if (members > 0u) {
        centroids[e] = sum / f32(members);
    }
    if (j == 0u) {
        counts[c] = members;
    }
}
