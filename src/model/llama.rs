//! A Llama-style decoder (Llama, SmolLM, Qwen2-like) with a KV cache.
//!
//! Per layer, pre-norm: `x += O(attn(rope(Q n(x)), rope(K n(x)), V n(x)))`, then
//! `x += Down(silu(Gate n(x)) * Up n(x))`, `n` being RMSNorm; then a final RMSNorm and the output
//! projection (`lm_head`, or the token embedding when the two are tied). Rotary positions follow
//! the Hugging Face convention (the two halves of each head form the pairs, `inv_freq_i =
//! theta^(-2i/d)`); query head `h` reads key/value head `h / (heads / kv_heads)` (grouped-query
//! attention); q/k/v biases are used when the checkpoint has them (Qwen2).

use super::calibrate::{reborrow, Observer};
use super::config::LlamaConfig;
use super::ops::{self, Linear};
use super::sample::Sampler;
use super::tokenizer::Tokenizer;
use super::weights::{load_shaped, resolve, WeightSource};
use crate::error::{Error, Result};

pub(super) struct Layer {
    pub(super) input_norm: Vec<f32>,
    pub(super) q: Linear,
    pub(super) k: Linear,
    pub(super) v: Linear,
    pub(super) o: Linear,
    pub(super) post_norm: Vec<f32>,
    pub(super) gate: Linear,
    pub(super) up: Linear,
    pub(super) down: Linear,
}

pub struct Llama {
    pub config: LlamaConfig,
    pub tokenizer: Tokenizer,
    /// The token embedding, `vocab x hidden`; also the output projection when they are tied.
    pub(super) embed: Linear,
    pub(super) layers: Vec<Layer>,
    pub(super) norm: Vec<f32>,
    pub(super) lm_head: Option<Linear>,
    /// `theta^(-2i/d)` for each rotated pair `i`.
    pub(super) inv_freq: Vec<f64>,
}

/// The keys and values of the positions seen so far, per layer (`len x kv_heads*head_dim`).
pub struct KvCache {
    k: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
    len: usize,
}

impl KvCache {
    /// Positions held.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

fn linear(
    w: &dyn WeightSource,
    name: &str,
    out_dim: usize,
    in_dim: usize,
    bias: bool,
) -> Result<Linear> {
    let bias_name = format!("{name}.bias");
    let bias = match bias && w.shape(&bias_name).is_some() {
        true => Some(load_shaped(w, &[], &bias_name, &[out_dim])?),
        false => None,
    };
    let weight_name = format!("{name}.weight");
    Ok(Linear {
        weight: load_shaped(w, &[], &weight_name, &[out_dim, in_dim])?,
        name: weight_name,
        out_dim,
        in_dim,
        bias,
    })
}

impl Llama {
    pub fn load(config: LlamaConfig, tokenizer: Tokenizer, w: &dyn WeightSource) -> Result<Llama> {
        let c = &config;
        let (h, i) = (c.hidden_size, c.intermediate_size);
        let (qd, kvd) = (c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim);
        let mut layers = Vec::with_capacity(c.num_layers);
        for l in 0..c.num_layers {
            let p = format!("model.layers.{l}");
            layers.push(Layer {
                input_norm: load_shaped(w, &[], &format!("{p}.input_layernorm.weight"), &[h])?,
                q: linear(w, &format!("{p}.self_attn.q_proj"), qd, h, true)?,
                k: linear(w, &format!("{p}.self_attn.k_proj"), kvd, h, true)?,
                v: linear(w, &format!("{p}.self_attn.v_proj"), kvd, h, true)?,
                o: linear(w, &format!("{p}.self_attn.o_proj"), h, qd, false)?,
                post_norm: load_shaped(
                    w,
                    &[],
                    &format!("{p}.post_attention_layernorm.weight"),
                    &[h],
                )?,
                gate: linear(w, &format!("{p}.mlp.gate_proj"), i, h, false)?,
                up: linear(w, &format!("{p}.mlp.up_proj"), i, h, false)?,
                down: linear(w, &format!("{p}.mlp.down_proj"), h, i, false)?,
            });
        }
        // Tied when the config says so or when the checkpoint has no lm_head (as transformers).
        let lm_head = match c.tie_word_embeddings || resolve(w, &[], "lm_head.weight").is_none() {
            true => None,
            false => Some(linear(w, "lm_head", c.vocab_size, h, false)?),
        };
        if tokenizer.vocab_size() > c.vocab_size {
            return Err(Error::invalid(format!(
                "the tokenizer has {} tokens but the model only {} embeddings",
                tokenizer.vocab_size(),
                c.vocab_size
            )));
        }
        let d = c.head_dim;
        let inv_freq = (0..d / 2)
            .map(|k| c.rope_theta.powf(-((2 * k) as f64) / d as f64))
            .collect();
        Ok(Llama {
            embed: linear(w, "model.embed_tokens", c.vocab_size, h, false)?,
            norm: load_shaped(w, &[], "model.norm.weight", &[h])?,
            layers,
            lm_head,
            inv_freq,
            config,
            tokenizer,
        })
    }

    pub fn new_cache(&self) -> KvCache {
        let n = self.config.num_layers;
        KvCache {
            k: vec![Vec::new(); n],
            v: vec![Vec::new(); n],
            len: 0,
        }
    }

    /// Runs `ids` after the positions `cache` holds and appends theirs; returns the final-norm
    /// state of each new position (`ids.len() x hidden`).
    pub fn forward(&self, ids: &[u32], cache: &mut KvCache) -> Result<Vec<f32>> {
        self.forward_observed(ids, cache, None)
    }

    /// [`Llama::forward`], showing `observer` the input of every linear layer on the way (the
    /// final-norm states as the input of the output projection: `lm_head`, or the token embedding
    /// when the two are tied).
    pub fn forward_observed(
        &self,
        ids: &[u32],
        cache: &mut KvCache,
        mut observer: Option<&mut dyn Observer>,
    ) -> Result<Vec<f32>> {
        let c = &self.config;
        let n = ids.len();
        if cache.len + n > c.max_positions {
            return Err(Error::invalid(format!(
                "{} positions: this model takes at most {}",
                cache.len + n,
                c.max_positions
            )));
        }
        let mut x = self.embed_ids(ids)?;
        for (l, layer) in self.layers.iter().enumerate() {
            self.layer(layer, &mut x, n, cache, l, reborrow(&mut observer));
        }
        cache.len += n;
        let states = ops::rms_norm(&x, &self.norm, c.rms_norm_eps);
        if let Some(o) = observer {
            o.observe(&[&self.output().name], &states, n);
        }
        Ok(states)
    }

    /// The token embedding of each id (`ids.len() x hidden`), the input of the first layer.
    pub(super) fn embed_ids(&self, ids: &[u32]) -> Result<Vec<f32>> {
        let (h, vocab) = (self.config.hidden_size, self.config.vocab_size);
        let mut x = Vec::with_capacity(ids.len() * h);
        for &id in ids {
            let id = id as usize;
            if id >= vocab {
                return Err(Error::invalid(format!(
                    "token id {id} outside the vocabulary"
                )));
            }
            x.extend_from_slice(&self.embed.weight[id * h..(id + 1) * h]);
        }
        Ok(x)
    }

    /// The input of every layer (`num_layers` rows of `ids.len() x hidden`) and the final-norm
    /// states of a run of `ids` from an empty cache: what [`Llama::states_from`] starts from.
    pub fn layer_inputs(&self, ids: &[u32]) -> Result<(Vec<Vec<f32>>, Vec<f32>)> {
        let c = &self.config;
        if ids.len() > c.max_positions {
            return Err(Error::invalid(format!(
                "{} positions: this model takes at most {}",
                ids.len(),
                c.max_positions
            )));
        }
        let n = ids.len();
        let mut cache = self.new_cache();
        let mut x = self.embed_ids(ids)?;
        let mut inputs = Vec::with_capacity(self.layers.len());
        for (l, layer) in self.layers.iter().enumerate() {
            inputs.push(x.clone());
            self.layer(layer, &mut x, n, &mut cache, l, None);
        }
        Ok((inputs, ops::rms_norm(&x, &self.norm, c.rms_norm_eps)))
    }

    /// The final-norm states of `n` positions from an empty cache, starting at layer `first`
    /// with `x` as its input (one of [`Llama::layer_inputs`]): the layers before `first` are not
    /// run again, which is what makes measuring one layer's weights cheap.
    pub fn states_from(&self, first: usize, mut x: Vec<f32>, n: usize) -> Vec<f32> {
        let mut cache = self.new_cache();
        for (l, layer) in self.layers.iter().enumerate().skip(first) {
            self.layer(layer, &mut x, n, &mut cache, l, None);
        }
        ops::rms_norm(&x, &self.norm, self.config.rms_norm_eps)
    }

    /// Every weight matrix the model uses, with where it acts: `Some(l)` inside layer `l`,
    /// `None` for the token embedding (the input, and the output too when tied) and `lm_head`
    /// (after the last layer; [`Llama::output_is`] tells the two apart).
    pub fn matrices_mut(&mut self) -> Vec<(Option<usize>, &mut Linear)> {
        let mut out: Vec<(Option<usize>, &mut Linear)> = vec![(None, &mut self.embed)];
        for (l, layer) in self.layers.iter_mut().enumerate() {
            let Layer {
                q,
                k,
                v,
                o,
                gate,
                up,
                down,
                ..
            } = layer;
            out.extend([q, k, v, o, gate, up, down].map(|m| (Some(l), m)));
        }
        if let Some(head) = self.lm_head.as_mut() {
            out.push((None, head));
        }
        out
    }

    /// Whether `name` is a separate output projection (`lm_head`), used after the last layer
    /// only.
    pub fn output_is(&self, name: &str) -> bool {
        self.lm_head.as_ref().is_some_and(|h| h.name == name)
    }

    /// The output projection: `lm_head`, or the token embedding when the two are tied.
    pub(super) fn output(&self) -> &Linear {
        self.lm_head.as_ref().unwrap_or(&self.embed)
    }

    /// The next-token logits of each row of `states` (`n x vocab`).
    pub fn logits(&self, states: &[f32], n: usize) -> Vec<f32> {
        self.output().forward(states, n)
    }

    /// Generates up to `max_tokens` tokens after `prompt` (stopping early at an end-of-sequence
    /// token or when `on_token` returns false), one at a time through the KV cache.
    pub fn generate(
        &self,
        prompt: &[u32],
        max_tokens: usize,
        sampler: &mut Sampler,
        on_token: &mut dyn FnMut(u32) -> bool,
    ) -> Result<Vec<u32>> {
        if prompt.is_empty() {
            return Err(Error::invalid("an empty prompt (no tokens to start from)"));
        }
        let room = self.config.max_positions.saturating_sub(prompt.len());
        let mut cache = self.new_cache();
        let states = self.forward(prompt, &mut cache)?;
        let h = self.config.hidden_size;
        let mut last = states[states.len() - h..].to_vec();
        let mut out = Vec::new();
        for _ in 0..max_tokens.min(room) {
            let next = sampler.pick(&self.logits(&last, 1));
            out.push(next);
            if self.config.eos_token_ids.contains(&next) || !on_token(next) {
                break;
            }
            last = self.forward(&[next], &mut cache)?;
        }
        Ok(out)
    }

    /// Rotates each `head_dim`-wide head of each row of `x` (row `i` at position `first + i`).
    fn rope(&self, x: &mut [f32], heads: usize, first: usize) {
        let d = self.config.head_dim;
        let half = d / 2;
        for (i, row) in x.chunks_exact_mut(heads * d).enumerate() {
            let pos = (first + i) as f64;
            let (cos, sin): (Vec<f32>, Vec<f32>) = self
                .inv_freq
                .iter()
                .map(|f| {
                    let a = pos * f;
                    (a.cos() as f32, a.sin() as f32)
                })
                .unzip();
            for head in row.chunks_exact_mut(d) {
                for k in 0..half {
                    let (a, b) = (head[k], head[k + half]);
                    head[k] = a * cos[k] - b * sin[k];
                    head[k + half] = b * cos[k] + a * sin[k];
                }
            }
        }
    }

    fn layer(
        &self,
        l: &Layer,
        x: &mut [f32],
        n: usize,
        cache: &mut KvCache,
        index: usize,
        mut observer: Option<&mut dyn Observer>,
    ) {
        // The positions before these `n`; `cache.len` grows once all layers have run.
        let past = cache.len;
        let (k_cache, v_cache) = (&mut cache.k[index], &mut cache.v[index]);
        let c = &self.config;
        let (d, heads, kvh) = (c.head_dim, c.num_heads, c.num_kv_heads);
        let xn = ops::rms_norm(x, &l.input_norm, c.rms_norm_eps);
        if let Some(o) = observer.as_deref_mut() {
            o.observe(&[&l.q.name, &l.k.name, &l.v.name], &xn, n);
        }
        let mut q = l.q.forward(&xn, n);
        let mut k = l.k.forward(&xn, n);
        let v = l.v.forward(&xn, n);
        self.rope(&mut q, heads, past);
        self.rope(&mut k, kvh, past);
        k_cache.extend_from_slice(&k);
        v_cache.extend_from_slice(&v);
        let (kc, vc) = (&*k_cache, &*v_cache);
        let group = heads / kvh;
        let scale = 1.0 / (d as f32).sqrt();
        let mut ctx = vec![0.0f32; n * heads * d];
        ops::for_each_chunk(
            &mut ctx,
            heads * d,
            heads * d * (past + n),
            |first, rows| {
                let mut scores = Vec::with_capacity(past + n);
                for (r, out_row) in rows.chunks_exact_mut(heads * d).enumerate() {
                    let i = first + r;
                    let seen = past + i + 1;
                    for head in 0..heads {
                        let qh = &q[(i * heads + head) * d..][..d];
                        let kvo = (head / group) * d;
                        scores.clear();
                        scores.extend(
                            (0..seen).map(|j| ops::dot(qh, &kc[j * kvh * d + kvo..][..d]) * scale),
                        );
                        ops::softmax(&mut scores);
                        let out = &mut out_row[head * d..(head + 1) * d];
                        for (j, &p) in scores.iter().enumerate() {
                            let vj = &vc[j * kvh * d + kvo..][..d];
                            out.iter_mut().zip(vj).for_each(|(a, b)| *a += p * b);
                        }
                    }
                }
            },
        );
        if let Some(o) = observer.as_deref_mut() {
            o.observe(&[&l.o.name], &ctx, n);
        }
        let o = l.o.forward(&ctx, n);
        x.iter_mut().zip(&o).for_each(|(a, b)| *a += b);
        let xn = ops::rms_norm(x, &l.post_norm, c.rms_norm_eps);
        if let Some(o) = observer.as_deref_mut() {
            o.observe(&[&l.gate.name, &l.up.name], &xn, n);
        }
        let mut gate = l.gate.forward(&xn, n);
        let up = l.up.forward(&xn, n);
        gate.iter_mut()
            .zip(&up)
            .for_each(|(g, u)| *g = ops::silu(*g) * u);
        if let Some(o) = observer {
            o.observe(&[&l.down.name], &gate, n);
        }
        let down = l.down.forward(&gate, n);
        x.iter_mut().zip(&down).for_each(|(a, b)| *a += b);
    }
}
