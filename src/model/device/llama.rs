//! A Llama-style decoder on the device: [`super::super::llama`]'s forward pass recorded as one
//! pass of kernels per step over resident weights and a resident KV cache; one readback per step.

use crate::backend::gpu::{DeviceTensor, Gpu, GpuResult, Pass};
use crate::backend::kernels::attention::AttentionShape;
use crate::backend::kernels::elementwise::Elementwise;
use crate::backend::kernels::rope::rope_table;
use crate::error::{Error, Result};
use crate::model::llama::{Layer, Llama};
use crate::model::ops::Linear;
use crate::model::sample::Sampler;

/// A linear layer's weight (and bias) on the device.
pub(super) struct DeviceLinear {
    w: DeviceTensor,
    b: Option<DeviceTensor>,
    pub(super) out_dim: usize,
    in_dim: usize,
}

impl DeviceLinear {
    pub(super) fn upload(gpu: &Gpu, l: &Linear) -> GpuResult<DeviceLinear> {
        Ok(DeviceLinear {
            w: gpu.tensor(&l.weight, &l.name)?,
            b: l.bias
                .as_ref()
                .map(|b| gpu.tensor(b, &l.name))
                .transpose()?,
            out_dim: l.out_dim,
            in_dim: l.in_dim,
        })
    }

    /// Records `y = x W^T + b` for `n` rows.
    pub(super) fn record(
        &self,
        pass: &mut Pass,
        x: &DeviceTensor,
        n: usize,
        y: &DeviceTensor,
    ) -> GpuResult<()> {
        pass.linear(x, n, &self.w, self.b.as_ref(), self.out_dim, self.in_dim, y)
    }
}

struct DeviceLayer {
    input_norm: DeviceTensor,
    q: DeviceLinear,
    k: DeviceLinear,
    v: DeviceLinear,
    o: DeviceLinear,
    post_norm: DeviceTensor,
    gate: DeviceLinear,
    up: DeviceLinear,
    down: DeviceLinear,
}

impl DeviceLayer {
    fn upload(gpu: &Gpu, l: &Layer) -> GpuResult<DeviceLayer> {
        let up = |x: &Linear| DeviceLinear::upload(gpu, x);
        Ok(DeviceLayer {
            input_norm: gpu.tensor(&l.input_norm, "input_layernorm")?,
            q: up(&l.q)?,
            k: up(&l.k)?,
            v: up(&l.v)?,
            o: up(&l.o)?,
            post_norm: gpu.tensor(&l.post_norm, "post_attention_layernorm")?,
            gate: up(&l.gate)?,
            up: up(&l.up)?,
            down: up(&l.down)?,
        })
    }
}

/// A decoder whose weights are on the device (the token embedding stays on the CPU for the
/// lookup; it is uploaded too when it is also the output projection).
pub struct DeviceLlama<'m> {
    model: &'m Llama,
    gpu: &'m Gpu,
    layers: Vec<DeviceLayer>,
    norm: DeviceTensor,
    output: DeviceLinear,
}

/// The keys and values of the positions seen so far, per layer, on the device
/// (`capacity x kv_heads*head_dim` each, the first `len` rows in use).
pub struct DeviceCache {
    k: Vec<DeviceTensor>,
    v: Vec<DeviceTensor>,
    len: usize,
    capacity: usize,
}

impl DeviceCache {
    /// Positions held.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// The working arrays of one step of `n` rows (allocated per step: a step's size varies).
struct Work {
    x: DeviceTensor,
    xn: DeviceTensor,
    q: DeviceTensor,
    k: DeviceTensor,
    v: DeviceTensor,
    ctx: DeviceTensor,
    o: DeviceTensor,
    gate: DeviceTensor,
    up: DeviceTensor,
    scores: DeviceTensor,
    table: DeviceTensor,
    last: DeviceTensor,
}

impl<'m> DeviceLlama<'m> {
    /// Uploads `model`'s weights to `gpu` (once; every step reuses them).
    pub fn load(model: &'m Llama, gpu: &'m Gpu) -> GpuResult<DeviceLlama<'m>> {
        let layers = model
            .layers
            .iter()
            .map(|l| DeviceLayer::upload(gpu, l))
            .collect::<GpuResult<Vec<_>>>()?;
        Ok(DeviceLlama {
            norm: gpu.tensor(&model.norm, "model.norm")?,
            output: DeviceLinear::upload(gpu, model.output())?,
            layers,
            model,
            gpu,
        })
    }

    pub fn model(&self) -> &'m Llama {
        self.model
    }

    pub fn gpu(&self) -> &'m Gpu {
        self.gpu
    }

    /// An empty cache with room for `capacity` positions (it grows if a step needs more).
    pub fn new_cache(&self, capacity: usize) -> GpuResult<DeviceCache> {
        let c = &self.model.config;
        let capacity = capacity.clamp(1, c.max_positions.max(1));
        let width = c.num_kv_heads * c.head_dim;
        let mut cache = DeviceCache {
            k: Vec::new(),
            v: Vec::new(),
            len: 0,
            capacity,
        };
        for _ in 0..c.num_layers {
            cache.k.push(self.gpu.zeros(capacity * width, "k cache")?);
            cache.v.push(self.gpu.zeros(capacity * width, "v cache")?);
        }
        Ok(cache)
    }

    /// Makes room for `need` positions, copying what the cache holds into larger arrays.
    fn reserve(&self, cache: &mut DeviceCache, need: usize) -> GpuResult<()> {
        if need <= cache.capacity {
            return Ok(());
        }
        let c = &self.model.config;
        let width = c.num_kv_heads * c.head_dim;
        let capacity = need.max(2 * cache.capacity).min(c.max_positions.max(need));
        let mut pass = self.gpu.pass();
        for old in cache.k.iter_mut().chain(cache.v.iter_mut()) {
            let new = self.gpu.zeros(capacity * width, "kv cache")?;
            pass.copy(old, 0, &new, 0, cache.len * width)?;
            *old = new;
        }
        pass.submit();
        cache.capacity = capacity;
        Ok(())
    }

    /// The token embeddings of `ids` at positions from `past` (checked against the model's
    /// positions and vocabulary), looked up on the CPU.
    pub fn embed(&self, ids: &[u32], past: usize) -> Result<Vec<f32>> {
        let max = self.model.config.max_positions;
        if past + ids.len() > max {
            return Err(Error::invalid(format!(
                "{} positions: this model takes at most {max}",
                past + ids.len()
            )));
        }
        self.model.embed_ids(ids)
    }

    fn work(&self, x: &[f32], n: usize, past: usize) -> GpuResult<Work> {
        let c = &self.model.config;
        let g = self.gpu;
        let (qd, kvd) = (c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim);
        let (h, i) = (c.hidden_size, c.intermediate_size);
        let shape = self.attention_shape(n, past);
        Ok(Work {
            x: g.tensor(x, "x")?,
            xn: g.zeros(n * h, "normed x")?,
            q: g.zeros(n * qd, "q")?,
            k: g.zeros(n * kvd, "k")?,
            v: g.zeros(n * kvd, "v")?,
            ctx: g.zeros(n * qd, "attention")?,
            o: g.zeros(n * h, "projection")?,
            gate: g.zeros(n * i, "gate")?,
            up: g.zeros(n * i, "up")?,
            scores: g.zeros(shape.scratch(), "scores")?,
            table: g.tensor(&rope_table(&self.model.inv_freq, past, n), "rope table")?,
            last: g.zeros(h, "last state")?,
        })
    }

    fn attention_shape(&self, n: usize, past: usize) -> AttentionShape {
        let c = &self.model.config;
        AttentionShape {
            rows: n,
            heads: c.num_heads,
            kv_heads: c.num_kv_heads,
            head_dim: c.head_dim,
            past,
            causal: true,
        }
    }

    /// Records layer `index` on the `n` rows of `w.x` (in place), appending their keys and values
    /// to the cache after its `past` rows.
    fn record_layer(
        &self,
        pass: &mut Pass,
        index: usize,
        w: &Work,
        n: usize,
        cache: &DeviceCache,
    ) -> GpuResult<()> {
        let c = &self.model.config;
        let l = &self.layers[index];
        let (d, past) = (c.head_dim, cache.len);
        let (h, kvd) = (c.hidden_size, c.num_kv_heads * d);
        let eps = c.rms_norm_eps;
        pass.norm(&w.x, n, &l.input_norm, None, eps, &w.xn)?;
        l.q.record(pass, &w.xn, n, &w.q)?;
        l.k.record(pass, &w.xn, n, &w.k)?;
        l.v.record(pass, &w.xn, n, &w.v)?;
        pass.rope(&w.q, n, c.num_heads, d, &w.table)?;
        pass.rope(&w.k, n, c.num_kv_heads, d, &w.table)?;
        let (kc, vc) = (&cache.k[index], &cache.v[index]);
        pass.copy(&w.k, 0, kc, past * kvd, n * kvd)?;
        pass.copy(&w.v, 0, vc, past * kvd, n * kvd)?;
        let shape = self.attention_shape(n, past);
        pass.attention(&shape, [&w.q, kc, vc], &w.scores, &w.ctx)?;
        l.o.record(pass, &w.ctx, n, &w.o)?;
        pass.elementwise(Elementwise::Add, &w.x, Some(&w.o), n * h)?;
        pass.norm(&w.x, n, &l.post_norm, None, eps, &w.xn)?;
        l.gate.record(pass, &w.xn, n, &w.gate)?;
        l.up.record(pass, &w.xn, n, &w.up)?;
        let inter = n * c.intermediate_size;
        pass.elementwise(Elementwise::SwiGlu, &w.gate, Some(&w.up), inter)?;
        l.down.record(pass, &w.gate, n, &w.o)?;
        pass.elementwise(Elementwise::Add, &w.x, Some(&w.o), n * h)
    }

    /// Runs the `n` embedded rows `x` after the positions `cache` holds and appends theirs;
    /// returns the logits of every row (`all`) or of the last one: the step's one readback.
    pub async fn step(
        &self,
        x: &[f32],
        n: usize,
        cache: &mut DeviceCache,
        all: bool,
    ) -> GpuResult<Vec<f32>> {
        let c = &self.model.config;
        let h = c.hidden_size;
        if n == 0 {
            return Ok(Vec::new());
        }
        self.reserve(cache, cache.len + n)?;
        let w = self.work(x, n, cache.len)?;
        let mut pass = self.gpu.pass();
        for index in 0..self.layers.len() {
            self.record_layer(&mut pass, index, &w, n, cache)?;
        }
        pass.norm(&w.x, n, &self.norm, None, c.rms_norm_eps, &w.xn)?;
        let vocab = self.output.out_dim;
        let rows = if all { n } else { 1 };
        let logits = self.gpu.zeros(rows * vocab, "logits")?;
        if all {
            self.output.record(&mut pass, &w.xn, n, &logits)?;
        } else {
            pass.copy(&w.xn, (n - 1) * h, &w.last, 0, h)?;
            self.output.record(&mut pass, &w.last, 1, &logits)?;
        }
        pass.submit();
        let out = self.gpu.read_tensor(&logits, rows * vocab).await?;
        cache.len += n;
        Ok(out)
    }

    /// The logits of every position of an evaluation window (`n` embedded rows, empty cache).
    pub async fn window_logits(&self, x: &[f32], n: usize) -> GpuResult<Vec<f32>> {
        let mut cache = self.new_cache(n)?;
        self.step(x, n, &mut cache, true).await
    }

    /// [`Llama::generate`] on the device, the tokens pushed to `out` as they come. The outer
    /// error is the CPU's (an empty prompt, a bad token); the inner one a GPU failure, after
    /// which the caller goes on from `out` on the CPU.
    pub async fn generate(
        &self,
        prompt: &[u32],
        max_tokens: usize,
        sampler: &mut Sampler,
        on_token: &mut dyn FnMut(u32) -> bool,
        out: &mut Vec<u32>,
    ) -> Result<GpuResult<()>> {
        if prompt.is_empty() {
            return Err(Error::invalid("an empty prompt (no tokens to start from)"));
        }
        let c = &self.model.config;
        let steps = max_tokens.min(c.max_positions.saturating_sub(prompt.len()));
        let x = self.embed(prompt, 0)?;
        let mut cache = match self.new_cache(prompt.len() + steps) {
            Ok(cache) => cache,
            Err(e) => return Ok(Err(e)),
        };
        let mut logits = match self.step(&x, prompt.len(), &mut cache, false).await {
            Ok(l) => l,
            Err(e) => return Ok(Err(e)),
        };
        for _ in 0..steps {
            let next = sampler.pick(&logits);
            out.push(next);
            if c.eos_token_ids.contains(&next) || !on_token(next) {
                break;
            }
            let x = self.embed(&[next], cache.len)?;
            logits = match self.step(&x, 1, &mut cache, false).await {
                Ok(l) => l,
                Err(e) => return Ok(Err(e)),
            };
        }
        Ok(Ok(()))
    }
}
