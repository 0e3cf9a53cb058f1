//! Search: starting from the allocator's choice, an evolutionary search over the tensors' options
//! at the same total size, judged by what the compressed model does (EvoPress-style).
//!
//! The allocator minimises a *predicted* change of the model's output: each tensor's relative
//! error times its measured sensitivity, added over tensors. That prediction is first order: it
//! misses how errors in different matrices interact and where large errors stop growing linearly
//! (at 3 bits per weight it is the largest part of what is left). The search judges whole
//! compressed models instead: the original model is loaded, every weight matrix the runtime
//! multiplies is replaced by its chosen option's reconstruction (exactly what the `.lowbit`
//! restores), and the model is run over the calibration text; the fitness is the mean
//! `KL(p_original || p_compressed)` of the next-token distributions at every position that has a
//! next token, as `lowbit eval` scores them (decoders), or the mean
//! `1 - cosine` of the sentence embeddings (encoders).
//!
//! Each tensor's options form a ladder: those no cheaper option beats, by section bytes upward
//! (what the allocator chose is on it). A generation makes `offspring` children of the current
//! model, each by one to three *level switches* (one tensor a step up its ladder and others down
//! until the file fits again, or one down and others up while they fit), so the total never
//! exceeds the budget. Every child is judged on a quarter of the text, the best two on all of it,
//! and the best of those replaces the parent when its fitness is lower (EvoPress's multi-step
//! selection). The curve of the parent's fitness is kept for the report.
//!
//! The result depends only on the input, the options and the seed: the random choices come from
//! one seeded stream and the forward pass gives the same result whatever the number of threads.
//! Reconstructions are kept in a cache of bounded size (it changes the time taken, never the
//! result). Tensors the runtime does not multiply (norms, biases) keep the allocator's choice and
//! their original values during the search; so do tensors coded with an importance file.

use std::collections::{BTreeSet, HashMap, VecDeque};

use serde::Serialize;

use crate::backend::Backend;
use crate::checkpoint::{Checkpoint, InputTensor};
use crate::codec::{CodecParams, Shape2};
use crate::container;
use crate::dtype;
use crate::error::{Error, Result};
use crate::model::eval::cosine;
use crate::model::ops::Linear;
use crate::model::sensitivity::{OutputChange, Window};
use crate::model::weights::WeightSource;
use crate::model::Model;
use crate::progress::Progress;
use crate::rng::Rng;
use crate::source::Source;

use super::allocate::Plan;
use super::analyse::tensor_values;
use super::options::{CompressOptions, Target};

/// What the search reads and how long it runs.
#[derive(Clone, Debug, PartialEq)]
pub struct SearchOptions {
    /// Generations (0: no search).
    pub generations: usize,
    /// Children per generation.
    pub offspring: usize,
    /// The calibration text, and its name for the report.
    pub text: String,
    pub source: String,
    /// Decoders: at most this many tokens of the text, in windows of up to 256.
    pub tokens: usize,
    /// Encoders: at most this many sentences (lines of 20 to 200 characters).
    pub sentences: usize,
    pub seed: u64,
}

impl SearchOptions {
    pub fn new(generations: usize, text: String, source: String) -> SearchOptions {
        SearchOptions {
            generations,
            offspring: 8,
            text,
            source,
            tokens: 256,
            sentences: 32,
            seed: 0,
        }
    }
}

/// What the search did, for the report.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SearchSummary {
    /// The calibration text's name.
    pub source: String,
    /// What the fitness is: the mean KL divergence or the mean 1 - cosine.
    pub measure: OutputChange,
    /// Tokens (decoders) or sentences (encoders) the fitness is measured on.
    pub units: usize,
    pub generations: usize,
    pub offspring: usize,
    /// Tensors whose option the search could change.
    pub tensors: usize,
    /// The parent's fitness before the first generation (the allocator's choice) and after each.
    pub curve: Vec<f64>,
    /// Generations whose best child replaced the parent.
    pub accepted: usize,
    /// Tensors whose option differs from the allocator's at the end.
    pub changed: usize,
}

/// Bytes of reconstructions kept between generations.
const CACHE_BYTES: usize = 512 << 20;

/// The longest window a decoder's fitness runs over.
const CONTEXT: usize = 256;

/// One tensor's options the search moves between: candidate indices, section bytes upward.
struct Ladder {
    tensor: usize,
    candidates: Vec<usize>,
    bytes: Vec<u64>,
    /// Where the tensor's matrix is among the model's (`Model::matrices` order).
    matrix: usize,
}

/// Where a changed matrix acts in a decoder, for how much of the forward pass to run again.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Start {
    /// The token embedding: everything from the start.
    Embedding,
    Layer(usize),
    /// A separate output projection: only the logits.
    Output,
}

enum Judge {
    Decoder {
        windows: Vec<Window>,
        /// Per matrix (`Model::matrices` order), where it acts.
        starts: Vec<Start>,
    },
    Encoder {
        sentences: Vec<String>,
        reference: Vec<Vec<f32>>,
    },
}

/// The input checkpoint's tensors as the runtime's weights.
struct InputWeights<'a, S: ?Sized> {
    file: &'a S,
    checkpoint: &'a Checkpoint,
}

impl<S: Source + ?Sized> InputWeights<'_, S> {
    fn tensor(&self, name: &str) -> Option<&InputTensor> {
        self.checkpoint.tensors.iter().find(|t| t.name == name)
    }
}

impl<S: Source + ?Sized> WeightSource for InputWeights<'_, S> {
    fn shape(&self, name: &str) -> Option<Vec<usize>> {
        self.tensor(name).map(|t| t.shape.clone())
    }

    fn load(&self, name: &str) -> Result<Vec<f32>> {
        let t = self
            .tensor(name)
            .ok_or_else(|| Error::invalid(format!("no tensor {name}")))?;
        tensor_values(self.file, t)
    }
}

/// The model's weight matrices in a fixed order.
fn matrices(model: &mut Model) -> Vec<&mut Linear> {
    match model {
        Model::Decoder(m) => m.matrices_mut().into_iter().map(|(_, l)| l).collect(),
        Model::Encoder(m) => m.matrices_mut(),
    }
}

/// The options of a tensor no cheaper option beats (fewer section bytes and no larger
/// distortion), cheapest first, with `chosen` among them wherever it lies.
fn ladder(points: &[(u64, f64)], chosen: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..points.len()).collect();
    order.sort_by(|&a, &b| {
        points[a]
            .0
            .cmp(&points[b].0)
            .then(points[a].1.total_cmp(&points[b].1))
            .then(a.cmp(&b))
    });
    let mut out: Vec<usize> = Vec::new();
    for i in order {
        if out.last().is_none_or(|&j| points[i].1 < points[j].1) {
            out.push(i);
        }
    }
    if !out.contains(&chosen) {
        let at = out.partition_point(|&j| points[j].0 <= points[chosen].0);
        out.insert(at, chosen);
    }
    out
}

/// Reconstructions of `(tensor, candidate)`, oldest dropped first beyond [`CACHE_BYTES`].
#[derive(Default)]
struct Cache {
    values: HashMap<(usize, usize), Vec<f32>>,
    order: VecDeque<(usize, usize)>,
    bytes: usize,
}

impl Cache {
    fn take(&mut self, key: (usize, usize)) -> Option<Vec<f32>> {
        let v = self.values.remove(&key)?;
        self.bytes -= 4 * v.len();
        self.order.retain(|k| *k != key);
        Some(v)
    }

    fn put(&mut self, key: (usize, usize), v: Vec<f32>) {
        if 4 * v.len() > CACHE_BYTES {
            return;
        }
        self.bytes += 4 * v.len();
        self.values.insert(key, v);
        self.order.push_back(key);
        while self.bytes > CACHE_BYTES {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if let Some(v) = self.values.remove(&old) {
                self.bytes -= 4 * v.len();
            }
        }
    }
}

/// The search's state that outlives a generation.
struct Search<'a, S: ?Sized> {
    backend: &'a Backend,
    file: &'a S,
    plan: &'a Plan,
    /// The input statistics the per-column scalar grid is encoded with.
    opts: &'a CompressOptions,
    ladders: Vec<Ladder>,
    cache: Cache,
    /// Bytes the ladders may take in all.
    budget: u64,
    offspring: usize,
}

impl<S: Source + ?Sized> Search<'_, S> {
    /// What the `.lowbit` restores for candidate `c` of tensor `t`, as the runtime reads it.
    async fn reconstruction(&mut self, t: usize, c: usize) -> Result<Vec<f32>> {
        if let Some(v) = self.cache.take((t, c)) {
            return Ok(v);
        }
        let tensor = &self.plan.checkpoint.tensors[t];
        let values = tensor_values(self.file, tensor)?;
        let codec = &self.plan.analyses[t].candidates[c].codec;
        let restored = match codec {
            CodecParams::Lossless => values,
            lossy => {
                let shape = Shape2::of(&tensor.shape).expect("a searched tensor is a matrix");
                let columns = self.opts.input_energies(&tensor.name, &tensor.shape);
                let r = lossy
                    .encode_weighted_on(self.backend, &values, shape, columns)
                    .await?;
                // The decoded tensor is stored in the checkpoint's element type.
                dtype::to_f32(
                    tensor.dtype,
                    &dtype::from_f32(tensor.dtype, &r.reconstruction),
                )
            }
        };
        Ok(restored)
    }

    /// Puts candidate `levels[k]` of each ladder `k` in `changed` into `model`; returns what was
    /// there, to put back with [`Search::restore`].
    async fn apply(
        &mut self,
        model: &mut Model,
        levels: &[usize],
        changed: &BTreeSet<usize>,
    ) -> Result<Vec<(usize, Vec<f32>)>> {
        let mut old = Vec::new();
        for &k in changed {
            let (t, c) = self.option(k, levels);
            let v = self.reconstruction(t, c).await?;
            let m = self.ladders[k].matrix;
            let previous = std::mem::replace(&mut matrices(model)[m].weight, v);
            old.push((k, previous));
        }
        Ok(old)
    }

    /// Undoes [`Search::apply`], keeping what was tried in the cache.
    fn restore(&mut self, model: &mut Model, levels: &[usize], old: Vec<(usize, Vec<f32>)>) {
        for (k, previous) in old {
            let m = self.ladders[k].matrix;
            let tried = std::mem::replace(&mut matrices(model)[m].weight, previous);
            self.cache.put(self.option(k, levels), tried);
        }
    }

    /// Keeps the values [`Search::apply`] replaced, those of the options `levels` names.
    fn restore_into_cache(&mut self, levels: &[usize], old: Vec<(usize, Vec<f32>)>) {
        for (k, previous) in old {
            self.cache.put(self.option(k, levels), previous);
        }
    }

    /// The (tensor, candidate) ladder `k` is at in `levels`.
    fn option(&self, k: usize, levels: &[usize]) -> (usize, usize) {
        (
            self.ladders[k].tensor,
            self.ladders[k].candidates[levels[k]],
        )
    }

    fn total(&self, levels: &[usize]) -> u64 {
        self.ladders
            .iter()
            .zip(levels)
            .map(|(l, &i)| l.bytes[i])
            .sum()
    }

    /// A child of `parent`: one to three level switches, the ladders' bytes kept within
    /// `budget`. `None` when no switch could be made to fit.
    fn mutate(
        &self,
        parent: &[usize],
        budget: u64,
        rng: &mut Rng,
    ) -> Option<(Vec<usize>, BTreeSet<usize>)> {
        let n = self.ladders.len() as u64;
        let top = |k: usize| self.ladders[k].candidates.len() - 1;
        let mut levels = parent.to_vec();
        let mut total = self.total(&levels);
        let mut changed = BTreeSet::new();
        let switches = 1 + rng.below(3);
        for _ in 0..switches {
            let up_first = rng.below(2) == 0;
            // The tensor that moves first: one with room in that direction.
            let first = (0..64)
                .map(|_| rng.below(n) as usize)
                .find(|&k| match up_first {
                    true => levels[k] < top(k),
                    false => levels[k] > 0,
                })?;
            let step = |levels: &mut Vec<usize>, total: &mut u64, k: usize, up: bool| {
                let before = self.ladders[k].bytes[levels[k]];
                levels[k] = if up { levels[k] + 1 } else { levels[k] - 1 };
                *total = *total - before + self.ladders[k].bytes[levels[k]];
            };
            step(&mut levels, &mut total, first, up_first);
            changed.insert(first);
            if up_first {
                // Others down until it fits.
                let mut tries = 0;
                while total > budget {
                    tries += 1;
                    if tries > 10_000 {
                        return None;
                    }
                    let k = rng.below(n) as usize;
                    if k != first && levels[k] > 0 {
                        step(&mut levels, &mut total, k, false);
                        changed.insert(k);
                    }
                }
            } else {
                // Others up while they fit (a few tries: what is left stays for later switches).
                for _ in 0..8 {
                    let k = rng.below(n) as usize;
                    if k == first || levels[k] == top(k) {
                        continue;
                    }
                    let grow =
                        self.ladders[k].bytes[levels[k] + 1] - self.ladders[k].bytes[levels[k]];
                    if total + grow <= budget {
                        step(&mut levels, &mut total, k, true);
                        changed.insert(k);
                    }
                }
            }
        }
        // A switch may have been undone by a later one.
        changed.retain(|&k| levels[k] != parent[k]);
        (!changed.is_empty()).then_some((levels, changed))
    }
}

impl Judge {
    fn new(model: &mut Model, options: &SearchOptions) -> Result<Judge> {
        // Where each matrix acts: the token embedding comes first, a separate lm_head last.
        let starts: Vec<Start> = match model {
            Model::Decoder(m) => m
                .matrices_mut()
                .iter()
                .enumerate()
                .map(|(i, (at, _))| match (at, i) {
                    (Some(l), _) => Start::Layer(*l),
                    (None, 0) => Start::Embedding,
                    (None, _) => Start::Output,
                })
                .collect(),
            Model::Encoder(_) => Vec::new(),
        };
        match model {
            Model::Decoder(m) => {
                let mut ids = m.tokenizer.encode(&options.text)?;
                ids.truncate(options.tokens);
                if ids.len() < 2 {
                    return Err(Error::invalid(
                        "the calibration text gave fewer than 2 tokens to run the model on",
                    ));
                }
                // The windows' layer inputs and states are the current parent's
                // ([`Judge::rebase`]); their logits stay the original model's.
                let windows = Window::all_of(m, &ids, CONTEXT.min(m.config.max_positions))?;
                Ok(Judge::Decoder { windows, starts })
            }
            Model::Encoder(m) => {
                let sentences = m.sentences_that_fit(&options.text, options.sentences)?;
                let reference = m.embed_sentences(&sentences)?;
                Ok(Judge::Encoder {
                    sentences,
                    reference,
                })
            }
        }
    }
}

impl Judge {
    /// The fitness of `model` on all of the text, or on its first quarter (`quick`). `start`:
    /// where `model` first differs from the parent whose layer inputs the windows hold.
    fn fitness(&self, model: &Model, start: Start, quick: bool) -> Result<f64> {
        let part = |n: usize| if quick { n.div_ceil(4) } else { n };
        match (self, model) {
            (Judge::Decoder { windows, .. }, Model::Decoder(m)) => {
                let (d, vocab) = (m.config.hidden_size, m.config.vocab_size);
                let (mut sum, mut count) = (0.0f64, 0usize);
                for w in windows.iter().filter(|w| w.ids.len() >= 2) {
                    let n = part(w.ids.len()).max(2);
                    let states = match start {
                        Start::Embedding => m.forward(&w.ids[..n], &mut m.new_cache())?,
                        Start::Layer(l) => m.states_from(l, w.inputs[l][..n * d].to_vec(), n),
                        Start::Output => w.states[..n * d].to_vec(),
                    };
                    let logits = m.logits(&states, n);
                    // As `lowbit eval` scores: every position that has a next token.
                    sum += w.kl(&logits, n - 1, vocab).iter().sum::<f64>();
                    count += n - 1;
                }
                Ok(sum / count.max(1) as f64)
            }
            (
                Judge::Encoder {
                    sentences,
                    reference,
                },
                Model::Encoder(m),
            ) => {
                let k = part(sentences.len());
                let after = m.embed_sentences(&sentences[..k])?;
                let change: f64 = reference
                    .iter()
                    .zip(&after)
                    .map(|(a, b)| 1.0 - cosine(a, b))
                    .sum();
                Ok(change / k as f64)
            }
            _ => Err(Error::invalid(
                "internal error: the search's judge is for another family of model",
            )),
        }
    }

    /// The parent changed: the windows' layer inputs are taken again.
    fn rebase(&mut self, model: &Model) -> Result<()> {
        if let (Judge::Decoder { windows, .. }, Model::Decoder(m)) = (self, model) {
            for w in windows {
                (w.inputs, w.states) = m.layer_inputs(&w.ids)?;
            }
        }
        Ok(())
    }

    /// Where a child that changes the matrices of `changed` ladders differs first.
    fn start_of(&self, ladders: &[Ladder], changed: &BTreeSet<usize>) -> Start {
        match self {
            Judge::Decoder { starts, .. } => changed
                .iter()
                .map(|&k| starts[ladders[k].matrix])
                .min()
                .unwrap_or(Start::Output),
            Judge::Encoder { .. } => Start::Embedding,
        }
    }

    fn measure(&self) -> OutputChange {
        match self {
            Judge::Decoder { .. } => OutputChange::KlDivergence,
            Judge::Encoder { .. } => OutputChange::OneMinusCosine,
        }
    }

    fn units(&self) -> usize {
        match self {
            Judge::Decoder { windows, .. } => windows.iter().map(|w| w.ids.len()).sum(),
            Judge::Encoder { sentences, .. } => sentences.len(),
        }
    }
}

/// Whether candidate `c` can be made again from the tensor alone (an fwsvd option with an
/// importance file needs that file's rows, which the search does not take).
fn remakeable(c: &CodecParams) -> bool {
    !matches!(c, CodecParams::Fwsvd(p) if p.importance.is_file())
}

/// The ladders of the matrices the search moves, and the other matrices the model multiplies
/// (tensor, chosen candidate, matrix), which keep their choice.
fn ladders_of(model: &mut Model, plan: &Plan) -> (Vec<Ladder>, Vec<(usize, usize, usize)>) {
    let names: Vec<(String, usize)> = matrices(model)
        .iter()
        .map(|l| (l.name.clone(), l.weight.len()))
        .collect();
    let (mut ladders, mut fixed) = (Vec::new(), Vec::new());
    for (matrix, (name, len)) in names.iter().enumerate() {
        let Some(t) = plan.checkpoint.tensors.iter().position(|x| &x.name == name) else {
            continue;
        };
        let (tensor, analysis) = (&plan.checkpoint.tensors[t], &plan.analyses[t]);
        let chosen = plan.choice[t];
        if tensor.numel() != *len as u64
            || Shape2::of(&tensor.shape).is_none()
            || analysis.vectors.is_some()
            || !remakeable(&analysis.candidates[chosen].codec)
        {
            continue;
        }
        let points: Vec<(u64, f64)> = analysis
            .candidates
            .iter()
            .map(|c| match remakeable(&c.codec) {
                true => (
                    container::section_len(tensor.numel(), c.coded_bytes),
                    c.distortion.value(),
                ),
                false => (u64::MAX, f64::INFINITY),
            })
            .collect();
        let candidates: Vec<usize> = ladder(&points, chosen)
            .into_iter()
            .filter(|&c| points[c].0 != u64::MAX)
            .collect();
        if candidates.len() < 2 {
            fixed.push((t, chosen, matrix));
            continue;
        }
        ladders.push(Ladder {
            tensor: t,
            bytes: candidates.iter().map(|&c| points[c].0).collect(),
            candidates,
            matrix,
        });
    }
    (ladders, fixed)
}

impl<S: Source + ?Sized> Search<'_, S> {
    /// Sets every matrix of `model` to its chosen option; returns the ladders' starting levels.
    async fn start(
        &mut self,
        model: &mut Model,
        fixed: &[(usize, usize, usize)],
    ) -> Result<Vec<usize>> {
        for &(t, c, matrix) in fixed {
            let v = self.reconstruction(t, c).await?;
            matrices(model)[matrix].weight = v;
        }
        let start: Vec<usize> = self
            .ladders
            .iter()
            .map(|l| {
                let chosen = self.plan.choice[l.tensor];
                l.candidates
                    .iter()
                    .position(|&c| c == chosen)
                    .expect("on its ladder")
            })
            .collect();
        let everything: BTreeSet<usize> = (0..self.ladders.len()).collect();
        // What was there before is the original values, not needed again.
        self.apply(model, &start, &everything).await?;
        Ok(start)
    }

    /// One generation: children of `parent` judged, the best kept when it beats `fit`. Returns
    /// the new parent and its fitness, if one was kept.
    async fn generation(
        &mut self,
        model: &mut Model,
        judge: &mut Judge,
        parent: &[usize],
        fit: f64,
        rng: &mut Rng,
    ) -> Result<Option<(Vec<usize>, f64)>> {
        let children: Vec<(Vec<usize>, BTreeSet<usize>)> = (0..self.offspring)
            .filter_map(|_| self.mutate(parent, self.budget, rng))
            .collect();
        // Every child on a quarter of the text, the best two on all of it.
        let mut quick = Vec::with_capacity(children.len());
        for (i, (levels, changed)) in children.iter().enumerate() {
            let old = self.apply(model, levels, changed).await?;
            let f = judge.fitness(model, judge.start_of(&self.ladders, changed), true);
            self.restore(model, levels, old);
            quick.push((f?, i));
        }
        quick.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        let mut best: Option<(f64, usize)> = None;
        for &(_, i) in quick.iter().take(2) {
            let (levels, changed) = &children[i];
            let old = self.apply(model, levels, changed).await?;
            let f = judge.fitness(model, judge.start_of(&self.ladders, changed), false);
            self.restore(model, levels, old);
            let f = f?;
            if best.is_none_or(|(b, _)| f < b) {
                best = Some((f, i));
            }
        }
        let Some((f, i)) = best.filter(|&(f, _)| f < fit) else {
            return Ok(None);
        };
        let (levels, changed) = &children[i];
        let old = self.apply(model, levels, changed).await?;
        // The parent's reconstructions stay useful: later children may go back to them.
        self.restore_into_cache(parent, old);
        judge.rebase(model)?;
        Ok(Some((levels.clone(), f)))
    }
}

/// The target's size limit for the whole file (without its model files).
fn allowed_bytes(plan: &Plan, opts: &CompressOptions) -> u64 {
    match opts.target {
        Target::BitsPerWeight(bpw) => {
            super::allocate::allowed_bytes(bpw, plan.checkpoint.parameters())
        }
        Target::MaxError(_) => plan.output_bytes,
    }
}

/// Runs the search of `opts.search` on `plan` (before its model files are attached): `plan`'s
/// choice, manifest and sizes become the best model found; returns what the search did (`None`
/// when no search was asked for). The file still meets the target.
pub async fn improve<S: Source + ?Sized>(
    backend: &Backend,
    plan: &mut Plan,
    opts: &CompressOptions,
    file: &S,
    progress: &mut dyn Progress,
) -> Result<Option<SearchSummary>> {
    let Some(options) = opts.search.as_ref().filter(|s| s.generations > 0) else {
        return Ok(None);
    };
    if !plan.manifest.groups.is_empty() {
        return Err(Error::option(
            "--search does not combine with shared-lowrank's sibling sets",
        ));
    }
    if options.offspring == 0 {
        return Err(Error::option(
            "the search needs at least one child per generation",
        ));
    }
    if opts.model_files.get("config.json").is_none() {
        return Err(Error::option(
            "the search runs the model: it needs the model's config.json and tokenizer",
        ));
    }
    let weights = InputWeights {
        file,
        checkpoint: &plan.checkpoint,
    };
    let mut model = Model::load(&opts.model_files, &weights)?;
    let mut judge = Judge::new(&mut model, options)?;
    let (ladders, fixed) = ladders_of(&mut model, plan);
    let mut search = Search {
        backend,
        file,
        plan,
        opts,
        ladders,
        cache: Cache::default(),
        budget: 0,
        offspring: options.offspring,
    };
    progress.stage("search", options.generations as u64);
    let start = search.start(&mut model, &fixed).await?;
    judge.rebase(&model)?;

    // The ladders' budget: what the target leaves after the header and the other tensors, less a
    // margin for the header's growth (checked exactly at the end).
    let allowed = allowed_bytes(search.plan, opts);
    let in_ladders = search.total(&start);
    let others = search.plan.output_bytes - search.plan.header_len - in_ladders;
    search.budget = allowed
        .saturating_sub(search.plan.header_len + others + 4096)
        .max(in_ladders);

    let mut rng = Rng::for_stream(options.seed, "search");
    let mut fit = judge.fitness(&model, Start::Embedding, false)?;
    let mut curve = vec![fit];
    let mut history = vec![start.clone()];
    for g in 0..options.generations {
        if progress.cancelled() {
            return Err(Error::Cancelled);
        }
        let (done, count) = (g as u64 + 1, options.generations as u64);
        progress.working_on(&format!("generation {done} of {count}"), done, count);
        let parent = history.last().expect("the start").clone();
        let kept = search
            .generation(&mut model, &mut judge, &parent, fit, &mut rng)
            .await?;
        if let Some((levels, f)) = kept {
            history.push(levels);
            fit = f;
        }
        curve.push(fit);
        progress.advance(1, "search");
    }
    let ladders = std::mem::take(&mut search.ladders);
    let changed = finish(
        plan,
        &ladders,
        &history,
        allowed,
        (backend, opts, file),
        progress,
    )
    .await?;
    Ok(Some(SearchSummary {
        source: options.source.clone(),
        measure: judge.measure(),
        units: judge.units(),
        generations: options.generations,
        offspring: options.offspring,
        tensors: ladders.len(),
        curve,
        accepted: history.len() - 1,
        changed,
    }))
}

/// Makes `plan` the best model found that fits: the last parent of `history`, or an earlier one
/// when the header grew past the margin or an estimated size past its estimate (down to the
/// allocator's own choice, which fits). Each choice tried has its chosen options coded first
/// (`coder`: where, with what options, from which file), so the fit is judged on exact sizes.
/// Returns how many matrices changed option.
async fn finish<S: Source + ?Sized>(
    plan: &mut Plan,
    ladders: &[Ladder],
    history: &[Vec<usize>],
    allowed: u64,
    coder: (&Backend, &CompressOptions, &S),
    progress: &mut dyn Progress,
) -> Result<usize> {
    let (backend, opts, file) = coder;
    let choice_of = |levels: &[usize]| {
        let mut choice = plan.choice.clone();
        for (l, &i) in ladders.iter().zip(levels) {
            choice[l.tensor] = l.candidates[i];
        }
        choice
    };
    let start = &history[0];
    for levels in history.iter().rev() {
        let mut tried = plan.clone();
        tried.rechoose(choice_of(levels))?;
        super::settle::settle_choice(backend, &mut tried, opts, file, progress).await?;
        if tried.output_bytes <= allowed || levels == start {
            *plan = tried;
            break;
        }
    }
    Ok(ladders
        .iter()
        .zip(start)
        .filter(|(l, &i)| plan.choice[l.tensor] != l.candidates[i])
        .count())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ladder_keeps_the_options_no_cheaper_one_beats_and_the_chosen_one() {
        // (bytes, distortion): 1 is beaten by the cheaper 0, 3 by 2; 4 costs as much as 2.
        let points = [
            (10, 5.0),
            (20, 6.0),
            (30, 2.0),
            (40, 3.0),
            (30, 4.0),
            (50, 1.0),
        ];
        assert_eq!(ladder(&points, 2), vec![0, 2, 5]);
        // A chosen option off the frontier stays, in its place by bytes.
        assert_eq!(ladder(&points, 3), vec![0, 2, 3, 5]);
        assert_eq!(ladder(&points, 1), vec![0, 1, 2, 5]);
        assert_eq!(ladder(&points, 4), vec![0, 2, 4, 5]);
    }

    #[test]
    fn the_cache_drops_the_oldest_beyond_its_size() {
        let mut cache = Cache::default();
        let big = CACHE_BYTES / 4 / 3;
        for k in 0..4 {
            cache.put((k, 0), vec![k as f32; big]);
        }
        assert!(cache.bytes <= CACHE_BYTES);
        assert!(cache.take((0, 0)).is_none());
        assert_eq!(cache.take((3, 0)).unwrap()[0], 3.0);
        assert_eq!(cache.bytes, 2 * 4 * big);
    }
}
