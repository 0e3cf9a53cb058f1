// Random-sign fast Walsh-Hadamard rotation of the rows of a row-major matrix, forward or inverse:
// the GPU twin of `rotation::forward` / `rotation::inverse` (host code, CPU twin and the
// uniform's Rust mirror `FwhtDims`: src/backend/kernels/fwht.rs).
// The butterflies are the CPU's, in the same order (x + y, x - y per pass, then one multiply by
// 1/sqrt(block) computed on the CPU), so both give the same bits.
//
// One workgroup rotates a segment of 1024 consecutive elements held in workgroup memory. Blocks are
// powers of two <= 1024 that divide the row length, so a segment holds whole blocks (never part of one)
// and a pass with half-width h pairs element i with i + h inside its block.

struct FwhtDims {
    len: u32,           // elements in this tile (whole rows)
    cols: u32,
    block: u32,         // Hadamard block length, a power of two dividing cols and 1024
    inverse: u32,       // 0: signs then transform; 1: transform then signs
    scale: f32,         // 1 / sqrt(block), as the CPU computes it
    groups_x: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> dims: FwhtDims;
@group(0) @binding(1) var<storage, read> signs: array<f32>;
@group(0) @binding(2) var<storage, read_write> values: array<f32>;

const SEGMENT: u32 = 1024u;
var<workgroup> seg: array<f32, 1024>;

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let start = (wg.y * dims.groups_x + wg.x) * SEGMENT;
    let len = min(SEGMENT, dims.len - min(start, dims.len));
    for (var e = lid; e < SEGMENT; e += 256u) {
        var v = 0.0;
        if (e < len) {
            v = values[start + e];
            if (dims.inverse == 0u) {
                v = v * signs[(start + e) % dims.cols];
            }
        }
        seg[e] = v;
    }
    workgroupBarrier();
    if (dims.block > 1u) {
        for (var h = 1u; h < dims.block; h = h << 1u) {
            for (var p = lid; p < SEGMENT / 2u; p += 256u) {
                let i = (p / h) * (2u * h) + (p % h);
                let x = seg[i];
                let y = seg[i + h];
                seg[i] = x + y;
                seg[i + h] = x - y;
            }
            workgroupBarrier();
        }
    }
    for (var e = lid; e < len; e += 256u) {
        var v = seg[e];
        if (dims.block > 1u) {
            v = v * dims.scale;
        }
        if (dims.inverse == 1u) {
            v = v * signs[(start + e) % dims.cols];
        }
        values[start + e] = v;
    }
}
