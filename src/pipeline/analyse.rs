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

    /// The analysis of a tensor with only its exact option measured (what every tensor starts
    /// from: the lossless coding of its raw bytes).
    fn exact_only(raw: &[u8], dtype: DType) -> Result<TensorAnalysis> {
        let exact = lossless::encode(raw, dtype)?;
        let lossless_candidate = MeasuredOption {
            codec: CodecParams::Lossless,
            coded_bytes: exact.bytes.len() as u64,
            crc32: container::crc32(&exact.bytes),
            side_bytes: exact.side_bytes as u64,
            sq_error: 0.0,
            distortion: Distortion::RelativeMse(0.0),
            vector: None,
        };
        Ok(TensorAnalysis {
            candidates: vec![lossless_candidate],
            norm_sq: 0.0,
            non_finite: 0,
            restriction: String::new(),
            spectrum: None,
            vectors: None,
            input_energy: None,
        })
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
    let raw = crate::checkpoint::tensor_bytes(file, t)?;
    let raw = raw.as_ref();
    let mut analysis = TensorAnalysis::exact_only(raw, t.dtype)?;
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
    let restriction = exact_only(t, opts, vector_path, rule);
    if let Some(why) = restriction {
        analysis.restriction = why;
        return Ok(analysis);
    }
    let shape = Shape2::of(&t.shape).expect("the reader checked that the element count fits");
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
    let importance = importance.as_deref();
    let columns = match (&opts.activations, vector_path) {
        (Some(stats), false) => stats.columns_for(&t.name, &t.shape),
        _ => None,
    };
    let output = columns.map(|c| OutputWeights::new(&values, c));
    if let Some(c) = columns {
        analysis.input_energy =
            Some(c.iter().map(|&d| d as f64).sum::<f64>() / c.len().max(1) as f64);
    }
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
                None,
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
            output.as_ref(),
            &mut analysis,
        )
        .await?;
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

/// The matrix codecs' options (scalar, vq, low rank, turbo, hyper) for a weight tensor;
/// `importance`: the tensor's row importances from an importance file, if any; with `queries` (a
/// vector dataset), each option's recall@10 is measured too; with `output` (a calibrated linear
/// weight), each option's relative output error is its distortion.
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
    output: Option<&OutputWeights<'_>>,
    analysis: &mut TensorAnalysis,
) -> Result<()> {
    let codec::MatrixCandidates {
        independent: params,
        lowrank,
        sparse_lowrank,
        fwsvd,
    } = codec::MatrixCandidates::for_tensor(shape, seed, opts.method, importance);
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
    let norm_sq = analysis.norm_sq;
    let measure = |codec: CodecParams, encoded: Result<codec::Encoded>| -> Result<MeasuredOption> {
        let encoded = encoded?;
        let vector = queries.map(|q| VectorMeasure {
            recall_at_10: q.recall(&encoded.reconstruction, shape),
            bits_per_dimension: Vec::new(),
        });
        Ok(MeasuredOption::measure(
            codec, &encoded, values, dtype, norm_sq, vector, output,
        ))
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
