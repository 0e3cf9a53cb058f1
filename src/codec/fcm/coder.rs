//! The bit-level machinery every sequence model shares: a binary arithmetic coder, the logistic
//! domain (`stretch`/`squash`), adaptive bit probabilities, a gated logistic mixer and an SSE
//! stage (adaptive probability map).
//!
//! Everything here is integer arithmetic on purpose: the encoder and the decoder must compute
//! bit-identical probabilities natively and on wasm32, and `f64::ln`/`exp` are not guaranteed to
//! round the same way on every platform. Probabilities are 12-bit (`1..=4095` out of 4096) in the
//! models and 16-bit in the coder. The design follows the PAQ/lpaq family of context-mixing
//! coders (Mahoney), which is public and well measured.
//!
//! Not here: what the contexts are (see `fcm.rs` for nucleotides and bytes).

/// Probability scale of the models: `p` in `1..PROB_ONE` means `p / 4096`.
pub const PROB_ONE: i32 = 4096;

/// 4096 / (1 + e^{-d/256}) for `d` in the stretch domain `-2047..=2047`, by interpolation of a
/// 33-point table (lpaq1's `squash`).
pub fn squash(d: i32) -> i32 {
    const T: [i32; 33] = [
        1, 2, 3, 6, 10, 16, 27, 45, 73, 120, 194, 310, 488, 747, 1101, 1546, 2047, 2549, 2994,
        3348, 3607, 3785, 3901, 3975, 4024, 4050, 4068, 4079, 4085, 4089, 4092, 4093, 4094,
    ];
    if d > 2047 {
        return 4095;
    }
    if d < -2047 {
        return 1;
    }
    let w = d & 127;
    let i = ((d >> 7) + 16) as usize;
    (T[i] * (128 - w) + T[i + 1] * w + 64) >> 7
}

/// The inverse of [`squash`]: ln(p / (1 - p)) * 256 for a 12-bit probability, as a table.
pub struct Stretch {
    table: Vec<i16>,
}

impl Default for Stretch {
    fn default() -> Self {
        let mut table = vec![2047i16; PROB_ONE as usize];
        let mut next = 0usize;
        for x in -2047..=2047 {
            let v = squash(x) as usize;
            for entry in table.iter_mut().take(v + 1).skip(next) {
                *entry = x as i16;
            }
            next = next.max(v + 1);
        }
        Stretch { table }
    }
}

impl Stretch {
    #[inline]
    pub fn of(&self, p: i32) -> i32 {
        self.table[p.clamp(0, PROB_ONE - 1) as usize] as i32
    }
}

/// Binary arithmetic encoder (carry-less, 32-bit low/high, as in lpaq1). `p1` is P(bit = 1) in
/// 16 bits (`1..=65535`).
pub struct BitEncoder {
    low: u32,
    high: u32,
    out: Vec<u8>,
}

impl Default for BitEncoder {
    fn default() -> Self {
        BitEncoder {
            low: 0,
            high: u32::MAX,
            out: Vec::new(),
        }
    }
}

#[inline]
fn split(low: u32, high: u32, p1: u32) -> u32 {
    let range = high - low;
    // < range, so that both halves are non-empty intervals of [low, high].
    low + (range >> 16) * p1 + (((range & 0xffff) * p1) >> 16)
}

impl BitEncoder {
    #[inline]
    pub fn encode(&mut self, bit: u32, p1: u32) {
        debug_assert!((1..=65535).contains(&p1));
        let mid = split(self.low, self.high, p1);
        if bit != 0 {
            self.high = mid;
        } else {
            self.low = mid + 1;
        }
        while (self.low ^ self.high) & 0xff00_0000 == 0 {
            self.out.push((self.high >> 24) as u8);
            self.low <<= 8;
            self.high = (self.high << 8) | 0xff;
        }
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.out.len()
    }

    pub fn is_empty(&self) -> bool {
        self.out.is_empty()
    }

    /// Flushes the state (4 bytes of `low`) and returns the coded bytes.
    pub fn finish(mut self) -> Vec<u8> {
        self.out.extend_from_slice(&self.low.to_be_bytes());
        self.out
    }
}

/// The decoder of [`BitEncoder`]. Reading past the end yields zero bytes: a damaged stream decodes
/// to wrong symbols (caught by the section CRC and by the parsers' checks), never to a panic.
pub struct BitDecoder<'a> {
    low: u32,
    high: u32,
    x: u32,
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> BitDecoder<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        let mut d = BitDecoder {
            low: 0,
            high: u32::MAX,
            x: 0,
            bytes,
            pos: 0,
        };
        for _ in 0..4 {
            d.x = (d.x << 8) | d.next_byte();
        }
        d
    }

    #[inline]
    fn next_byte(&mut self) -> u32 {
        let b = self.bytes.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b as u32
    }

    #[inline]
    pub fn decode(&mut self, p1: u32) -> u32 {
        let mid = split(self.low, self.high, p1);
        let bit = (self.x <= mid) as u32;
        if bit != 0 {
            self.high = mid;
        } else {
            self.low = mid + 1;
        }
        while (self.low ^ self.high) & 0xff00_0000 == 0 {
            self.low <<= 8;
            self.high = (self.high << 8) | 0xff;
            self.x = (self.x << 8) | self.next_byte();
        }
        bit
    }

    /// Bytes consumed beyond the end of the stream (an honest stream needs none: `finish` wrote them).
    pub fn overrun(&self) -> usize {
        self.pos.saturating_sub(self.bytes.len())
    }
}

/// The coder seen from a model: the same code path encodes and decodes, so that the two sides
/// cannot drift apart. `code(bit, p1)` returns the bit (the given one when encoding, the decoded
/// one when decoding).
pub trait BitCoder {
    fn code(&mut self, bit: u32, p12: i32) -> u32;
}

/// 12-bit model probability to the coder's 16 bits.
#[inline]
fn to_p16(p12: i32) -> u32 {
    ((p12.clamp(1, PROB_ONE - 1) as u32) << 4).clamp(1, 65535)
}

impl BitCoder for BitEncoder {
    #[inline]
    fn code(&mut self, bit: u32, p12: i32) -> u32 {
        self.encode(bit, to_p16(p12));
        bit
    }
}

impl BitCoder for BitDecoder<'_> {
    #[inline]
    fn code(&mut self, _bit: u32, p12: i32) -> u32 {
        self.decode(to_p16(p12))
    }
}

/// 65536 / (n + 1.5): the adaptation rate of a bit probability seen `n` times.
const fn reciprocals() -> [u32; 1024] {
    let mut t = [0u32; 1024];
    let mut n = 0;
    while n < 1024 {
        t[n] = 131072 / (2 * n as u32 + 3);
        n += 1;
    }
    t
}
const RECIPROCAL: [u32; 1024] = reciprocals();

/// A table of adaptive bit probabilities. Each slot packs a 22-bit probability and a 10-bit count;
/// the rate is 1/(count + 1.5) until the count reaches `limit`, so a fresh context learns fast and
/// an old one stays stable (lpaq's StateMap, without the bit-history states).
pub struct BitProbs {
    slots: Vec<u32>,
    limit: u32,
}

impl BitProbs {
    pub fn new(len: usize, limit: u32) -> Self {
        BitProbs {
            slots: vec![1u32 << 31; len],
            limit: limit.min(1023),
        }
    }

    #[inline]
    pub fn p(&self, i: usize) -> i32 {
        (self.slots[i] >> 20) as i32
    }

    #[inline]
    pub fn update(&mut self, i: usize, bit: u32) {
        let t = self.slots[i];
        let n = t & 1023;
        let p = (t >> 10) as i64;
        let target = (bit as i64) << 22;
        let p = p + (((target - p) * RECIPROCAL[n as usize] as i64) >> 16);
        let n = if n < self.limit { n + 1 } else { n };
        self.slots[i] = ((p as u32) << 10) | n;
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
}

/// A gated logistic mixer: p = squash(sum_i w_i * stretch(p_i)), with one weight vector per
/// selector context, trained online to minimise coding cost (gradient step on the weights).
pub struct Mixer {
    inputs: Vec<i32>,
    weights: Vec<i32>,
    n: usize,
    selected: usize,
    pr: i32,
    learning_rate: i32,
}

impl Mixer {
    /// `n` inputs per prediction, `contexts` weight sets; weights start at `1/n` each (16.16).
    pub fn new(n: usize, contexts: usize, learning_rate: i32) -> Self {
        Mixer {
            inputs: Vec::with_capacity(n),
            weights: vec![(65536 / n.max(1)) as i32; n * contexts],
            n,
            selected: 0,
            pr: PROB_ONE / 2,
            learning_rate,
        }
    }

    #[inline]
    pub fn add(&mut self, stretched: i32) {
        debug_assert!(self.inputs.len() < self.n);
        self.inputs.push(stretched);
    }

    /// The mixed 12-bit probability, with weight set `context`.
    #[inline]
    pub fn mix(&mut self, context: usize) -> i32 {
        debug_assert_eq!(self.inputs.len(), self.n);
        self.selected = context * self.n;
        let w = &self.weights[self.selected..self.selected + self.n];
        let dot: i64 = self
            .inputs
            .iter()
            .zip(w)
            .map(|(&x, &w)| x as i64 * w as i64)
            .sum();
        self.pr = squash((dot >> 16).clamp(-2047, 2047) as i32);
        self.pr
    }

    /// Learns from the coded bit and clears the inputs for the next prediction.
    #[inline]
    pub fn update(&mut self, bit: u32) {
        let err = (((bit as i32) << 12) - self.pr) * self.learning_rate;
        let w = &mut self.weights[self.selected..self.selected + self.n];
        for (w, &x) in w.iter_mut().zip(&self.inputs) {
            *w += (x * err) >> 10;
        }
        self.inputs.clear();
    }

    /// The current weights of context `context` (16.16 fixed point), for the report.
    pub fn weights(&self, context: usize) -> &[i32] {
        &self.weights[context * self.n..(context + 1) * self.n]
    }
}

/// Secondary estimation (an adaptive probability map): refines a probability given a small
/// context, by interpolating between 33 learned points along the stretch axis.
pub struct Apm {
    table: Vec<u16>,
    index: usize,
    rate: u32,
}

impl Apm {
    pub fn new(contexts: usize, rate: u32) -> Self {
        let mut table = Vec::with_capacity(contexts * 33);
        for _ in 0..contexts {
            for j in 0..33 {
                table.push((squash((j - 16) * 128) * 16) as u16);
            }
        }
        Apm {
            table,
            index: 0,
            rate,
        }
    }

    #[inline]
    pub fn refine(&mut self, stretch: &Stretch, pr: i32, context: usize) -> i32 {
        let s = stretch.of(pr) + 2048;
        let lo = (s >> 7) as usize;
        let w = s & 127;
        let base = context * 33 + lo;
        self.index = base + (w >> 6) as usize;
        let p = (self.table[base] as i32 * (128 - w) + self.table[base + 1] as i32 * w) >> 11;
        p.clamp(1, PROB_ONE - 1)
    }

    #[inline]
    pub fn update(&mut self, bit: u32) {
        let target = if bit != 0 { 65535i32 } else { 0 };
        let t = &mut self.table[self.index];
        *t = (*t as i32 + ((target - *t as i32) >> self.rate)) as u16;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn squash_and_stretch_are_inverse_and_monotone() {
        let s = Stretch::default();
        assert_eq!(squash(0), 2047);
        assert_eq!(squash(-3000), 1);
        assert_eq!(squash(3000), 4095);
        for d in -2047..2047 {
            assert!(squash(d) <= squash(d + 1));
        }
        for p in [1, 100, 1000, 2048, 3000, 4000, 4095] {
            let back = squash(s.of(p));
            assert!((back - p).abs() <= p / 50 + 2, "p {p} -> {back}");
        }
    }

    #[test]
    fn coder_round_trips_skewed_and_even_bits() {
        let mut rng = crate::rng::Rng::new(7);
        let bits: Vec<(u32, i32)> = (0..20000)
            .map(|i| {
                let p = [1, 17, 2048, 4000, 4095][i % 5];
                ((rng.next_u64() % 4096 < p as u64) as u32, p)
            })
            .collect();
        let mut enc = BitEncoder::default();
        for &(b, p) in &bits {
            enc.code(b, p);
        }
        let bytes = enc.finish();
        let mut dec = BitDecoder::new(&bytes);
        for &(b, p) in &bits {
            assert_eq!(dec.code(0, p), b);
        }
        assert_eq!(dec.overrun(), 0);
    }

    #[test]
    fn coder_cost_is_near_the_entropy() {
        // 100k bits with P(1) = 1/16 cost about 100k * H(1/16) = 33729 bits.
        let mut rng = crate::rng::Rng::new(3);
        let mut enc = BitEncoder::default();
        let mut ones = 0;
        for _ in 0..100_000 {
            let b = rng.next_u64().is_multiple_of(16) as u32;
            ones += b;
            enc.code(b, 256);
        }
        let bits = 8.0 * enc.finish().len() as f64;
        let p: f64 = 1.0 / 16.0;
        let ideal = -(ones as f64) * p.log2() - (100_000 - ones) as f64 * (1.0 - p).log2();
        assert!(
            (bits - ideal).abs() < 0.003 * ideal + 64.0,
            "{bits} vs {ideal}"
        );
    }

    #[test]
    fn bit_probability_follows_the_frequency() {
        let mut t = BitProbs::new(1, 255);
        for i in 0..1000 {
            t.update(0, (i % 4 == 0) as u32);
        }
        let p = t.p(0);
        assert!((p - 1024).abs() < 80, "{p}");
    }

    #[test]
    fn mixer_learns_to_trust_the_informative_input() {
        let s = Stretch::default();
        let mut m = Mixer::new(2, 1, 6);
        let mut rng = crate::rng::Rng::new(1);
        for _ in 0..5000 {
            let bit = !rng.next_u64().is_multiple_of(10) as u32;
            m.add(s.of(3686)); // says 0.9, right
            m.add(s.of(410)); // says 0.1, wrong
            m.mix(0);
            m.update(bit);
        }
        let w = m.weights(0);
        assert!(w[0] > w[1], "{w:?}");
    }
}
