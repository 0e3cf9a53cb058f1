//! Exact coding of a tensor's raw bytes, any dtype (norms, biases, integer tensors,
//! `--method lossless`), in the manner of ZipNN: the words are split into byte planes so that
//! the predictable part of a float (its exponent) is coded apart from the near-random part (the
//! low mantissa bits).
//!
//! Planes, by dtype (bits of the little-endian word):
//! - F32: exponent (bits 23-30); sign + top 7 mantissa bits (31, 16-22); mantissa bits 8-15;
//!   mantissa bits 0-7.
//! - BF16: exponent (7-14); sign + 7 mantissa bits (15, 0-6).
//! - F16: exponent (10-14); sign + top 2 mantissa bits (15, 8-9); mantissa bits 0-7.
//! - anything else: byte plane `j` = byte `j` of each element.
//!
//! Each plane is stored in one of three modes (one byte): 0 raw, 1 entropy-coded, 2 entropy-coded
//! with the element's first plane (the exponent, for floats) as context. The encoder estimates
//! each mode's size from histograms (empirical entropy plus a table allowance) and codes only the
//! plane's best mode, so near-random planes cost one histogram pass and a copy.
//!
//! Section layout: for each plane, `u8 mode`, then for modes 1-2 `varint length` and the coded
//! block; for mode 0 the `numel` raw bytes. No header: dtype and element count come from the
//! container.
//!
//! What it does not do: delta or cross-tensor prediction, multi-threading.

use super::Encoded;
use crate::dtype::DType;
use crate::entropy;
use crate::error::{Error, Result};

const MODE_RAW: u8 = 0;
const MODE_CODED: u8 = 1;
const MODE_CONTEXT: u8 = 2;

/// How a dtype's words split into planes: each plane's symbols (one per element) from the word.
#[derive(Clone, Copy)]
enum Layout {
    F32,
    BF16,
    F16,
    Bytes(usize),
}

impl Layout {
    fn of(dtype: DType) -> Layout {
        match dtype {
            DType::F32 => Layout::F32,
            DType::BF16 => Layout::BF16,
            DType::F16 => Layout::F16,
            other => Layout::Bytes(other.size()),
        }
    }

    /// Number of planes and each plane's alphabet.
    fn alphabets(self) -> Vec<u32> {
        match self {
            Layout::F32 => vec![256; 4],
            Layout::BF16 => vec![256, 256],
            Layout::F16 => vec![32, 8, 256],
            Layout::Bytes(n) => vec![256; n],
        }
    }

    fn split(self, raw: &[u8]) -> Vec<Vec<u8>> {
        match self {
            Layout::F32 => {
                let n = raw.len() / 4;
                let mut planes = (0..4)
                    .map(|_| Vec::with_capacity(n))
                    .collect::<Vec<Vec<u8>>>();
                for w in raw.chunks_exact(4) {
                    let (b0, b1, b2, b3) = (w[0], w[1], w[2], w[3]);
                    planes[0].push((b3 << 1) | (b2 >> 7));
                    planes[1].push((b3 & 0x80) | (b2 & 0x7f));
                    planes[2].push(b1);
                    planes[3].push(b0);
                }
                planes
            }
            Layout::BF16 => {
                let n = raw.len() / 2;
                let mut planes = (0..2)
                    .map(|_| Vec::with_capacity(n))
                    .collect::<Vec<Vec<u8>>>();
                for w in raw.chunks_exact(2) {
                    let (b0, b1) = (w[0], w[1]);
                    planes[0].push((b1 << 1) | (b0 >> 7));
                    planes[1].push((b1 & 0x80) | (b0 & 0x7f));
                }
                planes
            }
            Layout::F16 => {
                let n = raw.len() / 2;
                let mut planes = (0..3)
                    .map(|_| Vec::with_capacity(n))
                    .collect::<Vec<Vec<u8>>>();
                for w in raw.chunks_exact(2) {
                    let (b0, b1) = (w[0], w[1]);
                    planes[0].push((b1 >> 2) & 0x1f);
                    planes[1].push(((b1 >> 5) & 0x4) | (b1 & 0x3));
                    planes[2].push(b0);
                }
                planes
            }
            Layout::Bytes(size) => {
                let n = raw.len() / size;
                let mut planes = (0..size)
                    .map(|_| Vec::with_capacity(n))
                    .collect::<Vec<Vec<u8>>>();
                for w in raw.chunks_exact(size) {
                    for (p, &b) in planes.iter_mut().zip(w) {
                        p.push(b);
                    }
                }
                planes
            }
        }
    }

    // Several planes are read in lockstep at the same index: an index loop says that plainest.
    #[allow(clippy::needless_range_loop)]
    fn join(self, planes: &[Vec<u8>], numel: usize) -> Vec<u8> {
        match self {
            Layout::F32 => {
                let mut out = Vec::with_capacity(numel * 4);
                for i in 0..numel {
                    let (e, t) = (planes[0][i], planes[1][i]);
                    out.extend_from_slice(&[
                        planes[3][i],
                        planes[2][i],
                        ((e & 1) << 7) | (t & 0x7f),
                        (t & 0x80) | (e >> 1),
                    ]);
                }
                out
            }
            Layout::BF16 => {
                let mut out = Vec::with_capacity(numel * 2);
                for i in 0..numel {
                    let (e, t) = (planes[0][i], planes[1][i]);
                    out.extend_from_slice(&[((e & 1) << 7) | (t & 0x7f), (t & 0x80) | (e >> 1)]);
                }
                out
            }
            Layout::F16 => {
                let mut out = Vec::with_capacity(numel * 2);
                for i in 0..numel {
                    let (e, t) = (planes[0][i], planes[1][i]);
                    out.extend_from_slice(&[planes[2][i], ((t & 0x4) << 5) | (e << 2) | (t & 0x3)]);
                }
                out
            }
            Layout::Bytes(size) => {
                let mut out = Vec::with_capacity(numel * size);
                for i in 0..numel {
                    out.extend(planes.iter().map(|p| p[i]));
                }
                out
            }
        }
    }
}

/// Estimated coded bits of symbols with these histograms (one per context): empirical entropy
/// plus ~12 bits of table per used symbol. Only used to choose a mode; the stored size is the
/// coded size.
fn estimate_bits(hists: &[[u64; 256]]) -> f64 {
    let mut bits = 0.0;
    for h in hists {
        let n: u64 = h.iter().sum();
        if n == 0 {
            continue;
        }
        let nf = n as f64;
        for &c in h.iter().filter(|&&c| c > 0) {
            bits += c as f64 * (nf / c as f64).log2() + 12.0;
        }
    }
    bits
}

pub fn encode(raw: &[u8], dtype: DType) -> Result<Encoded> {
    if !raw.len().is_multiple_of(dtype.size()) {
        return Err(Error::invalid(format!(
            "{} bytes is not a whole number of {dtype} elements",
            raw.len()
        )));
    }
    let layout = Layout::of(dtype);
    let alphabets = layout.alphabets();
    let planes = layout.split(raw);
    let n = raw.len() / dtype.size();
    let mut bytes = Vec::with_capacity(raw.len() / 2 + 16);
    let mut side_bytes = 0;
    for (j, plane) in planes.iter().enumerate() {
        let mut plain = [0u64; 256];
        plane.iter().for_each(|&s| plain[s as usize] += 1);
        let raw_bits = 8.0 * n as f64;
        let mut best = (MODE_RAW, raw_bits);
        let coded_bits = estimate_bits(&[plain]);
        if coded_bits < best.1 {
            best = (MODE_CODED, coded_bits);
        }
        if j > 0 {
            let mut hists = vec![[0u64; 256]; 256];
            for (&c, &s) in planes[0].iter().zip(plane) {
                hists[c as usize][s as usize] += 1;
            }
            let ctx_bits = estimate_bits(&hists);
            if ctx_bits < best.1 {
                best = (MODE_CONTEXT, ctx_bits);
            }
        }
        let symbols: Vec<u32> = plane.iter().map(|&s| s as u32).collect();
        let coded = match best.0 {
            MODE_CODED => Some(entropy::encode(&symbols, alphabets[j])),
            MODE_CONTEXT => {
                let contexts: Vec<u32> = planes[0].iter().map(|&c| c as u32).collect();
                Some(entropy::encode_with_contexts(
                    &symbols,
                    &contexts,
                    alphabets[j],
                    alphabets[0],
                ))
            }
            _ => None,
        };
        match coded {
            // The estimate can be off for tiny planes: never store more than raw.
            Some(c) if c.bytes.len() + 10 < n => {
                bytes.push(best.0);
                let before = bytes.len();
                put_varint(&mut bytes, c.bytes.len() as u64);
                side_bytes += 1 + (bytes.len() - before) + c.table_bytes;
                bytes.extend_from_slice(&c.bytes);
            }
            _ => {
                bytes.push(MODE_RAW);
                side_bytes += 1;
                bytes.extend_from_slice(plane);
            }
        }
    }
    Ok(Encoded {
        bytes,
        side_bytes,
        reconstruction: Vec::new(),
    })
}

pub fn decode(bytes: &[u8], dtype: DType, numel: usize) -> Result<Vec<u8>> {
    let layout = Layout::of(dtype);
    let alphabets = layout.alphabets();
    let mut planes: Vec<Vec<u8>> = Vec::with_capacity(alphabets.len());
    let mut pos = 0usize;
    for (j, &alphabet) in alphabets.iter().enumerate() {
        let mode = *bytes
            .get(pos)
            .ok_or_else(|| Error::corrupt("lossless section ends early"))?;
        pos += 1;
        let plane: Vec<u8> = match mode {
            MODE_RAW => {
                let end = pos
                    .checked_add(numel)
                    .filter(|&e| e <= bytes.len())
                    .ok_or_else(|| Error::corrupt("lossless raw plane ends early"))?;
                let p = bytes[pos..end].to_vec();
                pos = end;
                if p.iter().any(|&s| s as u32 >= alphabet) {
                    return Err(Error::corrupt("lossless plane value out of range"));
                }
                p
            }
            MODE_CODED | MODE_CONTEXT => {
                let (len, used) = get_varint(&bytes[pos..])?;
                pos += used;
                let end = usize::try_from(len)
                    .ok()
                    .and_then(|l| pos.checked_add(l))
                    .filter(|&e| e <= bytes.len())
                    .ok_or_else(|| Error::corrupt("lossless coded plane ends early"))?;
                let block = &bytes[pos..end];
                pos = end;
                let symbols = if mode == MODE_CODED {
                    entropy::decode(block, numel, alphabet)?
                } else {
                    if j == 0 {
                        return Err(Error::corrupt("the first plane cannot have a context"));
                    }
                    let contexts: Vec<u32> = planes[0].iter().map(|&c| c as u32).collect();
                    entropy::decode_with_contexts(block, &contexts, alphabet, alphabets[0])?
                };
                // Alphabets are at most 256, so every decoded symbol fits a byte.
                symbols.into_iter().map(|s| s as u8).collect()
            }
            _ => return Err(Error::corrupt("unknown lossless plane mode")),
        };
        planes.push(plane);
    }
    if pos != bytes.len() {
        return Err(Error::corrupt("bytes left over in a lossless section"));
    }
    Ok(layout.join(&planes, numel))
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

/// A LEB128 varint and the number of bytes it took.
fn get_varint(bytes: &[u8]) -> Result<(u64, usize)> {
    let mut v = 0u64;
    for (i, &b) in bytes.iter().take(10).enumerate() {
        v |= ((b & 0x7f) as u64) << (7 * i);
        if b & 0x80 == 0 {
            return Ok((v, i + 1));
        }
    }
    Err(Error::corrupt("bad varint in lossless section"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtype::from_f32;
    use crate::rng::Rng;

    fn weights(n: usize, seed: u64) -> Vec<f32> {
        let mut r = Rng::new(seed);
        (0..n).map(|_| (0.05 * r.normal()) as f32).collect()
    }

    #[test]
    fn round_trips_every_dtype() {
        let mut r = Rng::new(1);
        for dtype in DType::ALL {
            for n in [0usize, 1, 3, 1000] {
                let raw: Vec<u8> = if dtype.is_lossy_compressible() {
                    from_f32(dtype, &weights(n, 2))
                } else {
                    (0..n * dtype.size()).map(|_| (r.below(7)) as u8).collect()
                };
                let e = encode(&raw, dtype).unwrap();
                assert!(e.side_bytes <= e.bytes.len());
                assert_eq!(decode(&e.bytes, dtype, n).unwrap(), raw, "{dtype} n={n}");
            }
        }
        // Special values survive bit for bit.
        let special = [
            f32::NAN,
            -0.0,
            f32::INFINITY,
            f32::MIN_POSITIVE / 4.0,
            -1e30,
        ];
        for dtype in [DType::F32, DType::F16, DType::BF16] {
            let raw = from_f32(dtype, &special);
            let e = encode(&raw, dtype).unwrap();
            assert_eq!(decode(&e.bytes, dtype, special.len()).unwrap(), raw);
        }
    }

    #[test]
    fn compresses_weights_like_float_structure_predicts() {
        // Gaussian weights: the exponent plane carries ~3 bits of 8; mantissa bits are random.
        let n = 100_000;
        let w = weights(n, 3);
        let f32_raw = from_f32(DType::F32, &w);
        let r32 = f32_raw.len() as f64 / encode(&f32_raw, DType::F32).unwrap().bytes.len() as f64;
        let bf_raw = from_f32(DType::BF16, &w);
        let rbf = bf_raw.len() as f64 / encode(&bf_raw, DType::BF16).unwrap().bytes.len() as f64;
        assert!(r32 > 1.15 && r32 < 1.35, "f32 ratio {r32}");
        assert!(rbf > 1.4 && rbf < 1.8, "bf16 ratio {rbf}");
    }

    #[test]
    fn corrupt_sections_are_rejected_without_panic() {
        let raw = from_f32(DType::BF16, &weights(5000, 4));
        let e = encode(&raw, DType::BF16).unwrap();
        let mut r = Rng::new(5);
        let mut rejected = 0;
        for trial in 0..200 {
            let mut b = e.bytes.clone();
            if trial % 2 == 0 {
                b.truncate(r.below(b.len() as u64) as usize);
            } else {
                let i = r.below(b.len() as u64) as usize;
                b[i] ^= 1 << r.below(8);
            }
            match decode(&b, DType::BF16, 5000) {
                Err(_) => rejected += 1,
                Ok(d) => assert_eq!(d.len(), raw.len()),
            }
        }
        assert!(rejected >= 100, "{rejected} rejected");
        assert!(encode(&[1, 2, 3], DType::F32).is_err());
    }
}
