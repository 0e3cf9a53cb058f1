// Scaled dot-product attention of the model runtime, softmax inside: for each query row and head,
// ctx = softmax(q K^T * scale) V over the keys it may see. Decoders: causal, with the keys and
// values of earlier positions in the KV cache (row i of this step is position past + i and sees
// keys 0..=past + i), grouped-query (query head h reads key/value head h / (heads / kv_heads)).
// Encoders: every query sees all `keys` keys (one sentence per call, so no padding mask).
// Host code, CPU twin and the uniform's Rust mirror `AttentionDims`:
// src/backend/kernels/attention.rs (checked against its CPU twin `attention` in
// tests/it/runtime_gpu.rs).
//
// One workgroup of 64 invocations per (row, head). The scores go to a scratch buffer (a long
// context does not fit workgroup memory): each invocation scores every 64th key, the maximum and
// the sum of exponentials are reduced in workgroup memory, then each invocation sums every 64th
// output element over all keys.

struct AttentionDims {
    rows: u32,     // query rows of this step
    heads: u32,
    kv_heads: u32,
    head_dim: u32,
    past: u32,     // positions before the first query row (decoders; 0 for encoders)
    keys: u32,     // key rows held (past + rows for decoders) and the scratch stride
    causal: u32,   // 1: row i sees keys 0..=past + i; 0: all keys
    scale: f32,    // 1 / sqrt(head_dim)
}

@group(0) @binding(0) var<uniform> dims: AttentionDims;
@group(0) @binding(1) var<storage, read> q: array<f32>;        // rows x heads*head_dim
@group(0) @binding(2) var<storage, read> k: array<f32>;        // keys x kv_heads*head_dim
@group(0) @binding(3) var<storage, read> v: array<f32>;        // keys x kv_heads*head_dim
@group(0) @binding(4) var<storage, read_write> scores: array<f32>; // rows*heads x keys
@group(0) @binding(5) var<storage, read_write> ctx: array<f32>; // rows x heads*head_dim

const WG: u32 = 64u;
var<workgroup> partial: array<f32, 64>;

fn reduce_max(x: f32, lid: u32) -> f32 {
    partial[lid] = x;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride = stride / 2u) {
        if (lid < stride) {
            partial[lid] = max(partial[lid], partial[lid + stride]);
        }
        workgroupBarrier();
    }
    let r = partial[0];
    workgroupBarrier();
    return r;
}

fn reduce_sum(x: f32, lid: u32) -> f32 {
    partial[lid] = x;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride = stride / 2u) {
        if (lid < stride) {
            partial[lid] += partial[lid + stride];
        }
        workgroupBarrier();
    }
    let r = partial[0];
    workgroupBarrier();
    return r;
}

@compute @workgroup_size(64, 1, 1)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let g = wg.y * groups.x + wg.x; // row * heads + head
    let live = g < dims.rows * dims.heads;
    let row = g / dims.heads;
    let head = g % dims.heads;
    let d = dims.head_dim;
    let kv_width = dims.kv_heads * d;
    let kv_off = (head / (dims.heads / dims.kv_heads)) * d;
    let q_off = g * d;
    var seen = dims.keys;
    if (dims.causal != 0u) {
        seen = min(dims.past + row + 1u, dims.keys);
    }
    let s_off = g * dims.keys;
    var m = -0x1.fffffep+127f;
    if (live) {
        for (var j = lid.x; j < seen; j += WG) {
            var s = 0.0;
            for (var e = 0u; e < d; e++) {
                s += q[q_off + e] * k[j * kv_width + kv_off + e];
            }
            s = s * dims.scale;
            scores[s_off + j] = s;
            m = max(m, s);
        }
    }
    let top = reduce_max(m, lid.x);
    var total = 0.0;
    if (live) {
        for (var j = lid.x; j < seen; j += WG) {
            let p = exp(scores[s_off + j] - top);
            scores[s_off + j] = p;
            total += p;
        }
    }
    let sum = reduce_sum(total, lid.x);
    storageBarrier();
    if (live) {
        for (var e = lid.x; e < d; e += WG) {
            var acc = 0.0;
            for (var j = 0u; j < seen; j++) {
                acc += scores[s_off + j] * v[j * kv_width + kv_off + e];
            }
            ctx[q_off + e] = acc / sum;
        }
    }
}
