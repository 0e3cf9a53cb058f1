//! Calibration: what the inputs of a model's linear layers look like on real text, so that the
//! compressor can weigh a weight's error by what it does to the layer's output.
//!
//! For a linear layer `y = W x`, an error `E = W - W^` changes the output by `E x`; its expected
//! square over the inputs is `sum_ij E_ij^2 E[x_j^2]` plus cross terms `E[x_j x_k]`. The cross
//! terms are dropped (the *diagonal* statistics): what is kept per weight is the input second
//! moment `d_j = E[x_j^2]` of each input channel `j`, averaged over every token the model saw.
//! Layers that read the same input share it: q/k/v (the attention's normalised input), gate/up
//! (the MLP's), and the output projection (`lm_head`, or the token embedding when tied: its
//! statistics are those of the final-norm states, its role as the output layer).
//!
//! [`collect`] runs the original model over a text: a decoder over windows of up to `context`
//! tokens (each from an empty cache, as [`super::eval`] does), at most `tokens` in all; an encoder
//! over the text's sentences (its lines, chosen as [`super::eval::sentences_of`] does). The
//! [`Observer`] hook is how the forward passes show their inputs; without one they do no extra
//! work beyond an `Option` check per layer.

use std::collections::BTreeMap;

use super::eval::sentences_of;
use super::Model;
use crate::error::{Error, Result};

/// Shown the input of linear layers during a forward pass.
pub trait Observer {
    /// `x` (`n` rows, row-major) is the input of each linear layer whose weight is named in
    /// `weights`.
    fn observe(&mut self, weights: &[&str], x: &[f32], n: usize);
}

/// A shorter-lived copy of an optional observer, to hand to one layer of a forward pass.
pub fn reborrow<'a>(observer: &'a mut Option<&mut dyn Observer>) -> Option<&'a mut dyn Observer> {
    match observer {
        Some(o) => Some(&mut **o),
        None => None,
    }
}

/// How much text calibration reads.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CalibrationOptions {
    /// Decoders: at most this many tokens of the text (from its start).
    pub tokens: usize,
    /// Decoders: the window length.
    pub context: usize,
    /// Encoders: at most this many sentences.
    pub sentences: usize,
}

impl Default for CalibrationOptions {
    fn default() -> CalibrationOptions {
        CalibrationOptions {
            tokens: 2048,
            context: 256,
            sentences: 256,
        }
    }
}

/// Per linear weight (by its name in the checkpoint), the mean square of each input channel over
/// the calibration tokens: `d_j = E[x_j^2]`, one value per column of the weight.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ActivationStats {
    /// Where the statistics came from (a file name, or "built-in text"), for the report.
    pub source: String,
    /// Tokens the model ran over.
    pub tokens: usize,
    /// Weight name -> `d_j` for each input channel `j`.
    pub tensors: BTreeMap<String, Vec<f32>>,
}

impl ActivationStats {
    /// The column statistics of weight `name` when it is a matrix with `cols` columns and they
    /// were collected (`None` otherwise, or when they are all zero or not finite).
    pub fn columns_for(&self, name: &str, shape: &[usize]) -> Option<&[f32]> {
        let d = self.tensors.get(name)?;
        let cols = *shape.last()?;
        let ok = shape.len() == 2
            && d.len() == cols
            && d.iter().all(|v| v.is_finite() && *v >= 0.0)
            && d.iter().any(|v| *v > 0.0);
        ok.then_some(d.as_slice())
    }

    /// The mean of `d_j` over the columns of weight `name` (the mean input energy per channel).
    pub fn mean_for(&self, name: &str) -> Option<f64> {
        let d = self.tensors.get(name)?;
        Some(d.iter().map(|&v| v as f64).sum::<f64>() / d.len().max(1) as f64)
    }
}

/// Sums of squares per input channel, per shared input (keyed by its first weight's name), and
/// which weights read each input.
#[derive(Default)]
struct Accumulator {
    sums: BTreeMap<String, (Vec<f64>, usize)>,
    readers: BTreeMap<String, Vec<String>>,
}

impl Observer for Accumulator {
    fn observe(&mut self, weights: &[&str], x: &[f32], n: usize) {
        let Some(first) = weights.first() else {
            return;
        };
        if n == 0 || !x.len().is_multiple_of(n) {
            return;
        }
        let dim = x.len() / n;
        let (sum, count) = self
            .sums
            .entry(first.to_string())
            .or_insert_with(|| (vec![0.0; dim], 0));
        if sum.len() != dim {
            return;
        }
        for row in x.chunks_exact(dim) {
            sum.iter_mut()
                .zip(row)
                .for_each(|(s, &v)| *s += v as f64 * v as f64);
        }
        *count += n;
        self.readers
            .entry(first.to_string())
            .or_insert_with(|| weights.iter().map(|w| w.to_string()).collect());
    }
}

impl Accumulator {
    fn finish(self, source: &str, tokens: usize) -> ActivationStats {
        let mut tensors = BTreeMap::new();
        for (key, (sum, count)) in self.sums {
            let mean: Vec<f32> = sum
                .iter()
                .map(|s| (s / count.max(1) as f64) as f32)
                .collect();
            for w in self.readers.get(&key).into_iter().flatten() {
                tensors.insert(w.clone(), mean.clone());
            }
        }
        ActivationStats {
            source: source.to_string(),
            tokens,
            tensors,
        }
    }
}

/// Runs `model` over `text` and returns the input statistics of each of its linear weights
/// (`source`: where the text came from, kept for the report).
pub fn collect(
    model: &Model,
    text: &str,
    options: &CalibrationOptions,
    source: &str,
) -> Result<ActivationStats> {
    let mut acc = Accumulator::default();
    let mut tokens = 0;
    match model {
        Model::Decoder(m) => {
            if options.context < 1 {
                return Err(Error::option(
                    "the calibration window must hold at least 1 token",
                ));
            }
            let mut ids = m.tokenizer.encode(text)?;
            ids.truncate(options.tokens);
            let context = options.context.min(m.config.max_positions);
            for window in ids.chunks(context) {
                m.forward_observed(window, &mut m.new_cache(), Some(&mut acc))?;
                tokens += window.len();
            }
        }
        Model::Encoder(m) => {
            for sentence in sentences_of(text, options.sentences) {
                let mut ids = m.tokenizer.encode(&sentence)?;
                ids.truncate(m.config.max_positions);
                if ids.is_empty() {
                    continue;
                }
                m.hidden_states_observed(&ids, Some(&mut acc))?;
                tokens += ids.len();
            }
        }
    }
    if tokens == 0 {
        return Err(Error::invalid(
            "the calibration text gave no tokens to run the model on (an encoder needs lines of \
             20 to 200 characters)",
        ));
    }
    Ok(acc.finish(source, tokens))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_inputs_share_statistics() {
        let mut acc = Accumulator::default();
        acc.observe(&["q", "k"], &[1.0, 2.0, 3.0, 4.0], 2);
        acc.observe(&["o"], &[2.0, 0.0], 1);
        let stats = acc.finish("t", 2);
        assert_eq!(stats.tensors["q"], vec![5.0, 10.0]);
        assert_eq!(stats.tensors["k"], stats.tensors["q"]);
        assert_eq!(stats.tensors["o"], vec![4.0, 0.0]);
        assert_eq!(stats.columns_for("q", &[3, 2]), Some(&[5.0f32, 10.0][..]));
        assert_eq!(stats.columns_for("q", &[2, 3]), None);
        assert_eq!(stats.mean_for("o"), Some(2.0));
    }
}
