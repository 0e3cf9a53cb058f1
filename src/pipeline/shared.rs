//! The planning of `--method shared-lowrank`: which sibling matrices of a checkpoint are measured
//! as one allocator item ([`AllocatorItems`]), their options (one shared basis plus per-member
//! coefficients), and the coding of the groups when the file is written. The grouping and its
//! error estimator are `codec::shared_basis`; the member and basis sections `codec::shared_lowrank`.

use crate::codec::shared_basis::{exact_error, group, Estimator};
use crate::error::{Error, Result};

use super::analyse::{MeasuredOption, TensorAnalysis};
use super::options::{CompressOptions, Target};
use crate::alloc::OptionPoint;
use crate::checkpoint::Checkpoint;
use crate::codec::shared_lowrank::{self, BasisParams};
use crate::codec::{lowrank, CodecParams, Method, Shape2};
use crate::container::{self, GroupRecord, Manifest, TensorRecord};
use crate::rng::Rng;

/// The error thresholds under which groups are formed (each a separate option of the set).
pub const THRESHOLDS: [f64; 3] = [0.1, 0.2, 0.3];
/// Factor bits of the shared options (those of `lowrank`'s pure options).
pub const FACTOR_BITS: u8 = 8;
const OVERSAMPLE: u32 = 10;
const POWER_ITERS: u8 = 2;

/// One group of a set option: members sharing a basis.
#[derive(Clone, Debug)]
pub struct GroupOption {
    /// Positions in the set's `members`, ascending (the coding order: tensor order).
    pub members: Vec<usize>,
    pub cols: usize,
    pub basis: BasisParams,
    pub coded_bytes: u64,
    pub side_bytes: u64,
    pub crc32: u32,
    /// The threshold the group was formed under, the estimator's bound and the exact optimal
    /// rank-r error of the concatenation (<= threshold, checked).
    pub threshold: f64,
    pub estimate: f64,
    pub exact_error: f64,
}

impl GroupOption {
    fn section_len(&self) -> u64 {
        container::section_len(self.cols as u64 * self.basis.rank as u64, self.coded_bytes)
    }
}

/// One way to code a whole sibling set.
#[derive(Clone, Debug)]
pub struct SetOption {
    /// The rank of the option's groups and pure low-rank members; 0 for the options where every
    /// member takes one of its own measured options.
    pub rank: u32,
    pub groups: Vec<GroupOption>,
    /// Per member of the set: its section (`lowrank` alone, or `shared-lowrank` in a group; the
    /// group index in its parameters is assigned when the manifest is written).
    pub member_candidates: Vec<MeasuredOption>,
    /// Every section the option writes, padding included.
    pub bytes: u64,
    /// Sum of the members' distortions ([`crate::distortion::Distortion::value`]).
    pub distortion: f64,
    /// The largest member relative (Frobenius) error.
    pub max_rel_error: f64,
}

#[derive(Clone, Debug)]
pub struct SiblingSet {
    /// Tensor indices, ascending.
    pub members: Vec<usize>,
    pub options: Vec<SetOption>,
}

#[derive(Clone, Copy, Debug)]
enum Item {
    Tensor(usize),
    Set(usize),
}

/// The allocator's items under `--method shared-lowrank` (one per tensor otherwise).
#[derive(Clone, Debug)]
pub struct AllocatorItems {
    items: Vec<Item>,
    pub sets: Vec<SiblingSet>,
    tensors: usize,
}

/// The parent module of a tensor name (its last two components removed).
fn parent(name: &str) -> &str {
    name.rsplitn(3, '.').nth(2).unwrap_or("")
}

/// `values` (`rows x cols`, row-major) transposed: the estimator's block for an input-side basis.
fn transposed(values: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0.0f32; values.len()];
    for i in 0..rows {
        for j in 0..cols {
            t[j * rows + i] = values[i * cols + j];
        }
    }
    t
}

impl AllocatorItems {
    /// One item per tensor: what every method but shared-lowrank allocates.
    pub fn per_tensor(tensors: usize) -> Self {
        AllocatorItems {
            items: (0..tensors).map(Item::Tensor).collect(),
            sets: Vec::new(),
            tensors,
        }
    }

    /// Finds the sibling sets and measures their options (`values_of(t)`: tensor `t` as f32).
    /// Per tensor unless `opts.method` is shared-lowrank.
    pub fn build(
        ckpt: &Checkpoint,
        analyses: &[TensorAnalysis],
        opts: &CompressOptions,
        values_of: &dyn Fn(usize) -> Result<Vec<f32>>,
    ) -> Result<AllocatorItems> {
        let n = ckpt.tensors.len();
        if opts.method != Some(Method::SharedLowrank) {
            return Ok(AllocatorItems::per_tensor(n));
        }
        let mut by_key: std::collections::BTreeMap<(&str, usize), Vec<usize>> = Default::default();
        for (t, (tensor, a)) in ckpt.tensors.iter().zip(analyses).enumerate() {
            let eligible = a.restriction.is_empty()
                && a.candidates
                    .iter()
                    .any(|c| matches!(c.codec, CodecParams::Lowrank(_)));
            if let (true, Some(shape)) = (eligible, Shape2::of(&tensor.shape)) {
                by_key
                    .entry((parent(&tensor.name), shape.cols))
                    .or_default()
                    .push(t);
            }
        }
        let mut set_members: Vec<Vec<usize>> =
            by_key.into_values().filter(|m| m.len() >= 2).collect();
        set_members.sort();
        let mut set_of = vec![None; n];
        let mut sets = Vec::with_capacity(set_members.len());
        for members in set_members {
            for &t in &members {
                set_of[t] = Some(sets.len());
            }
            let options = set_options(ckpt, analyses, opts, &members, values_of)
                .map_err(|e| e.in_tensor(&ckpt.tensors[members[0]].name))?;
            sets.push(SiblingSet { members, options });
        }
        // Items in tensor order; a set sits where its first member is.
        let items = (0..n)
            .filter_map(|t| match set_of[t] {
                None => Some(Item::Tensor(t)),
                Some(s) if sets[s].members[0] == t => Some(Item::Set(s)),
                Some(_) => None,
            })
            .collect();
        Ok(AllocatorItems {
            items,
            sets,
            tensors: n,
        })
    }

    /// The allocator's options per item, from the per-tensor ones.
    pub fn points(&self, per_tensor: &[Vec<OptionPoint>]) -> Vec<Vec<OptionPoint>> {
        self.items
            .iter()
            .map(|item| match *item {
                Item::Tensor(t) => per_tensor[t].clone(),
                Item::Set(s) => self.sets[s]
                    .options
                    .iter()
                    .map(|o| OptionPoint {
                        bytes: o.bytes,
                        distortion: o.distortion,
                    })
                    .collect(),
            })
            .collect()
    }

    /// The relative error `--max-error` bounds, of option `i` of item `item` (for a set: its
    /// worst member).
    pub fn item_error(&self, analyses: &[TensorAnalysis], item: usize, i: usize) -> f64 {
        match self.items[item] {
            Item::Tensor(t) => analyses[t].candidates[i].distortion.relative_mse().sqrt(),
            Item::Set(s) => self.sets[s].options[i].max_rel_error,
        }
    }

    /// The item's lowest-distortion option (when none meets `--max-error`).
    pub fn most_accurate(&self, analyses: &[TensorAnalysis], item: usize) -> usize {
        let key = |i: usize| match self.items[item] {
            Item::Tensor(t) => analyses[t].candidates[i].sq_error,
            Item::Set(s) => self.sets[s].options[i].distortion,
        };
        let count = match self.items[item] {
            Item::Tensor(t) => analyses[t].candidates.len(),
            Item::Set(s) => self.sets[s].options.len(),
        };
        (0..count)
            .min_by(|&x, &y| key(x).total_cmp(&key(y)))
            .expect("every item has an option")
    }

    /// Per-tensor candidate indices for an item choice; members of sets get a placeholder (0)
    /// that [`Self::manifest`] replaces.
    pub fn tensor_choice(&self, item_choice: &[usize]) -> Vec<usize> {
        let mut choice = vec![0; self.tensors];
        for (item, &i) in self.items.iter().zip(item_choice) {
            if let Item::Tensor(t) = *item {
                choice[t] = i;
            }
        }
        choice
    }

    /// Rewrites the set members' records of `manifest` (built from [`Self::tensor_choice`]) for
    /// the chosen set options and appends their groups.
    pub fn manifest(&self, mut manifest: Manifest, item_choice: &[usize]) -> Manifest {
        for (t, c) in self.chosen_candidates(item_choice) {
            let record: &mut TensorRecord = &mut manifest.tensors[t];
            record.codec = c.codec.clone();
            record.coded_bytes = c.coded_bytes;
            record.side_bytes = c.side_bytes;
            record.crc32 = c.manifest_crc();
        }
        manifest.groups = self
            .chosen_groups(item_choice)
            .into_iter()
            .enumerate()
            .map(|(g, o)| GroupRecord {
                name: format!("{}{g}", container::GROUP_SECTION_PREFIX),
                cols: o.cols,
                basis: o.basis.clone(),
                coded_bytes: o.coded_bytes,
                side_bytes: o.side_bytes,
                crc32: o.crc32,
            })
            .collect();
        if !manifest.groups.is_empty() {
            manifest.source_header = None;
        }
        manifest
    }

    /// Adds the chosen set options' candidates to the members' analyses (so the report shows
    /// them, with the reason) and returns the per-tensor choice.
    pub fn finish(&self, analyses: &mut [TensorAnalysis], item_choice: &[usize]) -> Vec<usize> {
        let mut choice = self.tensor_choice(item_choice);
        let reasons = self.reasons(item_choice);
        for ((t, c), reason) in self.chosen_candidates(item_choice).into_iter().zip(reasons) {
            analyses[t].candidates.push(c);
            choice[t] = analyses[t].candidates.len() - 1;
            analyses[t].restriction = reason;
        }
        choice
    }

    /// The chosen group options, in group-index order.
    fn chosen_groups<'a>(&'a self, item_choice: &'a [usize]) -> Vec<&'a GroupOption> {
        self.chosen_sets(item_choice)
            .flat_map(|(_, o)| o.groups.iter())
            .collect()
    }

    fn chosen_sets<'a>(
        &'a self,
        item_choice: &'a [usize],
    ) -> impl Iterator<Item = (&'a SiblingSet, &'a SetOption)> + 'a {
        self.items
            .iter()
            .zip(item_choice)
            .filter_map(move |(item, &i)| match *item {
                Item::Set(s) => Some((&self.sets[s], &self.sets[s].options[i])),
                Item::Tensor(_) => None,
            })
    }

    /// (tensor, candidate) of every set member, group indices assigned in group order.
    fn chosen_candidates(&self, item_choice: &[usize]) -> Vec<(usize, MeasuredOption)> {
        let mut out = Vec::new();
        let mut next_group = 0u32;
        for (set, option) in self.chosen_sets(item_choice) {
            let mut group_of = vec![None; set.members.len()];
            for g in &option.groups {
                for &m in &g.members {
                    group_of[m] = Some(next_group);
                }
                next_group += 1;
            }
            for (m, &t) in set.members.iter().enumerate() {
                let mut c = option.member_candidates[m].clone();
                if let (CodecParams::SharedLowrank(p), Some(g)) = (&mut c.codec, group_of[m]) {
                    p.group = g;
                }
                out.push((t, c));
            }
        }
        out
    }

    fn reasons(&self, item_choice: &[usize]) -> Vec<String> {
        let mut out = Vec::new();
        let mut next_group = 0u32;
        for (set, option) in self.chosen_sets(item_choice) {
            let mut reason = vec![String::new(); set.members.len()];
            for g in &option.groups {
                for &m in &g.members {
                    reason[m] = format!(
                        "shared-lowrank: group {next_group} of {} tensors shares a rank-{} input-side \
                         basis ({} bytes, counted once in the file) formed under threshold {} \
                         (estimate {:.4}, exact error {:.4}); the allocator chose this among the \
                         {} measured options of its sibling set",
                        g.members.len(),
                        g.basis.rank,
                        g.section_len(),
                        g.threshold,
                        g.estimate,
                        g.exact_error,
                        set.options.len()
                    );
                }
                next_group += 1;
            }
            for r in reason.iter_mut().filter(|r| r.is_empty()) {
                *r = format!(
                    "shared-lowrank: coded alone (its own low-rank option): sharing a basis with \
                     its siblings did not pay at this budget; the allocator chose this among the \
                     {} measured options of its sibling set",
                    set.options.len()
                );
            }
            out.extend(reason);
        }
        out
    }
}

/// The options of one sibling set (see the section comment).
fn set_options(
    ckpt: &Checkpoint,
    analyses: &[TensorAnalysis],
    opts: &CompressOptions,
    members: &[usize],
    values_of: &dyn Fn(usize) -> Result<Vec<f32>>,
) -> Result<Vec<SetOption>> {
    let tensors: Vec<&crate::checkpoint::InputTensor> =
        members.iter().map(|&t| &ckpt.tensors[t]).collect();
    let shapes: Vec<Shape2> = tensors
        .iter()
        .map(|t| Shape2::of(&t.shape).expect("checked by the reader"))
        .collect();
    let cols = shapes[0].cols;
    let values: Vec<Vec<f32>> = members
        .iter()
        .map(|&t| values_of(t))
        .collect::<Result<_>>()?;
    let blocks = unit_norm_blocks(&values, &shapes);
    let view: Vec<(&[f32], usize)> = blocks
        .iter()
        .zip(&shapes)
        .map(|(b, s)| (b.as_slice(), s.rows))
        .collect();
    let short = shapes.iter().map(|s| s.rows).min().unwrap_or(0).min(cols);
    let mut ranks: Vec<usize> = [16, 8, 4, 2].iter().map(|d| (short / d).max(1)).collect();
    ranks.dedup();
    let mut thresholds = THRESHOLDS.to_vec();
    if let Target::MaxError(e) = opts.target {
        thresholds.push(e);
    }
    thresholds.sort_by(f64::total_cmp);
    thresholds.dedup();
    let seeds: Vec<u64> = tensors
        .iter()
        .map(|t| Rng::for_stream(opts.seed, &t.name).next_u64())
        .collect();
    let sensitivities = tensors
        .iter()
        .map(|t| opts.sensitivity.as_ref().map(|s| s.for_tensor(&t.name)))
        .collect();
    let set = SetMembers {
        analyses,
        members,
        tensors,
        shapes,
        values,
        seeds,
        sensitivities,
        cols,
    };

    let mut options = Vec::new();
    let mut alone_combos = set.hull_walk();
    if let Target::MaxError(e) = opts.target {
        alone_combos.push(set.max_error_picks(e));
    }
    for picks in alone_combos {
        let candidates = picks
            .iter()
            .enumerate()
            .map(|(m, &i)| analyses[members[m]].candidates[i].clone())
            .collect();
        options.push(set.option(0, Vec::new(), candidates));
    }
    for &rank in &ranks {
        let alone = set.lowrank_alone(rank)?;
        let partitions = partitions(&view, cols, rank, &thresholds)?;
        options.push(set.option(rank as u32, Vec::new(), alone.clone()));
        for (partition, eps) in partitions {
            let mut candidates = alone.clone();
            let mut groups = Vec::new();
            for g in partition.into_iter().filter(|g| g.len() > 1) {
                groups.push(set.shared_group(&view, g, rank, eps, &mut candidates)?);
            }
            options.push(set.option(rank as u32, groups, candidates));
        }
    }
    Ok(options)
}

/// Unit-norm blocks, as `shared_lowrank::encode_group` sees them: the threshold bounds the RMS of
/// the members' relative errors, not an error dominated by the largest member.
fn unit_norm_blocks(values: &[Vec<f32>], shapes: &[Shape2]) -> Vec<Vec<f32>> {
    values
        .iter()
        .zip(shapes)
        .map(|(v, s)| {
            let scale = shared_lowrank::unit_scale(v);
            let mut t = transposed(v, s.rows, s.cols);
            t.iter_mut().for_each(|x| *x *= scale);
            t
        })
        .collect()
}

/// The distinct groupings (members sorted within a group, groups sorted) that the thresholds give
/// at `rank`, each with the first threshold that gave it; only those that share a basis.
fn partitions(
    view: &[(&[f32], usize)],
    cols: usize,
    rank: usize,
    thresholds: &[f64],
) -> Result<Vec<(Vec<Vec<usize>>, f64)>> {
    let mut partitions: Vec<(Vec<Vec<usize>>, f64)> = Vec::new();
    for &eps in thresholds {
        let mut groups = group(view, cols, rank, eps)?;
        groups.iter_mut().for_each(|g| g.sort());
        groups.sort();
        if groups.iter().any(|g| g.len() > 1) && !partitions.iter().any(|p| p.0 == groups) {
            partitions.push((groups, eps));
        }
    }
    Ok(partitions)
}

/// The members of a sibling set, with what measuring the set's options needs about them.
struct SetMembers<'a> {
    analyses: &'a [TensorAnalysis],
    /// Tensor indices of the members.
    members: &'a [usize],
    tensors: Vec<&'a crate::checkpoint::InputTensor>,
    shapes: Vec<Shape2>,
    values: Vec<Vec<f32>>,
    /// Each member's coding seed.
    seeds: Vec<u64>,
    /// Each member's measured sensitivity, when the model's was measured (its options'
    /// distortion is then weighed by it, as a tensor coded alone is).
    sensitivities: Vec<Option<f64>>,
    /// The members' common column count.
    cols: usize,
}

impl SetMembers<'_> {
    /// Member `m`'s option `codec`, measured from its encoding.
    fn measure(
        &self,
        m: usize,
        codec: CodecParams,
        encoded: &crate::codec::Encoded,
    ) -> MeasuredOption {
        let mut option = MeasuredOption::measure(
            codec,
            encoded,
            &self.values[m],
            self.tensors[m].dtype,
            self.analyses[self.members[m]].norm_sq,
            None,
            None,
        );
        if let Some(s) = self.sensitivities[m] {
            option.distortion = option.distortion.weighed(s);
        }
        option
    }

    /// A set option: every member's candidate plus the shared bases, sized and measured.
    fn option(
        &self,
        rank: u32,
        groups: Vec<GroupOption>,
        candidates: Vec<MeasuredOption>,
    ) -> SetOption {
        let bytes = candidates
            .iter()
            .zip(&self.tensors)
            .map(|(c, t)| container::section_len(t.numel(), c.coded_bytes))
            .chain(groups.iter().map(GroupOption::section_len))
            .sum();
        let rels: Vec<f64> = candidates
            .iter()
            .map(|c| c.distortion.relative_mse())
            .collect();
        SetOption {
            rank,
            groups,
            bytes,
            distortion: candidates.iter().map(|c| c.distortion.value()).sum(),
            max_rel_error: rels.iter().fold(0.0f64, |a, &r| a.max(r.sqrt())),
            member_candidates: candidates,
        }
    }

    /// Every member coded alone by any of its own measured options: the lower convex hull of the
    /// sum of the members' hulls (their segments merged by slope, the greedy allocator's own
    /// walk), so the set item offers all that per-tensor allocation could reach, besides sharing.
    /// One pick of a candidate index per member for each point of the walk.
    fn hull_walk(&self) -> Vec<Vec<usize>> {
        let (analyses, members) = (self.analyses, self.members);
        let hulls: Vec<Vec<usize>> = members
            .iter()
            .enumerate()
            .map(|(m, &t)| {
                let points: Vec<OptionPoint> = analyses[t]
                    .candidates
                    .iter()
                    .map(|c| OptionPoint {
                        bytes: container::section_len(self.tensors[m].numel(), c.coded_bytes),
                        distortion: c.distortion.value(),
                    })
                    .collect();
                crate::alloc::convex_hull(&points)
            })
            .collect();
        let mut at = vec![0usize; members.len()];
        let mut alone_combos: Vec<Vec<usize>> = Vec::new();
        loop {
            alone_combos.push(at.iter().enumerate().map(|(m, &h)| hulls[m][h]).collect());
            // The next segment with the steepest distortion drop per byte.
            let slope = |m: usize| {
                let (a, b) = (&analyses[members[m]], hulls[m][at[m]]);
                let c = hulls[m][at[m] + 1];
                let bytes = |i: usize| {
                    container::section_len(self.tensors[m].numel(), a.candidates[i].coded_bytes)
                        as f64
                };
                let d = |i: usize| a.candidates[i].distortion.value();
                (d(b) - d(c)) / (bytes(c) - bytes(b)).max(1.0)
            };
            let Some(m) = (0..members.len())
                .filter(|&m| at[m] + 1 < hulls[m].len())
                .max_by(|&x, &y| slope(x).total_cmp(&slope(y)).then(y.cmp(&x)))
            else {
                break;
            };
            at[m] += 1;
        }
        alone_combos
    }

    /// Per member the cheapest option within the error bound `e` (else its most accurate).
    fn max_error_picks(&self, e: f64) -> Vec<usize> {
        self.members
            .iter()
            .map(|&t| {
                let a = &self.analyses[t];
                let n = a.candidates.len();
                (0..n)
                    .filter(|&i| a.candidates[i].distortion.relative_mse().sqrt() <= e)
                    .min_by_key(|&i| (a.candidates[i].coded_bytes, i))
                    .unwrap_or_else(|| {
                        (0..n)
                            .min_by(|&x, &y| {
                                a.candidates[x]
                                    .sq_error
                                    .total_cmp(&a.candidates[y].sq_error)
                            })
                            .expect("a candidate")
                    })
            })
            .collect()
    }

    /// Each member alone: the pure lowrank option of this rank (measured by the analysis when it
    /// tried it, else encoded here with the same parameters).
    fn lowrank_alone(&self, rank: usize) -> Result<Vec<MeasuredOption>> {
        (0..self.members.len())
            .map(|m| {
                let p = lowrank::Params {
                    rank: rank as u32,
                    oversample: OVERSAMPLE,
                    power_iters: POWER_ITERS,
                    factor_bits: FACTOR_BITS,
                    residual_step_log2: None,
                    seed: self.seeds[m],
                };
                let codec = CodecParams::Lowrank(p.clone());
                if let Some(c) = self.analyses[self.members[m]]
                    .candidates
                    .iter()
                    .find(|c| c.codec == codec)
                {
                    return Ok(c.clone());
                }
                let enc = lowrank::encode(&self.values[m], self.shapes[m], &p)?;
                Ok(self.measure(m, codec, &enc))
            })
            .collect()
    }

    /// Codes group `g` (member positions) on one shared basis of `rank`, checks its exact error
    /// against the threshold `eps` it was formed under, and puts its members' candidates in
    /// `candidates`.
    fn shared_group(
        &self,
        view: &[(&[f32], usize)],
        g: Vec<usize>,
        rank: usize,
        eps: f64,
        candidates: &mut [MeasuredOption],
    ) -> Result<GroupOption> {
        let cols = self.cols;
        let total_rows: usize = g.iter().map(|&m| self.shapes[m].rows).sum();
        let basis = BasisParams {
            rank: shared_lowrank::effective_rank(rank as u32, cols, total_rows) as u32,
            factor_bits: FACTOR_BITS,
            oversample: OVERSAMPLE,
            power_iters: POWER_ITERS,
            seed: self.seeds[g[0]],
        };
        let group_view: Vec<(&[f32], usize)> = g.iter().map(|&m| view[m]).collect();
        let exact = exact_error(&group_view, cols, basis.rank as usize)?;
        let mut estimator = Estimator::new(cols, basis.rank as usize);
        for b in &group_view {
            estimator.add(b.0, b.1)?;
        }
        if exact > eps * (1.0 + 1e-9) {
            // The estimator bounds the exact error from above, so this is a bug.
            return Err(Error::invalid(format!(
                "internal error: a shared-basis group's exact error {exact} is above \
                 its threshold {eps}"
            )));
        }
        let inputs: Vec<(&[f32], Shape2)> = g
            .iter()
            .map(|&m| (self.values[m].as_slice(), self.shapes[m]))
            .collect();
        let enc = shared_lowrank::encode_group(&inputs, &basis)?;
        for (&m, e) in g.iter().zip(&enc.members) {
            candidates[m] = self.measure(m, CodecParams::SharedLowrank(basis.member(0)), e);
        }
        Ok(GroupOption {
            members: g,
            cols,
            coded_bytes: enc.basis.bytes.len() as u64,
            side_bytes: enc.basis.side_bytes as u64,
            crc32: container::crc32(&enc.basis.bytes),
            basis,
            threshold: eps,
            estimate: estimator.error(),
            exact_error: exact,
        })
    }
}

/// The sections `compress` writes for the manifest's groups: per tensor its member section (None
/// for non-members), and per group its basis section. Re-encodes each group from its members'
/// values in tensor order, as the plan measured it.
pub struct GroupSections {
    pub members: Vec<Option<Vec<u8>>>,
    pub bases: Vec<Vec<u8>>,
}

pub fn encode_groups(
    manifest: &Manifest,
    values_of: &dyn Fn(usize) -> Result<Vec<f32>>,
) -> Result<GroupSections> {
    let mut out = GroupSections {
        members: vec![None; manifest.tensors.len()],
        bases: Vec::with_capacity(manifest.groups.len()),
    };
    for (g, record) in manifest.groups.iter().enumerate() {
        let members: Vec<usize> = manifest
            .tensors
            .iter()
            .enumerate()
            .filter(
                |(_, t)| matches!(&t.codec, CodecParams::SharedLowrank(p) if p.group as usize == g),
            )
            .map(|(i, _)| i)
            .collect();
        let values: Vec<Vec<f32>> = members
            .iter()
            .map(|&t| values_of(t))
            .collect::<Result<_>>()?;
        let inputs: Vec<(&[f32], Shape2)> = members
            .iter()
            .zip(&values)
            .map(|(&t, v)| {
                let shape = Shape2::of(&manifest.tensors[t].shape).expect("checked");
                (v.as_slice(), shape)
            })
            .collect();
        let enc = shared_lowrank::encode_group(&inputs, &record.basis)?;
        if enc.basis.bytes.len() as u64 != record.coded_bytes
            || container::crc32(&enc.basis.bytes) != record.crc32
        {
            return Err(Error::invalid(format!(
                "internal error: re-encoding group '{}' gave other bytes than the analysis measured",
                record.name
            )));
        }
        out.bases.push(enc.basis.bytes);
        for (&t, e) in members.iter().zip(enc.members) {
            out.members[t] = Some(e.bytes);
        }
    }
    Ok(out)
}

/// Decodes every group's basis of a validated container.
pub fn decode_bases(c: &container::Container, file: &[u8]) -> Result<Vec<shared_lowrank::Basis>> {
    c.manifest
        .groups
        .iter()
        .zip(&c.group_sections)
        .map(|(g, range)| {
            shared_lowrank::decode_basis(&file[range.clone()], g.cols, &g.basis)
                .map_err(|e| Error::corrupt(format!("group '{}': {e}", g.name)))
        })
        .collect()
}

/// [`super::read::decode_tensor`], with the group bases shared-lowrank members need.
pub fn decode_tensor(
    section: &[u8],
    record: &TensorRecord,
    bases: &[shared_lowrank::Basis],
) -> Result<Vec<u8>> {
    let CodecParams::SharedLowrank(p) = &record.codec else {
        return super::read::decode_tensor(section, record);
    };
    let shape = Shape2::of(&record.shape).ok_or_else(|| Error::corrupt("shape overflows"))?;
    let basis = bases
        .get(p.group as usize)
        .ok_or_else(|| Error::corrupt("its group does not exist"))?;
    let values = shared_lowrank::decode(section, shape, p, basis)?;
    Ok(crate::dtype::from_f32(record.dtype, &values))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    /// Blocks that share a rank-`k` column space (plus a little noise), and one that does not.
    fn blocks(rows: usize, seed: u64) -> Vec<Vec<f32>> {
        let mut rng = Rng::new(seed);
        let k = 4;
        let basis: Vec<f32> = (0..rows * k).map(|_| rng.normal() as f32).collect();
        let mut out = Vec::new();
        for _ in 0..3 {
            let coef: Vec<f32> = (0..k * 20).map(|_| rng.normal() as f32).collect();
            let mut b = vec![0.0f32; rows * 20];
            for i in 0..rows {
                for j in 0..20 {
                    b[i * 20 + j] = (0..k)
                        .map(|t| basis[i * k + t] * coef[t * 20 + j])
                        .sum::<f32>()
                        + 0.01 * rng.normal() as f32;
                }
            }
            out.push(b);
        }
        out.push((0..rows * 20).map(|_| rng.normal() as f32).collect());
        out
    }

    #[test]
    fn estimate_is_an_upper_bound_and_groups_meet_the_threshold() {
        let rows = 30;
        let data = blocks(rows, 1);
        let view: Vec<(&[f32], usize)> = data.iter().map(|b| (b.as_slice(), 20)).collect();
        let mut est = Estimator::new(rows, 4);
        for (i, b) in view.iter().enumerate() {
            est.add(b.0, b.1).unwrap();
            let exact = exact_error(&view[..=i], rows, 4).unwrap();
            assert!(
                est.error() >= exact - 1e-9,
                "block {i}: {} < {exact}",
                est.error()
            );
        }
        let eps = 0.05;
        let groups = group(&view, rows, 4, eps).unwrap();
        // The three sharing blocks form one group, the random one stays alone.
        assert!(
            groups.iter().any(|g| g.len() == 3 && !g.contains(&3)),
            "{groups:?}"
        );
        for g in groups.iter().filter(|g| g.len() > 1) {
            let members: Vec<(&[f32], usize)> = g.iter().map(|&i| view[i]).collect();
            assert!(exact_error(&members, rows, 4).unwrap() <= eps);
        }
    }
}
