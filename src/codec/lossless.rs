//! Exact coding of a tensor's raw bytes, any dtype (norms, biases, integer tensors,
//! `--method lossless`), in the manner of ZipNN: the words are split into byte planes so that
//! the predictable part of a float (its exponent) is coded apart from the near-random part (the
//! low mantissa bits).
//!
//! Planes, by dtype (bits of the little-endian word):
//! - F32: exponent (bits 23-30); sign + top 7 mantissa bits (31, 16-22); mantissa bits 8-15;
//!   mantissa bits 0-7. Values that came from F16 or BF16 keep their low mantissa bits zero: a
//!   per-block map of those zero bits lets the low bytes be stored shifted or not at all.
//! - BF16: exponent (7-14); sign + 7 mantissa bits (15, 0-6).
//! - F16: exponent (10-14); sign + top 2 mantissa bits (15, 8-9); mantissa bits 0-7.
//! - anything else: byte plane `j` = byte `j` of each element.
//!
//! Each stream is stored raw, coded by `entropy::encode_bytes`, or coded with a context (the
//! exponent for float planes); the encoder estimates each mode's size from histograms and codes
//! only the best, so near-random planes cost one histogram pass and a copy. The byte layout is
//! at [`encode`]; sections of the first layout (constriction coder) still decode.
//!
//! What it does not do: delta or cross-tensor prediction, multi-threading.

use super::{get_varint, put_varint, Encoded};
use crate::dtype::DType;
use crate::entropy;
use crate::error::{Error, Result};

/// Plane modes of layout 1, also stream modes of layout 2 (the `constriction` coder, for small
/// streams).
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

/// First byte of a section in the blocked layout (a layout-1 section starts with a plane mode,
/// 0-2, so the two are told apart by this byte).
const LAYOUT_BLOCKED: u8 = 0x10;
/// Layout 2 for an F32 tensor without short-mantissa blocks: the short map and the (empty)
/// shifted streams are left out.
const LAYOUT_BLOCKED_FULL: u8 = 0x11;
/// Stream modes of the blocked layout: raw bytes, coded by the byte coder, coded by the byte
/// coder with the stream's context (see [`encode`]).
const STREAM_RAW: u8 = 0;
const STREAM_CODED: u8 = 3;
const STREAM_CONTEXT: u8 = 4;
/// Elements per block of the F32 short-mantissa map.
const BLOCK: usize = 64;
/// The short-mantissa map's alphabet: a block's low 16 mantissa bits share 0..=16 trailing zeros.
const SHORT_ALPHABET: u32 = 17;
/// A stream is entropy-coded only if that is estimated to save at least this many bits per
/// symbol over storing it raw: each coded symbol costs a rANS step (~3-5 ns) to decode. On
/// MiniLM (one thread, best of 5) a float's sign+top-mantissa plane saves ~0.08 bit/symbol:
/// at 0.05 it is coded (fp32 1.2257x, decode 0.18 s; bf16 1.5135x, 0.15 s), at 0.1 it is stored
/// raw (fp32 1.2235x, 0.12 s; bf16 1.5067x, 0.10 s), still above zipnn's 1.2204x / 1.5033x.
const STREAM_MIN_GAIN_BITS: f64 = 0.1;
/// Streams of at most this many symbols are also tried with the `constriction` coder (stream
/// modes 1 and 2, as in layout 1), which has less fixed overhead.
const SMALL_STREAM: usize = 1 << 14;
/// Coded-size allowance for the coder's final states, in bits: the byte coder's four states and
/// word counts; for small streams, the `constriction` coder's one state.
const STATE_BITS: f64 = 256.0;
const SMALL_STATE_BITS: f64 = 32.0;

/// Writes one stream (mode byte, then the raw symbols or `varint length` + coded block), in the
/// mode the histograms say is smallest; returns how many of the bytes written are side
/// information. `context`: the stream's context symbols (one per symbol) and their count.
fn put_stream(
    out: &mut Vec<u8>,
    symbols: &[u8],
    alphabet: u32,
    context: Option<(&[u8], u32)>,
) -> usize {
    let n = symbols.len();
    let mut plain = [0u64; 256];
    symbols.iter().for_each(|&s| plain[s as usize] += 1);
    // Coding must save at least `STREAM_MIN_GAIN_BITS` per symbol over raw bytes.
    let mut best = (STREAM_RAW, (8.0 - STREAM_MIN_GAIN_BITS) * n as f64);
    // The byte coder stores a 256-symbol context raw when coding it saves almost nothing, so a
    // context never costs much more than its raw bytes.
    let with_raw_contexts = |hists: &[[u64; 256]]| -> f64 {
        hists
            .iter()
            .map(|h| {
                let coded = estimate_bits(std::slice::from_ref(h));
                let raw = 8.0 * h.iter().sum::<u64>() as f64;
                if alphabet == 256 {
                    coded.min(raw)
                } else {
                    coded
                }
            })
            .sum()
    };
    let state_bits = if n <= SMALL_STREAM {
        SMALL_STATE_BITS
    } else {
        STATE_BITS
    };
    let coded_bits = with_raw_contexts(&[plain]) + state_bits;
    if coded_bits < best.1 {
        best = (STREAM_CODED, coded_bits);
    }
    if let Some((contexts, n_contexts)) = context {
        let mut hists = vec![[0u64; 256]; n_contexts as usize];
        for (&c, &s) in contexts.iter().zip(symbols) {
            hists[c as usize][s as usize] += 1;
        }
        let ctx_bits = with_raw_contexts(&hists) + state_bits;
        if ctx_bits < best.1 {
            best = (STREAM_CONTEXT, ctx_bits);
        }
    }
    let coded = match (best.0, context) {
        (STREAM_CODED, _) => Some(entropy::encode_bytes(symbols, None, alphabet, 1)),
        (STREAM_CONTEXT, Some((contexts, n_contexts))) => Some(entropy::encode_bytes(
            symbols,
            Some(contexts),
            alphabet,
            n_contexts,
        )),
        _ => None,
    };
    // A small stream may be smaller through the `constriction` coder (one state, no word
    // counts: ~28 bytes less), whose speed does not matter at this size: keep the smaller.
    let coded = match coded {
        Some(fast) if n <= SMALL_STREAM => {
            let wide: Vec<u32> = symbols.iter().map(|&s| s as u32).collect();
            let (mode, slow) = match (best.0, context) {
                (STREAM_CONTEXT, Some((contexts, n_contexts))) => {
                    let ctx: Vec<u32> = contexts.iter().map(|&c| c as u32).collect();
                    let slow = entropy::encode_with_contexts(&wide, &ctx, alphabet, n_contexts);
                    (MODE_CONTEXT, slow)
                }
                _ => (MODE_CODED, entropy::encode(&wide, alphabet)),
            };
            if slow.bytes.len() < fast.bytes.len() {
                Some((mode, slow))
            } else {
                Some((best.0, fast))
            }
        }
        Some(fast) => Some((best.0, fast)),
        None => None,
    };
    match coded {
        // The estimate can be off for tiny streams: never store more than raw.
        Some((mode, c)) if c.bytes.len() + 10 < n => {
            out.push(mode);
            let before = out.len();
            put_varint(out, c.bytes.len() as u64);
            let side = 1 + (out.len() - before) + c.table_bytes;
            out.extend_from_slice(&c.bytes);
            side
        }
        _ => {
            out.push(STREAM_RAW);
            out.extend_from_slice(symbols);
            1
        }
    }
}

/// Reads the streams of a blocked-layout section in order.
struct StreamReader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl StreamReader<'_> {
    /// The next stream's `count` symbols (each checked < `alphabet`); `context` gives the
    /// stream's context symbols and their count, built only if the stream uses them.
    fn stream(
        &mut self,
        count: usize,
        alphabet: u32,
        context: impl FnOnce() -> (Vec<u8>, u32),
    ) -> Result<Vec<u8>> {
        let mode = *self
            .bytes
            .get(self.pos)
            .ok_or_else(|| Error::corrupt("lossless section ends early"))?;
        self.pos += 1;
        match mode {
            STREAM_RAW => {
                let end = self
                    .pos
                    .checked_add(count)
                    .filter(|&e| e <= self.bytes.len())
                    .ok_or_else(|| Error::corrupt("lossless raw stream ends early"))?;
                let symbols = self.bytes[self.pos..end].to_vec();
                self.pos = end;
                if alphabet < 256 && symbols.iter().any(|&s| s as u32 >= alphabet) {
                    return Err(Error::corrupt("lossless stream value out of range"));
                }
                Ok(symbols)
            }
            MODE_CODED | MODE_CONTEXT | STREAM_CODED | STREAM_CONTEXT => {
                let (len, used) = get_varint(&self.bytes[self.pos..])?;
                self.pos += used;
                let end = usize::try_from(len)
                    .ok()
                    .and_then(|l| self.pos.checked_add(l))
                    .filter(|&e| e <= self.bytes.len())
                    .ok_or_else(|| Error::corrupt("lossless coded stream ends early"))?;
                let block = &self.bytes[self.pos..end];
                self.pos = end;
                let narrow = |symbols: Vec<u32>| symbols.into_iter().map(|s| s as u8).collect();
                match mode {
                    STREAM_CODED => entropy::decode_bytes(block, None, count, alphabet, 1),
                    STREAM_CONTEXT => {
                        let (contexts, n_contexts) = context();
                        entropy::decode_bytes(block, Some(&contexts), count, alphabet, n_contexts)
                    }
                    // Alphabets are at most 256, so every decoded symbol fits a byte.
                    MODE_CODED => entropy::decode(block, count, alphabet).map(narrow),
                    _ => {
                        let (contexts, n_contexts) = context();
                        let contexts: Vec<u32> = contexts.iter().map(|&c| c as u32).collect();
                        entropy::decode_with_contexts(block, &contexts, alphabet, n_contexts)
                            .map(narrow)
                    }
                }
            }
            _ => Err(Error::corrupt("unknown lossless stream mode")),
        }
    }
}

/// Zero bits at the bottom of the mantissa byte that starts at bit `low_bit` (0 or 8), in a block
/// whose low 16 mantissa bits all have at least `short` trailing zeros.
fn zero_bits(short: u8, low_bit: u32) -> u32 {
    (short as u32).saturating_sub(low_bit).min(8)
}

/// Codes `raw` (whole elements of `dtype`) exactly.
///
/// Section layout: `u8 LAYOUT_BLOCKED` (0x10; 0x11 for an F32 tensor without short blocks,
/// whose short map and shifted streams are then left out), then streams, each `u8 mode` and either `numel`-many raw
/// bytes (mode 0) or `varint length` + a block of `entropy::encode_bytes` (mode 3; mode 4 with the
/// stream's context). Streams, in order:
/// - F32: the short-mantissa map (per block of 64 elements, the trailing zeros shared by the
///   low 16 mantissa bits, 0..=16: values that came from F16, BF16 or a rounding keep zeros
///   there); the exponent plane; the sign + top 7 mantissa bits (context: the exponent); then for
///   the mantissa byte of bits 8-15 and then of bits 0-7: the elements of blocks whose byte has
///   no zero bits (context: the exponent), and the elements of blocks whose byte has `z` in 1..=7
///   zero bits, shifted right by `z` (context: `z`). A byte that is all zeros in a block is not
///   stored.
/// - other dtypes: the planes of [`Layout`], planes after the first with the first as context.
pub fn encode(raw: &[u8], dtype: DType) -> Result<Encoded> {
    if !raw.len().is_multiple_of(dtype.size()) {
        return Err(Error::invalid(format!(
            "{} bytes is not a whole number of {dtype} elements",
            raw.len()
        )));
    }
    let mut bytes = Vec::with_capacity(raw.len() / 2 + 16);
    let mut side_bytes = 1;
    let layout = Layout::of(dtype);
    if let Layout::F32 = layout {
        side_bytes += encode_f32(raw, &mut bytes);
    } else {
        bytes.push(LAYOUT_BLOCKED);
        let alphabets = layout.alphabets();
        let planes = layout.split(raw);
        for (j, plane) in planes.iter().enumerate() {
            let context = (j > 0).then(|| (planes[0].as_slice(), alphabets[0]));
            side_bytes += put_stream(&mut bytes, plane, alphabets[j], context);
        }
    }
    Ok(Encoded {
        bytes,
        side_bytes,
        reconstruction: Vec::new(),
    })
}

fn encode_f32(raw: &[u8], out: &mut Vec<u8>) -> usize {
    let n = raw.len() / 4;
    // Little-endian words: byte 0 = mantissa bits 0-7, byte 1 = bits 8-15.
    let short: Vec<u8> = raw
        .chunks(4 * BLOCK)
        .map(|b| {
            let low = b
                .chunks_exact(4)
                .fold(0u32, |acc, w| acc | u16::from_le_bytes([w[0], w[1]]) as u32);
            if low == 0 {
                16
            } else {
                low.trailing_zeros() as u8
            }
        })
        .collect();
    let exponent: Vec<u8> = raw
        .chunks_exact(4)
        .map(|w| (w[3] << 1) | (w[2] >> 7))
        .collect();
    let top: Vec<u8> = raw
        .chunks_exact(4)
        .map(|w| (w[3] & 0x80) | (w[2] & 0x7f))
        .collect();
    let no_short = short.iter().all(|&m| m == 0);
    let mut side = 0;
    if no_short {
        out.push(LAYOUT_BLOCKED_FULL);
    } else {
        out.push(LAYOUT_BLOCKED);
        side += put_stream(out, &short, SHORT_ALPHABET, None);
    }
    side += put_stream(out, &exponent, 256, None);
    side += put_stream(out, &top, 256, Some((&exponent, 256)));
    for low_bit in [8u32, 0] {
        let byte = (low_bit / 8) as usize;
        if short.iter().all(|&m| zero_bits(m, low_bit) == 0) {
            // The usual case: every element's byte in full, the exponent plane as context.
            let full: Vec<u8> = raw.chunks_exact(4).map(|w| w[byte]).collect();
            side += put_stream(out, &full, 256, Some((&exponent, 256)));
            if !no_short {
                side += put_stream(out, &[], 256, Some((&[], 8)));
            }
            continue;
        }
        let (mut full, mut full_ctx) = (Vec::with_capacity(n), Vec::with_capacity(n));
        let (mut shifted, mut shifted_ctx) = (Vec::new(), Vec::new());
        for ((block, exps), &m) in raw
            .chunks(4 * BLOCK)
            .zip(exponent.chunks(BLOCK))
            .zip(&short)
        {
            match zero_bits(m, low_bit) {
                0 => {
                    full.extend(block.chunks_exact(4).map(|w| w[byte]));
                    full_ctx.extend_from_slice(exps);
                }
                8 => {}
                z => {
                    shifted.extend(block.chunks_exact(4).map(|w| w[byte] >> z));
                    shifted_ctx.extend(std::iter::repeat_n(z as u8, exps.len()));
                }
            }
        }
        side += put_stream(out, &full, 256, Some((&full_ctx, 256)));
        side += put_stream(out, &shifted, 256, Some((&shifted_ctx, 8)));
    }
    side
}

/// Decodes a section to the `numel` elements' original bytes, bit for bit.
pub fn decode(bytes: &[u8], dtype: DType, numel: usize) -> Result<Vec<u8>> {
    let first = bytes.first().copied();
    let full_only = first == Some(LAYOUT_BLOCKED_FULL);
    if first != Some(LAYOUT_BLOCKED) && !(full_only && dtype == DType::F32) {
        return decode_v1(bytes, dtype, numel);
    }
    numel
        .checked_mul(dtype.size())
        .ok_or_else(|| Error::corrupt("lossless element count overflows"))?;
    let mut r = StreamReader { bytes, pos: 1 };
    let layout = Layout::of(dtype);
    let out = if let Layout::F32 = layout {
        decode_f32(&mut r, numel, full_only)?
    } else {
        let alphabets = layout.alphabets();
        let mut planes: Vec<Vec<u8>> = Vec::with_capacity(alphabets.len());
        for &alphabet in &alphabets {
            let plane = match planes.first() {
                None => r.stream(numel, alphabet, || (Vec::new(), 1))?,
                Some(first) => r.stream(numel, alphabet, || (first.clone(), alphabets[0]))?,
            };
            planes.push(plane);
        }
        layout.join(&planes, numel)
    };
    if r.pos != bytes.len() {
        return Err(Error::corrupt("bytes left over in a lossless section"));
    }
    Ok(out)
}

/// `full_only`: the section has no short map (every block is 0) and no shifted streams.
fn decode_f32(r: &mut StreamReader, numel: usize, full_only: bool) -> Result<Vec<u8>> {
    let no_context = || (Vec::new(), 1);
    let short = if full_only {
        vec![0u8; numel.div_ceil(BLOCK)]
    } else {
        r.stream(numel.div_ceil(BLOCK), SHORT_ALPHABET, no_context)?
    };
    let exponent = r.stream(numel, 256, no_context)?;
    let top = r.stream(numel, 256, || (exponent.clone(), 256))?;
    let block_len = |b: usize| BLOCK.min(numel - b * BLOCK);
    // For the byte of bits 8-15 ([0]) and of bits 0-7 ([1]): its full and its shifted stream.
    let mut low: [(Vec<u8>, Vec<u8>); 2] = Default::default();
    for (k, low_bit) in [8u32, 0].into_iter().enumerate() {
        let (mut n_full, mut n_shifted) = (0, 0);
        for (b, &m) in short.iter().enumerate() {
            match zero_bits(m, low_bit) {
                0 => n_full += block_len(b),
                8 => {}
                _ => n_shifted += block_len(b),
            }
        }
        let full = r.stream(n_full, 256, || {
            let ctx = exponent
                .chunks(BLOCK)
                .zip(&short)
                .filter(|&(_, &m)| zero_bits(m, low_bit) == 0)
                .flat_map(|(e, _)| e.iter().copied())
                .collect();
            (ctx, 256)
        })?;
        let shifted = if full_only {
            Vec::new()
        } else {
            r.stream(n_shifted, 256, || {
                let ctx = short
                    .iter()
                    .enumerate()
                    .filter_map(|(b, &m)| {
                        let z = zero_bits(m, low_bit);
                        (z > 0 && z < 8).then(|| std::iter::repeat_n(z as u8, block_len(b)))
                    })
                    .flatten()
                    .collect();
                (ctx, 8)
            })?
        };
        low[k] = (full, shifted);
    }

    let mut out = vec![0u8; numel * 4];
    // Next unread symbol of each low stream: [byte][full, shifted].
    let mut next = [[0usize; 2]; 2];
    for (b, ((words, (exps, tops)), &m)) in out
        .chunks_mut(4 * BLOCK)
        .zip(exponent.chunks(BLOCK).zip(top.chunks(BLOCK)))
        .zip(&short)
        .enumerate()
    {
        let len = block_len(b);
        let mut bytes_of = [[0u8; BLOCK]; 2];
        for (k, low_bit) in [8u32, 0].into_iter().enumerate() {
            let z = zero_bits(m, low_bit);
            let (full, shifted) = &low[k];
            let dst = &mut bytes_of[k][..len];
            match z {
                0 => {
                    let src = full
                        .get(next[k][0]..next[k][0] + len)
                        .ok_or_else(|| Error::corrupt("lossless stream too short"))?;
                    dst.copy_from_slice(src);
                    next[k][0] += len;
                }
                8 => {}
                z => {
                    let src = shifted
                        .get(next[k][1]..next[k][1] + len)
                        .ok_or_else(|| Error::corrupt("lossless stream too short"))?;
                    for (d, &s) in dst.iter_mut().zip(src) {
                        if (s as u32) >> (8 - z) != 0 {
                            return Err(Error::corrupt("lossless shifted value out of range"));
                        }
                        *d = s << z;
                    }
                    next[k][1] += len;
                }
            }
        }
        for ((((w, &e), &t), &b1), &b0) in words
            .chunks_exact_mut(4)
            .zip(exps)
            .zip(tops)
            .zip(&bytes_of[0])
            .zip(&bytes_of[1])
        {
            w.copy_from_slice(&[b0, b1, ((e & 1) << 7) | (t & 0x7f), (t & 0x80) | (e >> 1)]);
        }
    }
    Ok(out)
}

/// Decodes a section written before the blocked layout (plane modes 0-2, `constriction` coder).
fn decode_v1(bytes: &[u8], dtype: DType, numel: usize) -> Result<Vec<u8>> {
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

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::dtype::{from_f32, to_f32};
    use crate::rng::Rng;

    pub(crate) fn weights(n: usize, seed: u64) -> Vec<f32> {
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

    fn from_hex(hex: &str) -> Vec<u8> {
        (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn sections_of_the_first_layout_still_decode() {
        // Written by the layout-1 encoder (commit a75f974) for 40 weights; files made then
        // must keep decoding.
        let f32_raw = from_hex(
            "00000000211e943c1b180a3d6870373dd7f44b3d82de443df922233d05a6d63cc7f1133c866e19bc\
             5a05d9bc01fa23bdcd3f45bd3bd34bbd71d036bd6f0f09bd078391bc05a4b23971b7963c231f0b3d\
             310e383d06144c3dde7a443dff49223d2844d43c45730e3c73e91ebc1062dbbc18cf24bdc19e45bd\
             33af4bbd4f2e36bd250508bd37e68ebcf5a2323afa4e993c7c240c3dcba9383dc7304c3de614443d",
        );
        let f32_v1 = from_hex(
            "01133101039c983d8000001086f75101e64f126b110000140a374b4423561399d9a3c5cbb6899132\
             160b384c4422540e9edba4c5cbb6888e32190c384c4400001e1870f4de22a6f16e05fa3fd3d00f83\
             a4b71f0e147a494473e962cf9eaf2e05e6a24e24a930140000211b68d782f905c7865a01cd3b716f\
             070571233106deff2845731018c1334f2537f5fa7ccbc7e6",
        );
        assert_eq!(decode(&f32_v1, DType::F32, 40).unwrap(), f32_raw);
        let bf16_raw = from_hex(
            "0000943c0a3d373d4c3d453d233dd73c143c19bcd9bc24bd45bd4cbd37bd09bd92bcb339973c0b3d\
             383d4c3d443d223dd43c0e3c1fbcdbbc25bd46bd4cbd36bd08bd8fbc333a993c0c3d393d4c3d443d",
        );
        let bf16_v1 = from_hex(
            "01133101039c983d8000001086f75101e64f126b110000140a374c4523571499d9a4c5ccb7899233\
             170b384c4422540e9fdba5c6ccb6888f33190c394c44",
        );
        assert_eq!(decode(&bf16_v1, DType::BF16, 40).unwrap(), bf16_raw);
    }

    #[test]
    fn f32_values_from_a_shorter_float_store_only_their_bits() {
        // Rows of 96 weights: every third row holds values upcast from F16 (13 low mantissa
        // bits zero), every fifth from BF16 (16 zero); the rest full F32. Blocks of 64 straddle
        // the row borders, and the tail block is partial.
        let (rows, cols) = (300, 96);
        let w = weights(rows * cols + 17, 6);
        let mut upcast_f16 = 0;
        let mut upcast_bf16 = 0;
        let mut raw = Vec::with_capacity(w.len() * 4);
        for (i, &x) in w.iter().enumerate() {
            let row = i / cols;
            let v = if row % 5 == 0 {
                upcast_bf16 += 1;
                to_f32(DType::BF16, &from_f32(DType::BF16, &[x]))[0]
            } else if row % 3 == 0 {
                upcast_f16 += 1;
                to_f32(DType::F16, &from_f32(DType::F16, &[x]))[0]
            } else {
                x
            };
            raw.extend_from_slice(&v.to_le_bytes());
        }
        let e = encode(&raw, DType::F32).unwrap();
        assert_eq!(decode(&e.bytes, DType::F32, w.len()).unwrap(), raw);
        // Against the same weights in full F32: an F16 value saves 13 bits, a BF16 value 16,
        // when its block of 64 holds only such values. Rows of 96 mean about a third of the
        // upcast values could share a block with full ones (and save nothing); 85% measured.
        let plain = encode(&from_f32(DType::F32, &w), DType::F32).unwrap();
        let saved_bits = 8.0 * (plain.bytes.len() as f64 - e.bytes.len() as f64);
        let ideal_bits = 13.0 * upcast_f16 as f64 + 16.0 * upcast_bf16 as f64;
        assert!(
            saved_bits > 0.6 * ideal_bits && saved_bits < 1.05 * ideal_bits,
            "saved {saved_bits} bits of an ideal {ideal_bits}"
        );
    }

    #[test]
    fn raw_bytes_must_be_whole_elements() {
        assert!(encode(&[1, 2, 3], DType::F32).is_err());
    }

    #[test]
    fn random_sections_never_panic() {
        // Random streams behind the layout byte, with modes drawn from the valid ones so that
        // the decoder gets past the first checks.
        let mut r = Rng::new(7);
        for trial in 0..3000 {
            let dtype = DType::ALL[trial % DType::ALL.len()];
            let numel = r.below(300) as usize;
            let mut b = vec![[LAYOUT_BLOCKED, LAYOUT_BLOCKED_FULL][r.below(2) as usize]];
            for _ in 0..r.below(8) {
                b.push([STREAM_RAW, STREAM_CODED, STREAM_CONTEXT][r.below(3) as usize]);
                let len = r.below(400) as usize;
                b.push((len & 0x7f) as u8);
                b.extend((0..len).map(|_| r.below(256) as u8));
            }
            if let Ok(d) = decode(&b, dtype, numel) {
                assert_eq!(d.len(), numel * dtype.size());
            }
        }
    }
}
