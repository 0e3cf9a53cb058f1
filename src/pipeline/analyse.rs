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
    pub coded_bytes: u64,
    pub side_bytes: u64,
    /// CRC-32 of the coded bytes (the manifest stores it; the header is written before the sections).
    pub crc32: u32,
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
        let sq_error = squared_error(values, &encoded.reconstruction, dtype);
        let recall = vector.as_ref().and_then(|v| v.recall_at_10);
        let relative_mse = distortion::relative_mse(sq_error, norm_sq);
        let distortion = match (output, recall) {
            (Some(w), None) => Distortion::OutputError {
                output_error: w.relative_error(values, &encoded.reconstruction, dtype),
                relative_mse,
            },
            _ => Distortion::new(relative_mse, recall),
        };
        MeasuredOption {
            codec,
            coded_bytes: encoded.bytes.len() as u64,
            side_bytes: encoded.side_bytes as u64,
            crc32: container::crc32(&encoded.bytes),
            sq_error,
            distortion,
            vector,
        }
    }
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
        crc32: container::crc32(&exact.bytes),
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

/// [`analyse_tensor`] with the codecs' kernels on `backend`.
pub async fn analyse_tensor_on<S: Source + ?Sized>(
    backend: &Backend,
    file: &S,
    t: &InputTensor,
    opts: &CompressOptions,
    vector_dataset: bool,
) -> Result<TensorAnalysis> {
    let raw = crate::checkpoint::tensor_bytes(file, t)?;
    let raw = raw.as_ref();
    let mut analysis = TensorAnalysis::empty();
    // The norm is measured for every float tensor, exact or not, so the report's error totals
    // cover all of them.
    let (vector_path, rule) = tensor_route(t, opts, vector_dataset);
    let values = if t.dtype.is_lossy_compressible() || vector_path {
        dtype::to_f32(t.dtype, raw)
    } else {
        Vec::new()
    };
    analysis.non_finite = values.iter().filter(|v| !v.is_finite()).count() as u64;
    analysis.norm_sq = values
        .iter()
        .filter(|v| v.is_finite())
        .map(|&v| (v as f64) * (v as f64))
        .sum();
    let restriction = exact_only(t, opts, vector_path, rule);
    let shape = Shape2::of(&t.shape).expect("the reader checked that the element count fits");
    if restriction.is_some() || analysis.non_finite > 0 {
        analysis.candidates.push(exact_option(raw, t.dtype)?);
    }
    if let Some(why) = restriction {
        analysis.restriction = why;
        return Ok(analysis);
    }
    if analysis.non_finite > 0 && vector_path {
        return Err(non_finite_vectors(&values, shape, analysis.non_finite));
    }
    if analysis.non_finite > 0 {
        analysis.restriction = format!("{} NaN/Inf values: stored exactly", analysis.non_finite);
        return Ok(analysis);
    }
    let seed = Rng::for_stream(opts.seed, &t.name).next_u64();
    let importance = match &opts.importance {
        Some(map) => map.rows_for(&t.name, &t.shape)?,
        None => None,
    };
    let columns = match (&opts.activations, vector_path) {
        (Some(stats), false) => stats.columns_for(&t.name, &t.shape),
        _ => None,
    };
    let output = columns.map(|c| OutputWeights::new(&values, c));
    if let Some(c) = columns {
        analysis.input_energy =
            Some(c.iter().map(|&d| d as f64).sum::<f64>() / c.len().max(1) as f64);
    }
    let wants = |m: Method| opts.method.is_none() || opts.method == Some(m);
    let matrix = MatrixInput {
        values: &values,
        shape,
        dtype: t.dtype,
        norm_sq: analysis.norm_sq,
        seed,
        importance: importance.as_deref(),
        queries: None,
        output: output.as_ref(),
    };
    if vector_path {
        analysis.candidates.push(exact_option(raw, t.dtype)?);
        let queries =
            analyse_vectors(backend, &values, shape, t.dtype, opts, seed, &mut analysis).await?;
        // In auto mode the matrix codecs compete too: on a small dataset (100 x 32) the vector
        // coders' side information (mean, basis, codebooks, tables) costs more than they save.
        // Their recall is measured like the vector coders' (the allocator compares recall).
        if opts.method.is_none() && t.dtype.is_lossy_compressible() {
            let matrix = MatrixInput {
                queries: Some(&queries),
                output: None,
                ..matrix
            };
            analyse_matrix(backend, &matrix, None, false, opts, &mut analysis).await?;
        }
    } else {
        let spectrum = opts.spectra && wants(Method::Lowrank) && shape.rows > 1 && shape.cols > 1;
        analyse_matrix(backend, &matrix, Some(raw), spectrum, opts, &mut analysis).await?;
    }
    if opts.method.is_some() && analysis.candidates.len() > 1 {
        // A forced method replaces the exact option (it stays only where the method cannot apply).
        analysis.candidates.remove(0);
    }
    if let Some(OverrideRule::BitsPerWeight(bits)) = rule {
        keep_within(&mut analysis, t, bits);
    }
    if let Some(s) = &opts.sensitivity {
        analysis.weigh(s.for_tensor(&t.name));
    }
    Ok(analysis)
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
}

impl MatrixInput<'_> {
    /// The option `codec`, measured from its encoding.
    fn measure(
        &self,
        codec: CodecParams,
        encoded: Result<codec::Encoded>,
    ) -> Result<MeasuredOption> {
        let encoded = encoded?;
        let vector = self.queries.map(|q| VectorMeasure {
            recall_at_10: q.recall(&encoded.reconstruction, self.shape),
            bits_per_dimension: Vec::new(),
        });
        Ok(MeasuredOption::measure(
            codec,
            &encoded,
            self.values,
            self.dtype,
            self.norm_sq,
            vector,
            self.output,
        ))
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

/// The matrix codecs' options (scalar, vq, low rank, turbo, hyper, fwsvd) of a tensor, appended
/// to `analysis.candidates` in a fixed order: the exact option when `raw` is given, the
/// independent codecs' options, low rank, sparse + low rank, fwsvd. With `spectrum`, the
/// singular values the report shows are measured too.
async fn analyse_matrix(
    backend: &Backend,
    m: &MatrixInput<'_>,
    raw: Option<&[u8]>,
    spectrum: bool,
    opts: &CompressOptions,
    analysis: &mut TensorAnalysis,
) -> Result<()> {
    let candidates =
        codec::MatrixCandidates::for_tensor(m.shape, m.seed, opts.method, m.importance);
    if opts.method.is_some()
        && candidates.independent.is_empty()
        && candidates.lowrank.is_empty()
        && candidates.sparse_lowrank.is_empty()
        && candidates.fwsvd.is_empty()
    {
        analysis.restriction =
            "the forced method does not apply to this shape: stored exactly".to_string();
    }
    // The longest pieces first, so that they are not left to the end.
    let mut jobs = vec![Job::Lowrank, Job::Fwsvd];
    if spectrum {
        jobs.push(Job::Spectrum);
    }
    if raw.is_some() {
        jobs.push(Job::Exact);
    }
    jobs.extend((0..candidates.independent.len()).map(Job::Independent));
    let run = |job: Job| run_job(backend, m, raw, &candidates, job);
    #[cfg(not(target_arch = "wasm32"))]
    let mut results: Vec<Result<JobResult>> =
        crate::parallel::map(jobs.len(), |i| backend::block_on(run(jobs[i])));
    #[cfg(target_arch = "wasm32")]
    let mut results: Vec<Result<JobResult>> = {
        let mut out = Vec::with_capacity(jobs.len());
        for &job in &jobs {
            out.push(run(job).await);
        }
        out
    };
    // Put together in the candidates' order; the first error in that order is the one reported.
    let mut take = |wanted: fn(&Job) -> bool| -> Vec<Result<JobResult>> {
        let mut out = Vec::new();
        for (job, r) in jobs.iter().zip(results.iter_mut()) {
            if wanted(job) {
                out.push(std::mem::replace(r, Ok(JobResult::Options(Vec::new()))));
            }
        }
        out
    };
    let exact = take(|j| matches!(j, Job::Exact));
    let independent = take(|j| matches!(j, Job::Independent(_)));
    let lowrank = take(|j| matches!(j, Job::Lowrank));
    let fwsvd = take(|j| matches!(j, Job::Fwsvd));
    let spectra = take(|j| matches!(j, Job::Spectrum));
    for r in exact
        .into_iter()
        .chain(independent)
        .chain(lowrank)
        .chain(fwsvd)
        .chain(spectra)
    {
        match r? {
            JobResult::Options(options) => analysis.candidates.extend(options),
            JobResult::Spectrum(values) => analysis.spectrum = Some(values),
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
            let encoded = p.encode_on(backend, values, shape).await;
            vec![m.measure(p, encoded)?]
        }
        Job::Lowrank => {
            // Options sharing a truncated SVD are encoded together (one SVD each); the sparse
            // options' low-rank parts are among the lowrank options, so those encodings are
            // reused before they go.
            let lowrank = &candidates.lowrank;
            let encoded = codec::lowrank::encode_many_on(backend, values, shape, lowrank).await;
            let known: Vec<(&codec::lowrank::Params, &codec::Encoded)> = lowrank
                .iter()
                .zip(&encoded)
                .filter_map(|(p, e)| e.as_ref().ok().map(|e| (p, e)))
                .collect();
            let sparse = &candidates.sparse_lowrank;
            let sparse_encoded = codec::sparse_lowrank::encode_many(values, shape, sparse, &known);
            drop(known);
            let mut out = Vec::with_capacity(lowrank.len() + sparse.len());
            for (p, e) in lowrank.iter().zip(encoded) {
                out.push(m.measure(CodecParams::Lowrank(p.clone()), e)?);
            }
            for (p, e) in sparse.iter().zip(sparse_encoded) {
                out.push(m.measure(CodecParams::SparseLowrank(p.clone()), e)?);
            }
            out
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

/// Runs `analyse` on every tensor, in order. A tensor's options are spread over the cores
/// (`analyse_matrix`), so tensors are taken one at a time: memory holds one tensor's values and
/// one reconstruction per core, whatever the model's size. Runs of tensors stored exactly
/// without trying a lossy option (norms, biases, integer tensors, `--method lossless`) have a
/// single piece of work each: they are spread over the cores as a batch instead.
async fn analyse_all<S: Source + ?Sized>(
    backend: &Backend,
    file: &S,
    ckpt: &Checkpoint,
    opts: &CompressOptions,
    progress: &mut dyn Progress,
) -> Result<Vec<TensorAnalysis>> {
    progress.stage("analyse", ckpt.parameters());
    let vector_dataset = ckpt.format.is_vector_dataset();
    let one = |i: usize| analyse_tensor_on(backend, file, &ckpt.tensors[i], opts, vector_dataset);
    let n = ckpt.tensors.len();
    let mut out = Vec::with_capacity(n);
    let mut i = 0;
    while i < n {
        if progress.cancelled() {
            return Err(Error::Cancelled);
        }
        let run_end = (i..n)
            .find(|&j| !stored_exactly(&ckpt.tensors[j], opts, vector_dataset))
            .unwrap_or(n);
        let batch: Vec<Result<TensorAnalysis>> = if run_end > i {
            #[cfg(not(target_arch = "wasm32"))]
            {
                crate::parallel::map(run_end - i, |k| backend::block_on(one(i + k)))
            }
            #[cfg(target_arch = "wasm32")]
            {
                vec![one(i).await]
            }
        } else {
            vec![one(i).await]
        };
        for r in batch {
            let t = &ckpt.tensors[i];
            out.push(r.map_err(|e| e.in_tensor(&t.name))?);
            progress.advance(t.numel(), &t.name);
            i += 1;
        }
    }
    Ok(out)
}

/// Whether `t` is stored exactly without any lossy option being tried (what [`exact_only`]
/// decides, known before the tensor is read).
fn stored_exactly(t: &InputTensor, opts: &CompressOptions, vector_dataset: bool) -> bool {
    let (vector_path, rule) = tensor_route(t, opts, vector_dataset);
    exact_only(t, opts, vector_path, rule).is_some()
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
