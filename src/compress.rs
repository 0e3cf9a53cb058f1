//! The pipeline: analyse (every codec option of every tensor, measured by encoding it) ->
//! allocate (one option per tensor for the target) -> encode (stream the container) and its
//! inverse, decompress. Also `inspect`. No printing, no paths: bytes in, bytes out, a report back.

use std::io::Write;

use serde::Serialize;

use crate::alloc::{self, Allocator, OptionPoint};
use crate::backend::{self, Backend, BackendChoice, BackendSummary};
use crate::checkpoint::{Checkpoint, InputTensor};
use crate::codec::{self, lossless, CodecParams, Method, Shape2};
use crate::container::{self, Container, Manifest, SourceFormat, TensorRecord};
use crate::dataset::vectors;
use crate::dtype::{self, DType};
use crate::error::{Error, Result};
use crate::io::{csv, fvecs, npy, safetensors};
use crate::progress::Progress;
use crate::report::{
    BitAllocation, InputSummary, OptionReport, OutputSummary, RdPoint, Report, Spectrum,
    TargetSummary, TensorReport, VectorOptionReport, VectorRdPoint, VectorReport,
    REPORT_SCHEMA_VERSION,
};
use crate::rng::Rng;
use crate::source::Source;

/// Tensors with fewer parameters than this are always coded losslessly: a lossy codec's side
/// information would cost more than it saves, and these are norms, biases and small tables.
pub const MIN_LOSSY_PARAMETERS: u64 = 1024;
/// The largest vq codebook `--method auto` tries (see `analyse_tensor`).
pub const AUTO_VQ_MAX_CODEBOOK: u32 = 256;
/// How many singular values the report keeps per tensor.
pub const SPECTRUM_LENGTH: usize = 64;

/// What the user asks for.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Target {
    /// Whole output file at most this many bits per parameter.
    BitsPerWeight(f64),
    /// Every tensor's relative Frobenius error at most this.
    MaxError(f64),
}

/// A per-tensor rule chosen by name pattern (`--keep 'embeddings.*=8'`).
#[derive(Clone, Debug, PartialEq)]
pub struct Override {
    /// A glob: `*` matches any run of characters, `?` one character.
    pub pattern: String,
    pub rule: OverrideRule,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum OverrideRule {
    /// Store the matching tensors exactly.
    Lossless,
    /// Code the matching tensors with the lowest-error option of at most this many bits per weight.
    BitsPerWeight(f64),
}

impl std::str::FromStr for Override {
    type Err = Error;

    /// `PATTERN=BITS` or `PATTERN=lossless`.
    fn from_str(s: &str) -> Result<Self> {
        let (pattern, rule) = s.rsplit_once('=').ok_or_else(|| {
            Error::option(format!(
                "override '{s}' is not PATTERN=BITS or PATTERN=lossless"
            ))
        })?;
        if pattern.is_empty() {
            return Err(Error::option(format!(
                "override '{s}' has an empty pattern"
            )));
        }
        let rule = if rule == "lossless" {
            OverrideRule::Lossless
        } else {
            let bits: f64 = rule.parse().map_err(|_| {
                Error::option(format!(
                    "override '{s}': '{rule}' is not a number of bits or 'lossless'"
                ))
            })?;
            if !(bits > 0.0 && bits <= 64.0) {
                return Err(Error::option(format!(
                    "override '{s}': bits must be in (0, 64]"
                )));
            }
            OverrideRule::BitsPerWeight(bits)
        };
        Ok(Override {
            pattern: pattern.to_string(),
            rule,
        })
    }
}

impl std::fmt::Display for Override {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.rule {
            OverrideRule::Lossless => write!(f, "{}=lossless", self.pattern),
            OverrideRule::BitsPerWeight(b) => write!(f, "{}={b}", self.pattern),
        }
    }
}

/// Glob match with `*` and `?` (iterative, linear backtracking on the last `*`).
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut pi, mut ni, mut star, mut mark) = (0, 0, None, 0);
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

#[derive(Clone, Debug)]
pub struct CompressOptions {
    pub target: Target,
    /// `None` = auto: the allocator chooses the codec per tensor.
    pub method: Option<Method>,
    pub overrides: Vec<Override>,
    /// Base seed of every random choice (rotations, sketches, k-means++).
    pub seed: u64,
    /// Compute singular-value spectra for the report.
    pub spectra: bool,
    /// Where the heavy kernels run.
    pub backend: BackendChoice,
    /// How a `--bpw` budget is shared among tensors (unused with `--max-error`).
    pub allocator: Allocator,
    /// Row importances for fwsvd from an importance file (`--importance`), per tensor name.
    pub importance: Option<codec::fwsvd::ImportanceMap>,
}

impl CompressOptions {
    pub fn new(target: Target) -> Self {
        CompressOptions {
            target,
            method: None,
            overrides: Vec::new(),
            seed: 0,
            spectra: true,
            backend: BackendChoice::Auto,
            allocator: Allocator::default(),
            importance: None,
        }
    }

    fn validate(&self) -> Result<()> {
        match self.target {
            Target::BitsPerWeight(b) if !(b.is_finite() && b > 0.0) => Err(Error::option(format!(
                "--bpw must be a positive number, got {b}"
            ))),
            Target::MaxError(e) if !(e.is_finite() && e >= 0.0) => Err(Error::option(format!(
                "--max-error must be a non-negative number, got {e}"
            ))),
            _ => Ok(()),
        }
    }
}

/// One measured option of one tensor.
#[derive(Clone, Debug)]
pub struct Candidate {
    pub codec: CodecParams,
    pub coded_bytes: u64,
    pub side_bytes: u64,
    /// CRC-32 of the coded bytes (the manifest stores it; the header is written before the sections).
    pub crc32: u32,
    /// Sum of squared errors after conversion back to the tensor's dtype (0 for lossless).
    pub sq_error: f64,
    /// For a vector coder's option: what the report shows about it.
    pub vector: Option<VectorMeasure>,
}

/// What is measured about a vector coder's option besides its size and error.
#[derive(Clone, Debug)]
pub struct VectorMeasure {
    /// recall@10 of the sampled queries against the reconstructed rows (see
    /// [`vectors::RecallQueries`]); `None` when the dataset has a single row.
    pub recall_at_10: Option<f64>,
    /// Bits per vector spent on each dimension (entropy estimate): per KLT component for the
    /// transform coder, per coordinate for PQ.
    pub bits_per_dimension: Vec<f64>,
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
    pub candidates: Vec<Candidate>,
    /// Sum of squares of the tensor (f64).
    pub norm_sq: f64,
    pub non_finite: u64,
    /// Why only some codecs were tried (empty when all were).
    pub restriction: String,
    pub spectrum: Option<Vec<f32>>,
    /// Present when the tensor was coded as a vector dataset.
    pub vectors: Option<VectorStats>,
}

impl TensorAnalysis {
    pub(crate) fn rel_mse(&self, c: &Candidate) -> f64 {
        if c.sq_error == 0.0 {
            0.0
        } else {
            c.sq_error / self.norm_sq.max(f64::MIN_POSITIVE)
        }
    }
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
    let raw = file.read(t.range.clone())?;
    let raw = raw.as_ref();
    let exact = lossless::encode(raw, t.dtype)?;
    let lossless_candidate = Candidate {
        codec: CodecParams::Lossless,
        coded_bytes: exact.bytes.len() as u64,
        crc32: container::crc32(&exact.bytes),
        side_bytes: exact.side_bytes as u64,
        sq_error: 0.0,
        vector: None,
    };
    let mut analysis = TensorAnalysis {
        candidates: vec![lossless_candidate],
        norm_sq: 0.0,
        non_finite: 0,
        restriction: String::new(),
        spectrum: None,
        vectors: None,
    };
    // The norm is measured for every float tensor, exact or not, so the report's error totals
    // cover all of them.
    let forced_vector_coder = matches!(opts.method, Some(Method::Transform | Method::Pq));
    let vector_path = t.shape.len() == 2
        && t.dtype.is_vector_compressible()
        && (forced_vector_coder || (vector_dataset && opts.method.is_none()));
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
    let rule = opts
        .overrides
        .iter()
        .find(|o| glob_match(&o.pattern, &t.name))
        .map(|o| o.rule);
    let restriction = if !t.dtype.is_lossy_compressible() && !vector_path {
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
    };
    if let Some(why) = restriction {
        analysis.restriction = why;
        return Ok(analysis);
    }
    let shape = Shape2::of(&t.shape).expect("the reader checked that the element count fits");
    if analysis.non_finite > 0 && vector_path {
        let at = values
            .iter()
            .position(|v| !v.is_finite())
            .expect("non_finite > 0");
        return Err(Error::invalid(format!(
            "{} NaN/Inf values in the vectors (the first at row {}, column {}): the vector coders \
             need finite numbers (--method lossless stores the file exactly)",
            analysis.non_finite,
            at / shape.cols + 1,
            at % shape.cols + 1
        )));
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
    let importance = importance.as_deref();
    if vector_path {
        let queries =
            analyse_vectors(backend, &values, shape, t.dtype, opts, seed, &mut analysis).await?;
        // In auto mode the matrix codecs compete too: on a small dataset (100 x 32) the vector
        // coders' side information (mean, basis, codebooks, tables) costs more than they save.
        // Their recall is measured like the vector coders' (the allocator compares recall).
        if opts.method.is_none() && t.dtype.is_lossy_compressible() {
            analyse_matrix(
                backend,
                &values,
                shape,
                t.dtype,
                opts,
                seed,
                importance,
                Some(&queries),
                &mut analysis,
            )
            .await?;
        }
    } else {
        analyse_matrix(
            backend,
            &values,
            shape,
            t.dtype,
            opts,
            seed,
            importance,
            None,
            &mut analysis,
        )
        .await?;
    }
    if opts.method.is_some() && analysis.candidates.len() > 1 {
        // A forced method replaces the exact option (it stays only where the method cannot apply).
        analysis.candidates.remove(0);
    }
    if let Some(OverrideRule::BitsPerWeight(bits)) = rule {
        let numel = t.numel().max(1) as f64;
        let bpw =
            |c: &Candidate| 8.0 * container::section_len(t.numel(), c.coded_bytes) as f64 / numel;
        let within: Vec<&Candidate> = analysis
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
    let wants = |m: Method| opts.method.is_none() || opts.method == Some(m);
    if !vector_path && opts.spectra && wants(Method::Lowrank) && shape.rows > 1 && shape.cols > 1 {
        analysis.spectrum = Some(codec::lowrank::singular_values(
            &values,
            shape.rows,
            shape.cols,
            SPECTRUM_LENGTH,
            seed,
        ));
    }
    Ok(analysis)
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
        let encoded = option.encoded;
        analysis.candidates.push(Candidate {
            coded_bytes: encoded.bytes.len() as u64,
            crc32: container::crc32(&encoded.bytes),
            side_bytes: encoded.side_bytes as u64,
            sq_error: squared_error(values, &encoded.reconstruction, dtype),
            vector: Some(VectorMeasure {
                recall_at_10: option.recall_at_10,
                bits_per_dimension: option.bits_per_dimension,
            }),
            codec: option.codec,
        });
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

/// The matrix codecs' options (scalar, vq, low rank, turbo, hyper) for a weight tensor;
/// `importance`: the tensor's row importances from an importance file, if any; with `queries` (a
/// vector dataset), each option's recall@10 is measured too.
#[allow(clippy::too_many_arguments)]
async fn analyse_matrix(
    backend: &Backend,
    values: &[f32],
    shape: Shape2,
    dtype: DType,
    opts: &CompressOptions,
    seed: u64,
    importance: Option<&[f64]>,
    queries: Option<&vectors::RecallQueries>,
    analysis: &mut TensorAnalysis,
) -> Result<()> {
    let mut params: Vec<CodecParams> = Vec::new();
    let wants = |m: Method| opts.method.is_none() || opts.method == Some(m);
    if wants(Method::Scalar) {
        params.extend(
            codec::scalar::candidates(shape, seed)
                .into_iter()
                .map(CodecParams::Scalar),
        );
    }
    if wants(Method::Vq) {
        // In auto mode only the small codebooks are tried: on all-MiniLM-L6-v2 the entropy-coded
        // scalar grid beat every vq option above ~1.2 bits per weight, and the large fits took most
        // of the analysis time (89 s against 12 s for the whole model). `--method vq` tries all.
        let small_only = opts.method.is_none();
        params.extend(
            codec::vq::candidates(shape, seed)
                .into_iter()
                .filter(|p| !small_only || p.k <= AUTO_VQ_MAX_CODEBOOK)
                .map(CodecParams::Vq),
        );
    }
    // Turbo and hyper: in auto mode a few options only, since on all-MiniLM-L6-v2 neither beat
    // the scalar grid overall (docs/METHODS.md); `--method turbo|hyper` tries all of them.
    let auto = opts.method.is_none();
    if wants(Method::Turbo) {
        params.extend(
            codec::turbo::candidates(shape, seed)
                .into_iter()
                .filter(|p| !auto || codec::turbo::AUTO_BITS.contains(&p.bits))
                .map(CodecParams::Turbo),
        );
    }
    if wants(Method::Hyper) {
        params.extend(
            codec::hyper::candidates(shape)
                .into_iter()
                .filter(|p| !auto || codec::hyper::AUTO_SIDE_POINTS.contains(&p.n.isqrt()))
                .map(CodecParams::Hyper),
        );
    }
    // Low-rank options sharing a sketch share one SVD (encode_many computes each once).
    // `--method shared-lowrank` measures the per-tensor low rank too: a tensor without siblings
    // is coded by it, and `shared_basis::SharedPlan` reuses its pure options.
    let lowrank: Vec<codec::lowrank::Params> =
        if wants(Method::Lowrank) || opts.method == Some(Method::SharedLowrank) {
            codec::lowrank::candidates(shape, seed)
        } else {
            Vec::new()
        };
    // FWSVD when asked for, or in auto for a tensor an importance file weights: with the data-free
    // proxies only, the allocator's distortion is the unweighted error, which the plain SVD
    // already minimises, so auto would have nothing to gain from them.
    let fwsvd: Vec<codec::fwsvd::Params> =
        if opts.method == Some(Method::Fwsvd) || (auto && importance.is_some()) {
            codec::fwsvd::candidates_with(shape, seed, importance)
        } else {
            Vec::new()
        };
    // Sparse plus low rank: options sharing a low-rank part share its encoding.
    let sparse_lowrank: Vec<codec::sparse_lowrank::Params> = if wants(Method::SparseLowrank) {
        codec::sparse_lowrank::candidates(shape, seed)
    } else {
        Vec::new()
    };
    if opts.method.is_some()
        && params.is_empty()
        && lowrank.is_empty()
        && sparse_lowrank.is_empty()
        && fwsvd.is_empty()
    {
        analysis.restriction =
            "the forced method does not apply to this shape: stored exactly".to_string();
    }
    // Each encoding is measured and dropped at once: a reconstruction is as large as the tensor,
    // and holding all ~45 of a 4096 x 4096 tensor's took 3 GiB (the page's > 4 GiB test).
    let measure = |codec: CodecParams, encoded: Result<codec::Encoded>| -> Result<Candidate> {
        let encoded = encoded?;
        Ok(Candidate {
            codec,
            coded_bytes: encoded.bytes.len() as u64,
            crc32: container::crc32(&encoded.bytes),
            side_bytes: encoded.side_bytes as u64,
            sq_error: squared_error(values, &encoded.reconstruction, dtype),
            vector: queries.map(|q| VectorMeasure {
                recall_at_10: q.recall(&encoded.reconstruction, shape),
                bits_per_dimension: Vec::new(),
            }),
        })
    };
    for p in params {
        let encoded = p.encode_on(backend, values, shape).await;
        analysis.candidates.push(measure(p, encoded)?);
    }
    // Options sharing a truncated SVD are encoded together (one SVD each); the sparse options'
    // low-rank parts are among the lowrank options, so those encodings are reused before they go.
    let lowrank_encoded = codec::lowrank::encode_many_on(backend, values, shape, &lowrank).await;
    let known: Vec<(&codec::lowrank::Params, &codec::Encoded)> = lowrank
        .iter()
        .zip(&lowrank_encoded)
        .filter_map(|(p, e)| e.as_ref().ok().map(|e| (p, e)))
        .collect();
    let sparse_lowrank_encoded =
        codec::sparse_lowrank::encode_many(values, shape, &sparse_lowrank, &known);
    drop(known);
    for (p, encoded) in lowrank.into_iter().zip(lowrank_encoded) {
        analysis
            .candidates
            .push(measure(CodecParams::Lowrank(p), encoded)?);
    }
    for (p, encoded) in sparse_lowrank.into_iter().zip(sparse_lowrank_encoded) {
        analysis
            .candidates
            .push(measure(CodecParams::SparseLowrank(p), encoded)?);
    }
    let fwsvd_encoded = codec::fwsvd::encode_many(values, shape, &fwsvd, importance);
    for (p, encoded) in fwsvd.into_iter().zip(fwsvd_encoded) {
        analysis
            .candidates
            .push(measure(CodecParams::Fwsvd(p), encoded)?);
    }
    Ok(())
}

/// Sum of squared differences, measured on what the user gets back: the reconstruction converted
/// to the tensor's own dtype.
pub(crate) fn squared_error(original: &[f32], reconstruction: &[f32], dtype: DType) -> f64 {
    let round = |v: f32| match dtype {
        DType::F16 => half::f16::from_f32(v).to_f32(),
        DType::BF16 => half::bf16::from_f32(v).to_f32(),
        _ => v,
    };
    original
        .iter()
        .zip(reconstruction)
        .map(|(&a, &b)| {
            let d = a as f64 - round(b) as f64;
            d * d
        })
        .sum()
}

/// Runs `analyse` on every tensor: natively on all cores (results in tensor order, so the output does
/// not depend on scheduling), in the browser on the calling thread.
async fn analyse_all<S: Source + ?Sized>(
    backend: &Backend,
    file: &S,
    ckpt: &Checkpoint,
    opts: &CompressOptions,
    progress: &mut dyn Progress,
) -> Result<Vec<TensorAnalysis>> {
    progress.stage("analyse", ckpt.parameters());
    #[cfg(not(target_arch = "wasm32"))]
    {
        let run = |i: usize| {
            let t = &ckpt.tensors[i];
            backend::block_on(analyse_tensor_on(
                backend,
                file,
                t,
                opts,
                ckpt.format.is_vector_dataset(),
            ))
            .map_err(|e| e.in_tensor(&t.name))
        };
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        let workers = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .min(ckpt.tensors.len())
            .max(1);
        let next = AtomicUsize::new(0);
        let stop = AtomicBool::new(false);
        let mut results: Vec<Option<Result<TensorAnalysis>>> =
            (0..ckpt.tensors.len()).map(|_| None).collect();
        std::thread::scope(|scope| {
            let (tx, rx) = std::sync::mpsc::channel();
            for _ in 0..workers {
                let tx = tx.clone();
                let (next, stop, run) = (&next, &stop, &run);
                scope.spawn(move || loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= ckpt.tensors.len() || stop.load(Ordering::Relaxed) {
                        break;
                    }
                    if tx.send((i, run(i))).is_err() {
                        break;
                    }
                });
            }
            drop(tx);
            for (i, r) in rx {
                let failed = r.is_err();
                results[i] = Some(r);
                progress.advance(ckpt.tensors[i].numel(), &ckpt.tensors[i].name);
                if failed || progress.cancelled() {
                    stop.store(true, Ordering::Relaxed);
                }
            }
        });
        if progress.cancelled() {
            return Err(Error::Cancelled);
        }
        // The first error in tensor order, so the message does not depend on scheduling.
        results
            .into_iter()
            .map(|r| r.unwrap_or(Err(Error::Cancelled)))
            .collect()
    }
    #[cfg(target_arch = "wasm32")]
    {
        let mut out = Vec::with_capacity(ckpt.tensors.len());
        for i in 0..ckpt.tensors.len() {
            if progress.cancelled() {
                return Err(Error::Cancelled);
            }
            let t = &ckpt.tensors[i];
            out.push(
                analyse_tensor_on(backend, file, t, opts, ckpt.format.is_vector_dataset())
                    .await
                    .map_err(|e| e.in_tensor(&t.name))?,
            );
            progress.advance(ckpt.tensors[i].numel(), &ckpt.tensors[i].name);
        }
        Ok(out)
    }
}

/// The allocator's decision for a whole checkpoint, with everything measured on the way.
#[derive(Clone, Debug)]
pub struct Plan {
    pub checkpoint: Checkpoint,
    pub analyses: Vec<TensorAnalysis>,
    /// Index into each tensor's candidates.
    pub choice: Vec<usize>,
    pub manifest: Manifest,
    pub header_len: u64,
    /// Where the kernels ran (and whether the GPU was given up).
    pub backend: BackendSummary,
    pub output_bytes: u64,
}

/// The allocator's distortion of one option: the tensor's relative MSE, every tensor counting the
/// same whatever its size. Measured on all-MiniLM-L6-v2 at 4 bpw (BENCHMARKS.md): weighting by
/// parameter count instead (the plain MSE of relative errors over all weights) spends half the
/// budget on the 11.7M-entry word-embedding table and gives embedding cosine 0.9669; equal weight
/// per tensor gives 0.9902 for the same file size (0.9897 with sqrt(params) weights).
///
/// A vector dataset (rows coded as vectors) is different: what it is for is nearest-neighbour
/// search, and at the same size the option with the lower MSE is not the one that ranks neighbours
/// best (MiniLM's word embeddings, docs/VECTORS.md). There the distortion is 1 - recall@10 on the
/// sampled queries, with the relative MSE as a tie-break far below recall's resolution. `--max-error`
/// stays an MSE bound (it does not use this function).
fn distortion(a: &TensorAnalysis, c: &Candidate) -> f64 {
    let recall = c.vector.as_ref().and_then(|v| v.recall_at_10);
    match (&a.vectors, recall) {
        (Some(_), Some(recall)) => (1.0 - recall) + 1e-6 * a.rel_mse(c),
        _ => a.rel_mse(c),
    }
}

fn option_points(ckpt: &Checkpoint, analyses: &[TensorAnalysis]) -> Vec<Vec<OptionPoint>> {
    ckpt.tensors
        .iter()
        .zip(analyses)
        .map(|(t, a)| {
            a.candidates
                .iter()
                .map(|c| OptionPoint {
                    bytes: container::section_len(t.numel(), c.coded_bytes),
                    distortion: distortion(a, c),
                })
                .collect()
        })
        .collect()
}

fn manifest_for(ckpt: &Checkpoint, analyses: &[TensorAnalysis], choice: &[usize]) -> Manifest {
    // When every tensor is exact, keep the source header verbatim so that decompression gives back
    // the very same file (key order, spacing and padding included), as a lossless tool should.
    let all_exact = analyses
        .iter()
        .zip(choice)
        .all(|(a, &i)| a.candidates[i].codec == CodecParams::Lossless);
    Manifest {
        version: container::VERSION,
        source_format: ckpt.format,
        source_metadata: ckpt.metadata.clone(),
        source_header: if all_exact {
            ckpt.exact_header.clone()
        } else {
            None
        },
        source_bytes: None,
        groups: Vec::new(),
        tensors: ckpt
            .tensors
            .iter()
            .zip(analyses)
            .zip(choice)
            .map(|((t, a), &i)| {
                let c = &a.candidates[i];
                TensorRecord {
                    name: t.name.clone(),
                    dtype: t.dtype,
                    shape: t.shape.clone(),
                    codec: c.codec.clone(),
                    coded_bytes: c.coded_bytes,
                    side_bytes: c.side_bytes,
                    crc32: c.crc32,
                }
            })
            .collect(),
    }
}

fn output_size(manifest: &Manifest) -> Result<(u64, u64)> {
    let header = container::encode_header(manifest)?.len() as u64;
    Ok((
        header,
        header
            + manifest
                .tensors
                .iter()
                .map(TensorRecord::section_len)
                .sum::<u64>()
            + manifest
                .groups
                .iter()
                .map(container::GroupRecord::section_len)
                .sum::<u64>(),
    ))
}

/// Analyses and allocates: what `compress` would write, without writing it (`lowbit plan`).
/// `file_name` tells `.csv` and `.fvecs` inputs apart (see [`Checkpoint::load`]). Runs on the
/// backend `opts.backend` asks for.
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
    let a = analyse_on(backend, backend_reason, file, file_name, opts, progress).await?;
    allocate(&a, opts)
}

/// An input with every tensor's options measured: what the allocator chooses from. It does not
/// depend on the target (`--bpw` / `--max-error`), so the page measures once and re-allocates at
/// once for every position of its bit-budget slider.
#[derive(Clone, Debug)]
pub struct Analysed {
    pub checkpoint: Checkpoint,
    pub analyses: Vec<TensorAnalysis>,
    /// Sibling sets measured for shared-lowrank (one item per tensor otherwise).
    pub shared: crate::shared_basis::SharedPlan,
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
    let shared = crate::shared_basis::SharedPlan::build(&checkpoint, &analyses, opts, &values_of)
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

/// Tensor `t` of `data` as f32 values.
fn tensor_values<S: Source + ?Sized>(data: &S, t: &InputTensor) -> Result<Vec<f32>> {
    Ok(dtype::to_f32(t.dtype, &data.read(t.range.clone())?))
}

/// The allocator: one measured option per tensor (or per sibling set), meeting `opts.target`.
pub fn allocate(a: &Analysed, opts: &CompressOptions) -> Result<Plan> {
    opts.validate()?;
    let (checkpoint, shared) = (a.checkpoint.clone(), &a.shared);
    let mut analyses = a.analyses.clone();
    let manifest_of = |analyses: &[TensorAnalysis], c: &[usize]| {
        shared.manifest(
            manifest_for(&checkpoint, analyses, &shared.tensor_choice(c)),
            c,
        )
    };
    let points = shared.points(&option_points(&checkpoint, &analyses));
    let choice = match opts.target {
        Target::BitsPerWeight(bpw) => {
            let allowed = (bpw * checkpoint.parameters() as f64 / 8.0).floor() as u64;
            // The header's size depends a little on the choice: allocate, measure, shrink the
            // section budget by any excess, repeat (converges in one or two rounds).
            let cheapest: Vec<usize> = points
                .iter()
                .map(|o| {
                    (0..o.len())
                        .min_by_key(|&i| (o[i].bytes, i))
                        .expect("every tensor has an option")
                })
                .collect();
            let (min_header, min_total) = output_size(&manifest_of(&analyses, &cheapest))?;
            if min_total > allowed {
                return Err(Error::option(format!(
                    "--bpw {bpw} is below the smallest file lowbit can make for this input: {:.3} bits per weight \
                     ({min_total} bytes, of which {min_header} header; tensors stored exactly cannot shrink further)",
                    8.0 * min_total as f64 / checkpoint.parameters().max(1) as f64
                )));
            }
            let mut budget = allowed.saturating_sub(min_header);
            let mut choice = cheapest;
            for _ in 0..8 {
                let Some(c) = opts.allocator.allocate(&points, budget) else {
                    break;
                };
                let (_, total) = output_size(&manifest_of(&analyses, &c))?;
                if total <= allowed {
                    choice = c;
                    break;
                }
                budget = budget.saturating_sub(total - allowed);
            }
            choice
        }
        Target::MaxError(max_error) => {
            let picks = alloc::allocate_max_error(&points, max_error, |t, i| {
                shared.item_error(&analyses, t, i)
            });
            picks
                .into_iter()
                .enumerate()
                // The exact option always qualifies unless a forced method removed it; then take
                // the most accurate option and say so in the report.
                .map(|(t, p)| p.unwrap_or_else(|| shared.most_accurate(&analyses, t)))
                .collect()
        }
    };
    let manifest = manifest_of(&analyses, &choice);
    let choice = shared.finish(&mut analyses, &choice);
    let (header_len, output_bytes) = output_size(&manifest)?;
    Ok(Plan {
        checkpoint,
        analyses,
        choice,
        manifest,
        header_len,
        output_bytes,
        backend: a.backend.clone(),
    })
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
    let a = analyse_on(backend, backend_reason, file, file_name, opts, progress).await?;
    let mut plan = allocate(&a, opts).map_err(|e| e.in_file(file_name))?;
    match &a.converted {
        Some(values) => encode_on(backend, &mut plan, opts, values, progress, out).await,
        None => encode_on(backend, &mut plan, opts, file, progress, out).await,
    }
    .map_err(|e| e.in_file(file_name))?;
    Ok(build_report(&plan, file_name, a.input_bytes, opts, true))
}

/// Writes the `.lowbit` of a plan to `out`: the header, then each tensor's section, encoded again
/// from `data` (the bytes the plan's tensor ranges point into) and checked against what the
/// analysis measured.
pub async fn encode_on<S: Source + ?Sized>(
    backend: &Backend,
    plan: &mut Plan,
    opts: &CompressOptions,
    data: &S,
    progress: &mut dyn Progress,
    out: &mut dyn Write,
) -> Result<()> {
    let header = container::encode_header(&plan.manifest)?;
    let io_err = |e| Error::io("output", e);
    out.write_all(&header).map_err(io_err)?;
    progress.stage("encode", plan.checkpoint.parameters());
    // shared-lowrank groups are coded as wholes, before the sections are streamed.
    let mut shared = crate::shared_basis::encode_groups(&plan.manifest, &|i| {
        tensor_values(data, &plan.checkpoint.tensors[i])
    })?;
    for (i, (t, record)) in plan
        .checkpoint
        .tensors
        .iter()
        .zip(&plan.manifest.tensors)
        .enumerate()
    {
        if progress.cancelled() {
            return Err(Error::Cancelled);
        }
        let raw = data.read(t.range.clone())?;
        let bytes = match &record.codec {
            CodecParams::Lossless => lossless::encode(&raw, t.dtype)?.bytes,
            CodecParams::SharedLowrank(_) => shared.members[i]
                .take()
                .ok_or_else(|| Error::invalid("internal error: a group member was not coded"))?,
            // An importance file's values are not in the header: take them from the options.
            CodecParams::Fwsvd(p) if p.importance.is_file() => {
                let rows = opts
                    .importance
                    .as_ref()
                    .map(|m| m.rows_for(&t.name, &t.shape))
                    .transpose()?
                    .flatten()
                    .unwrap_or_default();
                codec::fwsvd::encode_with_importance(
                    &dtype::to_f32(t.dtype, &raw),
                    Shape2::of(&t.shape).expect("checked"),
                    p,
                    &rows,
                )?
                .bytes
            }
            lossy => {
                let values = dtype::to_f32(t.dtype, &raw);
                drop(raw);
                lossy
                    .encode_on(backend, &values, Shape2::of(&t.shape).expect("checked"))
                    .await?
                    .bytes
            }
        };
        if bytes.len() as u64 != record.coded_bytes || container::crc32(&bytes) != record.crc32 {
            if let (Some(reason), None) = (backend.fallback(), &plan.backend.fallback) {
                return Err(Error::GpuFailedWhileWriting { reason });
            }
            return Err(Error::invalid(format!(
                "internal error: re-encoding gave other bytes ({} bytes) than the analysis measured ({}): a non-deterministic codec",
                bytes.len(),
                record.coded_bytes
            ))
            .in_tensor(&t.name));
        }
        out.write_all(&bytes).map_err(io_err)?;
        let padding = record.section_len() - record.coded_bytes;
        out.write_all(&vec![0u8; padding as usize])
            .map_err(io_err)?;
        progress.advance(t.numel(), &t.name);
    }
    for (record, bytes) in plan.manifest.groups.iter().zip(&shared.bases) {
        out.write_all(bytes).map_err(io_err)?;
        let padding = record.section_len() - record.coded_bytes;
        out.write_all(&vec![0u8; padding as usize])
            .map_err(io_err)?;
    }
    out.flush().map_err(io_err)?;
    plan.backend.fallback = backend.fallback();
    Ok(())
}

/// The report for a plan (`written` says whether the file was produced).
pub fn build_report(
    plan: &Plan,
    file_name: &str,
    input_bytes: u64,
    opts: &CompressOptions,
    written: bool,
) -> Report {
    let ckpt = &plan.checkpoint;
    let params = ckpt.parameters();
    let mut tensors = Vec::with_capacity(ckpt.tensors.len());
    let (mut payload, mut side, mut padding) = (0u64, 0u64, 0u64);
    let (mut lossy_err, mut lossy_norm, mut twod_err, mut twod_norm) = (0.0, 0.0, 0.0, 0.0);
    for ((t, a), &ci) in ckpt.tensors.iter().zip(&plan.analyses).zip(&plan.choice) {
        let c = &a.candidates[ci];
        let section = container::section_len(t.numel(), c.coded_bytes);
        payload += c.coded_bytes - c.side_bytes;
        side += c.side_bytes;
        padding += section - c.coded_bytes;
        let rel_mse = a.rel_mse(c);
        if c.codec != CodecParams::Lossless {
            lossy_err += c.sq_error;
            lossy_norm += a.norm_sq;
        }
        if t.dtype.is_lossy_compressible() && t.shape.len() >= 2 {
            twod_err += c.sq_error;
            twod_norm += a.norm_sq;
        }
        let numel = t.numel().max(1) as f64;
        let why = crate::report::explain(&crate::report::Decision {
            options: a
                .candidates
                .iter()
                .map(|o| crate::report::Choice {
                    label: o.codec.label(),
                    bytes: container::section_len(t.numel(), o.coded_bytes),
                    rel_mse: distortion(a, o),
                    exact: o.codec == CodecParams::Lossless,
                })
                .collect(),
            chosen: ci,
            rule: if !a.restriction.is_empty() {
                crate::report::Rule::Restricted(a.restriction.clone())
            } else {
                match opts.target {
                    Target::BitsPerWeight(_) => crate::report::Rule::Budget(opts.allocator),
                    Target::MaxError(e) => crate::report::Rule::MaxError(e),
                }
            },
            forced: opts.method.map(|m| m.name().to_string()),
        });
        let reason = why.text.clone();
        tensors.push(TensorReport {
            name: t.name.clone(),
            dtype: t.dtype,
            shape: t.shape.clone(),
            parameters: t.numel(),
            codec: c.codec.clone(),
            label: c.codec.label(),
            section_bytes: section,
            payload_bytes: c.coded_bytes - c.side_bytes,
            side_bytes: c.side_bytes,
            bits_per_weight: 8.0 * section as f64 / numel,
            rel_error: rel_mse.sqrt(),
            rel_mse,
            snr_db: (rel_mse > 0.0).then(|| -10.0 * rel_mse.log10()),
            non_finite: a.non_finite,
            reason,
            why,
            options: a
                .candidates
                .iter()
                .enumerate()
                .map(|(i, o)| OptionReport {
                    label: o.codec.label(),
                    bits_per_weight: 8.0 * container::section_len(t.numel(), o.coded_bytes) as f64
                        / numel,
                    rel_mse: a.rel_mse(o),
                    chosen: i == ci,
                })
                .collect(),
        });
    }
    for g in &plan.manifest.groups {
        payload += g.coded_bytes - g.side_bytes;
        side += g.side_bytes;
        padding += g.section_len() - g.coded_bytes;
    }
    let points = option_points(ckpt, &plan.analyses);
    let lossy_tensors = plan
        .analyses
        .iter()
        .filter(|a| {
            a.candidates
                .iter()
                .any(|c| c.codec != CodecParams::Lossless)
        })
        .count();
    let rd_curve = alloc::rd_curve(&points)
        .into_iter()
        .map(|p| RdPoint {
            bits_per_weight: 8.0 * p.bytes as f64 / params.max(1) as f64,
            rel_mse: p.distortion / lossy_tensors.max(1) as f64,
        })
        .collect();
    let spectra = ckpt
        .tensors
        .iter()
        .zip(&plan.analyses)
        .filter_map(|(t, a)| {
            a.spectrum.as_ref().map(|s| Spectrum {
                tensor: t.name.clone(),
                singular_values: s.clone(),
            })
        })
        .collect();
    let ratio_of = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
    Report {
        schema_version: REPORT_SCHEMA_VERSION,
        lowbit_version: env!("CARGO_PKG_VERSION").to_string(),
        input: InputSummary {
            file: file_name.to_string(),
            format: ckpt.format,
            bytes: input_bytes,
            parameters: params,
            tensors: ckpt.tensors.len(),
        },
        target: TargetSummary {
            kind: match opts.target {
                Target::BitsPerWeight(_) => "bits_per_weight".into(),
                Target::MaxError(_) => "max_error".into(),
            },
            value: match opts.target {
                Target::BitsPerWeight(v) | Target::MaxError(v) => v,
            },
            method: opts
                .method
                .map(|m| m.name().to_string())
                .unwrap_or_else(|| "auto".into()),
            overrides: opts.overrides.iter().map(|o| o.to_string()).collect(),
            allocator: opts.allocator.name().to_string(),
        },
        output: OutputSummary {
            bytes: plan.output_bytes,
            bits_per_weight: 8.0 * plan.output_bytes as f64 / params.max(1) as f64,
            header_bytes: plan.header_len,
            payload_bytes: payload,
            side_bytes: side,
            padding_bytes: padding,
            ratio: ratio_of(input_bytes as f64, plan.output_bytes as f64),
            rel_mse_lossy: ratio_of(lossy_err, lossy_norm),
            rel_mse_2d: ratio_of(twod_err, twod_norm),
            written,
        },
        distortion_measure:
            "sum over tensors of the relative squared error ||W - W^||^2 / ||W||^2, every \
                             tensor counting the same whatever its size"
                .into(),
        tensors,
        rd_curve,
        spectra,
        vectors: vector_report(plan),
        notes: notes(plan)
            .into_iter()
            .chain(importance_note(plan, opts))
            .collect(),
        backend: plan.backend.clone(),
    }
}

/// Points of the Gaussian R(D) bound drawn in the report, from 1/16 to 8 bits per dimension.
const RD_BOUND_POINTS: usize = 64;

/// The report's vector section, for the first tensor coded as a vector dataset.
fn vector_report(plan: &Plan) -> Option<VectorReport> {
    let (t, a, &ci) = plan
        .checkpoint
        .tensors
        .iter()
        .zip(&plan.analyses)
        .zip(&plan.choice)
        .map(|((t, a), c)| (t, a, c))
        .find(|(_, a, _)| a.vectors.is_some())?;
    let stats = a.vectors.as_ref().expect("found above");
    let numel = t.numel().max(1) as f64;
    let eig = &stats.eigenvalues;
    let options: Vec<VectorOptionReport> = a
        .candidates
        .iter()
        .enumerate()
        .filter(|(_, c)| c.vector.is_some())
        .map(|(i, c)| {
            let bits = 8.0 * container::section_len(t.numel(), c.coded_bytes) as f64 / numel;
            let mse = c.sq_error / numel;
            let bound = vectors::gaussian_rate(eig, mse);
            VectorOptionReport {
                label: c.codec.label(),
                bits_per_dimension: bits,
                mse_per_dimension: mse,
                rd_bound_bits: bound,
                gap_bits: bits - bound,
                recall_at_10: c.vector.as_ref().and_then(|v| v.recall_at_10),
                chosen: i == ci,
            }
        })
        .collect();
    let rd_bound = (0..RD_BOUND_POINTS)
        .map(|i| {
            let rate = 2f64.powf(-4.0 + 7.0 * i as f64 / (RD_BOUND_POINTS - 1) as f64);
            VectorRdPoint {
                bits_per_dimension: rate,
                mse_per_dimension: vectors::gaussian_distortion(eig, rate),
            }
        })
        .collect();
    let chosen = &a.candidates[ci];
    // Matrix codecs chosen for a vector dataset have a recall but no per-dimension estimate.
    let allocation = chosen
        .vector
        .as_ref()
        .filter(|v| !v.bits_per_dimension.is_empty())
        .map(|v| BitAllocation {
            label: chosen.codec.label(),
            axis: match chosen.codec {
                CodecParams::Transform(_) => "KLT component".into(),
                _ => "coordinate".into(),
            },
            estimated_bits: v.bits_per_dimension.clone(),
            water_filling_bits: vectors::water_filling_allocation(eig, chosen.sq_error / numel),
        });
    Some(VectorReport {
        tensor: t.name.clone(),
        vectors: stats.vectors,
        dimension: stats.dimension,
        eigenvalues: eig.clone(),
        options,
        rd_bound,
        recall_queries: stats.recall_queries,
        recall_definition: format!(
            "{} rows drawn from the data (seeded) are the queries, kept exact; for each, the {} \
             nearest other rows of the original data (squared Euclidean distance) are the truth, \
             and recall is the fraction of them among its {} nearest other rows of the \
             reconstruction",
            stats.recall_queries,
            vectors::RECALL_K,
            vectors::RECALL_K
        ),
        allocation,
    })
}

/// Things the user should know about a run, in words.
fn notes(plan: &Plan) -> Vec<String> {
    let mut notes = Vec::new();
    let non_finite: Vec<&str> = plan
        .checkpoint
        .tensors
        .iter()
        .zip(&plan.analyses)
        .filter(|(_, a)| a.non_finite > 0)
        .map(|(t, _)| t.name.as_str())
        .collect();
    if !non_finite.is_empty() {
        notes.push(format!(
            "{} tensor(s) contain NaN or Inf values and were stored exactly: {}",
            non_finite.len(),
            non_finite.join(", ")
        ));
    }
    notes
}

/// What an importance file did: which tensors fwsvd weighted with it, which fell back to the
/// data-free proxies, and entries that match no tensor.
fn importance_note(plan: &Plan, opts: &CompressOptions) -> Option<String> {
    let map = opts.importance.as_ref()?;
    let mut used = 0;
    let mut proxy = Vec::new();
    for (t, a) in plan.checkpoint.tensors.iter().zip(&plan.analyses) {
        let weighted = a
            .candidates
            .iter()
            .any(|c| matches!(&c.codec, CodecParams::Fwsvd(p) if p.importance.is_file()));
        let fwsvd_proxy = a
            .candidates
            .iter()
            .any(|c| matches!(&c.codec, CodecParams::Fwsvd(p) if !p.importance.is_file()));
        if weighted {
            used += 1;
        } else if fwsvd_proxy {
            proxy.push(t.name.as_str());
        }
    }
    let unmatched = map
        .tensors
        .keys()
        .filter(|k| !plan.checkpoint.tensors.iter().any(|t| &t.name == *k))
        .count();
    let mut note = format!(
        "importance file {}: fwsvd weighted {used} tensor(s) with its values",
        map.source
    );
    if !proxy.is_empty() {
        note.push_str(&format!(
            "; {} tensor(s) have no entry and used the data-free proxies (row-energy, \
             inv-row-energy): {}",
            proxy.len(),
            proxy.join(", ")
        ));
    }
    if unmatched > 0 {
        note.push_str(&format!("; {unmatched} entr(ies) match no tensor"));
    }
    if opts.method.is_some() && opts.method != Some(Method::Fwsvd) {
        note.push_str(" (unused: the forced method is not fwsvd)");
    }
    Some(note)
}

/// What `decompress` wrote.
#[derive(Clone, Debug, Serialize)]
pub struct DecompressSummary {
    pub format: SourceFormat,
    pub tensors: usize,
    pub parameters: u64,
    pub bytes_written: u64,
}

/// Decodes a `.lowbit` to the original kind of file (safetensors or npy), written to `out` tensor by
/// tensor. Everything is validated before the first byte is written.
pub fn decompress(
    file: &[u8],
    file_name: &str,
    progress: &mut dyn Progress,
    out: &mut dyn Write,
) -> Result<DecompressSummary> {
    let c = Container::read(file).map_err(|e| e.in_file(file_name))?;
    let m = &c.manifest;
    if let Some(kind) = crate::dataset::DatasetKind::of(m.source_format) {
        progress.stage("decode", m.source_bytes.unwrap_or(0));
        let bytes = crate::dataset::decompress(&c, file, kind).map_err(|e| e.in_file(file_name))?;
        out.write_all(&bytes).map_err(|e| Error::io("output", e))?;
        out.flush().map_err(|e| Error::io("output", e))?;
        progress.advance(bytes.len() as u64, "");
        return Ok(DecompressSummary {
            format: m.source_format,
            tensors: m.tensors.len(),
            parameters: m.tensors.iter().map(TensorRecord::numel).sum(),
            bytes_written: bytes.len() as u64,
        });
    }
    let header = match m.source_format {
        SourceFormat::Safetensors if m.source_header.is_some() => {
            exact_source_header(m).map_err(|e| e.in_file(file_name))?
        }
        SourceFormat::Safetensors => {
            let planned: Vec<safetensors::PlannedTensor> = m
                .tensors
                .iter()
                .map(|t| safetensors::PlannedTensor {
                    name: t.name.clone(),
                    dtype: t.dtype,
                    shape: t.shape.clone(),
                })
                .collect();
            safetensors::encode_header(&planned, &m.source_metadata)
                .map_err(|e| e.in_file(file_name))?
        }
        SourceFormat::Npy => {
            let [t] = m.tensors.as_slice() else {
                return Err(
                    Error::corrupt("an npy source must have exactly one tensor").in_file(file_name)
                );
            };
            npy::encode_header(t.dtype, &t.shape).map_err(|e| e.in_file(file_name))?
        }
        SourceFormat::Csv | SourceFormat::Fvecs => {
            let [t] = m.tensors.as_slice() else {
                return Err(
                    Error::corrupt("a csv or fvecs source must have exactly one tensor")
                        .in_file(file_name),
                );
            };
            if t.shape.len() != 2 || t.dtype != DType::F32 {
                return Err(
                    Error::corrupt("a csv or fvecs source must be one 2-D F32 array")
                        .in_file(file_name),
                );
            }
            match (
                m.source_format,
                m.source_metadata.get(container::CSV_HEADER_KEY),
            ) {
                (SourceFormat::Csv, Some(h)) => format!("{h}\n").into_bytes(),
                _ => Vec::new(),
            }
        }
        SourceFormat::Fasta | SourceFormat::Fastq | SourceFormat::Text => {
            unreachable!("sequence sources returned above")
        }
    };
    let io_err = |e| Error::io("output", e);
    out.write_all(&header).map_err(io_err)?;
    let parameters: u64 = m.tensors.iter().map(TensorRecord::numel).sum();
    progress.stage("decode", parameters);
    let mut written = header.len() as u64;
    let bases = crate::shared_basis::decode_bases(&c, file).map_err(|e| e.in_file(file_name))?;
    for (record, range) in m.tensors.iter().zip(&c.sections) {
        if progress.cancelled() {
            return Err(Error::Cancelled);
        }
        let bytes = crate::shared_basis::decode_tensor(&file[range.clone()], record, &bases)
            .map_err(|e| e.in_tensor(&record.name).in_file(file_name))?;
        // Text and fvecs records are written from the values (checked above: one 2-D F32 array).
        let bytes = match m.source_format {
            SourceFormat::Csv => {
                csv::write(None, &dtype::to_f32(DType::F32, &bytes), record.shape[1])
            }
            SourceFormat::Fvecs => {
                fvecs::write(&dtype::to_f32(DType::F32, &bytes), record.shape[1])
            }
            SourceFormat::Safetensors | SourceFormat::Npy => bytes,
            SourceFormat::Fasta | SourceFormat::Fastq | SourceFormat::Text => {
                unreachable!("sequence sources returned above")
            }
        };
        out.write_all(&bytes).map_err(io_err)?;
        written += bytes.len() as u64;
        progress.advance(record.numel(), &record.name);
    }
    out.flush().map_err(io_err)?;
    Ok(DecompressSummary {
        format: m.source_format,
        tensors: m.tensors.len(),
        parameters,
        bytes_written: written,
    })
}

/// The source's own header (8-byte length + JSON), after checking that it describes exactly the
/// tensors the manifest restores, in order and back to back: a `.lowbit` cannot make decompression
/// write a file whose header disagrees with its data.
fn exact_source_header(m: &Manifest) -> Result<Vec<u8>> {
    let json = m.source_header.as_deref().unwrap_or_default();
    let data: u64 = m
        .tensors
        .iter()
        .map(|t| t.numel() * t.dtype.size() as u64)
        .sum();
    let file_len = 8 + json.len() as u64 + data;
    let h = safetensors::parse_header(json.as_bytes(), file_len)
        .map_err(|e| Error::corrupt(format!("the stored source header is invalid: {e}")))?;
    let mut offset = 0;
    let consistent = h.tensors.len() == m.tensors.len()
        && h.tensors.iter().zip(&m.tensors).all(|(e, r)| {
            let ok = e.name == r.name
                && e.dtype == r.dtype
                && e.shape == r.shape
                && (e.start == offset || e.start == e.end);
            offset = offset.max(e.end);
            ok
        })
        && offset == data;
    if !consistent {
        return Err(Error::corrupt(
            "the stored source header does not match the manifest's tensors",
        ));
    }
    let mut out = (json.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(json.as_bytes());
    Ok(out)
}

/// Decodes one section to the tensor's bytes in its own dtype.
pub fn decode_tensor(section: &[u8], record: &TensorRecord) -> Result<Vec<u8>> {
    let numel = usize::try_from(record.numel())
        .map_err(|_| Error::corrupt("too many elements for this machine"))?;
    let bytes = match &record.codec {
        CodecParams::Lossless => lossless::decode(section, record.dtype, numel)?,
        CodecParams::Sequence(_) => {
            return Err(Error::corrupt(
                "a sequence stream is not a tensor (decoded by dataset::decompress)",
            ))
        }
        lossy => {
            let shape =
                Shape2::of(&record.shape).ok_or_else(|| Error::corrupt("shape overflows"))?;
            let values = lossy.decode(section, shape)?;
            if values.len() != numel {
                return Err(Error::corrupt(
                    "the codec returned the wrong number of values",
                ));
            }
            dtype::from_f32(record.dtype, &values)
        }
    };
    if bytes.len() != numel * record.dtype.size() {
        return Err(Error::corrupt("decoded tensor has the wrong length"));
    }
    Ok(bytes)
}

/// What `inspect` shows.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Inspection {
    Checkpoint {
        format: SourceFormat,
        bytes: u64,
        parameters: u64,
        tensors: Vec<InspectedTensor>,
    },
    Lowbit {
        bytes: u64,
        parameters: u64,
        bits_per_weight: f64,
        header_bytes: u64,
        source_format: SourceFormat,
        tensors: Vec<InspectedTensor>,
    },
    /// A FASTA, FASTQ or text file (not yet compressed).
    Sequence(crate::dataset::SequenceSummary),
}

#[derive(Clone, Debug, Serialize)]
pub struct InspectedTensor {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub parameters: u64,
    /// Bytes in the file (raw data for a checkpoint, the coded section for a `.lowbit`).
    pub bytes: u64,
    /// For a `.lowbit`: the codec label.
    pub codec: Option<String>,
    pub bits_per_weight: f64,
}

/// What kind of input a file is, decided from its first bytes (and its name for `.csv` /
/// `.fvecs`): what `inspect` and the page dispatch on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputKind {
    /// A safetensors checkpoint, an npy array or a vector dataset: compressed tensor by tensor.
    Checkpoint,
    /// A `.lowbit` file: inspected or restored.
    Lowbit,
    /// A FASTA, FASTQ or text file: coded losslessly as a whole.
    Sequence(crate::dataset::DatasetKind),
}

/// How much of a file is read to tell a sequence file from a binary one before reading it whole.
const SNIFF_BYTES: u64 = 1 << 16;

/// The kind of `file`, reading its header alone for checkpoints and `.lowbit` files. A file that
/// is none of these is routed as a checkpoint, whose reader then says what is wrong with it.
pub fn input_kind<S: Source + ?Sized>(file: &S, file_name: &str) -> Result<InputKind> {
    if crate::checkpoint::vector_format_by_name(file_name).is_some() {
        return Ok(InputKind::Checkpoint);
    }
    let head = file.prefix(SNIFF_BYTES)?;
    if head.starts_with(b"\x93NUMPY") {
        return Ok(InputKind::Checkpoint);
    }
    if let Ok(json_len) = safetensors::header_len(&head, file.len()) {
        if let Ok(h) = safetensors::parse_header(&file.read(8..8 + json_len)?, file.len()) {
            let lowbit =
                h.metadata.get("format").map(String::as_str) == Some(container::FORMAT_NAME);
            return Ok(if lowbit {
                InputKind::Lowbit
            } else {
                InputKind::Checkpoint
            });
        }
    }
    if crate::dataset::sniff(&head).is_none() {
        return Ok(InputKind::Checkpoint);
    }
    Ok(match crate::dataset::sniff(&file.whole()?) {
        Some(kind) => InputKind::Sequence(kind),
        None => InputKind::Checkpoint,
    })
}

/// Lists the tensors of a checkpoint (from its header alone), or the contents and bits per weight
/// of a `.lowbit`, or summarises a sequence file.
pub fn inspect<S: Source + ?Sized>(file: &S, file_name: &str) -> Result<Inspection> {
    let bpw = |bytes: u64, n: u64| 8.0 * bytes as f64 / n.max(1) as f64;
    match input_kind(file, file_name).map_err(|e| e.in_file(file_name))? {
        InputKind::Sequence(kind) => {
            let whole = file.whole()?;
            Ok(Inspection::Sequence(crate::dataset::summarize(
                &whole, kind,
            )))
        }
        InputKind::Lowbit => {
            let whole = file.whole().map_err(|e| e.in_file(file_name))?;
            let c = Container::read(&whole).map_err(|e| e.in_file(file_name))?;
            let tensors: Vec<InspectedTensor> = c
                .manifest
                .tensors
                .iter()
                .map(|r| InspectedTensor {
                    name: r.name.clone(),
                    dtype: r.dtype,
                    shape: r.shape.clone(),
                    parameters: r.numel(),
                    bytes: r.section_len(),
                    codec: Some(r.codec.label()),
                    bits_per_weight: bpw(r.section_len(), r.numel()),
                })
                .collect();
            let parameters = tensors.iter().map(|t| t.parameters).sum();
            Ok(Inspection::Lowbit {
                bytes: file.len(),
                parameters,
                bits_per_weight: bpw(file.len(), parameters),
                header_bytes: c.header_bytes,
                source_format: c.manifest.source_format,
                tensors,
            })
        }
        InputKind::Checkpoint => {
            let (ckpt, _) = Checkpoint::load(file, file_name).map_err(|e| e.in_file(file_name))?;
            let tensors = ckpt
                .tensors
                .iter()
                .map(|t| InspectedTensor {
                    name: t.name.clone(),
                    dtype: t.dtype,
                    shape: t.shape.clone(),
                    parameters: t.numel(),
                    bytes: t.range.end - t.range.start,
                    codec: None,
                    bits_per_weight: 8.0 * t.dtype.size() as f64,
                })
                .collect();
            Ok(Inspection::Checkpoint {
                format: ckpt.format,
                bytes: file.len(),
                parameters: ckpt.parameters(),
                tensors,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_matches_like_a_shell() {
        assert!(glob_match(
            "embeddings.*",
            "embeddings.word_embeddings.weight"
        ));
        assert!(glob_match(
            "*.bias",
            "encoder.layer.0.attention.self.query.bias"
        ));
        assert!(glob_match("layer.?.w", "layer.3.w"));
        assert!(!glob_match("layer.?.w", "layer.10.w"));
        assert!(glob_match("*", ""));
        assert!(!glob_match("a*b", "acbd"));
        assert!(glob_match("a*b*c", "aXbYbZc"));
    }

    #[test]
    fn overrides_parse() {
        assert_eq!(
            "emb*=8".parse::<Override>().unwrap(),
            Override {
                pattern: "emb*".into(),
                rule: OverrideRule::BitsPerWeight(8.0)
            }
        );
        assert_eq!(
            "x=lossless".parse::<Override>().unwrap().rule,
            OverrideRule::Lossless
        );
        assert!("x".parse::<Override>().is_err());
        assert!("=3".parse::<Override>().is_err());
        assert!("x=abc".parse::<Override>().is_err());
        assert!("x=0".parse::<Override>().is_err());
    }
}
