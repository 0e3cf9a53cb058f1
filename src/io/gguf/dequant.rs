//! ggml's block types to f32, transcribed from the numpy dequantizers of the PyPI `gguf` package
//! (`gguf/quants.py`, llama.cpp's own port of `ggml-quants.c`). Every product and sum is done in
//! f32 in the same order as there (`d * sc` first, then `* q`, then `- m`; Rust never fuses a
//! multiply-add on its own), so the values are bit for bit those of `gguf.quants.dequantize`:
//! tests/fixtures/gguf/vectors.gguf holds blocks of every type with the values gguf made of them
//! (benches/make_gguf_vectors.py).

use super::GgmlType;

/// Elements of a K-quant super-block (and of an IQ4_XS block).
const QK_K: usize = 256;

/// IQ4_NL's and IQ4_XS's 16 levels.
const IQ4_VALUES: [i8; 16] = [
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
];

fn f16_at(b: &[u8], i: usize) -> f32 {
    half::f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// Whether [`dequantize`] converts `t`.
pub fn supported(t: GgmlType) -> bool {
    use GgmlType::*;
    matches!(
        t,
        Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0 | Q2K | Q3K | Q4K | Q5K | Q6K | Q8K | Iq4Nl | Iq4Xs
    )
}

/// The values of whole blocks of `t`: `None` when `t` is not a type [`supported`] names, or
/// when `bytes` is not a whole number of blocks (the reader has checked both).
pub fn dequantize(t: GgmlType, bytes: &[u8]) -> Option<Vec<f32>> {
    use GgmlType::*;
    let block: fn(&[u8], &mut [f32]) = match t {
        Q4_0 => q4_0,
        Q4_1 => q4_1,
        Q5_0 => q5_0,
        Q5_1 => q5_1,
        Q8_0 => q8_0,
        Q2K => q2_k,
        Q3K => q3_k,
        Q4K => q4_k,
        Q5K => q5_k,
        Q6K => q6_k,
        Q8K => q8_k,
        Iq4Nl => iq4_nl,
        Iq4Xs => iq4_xs,
        _ => return None,
    };
    let (n, size) = (t.block_len(), t.block_bytes());
    if !bytes.len().is_multiple_of(size) {
        return None;
    }
    let mut out = vec![0f32; bytes.len() / size * n];
    for (b, o) in bytes.chunks_exact(size).zip(out.chunks_exact_mut(n)) {
        block(b, o);
    }
    Some(out)
}

/// The 4-bit codes of 32 elements in 16 bytes: element j in the low nibble of byte j, element
/// j + 16 in the high nibble.
fn nibble(qs: &[u8], j: usize) -> u8 {
    (qs[j % 16] >> (4 * (j / 16))) & 0x0F
}

fn q4_0(b: &[u8], out: &mut [f32]) {
    let d = f16_at(b, 0);
    for (j, o) in out.iter_mut().enumerate() {
        *o = d * (nibble(&b[2..18], j) as i8 - 8) as f32;
    }
}

fn q4_1(b: &[u8], out: &mut [f32]) {
    let (d, m) = (f16_at(b, 0), f16_at(b, 2));
    for (j, o) in out.iter_mut().enumerate() {
        *o = d * nibble(&b[4..20], j) as f32 + m;
    }
}

/// The 5-bit code of element j: a nibble from `qs`, bit j of the little-endian `qh` on top.
fn five_bits(qh: &[u8], qs: &[u8], j: usize) -> u8 {
    let high = u32::from_le_bytes([qh[0], qh[1], qh[2], qh[3]]) >> j & 1;
    nibble(qs, j) | (high as u8) << 4
}

fn q5_0(b: &[u8], out: &mut [f32]) {
    let d = f16_at(b, 0);
    for (j, o) in out.iter_mut().enumerate() {
        *o = d * (five_bits(&b[2..6], &b[6..22], j) as i8 - 16) as f32;
    }
}

fn q5_1(b: &[u8], out: &mut [f32]) {
    let (d, m) = (f16_at(b, 0), f16_at(b, 2));
    for (j, o) in out.iter_mut().enumerate() {
        *o = d * five_bits(&b[4..8], &b[8..24], j) as f32 + m;
    }
}

fn q8_0(b: &[u8], out: &mut [f32]) {
    let d = f16_at(b, 0);
    for (o, &q) in out.iter_mut().zip(&b[2..34]) {
        *o = q as i8 as f32 * d;
    }
}

/// Q2_K: 16 scale bytes (low nibble: scale, high: min of 16 elements), 64 bytes of 2-bit codes
/// (element e: byte (e / 128) * 32 + e % 32, bits 2 * ((e / 32) % 4)), f16 d, f16 dmin.
fn q2_k(b: &[u8], out: &mut [f32]) {
    let (scales, qs) = (&b[0..16], &b[16..80]);
    let (d, dmin) = (f16_at(b, 80), f16_at(b, 82));
    for (e, o) in out.iter_mut().enumerate() {
        let sc = scales[e / 16];
        let dl = d * (sc & 0x0F) as f32;
        let ml = dmin * (sc >> 4) as f32;
        let q = (qs[e / 128 * 32 + e % 32] >> (2 * ((e / 32) % 4))) & 3;
        *o = dl * q as f32 - ml;
    }
}

/// Q3_K: 32 bytes of high bits (element e: bit e / 32 of byte e % 32; a set bit means no -4),
/// 64 bytes of 2-bit codes laid out as Q2_K's, 12 bytes of sixteen 6-bit scales, f16 d.
fn q3_k(b: &[u8], out: &mut [f32]) {
    let (hmask, qs, s) = (&b[0..32], &b[32..96], &b[96..108]);
    let d = f16_at(b, 108);
    let mut dl = [0f32; 16];
    for (i, dl) in dl.iter_mut().enumerate() {
        let low = (s[i % 8] >> (4 * (i / 8))) & 0x0F;
        let high = (s[8 + i % 4] >> (2 * (i / 4))) & 0x03;
        *dl = d * ((low | high << 4) as i8 - 32) as f32;
    }
    for (e, o) in out.iter_mut().enumerate() {
        let low = ((qs[e / 128 * 32 + e % 32] >> (2 * ((e / 32) % 4))) & 3) as i8;
        let high = ((hmask[e % 32] >> (e / 32)) & 1) ^ 1;
        *o = dl[e / 16] * (low - (high << 2) as i8) as f32;
    }
}

/// The eight 6-bit (scale, min) pairs of Q4_K and Q5_K, packed in 12 bytes.
fn scale_min_k4(s: &[u8], i: usize) -> (u8, u8) {
    if i < 4 {
        (s[i] & 0x3F, s[i + 4] & 0x3F)
    } else {
        let j = i - 4;
        (
            (s[8 + j] & 0x0F) | ((s[j] >> 2) & 0x30),
            (s[8 + j] >> 4) | ((s[4 + j] >> 2) & 0x30),
        )
    }
}

/// Q4_K: f16 d, f16 dmin, 12 scale bytes, 128 bytes of nibbles (sub-block i of 32: byte
/// (i / 2) * 32 + e % 32, the low nibble for even i).
fn q4_k(b: &[u8], out: &mut [f32]) {
    let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
    let (scales, qs) = (&b[4..16], &b[16..144]);
    for (i, sub) in out.chunks_exact_mut(32).enumerate() {
        let (sc, m) = scale_min_k4(scales, i);
        let (dl, ml) = (d * sc as f32, dmin * m as f32);
        for (l, o) in sub.iter_mut().enumerate() {
            let q = (qs[i / 2 * 32 + l] >> (4 * (i % 2))) & 0x0F;
            *o = dl * q as f32 - ml;
        }
    }
}

/// Q5_K: Q4_K's layout with 32 bytes of fifth bits (sub-block i: bit i of byte e % 32) before
/// the nibbles.
fn q5_k(b: &[u8], out: &mut [f32]) {
    let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
    let (scales, qh, qs) = (&b[4..16], &b[16..48], &b[48..176]);
    for (i, sub) in out.chunks_exact_mut(32).enumerate() {
        let (sc, m) = scale_min_k4(scales, i);
        let (dl, ml) = (d * sc as f32, dmin * m as f32);
        for (l, o) in sub.iter_mut().enumerate() {
            let low = (qs[i / 2 * 32 + l] >> (4 * (i % 2))) & 0x0F;
            let q = low | ((qh[l] >> i) & 1) << 4;
            *o = dl * q as f32 - ml;
        }
    }
}

/// Q6_K: 128 bytes of low nibbles, 64 bytes of high 2-bit pairs, 16 signed scales, f16 d.
fn q6_k(b: &[u8], out: &mut [f32]) {
    let (ql, qh, scales) = (&b[0..128], &b[128..192], &b[192..208]);
    let d = f16_at(b, 208);
    for (e, o) in out.iter_mut().enumerate() {
        let (half, r) = (e / 128, e % 128);
        let low = (ql[half * 64 + r % 64] >> (4 * (r / 64))) & 0x0F;
        let high = (qh[half * 32 + r % 32] >> (2 * (r / 32))) & 0x03;
        let q = (low | high << 4) as i8 - 32;
        *o = d * scales[e / 16] as i8 as f32 * q as f32;
    }
}

/// Q8_K (ggml's intermediate type for dot products; rare in files): f32 d, 256 signed bytes,
/// 16 i16 block sums (not needed to dequantize). `dequantize_row_q8_K`: `d * q`.
fn q8_k(b: &[u8], out: &mut [f32]) {
    let d = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    for (o, &q) in out.iter_mut().zip(&b[4..4 + QK_K]) {
        *o = d * q as i8 as f32;
    }
}

fn iq4_nl(b: &[u8], out: &mut [f32]) {
    let d = f16_at(b, 0);
    for (j, o) in out.iter_mut().enumerate() {
        *o = d * IQ4_VALUES[nibble(&b[2..18], j) as usize] as f32;
    }
}

/// IQ4_XS: f16 d, a u16 of the eight scales' high bit pairs, 4 bytes of their low nibbles, then
/// eight IQ4_NL-style 16-byte groups of nibbles.
fn iq4_xs(b: &[u8], out: &mut [f32]) {
    let d = f16_at(b, 0);
    let scales_h = u16::from_le_bytes([b[2], b[3]]);
    let (scales_l, qs) = (&b[4..8], &b[8..136]);
    for (i, sub) in out.chunks_exact_mut(32).enumerate() {
        let low = (scales_l[i / 2] >> (4 * (i % 2))) & 0x0F;
        let high = ((scales_h >> (2 * i)) & 0x03) as u8;
        let dl = d * ((low | high << 4) as i8 - 32) as f32;
        for (j, o) in sub.iter_mut().enumerate() {
            *o = dl * IQ4_VALUES[nibble(&qs[i * 16..i * 16 + 16], j) as usize] as f32;
        }
    }
}
