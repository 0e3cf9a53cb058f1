// Hyper-Compression's per-pair nearest-codeword search, `nearest_code` of its CPU twin: the pair's
// ring (the concentric-ring scaling adjustment for pairs outside the square), the pair shrunk into
// the disk, then the closed-form decoding of the sheared lattice (rows outwards from the point's
// own row, the nearest column and its two neighbours in each, the centre as codeword 0, ties to the
// smallest index). Host code, CPU twin and the uniform's Rust mirror `HyperDims` (the
// `Geometry` as sent): src/backend/kernels/hyper.rs; checked against `nearest_codes` in
// tests/backend.rs.
//
// Same codes as the CPU, by construction: WGSL lets a driver fuse a*b+c into one rounding and does
// not round division or sqrt correctly, so this search may see distances a few ulps away from the
// CPU's. Where that could change the answer it does not guess: it sets bit 31 (AMBIGUOUS) and the
// host decides that pair with the CPU function. A pair is ambiguous when
// - it lies within the tolerance of the square's edge or of a ring boundary (the ring could differ);
// - the best and second-best distances found are within `tol(d2) = K (M sqrt(d2) + d2)` of each
//   other, `K = dims.tolerance`, `M` a bound on the coordinates' magnitude (ties land here);
// - `tol` is not small against the lattice pitch (then the unvisited columns are not provably
//   farther: tiny or far-off-centre squares).
// With each distance within ~34 eps M sqrt(d) + 3 eps d of the exact value on either side
// (eps = 2^-24; the bound is worked out in docs/BACKENDS.md), K = 2^-16 leaves a factor of
// 3.7. Rows are visited while their dy^2 is within 2 tol of the best, so a row that is skipped
// cannot hold a near-tie either.

struct HyperDims {
    pairs: u32,  // pairs in this tile
    t: u32,      // T: columns and rows of the grid
    rings: u32,  // C (0: every pair is searched as it is)
    groups_x: u32,
    centre: vec2<f32>,
    corner: vec2<f32>,  // centre - L/2, as `Geometry::corner` computes it
    half_side: f32,     // L/2
    h: f32,             // pitch L/T (`Geometry::pitch`)
    shear: f32,         // h/T (`Geometry::shear`)
    tolerance: f32,     // K
    radii: array<vec4<f32>, 3>,    // r_0 ..= r_8 (`Geometry::radii`)
    factors: array<vec4<f32>, 3>,  // (L/2)/r_j (`Geometry::shrink_factor`)
}

@group(0) @binding(0) var<uniform> dims: HyperDims;
@group(0) @binding(1) var<storage, read> pairs: array<vec2<f32>>;
@group(0) @binding(2) var<storage, read_write> codes: array<u32>;

const AMBIGUOUS: u32 = 0x80000000u;
// f32::MAX written exactly in hex: Tint (Chrome's WGSL compiler) rejects a decimal literal such as
// 3.4028235e38, which rounds to f32::MAX but lies above it.
const F32_MAX: f32 = 0x1.fffffep+127f;

// The search state of this invocation's pair.
var<private> q: vec2<f32>;
var<private> best: f32;
var<private> best_i: u32;
var<private> second: f32;

fn radius(j: u32) -> f32 {
    return dims.radii[j / 4u][j % 4u];
}

fn factor(j: u32) -> f32 {
    return dims.factors[j / 4u][j % 4u];
}

fn row_y(b: u32) -> f32 {
    return dims.corner.y + f32(b) * dims.h;
}

// `Geometry::codeword(a * T + b + 1)`, the same expression.
fn codeword(a: u32, b: u32) -> vec2<f32> {
    return vec2<f32>(dims.corner.x + (f32(a) * dims.h + f32(b) * dims.shear), row_y(b));
}

fn dist2(w: vec2<f32>) -> f32 {
    let d = q - w;
    return d.x * d.x + d.y * d.y;
}

// Ties to the smallest index, as the CPU; `second` is the smallest distance of any other
// candidate seen (a tie makes it equal to `best`).
fn consider(i: u32, d: f32) {
    if (d < best || (d == best && i < best_i)) {
        second = min(second, best);
        best = d;
        best_i = i;
    } else {
        second = min(second, d);
    }
}

// Row `b`: the nearest column and its two neighbours. False once the row's dy^2 alone is more
// than twice the tolerance beyond the best distance (no near-tie can be in it).
fn visit(b: u32, m: f32) -> bool {
    let dy = q.y - row_y(b);
    let dy2 = dy * dy;
    if (dy2 - best > 2.0 * dims.tolerance * (m * abs(dy) + dy2)) {
        return false;
    }
    let t = dims.t;
    let estimate = (q.x - dims.corner.x - f32(b) * dims.shear) / dims.h;
    let col = u32(clamp(round(estimate), 0.0, f32(t - 1u)));
    let lo = select(col - 1u, 0u, col == 0u);
    let hi = min(col + 1u, t - 1u);
    for (var a = lo; a <= hi; a++) {
        consider(a * t + b + 1u, dist2(codeword(a, b)));
    }
    return true;
}

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = (wg.y * dims.groups_x + wg.x) * 256u + lid;
    if (i >= dims.pairs) {
        return;
    }
    let p = pairs[i];
    let c = dims.centre;
    let half = dims.half_side;
    let k = dims.tolerance;
    var ambiguous = false;
    var ring = 0u;
    q = p;
    let dx = p.x - c.x;
    let dy = p.y - c.y;
    let m = abs(p.x) + abs(p.y) + abs(c.x) + abs(c.y) + 2.0 * half;
    if (dims.rings > 0u) {
        if (abs(abs(dx) - half) <= k * m || abs(abs(dy) - half) <= k * m) {
            ambiguous = true;
        }
        if (!(abs(dx) <= half && abs(dy) <= half)) {
            let d = sqrt(dx * dx + dy * dy);
            ring = dims.rings;
            for (var j = 1u; j < dims.rings; j++) {
                if (abs(d - radius(j)) <= k * (d + m)) {
                    ambiguous = true;
                }
                if (d <= radius(j)) {
                    ring = j;
                    break;
                }
            }
            let f = factor(ring);
            q = vec2<f32>(c.x + dx * f, c.y + dy * f);
        }
    }

    best = dist2(c);
    best_i = 0u;
    second = F32_MAX;
    let t = dims.t;
    let mq = abs(q.x) + abs(q.y) + abs(c.x) + abs(c.y) + 2.0 * half;
    let start = u32(clamp(floor((q.y - dims.corner.y) / dims.h), 0.0, f32(t - 1u)));
    // Outwards from the point's own row; a row on the near side of q (possible through rounding)
    // never stops a walk.
    for (var b = start; b < t; b++) {
        if (!visit(b, mq) && row_y(b) > q.y) {
            break;
        }
    }
    for (var b = start; b > 0u; b--) {
        if (!visit(b - 1u, mq) && row_y(b - 1u) < q.y) {
            break;
        }
    }

    let tol = k * (mq * sqrt(second) + second);
    // Unvisited columns are at least ~2 h^2 farther than their row's nearest; require the
    // tolerance at the farthest of them that matters to stay well below that.
    let h2 = dims.h * dims.h;
    let far = second + 8.0 * h2;
    if (second - best <= tol || k * (mq * sqrt(far) + far) >= 0.5 * h2) {
        ambiguous = true;
    }
    var code = best_i + (t * t + 1u) * ring;
    if (ambiguous) {
        code = code | AMBIGUOUS;
    }
    codes[i] = code;
}
