//! Finite-context models and their mixture: the two stream coders of the sequence compressor.
//!
//! - [`NucleotideCoder`]: a GeCo-like mixture of order-k finite-context models over the alphabet
//!   {A, C, G, T} (symbols 0..3). Each model keeps 4 nibble counts per context (direct tables up to
//!   order [`DIRECT_MAX_ORDER`], hashed above), estimates P(s | c) = (n_s + a) / (n + 4a) with
//!   a = 1/d, and optionally learns inverted repeats (every update also counts the reverse
//!   complement). A base is coded as two binary decisions (A/C vs G/T, then which of the two);
//!   each model's estimate of a decision goes into a logistic mixer whose weights are learned
//!   online, then through an SSE stage, then the arithmetic coder. A repeat model (the longest
//!   recent exact match, forward) adds one more input.
//! - [`ByteCoder`]: an order-0..6 plus word context-mixing coder for bytes (text, FASTA headers,
//!   qualities and the small side streams), bit by bit.
//!
//! The same `code_*` function encodes and decodes (it takes a [`BitCoder`]), so encoder and decoder
//! cannot compute different probabilities. Memory is bounded by the table sizes chosen here (see
//! `docs/SEQUENCES.md` for the figures); nothing depends on the platform.

pub mod coder;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use coder::{Apm, BitCoder, BitDecoder, BitEncoder, BitProbs, Mixer, Stretch, PROB_ONE};

/// Orders up to this use a direct table of 4^k contexts; higher orders hash into 2^HASH_BITS.
pub const DIRECT_MAX_ORDER: u32 = 12;
/// Log2 of the number of contexts of a hashed model (2 bytes each: 32 MiB).
pub const HASH_BITS: u32 = 24;
/// The highest order a model may have (the context is kept in a u64).
pub const MAX_ORDER: u32 = 32;

/// One finite-context model of the mixture.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ModelSpec {
    /// Context length k in bases.
    pub order: u32,
    /// The estimator's alpha is 1 / alpha_den: P(s|c) = (d n_s + 1) / (d n + 4).
    pub alpha_den: u32,
    /// Also count the reverse complement of every (k+1)-mer seen (DNA's inverted repeats).
    pub inverted_repeats: bool,
}

const fn spec(order: u32, alpha_den: u32, inverted_repeats: bool) -> ModelSpec {
    ModelSpec {
        order,
        alpha_den,
        inverted_repeats,
    }
}

/// The default mixture, chosen by measurement on the Klebsiella genome (docs/SEQUENCES.md).
pub const DEFAULT_MODELS: [ModelSpec; 7] = [
    spec(2, 1, false),
    spec(4, 1, false),
    spec(8, 1, false),
    spec(11, 2, true),
    spec(12, 16, true),
    spec(16, 16, true),
    spec(20, 16, true),
];

/// Adds one to the nibble count of symbol `s`, halving all four first when it would overflow.
#[inline]
fn count_up(counts: u16, s: u32) -> u16 {
    let shift = 4 * s;
    let c = if (counts >> shift) & 15 == 15 {
        (counts >> 1) & 0x7777
    } else {
        counts
    };
    c + (1 << shift)
}

#[inline]
fn nibble(counts: u16, s: u32) -> u32 {
    ((counts >> (4 * s)) & 15) as u32
}

/// 12-bit probability of `num / den` (both positive), kept away from 0 and 1.
#[inline]
fn ratio12(num: u32, den: u32) -> i32 {
    (((num as u64) << 12) / den as u64).clamp(1, (PROB_ONE - 1) as u64) as i32
}

struct CountModel {
    spec: ModelSpec,
    table: Vec<u16>,
    mask: u64,
    hash_shift: u32,
    /// Index of the current context's counts.
    index: usize,
    counts: u16,
    /// The reverse-complement context (see `update`).
    ir_context: u64,
}

impl CountModel {
    fn new(spec: ModelSpec) -> Self {
        let mask = if spec.order >= 32 {
            u64::MAX
        } else {
            (1u64 << (2 * spec.order)) - 1
        };
        let (len, hash_shift) = if spec.order <= DIRECT_MAX_ORDER {
            (1usize << (2 * spec.order), 0)
        } else {
            (1usize << HASH_BITS, 64 - HASH_BITS)
        };
        CountModel {
            spec,
            table: vec![0; len],
            mask,
            hash_shift,
            index: 0,
            counts: 0,
            ir_context: 0,
        }
    }

    #[inline]
    fn slot(&self, context: u64) -> usize {
        let c = context & self.mask;
        if self.hash_shift == 0 {
            c as usize
        } else {
            ((c.wrapping_add(self.spec.order as u64)).wrapping_mul(0x9E37_79B9_7F4A_7C15)
                >> self.hash_shift) as usize
        }
    }

    #[inline]
    fn look_up(&mut self, history: u64) {
        self.index = self.slot(history);
        self.counts = self.table[self.index];
    }

    /// P(first bit = 1) = P(G or T).
    #[inline]
    fn p_high(&self) -> i32 {
        let d = self.spec.alpha_den;
        let c = self.counts;
        let hi = nibble(c, 2) + nibble(c, 3);
        let n = hi + nibble(c, 0) + nibble(c, 1);
        ratio12(d * hi + 2, d * n + 4)
    }

    /// P(second bit = 1 | first bit).
    #[inline]
    fn p_low(&self, high: u32) -> i32 {
        let d = self.spec.alpha_den;
        let one = nibble(self.counts, 2 * high + 1);
        let n = one + nibble(self.counts, 2 * high);
        ratio12(d * one + 1, d * n + 2)
    }

    /// Total count of the current context, bucketed 0 / 1-2 / 3+ (mixer selector).
    #[inline]
    fn confidence(&self) -> usize {
        let c = self.counts;
        match nibble(c, 0) + nibble(c, 1) + nibble(c, 2) + nibble(c, 3) {
            0 => 0,
            1..=2 => 1,
            _ => 2,
        }
    }

    /// Counts symbol `s` in the current context and, for inverted repeats, the complement of the
    /// base k positions back in the reverse-complement context. `seen` = bases before `s`.
    #[inline]
    fn update(&mut self, s: u32, seen: u64) {
        self.table[self.index] = count_up(self.counts, s);
        if self.spec.inverted_repeats {
            let k = self.spec.order as u64;
            let old = self.ir_context;
            // Context (most recent next to the symbol): comp(x_t) .. comp(x_{t-k+1}); symbol:
            // comp(x_{t-k}), which is the lowest base of the previous reverse-complement context.
            self.ir_context = (old >> 2) | (((3 - s) as u64) << (2 * (k - 1)));
            if seen >= k {
                let slot = self.slot(self.ir_context);
                self.table[slot] = count_up(self.table[slot], (old & 3) as u32);
            }
        }
    }
}

/// The longest recent exact repeat: predicts that the base after the match follows again.
struct RepeatModel {
    /// Position after the last occurrence of each hashed 24-mer.
    last: Vec<u32>,
    /// Where the current match continues in the history (0 = none).
    pointer: usize,
    length: u32,
    probs: BitProbs,
    predicted: u32,
}

const REPEAT_ORDER: u32 = 24;
const REPEAT_HASH_BITS: u32 = 22;

impl RepeatModel {
    fn new() -> Self {
        RepeatModel {
            last: vec![0; 1 << REPEAT_HASH_BITS],
            pointer: 0,
            length: 0,
            probs: BitProbs::new(64 * 2, 1023),
            predicted: 0,
        }
    }

    fn slot(history: u64) -> usize {
        let c = history & ((1u64 << (2 * REPEAT_ORDER)) - 1);
        (c.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - REPEAT_HASH_BITS)) as usize
    }

    /// Prepares the prediction for the base at `bases.len()`.
    fn predict(&mut self, bases: &[u8]) {
        if self.length > 0 {
            self.predicted = bases[self.pointer] as u32;
        }
    }

    fn bucket(&self) -> usize {
        (self.length.min(31) as usize) * 2
    }

    /// Stretched input for the first bit (0 when there is no match).
    fn input_high(&self, stretch: &Stretch) -> (i32, usize) {
        if self.length == 0 {
            return (0, 0);
        }
        let i = self.bucket();
        let p = self.probs.p(i);
        let s = stretch.of(p);
        (if self.predicted >> 1 == 1 { s } else { -s }, i)
    }

    fn input_low(&self, stretch: &Stretch, high: u32) -> (i32, usize) {
        if self.length == 0 || self.predicted >> 1 != high {
            return (0, usize::MAX);
        }
        let i = self.bucket() + 1;
        let p = self.probs.p(i);
        let s = stretch.of(p);
        (if self.predicted & 1 == 1 { s } else { -s }, i)
    }

    /// `n` bases are known, the last one `s`; `history` is their 2-bit packed suffix.
    fn update(&mut self, n: usize, history: u64, slots: (usize, usize), s: u32) {
        if self.length > 0 {
            let hit_high = (self.predicted >> 1 == s >> 1) as u32;
            self.probs.update(slots.0, hit_high);
            if slots.1 != usize::MAX {
                self.probs
                    .update(slots.1, (self.predicted & 1 == s & 1) as u32);
            }
            if self.predicted == s {
                self.length += 1;
                self.pointer += 1;
            } else {
                self.length = 0;
            }
        }
        if n as u64 >= REPEAT_ORDER as u64 {
            let slot = Self::slot(history);
            if self.length == 0 {
                let candidate = self.last[slot] as usize;
                if candidate > 0 {
                    self.pointer = candidate;
                    self.length = 1;
                }
            }
            self.last[slot] = n as u32;
        }
    }
}

/// What the nucleotide coder measured while coding (for the report).
#[derive(Clone, Debug, Default)]
pub struct NucleotideTrace {
    /// (base index, normalised mixer weight per input) at regular intervals.
    pub weights: Vec<(u64, Vec<f32>)>,
    /// Names of the mixer inputs, in order.
    pub inputs: Vec<String>,
}

/// The mixture coder for a stream of bases 0..3.
pub struct NucleotideCoder {
    models: Vec<CountModel>,
    repeat: RepeatModel,
    mixer: Mixer,
    apm: Apm,
    stretch: Stretch,
    history: u64,
    seen: u64,
}

/// Weight sets: node (3) x confidence of the two highest orders (3 x 3).
const NUCLEOTIDE_MIXER_CONTEXTS: usize = 3 * 9;

impl NucleotideCoder {
    pub fn new(specs: &[ModelSpec]) -> Result<Self> {
        if specs.is_empty() || specs.len() > 16 {
            return Err(Error::option("a nucleotide mixture needs 1 to 16 models"));
        }
        for s in specs {
            if s.order == 0 || s.order > MAX_ORDER || s.alpha_den == 0 || s.alpha_den > 1024 {
                return Err(Error::option(format!(
                    "model order {} / alpha 1/{}: orders are 1..={MAX_ORDER}, alpha 1/1..1/1024",
                    s.order, s.alpha_den
                )));
            }
        }
        let inputs = specs.len() + 2;
        Ok(NucleotideCoder {
            models: specs.iter().map(|&s| CountModel::new(s)).collect(),
            repeat: RepeatModel::new(),
            mixer: Mixer::new(inputs, NUCLEOTIDE_MIXER_CONTEXTS, 2),
            apm: Apm::new(3 * 1024, 7),
            stretch: Stretch::default(),
            history: 0,
            seen: 0,
        })
    }

    pub fn input_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .models
            .iter()
            .map(|m| {
                format!(
                    "order {} (alpha 1/{}{})",
                    m.spec.order,
                    m.spec.alpha_den,
                    if m.spec.inverted_repeats { ", IR" } else { "" }
                )
            })
            .collect();
        names.push("repeat".into());
        names.push("bias".into());
        names
    }

    fn selector(&self, node: usize) -> usize {
        let n = self.models.len();
        let top = self.models[n - 1].confidence();
        let second = if n >= 2 {
            self.models[n - 2].confidence()
        } else {
            0
        };
        node * 9 + top * 3 + second
    }

    /// Codes one base (0..3); `bases` holds every base before it (the repeat model reads them).
    #[inline]
    pub fn code<C: BitCoder>(&mut self, coder: &mut C, bases: &[u8], base: u32) -> u32 {
        for m in &mut self.models {
            m.look_up(self.history);
        }
        self.repeat.predict(bases);
        let apm_context = (self.history & 0xff) as usize * 4;
        // First decision: A/C (0) or G/T (1).
        for m in &self.models {
            self.mixer.add(self.stretch.of(m.p_high()));
        }
        let (r, slot_high) = self.repeat.input_high(&self.stretch);
        self.mixer.add(r);
        self.mixer.add(256);
        let p = self.mixer.mix(self.selector(0));
        let p = (p + 3 * self.apm.refine(&self.stretch, p, apm_context)) / 4;
        let high = coder.code(base >> 1, p);
        self.mixer.update(high);
        self.apm.update(high);
        // Second decision, given the first.
        for m in &self.models {
            self.mixer.add(self.stretch.of(m.p_low(high)));
        }
        let (r, slot_low) = self.repeat.input_low(&self.stretch, high);
        self.mixer.add(r);
        self.mixer.add(256);
        let p = self.mixer.mix(self.selector(1 + high as usize));
        let p = (p + 3 * self
            .apm
            .refine(&self.stretch, p, apm_context + 1 + high as usize))
            / 4;
        let low = coder.code(base & 1, p);
        self.mixer.update(low);
        self.apm.update(low);
        let s = high * 2 + low;
        for m in &mut self.models {
            m.update(s, self.seen);
        }
        self.history = (self.history << 2) | s as u64;
        self.seen += 1;
        self.repeat
            .update(bases.len() + 1, self.history, (slot_high, slot_low), s);
        s
    }

    /// The current first-decision weights of the most confident weight set, normalised to sum 1
    /// in absolute value (for the report's plot).
    pub fn weight_snapshot(&self) -> Vec<f32> {
        let w = self.mixer.weights(self.selector(0));
        let total: f64 = w.iter().map(|&x| (x as f64).abs()).sum::<f64>().max(1.0);
        w.iter().map(|&x| (x as f64 / total) as f32).collect()
    }
}

/// How many weight snapshots a trace keeps at most.
pub const TRACE_POINTS: usize = 200;

/// How many bases between progress reports and cancellation checks.
const PROGRESS_CHUNK: usize = 1 << 16;

/// Codes bases (each 0..3) with the mixture. Returns the coded bytes, the trace and, for each
/// base index in `marks` (ascending), the coded bytes written before it (per-record sizes).
pub fn encode_bases(
    bases: &[u8],
    specs: &[ModelSpec],
    marks: &[u64],
    progress: &mut dyn crate::progress::Progress,
) -> Result<(Vec<u8>, NucleotideTrace, Vec<u64>)> {
    let mut model = NucleotideCoder::new(specs)?;
    let mut enc = BitEncoder::default();
    let mut trace = NucleotideTrace {
        inputs: model.input_names(),
        ..Default::default()
    };
    let mut at_marks = Vec::with_capacity(marks.len());
    let mut next_mark = marks.iter().peekable();
    let every = (bases.len() / TRACE_POINTS).max(1);
    for (i, &b) in bases.iter().enumerate() {
        while next_mark.next_if(|&&m| m <= i as u64).is_some() {
            at_marks.push(enc.len() as u64);
        }
        if i % PROGRESS_CHUNK == 0 && i > 0 {
            if progress.cancelled() {
                return Err(Error::Cancelled);
            }
            progress.advance(PROGRESS_CHUNK as u64, "bases");
        }
        model.code(&mut enc, &bases[..i], b as u32);
        if (i + 1) % every == 0 {
            trace
                .weights
                .push(((i + 1) as u64, model.weight_snapshot()));
        }
    }
    let bytes = enc.finish();
    at_marks.extend(next_mark.map(|_| bytes.len() as u64));
    progress.advance((bases.len() % PROGRESS_CHUNK) as u64, "bases");
    Ok((bytes, trace, at_marks))
}

/// Decodes `count` bases; the caller has bounded `count` against the section size.
pub fn decode_bases(bytes: &[u8], count: usize, specs: &[ModelSpec]) -> Result<Vec<u8>> {
    let mut model = NucleotideCoder::new(specs)
        .map_err(|e| Error::corrupt(format!("the stored model list is invalid: {e}")))?;
    let mut dec = BitDecoder::new(bytes);
    let mut bases = Vec::with_capacity(count);
    for _ in 0..count {
        let s = model.code(&mut dec, &bases, 0);
        bases.push(s as u8);
    }
    if dec.overrun() > 4 {
        return Err(Error::corrupt("the base stream ends early"));
    }
    Ok(bases)
}

/// Byte context orders of the [`ByteCoder`] (plus order 0 and the word context).
const BYTE_ORDERS: [u32; 5] = [1, 2, 3, 4, 6];

/// Context-mixing coder for bytes: order-0 (direct), orders 1-6 (hashed), a word context.
/// Tables grow with the stream up to 2^24 slots of 4 bytes per context order (6 x 64 MiB for a
/// stream of 2 MB or more).
pub struct ByteCoder {
    order0: BitProbs,
    tables: Vec<BitProbs>,
    hashes: Vec<u32>,
    bits: u32,
    mixer: Mixer,
    apm_order1: Apm,
    stretch: Stretch,
    history: u64,
    word: u32,
}

impl ByteCoder {
    /// Tables sized for a stream of `len` bytes (more contexts cannot occur), 2^10 to 2^22 slots.
    pub fn new(len: usize) -> Self {
        let bits = ((len.max(1) * 8).next_power_of_two().trailing_zeros()).clamp(10, 24);
        let n_ctx = BYTE_ORDERS.len() + 1;
        ByteCoder {
            order0: BitProbs::new(256, 255),
            tables: (0..n_ctx).map(|_| BitProbs::new(1 << bits, 255)).collect(),
            hashes: vec![0; n_ctx],
            bits,
            mixer: Mixer::new(n_ctx + 2, 256, 6),
            apm_order1: Apm::new(1 << 16, 7),
            stretch: Stretch::default(),
            history: 0,
            word: 0,
        }
    }

    fn start_byte(&mut self) {
        for (i, &k) in BYTE_ORDERS.iter().enumerate() {
            let ctx = if k >= 8 {
                self.history
            } else {
                self.history & ((1u64 << (8 * k)) - 1)
            };
            let h = (ctx.wrapping_add(k as u64)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            self.hashes[i] = (h >> 32) as u32;
        }
        let w = self.hashes.len() - 1;
        self.hashes[w] = self
            .word
            .wrapping_mul(0x2F0B_3A49)
            .wrapping_add(0x1234_5679);
    }

    /// The first slot of the 16-slot bucket (one 64-byte cache line) holding the 15 bit
    /// contexts of one nibble: a byte costs two cache misses per order instead of eight.
    #[inline]
    fn bucket(&self, hash: u32, partial: u32) -> usize {
        let h = (hash ^ partial.wrapping_mul(0x6F4F_2A35)).wrapping_mul(0x9E37_79B1);
        ((h >> (32 - self.bits)) as usize) & !15
    }

    pub fn code<C: BitCoder>(&mut self, coder: &mut C, byte: u8) -> u8 {
        self.start_byte();
        let mut partial = 1u32;
        let mut buckets = [0usize; BYTE_ORDERS.len() + 1];
        let c1 = (self.history & 0xff) as usize;
        for bit_index in (0..8).rev() {
            if bit_index == 7 || bit_index == 3 {
                for (i, b) in buckets.iter_mut().enumerate() {
                    *b = self.bucket(self.hashes[i], partial);
                }
            }
            // Position of this bit's context inside the nibble: 1, then 2-3, then 4-7, 8-15.
            let node = if bit_index >= 4 {
                partial as usize
            } else {
                (partial as usize & ((1 << (3 - bit_index)) - 1)) | (1 << (3 - bit_index))
            };
            let bit = ((byte >> bit_index) & 1) as u32;
            self.mixer
                .add(self.stretch.of(self.order0.p(partial as usize)));
            for (i, &b) in buckets.iter().enumerate() {
                self.mixer.add(self.stretch.of(self.tables[i].p(b + node)));
            }
            self.mixer.add(256);
            let p = self.mixer.mix(partial as usize);
            let p = (p + 3 * self
                .apm_order1
                .refine(&self.stretch, p, partial as usize | c1 << 8))
                / 4;
            let bit = coder.code(bit, p);
            self.mixer.update(bit);
            self.apm_order1.update(bit);
            self.order0.update(partial as usize, bit);
            for (i, &b) in buckets.iter().enumerate() {
                self.tables[i].update(b + node, bit);
            }
            partial = (partial << 1) | bit;
        }
        let b = (partial & 0xff) as u8;
        self.history = (self.history << 8) | b as u64;
        if b.is_ascii_alphanumeric() {
            self.word = (self.word ^ b.to_ascii_lowercase() as u32).wrapping_mul(0x0100_0193);
        } else {
            self.word = 0;
        }
        b
    }
}

/// Codes a byte stream with a fresh [`ByteCoder`].
pub fn encode_bytes(data: &[u8]) -> Vec<u8> {
    let mut model = ByteCoder::new(data.len());
    let mut enc = BitEncoder::default();
    for &b in data {
        model.code(&mut enc, b);
    }
    enc.finish()
}

/// Decodes `count` bytes; the caller has bounded `count` against the section size.
pub fn decode_bytes(bytes: &[u8], count: usize) -> Result<Vec<u8>> {
    let mut model = ByteCoder::new(count);
    let mut dec = BitDecoder::new(bytes);
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        out.push(model.code(&mut dec, 0));
    }
    if dec.overrun() > 4 {
        return Err(Error::corrupt("a byte stream ends early"));
    }
    Ok(out)
}

/// How a stream's section is coded (the `sequence` codec's parameters in the manifest).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StreamModel {
    /// Bases 0..3, one per element, by the nucleotide mixture with these models.
    Nucleotides { models: Vec<ModelSpec> },
    /// Bytes by the byte context-mixing model.
    Bytes,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamCodec {
    pub model: StreamModel,
}

impl StreamCodec {
    pub fn label(&self) -> String {
        match &self.model {
            StreamModel::Nucleotides { models } => format!(
                "fcm mix k={}",
                models
                    .iter()
                    .map(|m| m.order.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            StreamModel::Bytes => "cm bytes".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    #[test]
    fn nibble_counts_halve_on_overflow() {
        let mut c = 0u16;
        for _ in 0..15 {
            c = count_up(c, 2);
        }
        c = count_up(c, 1);
        assert_eq!((nibble(c, 1), nibble(c, 2)), (1, 15));
        c = count_up(c, 2);
        assert_eq!((nibble(c, 1), nibble(c, 2)), (0, 8));
    }

    #[test]
    fn estimator_matches_the_formula() {
        // counts A=3, C=1, G=0, T=4; alpha = 1/2 (d = 2): P(G or T) = (2*4 + 2)/(2*8 + 4) = 0.5,
        // P(T | G or T) = (2*4 + 1)/(2*4 + 2) = 0.9, P(C | A or C) = (2*1 + 1)/(2*4 + 2) = 0.3.
        let mut m = CountModel::new(spec(1, 2, false));
        m.counts = 3 | (1 << 4) | (4 << 12);
        assert_eq!(m.p_high(), 2048);
        assert_eq!(m.p_low(1), (9 * 4096) / 10);
        assert_eq!(m.p_low(0), (3 * 4096) / 10);
    }

    #[test]
    fn inverted_repeats_count_the_reverse_complement() {
        // Order 2 with IR. After "AC" then "G": forward context AC -> G; reverse complement of
        // ACG is CGT: context CG -> T.
        let mut m = CountModel::new(spec(2, 1, true));
        let mut history = 0u64;
        for (seen, s) in [0u32, 1, 2].into_iter().enumerate() {
            m.look_up(history);
            m.update(s, seen as u64);
            history = (history << 2) | s as u64;
        }
        let ac = m.slot(0b0001);
        assert_eq!(nibble(m.table[ac], 2), 1);
        let cg = m.slot(0b0110);
        assert_eq!(nibble(m.table[cg], 3), 1);
    }

    #[test]
    fn random_bases_cost_about_two_bits_and_round_trip() {
        let mut rng = Rng::new(11);
        let bases: Vec<u8> = (0..20000).map(|_| rng.below(4) as u8).collect();
        let (bytes, _, _) = encode_bases(
            &bases,
            &DEFAULT_MODELS,
            &[],
            &mut crate::progress::NoProgress,
        )
        .unwrap();
        let bps = 8.0 * bytes.len() as f64 / bases.len() as f64;
        assert!(bps > 1.98 && bps < 2.06, "{bps}");
        assert_eq!(
            decode_bases(&bytes, bases.len(), &DEFAULT_MODELS).unwrap(),
            bases
        );
    }

    #[test]
    fn a_repeated_sequence_costs_little_the_second_time() {
        let mut rng = Rng::new(5);
        let unit: Vec<u8> = (0..5000).map(|_| rng.below(4) as u8).collect();
        let mut rc: Vec<u8> = unit.iter().rev().map(|&b| 3 - b).collect();
        let mut twice = unit.clone();
        twice.append(&mut rc);
        let (once, _, _) = encode_bases(
            &unit,
            &DEFAULT_MODELS,
            &[],
            &mut crate::progress::NoProgress,
        )
        .unwrap();
        let (both, _, _) = encode_bases(
            &twice,
            &DEFAULT_MODELS,
            &[],
            &mut crate::progress::NoProgress,
        )
        .unwrap();
        // The reverse complement is predicted by the inverted-repeat models.
        assert!(
            both.len() < once.len() + once.len() / 4,
            "{} vs {}",
            both.len(),
            once.len()
        );
        assert_eq!(
            decode_bases(&both, twice.len(), &DEFAULT_MODELS).unwrap(),
            twice
        );
    }

    #[test]
    fn bytes_round_trip_and_text_compresses() {
        let text = b"the quick brown fox jumps over the lazy dog. ".repeat(50);
        let bytes = encode_bytes(&text);
        assert!(bytes.len() < text.len() / 10);
        assert_eq!(decode_bytes(&bytes, text.len()).unwrap(), text);
        assert_eq!(decode_bytes(&encode_bytes(b""), 0).unwrap(), b"");
    }
}
