//! Entropy coding of integer symbols with static categorical models fitted to the data: the one
//! place that uses `constriction` (range-variant ANS, `DefaultAnsCoder`: 32-bit words, 24-bit
//! coder precision). Decoding is constriction's; encoding is `StackEncoder`, which writes the very
//! words constriction's encoder writes (a test compares them) but divides by multiplying with a
//! reciprocal: the division was a third of the encoder's time, and every option the analysis
//! measures is encoded. Byte symbols in bulk (the lossless codec) go through `encode_bytes` /
//! `decode_bytes` instead: the same tables, four interleaved rANS states written here (see the
//! comment above them).
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
use constriction::stream::Decode;

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

impl Model {
    /// What [`StackEncoder::push`] needs per symbol (unused symbols get a zero width and are
    /// never pushed).
    fn encode_symbols(&self) -> Vec<EncodeSymbol> {
        self.cdf
            .windows(2)
            .map(|w| EncodeSymbol::new(w[0] << self.shift, (w[1] - w[0]) << self.shift))
            .collect()
    }
}

/// A symbol's interval `[start, start + width)` at the coder precision, and `floor(2^64 /
/// width)`, with which the encoder divides by `width`.
#[derive(Clone, Copy)]
struct EncodeSymbol {
    start: u32,
    width: u32,
    reciprocal: u64,
}

impl EncodeSymbol {
    fn new(start: u32, width: u32) -> EncodeSymbol {
        // A used symbol's width is at least 2^(CODER_PRECISION - MAX_TABLE_PRECISION) >= 2, so
        // 2^64 / width fits in 64 bits.
        let reciprocal = if width >= 2 {
            ((1u128 << 64) / width as u128) as u64
        } else {
            0
        };
        EncodeSymbol {
            start,
            width,
            reciprocal,
        }
    }
}

/// The encoding half of `constriction`'s `DefaultAnsCoder` (64-bit state, 32-bit words, 24-bit
/// precision), word for word the same output, which `decode_with_contexts` reads back with
/// `constriction` itself (a test compares the two encoders). What differs is the arithmetic: the
/// division of the state by a symbol's width, which took a third of the analysis of a model, is
/// a multiplication by its reciprocal and one correction step.
#[derive(Default)]
struct StackEncoder {
    state: u64,
    words: Vec<u32>,
}

impl StackEncoder {
    #[inline(always)]
    fn push(&mut self, s: &EncodeSymbol) {
        let width = s.width as u64;
        if (self.state >> (64 - CODER_PRECISION)) >= width {
            self.words.push(self.state as u32);
            self.state >>= 32;
        }
        // q = floor(state / width): with r = floor(2^64 / width), floor(state * r / 2^64) is
        // q or q - 1 (state < 2^64), and one comparison finds which.
        let (quotient, remainder) = if s.reciprocal == 0 {
            (self.state, 0)
        } else {
            let mut q = ((self.state as u128 * s.reciprocal as u128) >> 64) as u64;
            let mut r = self.state - q * width;
            if r >= width {
                q += 1;
                r -= width;
            }
            (q, r)
        };
        self.state = (quotient << CODER_PRECISION) | (s.start as u64 + remainder);
    }

    /// The words, the state's last (the decoder starts from the end): its low word, then its
    /// high word when it has one, as `constriction` writes them.
    fn finish(mut self) -> Vec<u32> {
        if self.state != 0 {
            self.words.push(self.state as u32);
            if self.state >> 32 != 0 {
                self.words.push((self.state >> 32) as u32);
            }
        }
        self.words
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
    let rows = Contexts::Rows {
        classes: &[0],
        cols: symbols.len(),
    };
    encode_in(symbols, rows, alphabet, 1)
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
    encode_in(symbols, Contexts::PerSymbol(contexts), alphabet, n_contexts)
}

/// [`encode_with_contexts`] for a matrix whose rows each have one context: row `r` (`cols`
/// symbols) is coded with the model of `classes[r]`. The same bytes as with the contexts
/// written out symbol by symbol, without that list (as long as the symbols) being made.
pub fn encode_rows(
    symbols: &[u32],
    classes: &[u32],
    cols: usize,
    alphabet: u32,
    n_contexts: u32,
) -> Coded {
    assert_eq!(symbols.len(), classes.len() * cols, "one class per row");
    encode_in(
        symbols,
        Contexts::Rows { classes, cols },
        alphabet,
        n_contexts,
    )
}

/// Which model codes each symbol: one context per symbol, or one per row of `cols` symbols.
#[derive(Clone, Copy)]
enum Contexts<'a> {
    PerSymbol(&'a [u32]),
    Rows { classes: &'a [u32], cols: usize },
}

impl Contexts<'_> {
    /// Calls `f(context, run)` for consecutive runs of `symbols` that share a context, in order
    /// (`reverse`: from the last run to the first).
    #[inline(always)]
    fn runs(self, symbols: &[u32], reverse: bool, mut f: impl FnMut(u32, &[u32])) {
        match self {
            Contexts::PerSymbol(contexts) => {
                let pairs = symbols.chunks(1).zip(contexts);
                if reverse {
                    pairs.rev().for_each(|(s, &c)| f(c, s));
                } else {
                    pairs.for_each(|(s, &c)| f(c, s));
                }
            }
            Contexts::Rows { classes, cols } => {
                let rows = symbols.chunks(cols.max(1)).zip(classes);
                if reverse {
                    rows.rev().for_each(|(s, &c)| f(c, s));
                } else {
                    rows.for_each(|(s, &c)| f(c, s));
                }
            }
        }
    }
}

fn encode_in(symbols: &[u32], contexts: Contexts, alphabet: u32, n_contexts: u32) -> Coded {
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
    contexts.runs(symbols, false, |c, run| {
        assert!(c < n_contexts, "context out of range");
        let h = &mut hist[c as usize * a..(c as usize + 1) * a];
        for &s in run {
            assert!(s < alphabet, "symbol out of range");
            h[s as usize] += 1;
        }
    });

    let (mut bytes, tables) = write_tables(&hist, alphabet, n_contexts);
    let table_bytes = bytes.len();
    let models: Vec<Option<Model>> = tables
        .into_iter()
        .map(|t| {
            t.map(|t| {
                let mut full = vec![0u32; a];
                for (&s, &f) in t.used.iter().zip(&t.freqs) {
                    full[s as usize] = f;
                }
                Model::new(full.into_iter(), t.precision, false)
            })
        })
        .collect();

    // Each context's symbols as the coder needs them (interval start, width, reciprocal).
    let tables: Vec<Option<Vec<EncodeSymbol>>> = models
        .iter()
        .map(|m| m.as_ref().map(Model::encode_symbols))
        .collect();
    let mut coder = StackEncoder::default();
    contexts.runs(symbols, true, |c, run| {
        if let Some(table) = &tables[c as usize] {
            for &s in run.iter().rev() {
                coder.push(&table[s as usize]);
            }
        }
    });
    let words = coder.finish();
    bytes.reserve(words.len() * 4);
    for w in words {
        bytes.extend_from_slice(&w.to_le_bytes());
    }
    Coded { bytes, table_bytes }
}

/// One context's model as its table describes it: the symbols used, their frequencies at
/// `precision` bits (summing to `2^precision`).
struct WrittenTable {
    used: Vec<u32>,
    freqs: Vec<u32>,
    precision: u32,
}

/// The model tables of a block (layout item 1) for these histograms (flat: `context * alphabet +
/// symbol`), and each context's model: `None` when the context has no symbol or a single one
/// (nothing is coded for it). One function for the coder and the size estimate, so both see the
/// same tables.
fn write_tables(
    hist: &[u32],
    alphabet: u32,
    n_contexts: u32,
) -> (Vec<u8>, Vec<Option<WrittenTable>>) {
    let a = alphabet as usize;
    let mut bits = BitWriter::default();
    let mut tables = Vec::with_capacity(n_contexts as usize);
    for c in 0..n_contexts as usize {
        let h = &hist[c * a..(c + 1) * a];
        let used: Vec<u32> = (0..alphabet).filter(|&s| h[s as usize] > 0).collect();
        if used.is_empty() {
            tables.push(None);
            continue;
        }
        bits.exp_golomb(used.len() as u64 - 1, 0);
        if used.len() == 1 {
            bits.put(used[0] as u64, symbol_bits(alphabet));
            tables.push(None);
            continue;
        }
        let counts: Vec<u32> = used.iter().map(|&s| h[s as usize]).collect();
        let freqs = write_table(&mut bits, &used, &counts, MAX_TABLE_PRECISION);
        let precision = freqs_precision(&freqs);
        tables.push(Some(WrittenTable {
            used,
            freqs,
            precision,
        }));
    }
    (bits.finish(), tables)
}

/// The size of a block without coding it: what the analysis compares options by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SizeEstimate {
    /// The block's length in bytes: the tables exactly, the coded words estimated.
    pub bytes: usize,
    /// The tables' length, exact.
    pub table_bytes: usize,
}

/// The size [`encode_with_contexts`] would give for symbols with these histograms (one per
/// context, flat: `context * alphabet + symbol`), without coding them. The tables are written
/// (so their length is exact); the coded words are the symbols' ideal code lengths under those
/// tables, `sum count * log2(2^P / freq)`, rounded up to whole 32-bit words, plus one word for the
/// coder's final state. The range-variant ANS coder at 24-bit precision codes within a small
/// fraction of a bit per thousand symbols of that length, so the estimate is within a few words
/// of the coded block (tested).
pub fn estimate(hist: &[u32], alphabet: u32, n_contexts: u32) -> SizeEstimate {
    assert!(
        alphabet <= MAX_ALPHABET,
        "alphabet {alphabet} above {MAX_ALPHABET}"
    );
    assert_eq!(
        hist.len(),
        alphabet as usize * n_contexts as usize,
        "one histogram per context"
    );
    let (tables, models) = write_tables(hist, alphabet, n_contexts);
    let a = alphabet as usize;
    let mut bits = 0f64;
    for (c, t) in models.iter().enumerate() {
        let Some(t) = t else { continue };
        let h = &hist[c * a..(c + 1) * a];
        for (&s, &f) in t.used.iter().zip(&t.freqs) {
            bits += h[s as usize] as f64 * (t.precision as f64 - (f as f64).log2());
        }
    }
    let words = match models.iter().any(Option::is_some) {
        true => (bits / 32.0).ceil() as usize + 1,
        false => 0,
    };
    SizeEstimate {
        bytes: tables.len() + 4 * words,
        table_bytes: tables.len(),
    }
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
        let (full, precision) = match read_context_table(&mut reader, n_c, alphabet)? {
            ContextTable::Constant(s) => {
                ctxs.push(Ctx::Constant(s));
                continue;
            }
            ContextTable::Coded { freqs, precision } => (freqs, precision),
        };
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

// ---------------------------------------------------------------------------------------------
// Byte symbols, fast: four interleaved rANS states.
//
// The coder above goes through `constriction` one symbol at a time, and each step waits on the
// previous one's state: fine for the lossy codecs' small symbol counts, the bottleneck for the
// lossless codec, which codes every byte of a checkpoint. This one codes byte symbols (alphabet
// <= 256) with the same table format, but with four rANS states taking symbols in turn (symbol `i`
// uses state `i % 4`), so four independent dependency chains run side by side, and decodes a
// symbol with one table lookup.
//
// Layout of a block: the tables exactly as above (one per context that has symbols, precision at
// most `BYTE_MAX_PRECISION`), then, if any context is coded, the four final encoder states
// (little-endian `u32`, each in [2^16, 2^32)) and the renormalisation words (little-endian `u16`)
// in the order the decoder reads them.
//
// rANS (Duda 2013; the interleaved 32-bit state / 16-bit word variant of Giesen's `ryg_rans`):
// state x in [L, L * 2^16) with L = 2^16; a symbol with frequency f and cumulative frequency c at
// precision P codes as x -> (x / f) * 2^P + x % f + c, after shifting out 16-bit words while
// x >= f * 2^(32 - P); decoding inverts it exactly.

/// Table precision cap of the byte coder: 2^12 lookup entries per context keep the decoder's
/// tables in cache even with 256 contexts, and costs < 0.001 bit/symbol on near-uniform bytes.
const BYTE_MAX_PRECISION: u32 = 12;
/// Lower bound of a normalised rANS state.
const RANS_LOW: u32 = 1 << 16;
/// Interleaved rANS states.
const LANES: usize = 4;
/// A context of a 256-symbol alphabet is stored raw (a byte per symbol) unless coding it is
/// estimated to save at least this many bits per symbol: coding costs a rANS step per symbol
/// (~3-5 ns), and on float mantissas the contexts that save less hold most of the symbols and
/// little of the gain (MiniLM's sign+mantissa plane by exponent: the contexts above 0.05 bit
/// hold 28% of the symbols and 90% of the saving).
pub const RAW_MIN_GAIN_BITS: f64 = 0.05;

/// The byte coder's models, one per context, flattened for the hot loops. A context with a single
/// symbol is a model of precision 0 (frequency 1, cumulative 0): coding it leaves the state as it
/// is, so it costs nothing and needs no branch. A context without symbols is never looked up.
struct ByteModels {
    /// Table precision per context (<= `BYTE_MAX_PRECISION`).
    precision: Vec<u32>,
    /// Encoder: `freq` and `cum` per context * 256 + symbol.
    freq: Vec<u32>,
    cum: Vec<u32>,
    /// Decoder: per context, `2^precision` slots from `base[context]`, each
    /// `f << 20 | (q - c) << 8 | symbol` for table unit `q` (f < 2^12, so it fits).
    base: Vec<u32>,
    slots: Vec<u32>,
    any_coded: bool,
    /// Per context: its symbols are stored raw, after the rANS part.
    raw: Vec<bool>,
}

impl ByteModels {
    fn new(n_contexts: usize) -> Self {
        ByteModels {
            precision: vec![0; n_contexts],
            freq: vec![1; n_contexts * 256],
            cum: vec![0; n_contexts * 256],
            base: vec![0; n_contexts],
            slots: Vec::new(),
            any_coded: false,
            raw: vec![false; n_contexts],
        }
    }

    fn set_constant(&mut self, c: usize, symbol: u8, for_decoder: bool) {
        if for_decoder {
            self.base[c] = self.slots.len() as u32;
            self.slots.push((1 << 20) | symbol as u32);
        }
    }

    /// `freqs[s]` per symbol of the alphabet, summing to `2^precision`, at least two nonzero.
    fn set_coded(&mut self, c: usize, freqs: &[u32], precision: u32, for_decoder: bool) {
        self.any_coded = true;
        self.precision[c] = precision;
        self.base[c] = self.slots.len() as u32;
        let mut acc = 0u32;
        for (s, &f) in freqs.iter().enumerate() {
            self.freq[c * 256 + s] = f.max(1);
            self.cum[c * 256 + s] = acc;
            if for_decoder {
                self.slots
                    .extend((0..f).map(|q| (f << 20) | (q << 8) | s as u32));
            }
            acc += f;
        }
        debug_assert_eq!(acc, 1 << precision);
    }
}

/// Codes byte `symbols` (each < `alphabet` <= 256) with one static model per context
/// (`contexts[i] < n_contexts`; `None` = one context), four interleaved rANS states.
/// Decoding needs the count, the alphabet and the same contexts from the caller.
///
/// Panics if the caller breaks the contract (lengths differ, a symbol or context out of range,
/// `alphabet > 256`): programming errors of the encoder side, never driven by untrusted bytes.
pub fn encode_bytes(
    symbols: &[u8],
    contexts: Option<&[u8]>,
    alphabet: u32,
    n_contexts: u32,
) -> Coded {
    assert!(alphabet <= 256 && (1..=256).contains(&n_contexts));
    if let Some(c) = contexts {
        assert_eq!(c.len(), symbols.len(), "one context per symbol");
    }
    if symbols.is_empty() {
        return Coded {
            bytes: Vec::new(),
            table_bytes: 0,
        };
    }
    let a = alphabet as usize;
    let mut hist = vec![0u32; 256 * n_contexts as usize];
    match contexts {
        Some(ctx) => {
            for (&s, &c) in symbols.iter().zip(ctx) {
                hist[c as usize * 256 + s as usize] += 1;
            }
        }
        None => symbols.iter().for_each(|&s| hist[s as usize] += 1),
    }
    let mut bits = BitWriter::default();
    let mut models = ByteModels::new(n_contexts as usize);
    for c in 0..n_contexts as usize {
        let h = &hist[c * 256..(c + 1) * 256];
        assert!(
            h[a..].iter().all(|&x| x == 0),
            "symbol or context out of range"
        );
        let used: Vec<u32> = (0..alphabet).filter(|&s| h[s as usize] > 0).collect();
        if used.is_empty() {
            continue;
        }
        if alphabet == 256 {
            // The raw flag (only a full byte alphabet can be stored raw at no loss).
            let n_c: u64 = h.iter().map(|&x| x as u64).sum();
            let coded_bits = h
                .iter()
                .filter(|&&x| x > 0)
                .map(|&x| x as f64 * (n_c as f64 / x as f64).log2() + 12.0)
                .sum::<f64>();
            let raw = used.len() > 1 && coded_bits > (8.0 - RAW_MIN_GAIN_BITS) * n_c as f64;
            bits.put(raw as u64, 1);
            if raw {
                models.raw[c] = true;
                continue;
            }
        }
        bits.exp_golomb(used.len() as u64 - 1, 0);
        if used.len() == 1 {
            bits.put(used[0] as u64, symbol_bits(alphabet));
            models.set_constant(c, used[0] as u8, false);
            continue;
        }
        let counts: Vec<u32> = used.iter().map(|&s| h[s as usize]).collect();
        let freqs = write_table(&mut bits, &used, &counts, BYTE_MAX_PRECISION);
        let mut full = vec![0u32; a];
        for (&s, &f) in used.iter().zip(&freqs) {
            full[s as usize] = f;
        }
        models.set_coded(c, &full, freqs_precision(&freqs), false);
    }
    let mut bytes = bits.finish();
    let table_bytes = bytes.len();
    let any_raw = models.raw.iter().any(|&r| r);
    // Symbols of raw contexts go, in order, after the rANS part; the others are coded.
    let mut raw_bytes = Vec::new();
    let (mut coded_symbols, mut coded_contexts) = (Vec::new(), Vec::new());
    if any_raw {
        // Branch-free split: each symbol is written to both lists, and kept in one.
        raw_bytes = vec![0u8; symbols.len() + 1];
        coded_symbols = vec![0u8; symbols.len() + 1];
        coded_contexts = vec![0u8; symbols.len() + 1];
        let (mut j, mut k) = (0usize, 0usize);
        for (i, &s) in symbols.iter().enumerate() {
            let c = contexts.map_or(0, |ctx| ctx[i]);
            let raw = models.raw[c as usize] as usize;
            raw_bytes[k] = s;
            coded_symbols[j] = s;
            coded_contexts[j] = c;
            k += raw;
            j += 1 - raw;
        }
        raw_bytes.truncate(k);
        coded_symbols.truncate(j);
        coded_contexts.truncate(j);
    }
    if !models.any_coded {
        bytes.extend_from_slice(&raw_bytes);
        return Coded { bytes, table_bytes };
    }
    let (state, words) = match contexts {
        _ if any_raw => rans_encode(&coded_symbols, |j| coded_contexts[j] as usize, &models),
        Some(ctx) => rans_encode(symbols, |i| ctx[i] as usize, &models),
        None => rans_encode(symbols, |_| 0, &models),
    };
    let n_words: usize = words.iter().map(|w| w.len()).sum();
    bytes.reserve(LANES * 8 + n_words * 2);
    for x in state {
        bytes.extend_from_slice(&x.to_le_bytes());
    }
    for w in &words {
        bytes.extend_from_slice(&(w.len() as u32).to_le_bytes());
    }
    for w in words.iter().flatten() {
        bytes.extend_from_slice(&w.to_le_bytes());
    }
    bytes.extend_from_slice(&raw_bytes);
    Coded { bytes, table_bytes }
}

/// Inverse of [`encode_bytes`] for `count` symbols; with contexts, `count == contexts.len()`.
pub fn decode_bytes(
    bytes: &[u8],
    contexts: Option<&[u8]>,
    count: usize,
    alphabet: u32,
    n_contexts: u32,
) -> Result<Vec<u8>> {
    if alphabet == 0 || alphabet > 256 || n_contexts == 0 || n_contexts > 256 {
        return Err(Error::corrupt(
            "byte coder alphabet or contexts out of range",
        ));
    }
    if contexts.is_some_and(|c| c.len() != count) {
        return Err(Error::invalid("one context per symbol"));
    }
    if count == 0 {
        return if bytes.is_empty() {
            Ok(Vec::new())
        } else {
            Err(Error::corrupt("bytes left over in an empty entropy block"))
        };
    }
    let per_context = symbols_per_context(contexts, count, n_contexts)?;
    let mut reader = BitReader::new(bytes);
    let models = read_byte_models(&mut reader, &per_context, alphabet, n_contexts)?;
    let payload = &bytes[reader.byte_position()..];
    // The raw contexts' symbols end the block.
    let raw_count: usize = per_context
        .iter()
        .zip(&models.raw)
        .filter(|&(_, &raw)| raw)
        .map(|(&n_c, _)| n_c)
        .sum();
    let split = payload
        .len()
        .checked_sub(raw_count)
        .ok_or_else(|| Error::corrupt("raw symbols exceed the entropy block"))?;
    let (payload, raw_bytes) = payload.split_at(split);
    if !models.any_coded {
        if !payload.is_empty() {
            return Err(Error::corrupt("bytes left over after the entropy tables"));
        }
        return decode_uncoded(&models, contexts, count, raw_bytes);
    }
    let RansLanes {
        state,
        counts,
        lanes,
    } = read_rans_lanes(payload)?;
    let any_raw = raw_count > 0;
    // Raw flags as 0/1 bytes, for branch-free gathering and merging (which of the two a symbol
    // is follows the data and mispredicts).
    let raw_flag: Vec<u8> = models.raw.iter().map(|&r| r as u8).collect();
    let coded_contexts: Vec<u8> = if any_raw {
        // With one context, a raw context means no coded one (handled above): contexts exist.
        coded_only_contexts(contexts.unwrap_or_default(), &raw_flag, count)
    } else {
        Vec::new()
    };
    let (coded, end_state, read) = match contexts {
        _ if any_raw => rans_decode(
            lanes,
            state,
            coded_contexts.len(),
            |j| coded_contexts[j] as usize,
            &models,
        ),
        Some(ctx) => rans_decode(lanes, state, count, |i| ctx[i] as usize, &models),
        None => rans_decode(lanes, state, count, |_| 0, &models),
    };
    let out = if any_raw {
        merge_raw_symbols(
            coded,
            raw_bytes,
            contexts.unwrap_or_default(),
            &raw_flag,
            count,
        )
    } else {
        coded
    };
    if read != counts || end_state.iter().any(|&x| x != RANS_LOW) {
        return Err(Error::corrupt("rANS stream does not end where it should"));
    }
    Ok(out)
}

/// How many of the `count` symbols each context holds (all in context 0 without contexts).
fn symbols_per_context(
    contexts: Option<&[u8]>,
    count: usize,
    n_contexts: u32,
) -> Result<Vec<usize>> {
    let mut per_context = vec![0usize; n_contexts as usize];
    match contexts {
        Some(ctx) => {
            for &c in ctx {
                *per_context
                    .get_mut(c as usize)
                    .ok_or_else(|| Error::corrupt("entropy context out of range"))? += 1;
            }
        }
        None => per_context[0] = count,
    }
    Ok(per_context)
}

/// Each used context's model from the block's tables: raw (alphabet 256 only), constant, or coded
/// with a frequency table.
fn read_byte_models(
    reader: &mut BitReader,
    per_context: &[usize],
    alphabet: u32,
    n_contexts: u32,
) -> Result<ByteModels> {
    let mut models = ByteModels::new(n_contexts as usize);
    for (c, &n_c) in per_context.iter().enumerate() {
        if n_c == 0 {
            continue;
        }
        if alphabet == 256 && reader.get(1)? == 1 {
            models.raw[c] = true;
            continue;
        }
        let (full, precision) = match read_context_table(reader, n_c, alphabet)? {
            ContextTable::Constant(s) => {
                models.set_constant(c, s as u8, true);
                continue;
            }
            ContextTable::Coded { freqs, precision } => (freqs, precision),
        };
        if precision > BYTE_MAX_PRECISION {
            return Err(Error::corrupt("byte coder table precision out of range"));
        }
        models.set_coded(c, &full, precision, true);
    }
    Ok(models)
}

/// The symbols of a block where every context present is raw or constant (its one slot holds the
/// symbol): no rANS payload.
fn decode_uncoded(
    models: &ByteModels,
    contexts: Option<&[u8]>,
    count: usize,
    raw_bytes: &[u8],
) -> Result<Vec<u8>> {
    let Some(ctx) = contexts else {
        return Ok(if models.raw[0] {
            raw_bytes.to_vec()
        } else {
            vec![models.slots[models.base[0] as usize] as u8; count]
        });
    };
    let mut raw = raw_bytes.iter();
    (0..count)
        .map(|i| {
            let c = ctx[i] as usize;
            if models.raw[c] {
                raw.next()
                    .copied()
                    .ok_or_else(|| Error::corrupt("raw symbols missing"))
            } else {
                Ok(models.slots[models.base[c] as usize] as u8)
            }
        })
        .collect()
}

/// The parts of a rANS payload.
struct RansLanes<'a> {
    /// Each lane's initial state.
    state: [u32; LANES],
    /// Each lane's word count.
    counts: [usize; LANES],
    /// Each lane's words (u16, little-endian).
    lanes: [&'a [u8]; LANES],
}

/// The rANS payload's layout: the initial states, then each state's word count (u32), then the
/// words (u16) of each state in turn.
fn read_rans_lanes(payload: &[u8]) -> Result<RansLanes<'_>> {
    if payload.len() < LANES * 8 {
        return Err(Error::corrupt("rANS payload too short"));
    }
    let mut state = [0u32; LANES];
    for (x, w) in state.iter_mut().zip(payload.chunks_exact(4)) {
        *x = u32::from_le_bytes([w[0], w[1], w[2], w[3]]);
        if *x < RANS_LOW {
            return Err(Error::corrupt("rANS state out of range"));
        }
    }
    let mut rest = &payload[LANES * 4..];
    let mut counts = [0usize; LANES];
    for n_words in counts.iter_mut() {
        let w = rest
            .get(..4)
            .ok_or_else(|| Error::corrupt("rANS word counts missing"))?;
        *n_words = u32::from_le_bytes([w[0], w[1], w[2], w[3]]) as usize;
        rest = &rest[4..];
    }
    let mut lanes: [&[u8]; LANES] = [&[]; LANES];
    for (lane, &n_words) in lanes.iter_mut().zip(&counts) {
        let len = n_words
            .checked_mul(2)
            .filter(|&l| l <= rest.len())
            .ok_or_else(|| Error::corrupt("rANS words exceed the block"))?;
        *lane = &rest[..len];
        rest = &rest[len..];
    }
    if !rest.is_empty() {
        return Err(Error::corrupt("bytes left over after the rANS words"));
    }
    Ok(RansLanes {
        state,
        counts,
        lanes,
    })
}

/// The contexts of the coded (not raw) symbols, in order.
fn coded_only_contexts(ctx: &[u8], raw_flag: &[u8], count: usize) -> Vec<u8> {
    let mut compact = vec![0u8; count + 1];
    let mut j = 0;
    for &c in ctx {
        compact[j] = c;
        j += 1 - raw_flag[c as usize] as usize;
    }
    compact.truncate(j);
    compact
}

/// Merges the coded and the raw symbols back in order. The counts match by construction (both come
/// from the same contexts); reads are clamped to a padding zero anyway.
fn merge_raw_symbols(
    mut coded: Vec<u8>,
    raw_bytes: &[u8],
    ctx: &[u8],
    raw_flag: &[u8],
    count: usize,
) -> Vec<u8> {
    let coded_last = coded.len();
    coded.push(0);
    let mut raw = raw_bytes.to_vec();
    let raw_last = raw.len();
    raw.push(0);
    let mut out = vec![0u8; count];
    let (mut j, mut k) = (0usize, 0usize);
    for (o, &c) in out.iter_mut().zip(ctx) {
        let from_raw = raw_flag[c as usize] as usize;
        let (r, c) = (raw[k.min(raw_last)], coded[j.min(coded_last)]);
        *o = if from_raw == 1 { r } else { c };
        k += from_raw;
        j += 1 - from_raw;
    }
    out
}

/// The encoder's loop: symbols backwards, symbol `i` on state `i % LANES`; returns the final
/// states and each state's words in the order the decoder reads them. `context_of(i)` must name
/// a context that has a model.
fn rans_encode(
    symbols: &[u8],
    context_of: impl Fn(usize) -> usize,
    models: &ByteModels,
) -> ([u32; LANES], [Vec<u16>; LANES]) {
    let n = symbols.len();
    // At most one word per symbol (one 16-bit shift brings any state below the bound, as
    // f * 2^(32 - p) >= 2^20 for p <= 12); written at `len` unconditionally, kept if emitted.
    let per_lane = n / LANES + 2;
    let mut words: [Vec<u16>; LANES] = std::array::from_fn(|_| vec![0u16; per_lane]);
    let mut len = [0usize; LANES];
    // A macro rather than a closure: the closure was not inlined, which put the states in
    // memory and serialised the four chains (measured: ~2x slower).
    macro_rules! step {
        ($x:expr, $i:expr, $words:expr, $len:expr) => {{
            let i = $i;
            let c = context_of(i);
            let k = c * 256 + symbols[i] as usize;
            let (f, start, p) = (models.freq[k], models.cum[k], models.precision[c]);
            // In u64: a constant context has p = 0 and f = 1, a bound of 2^32 that no state
            // reaches (its coding is the identity).
            let emit = $x as u64 >= (f as u64) << (32 - p);
            $words[$len] = $x as u16;
            $len += emit as usize;
            let y = $x >> (16 * emit as u32);
            $x = ((y / f) << p) + (y % f) + start;
        }};
    }
    let whole = n - n % LANES;
    let mut state = [RANS_LOW; LANES];
    for i in (whole..n).rev() {
        let lane = i % LANES;
        step!(state[lane], i, words[lane], len[lane]);
    }
    let [mut x0, mut x1, mut x2, mut x3] = state;
    let [w0, w1, w2, w3] = &mut words;
    let [mut l0, mut l1, mut l2, mut l3] = len;
    for i in (0..whole).step_by(LANES).rev() {
        step!(x3, i + 3, w3, l3);
        step!(x2, i + 2, w2, l2);
        step!(x1, i + 1, w1, l1);
        step!(x0, i, w0, l0);
    }
    for (w, l) in words.iter_mut().zip([l0, l1, l2, l3]) {
        w.truncate(l);
        w.reverse();
    }
    ([x0, x1, x2, x3], words)
}

/// The decoder's loop; returns the symbols, the final states and how many words it read from
/// each state's stream. It never fails: a damaged stream shows as final states other than
/// `RANS_LOW` or read counts other than the stream lengths (past its end a stream reads zeros),
/// which the caller checks.
fn rans_decode(
    lanes: [&[u8]; LANES],
    state: [u32; LANES],
    count: usize,
    context_of: impl Fn(usize) -> usize,
    models: &ByteModels,
) -> (Vec<u8>, [u32; LANES], [usize; LANES]) {
    let mut out = vec![0u8; count];
    // Each state's words as u16 with one zero after them; reads are clamped to that zero.
    let padded: [Vec<u16>; LANES] = lanes.map(|b| {
        let mut w: Vec<u16> = b
            .chunks_exact(2)
            .map(|w| u16::from_le_bytes([w[0], w[1]]))
            .collect();
        w.push(0);
        w
    });
    // Every context looked up has symbols, so it was given a model; a state in [2^16, 2^32)
    // stays there: f * (x >> p) + (q - c) <= f * 2^(32 - p) - 1, and after one word it is
    // >= 2^16 because f * (x >> p) >= 2^(16 - p) >= 1 before it. Each state reads its own
    // stream, so the four dependency chains (state -> table -> state) do not wait on each other.
    // A macro rather than a closure, for the reason given in `rans_encode`.
    macro_rules! step {
        ($x:expr, $i:expr, $words:expr, $pos:expr) => {{
            let i = $i;
            let c = context_of(i);
            let p = models.precision[c];
            let q = $x & ((1 << p) - 1);
            let slot = models.slots[(models.base[c] + q) as usize];
            out[i] = slot as u8;
            let y = (slot >> 20) * ($x >> p) + ((slot >> 8) & 0xfff);
            // Branch-free refill: whether a word is needed depends on the data and mispredicts.
            let need = y < RANS_LOW;
            // (Arithmetic, not `if`: the compiler made the `if` a branch.)
            let w = $words[$pos.min($words.len() - 1)] as u32;
            let shift = 16 * need as u32;
            $x = (y << shift) | (w & (0xffff * need as u32));
            $pos += need as usize;
        }};
    }
    let whole = count - count % LANES;
    let [mut x0, mut x1, mut x2, mut x3] = state;
    let [w0, w1, w2, w3] = &padded;
    let (mut p0, mut p1, mut p2, mut p3) = (0usize, 0usize, 0usize, 0usize);
    for i in (0..whole).step_by(LANES) {
        step!(x0, i, w0, p0);
        step!(x1, i + 1, w1, p1);
        step!(x2, i + 2, w2, p2);
        step!(x3, i + 3, w3, p3);
    }
    let mut state = [x0, x1, x2, x3];
    let mut pos = [p0, p1, p2, p3];
    for i in whole..count {
        let lane = i % LANES;
        step!(state[lane], i, padded[lane], pos[lane]);
    }
    (out, state, pos)
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
fn write_table(
    bits: &mut BitWriter,
    used: &[u32],
    counts: &[u32],
    max_table_precision: u32,
) -> Vec<u32> {
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
    let max_precision = max_table_precision.max(min_precision);
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

/// One context's model as both coders store it: the count of used symbols, then either the one
/// symbol (a constant context, nothing coded) or the table of used symbols and frequencies.
enum ContextTable {
    Constant(u32),
    /// Frequencies over the whole alphabet (0 for unused symbols) and their precision in bits.
    Coded {
        freqs: Vec<u32>,
        precision: u32,
    },
}

/// Reads one context's model for a context that holds `n_c` symbols.
fn read_context_table(reader: &mut BitReader, n_c: usize, alphabet: u32) -> Result<ContextTable> {
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
        return Ok(ContextTable::Constant(s));
    }
    let (used, freqs, precision) = read_table(reader, k as usize, alphabet)?;
    let mut full = vec![0u32; alphabet as usize];
    for (&s, &f) in used.iter().zip(&freqs) {
        full[s as usize] = f;
    }
    Ok(ContextTable::Coded {
        freqs: full,
        precision,
    })
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
    use constriction::stream::Encode;

    /// The words `constriction`'s own encoder writes for `symbols` under `models` (one per
    /// context; `None`: nothing coded).
    fn constriction_words(symbols: &[u32], contexts: &[u32], models: &[Option<Model>]) -> Vec<u32> {
        let mut coder = DefaultAnsCoder::new();
        for (&s, &c) in symbols.iter().zip(contexts).rev() {
            if let Some(m) = &models[c as usize] {
                coder.encode_symbol(s, m).unwrap();
            }
        }
        coder.into_compressed().unwrap()
    }

    #[test]
    fn row_contexts_give_the_bytes_of_contexts_written_out() {
        for (rows, cols, alphabet) in [(1usize, 1usize, 2u32), (7, 13, 5), (40, 33, 300), (3, 0, 4)]
        {
            let symbols = geometric(rows * cols, 0.3, alphabet, rows as u64);
            let classes: Vec<u32> = (0..rows as u32).map(|r| (r * 5) % 4).collect();
            let expanded: Vec<u32> = classes
                .iter()
                .flat_map(|&c| std::iter::repeat_n(c, cols))
                .collect();
            let by_rows = encode_rows(&symbols, &classes, cols, alphabet, 4);
            let written_out = encode_with_contexts(&symbols, &expanded, alphabet, 4);
            assert_eq!(by_rows.bytes, written_out.bytes, "{rows} x {cols}");
            assert_eq!(by_rows.table_bytes, written_out.table_bytes);
            let decoded = decode_with_contexts(&by_rows.bytes, &expanded, alphabet, 4).unwrap();
            assert_eq!(decoded, symbols);
        }
    }

    #[test]
    fn stack_encoder_writes_what_constriction_writes() {
        let mut r = Rng::new(7);
        for case in 0..40u64 {
            let alphabet = [2u32, 3, 17, 300, 4096][case as usize % 5];
            let n_contexts = 1 + (case % 3) as u32;
            let count = [1usize, 2, 5, 1000, 20_000][(case / 5) as usize % 5];
            let p = 0.05 + 0.9 * r.uniform();
            let symbols = geometric(count, p, alphabet, case);
            let contexts: Vec<u32> = (0..count)
                .map(|i| (i as u32 * 7 + case as u32) % n_contexts)
                .collect();
            let mut models = Vec::new();
            for c in 0..n_contexts {
                let mut counts = vec![0u32; alphabet as usize];
                for (&s, &x) in symbols.iter().zip(&contexts) {
                    if x == c {
                        counts[s as usize] += 1;
                    }
                }
                let used: Vec<u32> = (0..alphabet).filter(|&s| counts[s as usize] > 0).collect();
                if used.len() < 2 {
                    models.push(None);
                    continue;
                }
                let precision = [4u32, 9, MAX_TABLE_PRECISION][(case % 3) as usize]
                    .max(32 - (used.len() as u32).leading_zeros());
                let used_counts: Vec<u32> = used.iter().map(|&s| counts[s as usize]).collect();
                let freqs = quantize_counts(&used_counts, precision);
                let mut full = vec![0u32; alphabet as usize];
                for (&s, &f) in used.iter().zip(&freqs) {
                    full[s as usize] = f;
                }
                models.push(Some(Model::new(full.into_iter(), precision, false)));
            }
            let mut ours = StackEncoder::default();
            let tables: Vec<Option<Vec<EncodeSymbol>>> = models
                .iter()
                .map(|m| m.as_ref().map(Model::encode_symbols))
                .collect();
            for (&s, &c) in symbols.iter().zip(&contexts).rev() {
                if let Some(t) = &tables[c as usize] {
                    ours.push(&t[s as usize]);
                }
            }
            assert_eq!(
                ours.finish(),
                constriction_words(&symbols, &contexts, &models),
                "case {case}: alphabet {alphabet}, {n_contexts} contexts, {count} symbols"
            );
        }
    }

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
    fn the_size_estimate_is_within_a_few_words_of_the_coded_block() {
        let mut r = Rng::new(11);
        let mut worst = 0i64;
        for case in 0..60u64 {
            let n = [0usize, 1, 2, 17, 300, 5_000, 120_000][case as usize % 7];
            let alphabet = [2u32, 3, 50, 1000, 30_000][case as usize % 5];
            let n_contexts = 1 + (case % 4) as u32 * 7;
            let p = [0.9, 0.3, 0.05, 0.001][case as usize % 4];
            let symbols = geometric(n, p, alphabet, case);
            let contexts: Vec<u32> = (0..n).map(|_| r.below(n_contexts as u64) as u32).collect();
            let mut hist = vec![0u32; (alphabet * n_contexts) as usize];
            for (&s, &c) in symbols.iter().zip(&contexts) {
                hist[(c * alphabet + s) as usize] += 1;
            }
            let coded = encode_with_contexts(&symbols, &contexts, alphabet, n_contexts);
            let estimate = super::estimate(&hist, alphabet, n_contexts);
            assert_eq!(estimate.table_bytes, coded.table_bytes, "case {case}");
            let off = estimate.bytes as i64 - coded.bytes.len() as i64;
            assert!(
                off.abs() <= 8 + coded.bytes.len() as i64 / 2000,
                "case {case}: {n} symbols, estimate {} against {} bytes",
                estimate.bytes,
                coded.bytes.len()
            );
            worst = worst.max(off.abs());
        }
        eprintln!("largest difference: {worst} bytes");
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

    #[test]
    fn byte_coder_round_trips_and_edge_cases() {
        let mut r = Rng::new(11);
        let skewed: Vec<u8> = geometric(10_001, 0.2, 256, 12)
            .into_iter()
            .map(|s| s as u8)
            .collect();
        let uniform: Vec<u8> = (0..4097).map(|_| r.below(256) as u8).collect();
        for (syms, a) in [
            (vec![], 5u32),
            (vec![3u8], 5),
            (vec![4; 1000], 5),
            (vec![0, 1], 2),
            (vec![1, 0, 1], 2),
            (skewed.clone(), 256),
            (uniform.clone(), 256),
        ] {
            let c = encode_bytes(&syms, None, a, 1);
            assert!(c.table_bytes <= c.bytes.len());
            assert_eq!(
                decode_bytes(&c.bytes, None, syms.len(), a, 1).unwrap(),
                syms
            );
        }
        // Contexts, some constant, some absent, some coded.
        let contexts: Vec<u8> = (0..skewed.len()).map(|i| (i % 7 % 3) as u8).collect();
        let syms: Vec<u8> = skewed
            .iter()
            .zip(&contexts)
            .map(|(&s, &c)| if c == 2 { 9 } else { s.wrapping_add(c * 40) })
            .collect();
        let c = encode_bytes(&syms, Some(&contexts), 256, 5);
        let back = decode_bytes(&c.bytes, Some(&contexts), syms.len(), 256, 5).unwrap();
        assert_eq!(back, syms);
        // A near-uniform context is stored raw, beside coded and constant ones: the block is
        // the raw bytes plus about the coded context's entropy.
        let syms: Vec<u8> = contexts
            .iter()
            .zip(&skewed)
            .map(|(&c, &s)| match c {
                0 => r.below(256) as u8,
                1 => s,
                _ => 9,
            })
            .collect();
        let c = encode_bytes(&syms, Some(&contexts), 256, 3);
        let back = decode_bytes(&c.bytes, Some(&contexts), syms.len(), 256, 3).unwrap();
        assert_eq!(back, syms);
        let n0 = contexts.iter().filter(|&&c| c == 0).count();
        let skewed_1: Vec<u32> = contexts
            .iter()
            .zip(&syms)
            .filter(|&(&c, _)| c == 1)
            .map(|(_, &s)| s as u32)
            .collect();
        let expected = n0 as f64 + entropy_bits(&skewed_1, 256) / 8.0;
        let got = c.bytes.len() as f64;
        assert!(
            got > expected - 1.0 && got < expected * 1.01 + 300.0,
            "{got} bytes, expected ~{expected}"
        );
    }

    #[test]
    fn byte_coder_size_is_close_to_entropy_and_to_the_slow_coder() {
        let syms: Vec<u8> = geometric(200_000, 0.05, 256, 13)
            .into_iter()
            .map(|s| s as u8)
            .collect();
        let wide: Vec<u32> = syms.iter().map(|&s| s as u32).collect();
        let h = entropy_bits(&wide, 256);
        let c = encode_bytes(&syms, None, 256, 1);
        let payload_bits = 8.0 * (c.bytes.len() - c.table_bytes) as f64;
        // 12-bit tables cost a little against the exact entropy; the 4 states cost 128 bits.
        assert!(
            payload_bits < h * 1.005 + 200.0,
            "payload {payload_bits} vs entropy {h}"
        );
        let slow = encode(&wide, 256);
        assert!((c.bytes.len() as f64) < slow.bytes.len() as f64 * 1.005 + 16.0);
    }

    #[test]
    fn byte_coder_rejects_damage_without_panic() {
        let syms: Vec<u8> = geometric(3000, 0.1, 50, 14)
            .into_iter()
            .map(|s| s as u8)
            .collect();
        let c = encode_bytes(&syms, None, 50, 1);
        let mut r = Rng::new(15);
        let mut rejected = 0;
        for trial in 0..300 {
            let mut b = c.bytes.clone();
            if trial % 2 == 0 {
                let i = r.below(b.len() as u64) as usize;
                b[i] ^= 1 << r.below(8);
            } else {
                b.truncate(r.below(b.len() as u64) as usize);
            }
            match decode_bytes(&b, None, syms.len(), 50, 1) {
                Err(_) => rejected += 1,
                Ok(d) => assert_eq!(d.len(), syms.len()),
            }
        }
        // The final-state check catches almost every payload change: each state must come
        // back to exactly 2^16.
        assert!(rejected > 250, "only {rejected} of 300 rejected");
        assert!(decode_bytes(&[], None, 10, 50, 1).is_err());
        assert!(decode_bytes(&c.bytes, None, syms.len(), 0, 1).is_err());
        assert!(decode_bytes(&c.bytes, Some(&[7u8; 3000]), 3000, 50, 2).is_err());
    }
}
