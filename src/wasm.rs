//! The browser bindings: type and error conversion only; every decision is the core's.
//!
//! The page's Web Worker (www/worker.js) owns this module and calls one function per request. The
//! open file stays a `File`: headers and tensors are read with `File.slice()` through
//! `FileReaderSync` (synchronous, allowed in workers), one tensor at a time, so a checkpoint larger
//! than wasm32's 4 GiB address space goes through. Outputs are built as `Blob`s of parts that live
//! outside wasm memory. Cancelling is the worker's termination (the page starts a new one), so the
//! core's `Progress::cancelled` is never needed here.

use std::borrow::Cow;
use std::cell::RefCell;
use std::io::Write;
use std::ops::Range;
use std::rc::Rc;

use serde::Serialize;
use wasm_bindgen::prelude::*;

use crate::backend::{Backend, BackendChoice};
use crate::error::{Error, Result};
use crate::model::calibrate::ActivationStats;
use crate::model::config::Architecture;
use crate::model::eval::{EvalOptions, BUILTIN_TEXT};
use crate::model::files::MODEL_FILE_NAMES;
use crate::model::sample::Sampler;
use crate::model::sensitivity::Sensitivity;
use crate::model::{Model, ModelFiles};
use crate::pipeline::{self, Analysed, CompressOptions, InputKind, Plan, Settings};
use crate::progress::Progress;
use crate::source::{usize_range, Source};

#[wasm_bindgen(start)]
fn start() {
    console_error_panic_hook::set_once();
}

fn js_error(e: Error) -> JsError {
    JsError::new(&e.to_string())
}

fn to_js<T: Serialize>(value: &T) -> std::result::Result<JsValue, JsError> {
    value
        .serialize(&serde_wasm_bindgen::Serializer::json_compatible())
        .map_err(|e| JsError::new(&e.to_string()))
}

fn io_error(what: &str, e: JsValue) -> Error {
    Error::io(
        what,
        std::io::Error::other(e.as_string().unwrap_or_else(|| format!("{e:?}"))),
    )
}

/// A browser `File` (or any `Blob`) read range by range.
struct BlobSource {
    blob: web_sys::Blob,
    len: u64,
}

impl Source for BlobSource {
    fn len(&self) -> u64 {
        self.len
    }

    fn read(&self, range: Range<u64>) -> Result<Cow<'_, [u8]>> {
        // The length must fit wasm memory; offsets may not (f64 is exact to 2^53).
        usize_range(&(0..range.end.saturating_sub(range.start)))?;
        let part = self
            .blob
            .slice_with_f64_and_f64(range.start as f64, range.end as f64)
            .map_err(|e| io_error("input", e))?;
        let reader = web_sys::FileReaderSync::new().map_err(|e| io_error("input", e))?;
        let buffer = reader
            .read_as_array_buffer(&part)
            .map_err(|e| io_error("input", e))?;
        Ok(Cow::Owned(js_sys::Uint8Array::new(&buffer).to_vec()))
    }
}

/// Output assembled as a `Blob` of parts kept by the browser, not in wasm memory.
struct BlobSink {
    parts: js_sys::Array,
    pending: Vec<u8>,
}

/// Bytes gathered before they are handed to the browser as one part.
const PART_BYTES: usize = 8 << 20;

impl BlobSink {
    fn new() -> Self {
        BlobSink {
            parts: js_sys::Array::new(),
            pending: Vec::new(),
        }
    }

    fn push_pending(&mut self) {
        if !self.pending.is_empty() {
            self.parts
                .push(&js_sys::Uint8Array::from(self.pending.as_slice()));
            self.pending.clear();
        }
    }

    fn into_blob(mut self) -> std::result::Result<web_sys::Blob, JsError> {
        self.push_pending();
        let options = web_sys::BlobPropertyBag::new();
        options.set_type("application/octet-stream");
        web_sys::Blob::new_with_u8_array_sequence_and_options(&self.parts, &options)
            .map_err(|e| JsError::new(&format!("cannot build the output Blob: {e:?}")))
    }
}

impl Write for BlobSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.pending.extend_from_slice(buf);
        if self.pending.len() >= PART_BYTES {
            self.push_pending();
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Progress posted to a JS callback `({stage, total, done, item})`, at most every 100 ms (and at
/// the end of each stage), so the page is not flooded.
struct JsProgress {
    callback: js_sys::Function,
    stage: String,
    total: u64,
    done: u64,
    last_post: f64,
    working: String,
    index: u64,
    count: u64,
}

#[derive(Serialize)]
struct ProgressEvent<'a> {
    stage: &'a str,
    total: u64,
    done: u64,
    item: &'a str,
    /// The item being worked on and its place (`index` of `count`, from 1), where the core says.
    working: &'a str,
    index: u64,
    count: u64,
}

impl JsProgress {
    fn new(callback: js_sys::Function) -> Self {
        JsProgress {
            callback,
            stage: String::new(),
            total: 0,
            done: 0,
            last_post: 0.0,
            working: String::new(),
            index: 0,
            count: 0,
        }
    }

    fn post(&mut self, item: &str) {
        self.last_post = js_sys::Date::now();
        let event = ProgressEvent {
            stage: &self.stage,
            total: self.total,
            done: self.done,
            item,
            working: &self.working,
            index: self.index,
            count: self.count,
        };
        if let Ok(value) = to_js(&event) {
            // A throwing callback must not stop the run.
            let _ = self.callback.call1(&JsValue::NULL, &value);
        }
    }
}

impl Progress for JsProgress {
    fn stage(&mut self, name: &str, total: u64) {
        self.stage = name.to_string();
        self.total = total;
        self.done = 0;
        self.working.clear();
        self.index = 0;
        self.count = 0;
        self.post("");
    }

    /// Posted at once (not held back by the 100 ms limit): the page shows what the long
    /// computation that follows is working on.
    fn working_on(&mut self, item: &str, index: u64, count: u64) {
        self.working = item.to_string();
        self.index = index;
        self.count = count;
        self.post("");
    }

    fn advance(&mut self, done: u64, item: &str) {
        self.done += done;
        if item == self.working {
            // Finished: no longer what is being worked on.
            self.working.clear();
        }
        if self.done >= self.total || js_sys::Date::now() - self.last_post >= 100.0 {
            self.post(item);
        }
    }
}

/// lowbit's version (Cargo's), shown on the page.
#[wasm_bindgen]
pub fn version() -> String {
    env!("CARGO_PKG_VERSION").to_string()
}

/// The built-in paragraph the sensitivity is measured on when the calibration box is empty (the
/// CLI's default text): the page shows it.
#[wasm_bindgen]
pub fn builtin_text() -> String {
    BUILTIN_TEXT.to_string()
}

/// The built-in example checkpoint (`lowbit demo`'s, `demo::demo_checkpoint`): safetensors bytes
/// the page opens as `demo.safetensors`.
#[wasm_bindgen]
pub fn demo_checkpoint() -> Vec<u8> {
    crate::demo::demo_checkpoint()
}

/// The page's settings (app.js sends the fields of [`Settings`] as an object), with the backend
/// this worker chose.
fn page_settings(value: JsValue) -> Result<Settings> {
    serde_wasm_bindgen::from_value(value)
        .map_err(|e| Error::option(format!("settings from the page: {e}")))
}

/// The options for `page` on `backend`, with the model files dropped beside the open checkpoint
/// (stored in the `.lowbit`) and the model's sensitivity when it was measured.
fn options_for(page: &Settings, backend: BackendChoice) -> Result<CompressOptions> {
    let mut settings = page.clone();
    settings.backend = backend;
    let mut opts = settings.options()?;
    SESSION.with(|s| {
        if let Some(s) = s.borrow().as_ref() {
            opts.model_files = s.model_files.clone();
            // Measured by `analysed_for` before the analysis that uses it, on this page's text.
            if page.sensitivity {
                let key = page.calibration_key();
                let measured = s.sensitivity.as_ref().filter(|(k, _)| *k == key);
                opts.sensitivity = measured.and_then(|(_, m)| m.clone());
                opts.activations = s
                    .activations
                    .as_ref()
                    .filter(|(k, _)| *k == key)
                    .and_then(|(_, a)| a.clone());
            }
        }
    });
    Ok(opts)
}

#[derive(Serialize)]
struct MethodEntry {
    name: &'static str,
    /// What the page shows beside the name, if anything.
    note: Option<&'static str>,
}

/// The methods the page offers, in order (`auto` first): the one list is the core's.
#[wasm_bindgen]
pub fn methods() -> std::result::Result<JsValue, JsError> {
    let entries: Vec<MethodEntry> = crate::pipeline::method_names()
        .into_iter()
        .map(|name| MethodEntry {
            name,
            note: match crate::pipeline::parse_method(name) {
                Ok(Some(m)) => m.note(),
                _ => Some("the allocator picks per tensor"),
            },
        })
        .collect();
    to_js(&entries)
}

/// The worker's one open file and what is known about it.
struct Session {
    file: Rc<BlobSource>,
    name: String,
    kind: InputKind,
    analysed: Option<(String, Rc<Analysed>)>,
    /// The model files dropped with the file (and, for a `.lowbit`, those it stores).
    model_files: ModelFiles,
    /// The model's sensitivity, once measured, with the calibration text's key
    /// (`Settings::calibration_key`) it was measured on (`None` beside it: the file is no model
    /// lowbit runs). Only the last text's: a new text measures again.
    sensitivity: Option<(String, Option<Sensitivity>)>,
    /// The input statistics of the model's linear weights on the page's calibration text, with
    /// that text's key (`None` beside it: the built-in paragraph, on which the CLI collects none
    /// either, or no model).
    activations: Option<(String, Option<ActivationStats>)>,
}

impl Session {
    /// The last measurement, if it was made for settings with this analysis key.
    fn measured(&self, key: &str) -> Option<Rc<Analysed>> {
        self.analysed
            .as_ref()
            .filter(|(k, _)| k == key)
            .map(|(_, a)| a.clone())
    }
}

struct Engine {
    backend: Rc<Backend>,
    choice: BackendChoice,
    reason: String,
}

/// The models of the Try-it panel: the original (when the open file is its checkpoint) and the
/// compressed one.
struct Loaded {
    original: Option<Model>,
    compressed: Model,
}

thread_local! {
    static SESSION: RefCell<Option<Session>> = const { RefCell::new(None) };
    static ENGINE: RefCell<Option<Engine>> = const { RefCell::new(None) };
    static MODELS: RefCell<Option<Rc<Loaded>>> = const { RefCell::new(None) };
    /// The Try-it panel's own WebGPU device (a model that fails on it leaves the compression
    /// kernels' device alone).
    static RUNTIME_GPU: RefCell<Option<Rc<Backend>>> = const { RefCell::new(None) };
}

fn session<T>(f: impl FnOnce(&mut Session) -> Result<T>) -> Result<T> {
    SESSION.with(|s| match s.borrow_mut().as_mut() {
        Some(session) => f(session),
        None => Err(Error::option("no file is open")),
    })
}

fn engine() -> (Rc<Backend>, BackendChoice, String) {
    ENGINE.with(|e| match e.borrow().as_ref() {
        Some(e) => (e.backend.clone(), e.choice, e.reason.clone()),
        None => (
            Rc::new(Backend::Cpu),
            BackendChoice::Cpu,
            "browser CPU path".to_string(),
        ),
    })
}

#[derive(Serialize)]
struct Opened {
    kind: &'static str,
    name: String,
    inspection: pipeline::Inspection,
    /// The model the files describe, when there are model files.
    model: Option<ModelInfo>,
}

/// What the page says about the model a set of model files describes.
#[derive(Serialize)]
struct ModelInfo {
    /// "encoder" or "decoder"; `None` when the files describe no model the runtime runs.
    family: Option<&'static str>,
    /// The architecture in words, or why it cannot run.
    description: String,
    /// The model files' names.
    files: Vec<String>,
}

fn describe(arch: &Architecture) -> String {
    match arch {
        Architecture::Encoder(c) => format!(
            "BERT-style encoder: {} layers, width {}, {} heads, vocabulary {}",
            c.num_layers, c.hidden_size, c.num_heads, c.vocab_size
        ),
        Architecture::Decoder(c) => format!(
            "Llama-style decoder: {} layers, width {}, {} heads ({} key/value), vocabulary {}, \
             context {}",
            c.num_layers, c.hidden_size, c.num_heads, c.num_kv_heads, c.vocab_size, c.max_positions
        ),
    }
}

fn model_info(files: &ModelFiles) -> Option<ModelInfo> {
    if files.is_empty() {
        return None;
    }
    let names = files.iter().map(|(n, _)| n.to_string()).collect();
    let ready = || -> Result<Architecture> {
        let arch = Architecture::from_files(files)?;
        crate::model::tokenizer::Tokenizer::from_files(files)?;
        Ok(arch)
    };
    Some(match ready() {
        Ok(arch) => ModelInfo {
            family: Some(arch.family()),
            description: describe(&arch),
            files: names,
        },
        Err(e) => ModelInfo {
            family: None,
            description: e.to_string(),
            files: names,
        },
    })
}

/// The names of the model files lowbit keeps beside a checkpoint (config, tokenizer, pooling), as
/// paths relative to the model folder: the page recognises dropped files by them.
#[wasm_bindgen]
pub fn model_file_names() -> Vec<String> {
    MODEL_FILE_NAMES.iter().map(|n| n.to_string()).collect()
}

/// Model files from the page: an object of `{name: Blob}`.
fn model_files_from(object: Option<js_sys::Object>) -> Result<ModelFiles> {
    let mut files = ModelFiles::new();
    let Some(object) = object else {
        return Ok(files);
    };
    for entry in js_sys::Object::entries(&object).iter() {
        let pair: js_sys::Array = entry.unchecked_into();
        let name = pair.get(0).as_string().unwrap_or_default();
        let blob: web_sys::Blob = pair.get(1).unchecked_into();
        let source = BlobSource {
            len: blob.size() as u64,
            blob,
        };
        let bytes = source.whole().map_err(|e| e.in_file(&name))?;
        files.insert(&name, bytes.into_owned())?;
    }
    Ok(files)
}

/// Opens a dropped file: reads its header alone and returns its summary (tensors, parameters,
/// dtypes, size), or the contents of a `.lowbit`, or a sequence file's summary. `model_files`:
/// the model files dropped with it (`{name: File}`), kept for compression (stored in the
/// `.lowbit`) and for running the model; a `.lowbit`'s own stored files are added to them.
#[wasm_bindgen]
pub fn open(
    file: web_sys::File,
    model_files: Option<js_sys::Object>,
) -> std::result::Result<JsValue, JsError> {
    let name = file.name();
    let source = BlobSource {
        len: file.size() as u64,
        blob: file.into(),
    };
    let kind = pipeline::input_kind(&source, &name).map_err(|e| js_error(e.in_file(&name)))?;
    let inspection = pipeline::inspect(&source, &name).map_err(js_error)?;
    let mut files = model_files_from(model_files).map_err(js_error)?;
    if kind == InputKind::Lowbit {
        let whole = source.whole().map_err(|e| js_error(e.in_file(&name)))?;
        let stored = crate::api::model_files_of(&whole, &name).map_err(js_error)?;
        for (n, bytes) in stored.iter() {
            files.insert(n, bytes.to_vec()).map_err(js_error)?;
        }
    }
    let model = model_info(&files);
    SESSION.with(|s| {
        *s.borrow_mut() = Some(Session {
            file: Rc::new(source),
            name: name.clone(),
            kind,
            analysed: None,
            model_files: files,
            sensitivity: None,
            activations: None,
        })
    });
    // Models loaded for the file before are not this file's.
    MODELS.with(|m| *m.borrow_mut() = None);
    to_js(&Opened {
        kind: match kind {
            InputKind::Checkpoint => "checkpoint",
            InputKind::Lowbit => "lowbit",
            InputKind::Sequence(_) => "sequence",
        },
        name,
        inspection,
        model,
    })
}

#[derive(Serialize)]
struct BackendInfo {
    used: &'static str,
    adapter: Option<String>,
    reason: String,
}

/// Chooses where the kernels run: `"gpu"` (WebGPU), `"cpu"` or `"auto"`. A missing WebGPU
/// adapter is not an error: the CPU is used and the reason returned.
#[wasm_bindgen]
pub async fn set_backend(choice: String) -> std::result::Result<JsValue, JsError> {
    let choice: BackendChoice = choice.parse().map_err(js_error)?;
    let (backend, reason) = match Backend::new(choice).await {
        Ok(b) => b,
        Err(e) => (Backend::Cpu, e.to_string()),
    };
    let info = BackendInfo {
        used: backend.name(),
        adapter: backend.adapter(),
        reason: reason.clone(),
    };
    ENGINE.with(|e| {
        *e.borrow_mut() = Some(Engine {
            backend: Rc::new(backend),
            choice,
            reason,
        })
    });
    // Measurements made on another backend are not reused.
    SESSION.with(|s| {
        if let Some(s) = s.borrow_mut().as_mut() {
            s.analysed = None;
        }
    });
    to_js(&info)
}

/// The measured options for `page`, measuring them unless the last run's still apply.
async fn analysed_for(page: &Settings, progress: &mut JsProgress) -> Result<Rc<Analysed>> {
    let key = page.analysis_key();
    let (file, name, cached) = session(|s| {
        if s.kind != InputKind::Checkpoint {
            return Err(Error::option(format!(
                "{} is not a checkpoint or dataset of vectors",
                s.name
            ))
            .in_file(&s.name));
        }
        Ok((s.file.clone(), s.name.clone(), s.measured(&key)))
    })?;
    if let Some(a) = cached {
        return Ok(a);
    }
    let (backend, choice, reason) = engine();
    if page.sensitivity {
        measure_sensitivity(page, progress)?;
    }
    let opts = options_for(page, choice)?;
    let a = Rc::new(
        pipeline::analyse_on(&backend, &reason, file.as_ref(), &name, &opts, progress).await?,
    );
    session(|s| {
        s.analysed = Some((key, a.clone()));
        Ok(())
    })?;
    Ok(a)
}

/// What the report calls the page's calibration text (the CLI: its file's name). Only the report
/// holds it: the `.lowbit` does not, so the page's file equals `--calibrate FILE`'s.
const CALIBRATION_SOURCE: &str = "calibration text";

/// The open checkpoint's sensitivity on the page's calibration text (measured as the CLI does: on
/// the built-in text by default, on `--calibrate`'s; kept for the last text, so a new budget does
/// not run the model again), or `None` when the files dropped with it are not a model lowbit runs.
fn measure_sensitivity(page: &Settings, progress: &mut JsProgress) -> Result<Option<Sensitivity>> {
    let key = page.calibration_key();
    let calibration = page.calibration()?;
    let (file, name, files, known) = session(|s| {
        Ok((
            s.file.clone(),
            s.name.clone(),
            s.model_files.clone(),
            s.sensitivity.clone().filter(|(k, _)| *k == key),
        ))
    })?;
    if let Some((_, known)) = known {
        return Ok(known);
    }
    let measured = match files.get("config.json") {
        // As the CLI's `--calibrate`: a text given for no model is refused, not ignored.
        None if calibration.is_some() => {
            return Err(Error::option(
                "calibration text: it needs the model's config.json and tokenizer dropped with the checkpoint",
            ))
        }
        None => None,
        Some(_) => {
            progress.stage("running the model to measure each weight's sensitivity", 1);
            let bytes = file.whole().map_err(|e| e.in_file(&name))?;
            let options = crate::model::sensitivity::SensitivityOptions::default();
            let (text, source) = match calibration {
                Some(text) => (text, CALIBRATION_SOURCE),
                None => (BUILTIN_TEXT, "built-in text"),
            };
            let s =
                crate::api::measure_sensitivity(&bytes, &name, &files, text, source, &options);
            progress.advance(1, &name);
            match (s, calibration) {
                (Ok(s), _) => Some(s),
                // A model the runtime does not know is judged by weight error, as in the CLI...
                (Err(_), None) => None,
                // ...unless a text was given: then, as `--calibrate`, the run stops (a text that
                // gives no token or sentence says so).
                (Err(e), Some(_)) => return Err(e),
            }
        }
    };
    // As the CLI's `--calibrate`: a text of the user's also gives the input statistics that the
    // per-column scalar grid and the output error are computed from.
    let activations = match (calibration, &measured) {
        (Some(text), Some(_)) => {
            progress.stage("running the model to collect its inputs' statistics", 1);
            let bytes = file.whole().map_err(|e| e.in_file(&name))?;
            let options = crate::model::calibrate::CalibrationOptions::default();
            let stats =
                crate::api::calibrate(&bytes, &name, &files, text, CALIBRATION_SOURCE, &options)?;
            progress.advance(1, &name);
            Some(stats)
        }
        _ => None,
    };
    session(|s| {
        s.sensitivity = Some((key.clone(), measured.clone()));
        s.activations = Some((key, activations));
        Ok(())
    })?;
    Ok(measured)
}

/// The plan for `page`, with the model files dropped beside the checkpoint stored in it (as
/// `api::compress_on` does), so the estimate counts them and the `.lowbit` holds them.
fn plan_for(a: &Analysed, page: &Settings) -> Result<Plan> {
    let (_, choice, _) = engine();
    let opts = options_for(page, choice)?;
    let mut plan = pipeline::allocate(a, &opts)?;
    crate::pipeline::model::attach_files(&mut plan, &opts.model_files)?;
    Ok(plan)
}

/// The plan for `page` with every chosen option's size exact (`pipeline::settle`: the options
/// whose sizes the analysis estimated are coded), what `compress` writes. The analysis with
/// those sizes replaces the session's, so later estimates start from them.
async fn settled_plan(
    backend: &Backend,
    a: Rc<Analysed>,
    page: &Settings,
    opts: &crate::pipeline::CompressOptions,
    progress: &mut JsProgress,
) -> Result<(Rc<Analysed>, Plan)> {
    let file = session(|s| Ok(s.file.clone()))?;
    let mut a = Rc::unwrap_or_clone(a);
    let mut plan = pipeline::settle(backend, &mut a, opts, file.as_ref(), progress).await?;
    crate::pipeline::model::attach_files(&mut plan, &opts.model_files)?;
    let a = Rc::new(a);
    let key = page.analysis_key();
    session(|s| {
        s.analysed = Some((key, a.clone()));
        Ok(())
    })?;
    Ok((a, plan))
}

/// Measures every tensor's options (the slow part) and returns the plan for the settings: the
/// report of what would be written (`output.written` false), as JSON text.
#[wasm_bindgen]
pub async fn analyse(
    options: JsValue,
    progress: js_sys::Function,
) -> std::result::Result<String, JsError> {
    let page = page_settings(options).map_err(js_error)?;
    let mut progress = JsProgress::new(progress);
    let a = analysed_for(&page, &mut progress).await.map_err(js_error)?;
    estimate_with(&a, &page).map_err(js_error)
}

fn estimate_with(a: &Analysed, page: &Settings) -> Result<String> {
    let (_, choice, _) = engine();
    let name = session(|s| Ok(s.name.clone()))?;
    let plan = plan_for(a, page)?;
    let opts = options_for(page, choice)?;
    Ok(crate::report::build_report(&plan, &name, a.input_bytes, &opts, false).to_json())
}

/// Re-allocates for new settings from the last measurement (instant): the live size estimate.
/// Fails when the settings need a new measurement (method, overrides or seed changed).
#[wasm_bindgen]
pub fn estimate(options: JsValue) -> std::result::Result<String, JsError> {
    let page = page_settings(options).map_err(js_error)?;
    let key = page.analysis_key();
    let a = session(|s| {
        s.measured(&key)
            .ok_or_else(|| Error::option("the settings changed: measure again"))
    })
    .map_err(js_error)?;
    estimate_with(&a, &page).map_err(js_error)
}

/// Compresses the open checkpoint: returns `{ lowbit: Blob, report_json, report_html, charts }`.
/// If the GPU fails after the header is written, the run starts again on the CPU, and the report
/// says so.
#[wasm_bindgen]
pub async fn compress(
    options: JsValue,
    progress: js_sys::Function,
) -> std::result::Result<JsValue, JsError> {
    let page = page_settings(options).map_err(js_error)?;
    let mut progress = JsProgress::new(progress);
    let (file, name) = session(|s| Ok((s.file.clone(), s.name.clone()))).map_err(js_error)?;
    let (mut sink, plan, opts, input_bytes) = loop {
        let a = analysed_for(&page, &mut progress)
            .await
            .map_err(|e| js_error(e.in_file(&name)))?;
        let (backend, choice, _) = engine();
        let opts = options_for(&page, choice).map_err(js_error)?;
        let (a, mut plan) = settled_plan(&backend, a, &page, &opts, &mut progress)
            .await
            .map_err(|e| js_error(e.in_file(&name)))?;
        let mut sink = BlobSink::new();
        let written = crate::api::write_plan_on(
            &backend,
            &a,
            &mut plan,
            &opts,
            file.as_ref(),
            &mut progress,
            &mut sink,
        )
        .await;
        match written {
            Ok(()) => break (sink, plan, opts, a.input_bytes),
            Err(Error::GpuFailedWhileWriting { reason }) => {
                // Start again on the CPU, measuring again: the plan must be one backend's.
                ENGINE.with(|e| {
                    *e.borrow_mut() = Some(Engine {
                        backend: Rc::new(Backend::Cpu),
                        choice: BackendChoice::Cpu,
                        reason: format!("the GPU failed while writing ({reason})"),
                    })
                });
                session(|s| {
                    s.analysed = None;
                    Ok(())
                })
                .map_err(js_error)?;
            }
            Err(e) => return Err(js_error(e.in_file(&name))),
        }
    };
    sink.flush().ok();
    let report = crate::report::build_report(&plan, &name, input_bytes, &opts, true);
    let out = js_sys::Object::new();
    set(&out, "lowbit", &sink.into_blob()?.into())?;
    set(&out, "report_json", &report.to_json().into())?;
    set(&out, "report_html", &report.to_html().into())?;
    set(&out, "charts", &to_js(&report.charts())?)?;
    Ok(out.into())
}

fn set(object: &js_sys::Object, key: &str, value: &JsValue) -> std::result::Result<(), JsError> {
    js_sys::Reflect::set(object, &key.into(), value)
        .map(|_| ())
        .map_err(|e| JsError::new(&format!("{e:?}")))
}

/// Compresses the open FASTA, FASTQ or text file losslessly: `{ lowbit, report_json,
/// report_html }`. Sequence files are coded as a whole, so the file must fit in memory.
#[wasm_bindgen]
pub fn compress_sequence(progress: js_sys::Function) -> std::result::Result<JsValue, JsError> {
    let mut progress = JsProgress::new(progress);
    let (file, name, kind) = session(|s| match s.kind {
        InputKind::Sequence(kind) => Ok((s.file.clone(), s.name.clone(), kind)),
        _ => Err(Error::option(format!("{} is not a sequence file", s.name))),
    })
    .map_err(js_error)?;
    let whole = file.whole().map_err(|e| js_error(e.in_file(&name)))?;
    let mut sink = BlobSink::new();
    let report = crate::sequence::compress(
        &whole,
        &name,
        kind,
        &crate::sequence::SequenceOptions::default(),
        &mut progress,
        &mut sink,
    )
    .map_err(|e| js_error(e.in_file(&name)))?;
    let out = js_sys::Object::new();
    set(&out, "lowbit", &sink.into_blob()?.into())?;
    set(&out, "report_json", &report.to_json().into())?;
    set(&out, "report_html", &report.to_html().into())?;
    set(&out, "charts", &js_sys::Array::new().into())?;
    Ok(out.into())
}

/// Restores a `.lowbit` (a dropped file or the one just made) to its original kind of file:
/// `{ blob, extension, summary }`.
#[wasm_bindgen]
pub fn restore(
    lowbit: web_sys::Blob,
    file_name: String,
    progress: js_sys::Function,
) -> std::result::Result<JsValue, JsError> {
    let mut progress = JsProgress::new(progress);
    let source = BlobSource {
        len: lowbit.size() as u64,
        blob: lowbit,
    };
    let bytes = source
        .whole()
        .map_err(|e| js_error(e.in_file(&file_name)))?;
    let mut sink = BlobSink::new();
    let summary = crate::pipeline::decompress(&bytes, &file_name, &mut progress, &mut sink)
        .map_err(js_error)?;
    let out = js_sys::Object::new();
    set(&out, "blob", &sink.into_blob()?.into())?;
    set(&out, "extension", &summary.format.extension().into())?;
    set(&out, "summary", &to_js(&summary)?)?;
    Ok(out.into())
}

/// The teaching view of one tensor (histograms, its weights before and after, singular values,
/// error vs rank and vs bits), from the last measurement and the plan for `options`: "after" is
/// what the `.lowbit` of that plan restores.
#[wasm_bindgen]
pub async fn tensor_view(
    tensor: String,
    options: JsValue,
) -> std::result::Result<JsValue, JsError> {
    let page = page_settings(options).map_err(js_error)?;
    let key = page.analysis_key();
    let (file, a) = session(|s| {
        let a = s
            .measured(&key)
            .ok_or_else(|| Error::option("measure the file first"))?;
        Ok((s.file.clone(), a))
    })
    .map_err(js_error)?;
    let i = a
        .checkpoint
        .tensors
        .iter()
        .position(|t| t.name == tensor)
        .ok_or_else(|| JsError::new(&format!("no tensor named {tensor:?}")))?;
    let t = &a.checkpoint.tensors[i];
    let raw = match &a.converted {
        Some(values) => crate::checkpoint::tensor_bytes(values, t),
        None => crate::checkpoint::tensor_bytes(file.as_ref(), t),
    }
    .map_err(|e| js_error(e.in_tensor(&t.name)))?;
    // An integer tensor (BERT's position ids) is stored as it is: no weights to picture.
    if !t.dtype.is_float() {
        return Err(JsError::new(&format!(
            "{tensor} is a {} tensor, stored losslessly as it is (the teaching view is of float tensors)",
            t.dtype
        )));
    }
    let values = crate::dtype::to_f32(t.dtype, &raw);
    drop(raw);
    let plan = plan_for(&a, &page).map_err(js_error)?;
    // The plan's analyses: a shared-lowrank member's option is added to them by the allocator.
    let candidate = &plan.analyses[i].candidates[plan.choice[i]];
    // Coded on the backend the file is written on: the bytes must be the file's.
    let (backend, choice, _) = engine();
    let opts = options_for(&page, choice).map_err(js_error)?;
    let restored = crate::api::restored_tensor_on(&backend, &a, &plan, &opts, file.as_ref(), i)
        .await
        .map_err(|e| js_error(e.in_tensor(&t.name)))?;
    let view = crate::teach::tensor_view(
        &t.name,
        &t.shape,
        &values,
        &plan.analyses[i],
        Some((candidate, &restored)),
    );
    to_js(&view)
}

/// Runs every kernel on the chosen backend and compares it with the CPU reference in this page
/// (the browser half of the kernel tests): one row per kernel and shape.
#[wasm_bindgen]
pub async fn check_kernels() -> std::result::Result<JsValue, JsError> {
    let (backend, _, _) = engine();
    to_js(&crate::backend::check::check_kernels(&backend).await)
}

// --- the Try-it panel: the compressed model next to the original ----------------------------

/// The model runtime's CPU path in the page: this worker, one thread.
const RUNTIME_CPU: &str = "CPU (WebAssembly, one thread in the worker)";

/// Where the Try-it panel's models run (`backend`: `webgpu` or `cpu`): for WebGPU, the panel's own
/// device, opened on first use (again after a failure); an error when the browser has none.
async fn runtime_backend(backend: &str) -> Result<Rc<Backend>> {
    match backend {
        "cpu" => Ok(Rc::new(Backend::Cpu)),
        "webgpu" => {
            let held = RUNTIME_GPU.with(|g| g.borrow().clone());
            if let Some(b) = held.filter(|b| b.fallback().is_none()) {
                return Ok(b);
            }
            let (b, _) = Backend::new(BackendChoice::Gpu).await?;
            let b = Rc::new(b);
            RUNTIME_GPU.with(|g| *g.borrow_mut() = Some(b.clone()));
            Ok(b)
        }
        other => Err(Error::option(format!(
            "the model runs on webgpu or cpu, not {other:?}"
        ))),
    }
}

/// What the results say about where they were computed (and a WebGPU failure on the way).
fn runtime_label(backend: &Backend) -> String {
    match (backend.adapter(), backend.fallback()) {
        (None, _) => RUNTIME_CPU.to_string(),
        // The browser may give the adapter no name: `describe` then starts with its kind.
        (Some(a), None) => format!("WebGPU, adapter {}", a.trim()),
        (Some(a), Some(why)) => format!(
            "WebGPU, adapter {}, failed ({why}); finished on the CPU",
            a.trim()
        ),
    }
}

/// Milliseconds from the worker's clock (`performance.now()`, or `Date.now()` without it).
fn now_ms() -> f64 {
    let global = js_sys::global();
    js_sys::Reflect::get(&global, &"performance".into())
        .ok()
        .and_then(|p| {
            let now = js_sys::Reflect::get(&p, &"now".into()).ok()?;
            now.dyn_into::<js_sys::Function>()
                .ok()?
                .call0(&p)
                .ok()?
                .as_f64()
        })
        .unwrap_or_else(js_sys::Date::now)
}

#[derive(Serialize)]
struct LoadedInfo {
    family: &'static str,
    original: Option<String>,
    compressed: String,
    seconds: f64,
    backend: &'static str,
}

/// Where the panel's models run: the switch beside its buttons.
const RUNTIME_CHOICE: &str = "WebGPU or the CPU, as chosen below";

fn model_description(m: &Model) -> String {
    match m {
        Model::Encoder(b) => describe(&Architecture::Encoder(b.config.clone())),
        Model::Decoder(l) => describe(&Architecture::Decoder(l.config.clone())),
    }
}

/// Loads the models of the Try-it panel: the original from the open checkpoint and its model
/// files (none when the open file is a `.lowbit`), and the compressed one from `compressed` (the
/// `.lowbit` just made, or a dropped one), or from the open file when that is a `.lowbit`.
#[wasm_bindgen]
pub fn load_models(
    compressed: Option<web_sys::Blob>,
    compressed_name: String,
    progress: js_sys::Function,
) -> std::result::Result<JsValue, JsError> {
    MODELS.with(|m| *m.borrow_mut() = None);
    let mut progress = JsProgress::new(progress);
    let started = now_ms();
    let (file, name, kind, files) = session(|s| {
        Ok((
            s.file.clone(),
            s.name.clone(),
            s.kind,
            s.model_files.clone(),
        ))
    })
    .map_err(js_error)?;
    let load = |source: &BlobSource, name: &str| -> Result<Model> {
        let bytes = source.whole().map_err(|e| e.in_file(name))?;
        crate::api::load_model(&bytes, name, &files)
    };
    let original = match kind {
        InputKind::Checkpoint => {
            progress.stage("loading the original model", 1);
            let m = load(&file, &name).map_err(js_error)?;
            progress.advance(1, &name);
            Some(m)
        }
        _ => None,
    };
    progress.stage("loading the compressed model", 1);
    let compressed = match (compressed, kind) {
        (Some(blob), _) => load(
            &BlobSource {
                len: blob.size() as u64,
                blob,
            },
            &compressed_name,
        ),
        (None, InputKind::Lowbit) => load(&file, &name),
        (None, _) => Err(Error::option(
            "no compressed model yet: compress the checkpoint, or drop a .lowbit with it",
        )),
    }
    .map_err(js_error)?;
    progress.advance(1, &compressed_name);
    if let Some(o) = &original {
        if o.family() != compressed.family() {
            return Err(JsError::new(&format!(
                "the original is an {} and the compressed model an {}",
                o.family(),
                compressed.family()
            )));
        }
    }
    let info = LoadedInfo {
        family: compressed.family(),
        original: original.as_ref().map(model_description),
        compressed: model_description(&compressed),
        seconds: (now_ms() - started) / 1000.0,
        backend: RUNTIME_CHOICE,
    };
    MODELS.with(|m| {
        *m.borrow_mut() = Some(Rc::new(Loaded {
            original,
            compressed,
        }))
    });
    to_js(&info)
}

/// The loaded models (held by the caller across its awaits).
fn loaded() -> std::result::Result<Rc<Loaded>, JsError> {
    MODELS
        .with(|m| m.borrow().clone())
        .ok_or_else(|| js_error(Error::option("no models are loaded")))
}

/// Six sentences of the built-in text, the encoder panel's example.
#[wasm_bindgen]
pub fn example_sentences() -> Vec<String> {
    crate::model::eval::sentences_of(BUILTIN_TEXT, 6)
}

#[derive(Serialize)]
struct Embedded {
    #[serde(flatten)]
    comparison: crate::api::SentenceComparison,
    seconds: f64,
    backend: String,
}

/// Embeds `sentences` with both models on `backend` (`webgpu` or `cpu`): both similarity
/// matrices, the cosine between the two models' embeddings of each sentence, and their summary
/// (`api::compare_sentences_on`).
#[wasm_bindgen]
pub async fn embed(
    sentences: Vec<String>,
    backend: String,
) -> std::result::Result<JsValue, JsError> {
    let started = now_ms();
    let models = loaded()?;
    let backend = runtime_backend(&backend).await.map_err(js_error)?;
    let comparison = crate::api::compare_sentences_on(
        models.original.as_ref(),
        &models.compressed,
        &sentences,
        &backend,
    )
    .await
    .map_err(js_error)?;
    to_js(&Embedded {
        comparison,
        seconds: (now_ms() - started) / 1000.0,
        backend: runtime_label(&backend),
    })
}

#[derive(Serialize)]
struct GenerationEvent<'a> {
    text: &'a str,
    tokens: usize,
    seconds: f64,
}

#[derive(Serialize)]
struct GenerationResult {
    #[serde(flatten)]
    generated: crate::api::Generated,
    seconds: f64,
    tokens_per_second: f64,
    backend: String,
}

/// Generates from `prompt` with one model (`which`: "original" or "compressed") on `backend`
/// (`webgpu` or `cpu`), calling `on_token({text, tokens, seconds})` after each token with the text
/// so far. Temperature 0 is greedy; `seed` makes sampling repeatable (as `lowbit run --seed`).
#[wasm_bindgen]
#[allow(clippy::too_many_arguments)]
pub async fn generate(
    which: String,
    prompt: String,
    max_tokens: u32,
    temperature: f32,
    top_k: u32,
    seed: u32,
    on_token: js_sys::Function,
    backend: String,
) -> std::result::Result<JsValue, JsError> {
    let started = now_ms();
    let models = loaded()?;
    let model = match which.as_str() {
        "original" => models.original.as_ref().ok_or_else(|| {
            Error::option("no original model: drop the original checkpoint with the .lowbit")
        }),
        "compressed" => Ok(&models.compressed),
        other => Err(Error::option(format!("no model called {other:?}"))),
    }
    .map_err(js_error)?;
    let backend = runtime_backend(&backend).await.map_err(js_error)?;
    let mut sampler = Sampler::new(temperature, top_k as usize, seed as u64);
    let generated = crate::api::generate_text_on(
        model,
        &backend,
        &prompt,
        max_tokens as usize,
        &mut sampler,
        &mut |text, tokens| {
            let event = GenerationEvent {
                text,
                tokens,
                seconds: (now_ms() - started) / 1000.0,
            };
            if let Ok(value) = to_js(&event) {
                let _ = on_token.call1(&JsValue::NULL, &value);
            }
            true
        },
    )
    .await
    .map_err(js_error)?;
    let seconds = (now_ms() - started) / 1000.0;
    to_js(&GenerationResult {
        tokens_per_second: generated.tokens as f64 / seconds.max(1e-9),
        generated,
        seconds,
        backend: runtime_label(&backend),
    })
}

#[derive(Serialize)]
struct Evaluated {
    downstream: crate::model::eval::Downstream,
    /// "built-in" or "pasted".
    text: &'static str,
    tokens: usize,
    context: usize,
    seconds: f64,
    backend: String,
}

/// `lowbit eval` in the page: the compressed model against the original on `text` (empty: the
/// built-in text), with the CLI's defaults (4096 tokens in windows of 256; 256 sentences), both
/// models on `backend` (`webgpu` or `cpu`).
#[wasm_bindgen]
pub async fn evaluate(text: String, backend: String) -> std::result::Result<JsValue, JsError> {
    let started = now_ms();
    let options = EvalOptions::default();
    let builtin = text.trim().is_empty();
    let models = loaded()?;
    let original = models
        .original
        .as_ref()
        .ok_or_else(|| {
            Error::option("no original model to compare with: drop the original checkpoint too")
        })
        .map_err(js_error)?;
    let backend = runtime_backend(&backend).await.map_err(js_error)?;
    let scored = if builtin { BUILTIN_TEXT } else { text.as_str() };
    let downstream =
        crate::model::eval::compare_on(original, &models.compressed, scored, &options, &backend)
            .await
            .map_err(js_error)?;
    to_js(&Evaluated {
        downstream,
        text: if builtin { "built-in" } else { "pasted" },
        tokens: options.tokens,
        context: options.context,
        seconds: (now_ms() - started) / 1000.0,
        backend: runtime_label(&backend),
    })
}
