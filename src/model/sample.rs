//! Choosing the next token from a decoder's logits: greedy (temperature 0) or sampled from the
//! softmax at a temperature, optionally among the `top_k` most likely tokens, with lowbit's seeded
//! generator (the same seed gives the same text).

use crate::rng::Rng;

pub struct Sampler {
    /// 0 picks the most likely token (the lowest id among equals).
    pub temperature: f32,
    /// Sample among the `top_k` most likely tokens only (0: all).
    pub top_k: usize,
    rng: Rng,
}

impl Sampler {
    pub fn greedy() -> Sampler {
        Sampler::new(0.0, 0, 0)
    }

    pub fn new(temperature: f32, top_k: usize, seed: u64) -> Sampler {
        Sampler {
            temperature: temperature.max(0.0),
            top_k,
            rng: Rng::for_stream(seed, "model.sample"),
        }
    }

    pub fn pick(&mut self, logits: &[f32]) -> u32 {
        if self.temperature == 0.0 || !self.temperature.is_finite() {
            return argmax(logits) as u32;
        }
        let mut order: Vec<usize> = (0..logits.len()).collect();
        if self.top_k > 0 && self.top_k < logits.len() {
            order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
            order.truncate(self.top_k);
        }
        let max = order
            .iter()
            .map(|&i| logits[i])
            .fold(f32::NEG_INFINITY, f32::max);
        let weights: Vec<f64> = order
            .iter()
            .map(|&i| (((logits[i] - max) / self.temperature) as f64).exp())
            .collect();
        let mut u = self.rng.uniform() * weights.iter().sum::<f64>();
        for (&i, w) in order.iter().zip(&weights) {
            if u < *w {
                return i as u32;
            }
            u -= w;
        }
        *order.last().expect("a non-empty vocabulary") as u32
    }
}

/// The index of the largest value (the first among equals).
pub fn argmax(x: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in x.iter().enumerate() {
        if v > x[best] {
            best = i;
        }
    }
    best
}
