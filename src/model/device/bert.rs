//! A BERT-style encoder on the device: [`super::super::bert`]'s forward pass recorded as one pass
//! of kernels per sentence over resident weights; the pooled embedding is the one readback.

use super::llama::DeviceLinear;
use crate::backend::gpu::{DeviceTensor, Gpu, GpuResult, Pass};
use crate::backend::kernels::attention::AttentionShape;
use crate::backend::kernels::elementwise::Elementwise;
use crate::backend::kernels::pool::Pool;
use crate::model::bert::{Bert, Layer, Norm};
use crate::model::config::{Activation, PoolingMode};

struct DeviceNorm {
    weight: DeviceTensor,
    bias: DeviceTensor,
}

impl DeviceNorm {
    fn upload(gpu: &Gpu, n: &Norm) -> GpuResult<DeviceNorm> {
        Ok(DeviceNorm {
            weight: gpu.tensor(&n.weight, "LayerNorm.weight")?,
            bias: gpu.tensor(&n.bias, "LayerNorm.bias")?,
        })
    }
}

struct DeviceLayer {
    query: DeviceLinear,
    key: DeviceLinear,
    value: DeviceLinear,
    attn_out: DeviceLinear,
    attn_norm: DeviceNorm,
    intermediate: DeviceLinear,
    output: DeviceLinear,
    out_norm: DeviceNorm,
}

impl DeviceLayer {
    fn upload(gpu: &Gpu, l: &Layer) -> GpuResult<DeviceLayer> {
        let up = |x| DeviceLinear::upload(gpu, x);
        Ok(DeviceLayer {
            query: up(&l.query)?,
            key: up(&l.key)?,
            value: up(&l.value)?,
            attn_out: up(&l.attn_out)?,
            attn_norm: DeviceNorm::upload(gpu, &l.attn_norm)?,
            intermediate: up(&l.intermediate)?,
            output: up(&l.output)?,
            out_norm: DeviceNorm::upload(gpu, &l.out_norm)?,
        })
    }
}

/// An encoder whose layers are on the device (the embeddings and their LayerNorm run on the
/// CPU, and the `n x hidden` result is uploaded per sentence).
pub struct DeviceBert<'m> {
    model: &'m Bert,
    gpu: &'m Gpu,
    layers: Vec<DeviceLayer>,
}

/// The working arrays of one sentence of `n` tokens.
struct Work {
    x: DeviceTensor,
    q: DeviceTensor,
    k: DeviceTensor,
    v: DeviceTensor,
    ctx: DeviceTensor,
    hid: DeviceTensor,
    normed: DeviceTensor,
    inter: DeviceTensor,
    out: DeviceTensor,
    scores: DeviceTensor,
}

impl<'m> DeviceBert<'m> {
    /// Uploads `model`'s layer weights to `gpu` (once; every sentence reuses them).
    pub fn load(model: &'m Bert, gpu: &'m Gpu) -> GpuResult<DeviceBert<'m>> {
        let layers = model
            .layers
            .iter()
            .map(|l| DeviceLayer::upload(gpu, l))
            .collect::<GpuResult<Vec<_>>>()?;
        Ok(DeviceBert { model, gpu, layers })
    }

    pub fn model(&self) -> &'m Bert {
        self.model
    }

    pub fn gpu(&self) -> &'m Gpu {
        self.gpu
    }

    fn shape(&self, n: usize) -> AttentionShape {
        let c = &self.model.config;
        AttentionShape {
            rows: n,
            heads: c.num_heads,
            kv_heads: c.num_heads,
            head_dim: c.hidden_size / c.num_heads,
            past: 0,
            causal: false,
        }
    }

    fn work(&self, x: &[f32], n: usize) -> GpuResult<Work> {
        let (g, c) = (self.gpu, &self.model.config);
        let (h, i) = (c.hidden_size, c.intermediate_size);
        Ok(Work {
            x: g.tensor(x, "x")?,
            q: g.zeros(n * h, "q")?,
            k: g.zeros(n * h, "k")?,
            v: g.zeros(n * h, "v")?,
            ctx: g.zeros(n * h, "attention")?,
            hid: g.zeros(n * h, "hidden")?,
            normed: g.zeros(n * h, "normed")?,
            inter: g.zeros(n * i, "intermediate")?,
            out: g.zeros(n * h, "output")?,
            scores: g.zeros(self.shape(n).scratch(), "scores")?,
        })
    }

    /// Records one post-norm layer on the `n` rows of `w.x` (the result back in `w.x`).
    fn record_layer(&self, pass: &mut Pass, l: &DeviceLayer, w: &Work, n: usize) -> GpuResult<()> {
        let c = &self.model.config;
        let (h, eps) = (c.hidden_size, c.layer_norm_eps);
        l.query.record(pass, &w.x, n, &w.q)?;
        l.key.record(pass, &w.x, n, &w.k)?;
        l.value.record(pass, &w.x, n, &w.v)?;
        pass.attention(&self.shape(n), [&w.q, &w.k, &w.v], &w.scores, &w.ctx)?;
        l.attn_out.record(pass, &w.ctx, n, &w.hid)?;
        pass.elementwise(Elementwise::Add, &w.hid, Some(&w.x), n * h)?;
        let an = &l.attn_norm;
        pass.norm(&w.hid, n, &an.weight, Some(&an.bias), eps, &w.normed)?;
        l.intermediate.record(pass, &w.normed, n, &w.inter)?;
        let act = match c.activation {
            Activation::Gelu => Elementwise::Gelu,
            Activation::GeluTanh => Elementwise::GeluTanh,
        };
        pass.elementwise(act, &w.inter, None, n * c.intermediate_size)?;
        l.output.record(pass, &w.inter, n, &w.out)?;
        pass.elementwise(Elementwise::Add, &w.out, Some(&w.normed), n * h)?;
        let on = &l.out_norm;
        pass.norm(&w.out, n, &on.weight, Some(&on.bias), eps, &w.x)
    }

    /// One sentence's embedding from its embedded tokens `x` (`n x hidden`, the output of the
    /// embedding LayerNorm): the layers and the pooling on the device, one readback of `hidden`
    /// values, then unit length on the CPU when the model asks for it.
    pub async fn embed(&self, x: &[f32]) -> GpuResult<Vec<f32>> {
        let h = self.model.config.hidden_size;
        let n = x.len() / h;
        let w = self.work(x, n)?;
        let mut pass = self.gpu.pass();
        for l in &self.layers {
            self.record_layer(&mut pass, l, &w, n)?;
        }
        let mode = match self.model.pooling.mode {
            PoolingMode::Mean => Pool::Mean,
            PoolingMode::Max => Pool::Max,
            PoolingMode::Cls => Pool::First,
        };
        let pooled = self.gpu.zeros(h, "pooled")?;
        pass.pool(&w.x, n, h, mode, &pooled)?;
        pass.submit();
        let mut e = self.gpu.read_tensor(&pooled, h).await?;
        self.model.scale_as_asked(&mut e);
        Ok(e)
    }
}
