//! The front door: what the CLI, the page and Rust callers call. It strings the pipeline's stages
//! together (analyse -> allocate -> write -> report), decides once what kind of input a file is and
//! which pipeline takes it (a checkpoint or vector dataset, or a sequence file), and starts a run
//! again on the CPU when the GPU fails after the output was begun.
//!
//! The CLI (`main.rs`) and the browser bindings (`wasm.rs`) convert their own types to these calls
//! and back; nothing here prints or touches a path.

use std::io::Write;

use serde::Serialize;

use crate::backend::{self, Backend, BackendChoice};
use crate::codec::fwsvd::ImportanceMap;
use crate::error::{Error, Result};
use crate::io::safetensors;
use crate::model::calibrate::{ActivationStats, CalibrationOptions};
use crate::model::eval::{self, EncoderEval};
use crate::model::sample::Sampler;
use crate::model::sensitivity::{Sensitivity, SensitivityOptions};
use crate::model::weights::SafetensorsWeights;
use crate::model::{Model, ModelFiles};
use crate::pipeline::{
    analyse_on, input_kind, search, settle, write_container, Analysed, CompressOptions, InputKind,
    Plan, Settings,
};
use crate::progress::Progress;
use crate::report::{build_report, Report};
use crate::sequence::{self, SequenceOptions, SequenceReport};
use crate::source::Source;

/// Analyses and allocates: what `compress` would write, without writing it (`lowbit plan`).
/// `file_name` tells `.csv` and `.fvecs` inputs apart (see
/// [`crate::checkpoint::Checkpoint::load`]). Runs on the backend `opts.backend` asks for.
#[cfg(not(target_arch = "wasm32"))]
pub fn plan<S: Source + ?Sized>(
    file: &S,
    file_name: &str,
    opts: &CompressOptions,
    progress: &mut dyn Progress,
) -> Result<Plan> {
    let (backend, reason) = backend::block_on(Backend::new(opts.backend))?;
    backend::block_on(plan_on(&backend, &reason, file, file_name, opts, progress))
}

/// [`plan`] on the CPU (the browser's synchronous entry point; WebGPU goes through [`plan_on`]).
#[cfg(target_arch = "wasm32")]
pub fn plan<S: Source + ?Sized>(
    file: &S,
    file_name: &str,
    opts: &CompressOptions,
    progress: &mut dyn Progress,
) -> Result<Plan> {
    backend::ready(plan_on(
        &Backend::Cpu,
        "browser CPU path",
        file,
        file_name,
        opts,
        progress,
    ))
}

/// [`plan`] on a given backend (`backend_reason` says why it was chosen, for the report).
pub async fn plan_on<S: Source + ?Sized>(
    backend: &Backend,
    backend_reason: &str,
    file: &S,
    file_name: &str,
    opts: &CompressOptions,
    progress: &mut dyn Progress,
) -> Result<Plan> {
    let mut a = analyse_on(backend, backend_reason, file, file_name, opts, progress).await?;
    let mut plan = settle(backend, &mut a, opts, file, progress)
        .await
        .map_err(|e| e.in_file(file_name))?;
    plan.search = search::improve(backend, &mut plan, opts, file, progress)
        .await
        .map_err(|e| e.in_file(file_name))?;
    // The model files count in the file's size, as `compress` writes them.
    crate::pipeline::model::attach_files(&mut plan, &opts.model_files)?;
    Ok(plan)
}

/// Compresses a checkpoint (safetensors or npy bytes) to a `.lowbit` written to `out`; returns the
/// report. `out` receives bytes only as tensors are encoded; callers that write files write to a
/// temporary name and rename on success. Runs on the backend `opts.backend` asks for.
#[cfg(not(target_arch = "wasm32"))]
pub fn compress<S: Source + ?Sized>(
    file: &S,
    file_name: &str,
    opts: &CompressOptions,
    progress: &mut dyn Progress,
    out: &mut dyn Write,
) -> Result<Report> {
    let (backend, reason) =
        backend::block_on(Backend::new(opts.backend)).map_err(|e| e.in_file(file_name))?;
    backend::block_on(compress_on(
        &backend, &reason, file, file_name, opts, progress, out,
    ))
}

/// [`compress`] on the CPU (the browser's synchronous entry point; WebGPU goes through
/// [`compress_on`]).
#[cfg(target_arch = "wasm32")]
pub fn compress<S: Source + ?Sized>(
    file: &S,
    file_name: &str,
    opts: &CompressOptions,
    progress: &mut dyn Progress,
    out: &mut dyn Write,
) -> Result<Report> {
    backend::ready(compress_on(
        &Backend::Cpu,
        "browser CPU path",
        file,
        file_name,
        opts,
        progress,
        out,
    ))
}

/// [`compress`] on a given backend. If the GPU fails after the header is written, the sections
/// re-encoded on the CPU differ from what was measured: that is reported as
/// [`Error::GpuFailedWhileWriting`] and the caller starts again on the CPU.
pub async fn compress_on<S: Source + ?Sized>(
    backend: &Backend,
    backend_reason: &str,
    file: &S,
    file_name: &str,
    opts: &CompressOptions,
    progress: &mut dyn Progress,
    out: &mut dyn Write,
) -> Result<Report> {
    let mut a = analyse_on(backend, backend_reason, file, file_name, opts, progress).await?;
    let mut plan = settle(backend, &mut a, opts, file, progress)
        .await
        .map_err(|e| e.in_file(file_name))?;
    plan.search = search::improve(backend, &mut plan, opts, file, progress)
        .await
        .map_err(|e| e.in_file(file_name))?;
    crate::pipeline::model::attach_files(&mut plan, &opts.model_files)?;
    write_plan_on(backend, &a, &mut plan, opts, file, progress, out)
        .await
        .map_err(|e| e.in_file(file_name))?;
    Ok(build_report(&plan, file_name, a.input_bytes, opts, true))
}

/// Writes the `.lowbit` of `plan`, made from `analysed` (whose tensors are read from `file`, or
/// from the values a `.csv` / `.fvecs` input was converted to).
pub async fn write_plan_on<S: Source + ?Sized>(
    backend: &Backend,
    analysed: &Analysed,
    plan: &mut Plan,
    opts: &CompressOptions,
    file: &S,
    progress: &mut dyn Progress,
    out: &mut dyn Write,
) -> Result<()> {
    match &analysed.converted {
        Some(values) => write_container(backend, plan, opts, values, progress, out).await,
        None => write_container(backend, plan, opts, file, progress, out).await,
    }
}

/// The values the `.lowbit` of `plan` (made from `analysed`, whose tensors are read from `file`
/// or from the values a `.csv` / `.fvecs` input was converted to) restores for tensor `i`:
/// [`crate::pipeline::write::restored_values`].
pub async fn restored_tensor_on<S: Source + ?Sized>(
    backend: &Backend,
    analysed: &Analysed,
    plan: &Plan,
    opts: &CompressOptions,
    file: &S,
    i: usize,
) -> Result<Vec<f32>> {
    use crate::pipeline::write::restored_values;
    match &analysed.converted {
        Some(values) => restored_values(backend, plan, opts, values, i).await,
        None => restored_values(backend, plan, opts, file, i).await,
    }
}

/// What a compression run made: a checkpoint's (or vector dataset's) report, or a sequence file's.
#[derive(Clone, Debug)]
pub enum Compressed {
    Model(Box<Report>),
    Sequence(Box<SequenceReport>),
}

/// Where a compression writes its `.lowbit`. A run may need a second attempt (the GPU failed
/// after the output was begun, so it starts again on the CPU): each attempt gets a fresh, empty
/// output, kept when the attempt succeeds and discarded when it fails.
pub trait Output {
    fn attempt(&mut self, write: &mut dyn FnMut(&mut dyn Write) -> Result<()>) -> Result<()>;
}

impl Output for Vec<u8> {
    fn attempt(&mut self, write: &mut dyn FnMut(&mut dyn Write) -> Result<()>) -> Result<()> {
        self.clear();
        let done = write(self);
        if done.is_err() {
            self.clear();
        }
        done
    }
}

/// What a compression knows about the model a checkpoint holds, besides its weights.
#[derive(Clone, Debug, Default)]
pub struct ModelInputs {
    /// The model's config and tokenizer files, stored in the `.lowbit`.
    pub files: ModelFiles,
    /// The statistics of a calibration run ([`calibrate`]), if any.
    pub activations: Option<ActivationStats>,
    /// The measured sensitivity of its weights ([`measure_sensitivity`]), if any.
    pub sensitivity: Option<Sensitivity>,
    /// A search after the allocation, judged by running the compressed model, if asked for.
    pub search: Option<crate::pipeline::search::SearchOptions>,
}

/// Compresses any input lowbit takes: the kind is detected here (a sequence file is coded
/// losslessly as a whole; a checkpoint, npy array or vector dataset through the pipeline), the
/// settings are checked against it, and a run whose GPU failed while writing is started again on
/// the CPU. `importance`: a parsed importance file (`--importance`), if any; `model`: what is
/// known about the model (checkpoints only).
pub fn compress_input<S: Source + ?Sized>(
    file: &S,
    file_name: &str,
    settings: &Settings,
    importance: Option<ImportanceMap>,
    model: ModelInputs,
    progress: &mut dyn Progress,
    out: &mut dyn Output,
) -> Result<Compressed> {
    if let InputKind::Sequence(kind) = kind_to_compress(file, file_name)? {
        settings.check_lossless(kind, importance.is_some())?;
        if model.activations.is_some() || model.sensitivity.is_some() || model.search.is_some() {
            return Err(Error::option(
                "--calibrate does not apply to a sequence file: it is compressed losslessly",
            ));
        }
        let whole = file.whole().map_err(|e| e.in_file(file_name))?;
        let mut report = None;
        out.attempt(&mut |w| {
            let options = SequenceOptions::default();
            let r = sequence::compress(&whole, file_name, kind, &options, progress, w);
            report = Some(r.map_err(|e| e.in_file(file_name))?);
            Ok(())
        })?;
        let report = report.expect("a successful attempt sets the report");
        return Ok(Compressed::Sequence(Box::new(report)));
    }
    let mut opts = settings.options()?;
    opts.importance = importance;
    opts.model_files = model.files;
    opts.activations = model.activations;
    opts.sensitivity = model.sensitivity;
    opts.search = model.search;
    let (mut report, gpu_failure) = retry_on_cpu(&opts, |opts| {
        let mut report = None;
        out.attempt(&mut |w| {
            report = Some(compress(file, file_name, opts, progress, w)?);
            Ok(())
        })?;
        Ok(report.expect("a successful attempt sets the report"))
    })?;
    if let Some(reason) = gpu_failure {
        report.backend.fallback = Some(format!(
            "the GPU failed while the output was being written ({reason}); compressed again on the CPU"
        ));
    }
    Ok(Compressed::Model(Box::new(report)))
}

/// The kind of `file` for compression: [`input_kind`], with a clear error for a binary file that
/// is no checkpoint: a known format lowbit does not read is named (an old-style PyTorch pickle,
/// HDF5, ONNX...); otherwise the error says what was tried. A zip archive goes to the PyTorch
/// reader and a GGUF file to the GGUF reader, whose errors say what is wrong with them.
pub fn kind_to_compress<S: Source + ?Sized>(file: &S, file_name: &str) -> Result<InputKind> {
    let kind = input_kind(file, file_name).map_err(|e| e.in_file(file_name))?;
    let by_name = crate::checkpoint::vector_format_by_name(file_name).is_some();
    if kind == InputKind::Checkpoint && !by_name && file.len() > 0 {
        let head = file.prefix(16).map_err(|e| e.in_file(file_name))?;
        if head.starts_with(crate::io::npy::MAGIC)
            || head.starts_with(crate::io::gguf::MAGIC)
            || crate::io::zip::is_zip(&head)
        {
            return Ok(kind);
        }
        if let Err(e) = safetensors::read_header_from(file) {
            if let Some(e) = crate::checkpoint::foreign_format(&head, file_name) {
                return Err(e.in_file(file_name));
            }
            return Err(Error::invalid(format!(
                "neither a checkpoint (.safetensors, a PyTorch .pt/.pth/.bin in torch.save's zip \
                 format, .gguf, .npy) nor a FASTA, FASTQ or text file (binary content that is not a \
                 valid safetensors header: {e})"
            ))
            .in_file(file_name));
        }
    }
    Ok(kind)
}

/// Runs `attempt` with `opts`, and once more on the CPU when it fails with
/// [`Error::GpuFailedWhileWriting`] (the GPU failed after the output was begun: the sections
/// re-encoded on the CPU would differ from what was measured, so the run starts over). Returns
/// the result and, when the run was started again, why.
pub fn retry_on_cpu<T>(
    opts: &CompressOptions,
    mut attempt: impl FnMut(&CompressOptions) -> Result<T>,
) -> Result<(T, Option<String>)> {
    match attempt(opts) {
        Err(Error::GpuFailedWhileWriting { reason }) => {
            let mut cpu = opts.clone();
            cpu.backend = BackendChoice::Cpu;
            Ok((attempt(&cpu)?, Some(reason)))
        }
        other => Ok((other?, None)),
    }
}

/// The report `lowbit plan` shows: what `compress` would write, nothing written.
pub fn plan_report<S: Source + ?Sized>(
    file: &S,
    file_name: &str,
    opts: &CompressOptions,
    progress: &mut dyn Progress,
) -> Result<Report> {
    if let InputKind::Sequence(kind) = kind_to_compress(file, file_name)? {
        return Err(Error::invalid(format!(
            "a {kind:?} file has no size/error trade-off to plan: `lowbit compress` codes it losslessly"
        ))
        .in_file(file_name));
    }
    let plan = plan(file, file_name, opts, progress).map_err(|e| e.in_file(file_name))?;
    Ok(build_report(&plan, file_name, file.len(), opts, false))
}

/// The model a file holds, ready to run: a `.lowbit` (its weights decoded tensor by tensor, no
/// restored file written; its stored config and tokenizer) or a safetensors checkpoint. `beside`
/// gives the model files the file does not store (those found next to it, or dropped with it in
/// the page); a file's own stored files come first.
pub fn load_model(file: &[u8], file_name: &str, beside: &ModelFiles) -> Result<Model> {
    let load = || -> Result<Model> {
        let header = safetensors::read_header(file)?;
        if header.metadata.get("format").map(String::as_str) == Some(crate::container::FORMAT_NAME)
        {
            let c = crate::container::Container::read(file)?;
            let mut files = crate::pipeline::model::files_of(&c, file)?;
            for (name, bytes) in beside.iter() {
                if files.get(name).is_none() {
                    files.insert(name, bytes.to_vec())?;
                }
            }
            let weights = crate::pipeline::model::ContainerWeights::new(&c, file)?;
            Model::load(&files, &weights)
        } else {
            Model::load(beside, &SafetensorsWeights::new(file)?)
        }
    };
    load().map_err(|e| e.in_file(file_name))
}

/// Runs the model of checkpoint `file` (with its `model_files`: config and tokenizer) over
/// `text` and returns the input statistics of its linear weights, for [`compress_input`]'s
/// `activations` (docs/CALIBRATION.md). `source` names the text in the report.
pub fn calibrate(
    file: &[u8],
    file_name: &str,
    model_files: &ModelFiles,
    text: &str,
    source: &str,
    options: &CalibrationOptions,
) -> Result<ActivationStats> {
    let model = load_model(file, file_name, model_files)?;
    crate::model::calibrate::collect(&model, text, options, source).map_err(|e| e.in_file(source))
}

/// The input statistics of a llama.cpp importance matrix (`imatrix`, GGUF or legacy `.dat`, as
/// `llama-imatrix` writes it) for the weights of checkpoint `file`, for [`compress_input`]'s
/// `activations`: llama.cpp's weight names are mapped onto the checkpoint's
/// (docs/CALIBRATION.md).
pub fn read_imatrix(
    file: &[u8],
    file_name: &str,
    imatrix: &[u8],
    imatrix_name: &str,
) -> Result<ActivationStats> {
    let m = crate::io::imatrix::read(imatrix).map_err(|e| e.in_file(imatrix_name))?;
    let (checkpoint, _) =
        crate::checkpoint::Checkpoint::load(file, file_name).map_err(|e| e.in_file(file_name))?;
    let weights: Vec<(String, Vec<usize>)> = checkpoint
        .tensors
        .iter()
        .map(|t| (t.name.clone(), t.shape.clone()))
        .collect();
    crate::model::calibrate::from_imatrix(&m, &weights, imatrix_name)
}

/// Runs the model of checkpoint `file` (with its `model_files`) over `text`, once per weight
/// matrix with that matrix perturbed, and returns each matrix's sensitivity, for
/// [`compress_input`]'s `model.sensitivity` (docs/CALIBRATION.md). `source` names the text in
/// the report.
pub fn measure_sensitivity(
    file: &[u8],
    file_name: &str,
    model_files: &ModelFiles,
    text: &str,
    source: &str,
    options: &SensitivityOptions,
) -> Result<Sensitivity> {
    let mut model = load_model(file, file_name, model_files)?;
    crate::model::sensitivity::measure(&mut model, text, options, source)
        .map_err(|e| e.in_file(source))
}

/// The model files a `.lowbit` stores (none for other files or older `.lowbit`s).
pub fn model_files_of(file: &[u8], file_name: &str) -> Result<ModelFiles> {
    let header = safetensors::read_header(file).map_err(|e| e.in_file(file_name))?;
    if header.metadata.get("format").map(String::as_str) != Some(crate::container::FORMAT_NAME) {
        return Ok(ModelFiles::new());
    }
    let c = crate::container::Container::read(file).map_err(|e| e.in_file(file_name))?;
    crate::pipeline::model::files_of(&c, file).map_err(|e| e.in_file(file_name))
}

/// Sentences embedded by a compressed model and, when there is one, its original: what the page's
/// Try-it panel shows for an encoder.
#[derive(Clone, Debug, Serialize)]
pub struct SentenceComparison {
    pub sentences: Vec<String>,
    /// `[i][j]`: the cosine between the embeddings of sentences `i` and `j` by the original.
    pub similarity_original: Option<Vec<Vec<f64>>>,
    /// The same under the compressed model.
    pub similarity_compressed: Vec<Vec<f64>>,
    /// Per sentence: the cosine between its original and its compressed embedding.
    pub cosine: Option<Vec<f64>>,
    /// Their mean and smallest, and nearest-neighbour agreement (as `lowbit eval`).
    pub summary: Option<EncoderEval>,
}

fn as_encoder(m: &Model) -> Result<&crate::model::bert::Bert> {
    match m {
        Model::Encoder(bert) => Ok(bert),
        Model::Decoder(_) => Err(Error::invalid(
            "this is a decoder (Llama-style): it generates text and does not embed sentences",
        )),
    }
}

impl SentenceComparison {
    fn of(sentences: &[String], before: Option<Vec<Vec<f32>>>, after: Vec<Vec<f32>>) -> Self {
        let similarity = |e: &[Vec<f32>]| -> Vec<Vec<f64>> {
            e.iter()
                .map(|a| e.iter().map(|b| eval::cosine(a, b)).collect())
                .collect()
        };
        SentenceComparison {
            sentences: sentences.to_vec(),
            similarity_original: before.as_deref().map(similarity),
            similarity_compressed: similarity(&after),
            cosine: before.as_ref().map(|b| {
                b.iter()
                    .zip(&after)
                    .map(|(x, y)| eval::cosine(x, y))
                    .collect()
            }),
            summary: before.map(|b| eval::compare_embeddings(&b, &after)),
        }
    }
}

/// Embeds `sentences` with both encoders (see [`SentenceComparison`]).
pub fn compare_sentences(
    original: Option<&Model>,
    compressed: &Model,
    sentences: &[String],
) -> Result<SentenceComparison> {
    if sentences.is_empty() {
        return Err(Error::invalid("no sentences to embed"));
    }
    let after = as_encoder(compressed)?.embed_sentences(sentences)?;
    let before = original
        .map(|m| as_encoder(m)?.embed_sentences(sentences))
        .transpose()?;
    Ok(SentenceComparison::of(sentences, before, after))
}

/// [`compare_sentences`] with both encoders run where `backend` says (on the GPU: weights
/// resident, one readback per sentence; after a GPU failure the rest on the CPU).
pub async fn compare_sentences_on(
    original: Option<&Model>,
    compressed: &Model,
    sentences: &[String],
    backend: &Backend,
) -> Result<SentenceComparison> {
    use crate::model::device::Encoder;
    if sentences.is_empty() {
        return Err(Error::invalid("no sentences to embed"));
    }
    let after = Encoder::load(as_encoder(compressed)?, backend)
        .embed_sentences(sentences)
        .await?;
    let before = match original {
        Some(m) => Some(
            Encoder::load(as_encoder(m)?, backend)
                .embed_sentences(sentences)
                .await?,
        ),
        None => None,
    };
    Ok(SentenceComparison::of(sentences, before, after))
}

/// A generation's text and token counts.
#[derive(Clone, Debug, Serialize)]
pub struct Generated {
    pub prompt_tokens: usize,
    pub tokens: usize,
    /// The generated tokens decoded (special tokens left out), as `lowbit run` prints it.
    pub text: String,
}

/// [`generate_text`] with the decoder run where `backend` says (on the GPU: weights and KV cache
/// resident, one readback of the last logits per token; after a GPU failure the generation goes
/// on on the CPU, the reason in [`Backend::fallback`]). On the CPU backend it is
/// [`generate_text`] exactly.
pub async fn generate_text_on(
    model: &Model,
    backend: &Backend,
    prompt: &str,
    max_tokens: usize,
    sampler: &mut Sampler,
    on_text: &mut dyn FnMut(&str, usize) -> bool,
) -> Result<Generated> {
    let llama = model.as_decoder()?;
    let ids = llama.tokenizer.encode(prompt)?;
    let mut generated = Vec::new();
    let mut decoder = crate::model::device::Decoder::load(llama, backend);
    let out = decoder
        .generate(&ids, max_tokens, sampler, &mut |t| {
            generated.push(t);
            match llama.tokenizer.decode(&generated) {
                Ok(text) if !text.ends_with('\u{FFFD}') => on_text(&text, generated.len()),
                _ => true,
            }
        })
        .await?;
    Ok(Generated {
        prompt_tokens: ids.len(),
        tokens: out.len(),
        text: llama.tokenizer.decode(&out)?,
    })
}

/// Generates from `prompt` with a decoder (see [`crate::model::llama::Llama::generate`]), calling `on_text` after each
/// token with the text so far and the number of tokens (not while the text ends inside a UTF-8
/// character); `on_text` returning false stops the generation.
pub fn generate_text(
    model: &Model,
    prompt: &str,
    max_tokens: usize,
    sampler: &mut Sampler,
    on_text: &mut dyn FnMut(&str, usize) -> bool,
) -> Result<Generated> {
    backend::ready(generate_text_on(
        model,
        &Backend::Cpu,
        prompt,
        max_tokens,
        sampler,
        on_text,
    ))
}
