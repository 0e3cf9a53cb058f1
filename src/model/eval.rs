//! Downstream quality of a compressed model against its original, on the same text: what the
//! compression did to what the model is *for*, not only to its weights.
//!
//! - Decoders: the first `tokens` tokens of the text are cut into windows of `context` tokens (a
//!   last window shorter than 2 tokens is dropped), each run from an empty cache with no BOS added.
//!   Inside a window position `t` predicts token `t + 1`, so `tokens - windows` positions are
//!   scored. Over them: perplexity of each model (`exp` of the mean cross-entropy of the true next
//!   token), the mean KL divergence `KL(p_original || p_compressed)` of the full next-token
//!   distributions (natural log), and top-1 agreement (the share of positions where both models'
//!   most likely token is the same).
//! - Encoders: the sentences are the text's lines, trimmed, of 20 to 200 characters, the lines
//!   `%` left out (fortune files separate entries so), the first `sentences` of them. Over them:
//!   the mean and smallest cosine between each sentence's original and compressed embedding, and
//!   nearest-neighbour agreement (the share of sentences whose most similar *other* sentence is the
//!   same under both models).

use serde::{Deserialize, Serialize};

use super::device::{Decoder, Encoder};
use super::llama::Llama;
use super::ops;
use super::sample::argmax;
use super::Model;
use crate::backend::Backend;
use crate::error::{Error, Result};

/// A short English text of the project's own, the default when no text is given.
pub const BUILTIN_TEXT: &str = include_str!("builtin_text.txt");

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EvalOptions {
    /// Decoders: how many tokens of the text to score (from its start).
    pub tokens: usize,
    /// Decoders: the window length.
    pub context: usize,
    /// Encoders: how many sentences to embed.
    pub sentences: usize,
}

impl Default for EvalOptions {
    fn default() -> EvalOptions {
        EvalOptions {
            tokens: 4096,
            context: 256,
            sentences: 256,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DecoderEval {
    /// Tokens of the text used.
    pub tokens: usize,
    pub windows: usize,
    pub context: usize,
    /// Positions scored (`tokens - windows`).
    pub scored: usize,
    pub perplexity_original: f64,
    pub perplexity_compressed: f64,
    /// Mean `KL(p_original || p_compressed)` in nats.
    pub kl_mean: f64,
    pub top1_agreement: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EncoderEval {
    pub sentences: usize,
    pub cosine_mean: f64,
    pub cosine_min: f64,
    pub neighbour_agreement: f64,
}

/// What the compressed model does next to the original, by family.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "family", rename_all = "lowercase")]
pub enum Downstream {
    Encoder(EncoderEval),
    Decoder(DecoderEval),
}

impl std::fmt::Display for Downstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Downstream::Encoder(e) => write!(
                f,
                "sentences={} cos_mean={:.5} cos_min={:.5} nn_agreement={:.3}",
                e.sentences, e.cosine_mean, e.cosine_min, e.neighbour_agreement
            ),
            Downstream::Decoder(d) => write!(
                f,
                "tokens={} scored={} ppl_original={:.4} ppl_compressed={:.4} kl_mean={:.5} top1_agree={:.4}",
                d.tokens,
                d.scored,
                d.perplexity_original,
                d.perplexity_compressed,
                d.kl_mean,
                d.top1_agreement
            ),
        }
    }
}

/// Compares `compressed` with `original` (the same architecture) on `text`.
pub fn compare(
    original: &Model,
    compressed: &Model,
    text: &str,
    options: &EvalOptions,
) -> Result<Downstream> {
    match (original, compressed) {
        (Model::Decoder(a), Model::Decoder(b)) => compare_decoders(a, b, text, options),
        (Model::Encoder(a), Model::Encoder(b)) => {
            let sentences = sentences_of(text, options.sentences);
            if sentences.len() < 2 {
                return Err(Error::invalid(
                    "the text has fewer than 2 lines of 20 to 200 characters to embed",
                ));
            }
            let before = a.embed_sentences(&sentences)?;
            let after = b.embed_sentences(&sentences)?;
            Ok(Downstream::Encoder(compare_embeddings(&before, &after)))
        }
        _ => Err(Error::invalid(
            "the two models are not of the same family (one encoder, one decoder)",
        )),
    }
}

/// The sentences an encoder is judged on (see the module documentation).
pub fn sentences_of(text: &str, n: usize) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| *l != "%" && (20..=200).contains(&l.chars().count()))
        .take(n)
        .map(str::to_string)
        .collect()
}

/// The cosine between two vectors (sums in f64).
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb).max(1e-300)
}

fn nearest_other(emb: &[Vec<f32>], i: usize) -> usize {
    let mut best = (f64::NEG_INFINITY, usize::MAX);
    for (j, e) in emb.iter().enumerate() {
        let c = cosine(&emb[i], e);
        if j != i && c > best.0 {
            best = (c, j);
        }
    }
    best.1
}

pub fn compare_embeddings(before: &[Vec<f32>], after: &[Vec<f32>]) -> EncoderEval {
    let cos: Vec<f64> = before
        .iter()
        .zip(after)
        .map(|(a, b)| cosine(a, b))
        .collect();
    let n = cos.len();
    let agree = (0..n)
        .filter(|&i| nearest_other(before, i) == nearest_other(after, i))
        .count();
    EncoderEval {
        sentences: n,
        cosine_mean: cos.iter().sum::<f64>() / n as f64,
        cosine_min: cos.iter().copied().fold(f64::INFINITY, f64::min),
        neighbour_agreement: agree as f64 / n as f64,
    }
}

/// `KL(p_a || p_b)` in nats of the distributions with logits `a` and `b`, whose log-sum-exps
/// are `za` and `zb` ([`ops::log_sum_exp`]).
pub fn kl_divergence(a: &[f32], za: f64, b: &[f32], zb: f64) -> f64 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| {
            let la = x as f64 - za;
            la.exp() * (la - (y as f64 - zb))
        })
        .sum()
}

/// Per scored position: cross-entropy under each model, KL, and whether the top tokens agree.
struct Position {
    ce_a: f64,
    ce_b: f64,
    kl: f64,
    agree: bool,
}

/// The token windows two decoders are compared on, and the window length.
fn decoder_windows(a: &Llama, b: &Llama, text: &str, o: &EvalOptions) -> Result<(Vec<u32>, usize)> {
    if a.config.vocab_size != b.config.vocab_size {
        return Err(Error::invalid(
            "the two decoders have different vocabularies",
        ));
    }
    if o.context < 2 {
        return Err(Error::option(
            "the evaluation window must hold at least 2 tokens",
        ));
    }
    let mut ids = a.tokenizer.encode(text)?;
    ids.truncate(o.tokens);
    let context = o
        .context
        .min(a.config.max_positions)
        .min(b.config.max_positions);
    if ids.chunks(context).all(|w| w.len() < 2) {
        return Err(Error::invalid("the text has fewer than 2 tokens"));
    }
    Ok((ids, context))
}

/// The scored positions of one window `w` from both models' logits (`w.len() x vocab` each).
fn score_window(la: &[f32], lb: &[f32], w: &[u32], vocab: usize) -> Vec<Position> {
    ops::par_map(w.len() - 1, |t| {
        let (pa, pb) = (&la[t * vocab..][..vocab], &lb[t * vocab..][..vocab]);
        let (za, zb) = (ops::log_sum_exp(pa), ops::log_sum_exp(pb));
        let target = w[t + 1] as usize;
        let kl = kl_divergence(pa, za, pb, zb);
        Position {
            ce_a: za - pa[target] as f64,
            ce_b: zb - pb[target] as f64,
            kl,
            agree: argmax(pa) == argmax(pb),
        }
    })
}

fn decoder_summary(positions: &[Position], windows: &[&[u32]], context: usize) -> Downstream {
    let m = positions.len() as f64;
    let mean = |f: fn(&Position) -> f64| positions.iter().map(f).sum::<f64>() / m;
    Downstream::Decoder(DecoderEval {
        tokens: windows.iter().map(|w| w.len()).sum(),
        windows: windows.len(),
        context,
        scored: positions.len(),
        perplexity_original: mean(|p| p.ce_a).exp(),
        perplexity_compressed: mean(|p| p.ce_b).exp(),
        kl_mean: mean(|p| p.kl),
        top1_agreement: positions.iter().filter(|p| p.agree).count() as f64 / m,
    })
}

fn compare_decoders(a: &Llama, b: &Llama, text: &str, o: &EvalOptions) -> Result<Downstream> {
    let (ids, context) = decoder_windows(a, b, text, o)?;
    let windows: Vec<&[u32]> = ids.chunks(context).filter(|w| w.len() >= 2).collect();
    let vocab = a.config.vocab_size;
    let mut positions = Vec::new();
    for w in &windows {
        let n = w.len();
        let la = a.logits(&a.forward(w, &mut a.new_cache())?, n);
        let lb = b.logits(&b.forward(w, &mut b.new_cache())?, n);
        positions.extend(score_window(&la, &lb, w, vocab));
    }
    Ok(decoder_summary(&positions, &windows, context))
}

/// [`compare`] with both models run where `backend` says (weights resident on the GPU, each window
/// or sentence one step; after a GPU failure the rest on the CPU, the reason in
/// [`Backend::fallback`]). On the CPU backend the figures are [`compare`]'s exactly.
pub async fn compare_on(
    original: &Model,
    compressed: &Model,
    text: &str,
    options: &EvalOptions,
    backend: &Backend,
) -> Result<Downstream> {
    match (original, compressed) {
        (Model::Decoder(a), Model::Decoder(b)) => {
            let (ids, context) = decoder_windows(a, b, text, options)?;
            let windows: Vec<&[u32]> = ids.chunks(context).filter(|w| w.len() >= 2).collect();
            let (mut da, mut db) = (Decoder::load(a, backend), Decoder::load(b, backend));
            let mut positions = Vec::new();
            for w in &windows {
                let la = da.window_logits(w).await?;
                let lb = db.window_logits(w).await?;
                positions.extend(score_window(&la, &lb, w, a.config.vocab_size));
            }
            Ok(decoder_summary(&positions, &windows, context))
        }
        (Model::Encoder(a), Model::Encoder(b)) => {
            let sentences = sentences_of(text, options.sentences);
            if sentences.len() < 2 {
                return Err(Error::invalid(
                    "the text has fewer than 2 lines of 20 to 200 characters to embed",
                ));
            }
            let before = Encoder::load(a, backend)
                .embed_sentences(&sentences)
                .await?;
            let after = Encoder::load(b, backend)
                .embed_sentences(&sentences)
                .await?;
            Ok(Downstream::Encoder(compare_embeddings(&before, &after)))
        }
        _ => Err(Error::invalid(
            "the two models are not of the same family (one encoder, one decoder)",
        )),
    }
}
