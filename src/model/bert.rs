//! A BERT-style encoder (BERT, MiniLM) and its sentence embedding.
//!
//! Embeddings (word + position + token type 0), LayerNorm; then per layer, post-norm:
//! `h = LN(x + O(attn(Q x, K x, V x)))`, `x = LN(h + W2 act(W1 h))`; then the sentence-transformers
//! pooling over the tokens (mean, CLS or max) and, when the model says so, unit length. Each
//! sentence runs alone at its own length, so no padding or attention mask is needed; sentences are
//! spread over the cores.

use super::calibrate::{reborrow, Observer};
use super::config::{Activation, BertConfig, Pooling, PoolingMode};
use super::ops::{self, Linear};
use super::tokenizer::Tokenizer;
use super::weights::{load_shaped, resolve, WeightSource};
use crate::error::{Error, Result};

/// Prefixes under which encoder checkpoints store the same tensors (`BertForMaskedLM` and kin).
const PREFIXES: &[&str] = &["bert."];

pub(super) struct Norm {
    pub(super) weight: Vec<f32>,
    pub(super) bias: Vec<f32>,
}

pub(super) struct Layer {
    pub(super) query: Linear,
    pub(super) key: Linear,
    pub(super) value: Linear,
    pub(super) attn_out: Linear,
    pub(super) attn_norm: Norm,
    pub(super) intermediate: Linear,
    pub(super) output: Linear,
    pub(super) out_norm: Norm,
}

pub struct Bert {
    pub config: BertConfig,
    pub pooling: Pooling,
    pub tokenizer: Tokenizer,
    /// The word, position and token-type embeddings (`rows x hidden`; as [`Linear`]s for their
    /// names: they are never multiplied, only read by row).
    pub(super) word: Linear,
    pub(super) position: Linear,
    pub(super) token_type: Linear,
    pub(super) emb_norm: Norm,
    pub(super) layers: Vec<Layer>,
}

fn linear(w: &dyn WeightSource, name: &str, out_dim: usize, in_dim: usize) -> Result<Linear> {
    let weight_name = format!("{name}.weight");
    Ok(Linear {
        weight: load_shaped(w, PREFIXES, &weight_name, &[out_dim, in_dim])?,
        name: resolve(w, PREFIXES, &weight_name).unwrap_or(weight_name),
        out_dim,
        in_dim,
        bias: Some(load_shaped(
            w,
            PREFIXES,
            &format!("{name}.bias"),
            &[out_dim],
        )?),
    })
}

fn norm(w: &dyn WeightSource, name: &str, dim: usize) -> Result<Norm> {
    Ok(Norm {
        weight: load_shaped(w, PREFIXES, &format!("{name}.weight"), &[dim])?,
        bias: load_shaped(w, PREFIXES, &format!("{name}.bias"), &[dim])?,
    })
}

impl Bert {
    pub fn load(
        config: BertConfig,
        pooling: Pooling,
        tokenizer: Tokenizer,
        w: &dyn WeightSource,
    ) -> Result<Bert> {
        let (h, i) = (config.hidden_size, config.intermediate_size);
        let mut layers = Vec::with_capacity(config.num_layers);
        for l in 0..config.num_layers {
            let p = format!("encoder.layer.{l}");
            layers.push(Layer {
                query: linear(w, &format!("{p}.attention.self.query"), h, h)?,
                key: linear(w, &format!("{p}.attention.self.key"), h, h)?,
                value: linear(w, &format!("{p}.attention.self.value"), h, h)?,
                attn_out: linear(w, &format!("{p}.attention.output.dense"), h, h)?,
                attn_norm: norm(w, &format!("{p}.attention.output.LayerNorm"), h)?,
                intermediate: linear(w, &format!("{p}.intermediate.dense"), i, h)?,
                output: linear(w, &format!("{p}.output.dense"), h, i)?,
                out_norm: norm(w, &format!("{p}.output.LayerNorm"), h)?,
            });
        }
        let emb = |name: &str, rows: usize| -> Result<Linear> {
            let weight_name = format!("embeddings.{name}.weight");
            Ok(Linear {
                weight: load_shaped(w, PREFIXES, &weight_name, &[rows, h])?,
                name: resolve(w, PREFIXES, &weight_name).unwrap_or(weight_name),
                out_dim: rows,
                in_dim: h,
                bias: None,
            })
        };
        if tokenizer.vocab_size() > config.vocab_size {
            return Err(Error::invalid(format!(
                "the tokenizer has {} tokens but the model only {} embeddings",
                tokenizer.vocab_size(),
                config.vocab_size
            )));
        }
        Ok(Bert {
            word: emb("word_embeddings", config.vocab_size)?,
            position: emb("position_embeddings", config.max_positions)?,
            token_type: emb("token_type_embeddings", config.type_vocab_size)?,
            emb_norm: norm(w, "embeddings.LayerNorm", h)?,
            layers,
            config,
            pooling,
            tokenizer,
        })
    }

    /// The embedding of each sentence (spread over the cores; each one's result does not depend on
    /// the others or on the number of cores).
    pub fn embed_sentences(&self, sentences: &[String]) -> Result<Vec<Vec<f32>>> {
        let ids = sentences
            .iter()
            .map(|s| self.tokenizer.encode(s))
            .collect::<Result<Vec<_>>>()?;
        let dim = self.config.hidden_size;
        let mut out = vec![0.0f32; sentences.len() * dim];
        let failure = std::sync::Mutex::new(None);
        ops::for_each_chunk(&mut out, dim, usize::MAX, |first, chunk| {
            for (k, row) in chunk.chunks_exact_mut(dim).enumerate() {
                match self.embed_ids(&ids[first + k]) {
                    Ok(e) => row.copy_from_slice(&e),
                    Err(e) => *failure.lock().expect("not poisoned") = Some(e),
                }
            }
        });
        if let Some(e) = failure.into_inner().expect("not poisoned") {
            return Err(e);
        }
        Ok(out.chunks_exact(dim).map(<[f32]>::to_vec).collect())
    }

    /// Up to `n` of `text`'s sentences (its lines of 20 to 200 characters, as
    /// [`super::eval::sentences_of`] takes them) that fit the model: longer ones are left out, not
    /// cut (a cut sentence is not one the model would be given). An error when none fits.
    pub fn sentences_that_fit(&self, text: &str, n: usize) -> Result<Vec<String>> {
        let mut sentences = Vec::new();
        for sentence in super::eval::sentences_of(text, usize::MAX) {
            if sentences.len() == n {
                break;
            }
            if self.tokenizer.encode(&sentence)?.len() <= self.config.max_positions {
                sentences.push(sentence);
            }
        }
        if sentences.is_empty() {
            return Err(Error::invalid(format!(
                "the text has no line of 20 to 200 characters of at most {} tokens to embed",
                self.config.max_positions
            )));
        }
        Ok(sentences)
    }

    /// The last layer's state of every token (`n x hidden`).
    pub fn hidden_states(&self, ids: &[u32]) -> Result<Vec<f32>> {
        self.hidden_states_observed(ids, None)
    }

    /// [`Bert::hidden_states`], showing `observer` the input of every linear layer on the way.
    pub fn hidden_states_observed(
        &self,
        ids: &[u32],
        mut observer: Option<&mut dyn Observer>,
    ) -> Result<Vec<f32>> {
        let n = ids.len();
        let mut x = self.embed_tokens(ids)?;
        for layer in &self.layers {
            x = self.layer(layer, x, n, reborrow(&mut observer));
        }
        Ok(x)
    }

    /// The input of the first layer: word + position + token-type embeddings of `ids`, then the
    /// embedding LayerNorm (`n x hidden`).
    pub(super) fn embed_tokens(&self, ids: &[u32]) -> Result<Vec<f32>> {
        let c = &self.config;
        let (n, h) = (ids.len(), c.hidden_size);
        if n == 0 || n > c.max_positions {
            return Err(Error::invalid(format!(
                "a text of {n} tokens: this encoder takes 1 to {} tokens",
                c.max_positions
            )));
        }
        let mut x = Vec::with_capacity(n * h);
        for (pos, &id) in ids.iter().enumerate() {
            let id = id as usize;
            if id >= c.vocab_size {
                return Err(Error::invalid(format!(
                    "token id {id} outside the vocabulary"
                )));
            }
            let (w, p, t) = (
                &self.word.weight[id * h..(id + 1) * h],
                &self.position.weight[pos * h..(pos + 1) * h],
                &self.token_type.weight[..h],
            );
            x.extend((0..h).map(|j| w[j] + p[j] + t[j]));
        }
        ops::layer_norm(
            &mut x,
            &self.emb_norm.weight,
            &self.emb_norm.bias,
            c.layer_norm_eps,
        );
        Ok(x)
    }

    /// Every weight matrix the model uses: the three embeddings and each layer's six linear
    /// weights.
    pub fn matrices_mut(&mut self) -> Vec<&mut Linear> {
        let mut out = vec![&mut self.word, &mut self.position, &mut self.token_type];
        for layer in self.layers.iter_mut() {
            let Layer {
                query,
                key,
                value,
                attn_out,
                intermediate,
                output,
                ..
            } = layer;
            out.extend([query, key, value, attn_out, intermediate, output]);
        }
        out
    }

    /// One sentence's embedding from its token ids.
    pub fn embed_ids(&self, ids: &[u32]) -> Result<Vec<f32>> {
        let h = self.config.hidden_size;
        let x = self.hidden_states(ids)?;
        let n = ids.len();
        let mut e = match self.pooling.mode {
            PoolingMode::Cls => x[..h].to_vec(),
            PoolingMode::Mean => (0..h)
                .map(|j| (0..n).map(|i| x[i * h + j]).sum::<f32>() / n as f32)
                .collect(),
            PoolingMode::Max => (0..h)
                .map(|j| {
                    (0..n)
                        .map(|i| x[i * h + j])
                        .fold(f32::NEG_INFINITY, f32::max)
                })
                .collect(),
        };
        self.scale_as_asked(&mut e);
        Ok(e)
    }

    /// Scales a pooled embedding to unit length when the model's pooling says so.
    pub(super) fn scale_as_asked(&self, e: &mut [f32]) {
        if self.pooling.normalize {
            let norm = e.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
            e.iter_mut().for_each(|v| *v /= norm);
        }
    }

    fn layer(
        &self,
        l: &Layer,
        x: Vec<f32>,
        n: usize,
        mut observer: Option<&mut dyn Observer>,
    ) -> Vec<f32> {
        let c = &self.config;
        let (h, heads) = (c.hidden_size, c.num_heads);
        let d = h / heads;
        if let Some(o) = observer.as_deref_mut() {
            o.observe(&[&l.query.name, &l.key.name, &l.value.name], &x, n);
        }
        let (q, k, v) = (
            l.query.forward(&x, n),
            l.key.forward(&x, n),
            l.value.forward(&x, n),
        );
        let scale = 1.0 / (d as f32).sqrt();
        let mut ctx = vec![0.0f32; n * h];
        let mut scores = vec![0.0f32; n];
        for head in 0..heads {
            let o = head * d;
            for i in 0..n {
                let qi = &q[i * h + o..i * h + o + d];
                for (j, s) in scores.iter_mut().enumerate() {
                    *s = ops::dot(qi, &k[j * h + o..j * h + o + d]) * scale;
                }
                ops::softmax(&mut scores);
                let out = &mut ctx[i * h + o..i * h + o + d];
                for (j, &p) in scores.iter().enumerate() {
                    let vj = &v[j * h + o..j * h + o + d];
                    out.iter_mut().zip(vj).for_each(|(a, b)| *a += p * b);
                }
            }
        }
        if let Some(o) = observer.as_deref_mut() {
            o.observe(&[&l.attn_out.name], &ctx, n);
        }
        let mut hid = l.attn_out.forward(&ctx, n);
        hid.iter_mut().zip(&x).for_each(|(a, b)| *a += b);
        ops::layer_norm(
            &mut hid,
            &l.attn_norm.weight,
            &l.attn_norm.bias,
            c.layer_norm_eps,
        );
        if let Some(o) = observer.as_deref_mut() {
            o.observe(&[&l.intermediate.name], &hid, n);
        }
        let mut inter = l.intermediate.forward(&hid, n);
        let act = match c.activation {
            Activation::Gelu => ops::gelu,
            Activation::GeluTanh => ops::gelu_tanh,
        };
        inter.iter_mut().for_each(|v| *v = act(*v));
        if let Some(o) = observer {
            o.observe(&[&l.output.name], &inter, n);
        }
        let mut out = l.output.forward(&inter, n);
        out.iter_mut().zip(&hid).for_each(|(a, b)| *a += b);
        ops::layer_norm(
            &mut out,
            &l.out_norm.weight,
            &l.out_norm.bias,
            c.layer_norm_eps,
        );
        out
    }
}
