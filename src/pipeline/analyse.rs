//! Analysis: every applicable option of every tensor, measured by encoding it (size with all side
//! information, squared error after conversion back to the tensor's dtype, recall for a vector
//! dataset). What the allocator chooses from; it does not depend on the target.

use crate::backend::{self, Backend, BackendSummary};
use crate::checkpoint::{Checkpoint, InputTensor};
use crate::codec::vectors::{self, VectorMeasure};
use crate::codec::{self, lossless, CodecParams, Method, Shape2};
use crate::container;
use crate::distortion::{self, squared_error, Distortion, OutputWeights};
use crate::dtype::{self, DType};
use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::rng::Rng;
use crate::source::Source;

use super::options::{glob_match, CompressOptions, OverrideRule};
use super::screen;
use super::shared::AllocatorItems;

/// Tensors with fewer parameters than this are always coded losslessly: a lossy codec's side
/// information would cost more than it saves, and these are norms, biases and small tables.
pub const MIN_LOSSY_PARAMETERS: u64 = 1024;
/// How many singular values the report keeps per tensor.
pub const SPECTRUM_LENGTH: usize = 64;

/// One measured option of one tensor: a way to code it (the codec and its parameters), the bytes
/// that coding takes and the distortion it gives. The one record of a measured option: the
/// analysis makes it, the allocator reads its points from it ([`crate::alloc::OptionPoint`] is
/// its (section bytes, [`Distortion::value`]) projection), the report builder reads its figures,
/// and a shared-lowrank set option holds one per member.
#[derive(Clone, Debug)]
pub struct MeasuredOption {
    pub codec: CodecParams,
    /// The section's length: coded, or estimated from histograms when `crc32` is `None`.
    pub coded_bytes: u64,
    pub side_bytes: u64,
    /// CRC-32 of the coded bytes (the manifest stores it; the header is written before the
    /// sections). `None`: the option was not coded, its size is an estimate
    /// ([`codec::Estimated`]); `pipeline::settle` codes it if the allocator chooses it.
    pub crc32: Option<u32>,
    /// Sum of squared errors after conversion back to the tensor's dtype (0 for lossless).
    pub sq_error: f64,
    /// The distortion, in the measure the allocator minimises for this tensor: the relative MSE,
    /// or recall@10 for a tensor coded as a vector dataset.
    pub distortion: Distortion,
    /// For a vector coder's option: what the report shows about it.
    pub vector: Option<VectorMeasure>,
}

impl MeasuredOption {
    /// The option `codec` of a tensor whose values are `values` (sum of squares `norm_sq`, element
    /// type `dtype`), measured from its encoding: the error after conversion back to the dtype,
    /// and with `vector` (a vector dataset's option) the recall the distortion is in, or with
    /// `output` (a calibrated linear weight) the relative output error.
    pub fn measure(
        codec: CodecParams,
        encoded: &codec::Encoded,
        values: &[f32],
        dtype: DType,
        norm_sq: f64,
        vector: Option<VectorMeasure>,
        output: Option<&OutputWeights>,
    ) -> MeasuredOption {
        let (sq_error, distortion) = figures(
            values,
            &encoded.reconstruction,
            dtype,
            norm_sq,
            vector.as_ref(),
            output,
        );
        MeasuredOption {
            codec,
            coded_bytes: encoded.bytes.len() as u64,
            side_bytes: encoded.side_bytes as u64,
            crc32: Some(container::crc32(&encoded.bytes)),
            sq_error,
            distortion,
            vector,
        }
    }

    /// [`MeasuredOption::measure`] of an option tried for the analysis, coded or with its size
    /// estimated.
    pub fn measure_trial(
        codec: CodecParams,
        trial: &codec::Trial,
        values: &[f32],
        dtype: DType,
        norm_sq: f64,
        vector: Option<VectorMeasure>,
        output: Option<&OutputWeights>,
    ) -> MeasuredOption {
        let e = match trial {
            codec::Trial::Coded(e) => {
                return Self::measure(codec, e, values, dtype, norm_sq, vector, output)
            }
            codec::Trial::Estimated(e) => e,
        };
        let (sq_error, distortion) = figures(
            values,
            &e.reconstruction,
            dtype,
            norm_sq,
            vector.as_ref(),
            output,
        );
        MeasuredOption {
            codec,
            coded_bytes: e.bytes,
            side_bytes: e.side_bytes as u64,
            crc32: None,
            sq_error,
            distortion,
            vector,
        }
    }

    /// The CRC a manifest records for this option: 0 for an estimate, which a plan holds only
    /// until it is settled (`pipeline::settle`; the writer refuses a plan that is not).
    pub fn manifest_crc(&self) -> u32 {
        self.crc32.unwrap_or(0)
    }

    /// Whether the size is an estimate (the option was not coded).
    pub fn is_estimate(&self) -> bool {
        self.crc32.is_none()
    }

    /// The option's figures once coded: its exact size and CRC (the error is unchanged: an
    /// estimate's reconstruction is the coded section's).
    pub fn settle(&mut self, encoded: &[u8], side_bytes: u64) {
        self.coded_bytes = encoded.len() as u64;
        self.side_bytes = side_bytes;
        self.crc32 = Some(container::crc32(encoded));
    }
}

/// An option's squared error after conversion back to the dtype, and its distortion (see
/// [`MeasuredOption::measure`]).
fn figures(
    values: &[f32],
    reconstruction: &[f32],
    dtype: DType,
    norm_sq: f64,
    vector: Option<&VectorMeasure>,
    output: Option<&OutputWeights>,
) -> (f64, Distortion) {
    let sq_error = squared_error(values, reconstruction, dtype);
    let recall = vector.and_then(|v| v.recall_at_10);
    let relative_mse = distortion::relative_mse(sq_error, norm_sq);
    let distortion = match (output, recall) {
        (Some(w), None) => {
            let output_error = w.relative_error(values, reconstruction, dtype);
            Distortion::OutputError {
                output_error,
                relative_mse,
                equivalent_mse: w.equivalent_mse(output_error, norm_sq),
            }
        }
        _ => Distortion::new(relative_mse, recall),
    };
    (sq_error, distortion)
}

/// What is measured about a tensor coded as a vector dataset (rows = vectors).
#[derive(Clone, Debug)]
pub struct VectorStats {
    pub vectors: usize,
    pub dimension: usize,
    /// Covariance eigenvalues, non-increasing (the Gaussian R(D) bound is computed from them).
    pub eigenvalues: Vec<f64>,
    /// Rows used as recall queries.
    pub recall_queries: usize,
}

/// Everything measured about one tensor.
#[derive(Clone, Debug)]
pub struct TensorAnalysis {
    pub candidates: Vec<MeasuredOption>,
    /// Sum of squares of the tensor (f64).
    pub norm_sq: f64,
    pub non_finite: u64,
    /// Why only some codecs were tried (empty when all were).
    pub restriction: String,
    pub spectrum: Option<Vec<f32>>,
    /// Present when the tensor was coded as a vector dataset.
    pub vectors: Option<VectorStats>,
    /// With activation statistics for this weight: the mean input energy `mean_j d_j` of its
    /// columns (its options' distortion is then the relative output error).
    pub input_energy: Option<f64>,
}

impl TensorAnalysis {
    /// Weighs every option's distortion by the tensor's measured sensitivity (its relative MSE
    /// becomes the predicted change of the model's output).
    pub fn weigh(&mut self, sensitivity: f64) {
        for c in &mut self.candidates {
            c.distortion = c.distortion.weighed(sensitivity);
        }
    }

    /// The analysis of a tensor before any option is measured.
    fn empty() -> TensorAnalysis {
        TensorAnalysis {
            candidates: Vec::new(),
            norm_sq: 0.0,
            non_finite: 0,
            restriction: String::new(),
            spectrum: None,
            vectors: None,
            input_energy: None,
        }
    }
}

/// The exact option of a tensor: the lossless coding of its raw bytes (every tensor has it; it is
/// the first candidate).
fn exact_option(raw: &[u8], dtype: DType) -> Result<MeasuredOption> {
    let exact = lossless::encode(raw, dtype)?;
    Ok(MeasuredOption {
        codec: CodecParams::Lossless,
        coded_bytes: exact.bytes.len() as u64,
        crc32: Some(container::crc32(&exact.bytes)),
        side_bytes: exact.side_bytes as u64,
        sq_error: 0.0,
        distortion: Distortion::RelativeMse(0.0),
        vector: None,
    })
}

/// Measures every applicable option of one tensor, on the CPU. `vector_dataset`: the tensor is the
/// one array of a vector dataset (npy, csv, fvecs), so `--method auto` tries the vector coders on
/// its rows.
pub fn analyse_tensor<S: Source + ?Sized>(
    file: &S,
    t: &InputTensor,
    opts: &CompressOptions,
    vector_dataset: bool,
) -> Result<TensorAnalysis> {
    backend::ready(analyse_tensor_on(
        &Backend::Cpu,
        file,
        t,
        opts,
        vector_dataset,
    ))
}

/// [`analyse_tensor`] with the codecs' kernels on `backend`. A weight matrix's pieces of work
/// are spread over the cores natively (one after another in the browser).
pub async fn analyse_tensor_on<S: Source + ?Sized>(
    backend: &Backend,
    file: &S,
    t: &InputTensor,
    opts: &CompressOptions,
    vector_dataset: bool,
) -> Result<TensorAnalysis> {
    let work = TensorWork::plan(t, opts, vector_dataset)?;
    if work.jobs.is_empty() {
        return analyse_whole(backend, file, t, opts, vector_dataset).await;
    }
    #[cfg(not(target_arch = "wasm32"))]
    let results: Vec<Result<JobResult>> = crate::parallel::map(work.jobs.len(), |j| {
        backend::block_on(work.run(backend, file, opts, j))
    });
    #[cfg(target_arch = "wasm32")]
    let results: Vec<Result<JobResult>> = {
        let mut out = Vec::with_capacity(work.jobs.len());
        for j in 0..work.jobs.len() {
            out.push(work.run(backend, file, opts, j).await);
        }
        out
    };
    work.assemble(results.into_iter().map(Some).collect(), opts)
}

/// The analysis of a tensor that is not split into pieces: one stored exactly without any lossy
/// option being tried, or a vector dataset (its vector coders, then the matrix codecs with
/// their recall measured).
async fn analyse_whole<S: Source + ?Sized>(
    backend: &Backend,
    file: &S,
    t: &InputTensor,
    opts: &CompressOptions,
    vector_dataset: bool,
) -> Result<TensorAnalysis> {
    let raw = crate::checkpoint::tensor_bytes(file, t)?;
    let raw = raw.as_ref();
    let mut analysis = TensorAnalysis::empty();
    let (vector_path, rule) = tensor_route(t, opts, vector_dataset);
    let values = if t.dtype.is_lossy_compressible() || vector_path {
        dtype::to_f32(t.dtype, raw)
    } else {
        Vec::new()
    };
    // The norm is measured for every float tensor, exact or not, so the report's error totals
    // cover all of them.
    let stats = Stats::of(&values);
    (analysis.norm_sq, analysis.non_finite) = (stats.norm_sq, stats.non_finite);
    analysis.candidates.push(exact_option(raw, t.dtype)?);
    if let Some(why) = exact_only(t, opts, vector_path, rule) {
        analysis.restriction = why;
        return Ok(analysis);
    }
    let shape = Shape2::of(&t.shape).expect("the reader checked that the element count fits");
    if analysis.non_finite > 0 {
        return Err(non_finite_vectors(&values, shape, analysis.non_finite));
    }
    let seed = Rng::for_stream(opts.seed, &t.name).next_u64();
    let queries =
        analyse_vectors(backend, &values, shape, t.dtype, opts, seed, &mut analysis).await?;
    // In auto mode the matrix codecs compete too: on a small dataset (100 x 32) the vector
    // coders' side information (mean, basis, codebooks, tables) costs more than they save.
    // Their recall is measured like the vector coders' (the allocator compares recall).
    if opts.method.is_none() && t.dtype.is_lossy_compressible() {
        let importance = match &opts.importance {
            Some(map) => map.rows_for(&t.name, &t.shape)?,
            None => None,
        };
        let matrix = MatrixInput {
            values: &values,
            shape,
            dtype: t.dtype,
            norm_sq: analysis.norm_sq,
            seed,
            importance: importance.as_deref(),
            queries: Some(&queries),
            output: None,
            screen: None,
        };
        analyse_matrix(backend, &matrix, opts, &mut analysis).await?;
    }
    finish(&mut analysis, t, opts, rule);
    Ok(analysis)
}

/// The last steps of every tensor's analysis: a forced method replaces the exact option, an
/// override keeps what it allows, the sensitivity weighs the distortions.
fn finish(
    analysis: &mut TensorAnalysis,
    t: &InputTensor,
    opts: &CompressOptions,
    rule: Option<OverrideRule>,
) {
    if opts.method.is_some() && analysis.candidates.len() > 1 {
        // A forced method replaces the exact option (it stays only where the method cannot apply).
        analysis.candidates.remove(0);
    }
    if let Some(OverrideRule::BitsPerWeight(bits)) = rule {
        keep_within(analysis, t, bits);
    }
    if let Some(s) = &opts.sensitivity {
        analysis.weigh(s.for_tensor(&t.name));
    }
}

/// The sum of squares and the count of NaN/Inf values of a tensor (the sum over finite values).
#[derive(Clone, Copy, Debug, Default)]
struct Stats {
    norm_sq: f64,
    non_finite: u64,
}

impl Stats {
    fn of(values: &[f32]) -> Stats {
        Stats {
            non_finite: values.iter().filter(|v| !v.is_finite()).count() as u64,
            norm_sq: values
                .iter()
                .filter(|v| v.is_finite())
                .map(|&v| (v as f64) * (v as f64))
                .sum(),
        }
    }
}

/// A weight matrix's analysis as pieces of work ([`Job`]s) that any core can take. The first
/// piece to run reads the tensor ([`Prepared`]); the last one to end lets its values go, so
/// memory holds only the tensors being worked on. The candidates are put together in a fixed
/// order ([`TensorWork::assemble`]), so the analysis is the same whichever core ran which piece.
struct TensorWork<'a> {
    t: &'a InputTensor,
    jobs: Vec<Job>,
    candidates: codec::MatrixCandidates,
    /// The tensor's row importances from an importance file, if any.
    importance: Option<Vec<f64>>,
    seed: u64,
    rule: Option<OverrideRule>,
    slot: std::sync::Mutex<Slot<'a>>,
    /// Pieces not yet ended.
    left: std::sync::atomic::AtomicUsize,
}

/// Where a [`TensorWork`]'s tensor is: not read yet, read (shared by the pieces running), not
/// readable, or done with (only its figures kept).
enum Slot<'a> {
    Unread,
    Read(std::sync::Arc<Prepared<'a>>),
    Failed(Option<Error>),
    Done(Stats),
}

/// A weight matrix as read: its bytes, its values as f32 and their figures.
struct Prepared<'a> {
    raw: std::borrow::Cow<'a, [u8]>,
    values: Vec<f32>,
    stats: Stats,
    /// With calibration statistics: `sum_ij d_j W_ij^2` ([`OutputWeights::norm_sq`]).
    output_norm_sq: Option<f64>,
    screen: ScreenCache,
}

impl<'a> TensorWork<'a> {
    /// The pieces of `t`'s analysis (none: it is analysed whole, see [`analyse_whole`]).
    fn plan(
        t: &'a InputTensor,
        opts: &CompressOptions,
        vector_dataset: bool,
    ) -> Result<TensorWork<'a>> {
        let (vector_path, rule) = tensor_route(t, opts, vector_dataset);
        let whole = vector_path || exact_only(t, opts, vector_path, rule).is_some();
        let shape = Shape2::of(&t.shape).expect("the reader checked that the element count fits");
        let seed = Rng::for_stream(opts.seed, &t.name).next_u64();
        let importance = match (&opts.importance, whole) {
            (Some(map), false) => map.rows_for(&t.name, &t.shape)?,
            _ => None,
        };
        let candidates = if whole {
            codec::MatrixCandidates::default()
        } else {
            codec::MatrixCandidates::for_tensor(
                shape,
                seed,
                opts.method,
                importance.as_deref(),
                opts.input_energies(&t.name, &t.shape).is_some(),
                ladder(opts, rule),
            )
        };
        let mut jobs = Vec::new();
        if !whole {
            // The longest pieces first, so that they are not left to the end.
            jobs.extend([Job::Lowrank, Job::Fwsvd]);
            let wants_lowrank = opts.method.is_none() || opts.method == Some(Method::Lowrank);
            if opts.spectra && wants_lowrank && shape.rows > 1 && shape.cols > 1 {
                jobs.push(Job::Spectrum);
            }
            jobs.push(Job::Exact);
            jobs.extend((0..candidates.independent.len()).map(Job::Independent));
        }
        Ok(TensorWork {
            t,
            left: std::sync::atomic::AtomicUsize::new(jobs.len()),
            jobs,
            candidates,
            importance,
            seed,
            rule,
            slot: std::sync::Mutex::new(Slot::Unread),
        })
    }

    /// The tensor as read, reading it if no piece has yet; `None` when it could not be read
    /// (the error is kept for [`TensorWork::assemble`]).
    fn prepared<S: Source + ?Sized>(
        &self,
        file: &'a S,
        opts: &CompressOptions,
    ) -> Option<std::sync::Arc<Prepared<'a>>> {
        let mut slot = self.slot.lock().unwrap_or_else(|e| e.into_inner());
        if matches!(*slot, Slot::Unread) {
            *slot = match self.read(file, opts) {
                Ok(p) => Slot::Read(std::sync::Arc::new(p)),
                Err(e) => Slot::Failed(Some(e)),
            };
        }
        match &*slot {
            Slot::Read(p) => Some(p.clone()),
            _ => None,
        }
    }

    fn read<S: Source + ?Sized>(
        &self,
        file: &'a S,
        opts: &CompressOptions,
    ) -> Result<Prepared<'a>> {
        let raw = crate::checkpoint::tensor_bytes(file, self.t)?;
        let values = dtype::to_f32(self.t.dtype, &raw);
        let stats = Stats::of(&values);
        let output_norm_sq = self
            .columns(opts)
            .map(|c| OutputWeights::new(&values, c).norm_sq);
        Ok(Prepared {
            raw,
            values,
            stats,
            output_norm_sq,
            screen: ScreenCache::new(),
        })
    }

    /// The calibration statistics of this weight's input channels, when given.
    fn columns<'o>(&self, opts: &'o CompressOptions) -> Option<&'o [f32]> {
        opts.input_energies(&self.t.name, &self.t.shape)
    }

    /// Runs piece `j` (reading the tensor first if no piece has yet).
    async fn run<S: Source + ?Sized>(
        &self,
        backend: &Backend,
        file: &'a S,
        opts: &CompressOptions,
        j: usize,
    ) -> Result<JobResult> {
        let job = self.jobs[j];
        let result = match self.prepared(file, opts) {
            // A tensor with NaN/Inf values is stored exactly: only its exact option is measured.
            Some(p) if p.stats.non_finite == 0 || matches!(job, Job::Exact) => {
                let output = self.columns(opts).map(|columns| OutputWeights {
                    columns,
                    norm_sq: p.output_norm_sq.unwrap_or(0.0),
                });
                let m = MatrixInput {
                    values: &p.values,
                    shape: Shape2::of(&self.t.shape).expect("checked by the reader"),
                    dtype: self.t.dtype,
                    norm_sq: p.stats.norm_sq,
                    seed: self.seed,
                    importance: self.importance.as_deref(),
                    queries: None,
                    output: output.as_ref(),
                    screen: (!opts.exhaustive).then_some(&p.screen),
                };
                run_job(backend, &m, Some(&p.raw), &self.candidates, job).await
            }
            _ => Ok(JobResult::Options(Vec::new())),
        };
        if self.left.fetch_sub(1, std::sync::atomic::Ordering::AcqRel) == 1 {
            let mut slot = self.slot.lock().unwrap_or_else(|e| e.into_inner());
            if let Slot::Read(p) = &*slot {
                *slot = Slot::Done(p.stats);
            }
        }
        result
    }

    /// The tensor's analysis from its pieces' results (`None`: a piece never started, the run
    /// having stopped), the candidates in a fixed order: exact, the independent codecs' options,
    /// low rank and sparse + low rank, fwsvd. The first error in that order is the one reported.
    fn assemble(
        self,
        mut results: Vec<Option<Result<JobResult>>>,
        opts: &CompressOptions,
    ) -> Result<TensorAnalysis> {
        let columns = self.columns(opts);
        let stats = match self.slot.into_inner().unwrap_or_else(|e| e.into_inner()) {
            Slot::Failed(e) => return Err(e.unwrap_or(Error::Cancelled)),
            Slot::Read(p) => p.stats,
            Slot::Done(stats) => stats,
            Slot::Unread => return Err(Error::Cancelled),
        };
        let mut analysis = TensorAnalysis::empty();
        (analysis.norm_sq, analysis.non_finite) = (stats.norm_sq, stats.non_finite);
        let c = &self.candidates;
        if opts.method.is_some()
            && c.independent.is_empty()
            && c.lowrank.is_empty()
            && c.sparse_lowrank.is_empty()
            && c.fwsvd.is_empty()
        {
            analysis.restriction =
                "the forced method does not apply to this shape: stored exactly".to_string();
        }
        let order = [
            |j: &Job| matches!(j, Job::Exact),
            |j: &Job| matches!(j, Job::Independent(_)),
            |j: &Job| matches!(j, Job::Lowrank),
            |j: &Job| matches!(j, Job::Fwsvd),
            |j: &Job| matches!(j, Job::Spectrum),
        ];
        let mut ordered = Vec::with_capacity(results.len());
        for wanted in order {
            for (job, r) in self.jobs.iter().zip(results.iter_mut()) {
                if wanted(job) {
                    ordered.push(r.take());
                }
            }
        }
        for r in ordered {
            match r.ok_or(Error::Cancelled)?? {
                JobResult::Options(options) => analysis.candidates.extend(options),
                JobResult::Spectrum(values) => analysis.spectrum = Some(values),
            }
        }
        if stats.non_finite > 0 {
            analysis.restriction = format!("{} NaN/Inf values: stored exactly", stats.non_finite);
            analysis.spectrum = None;
            return Ok(analysis);
        }
        if let Some(c) = columns {
            analysis.input_energy = Some(distortion::mean_energy(c));
        }
        finish(&mut analysis, self.t, opts, self.rule);
        Ok(analysis)
    }
}

/// The scalar ladder a weight matrix's analysis measures: the coarse rungs, which
/// `pipeline::settle` refines near the allocator's choice, unless `--exhaustive` asks for every
/// rung or an override `PATTERN=BITS` chooses by itself (it keeps one option, so nothing would be
/// refined).
fn ladder(opts: &CompressOptions, rule: Option<OverrideRule>) -> codec::scalar::Ladder {
    match opts.exhaustive || matches!(rule, Some(OverrideRule::BitsPerWeight(_))) {
        true => codec::scalar::Ladder::Full,
        false => codec::scalar::Ladder::Coarse,
    }
}

/// More options of weight matrix `t`, measured as its analysis measured the others (the same
/// error, output error and sensitivity): the ladder's rungs `pipeline::settle` refines near the
/// allocator's choice.
pub async fn measure_more<S: Source + ?Sized>(
    backend: &Backend,
    file: &S,
    t: &InputTensor,
    opts: &CompressOptions,
    codecs: &[CodecParams],
) -> Result<Vec<MeasuredOption>> {
    let shape = Shape2::of(&t.shape).expect("the reader checked that the element count fits");
    // Read as `TensorWork::read` reads it, so the values are the analysis's.
    let raw = crate::checkpoint::tensor_bytes(file, t)?;
    let values = dtype::to_f32(t.dtype, &raw);
    drop(raw);
    let stats = Stats::of(&values);
    let columns = opts.input_energies(&t.name, &t.shape);
    let output = columns.map(|c| OutputWeights::new(&values, c));
    let m = MatrixInput {
        values: &values,
        shape,
        dtype: t.dtype,
        norm_sq: stats.norm_sq,
        seed: Rng::for_stream(opts.seed, &t.name).next_u64(),
        importance: None,
        queries: None,
        output: output.as_ref(),
        screen: None,
    };
    let sensitivity = opts.sensitivity.as_ref().map(|s| s.for_tensor(&t.name));
    let mut out = Vec::with_capacity(codecs.len());
    for codec in codecs {
        let trial = codec
            .trial_weighted_on(backend, &values, shape, columns)
            .await?;
        let mut option = m.measure_trial(codec.clone(), &trial);
        if let Some(s) = sensitivity {
            option.distortion = option.distortion.weighed(s);
        }
        out.push(option);
    }
    Ok(out)
}

/// Why a tensor is stored exactly without trying any lossy option, if it is: its dtype, its
/// shape or size, `--method lossless`, or an override.
fn exact_only(
    t: &InputTensor,
    opts: &CompressOptions,
    vector_path: bool,
    rule: Option<OverrideRule>,
) -> Option<String> {
    if !t.dtype.is_lossy_compressible() && !vector_path {
        Some(format!(
            "{} is not a float type lowbit quantizes: stored exactly",
            t.dtype
        ))
    } else if t.shape.len() < 2 {
        Some("1-D tensor (norm, bias): stored exactly".to_string())
    } else if t.numel() < MIN_LOSSY_PARAMETERS {
        Some(format!(
            "fewer than {MIN_LOSSY_PARAMETERS} parameters: stored exactly"
        ))
    } else if opts.method == Some(Method::Lossless) {
        Some("--method lossless".to_string())
    } else if rule == Some(OverrideRule::Lossless) {
        Some("kept exact by an override".to_string())
    } else {
        None
    }
}

/// The error for a vector dataset with NaN or Inf values, naming the first one's row and column.
fn non_finite_vectors(values: &[f32], shape: Shape2, non_finite: u64) -> Error {
    let at = values
        .iter()
        .position(|v| !v.is_finite())
        .expect("non_finite > 0");
    Error::invalid(format!(
        "{} NaN/Inf values in the vectors (the first at row {}, column {}): the vector coders \
         need finite numbers (--method lossless stores the file exactly)",
        non_finite,
        at / shape.cols + 1,
        at % shape.cols + 1
    ))
}

/// An override `PATTERN=BITS`: keeps the lowest-error option of at most `bits` bits per weight
/// (or the smallest option when none is that small).
fn keep_within(analysis: &mut TensorAnalysis, t: &InputTensor, bits: f64) {
    let numel = t.numel().max(1) as f64;
    let bpw =
        |c: &MeasuredOption| 8.0 * container::section_len(t.numel(), c.coded_bytes) as f64 / numel;
    let within: Vec<&MeasuredOption> = analysis
        .candidates
        .iter()
        .filter(|c| bpw(c) <= bits)
        .collect();
    let keep = if within.is_empty() {
        analysis
            .candidates
            .iter()
            .min_by_key(|c| c.coded_bytes)
            .cloned()
    } else {
        within
            .into_iter()
            .min_by(|a, b| a.sq_error.total_cmp(&b.sq_error))
            .cloned()
    };
    analysis.candidates = keep.into_iter().collect();
    analysis.restriction = format!("override: at most {bits} bits per weight");
}

/// The vector coders' options for the rows of `values`, with recall and bit allocation.
async fn analyse_vectors(
    backend: &Backend,
    values: &[f32],
    shape: Shape2,
    dtype: DType,
    opts: &CompressOptions,
    seed: u64,
    analysis: &mut TensorAnalysis,
) -> Result<vectors::RecallQueries> {
    let stats = vectors::Stats::of(values, shape)?;
    let before = analysis.candidates.len();
    let queries = vectors::RecallQueries::sample(values, shape, vectors::RECALL_QUERIES, seed);
    let options = vectors::encode_options(
        backend,
        values,
        shape,
        &stats,
        opts.method,
        seed,
        Some(&queries),
    )
    .await?;
    for option in options {
        analysis.candidates.push(MeasuredOption::measure(
            option.codec,
            &option.encoded,
            values,
            dtype,
            analysis.norm_sq,
            Some(option.measure),
            None,
        ));
    }
    if analysis.candidates.len() == before && opts.method.is_some() {
        analysis.restriction = "no vector coder option fits this shape: stored exactly".to_string();
    }
    analysis.vectors = Some(VectorStats {
        vectors: shape.rows,
        dimension: shape.cols,
        eigenvalues: stats.eigenvalues,
        recall_queries: queries.rows.len(),
    });
    Ok(queries)
}

/// A float tensor seen as a matrix, with what its options are measured against.
#[derive(Clone, Copy)]
struct MatrixInput<'a> {
    values: &'a [f32],
    shape: Shape2,
    dtype: DType,
    norm_sq: f64,
    seed: u64,
    /// The tensor's row importances from an importance file, if any.
    importance: Option<&'a [f64]>,
    /// A vector dataset's recall queries: each option's recall@10 is measured too.
    queries: Option<&'a vectors::RecallQueries>,
    /// A calibrated linear weight's column statistics: each option's distortion is its relative
    /// output error.
    output: Option<&'a OutputWeights<'a>>,
    /// Where the expensive codecs' screening keeps its sample and the scalar ladder on it
    /// (`None`: every option is measured in full).
    screen: Option<&'a ScreenCache>,
}

/// A matrix's sample and the scalar ladder measured on it, made by the first option screened
/// ([`super::screen`]); `None` inside when the matrix is too small to screen.
type ScreenCache = std::sync::OnceLock<Option<(screen::Sample, screen::Screen)>>;

impl MatrixInput<'_> {
    /// The option `codec`, measured from its encoding.
    fn measure(
        &self,
        codec: CodecParams,
        encoded: Result<codec::Encoded>,
    ) -> Result<MeasuredOption> {
        Ok(self.measure_encoded(codec, &encoded?))
    }

    /// Whether `codec` is screened out: tried on the matrix's sample, its distortion is clearly
    /// above the scalar ladder's at its rate ([`super::screen`]). An option that fails on the
    /// sample is measured in full (which reports the failure).
    async fn screened_out(&self, backend: &Backend, codec: &CodecParams) -> bool {
        let Some(cache) = self.screen.filter(|_| screen::screened(codec)) else {
            return false;
        };
        let Some((sample, ladder)) = cache.get_or_init(|| self.sample_ladder()) else {
            return false;
        };
        let columns = self.output.map(|o| o.columns);
        let Ok(trial) = codec
            .trial_weighted_on(backend, &sample.values, sample.shape, columns)
            .await
        else {
            return false;
        };
        let output = columns.map(|c| OutputWeights::new(&sample.values, c));
        let o = self
            .on(sample, output.as_ref())
            .measure_trial(codec.clone(), &trial);
        ladder.dominates(
            sample.full_rate(o.coded_bytes, o.side_bytes),
            o.distortion.value(),
        )
    }

    /// This matrix's sample and the coarse scalar ladder measured on it.
    fn sample_ladder(&self) -> Option<(screen::Sample, screen::Screen)> {
        let sample = screen::Sample::of(self.values, self.shape)?;
        let columns = self.output.map(|o| o.columns);
        let output = columns.map(|c| OutputWeights::new(&sample.values, c));
        let m = self.on(&sample, output.as_ref());
        let ladder = codec::scalar::candidates(
            sample.shape,
            self.seed,
            columns.is_some(),
            codec::scalar::Ladder::Coarse,
        );
        let points = ladder
            .into_iter()
            .filter_map(|p| {
                let e = codec::scalar::estimate(&sample.values, sample.shape, &p, columns);
                let trial = codec::Trial::Estimated(e.ok()??);
                let o = m.measure_trial(CodecParams::Scalar(p), &trial);
                Some((
                    sample.full_rate(o.coded_bytes, o.side_bytes),
                    o.distortion.value(),
                ))
            })
            .collect();
        Some((sample, screen::Screen::new(points)))
    }

    /// The sample seen as a matrix to measure options on (`output`: its output weights).
    fn on<'s>(
        &self,
        sample: &'s screen::Sample,
        output: Option<&'s OutputWeights<'s>>,
    ) -> MatrixInput<'s> {
        MatrixInput {
            values: &sample.values,
            shape: sample.shape,
            dtype: self.dtype,
            norm_sq: Stats::of(&sample.values).norm_sq,
            seed: self.seed,
            importance: None,
            queries: None,
            output,
            screen: None,
        }
    }

    fn measure_trial(&self, codec: CodecParams, trial: &codec::Trial) -> MeasuredOption {
        let vector = self.queries.map(|q| VectorMeasure {
            recall_at_10: q.recall(trial.reconstruction(), self.shape),
            bits_per_dimension: Vec::new(),
        });
        MeasuredOption::measure_trial(
            codec,
            trial,
            self.values,
            self.dtype,
            self.norm_sq,
            vector,
            self.output,
        )
    }

    fn measure_encoded(&self, codec: CodecParams, encoded: &codec::Encoded) -> MeasuredOption {
        let vector = self.queries.map(|q| VectorMeasure {
            recall_at_10: q.recall(&encoded.reconstruction, self.shape),
            bits_per_dimension: Vec::new(),
        });
        MeasuredOption::measure(
            codec,
            encoded,
            self.values,
            self.dtype,
            self.norm_sq,
            vector,
            self.output,
        )
    }
}

/// One piece of a tensor's analysis that runs on a core of its own. Natively the pieces of a
/// tensor are spread over all cores (`parallel::map`), so a large tensor is not one thread's tail
/// while the others wait; each piece is computed the same way wherever it runs, and the
/// candidates are put together in a fixed order, so the analysis does not depend on the number of
/// cores.
#[derive(Clone, Copy)]
enum Job {
    /// The exact option (lossless coding of the raw bytes).
    Exact,
    /// The singular values the report shows.
    Spectrum,
    /// Every low-rank option and the sparse + low-rank options built on their encodings.
    Lowrank,
    Fwsvd,
    /// One option of the codecs coded on their own (scalar, vq, turbo, hyper): its index.
    Independent(usize),
}

/// What a [`Job`] gives.
enum JobResult {
    Options(Vec<MeasuredOption>),
    Spectrum(Vec<f32>),
}

/// The matrix codecs' options of a vector dataset (their recall measured too), appended to
/// `analysis.candidates` in the order of [`TensorWork::assemble`].
async fn analyse_matrix(
    backend: &Backend,
    m: &MatrixInput<'_>,
    opts: &CompressOptions,
    analysis: &mut TensorAnalysis,
) -> Result<()> {
    let candidates = codec::MatrixCandidates::for_tensor(
        m.shape,
        m.seed,
        opts.method,
        m.importance,
        m.output.is_some(),
        // A vector dataset's options are judged by recall, which the refinement does not know.
        codec::scalar::Ladder::Full,
    );
    let mut jobs: Vec<Job> = (0..candidates.independent.len())
        .map(Job::Independent)
        .collect();
    jobs.extend([Job::Lowrank, Job::Fwsvd]);
    for job in jobs {
        match run_job(backend, m, None, &candidates, job).await? {
            JobResult::Options(options) => analysis.candidates.extend(options),
            JobResult::Spectrum(_) => {}
        }
    }
    Ok(())
}

/// Runs one piece of a tensor's analysis.
async fn run_job(
    backend: &Backend,
    m: &MatrixInput<'_>,
    raw: Option<&[u8]>,
    candidates: &codec::MatrixCandidates,
    job: Job,
) -> Result<JobResult> {
    let (values, shape) = (m.values, m.shape);
    let options = match job {
        Job::Exact => vec![exact_option(
            raw.expect("only scheduled with raw bytes"),
            m.dtype,
        )?],
        Job::Spectrum => {
            return Ok(JobResult::Spectrum(codec::lowrank::singular_values(
                values,
                shape.rows,
                shape.cols,
                SPECTRUM_LENGTH,
                m.seed,
            )))
        }
        Job::Independent(i) => {
            let p = candidates.independent[i].clone();
            if m.screened_out(backend, &p).await {
                return Ok(JobResult::Options(Vec::new()));
            }
            let columns = m.output.map(|o| o.columns);
            let trial = p.trial_weighted_on(backend, values, shape, columns).await?;
            vec![m.measure_trial(p, &trial)]
        }
        Job::Lowrank => {
            // Options sharing a truncated SVD are encoded together (one SVD each). Each encoding
            // is measured as it comes and dropped, unless a sparse option is built on it (its
            // low-rank part is then reused, not encoded again): a reconstruction is as large as
            // the tensor, and holding all of a 49152 x 576 embedding's took over a GB.
            let (lowrank, sparse) = (&candidates.lowrank, &candidates.sparse_lowrank);
            let reused = |p: &codec::lowrank::Params| {
                sparse.iter().any(|s| {
                    s.selection == codec::sparse_lowrank::Selection::Residual
                        && s.lowrank.as_ref() == Some(p)
                })
            };
            let mut measured = Vec::with_capacity(lowrank.len() + sparse.len());
            let mut kept: Vec<(usize, codec::Encoded)> = Vec::new();
            codec::lowrank::encode_each_on(backend, values, shape, lowrank, |i, e| match e {
                Ok(e) => {
                    let codec = CodecParams::Lowrank(lowrank[i].clone());
                    measured.push(Ok(m.measure_encoded(codec, &e)));
                    if reused(&lowrank[i]) {
                        kept.push((i, e));
                    }
                }
                Err(e) => measured.push(Err(e)),
            })
            .await;
            let known: Vec<(&codec::lowrank::Params, &codec::Encoded)> =
                kept.iter().map(|(i, e)| (&lowrank[*i], e)).collect();
            let sparse_encoded = codec::sparse_lowrank::encode_many(values, shape, sparse, &known);
            drop(known);
            drop(kept);
            for (p, e) in sparse.iter().zip(sparse_encoded) {
                measured.push(m.measure(CodecParams::SparseLowrank(p.clone()), e));
            }
            measured.into_iter().collect::<Result<Vec<_>>>()?
        }
        Job::Fwsvd => {
            let fwsvd = &candidates.fwsvd;
            let encoded = codec::fwsvd::encode_many(values, shape, fwsvd, m.importance);
            let mut out = Vec::with_capacity(fwsvd.len());
            for (p, e) in fwsvd.iter().zip(encoded) {
                out.push(m.measure(CodecParams::Fwsvd(p.clone()), e)?);
            }
            out
        }
    };
    Ok(JobResult::Options(options))
}

/// Runs `analyse` on every tensor. Natively every piece of every tensor ([`TensorWork`]) goes
/// to whichever core is free, taken in tensor order: all cores stay busy (a large tensor's long
/// low-rank piece runs beside the next tensor's pieces instead of being one core's tail), and
/// memory holds only the few tensors being worked on. In the browser the tensors run one after
/// another. Either way each piece is computed the same way and the results are put together in
/// tensor order, so the analysis does not depend on the number of cores.
async fn analyse_all<S: Source + ?Sized>(
    backend: &Backend,
    file: &S,
    ckpt: &Checkpoint,
    opts: &CompressOptions,
    progress: &mut dyn Progress,
) -> Result<Vec<TensorAnalysis>> {
    progress.stage("analyse", ckpt.parameters());
    let vector_dataset = ckpt.format.is_vector_dataset();
    #[cfg(not(target_arch = "wasm32"))]
    {
        analyse_all_native(backend, file, ckpt, opts, vector_dataset, progress)
    }
    #[cfg(target_arch = "wasm32")]
    {
        let mut out = Vec::with_capacity(ckpt.tensors.len());
        let count = ckpt.tensors.len() as u64;
        for (i, t) in ckpt.tensors.iter().enumerate() {
            if progress.cancelled() {
                return Err(Error::Cancelled);
            }
            progress.working_on(&t.name, i as u64 + 1, count);
            let analysis = analyse_tensor_on(backend, file, t, opts, vector_dataset).await;
            out.push(analysis.map_err(|e| e.in_tensor(&t.name))?);
            progress.advance(t.numel(), &t.name);
        }
        Ok(out)
    }
}

/// What one item of the native work list gives.
#[cfg(not(target_arch = "wasm32"))]
enum ItemResult {
    Whole(Result<TensorAnalysis>),
    Piece(Result<JobResult>),
}

#[cfg(not(target_arch = "wasm32"))]
impl ItemResult {
    fn failed(&self) -> bool {
        matches!(self, ItemResult::Whole(Err(_)) | ItemResult::Piece(Err(_)))
    }
}

/// [`analyse_all`] natively: one work list of every tensor's pieces (a tensor analysed whole, or
/// whose plan failed, is one item), spread over the cores by `parallel::map_observed`.
#[cfg(not(target_arch = "wasm32"))]
fn analyse_all_native<S: Source + ?Sized>(
    backend: &Backend,
    file: &S,
    ckpt: &Checkpoint,
    opts: &CompressOptions,
    vector_dataset: bool,
    progress: &mut dyn Progress,
) -> Result<Vec<TensorAnalysis>> {
    let works: Vec<Result<TensorWork>> = ckpt
        .tensors
        .iter()
        .map(|t| TensorWork::plan(t, opts, vector_dataset))
        .collect();
    // (tensor, piece); `None`: the tensor as one item.
    let items: Vec<(usize, Option<usize>)> = works
        .iter()
        .enumerate()
        .flat_map(|(i, w)| match w {
            Ok(w) if !w.jobs.is_empty() => (0..w.jobs.len()).map(|j| (i, Some(j))).collect(),
            _ => vec![(i, None)],
        })
        .collect();
    // Progress counts a tensor's parameters piece by piece, so a large tensor moves the bar
    // while it is worked on.
    let mut pieces: Vec<u64> = vec![0; works.len()];
    for &(i, _) in &items {
        pieces[i] += 1;
    }
    let mut done: Vec<u64> = vec![0; works.len()];
    let results = crate::parallel::map_observed(
        items.len(),
        |k| match items[k] {
            (i, Some(j)) => {
                let w = works[i].as_ref().expect("pieces only of planned tensors");
                ItemResult::Piece(backend::block_on(w.run(backend, file, opts, j)))
            }
            (i, None) => ItemResult::Whole(match &works[i] {
                Ok(_) => backend::block_on(analyse_whole(
                    backend,
                    file,
                    &ckpt.tensors[i],
                    opts,
                    vector_dataset,
                )),
                Err(_) => Err(Error::Cancelled), // replaced by the plan's error below
            }),
        },
        |k, r| {
            let (i, t) = (items[k].0, &ckpt.tensors[items[k].0]);
            let share = |d: u64| (t.numel() as u128 * d as u128 / pieces[i] as u128) as u64;
            done[i] += 1;
            progress.advance(share(done[i]) - share(done[i] - 1), &t.name);
            !r.failed() && !progress.cancelled()
        },
    );
    if progress.cancelled() {
        return Err(Error::Cancelled);
    }
    let mut results = results.into_iter();
    let mut out = Vec::with_capacity(works.len());
    for (t, work) in ckpt.tensors.iter().zip(works) {
        let analysis = match work {
            Err(e) => {
                results.next();
                Err(e)
            }
            Ok(w) if w.jobs.is_empty() => match results.next().flatten() {
                Some(ItemResult::Whole(r)) => r,
                _ => Err(Error::Cancelled),
            },
            Ok(w) => {
                let pieces: Vec<Option<Result<JobResult>>> = (0..w.jobs.len())
                    .map(|_| match results.next().flatten() {
                        Some(ItemResult::Piece(r)) => Some(r),
                        _ => None,
                    })
                    .collect();
                w.assemble(pieces, opts)
            }
        };
        // The first error in tensor order, so the message does not depend on scheduling.
        out.push(analysis.map_err(|e| e.in_tensor(&t.name))?);
    }
    Ok(out)
}

/// Whether `t` is coded as a vector dataset (rows = vectors), and the override rule its name
/// matches, if any.
fn tensor_route(
    t: &InputTensor,
    opts: &CompressOptions,
    vector_dataset: bool,
) -> (bool, Option<OverrideRule>) {
    let forced_vector_coder = matches!(opts.method, Some(Method::Transform | Method::Pq));
    let vector_path = t.shape.len() == 2
        && t.dtype.is_vector_compressible()
        && (forced_vector_coder || (vector_dataset && opts.method.is_none()));
    let rule = opts
        .overrides
        .iter()
        .find(|o| glob_match(&o.pattern, &t.name))
        .map(|o| o.rule);
    (vector_path, rule)
}

/// An input with every tensor's options measured: what the allocator chooses from. It does not
/// depend on the target (`--bpw` / `--max-error`), so the page measures once and re-allocates at
/// once for every position of its bit-budget slider.
#[derive(Clone, Debug)]
pub struct Analysed {
    pub checkpoint: Checkpoint,
    pub analyses: Vec<TensorAnalysis>,
    /// Sibling sets measured for shared-lowrank (one item per tensor otherwise).
    pub shared: AllocatorItems,
    /// A `.csv` / `.fvecs` input's values as f32 bytes, which the checkpoint's ranges point into
    /// (`None`: they point into the input file).
    pub converted: Option<Vec<u8>>,
    /// Where the options were measured.
    pub backend: BackendSummary,
    /// The input file's length.
    pub input_bytes: u64,
}

/// Measures every option of every tensor of `file` (header parsed, tensors read one at a time).
pub async fn analyse_on<S: Source + ?Sized>(
    backend: &Backend,
    backend_reason: &str,
    file: &S,
    file_name: &str,
    opts: &CompressOptions,
    progress: &mut dyn Progress,
) -> Result<Analysed> {
    opts.validate()?;
    let (checkpoint, converted) =
        Checkpoint::load(file, file_name).map_err(|e| e.in_file(file_name))?;
    let gpu_failed_before = backend.fallback().is_some();
    let analyses = match &converted {
        Some(values) => analyse_all(backend, values, &checkpoint, opts, progress).await,
        None => analyse_all(backend, file, &checkpoint, opts, progress).await,
    };
    let mut analyses = analyses.map_err(|e| e.in_file(file_name))?;
    if !gpu_failed_before && backend.fallback().is_some() {
        // Tensors measured on the GPU before it failed would be re-encoded on the CPU, with
        // other bits: measure everything again on the CPU so the plan is one backend's.
        let again = match &converted {
            Some(values) => analyse_all(&Backend::Cpu, values, &checkpoint, opts, progress).await,
            None => analyse_all(&Backend::Cpu, file, &checkpoint, opts, progress).await,
        };
        analyses = again.map_err(|e| e.in_file(file_name))?;
    }
    // shared-lowrank: sibling sets become single allocator items (their options code every
    // member and charge each shared basis once); otherwise one item per tensor.
    let values_of = |t: usize| {
        let t = &checkpoint.tensors[t];
        match &converted {
            Some(values) => tensor_values(values, t),
            None => tensor_values(file, t),
        }
    };
    let shared = AllocatorItems::build(&checkpoint, &analyses, opts, &values_of)
        .map_err(|e| e.in_file(file_name))?;
    Ok(Analysed {
        checkpoint,
        analyses,
        shared,
        converted,
        backend: backend.summary(opts.backend, backend_reason),
        input_bytes: file.len(),
    })
}

/// Tensor `t` of `data` as f32 values (a quantized GGUF tensor dequantized).
pub(crate) fn tensor_values<S: Source + ?Sized>(data: &S, t: &InputTensor) -> Result<Vec<f32>> {
    crate::checkpoint::tensor_values(data, t)
}
