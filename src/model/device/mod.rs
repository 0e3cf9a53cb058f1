//! The model runtime on the GPU backend: the same forward passes as [`super::llama`] and
//! [`super::bert`], through the WGSL kernels of `backend::kernels` (`linear`, `norm`,
//! `elementwise`, `rope`, `attention`, `pool`), with the weights uploaded once when the model is
//! put on the device and, for decoders, the KV cache kept there. Each step reads back only what it
//! is for: the last position's logits when generating, every position's logits for an evaluation
//! window, the pooled embedding of a sentence. Token embeddings are looked up on the CPU (the
//! `n x hidden` rows are uploaded), and sampling stays there.
//!
//! [`Decoder`] and [`Encoder`] run a loaded model where a [`Backend`] says. The CPU runtime is the
//! reference and the fallback: a model that does not fit the device (an array over one storage
//! binding) or a GPU that fails mid-run moves the rest of the work to the CPU, the reason kept by
//! the backend ([`Backend::fallback`]), the failed step redone there; nothing panics.
//!
//! The GPU sums in other orders than the CPU (workgroup reductions, tiles), so results agree to
//! rounding, not bit for bit: logits within ~2e-6 of the largest on the tiny test models
//! (tests/it/runtime_gpu.rs).

#[cfg(feature = "gpu")]
mod bert;
#[cfg(feature = "gpu")]
mod llama;

use super::bert::Bert;
use super::llama::Llama;
use super::sample::Sampler;
use crate::backend::Backend;
use crate::error::Result;

#[cfg(feature = "gpu")]
pub use bert::DeviceBert;
#[cfg(feature = "gpu")]
pub use llama::{DeviceCache, DeviceLlama};

#[cfg(feature = "gpu")]
use crate::backend::{gpu::Gpu, GpuFailure};

/// A decoder ready to run: on the device (weights resident) or on the CPU.
pub enum Decoder<'m> {
    Cpu(&'m Llama),
    #[cfg(feature = "gpu")]
    Gpu(DeviceLlama<'m>),
}

/// An encoder ready to run: on the device (weights resident) or on the CPU.
pub enum Encoder<'m> {
    Cpu(&'m Bert),
    #[cfg(feature = "gpu")]
    Gpu(DeviceBert<'m>),
}

/// An encoder's first-layer input for `ids` (embeddings and their LayerNorm, on the CPU): what
/// [`DeviceBert::embed`] takes.
pub fn encoder_input(model: &Bert, ids: &[u32]) -> Result<Vec<f32>> {
    model.embed_tokens(ids)
}

/// Gives up the GPU for the rest of the run, keeping the reason.
#[cfg(feature = "gpu")]
fn give_up(gpu: &Gpu, what: &str, failure: GpuFailure) {
    let (GpuFailure::Unsupported(reason) | GpuFailure::Failed(reason)) = failure;
    gpu.give_up(format!("{what}: {reason}"));
}

impl<'m> Decoder<'m> {
    /// `model` on `backend`: its weights uploaded when the backend is a GPU that has not failed;
    /// on the CPU otherwise, or when the upload fails (recorded in the backend).
    pub fn load(model: &'m Llama, backend: &'m Backend) -> Decoder<'m> {
        match backend {
            Backend::Cpu => Decoder::Cpu(model),
            #[cfg(feature = "gpu")]
            Backend::Gpu(g) if g.fallback().is_none() => match DeviceLlama::load(model, g) {
                Ok(d) => Decoder::Gpu(d),
                Err(e) => {
                    give_up(g, "putting the decoder on the GPU", e);
                    Decoder::Cpu(model)
                }
            },
            #[cfg(feature = "gpu")]
            Backend::Gpu(_) => Decoder::Cpu(model),
        }
    }

    /// `cpu` or `gpu`: where the next step runs.
    pub fn name(&self) -> &'static str {
        match self {
            Decoder::Cpu(_) => "cpu",
            #[cfg(feature = "gpu")]
            Decoder::Gpu(_) => "gpu",
        }
    }

    fn model(&self) -> &'m Llama {
        match self {
            Decoder::Cpu(m) => m,
            #[cfg(feature = "gpu")]
            Decoder::Gpu(d) => d.model(),
        }
    }

    /// Moves to the CPU after a GPU failure (recorded).
    #[cfg(feature = "gpu")]
    fn fall_back(&mut self, what: &str, failure: GpuFailure) {
        if let Decoder::Gpu(d) = self {
            give_up(d.gpu(), what, failure);
            *self = Decoder::Cpu(d.model());
        }
    }

    /// The next-token logits of every position of `ids` run from an empty cache
    /// (`ids.len() x vocab`): an evaluation window.
    pub async fn window_logits(&mut self, ids: &[u32]) -> Result<Vec<f32>> {
        #[cfg(feature = "gpu")]
        if let Decoder::Gpu(d) = self {
            let x = d.embed(ids, 0)?;
            match d.window_logits(&x, ids.len()).await {
                Ok(l) => return Ok(l),
                Err(e) => self.fall_back("an evaluation window on the GPU", e),
            }
        }
        let m = self.model();
        Ok(m.logits(&m.forward(ids, &mut m.new_cache())?, ids.len()))
    }

    /// [`Llama::generate`] where this decoder runs; after a GPU failure the generation goes on on
    /// the CPU from the tokens so far (the same tokens, greedy or seeded).
    pub async fn generate(
        &mut self,
        prompt: &[u32],
        max_tokens: usize,
        sampler: &mut Sampler,
        on_token: &mut dyn FnMut(u32) -> bool,
    ) -> Result<Vec<u32>> {
        let mut out = Vec::new();
        #[cfg(feature = "gpu")]
        if let Decoder::Gpu(d) = self {
            match d
                .generate(prompt, max_tokens, sampler, on_token, &mut out)
                .await?
            {
                Ok(()) => return Ok(out),
                Err(e) => self.fall_back("generating on the GPU", e),
            }
            if out
                .last()
                .is_some_and(|t| self.model().config.eos_token_ids.contains(t))
            {
                return Ok(out);
            }
        }
        let mut context = prompt.to_vec();
        context.extend(&out);
        let rest = self
            .model()
            .generate(&context, max_tokens - out.len(), sampler, on_token)?;
        out.extend(rest);
        Ok(out)
    }
}

impl<'m> Encoder<'m> {
    /// `model` on `backend` (as [`Decoder::load`]).
    pub fn load(model: &'m Bert, backend: &'m Backend) -> Encoder<'m> {
        match backend {
            Backend::Cpu => Encoder::Cpu(model),
            #[cfg(feature = "gpu")]
            Backend::Gpu(g) if g.fallback().is_none() => match DeviceBert::load(model, g) {
                Ok(d) => Encoder::Gpu(d),
                Err(e) => {
                    give_up(g, "putting the encoder on the GPU", e);
                    Encoder::Cpu(model)
                }
            },
            #[cfg(feature = "gpu")]
            Backend::Gpu(_) => Encoder::Cpu(model),
        }
    }

    /// `cpu` or `gpu`: where the next sentence runs.
    pub fn name(&self) -> &'static str {
        match self {
            Encoder::Cpu(_) => "cpu",
            #[cfg(feature = "gpu")]
            Encoder::Gpu(_) => "gpu",
        }
    }

    /// [`Bert::embed_sentences`] where this encoder runs (one sentence per step on the GPU).
    pub async fn embed_sentences(&mut self, sentences: &[String]) -> Result<Vec<Vec<f32>>> {
        #[cfg(feature = "gpu")]
        if let Encoder::Gpu(d) = self {
            let mut out = Vec::with_capacity(sentences.len());
            for s in sentences {
                let x = encoder_input(d.model(), &d.model().tokenizer.encode(s)?)?;
                match d.embed(&x).await {
                    Ok(e) => out.push(e),
                    Err(e) => {
                        let model = d.model();
                        give_up(d.gpu(), "embedding on the GPU", e);
                        *self = Encoder::Cpu(model);
                        let rest = model.embed_sentences(&sentences[out.len()..])?;
                        out.extend(rest);
                        return Ok(out);
                    }
                }
            }
            return Ok(out);
        }
        self.model().embed_sentences(sentences)
    }

    fn model(&self) -> &'m Bert {
        match self {
            Encoder::Cpu(m) => m,
            #[cfg(feature = "gpu")]
            Encoder::Gpu(d) => d.model(),
        }
    }
}
