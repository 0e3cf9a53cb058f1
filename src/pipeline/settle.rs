//! Settling: from estimated sizes to exact ones. The analysis estimates the scalar grids' sizes
//! from their codes' histograms instead of coding them ([`crate::codec::Estimated`]: within a
//! few bytes, tested), so the allocator chooses among options some of whose sizes are estimates.
//! A file is written, and a plan reported, from exact sizes only: [`settle`] codes each chosen
//! option whose size is an estimate and records its exact size and CRC in the analysis. The
//! plan it returns has every chosen option's size exact and meets the target on those sizes:
//! the budget is never exceeded because of an estimate.
//!
//! The allocator's choice stands when it still meets the target on exact sizes (the usual case:
//! the estimates are within a few bytes); otherwise it chooses again knowing them. Each round
//! codes only options the allocator chose (one per tensor at most, against the analysis's
//! dozens), and the rounds end: each codes at least one option, and an option once coded stays
//! exact.

use crate::backend::Backend;
use crate::checkpoint::Checkpoint;
use crate::codec::{self, CodecParams};
use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::source::Source;

use super::allocate::{allocate, allowed_bytes, Plan};
use super::analyse::{Analysed, TensorAnalysis};
use super::options::{CompressOptions, Target};
use super::write::encode_section;

/// The plan for `opts.target` with every chosen option's size exact (see the module's comment).
/// `file`: where the analysis read the tensors from (a `.csv` / `.fvecs` input's converted values
/// are taken from `analysed`). The options coded on the way keep their exact sizes in
/// `analysed`, so a later allocation (another budget) starts from them.
pub async fn settle<S: Source + ?Sized>(
    backend: &Backend,
    analysed: &mut Analysed,
    opts: &CompressOptions,
    file: &S,
    progress: &mut dyn Progress,
) -> Result<Plan> {
    loop {
        let mut plan = allocate(analysed, opts)?;
        let wanted = match opts.exhaustive {
            true => Vec::new(),
            false => refinements(&plan),
        };
        if !wanted.is_empty() {
            let ckpt = &plan.checkpoint;
            let measured = match &analysed.converted {
                Some(values) => {
                    measure_rungs(backend, ckpt, &wanted, opts, values, progress).await?
                }
                None => measure_rungs(backend, ckpt, &wanted, opts, file, progress).await?,
            };
            for ((t, _), options) in wanted.iter().zip(measured) {
                analysed.analyses[*t].candidates.extend(options);
            }
            continue;
        }
        let chosen = estimated_choices(&plan.analyses, &plan.choice);
        if chosen.is_empty() {
            return Ok(plan);
        }
        let ckpt = &plan.checkpoint;
        let coded = match &analysed.converted {
            Some(values) => code_options(backend, ckpt, &chosen, opts, values, progress).await?,
            None => code_options(backend, ckpt, &chosen, opts, file, progress).await?,
        };
        for ((t, option), section) in chosen.iter().zip(&coded) {
            let candidates = &mut analysed.analyses[*t].candidates;
            let same = candidates
                .iter()
                .position(|c| c.is_estimate() && c.codec == option.codec)
                .ok_or_else(|| {
                    Error::invalid("internal error: a chosen option is not in the analysis")
                })?;
            candidates[same].settle(&section.0, section.1);
            plan.analyses[*t].candidates[plan.choice[*t]].settle(&section.0, section.1);
        }
        // The choice stands if it still meets the target on exact sizes; otherwise the
        // allocator chooses again, knowing them.
        plan.rechoose(plan.choice.clone())?;
        let fits = match opts.target {
            Target::BitsPerWeight(bpw) => {
                plan.output_bytes <= allowed_bytes(bpw, plan.checkpoint.parameters())
            }
            Target::MaxError(_) => true,
        };
        if fits {
            return Ok(plan);
        }
    }
}

/// Codes the chosen options of `plan` whose sizes are estimates and puts their exact figures in
/// the plan (its manifest and sizes again): what the search does with the choice it ends with.
pub async fn settle_choice<S: Source + ?Sized>(
    backend: &Backend,
    plan: &mut Plan,
    opts: &CompressOptions,
    file: &S,
    progress: &mut dyn Progress,
) -> Result<()> {
    let chosen = estimated_choices(&plan.analyses, &plan.choice);
    if chosen.is_empty() {
        return Ok(());
    }
    let coded = code_options(backend, &plan.checkpoint, &chosen, opts, file, progress).await?;
    for ((t, _), section) in chosen.into_iter().zip(coded) {
        let i = plan.choice[t];
        plan.analyses[t].candidates[i].settle(&section.0, section.1);
    }
    plan.rechoose(plan.choice.clone())
}

/// How far from a chosen rung of the scalar ladder its neighbours are measured: half the coarse
/// ladder's stride, so that with the coarse rungs every fineness within reach of the choice is
/// known.
const REFINE_REACH: i32 = codec::scalar::COARSE_STRIDE / 2;

/// The scalar ladder's rungs to measure next: for each tensor whose chosen option is a rung, the
/// rungs within [`REFINE_REACH`] of it not measured yet (tensor order). Empty once every chosen
/// rung has its neighbours, which ends the refinement: the allocator has then seen every rung
/// near its choice. Tensors whose options are restricted (an override, a vector dataset) and
/// plans with shared-lowrank's sets are left as they are.
fn refinements(plan: &Plan) -> Vec<(usize, Vec<CodecParams>)> {
    if !plan.manifest.groups.is_empty() {
        return Vec::new();
    }
    let mut out = Vec::new();
    for (t, (a, &i)) in plan.analyses.iter().zip(&plan.choice).enumerate() {
        let CodecParams::Scalar(p) = &a.candidates[i].codec else {
            continue;
        };
        if !a.restriction.is_empty() || a.vectors.is_some() {
            continue;
        }
        let missing: Vec<CodecParams> = codec::scalar::neighbours(p, REFINE_REACH)
            .into_iter()
            .map(CodecParams::Scalar)
            .filter(|n| a.candidates.iter().all(|c| c.codec != *n))
            .collect();
        if !missing.is_empty() {
            out.push((t, missing));
        }
    }
    out
}

/// The rungs `wanted` measured ([`super::analyse::measure_more`]), in the order given; natively
/// the tensors are spread over the cores.
async fn measure_rungs<S: Source + ?Sized>(
    backend: &Backend,
    checkpoint: &Checkpoint,
    wanted: &[(usize, Vec<CodecParams>)],
    opts: &CompressOptions,
    data: &S,
    progress: &mut dyn Progress,
) -> Result<Vec<Vec<super::MeasuredOption>>> {
    let tensors: Vec<usize> = wanted.iter().map(|(t, _)| *t).collect();
    let stage = "refine the scalar ladder near the choice";
    per_tensor(checkpoint, &tensors, stage, progress, |k| {
        let (t, codecs) = &wanted[k];
        let tensor = &checkpoint.tensors[*t];
        async move {
            super::analyse::measure_more(backend, data, tensor, opts, codecs)
                .await
                .map_err(|e| e.in_tensor(&tensor.name))
        }
    })
    .await
}

/// Runs `work(k)` for the `k`-th of `tensors` (indices into `checkpoint`) as one progress stage,
/// the results in the order given: natively spread over the cores, in the browser one after
/// another (stopping when cancelled). The first error in that order is the one returned.
async fn per_tensor<T, F, Fut>(
    checkpoint: &Checkpoint,
    tensors: &[usize],
    stage: &str,
    progress: &mut dyn Progress,
    work: F,
) -> Result<Vec<T>>
where
    T: Send,
    // Shared by the threads natively (`SourceBound` is `Sync` there, nothing in the browser).
    F: Fn(usize) -> Fut + crate::source::SourceBound,
    Fut: std::future::Future<Output = Result<T>>,
{
    let parameters: u64 = tensors.iter().map(|&t| checkpoint.tensors[t].numel()).sum();
    progress.stage(stage, parameters);
    #[cfg(not(target_arch = "wasm32"))]
    let done: Vec<Result<T>> =
        crate::parallel::map(tensors.len(), |k| crate::backend::block_on(work(k)));
    #[cfg(target_arch = "wasm32")]
    let done: Vec<Result<T>> = {
        let mut out = Vec::with_capacity(tensors.len());
        for k in 0..tensors.len() {
            if progress.cancelled() {
                return Err(Error::Cancelled);
            }
            out.push(work(k).await);
        }
        out
    };
    let done = done.into_iter().collect::<Result<Vec<_>>>()?;
    progress.advance(parameters, stage);
    Ok(done)
}

/// The chosen options whose sizes are estimates: (tensor, the option), in tensor order.
fn estimated_choices(
    analyses: &[TensorAnalysis],
    choice: &[usize],
) -> Vec<(usize, super::MeasuredOption)> {
    analyses
        .iter()
        .zip(choice)
        .enumerate()
        .filter_map(|(t, (a, &i))| {
            let c = &a.candidates[i];
            c.is_estimate().then(|| (t, c.clone()))
        })
        .collect()
}

/// Each option coded as the `.lowbit` will hold it: (section bytes, side bytes), in the order
/// given. Natively the options are spread over the cores (in a fixed order of results).
async fn code_options<S: Source + ?Sized>(
    backend: &Backend,
    checkpoint: &Checkpoint,
    chosen: &[(usize, super::MeasuredOption)],
    opts: &CompressOptions,
    data: &S,
    progress: &mut dyn Progress,
) -> Result<Vec<(Vec<u8>, u64)>> {
    let tensors: Vec<usize> = chosen.iter().map(|(t, _)| *t).collect();
    per_tensor(
        checkpoint,
        &tensors,
        "code the chosen options",
        progress,
        |k| {
            let (t, option) = &chosen[k];
            let tensor = &checkpoint.tensors[*t];
            async move {
                let raw = crate::checkpoint::tensor_bytes(data, tensor)?;
                encode_section(backend, &option.codec, opts, tensor, raw)
                    .await
                    .map_err(|e| e.in_tensor(&tensor.name))
            }
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::block_on;
    use crate::progress::NoProgress;

    fn analysed(file: &[u8], opts: &CompressOptions) -> Analysed {
        let mut quiet = NoProgress;
        let analyse = super::super::analyse_on(
            &Backend::Cpu,
            "test",
            file,
            "demo.safetensors",
            opts,
            &mut quiet,
        );
        block_on(analyse).unwrap()
    }

    fn written(plan: &mut Plan, opts: &CompressOptions, file: &[u8]) -> Result<Vec<u8>> {
        let (mut out, mut quiet) = (Vec::new(), NoProgress);
        let write =
            super::super::write_container(&Backend::Cpu, plan, opts, file, &mut quiet, &mut out);
        block_on(write)?;
        Ok(out)
    }

    /// The analysis estimates the scalar grids' sizes; the settled plan has every chosen size
    /// exact and meets the budget, and the file written is that size.
    #[test]
    fn a_settled_plan_is_exact_and_within_the_budget() {
        let file = crate::demo::demo_checkpoint();
        let mut opts = CompressOptions::new(Target::BitsPerWeight(4.0));
        let mut a = analysed(&file, &opts);
        let estimates = a
            .analyses
            .iter()
            .flat_map(|t| &t.candidates)
            .filter(|c| c.is_estimate())
            .count();
        assert!(
            estimates > 10,
            "the scalar ladder is estimated ({estimates} estimates)"
        );
        for bpw in [1.5, 2.5, 4.0, 6.0] {
            opts.target = Target::BitsPerWeight(bpw);
            let mut plan = block_on(settle(
                &Backend::Cpu,
                &mut a,
                &opts,
                &file[..],
                &mut NoProgress,
            ))
            .unwrap();
            assert!(estimated_choices(&plan.analyses, &plan.choice).is_empty());
            let allowed = allowed_bytes(bpw, plan.checkpoint.parameters());
            assert!(
                plan.output_bytes <= allowed,
                "{bpw}: {} > {allowed}",
                plan.output_bytes
            );
            let out = written(&mut plan, &opts, &file).unwrap();
            assert_eq!(out.len() as u64, plan.output_bytes);
        }
    }

    /// Estimates that undershoot by a fifth: the choice made on them overshoots once coded, and
    /// settling allocates again until the file fits.
    #[test]
    fn estimates_that_undershoot_are_corrected_before_writing() {
        let file = crate::demo::demo_checkpoint();
        let opts = CompressOptions::new(Target::BitsPerWeight(3.0));
        let mut a = analysed(&file, &opts);
        for c in a.analyses.iter_mut().flat_map(|t| &mut t.candidates) {
            if c.is_estimate() {
                c.coded_bytes = c.coded_bytes * 4 / 5;
            }
        }
        let first = allocate(&a, &opts).unwrap();
        let mut plan = block_on(settle(
            &Backend::Cpu,
            &mut a,
            &opts,
            &file[..],
            &mut NoProgress,
        ))
        .unwrap();
        assert!(first.choice != plan.choice, "the allocation was corrected");
        assert!(plan.output_bytes <= allowed_bytes(3.0, plan.checkpoint.parameters()));
        let out = written(&mut plan, &opts, &file).unwrap();
        assert_eq!(out.len() as u64, plan.output_bytes);
    }

    /// The error of the chosen options over every float matrix, relative to their energy.
    fn relative_error(plan: &Plan) -> f64 {
        let chosen = plan.analyses.iter().zip(&plan.choice);
        let err: f64 = chosen.map(|(a, &i)| a.candidates[i].sq_error).sum();
        err / plan.analyses.iter().map(|a| a.norm_sq).sum::<f64>()
    }

    /// The coarse ladder refined near the choice gives the whole ladder's error within 0.5% at
    /// every budget, measuring fewer options.
    #[test]
    fn the_refined_ladder_is_as_good_as_the_whole_one() {
        let file = crate::demo::demo_checkpoint();
        let mut opts = CompressOptions::new(Target::BitsPerWeight(4.0));
        let mut coarse = analysed(&file, &opts);
        opts.exhaustive = true;
        let mut whole = analysed(&file, &opts);
        let count = |a: &Analysed| a.analyses.iter().map(|t| t.candidates.len()).sum::<usize>();
        let before = count(&coarse);
        for bpw in [1.5, 2.0, 3.0, 4.0, 6.0] {
            opts.target = Target::BitsPerWeight(bpw);
            opts.exhaustive = true;
            let reference = block_on(settle(
                &Backend::Cpu,
                &mut whole,
                &opts,
                &file[..],
                &mut NoProgress,
            ))
            .unwrap();
            opts.exhaustive = false;
            let refined = block_on(settle(
                &Backend::Cpu,
                &mut coarse,
                &opts,
                &file[..],
                &mut NoProgress,
            ))
            .unwrap();
            let (r, e) = (relative_error(&refined), relative_error(&reference));
            assert!(r <= e * 1.005, "{bpw} bpw: refined {r} against {e}");
            assert!(refined.output_bytes <= allowed_bytes(bpw, refined.checkpoint.parameters()));
        }
        assert!(count(&coarse) > before, "the refinement measured rungs");
        assert!(
            count(&coarse) < count(&whole),
            "{} options against {}",
            count(&coarse),
            count(&whole)
        );
    }

    #[test]
    fn the_writer_refuses_a_plan_that_was_not_settled() {
        let file = crate::demo::demo_checkpoint();
        let opts = CompressOptions::new(Target::BitsPerWeight(4.0));
        let mut plan = allocate(&analysed(&file, &opts), &opts).unwrap();
        let e = written(&mut plan, &opts, &file).unwrap_err().to_string();
        assert!(e.contains("estimated size"), "{e}");
    }
}
