// Grouped scalar quantization: per group, the (scale, offset) search of the scalar codec's grouped
// grid (`fit_group`: min/max range, then 12 shrunk ranges, each as is and refitted by least squares, every
// candidate measured with its f16-rounded values), then the group's codes. Host code,
// CPU twin `fit_groups` and the uniform's Rust mirror `GroupDims`: src/backend/kernels/group_fit.rs.
//
// One invocation per group. The CPU sums errors and the least-squares moments in f64; WGSL has no
// f64, so this sums in f32 and centres the least-squares fit (stable in f32): near-ties between
// candidates may resolve differently, which the test bounds (the chosen fit's error is never worse
// than the CPU's by more than a relative 1e-3 per group).

struct GroupDims {
    rows: u32,  // rows in this tile
    cols: u32,
    group: u32,
    bits: u32,
    search: u32,
    groups_x: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> dims: GroupDims;
@group(0) @binding(1) var<storage, read> values: array<f32>;
@group(0) @binding(2) var<storage, read_write> fits: array<vec2<f32>>; // (scale, minimum) per group
@group(0) @binding(3) var<storage, read_write> codes: array<u32>;

// f32 -> nearest f16 (ties to even) -> f32, as `half::f16::from_f32(x).to_f32()`.
fn f16_round(x: f32) -> f32 {
    let bits = bitcast<u32>(x);
    let sign = bits & 0x80000000u;
    let a = bits & 0x7fffffffu;
    if (a >= 0x7f800000u) {
        return x;
    }
    if (a >= 0x477ff000u) { // >= 65520: rounds to infinity
        return bitcast<f32>(sign | 0x7f800000u);
    }
    if (a < 0x38800000u) { // below 2^-14: f16 subnormals, a multiple of 2^-24 (exact scaling)
        let r = round(bitcast<f32>(a) * 16777216.0) / 16777216.0; // round() is ties-to-even
        return bitcast<f32>(sign | bitcast<u32>(r));
    }
    let lsb = (a >> 13u) & 1u;
    let rounded = (a + 0xfffu + lsb) & 0xffffe000u;
    return bitcast<f32>(sign | rounded);
}

// Rust's f32::round: halves away from zero (WGSL's round() goes to even).
fn round_away(x: f32) -> f32 {
    let t = trunc(x);
    if (abs(x - t) >= 0.5) {
        return t + sign(x);
    }
    return t;
}

fn quantize(v: f32, scale: f32, minimum: f32, top: f32) -> f32 {
    if (scale > 0.0) {
        return clamp(round_away((v - minimum) / scale), 0.0, top);
    }
    return 0.0;
}

fn group_error(start: u32, len: u32, scale: f32, minimum: f32, top: f32) -> f32 {
    var e = 0.0;
    for (var i = 0u; i < len; i++) {
        let v = values[start + i];
        let r = quantize(v, scale, minimum, top) * scale + minimum - v;
        e = e + r * r;
    }
    return e;
}

// Least-squares (scale, offset) for the codes that (scale, minimum) gives, f16-rounded.
fn refit(start: u32, len: u32, scale: f32, minimum: f32, top: f32) -> vec2<f32> {
    let n = f32(len);
    var mq = 0.0;
    var mx = 0.0;
    for (var i = 0u; i < len; i++) {
        let v = values[start + i];
        mq = mq + quantize(v, scale, minimum, top);
        mx = mx + v;
    }
    mq = mq / n;
    mx = mx / n;
    var sqq = 0.0;
    var sqx = 0.0;
    for (var i = 0u; i < len; i++) {
        let v = values[start + i];
        let q = quantize(v, scale, minimum, top) - mq;
        sqq = sqq + q * q;
        sqx = sqx + q * (v - mx);
    }
    var s = scale;
    var m = minimum;
    if (sqq > 1e-12) {
        s = sqx / sqq;
        m = mx - s * mq;
    }
    return vec2<f32>(f16_round(max(s, 0.0)), f16_round(m));
}

fn stored(scale: f32, minimum: f32) -> vec2<f32> {
    return vec2<f32>(f16_round(max(scale, 0.0)), f16_round(minimum));
}

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let g = (wg.y * dims.groups_x + wg.x) * 256u + lid;
    let per_row = (dims.cols + dims.group - 1u) / dims.group;
    if (g >= dims.rows * per_row) {
        return;
    }
    let row = g / per_row;
    let col = (g % per_row) * dims.group;
    let start = row * dims.cols + col;
    let len = min(dims.group, dims.cols - col);
    let top = f32((1u << dims.bits) - 1u);

    var lo = 3.4e38;
    var hi = -3.4e38;
    for (var i = 0u; i < len; i++) {
        let v = values[start + i];
        lo = min(lo, v);
        hi = max(hi, v);
    }
    var best = stored((hi - lo) / top, lo);
    if (dims.search == 1u && hi > lo) {
        var best_error = group_error(start, len, best.x, best.y, top);
        for (var i = 0u; i < 12u; i++) {
            let shrink = 1.0 - 0.04 * f32(i);
            let half_range = 0.5 * (hi - lo) * shrink;
            let mid = 0.5 * (hi + lo);
            let scale = 2.0 * half_range / top;
            let minimum = mid - half_range;
            let a = stored(scale, minimum);
            let ea = group_error(start, len, a.x, a.y, top);
            if (ea < best_error) {
                best_error = ea;
                best = a;
            }
            let b = refit(start, len, scale, minimum, top);
            let eb = group_error(start, len, b.x, b.y, top);
            if (eb < best_error) {
                best_error = eb;
                best = b;
            }
        }
    }
    fits[g] = best;
    for (var i = 0u; i < len; i++) {
        codes[start + i] = u32(quantize(values[start + i], best.x, best.y, top));
    }
}
