//! Entropy coding of integer symbols with static categorical models fitted to the data: the one
//! place that uses `constriction` (range-variant ANS, `DefaultAnsCoder`: 32-bit words, 24-bit
//! coder precision).
//!
//! Layout of a coded block (`Coded::bytes`):
//! 1. the model tables, one per context that has symbols, as one bit stream (MSB first) padded to
//!    a byte: for each such context the number of distinct symbols `k` (Exp-Golomb-0); if `k == 1`
//!    the symbol itself (`ceil(log2 alphabet)` bits) and nothing is coded for that context;
//!    otherwise the table precision `P` (5 bits), the gaps between used symbols (Exp-Golomb with a
//!    stored parameter), and the first `k - 1` fixed-point frequencies minus one (Exp-Golomb with a
//!    stored parameter; the last one is `2^P` minus their sum and must be >= 1);
//! 2. the ANS words, little-endian `u32`s (absent when no context needs coding).
//!
//! The table precision `P` is chosen per context to minimise table + payload bits, so a small
//! input gets a coarse table. Frequencies are scaled from `2^P` to the coder's `2^24` by a shift.
//!
//! What it does not do: adaptive models (the statistics are static per block), or any framing
//! (the caller knows the symbol count, the alphabet and the contexts).
//!
//! Decoding trusts nothing: every count in a table is checked against what the caller says the
//! block holds, and a table or stream that does not add up is `Error::corrupt`.

use std::borrow::Borrow;
use std::num::NonZeroU32;

use constriction::stream::model::{DecoderModel, EncoderModel, EntropyModel};
use constriction::stream::stack::DefaultAnsCoder;
use constriction::stream::{Decode, Encode};

use crate::error::{Error, Result};

/// Coder precision in bits (the most `DefaultAnsCoder` with 32-bit words supports comfortably).
const CODER_PRECISION: usize = 24;
/// Largest alphabet the tables handle (symbols are `u32` but tables assume < 2^16 + 1 entries
/// of probability at 24-bit precision: every used symbol needs at least one unit).
pub const MAX_ALPHABET: u32 = 1 << 16;
/// Finest table precision the encoder chooses when fewer symbols allow (finer tables gain
/// almost nothing, and the decoder's lookup tables, 2^precision entries per context, must stay
/// in cache: at 2^16 entries per context, 256 contexts decoded 3x slower).
const MAX_TABLE_PRECISION: u32 = 14;

/// A static model over the whole alphabet: `cdf[s]..cdf[s + 1]` is symbol `s`'s interval at the
/// table precision (unused symbols have an empty interval and are never coded); `shift` scales it
/// to the coder precision. Decoding finds a symbol through `lut` (one entry per table unit) when
/// the table is small enough to afford it, else by binary search.
struct Model {
    cdf: Vec<u32>,
    shift: u32,
    lut: Option<Vec<u16>>,
}

impl Model {
    /// `freqs[s]` for the whole alphabet, summing to `2^precision`.
    fn new(freqs: impl Iterator<Item = u32>, precision: u32, with_lut: bool) -> Self {
        let mut cdf = vec![0u32];
        let mut acc = 0u32;
        for f in freqs {
            acc += f;
            cdf.push(acc);
        }
        debug_assert_eq!(acc, 1 << precision);
        let lut = with_lut.then(|| {
            let mut lut = Vec::with_capacity(1 << precision);
            for (s, w) in cdf.windows(2).enumerate() {
                lut.extend(std::iter::repeat_n(s as u16, (w[1] - w[0]) as usize));
            }
            lut
        });
        Model {
            cdf,
            shift: CODER_PRECISION as u32 - precision,
            lut,
        }
    }
}

impl EntropyModel<CODER_PRECISION> for Model {
    type Symbol = u32;
    type Probability = u32;
}

impl EncoderModel<CODER_PRECISION> for Model {
    #[inline(always)]
    fn left_cumulative_and_probability(
        &self,
        symbol: impl Borrow<u32>,
    ) -> Option<(u32, NonZeroU32)> {
        let s = *symbol.borrow() as usize;
        let (lo, hi) = (*self.cdf.get(s)?, *self.cdf.get(s + 1)?);
        Some((lo << self.shift, NonZeroU32::new((hi - lo) << self.shift)?))
    }
}

impl DecoderModel<CODER_PRECISION> for Model {
    #[inline(always)]
    fn quantile_function(&self, quantile: u32) -> (u32, u32, NonZeroU32) {
        // quantile < 2^24, so idx < 2^precision = cdf[last]: some symbol with a non-empty
        // interval contains it, whatever the (possibly corrupt) stream says.
        let idx = quantile >> self.shift;
        let s = match &self.lut {
            Some(lut) => lut[idx as usize] as usize,
            None => self.cdf.partition_point(|&c| c <= idx) - 1,
        };
        let (lo, hi) = (self.cdf[s], self.cdf[s + 1]);
        let p =
            NonZeroU32::new((hi - lo) << self.shift).expect("a symbol found holds its quantile");
        (s as u32, lo << self.shift, p)
    }
}

/// Entropy-coded symbols: the bytes to store and how many of them are the model's table
/// (side information).
#[derive(Clone, Debug)]
pub struct Coded {
    pub bytes: Vec<u8>,
    pub table_bytes: usize,
}

/// Codes `symbols` (each < `alphabet`) with a static model fitted to them; the model's table is
/// part of the output. Decoding needs `symbols.len()` and `alphabet` from the caller.
pub fn encode(symbols: &[u32], alphabet: u32) -> Coded {
    let contexts = vec![0u32; symbols.len()];
    encode_with_contexts(symbols, &contexts, alphabet, 1)
}

pub fn decode(bytes: &[u8], count: usize, alphabet: u32) -> Result<Vec<u32>> {
    let contexts = vec![0u32; count];
    decode_with_contexts(bytes, &contexts, alphabet, 1)
}

/// Like [`encode`], with one model per context: symbol `i` is coded with the model of
/// `contexts[i]` (< `n_contexts`). The decoder must know the same contexts beforehand.
///
/// Panics if the caller breaks the contract (`symbols.len() != contexts.len()`, a symbol
/// not below `alphabet`, a context not below `n_contexts`, `alphabet > MAX_ALPHABET`): these are programming
/// errors of the encoder side, never driven by untrusted bytes.
pub fn encode_with_contexts(
    symbols: &[u32],
    contexts: &[u32],
    alphabet: u32,
    n_contexts: u32,
) -> Coded {
    assert_eq!(symbols.len(), contexts.len(), "one context per symbol");
    assert!(
        alphabet <= MAX_ALPHABET,
        "alphabet {alphabet} above {MAX_ALPHABET}"
    );
    if symbols.is_empty() {
        return Coded {
            bytes: Vec::new(),
            table_bytes: 0,
        };
    }
    let a = alphabet as usize;
    // Histograms, one per context (flat: context * alphabet + symbol).
    let mut hist = vec![0u32; a * n_contexts as usize];
    for (&s, &c) in symbols.iter().zip(contexts) {
        assert!(
            s < alphabet && c < n_contexts,
            "symbol or context out of range"
        );
        hist[c as usize * a + s as usize] += 1;
    }

    let mut bits = BitWriter::default();
    // Per context: the model, or None when the context has a single symbol (nothing coded) or
    // no symbols.
    let mut models: Vec<Option<Model>> = Vec::with_capacity(n_contexts as usize);
    for c in 0..n_contexts as usize {
        let h = &hist[c * a..(c + 1) * a];
        let used: Vec<u32> = (0..alphabet).filter(|&s| h[s as usize] > 0).collect();
        if used.is_empty() {
            models.push(None);
            continue;
        }
        bits.exp_golomb(used.len() as u64 - 1, 0);
        if used.len() == 1 {
            bits.put(used[0] as u64, symbol_bits(alphabet));
            models.push(None);
            continue;
        }
        let counts: Vec<u32> = used.iter().map(|&s| h[s as usize]).collect();
        let freqs = write_table(&mut bits, &used, &counts);
        let precision = freqs_precision(&freqs);
        let mut full = vec![0u32; a];
        for (&s, &f) in used.iter().zip(&freqs) {
            full[s as usize] = f;
        }
        models.push(Some(Model::new(full.into_iter(), precision, false)));
    }
    let mut bytes = bits.finish();
    let table_bytes = bytes.len();

    let mut coder = DefaultAnsCoder::new();
    let mut any = false;
    for (&s, &c) in symbols.iter().zip(contexts).rev() {
        if let Some(m) = &models[c as usize] {
            coder
                .encode_symbol(s, m)
                .expect("symbol has a nonzero probability");
            any = true;
        }
    }
    if any {
        let words = coder
            .into_compressed()
            .expect("writing to a Vec cannot fail");
        bytes.reserve(words.len() * 4);
        for w in words {
            bytes.extend_from_slice(&w.to_le_bytes());
        }
    }
    Coded { bytes, table_bytes }
}

pub fn decode_with_contexts(
    bytes: &[u8],
    contexts: &[u32],
    alphabet: u32,
    n_contexts: u32,
) -> Result<Vec<u32>> {
    if alphabet == 0 || alphabet > MAX_ALPHABET {
        return Err(Error::corrupt(format!(
            "entropy alphabet {alphabet} out of range"
        )));
    }
    if contexts.is_empty() {
        return if bytes.is_empty() {
            Ok(Vec::new())
        } else {
            Err(Error::corrupt("bytes left over in an empty entropy block"))
        };
    }
    let mut per_context = vec![0usize; n_contexts as usize];
    for &c in contexts {
        let slot = per_context
            .get_mut(c as usize)
            .ok_or_else(|| Error::corrupt("entropy context out of range"))?;
        *slot += 1;
    }

    enum Ctx {
        Absent,
        Constant(u32),
        Coded(Model),
    }
    let mut reader = BitReader::new(bytes);
    let mut ctxs = Vec::with_capacity(n_contexts as usize);
    for &n_c in &per_context {
        if n_c == 0 {
            ctxs.push(Ctx::Absent);
            continue;
        }
        let k = reader.exp_golomb(0)?.saturating_add(1);
        if k > alphabet as u64 || k > n_c as u64 {
            return Err(Error::corrupt(
                "entropy table lists more symbols than possible",
            ));
        }
        if k == 1 {
            let s = reader.get(symbol_bits(alphabet))? as u32;
            if s >= alphabet {
                return Err(Error::corrupt("entropy table symbol outside the alphabet"));
            }
            ctxs.push(Ctx::Constant(s));
            continue;
        }
        let (used, freqs, precision) = read_table(&mut reader, k as usize, alphabet)?;
        let mut full = vec![0u32; alphabet as usize];
        for (&s, &f) in used.iter().zip(&freqs) {
            full[s as usize] = f;
        }
        // A lookup table costs 2^precision entries: afford it when that is not much more than
        // the symbols it will decode (bounded by the caller's count, not by the file).
        let with_lut = (1usize << precision) <= 4 * n_c + 4096 && alphabet <= 1 << 16;
        ctxs.push(Ctx::Coded(Model::new(
            full.into_iter(),
            precision,
            with_lut,
        )));
    }
    let payload = &bytes[reader.byte_position()..];
    let any_coded = ctxs.iter().any(|c| matches!(c, Ctx::Coded(..)));
    let mut out = Vec::with_capacity(contexts.len());
    if !any_coded {
        if !payload.is_empty() {
            return Err(Error::corrupt("bytes left over after the entropy tables"));
        }
        for &c in contexts {
            match &ctxs[c as usize] {
                Ctx::Constant(s) => out.push(*s),
                _ => return Err(Error::corrupt("entropy context has no model")),
            }
        }
        return Ok(out);
    }
    if !payload.len().is_multiple_of(4) || payload.is_empty() {
        return Err(Error::corrupt("ANS payload is not a whole number of words"));
    }
    let words: Vec<u32> = payload
        .chunks_exact(4)
        .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
        .collect();
    let mut coder = DefaultAnsCoder::from_compressed_slice(&words)
        .map_err(|_| Error::corrupt("ANS payload ends with a zero word"))?;
    for &c in contexts {
        match &ctxs[c as usize] {
            Ctx::Constant(s) => out.push(*s),
            Ctx::Coded(m) => {
                let d = coder
                    .decode_symbol(m)
                    .map_err(|_| Error::corrupt("ANS stream is damaged"))?;
                out.push(d);
            }
            Ctx::Absent => return Err(Error::corrupt("entropy context has no model")),
        }
    }
    if !coder.is_empty() {
        return Err(Error::corrupt(
            "ANS stream has data left after the last symbol",
        ));
    }
    Ok(out)
}

/// Empirical entropy of `symbols` in bits (an estimate, for reports: never a size).
pub fn entropy_bits(symbols: &[u32], alphabet: u32) -> f64 {
    let mut counts = vec![0u64; alphabet as usize];
    for &s in symbols {
        counts[s as usize] += 1;
    }
    let n = symbols.len() as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| -(c as f64) * (c as f64 / n).log2())
        .sum()
}

/// Bits needed to write any symbol < alphabet.
fn symbol_bits(alphabet: u32) -> u32 {
    32 - (alphabet.max(2) - 1).leading_zeros()
}

fn freqs_precision(freqs: &[u32]) -> u32 {
    let total: u64 = freqs.iter().map(|&f| f as u64).sum();
    total.trailing_zeros()
}

/// Cost in bits of Exp-Golomb-`k` for `v`.
fn exp_golomb_bits(v: u64, k: u32) -> u64 {
    let x = (v >> k) + 1;
    let n = 63 - x.leading_zeros() as u64;
    2 * n + 1 + k as u64
}

/// The Exp-Golomb parameter that writes `values` in the fewest bits, and that many bits.
fn best_exp_golomb(values: impl Iterator<Item = u64> + Clone) -> (u32, u64) {
    (0..24u32)
        .map(|k| (k, values.clone().map(|v| exp_golomb_bits(v, k)).sum()))
        .min_by_key(|&(_, b)| b)
        .expect("non-empty range")
}

/// Fixed-point frequencies summing to 2^precision, each >= 1, proportional to `counts` (a
/// scale factor found by bisection, then the last few units given to or taken from the most
/// frequent symbols, where a unit changes the coded size least).
fn quantize_counts(counts: &[u32], precision: u32) -> Vec<u32> {
    let total: u64 = counts.iter().map(|&c| c as u64).sum();
    let target = 1i64 << precision;
    let scaled = |lambda: f64| -> Vec<u32> {
        counts
            .iter()
            .map(|&c| ((c as f64 * lambda).round() as u32).max(1))
            .collect()
    };
    let sum_of = |f: &[u32]| f.iter().map(|&x| x as i64).sum::<i64>();
    // sum(lambda) is non-decreasing in lambda and exceeds the target at the upper end;
    // bisect towards sum == target, then repair the remainder below.
    let (mut lo, mut hi) = (0.0f64, 2.0 * target as f64 / total as f64);
    let mut lambda = target as f64 / total as f64;
    let mut f = scaled(lambda);
    for _ in 0..40 {
        let sum = sum_of(&f);
        if sum == target {
            break;
        }
        if sum > target {
            hi = lambda;
        } else {
            lo = lambda;
        }
        lambda = 0.5 * (lo + hi);
        f = scaled(lambda);
    }
    let mut order: Vec<usize> = (0..counts.len()).collect();
    order.sort_by(|&i, &j| counts[j].cmp(&counts[i]).then(i.cmp(&j)));
    let mut sum = sum_of(&f);
    while sum != target {
        let before = sum;
        for &i in &order {
            if sum < target {
                f[i] += 1;
                sum += 1;
            } else if sum > target && f[i] > 1 {
                f[i] -= 1;
                sum -= 1;
            } else if sum == target {
                break;
            }
        }
        assert!(
            sum != before,
            "2^precision >= number of symbols, so units can always move"
        );
    }
    f
}

/// Chooses the table precision, writes the table for a context with >= 2 used symbols and
/// returns the fixed-point frequencies (summing to a power of two).
fn write_table(bits: &mut BitWriter, used: &[u32], counts: &[u32]) -> Vec<u32> {
    let k = used.len();
    let min_precision = (usize::BITS - (k - 1).leading_zeros()).max(1);
    let gaps = || {
        used.iter().scan(None::<u32>, |prev, &s| {
            let g = match *prev {
                None => s,
                Some(p) => s - p - 1,
            };
            *prev = Some(s);
            Some(g as u64)
        })
    };
    let (gap_k, gap_bits) = best_exp_golomb(gaps());
    let mut best: Option<(u64, u32, Vec<u32>, u32)> = None;
    let max_precision = MAX_TABLE_PRECISION.max(min_precision);
    for precision in min_precision..=max_precision {
        let f = quantize_counts(counts, precision);
        let (freq_k, freq_bits) = best_exp_golomb(f[..k - 1].iter().map(|&x| x as u64 - 1));
        let payload: f64 = f
            .iter()
            .zip(counts)
            .map(|(&fi, &ci)| ci as f64 * (precision as f64 - (fi as f64).log2()))
            .sum();
        let total = payload.ceil() as u64 + 5 + 5 + 5 + gap_bits + freq_bits;
        if best.as_ref().is_none_or(|b| total < b.0) {
            best = Some((total, precision, f, freq_k));
        } else if precision > min_precision + 2 {
            // The cost is close to convex in the precision: stop once it rises.
            break;
        }
    }
    let (_, precision, f, freq_k) = best.expect("at least one precision tried");
    bits.put(precision as u64, 5);
    bits.put(gap_k as u64, 5);
    for g in gaps() {
        bits.exp_golomb(g, gap_k);
    }
    bits.put(freq_k as u64, 5);
    for &x in &f[..k - 1] {
        bits.exp_golomb(x as u64 - 1, freq_k);
    }
    f
}

/// Reads a table with `k >= 2` used symbols; returns the used symbols, their frequencies and the
/// table precision.
fn read_table(r: &mut BitReader, k: usize, alphabet: u32) -> Result<(Vec<u32>, Vec<u32>, u32)> {
    let precision = r.get(5)? as u32;
    if precision == 0 || precision > CODER_PRECISION as u32 || (1u64 << precision) < k as u64 {
        return Err(Error::corrupt("entropy table precision out of range"));
    }
    let gap_k = r.get(5)? as u32;
    let mut used = Vec::with_capacity(k);
    let mut next: u64 = 0;
    for _ in 0..k {
        let g = r.exp_golomb(gap_k)?;
        let s = next.saturating_add(g);
        if s >= alphabet as u64 {
            return Err(Error::corrupt("entropy table symbol outside the alphabet"));
        }
        used.push(s as u32);
        next = s + 1;
    }
    let freq_k = r.get(5)? as u32;
    let total = 1u64 << precision;
    let mut sum = 0u64;
    let mut freqs = Vec::with_capacity(k);
    for _ in 0..k - 1 {
        let f = r.exp_golomb(freq_k)?.saturating_add(1);
        sum = sum.saturating_add(f);
        if sum >= total {
            return Err(Error::corrupt("entropy table frequencies exceed the total"));
        }
        freqs.push(f as u32);
    }
    freqs.push((total - sum) as u32);
    Ok((used, freqs, precision))
}

/// MSB-first bit writer.
#[derive(Default)]
struct BitWriter {
    bytes: Vec<u8>,
    acc: u64,
    n: u32,
}

impl BitWriter {
    /// Writes the low `n` bits of `v` (n <= 32).
    fn put(&mut self, v: u64, n: u32) {
        debug_assert!(n <= 32);
        if n == 0 {
            return;
        }
        self.acc = (self.acc << n) | (v & ((1u64 << n) - 1));
        self.n += n;
        while self.n >= 8 {
            self.n -= 8;
            self.bytes.push((self.acc >> self.n) as u8);
        }
    }

    fn exp_golomb(&mut self, v: u64, k: u32) {
        let x = (v >> k) + 1;
        let nbits = 64 - x.leading_zeros();
        // nbits-1 zeros, then x in nbits bits, then the low k bits of v.
        let mut zeros = nbits - 1;
        while zeros > 32 {
            self.put(0, 32);
            zeros -= 32;
        }
        self.put(0, zeros);
        if nbits > 32 {
            self.put(x >> 32, nbits - 32);
            self.put(x, 32);
        } else {
            self.put(x, nbits);
        }
        self.put(v, k);
    }

    fn finish(mut self) -> Vec<u8> {
        if self.n > 0 {
            let pad = 8 - self.n;
            self.put(0, pad);
        }
        self.bytes
    }
}

struct BitReader<'a> {
    bytes: &'a [u8],
    bit: usize,
}

impl<'a> BitReader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        BitReader { bytes, bit: 0 }
    }

    fn bit(&mut self) -> Result<u64> {
        let byte = self
            .bytes
            .get(self.bit / 8)
            .ok_or_else(|| Error::corrupt("entropy table ends early"))?;
        let b = (byte >> (7 - self.bit % 8)) & 1;
        self.bit += 1;
        Ok(b as u64)
    }

    fn get(&mut self, n: u32) -> Result<u64> {
        let mut v = 0;
        for _ in 0..n {
            v = (v << 1) | self.bit()?;
        }
        Ok(v)
    }

    fn exp_golomb(&mut self, k: u32) -> Result<u64> {
        let mut zeros = 0;
        while self.bit()? == 0 {
            zeros += 1;
            if zeros > 40 {
                return Err(Error::corrupt("entropy table has an oversized code"));
            }
        }
        let x = (1u64 << zeros) | self.get(zeros)?;
        let low = self.get(k)?;
        Ok(((x - 1) << k) | low)
    }

    fn byte_position(&self) -> usize {
        self.bit.div_ceil(8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    fn geometric(n: usize, p: f64, alphabet: u32, seed: u64) -> Vec<u32> {
        let mut r = Rng::new(seed);
        (0..n)
            .map(|_| {
                let u = 1.0 - r.uniform();
                ((u.ln() / (1.0 - p).ln()) as u32).min(alphabet - 1)
            })
            .collect()
    }

    #[test]
    fn round_trips_and_edge_cases() {
        for (syms, a) in [
            (vec![], 5u32),
            (vec![3], 5),
            (vec![4; 1000], 5),
            (vec![0, 1], 2),
            (vec![65535, 0, 65535, 7], 1 << 16),
            (geometric(5000, 0.1, 300, 1), 300),
        ] {
            let c = encode(&syms, a);
            assert!(c.table_bytes <= c.bytes.len());
            assert_eq!(decode(&c.bytes, syms.len(), a).unwrap(), syms);
        }
    }

    #[test]
    fn coded_size_is_close_to_entropy() {
        let syms = geometric(200_000, 0.05, 1000, 2);
        let c = encode(&syms, 1000);
        let h = entropy_bits(&syms, 1000);
        let payload_bits = 8.0 * (c.bytes.len() - c.table_bytes) as f64;
        assert!(
            payload_bits < h * 1.01 + 64.0,
            "payload {payload_bits} vs entropy {h}"
        );
        assert!(c.table_bytes < 600, "table {}", c.table_bytes);
        assert_eq!(decode(&c.bytes, syms.len(), 1000).unwrap(), syms);
    }

    #[test]
    fn contexts_round_trip_and_help() {
        // Symbols whose distribution depends on the context.
        let mut r = Rng::new(3);
        let n = 50_000;
        let contexts: Vec<u32> = (0..n).map(|_| r.below(4) as u32).collect();
        let syms: Vec<u32> = contexts
            .iter()
            .map(|&c| (c * 16 + r.below(4) as u32).min(63))
            .collect();
        let with = encode_with_contexts(&syms, &contexts, 64, 6);
        let without = encode(&syms, 64);
        assert!(with.bytes.len() < without.bytes.len() * 6 / 10);
        assert_eq!(
            decode_with_contexts(&with.bytes, &contexts, 64, 6).unwrap(),
            syms
        );
    }

    #[test]
    fn small_inputs_get_small_tables() {
        let syms = geometric(200, 0.2, 64, 4);
        let c = encode(&syms, 64);
        let h = entropy_bits(&syms, 64);
        // Table plus payload must not cost much more than the entropy itself.
        assert!(
            (c.bytes.len() * 8) as f64 <= h * 1.25 + 80.0,
            "{} bytes vs entropy {h} bits",
            c.bytes.len()
        );
    }

    #[test]
    fn corrupt_bytes_are_rejected_without_panic() {
        let syms = geometric(3000, 0.1, 50, 5);
        let c = encode(&syms, 50);
        let mut r = Rng::new(9);
        let mut rejected = 0;
        for trial in 0..300 {
            let mut b = c.bytes.clone();
            match trial % 3 {
                0 => {
                    let i = r.below(b.len() as u64) as usize;
                    b[i] ^= 1 << r.below(8);
                }
                1 => b.truncate(r.below(b.len() as u64) as usize),
                _ => {
                    let i = r.below(c.table_bytes.max(1) as u64) as usize;
                    b[i] = r.next_u64() as u8;
                }
            }
            match decode(&b, syms.len(), 50) {
                Err(_) => rejected += 1,
                Ok(d) => assert_eq!(d.len(), syms.len()),
            }
        }
        // ANS has no checksum: a flipped payload bit may decode to other symbols, but most
        // damage is caught by the table checks and the end-of-stream check.
        assert!(rejected > 200, "only {rejected} of 300 rejected");
        assert!(decode(&[], 10, 50).is_err());
        assert!(decode(&c.bytes, syms.len(), 0).is_err());
    }
}
