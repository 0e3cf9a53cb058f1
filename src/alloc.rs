//! Rate allocation across tensors: given every tensor's measured (bytes, distortion) options, pick
//! one option per tensor.
//!
//! - Budget mode (`--bpw`): minimise the total distortion subject to the total bytes fitting a budget.
//!   Each tensor's options are reduced to their lower convex hull; starting from every tensor's
//!   cheapest option, the upgrade with the largest distortion drop per byte is taken while it fits
//!   (a max-heap over hull segments). On convex hulls this greedy walk visits exactly the solutions of
//!   the Lagrangian problem min D + lambda * R (equal slopes), so it is optimal at each of those points;
//!   when an upgrade does not fit, the walk goes on with smaller ones, filling the budget
//!   (a multiple-choice knapsack solved by the standard convex-hull greedy). Points off the hull
//!   are never reached.
//! - Knapsack (`--allocator knapsack`, after ROCKET; docs/METHODS.md): the same problem solved by
//!   dynamic programming over a discretised budget, on every Pareto-optimal option (hull or not);
//!   see [`allocate_knapsack`] for the grid and its rounding bound.
//! - Error mode (`--max-error`): per tensor, the cheapest option whose error is at most the bound.
//!
//! The distortion of an option is whatever the caller measures; the pipeline uses
//! `distortion::Distortion::value` (the tensor's relative squared error, every tensor counting the
//! same, or 1 - recall@10 for a vector dataset; the measurement behind that choice is there).

use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// One option of one tensor (or one shared-lowrank set), as the allocator sees it: the
/// (bytes, distortion) projection of a `pipeline::MeasuredOption` (or of a set option). Kept apart
/// from that record on purpose: the allocators work on plain `Copy` points (hull, heap and the
/// knapsack's table walk them many times), need nothing else, and sit in a lower layer than the
/// codecs an option names; which measure `distortion` is in does not matter to them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OptionPoint {
    /// Bytes the option adds to the file (its section, padding included).
    pub bytes: u64,
    /// Distortion in the caller's unit; 0 for exact options.
    pub distortion: f64,
}

/// Indices (into each tensor's options) of the lower convex hull, from cheapest to dearest, with
/// dominated options removed. Ties are broken by the lower index, so the result is deterministic.
pub fn convex_hull(options: &[OptionPoint]) -> Vec<usize> {
    let front = pareto_front(options);
    // Lower convex hull of the front (monotone chain).
    let mut hull: Vec<usize> = Vec::new();
    for i in front {
        while hull.len() >= 2 {
            let (a, b) = (options[hull[hull.len() - 2]], options[hull[hull.len() - 1]]);
            let c = options[i];
            // Remove b if it lies on or above the segment a-c.
            let cross = (b.bytes as f64 - a.bytes as f64) * (c.distortion - a.distortion)
                - (b.distortion - a.distortion) * (c.bytes as f64 - a.bytes as f64);
            if cross <= 0.0 {
                hull.pop();
            } else {
                break;
            }
        }
        hull.push(i);
    }
    hull
}

#[derive(PartialEq)]
struct Upgrade {
    slope: f64,
    tensor: usize,
}

impl Eq for Upgrade {}

impl Ord for Upgrade {
    fn cmp(&self, other: &Self) -> Ordering {
        self.slope
            .total_cmp(&other.slope)
            .then(other.tensor.cmp(&self.tensor))
    }
}

impl PartialOrd for Upgrade {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Picks one option per tensor with total bytes <= `budget_bytes`, minimising total distortion.
/// Returns `None` when even the cheapest options do not fit. Every tensor must have an option.
pub fn allocate_budget(tensors: &[Vec<OptionPoint>], budget_bytes: u64) -> Option<Vec<usize>> {
    let hulls: Vec<Vec<usize>> = tensors.iter().map(|o| convex_hull(o)).collect();
    let mut position = vec![0usize; tensors.len()];
    let mut used: u64 = hulls.iter().zip(tensors).map(|(h, o)| o[h[0]].bytes).sum();
    if used > budget_bytes {
        return None;
    }
    let slope = |t: usize, p: usize| -> f64 {
        let (a, b) = (tensors[t][hulls[t][p]], tensors[t][hulls[t][p + 1]]);
        (a.distortion - b.distortion) / (b.bytes - a.bytes) as f64
    };
    let mut heap = BinaryHeap::new();
    for (t, hull) in hulls.iter().enumerate() {
        if hull.len() > 1 {
            heap.push(Upgrade {
                slope: slope(t, 0),
                tensor: t,
            });
        }
    }
    while let Some(Upgrade { tensor: t, .. }) = heap.pop() {
        let p = position[t];
        let extra = tensors[t][hulls[t][p + 1]].bytes - tensors[t][hulls[t][p]].bytes;
        if used + extra > budget_bytes {
            // Does not fit; a later, cheaper step of this tensor cannot exist on a convex hull
            // without this one, so the tensor stays where it is.
            continue;
        }
        used += extra;
        position[t] = p + 1;
        if p + 2 < hulls[t].len() {
            heap.push(Upgrade {
                slope: slope(t, p + 1),
                tensor: t,
            });
        }
    }
    Some(position.iter().zip(&hulls).map(|(&p, h)| h[p]).collect())
}

/// Which budget allocator `plan` runs (`--allocator`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Allocator {
    /// Convex-hull greedy ([`allocate_budget`]).
    Greedy,
    /// Multiple-choice knapsack by dynamic programming ([`allocate_knapsack`]).
    Knapsack,
}

impl Default for Allocator {
    fn default() -> Self {
        Allocator::DEFAULT
    }
}

impl Allocator {
    pub const ALL: [Allocator; 2] = [Allocator::Greedy, Allocator::Knapsack];
    /// The knapsack: measured better than the greedy on all-MiniLM-L6-v2 at 3 bits per weight
    /// (mean cosine 0.95912 against 0.95684), equal at 4 and 5, and never worse on the allocator's
    /// objective (it also evaluates the greedy's pick; docs/METHODS.md).
    pub const DEFAULT: Allocator = Allocator::Knapsack;

    pub const fn name(self) -> &'static str {
        match self {
            Allocator::Greedy => "greedy",
            Allocator::Knapsack => "knapsack",
        }
    }

    pub fn from_name(name: &str) -> Option<Allocator> {
        Allocator::ALL.into_iter().find(|a| a.name() == name)
    }

    /// Runs this allocator (see [`allocate_budget`] and [`allocate_knapsack`]).
    pub fn allocate(self, tensors: &[Vec<OptionPoint>], budget_bytes: u64) -> Option<Vec<usize>> {
        match self {
            Allocator::Greedy => allocate_budget(tensors, budget_bytes),
            Allocator::Knapsack => allocate_knapsack(tensors, budget_bytes),
        }
    }
}

/// Most budget buckets the knapsack table uses (its rounding bound is stated in bytes per bucket).
pub const KNAPSACK_MAX_BUCKETS: u64 = 1 << 16;
/// Most table cells (tensors with a choice x buckets): 2 bytes each, so at most 64 MiB in the
/// browser; larger models get coarser buckets.
const KNAPSACK_MAX_CELLS: u64 = 1 << 25;

/// Pareto front of one tensor's options: indices by increasing bytes with strictly decreasing
/// distortion (ties to the lower index, so the result is deterministic).
pub fn pareto_front(options: &[OptionPoint]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..options.len()).collect();
    order.sort_by(|&a, &b| {
        options[a]
            .bytes
            .cmp(&options[b].bytes)
            .then(options[a].distortion.total_cmp(&options[b].distortion))
            .then(a.cmp(&b))
    });
    let mut front: Vec<usize> = Vec::new();
    for i in order {
        if front
            .last()
            .is_none_or(|&j| options[i].distortion < options[j].distortion)
        {
            front.push(i);
        }
    }
    front
}

/// Picks one option per tensor with total bytes <= `budget_bytes`, minimising total distortion,
/// by multiple-choice knapsack dynamic programming (ROCKET's solver). Returns
/// `None` when even the cheapest options do not fit.
///
/// Every tensor first takes its cheapest option; the DP then spends the remaining budget `R` on
/// upgrades, over each tensor's Pareto front (so, unlike the greedy, it reaches options off the
/// convex hull). Upgrade costs are counted in buckets of `g = ceil(R / buckets)` bytes: `buckets`
/// is [`KNAPSACK_MAX_BUCKETS`], fewer when `n` (tensors with a choice) times that would exceed the
/// table's cell cap, and `g = 1` (the DP is exact) whenever `R <= buckets`. Two roundings are
/// solved and the better kept:
/// - costs rounded *up*: the pick always fits, and it is at least as good as the exact optimum for
///   the budget `R - n g` (the stated bound);
/// - costs rounded to the *nearest* bucket: errors mostly cancel, but the pick may overshoot; the
///   capacity is then lowered by the overshoot and the DP run again (a few rounds).
///
/// The convex-hull greedy's pick is a third candidate, so the result is never worse than
/// [`allocate_budget`]'s. Each candidate is polished with the bytes the rounding left: while a
/// switch of one option, or of two options together, lowers the distortion and fits, the best such
/// move is taken.
pub fn allocate_knapsack(tensors: &[Vec<OptionPoint>], budget_bytes: u64) -> Option<Vec<usize>> {
    let fronts: Vec<Vec<usize>> = tensors.iter().map(|o| pareto_front(o)).collect();
    let base: u64 = fronts.iter().zip(tensors).map(|(f, o)| o[f[0]].bytes).sum();
    let spare = budget_bytes.checked_sub(base)?;
    let cheapest: Vec<usize> = fronts.iter().map(|f| f[0]).collect();
    let active: Vec<usize> = (0..tensors.len())
        .filter(|&t| fronts[t].len() > 1)
        .collect();
    let mut picks: Vec<Vec<usize>> = vec![cheapest.clone()];
    if !active.is_empty() && spare > 0 {
        let buckets = KNAPSACK_MAX_BUCKETS
            .min(KNAPSACK_MAX_CELLS / active.len() as u64)
            .max(1);
        let grain = spare.div_ceil(buckets).max(1);
        let capacity = spare / grain;
        let dp = |capacity: u64, round_up: bool| {
            let cost = |extra: u64| {
                if round_up {
                    extra.div_ceil(grain)
                } else {
                    (extra + grain / 2) / grain
                }
            };
            knapsack_dp(tensors, &fronts, &active, &cheapest, capacity, cost)
        };
        picks.push(dp(capacity, true));
        let mut capacity_nearest = capacity;
        for _ in 0..4 {
            let pick = dp(capacity_nearest, false);
            let used: u64 = pick.iter().zip(tensors).map(|(&i, o)| o[i].bytes).sum();
            if used <= budget_bytes {
                picks.push(pick);
                break;
            }
            let over = (used - budget_bytes).div_ceil(grain);
            capacity_nearest = capacity_nearest.saturating_sub(over.max(1));
        }
    }
    if let Some(greedy) = allocate_budget(tensors, budget_bytes) {
        picks.push(greedy);
    }
    let total = |choice: &[usize]| -> f64 {
        choice
            .iter()
            .zip(tensors)
            .map(|(&i, o)| o[i].distortion)
            .sum()
    };
    picks
        .into_iter()
        .map(|mut choice| {
            polish(tensors, &fronts, &mut choice, budget_bytes);
            choice
        })
        .min_by(|a, b| total(a).total_cmp(&total(b)))
}

/// The DP proper: every active tensor picks a position on its Pareto front, the sum of the
/// upgrade costs (in buckets, as `cost` rounds a byte count) at most `capacity`, minimising the
/// total distortion. Other tensors keep `cheapest`.
fn knapsack_dp(
    tensors: &[Vec<OptionPoint>],
    fronts: &[Vec<usize>],
    active: &[usize],
    cheapest: &[usize],
    capacity: u64,
    cost: impl Fn(u64) -> u64,
) -> Vec<usize> {
    let width = capacity as usize + 1;
    // best[b]: least total distortion of the active tensors so far with upgrades costing at most
    // b buckets; pick[k * width + b]: the front position active tensor k takes there.
    let mut best = vec![0.0f64; width];
    let mut next = vec![0.0f64; width];
    let mut pick = vec![0u16; active.len() * width];
    let costs_of = |t: usize| -> Vec<(usize, f64)> {
        let o = &tensors[t];
        let base_bytes = o[fronts[t][0]].bytes;
        fronts[t]
            .iter()
            // Anything dearer than the whole capacity can never be taken.
            .map(|&i| {
                (
                    cost(o[i].bytes - base_bytes).min(width as u64) as usize,
                    o[i].distortion,
                )
            })
            .collect()
    };
    for (k, &t) in active.iter().enumerate() {
        let costs = costs_of(t);
        debug_assert!(costs.len() <= u16::MAX as usize + 1);
        let row = &mut pick[k * width..(k + 1) * width];
        for b in 0..width {
            let (mut value, mut at) = (f64::INFINITY, 0u16);
            for (p, &(c, d)) in costs.iter().enumerate() {
                if c > b {
                    continue; // nearest rounding can make costs non-monotone along the front
                }
                let v = best[b - c] + d;
                if v < value {
                    (value, at) = (v, p as u16);
                }
            }
            next[b] = value;
            row[b] = at;
        }
        std::mem::swap(&mut best, &mut next);
    }
    let mut choice = cheapest.to_vec();
    let mut b = capacity as usize;
    for (k, &t) in active.iter().enumerate().rev() {
        let p = pick[k * width + b] as usize;
        b -= costs_of(t)[p].0;
        choice[t] = fronts[t][p];
    }
    choice
}

/// Above this many candidate switches, [`polish`] tries single switches only.
const POLISH_MAX_PAIR_OPTIONS: usize = 4096;

/// Spends what the bucket rounding left: repeatedly takes the best move that lowers the total
/// distortion and keeps the budget, a move being one tensor's switch to another option of its
/// front or two tensors' switches together (ties to the lowest indices, so it is deterministic).
fn polish(
    tensors: &[Vec<OptionPoint>],
    fronts: &[Vec<usize>],
    choice: &mut [usize],
    budget_bytes: u64,
) {
    let mut used: u64 = choice.iter().zip(tensors).map(|(&i, o)| o[i].bytes).sum();
    // Every move strictly lowers the distortion; the cap only bounds the time on odd inputs.
    for _ in 0..fronts.iter().map(Vec::len).sum::<usize>() {
        // Single switches: (bytes added, distortion removed, tensor, option).
        let mut moves: Vec<(i64, f64, usize, usize)> = Vec::new();
        for (t, front) in fronts.iter().enumerate() {
            let now = tensors[t][choice[t]];
            for &i in front {
                if i != choice[t] {
                    let o = tensors[t][i];
                    moves.push((
                        o.bytes as i64 - now.bytes as i64,
                        now.distortion - o.distortion,
                        t,
                        i,
                    ));
                }
            }
        }
        let slack = budget_bytes as i64 - used as i64;
        let mut best: Option<(f64, usize, Option<usize>)> = None;
        let mut consider = |gain: f64, a: usize, b: Option<usize>| {
            if gain > 1e-15 && best.is_none_or(|(g, _, _)| gain > g) {
                best = Some((gain, a, b));
            }
        };
        for (x, &(bytes, gain, _, _)) in moves.iter().enumerate() {
            if bytes <= slack {
                consider(gain, x, None);
            }
        }
        // Pairs cost quadratic time: only on models with few enough options (MiniLM has ~1300).
        let pairs = if moves.len() <= POLISH_MAX_PAIR_OPTIONS {
            moves.len()
        } else {
            0
        };
        for (x, &(bx, gx, tx, _)) in moves.iter().enumerate().take(pairs) {
            for (y, &(by, gy, ty, _)) in moves.iter().enumerate().skip(x + 1) {
                if tx != ty && bx + by <= slack {
                    consider(gx + gy, x, Some(y));
                }
            }
        }
        let Some((_, a, b)) = best else { break };
        for m in [Some(a), b].into_iter().flatten() {
            let (bytes, _, t, i) = moves[m];
            used = (used as i64 + bytes) as u64;
            choice[t] = i;
        }
    }
}

/// The global rate-distortion curve the allocator works on: total (bytes, distortion) at every
/// breakpoint of the greedy walk with an unlimited budget (the Lagrangian solutions).
pub fn rd_curve(tensors: &[Vec<OptionPoint>]) -> Vec<OptionPoint> {
    let hulls: Vec<Vec<usize>> = tensors.iter().map(|o| convex_hull(o)).collect();
    let mut bytes: u64 = hulls.iter().zip(tensors).map(|(h, o)| o[h[0]].bytes).sum();
    let mut distortion: f64 = hulls
        .iter()
        .zip(tensors)
        .map(|(h, o)| o[h[0]].distortion)
        .sum();
    let mut steps: Vec<(f64, usize, usize)> = Vec::new();
    for (t, h) in hulls.iter().enumerate() {
        for p in 0..h.len().saturating_sub(1) {
            let (a, b) = (tensors[t][h[p]], tensors[t][h[p + 1]]);
            steps.push((
                (a.distortion - b.distortion) / (b.bytes - a.bytes) as f64,
                t,
                p,
            ));
        }
    }
    // Steepest first; within a tensor, hull slopes decrease, so its steps stay in order.
    steps.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    let mut curve = vec![OptionPoint { bytes, distortion }];
    for (_, t, p) in steps {
        let (a, b) = (tensors[t][hulls[t][p]], tensors[t][hulls[t][p + 1]]);
        bytes += b.bytes - a.bytes;
        distortion += b.distortion - a.distortion;
        curve.push(OptionPoint {
            bytes,
            distortion: distortion.max(0.0),
        });
    }
    curve
}

/// Error mode: for each tensor the cheapest option whose error (as given by `error_of`) is at most
/// `max_error`, or `None` for a tensor where no option qualifies.
pub fn allocate_max_error(
    tensors: &[Vec<OptionPoint>],
    max_error: f64,
    error_of: impl Fn(usize, usize) -> f64,
) -> Vec<Option<usize>> {
    tensors
        .iter()
        .enumerate()
        .map(|(t, options)| {
            (0..options.len())
                .filter(|&i| error_of(t, i) <= max_error)
                .min_by(|&a, &b| options[a].bytes.cmp(&options[b].bytes).then(a.cmp(&b)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    fn p(bytes: u64, distortion: f64) -> OptionPoint {
        OptionPoint { bytes, distortion }
    }

    #[test]
    fn hull_drops_dominated_and_non_convex_points() {
        let o = [
            p(10, 5.0),
            p(20, 4.9),
            p(20, 2.0),
            p(30, 1.0),
            p(25, 3.0),
            p(40, 0.9),
            p(50, 0.0),
        ];
        let h = convex_hull(&o);
        // (20,4.9) and (25,3) are dominated or above the hull; (40,0.9) is above the segment 30-50.
        assert_eq!(h, vec![0, 2, 3, 6]);
    }

    /// Brute force over all combinations on small random instances: the greedy allocation is never
    /// worse than the best solution restricted to hull points... and is optimal when the budget falls
    /// on a Lagrangian breakpoint. Here we check it against exhaustive search with a tolerance that
    /// the greedy's known gap (at most one tensor's step) allows, and that it always fits the budget.
    #[test]
    fn greedy_fits_budget_and_is_close_to_brute_force() {
        let mut rng = Rng::new(11);
        for _case in 0..300 {
            let n = 1 + rng.below(4) as usize;
            let tensors: Vec<Vec<OptionPoint>> = (0..n)
                .map(|_| {
                    let k = 1 + rng.below(4) as usize;
                    (0..k)
                        .map(|_| p(1 + rng.below(50), rng.uniform() * 10.0))
                        .collect()
                })
                .collect();
            let min_total: u64 = tensors
                .iter()
                .map(|o| o.iter().map(|x| x.bytes).min().unwrap())
                .sum();
            let budget = min_total + rng.below(80);
            let choice = allocate_budget(&tensors, budget).expect("the cheapest options fit");
            let bytes: u64 = choice.iter().zip(&tensors).map(|(&i, o)| o[i].bytes).sum();
            assert!(bytes <= budget);
            // Brute force.
            let mut best = f64::INFINITY;
            let mut idx = vec![0usize; n];
            loop {
                let b: u64 = idx.iter().zip(&tensors).map(|(&i, o)| o[i].bytes).sum();
                if b <= budget {
                    best = best.min(
                        idx.iter()
                            .zip(&tensors)
                            .map(|(&i, o)| o[i].distortion)
                            .sum(),
                    );
                }
                let mut t = 0;
                while t < n {
                    idx[t] += 1;
                    if idx[t] < tensors[t].len() {
                        break;
                    }
                    idx[t] = 0;
                    t += 1;
                }
                if t == n {
                    break;
                }
            }
            let got: f64 = choice
                .iter()
                .zip(&tensors)
                .map(|(&i, o)| o[i].distortion)
                .sum();
            let max_step: f64 = tensors
                .iter()
                .map(|o| {
                    let hi = o.iter().map(|x| x.distortion).fold(0.0, f64::max);
                    let lo = o.iter().map(|x| x.distortion).fold(f64::INFINITY, f64::min);
                    hi - lo
                })
                .fold(0.0, f64::max);
            assert!(got >= best - 1e-9);
            assert!(got <= best + max_step + 1e-9, "greedy {got} vs best {best}");
        }
    }

    #[test]
    fn greedy_is_exact_at_lagrangian_breakpoints() {
        // Budgets equal to curve breakpoints must give exactly the curve's distortion.
        let tensors = vec![
            vec![p(10, 8.0), p(20, 3.0), p(40, 1.0), p(80, 0.0)],
            vec![p(5, 4.0), p(15, 1.0), p(35, 0.2)],
        ];
        for point in rd_curve(&tensors) {
            let choice = allocate_budget(&tensors, point.bytes).unwrap();
            let d: f64 = choice
                .iter()
                .zip(&tensors)
                .map(|(&i, o)| o[i].distortion)
                .sum();
            assert!(
                (d - point.distortion).abs() < 1e-12,
                "at {} bytes: {d} vs {}",
                point.bytes,
                point.distortion
            );
        }
    }

    fn total(choice: &[usize], tensors: &[Vec<OptionPoint>]) -> (u64, f64) {
        choice
            .iter()
            .zip(tensors)
            .fold((0, 0.0), |(b, d), (&i, o)| {
                (b + o[i].bytes, d + o[i].distortion)
            })
    }

    /// Least total distortion over all combinations that fit `budget` (exhaustive).
    fn brute_force(tensors: &[Vec<OptionPoint>], budget: u64) -> f64 {
        let n = tensors.len();
        let mut best = f64::INFINITY;
        let mut idx = vec![0usize; n];
        loop {
            let (b, d) = total(&idx, tensors);
            if b <= budget {
                best = best.min(d);
            }
            let mut t = 0;
            while t < n {
                idx[t] += 1;
                if idx[t] < tensors[t].len() {
                    break;
                }
                idx[t] = 0;
                t += 1;
            }
            if t == n {
                return best;
            }
        }
    }

    fn random_instance(rng: &mut Rng, max_bytes: u64) -> Vec<Vec<OptionPoint>> {
        let n = 1 + rng.below(5) as usize;
        (0..n)
            .map(|_| {
                let k = 1 + rng.below(5) as usize;
                (0..k)
                    .map(|_| p(1 + rng.below(max_bytes), rng.uniform() * 10.0))
                    .collect()
            })
            .collect()
    }

    /// With a budget small enough for one-byte buckets the DP is exact: it equals brute force.
    #[test]
    fn knapsack_equals_brute_force_on_small_instances() {
        let mut rng = Rng::new(5);
        let mut beat_greedy = 0;
        for _case in 0..500 {
            let tensors = random_instance(&mut rng, 60);
            let min_total: u64 = tensors
                .iter()
                .map(|o| o.iter().map(|x| x.bytes).min().unwrap())
                .sum();
            let budget = min_total + rng.below(120);
            let choice = allocate_knapsack(&tensors, budget).expect("the cheapest options fit");
            let (bytes, d) = total(&choice, &tensors);
            assert!(bytes <= budget);
            let best = brute_force(&tensors, budget);
            assert!(
                (d - best).abs() < 1e-9,
                "knapsack {d} vs brute force {best}"
            );
            let greedy = allocate_budget(&tensors, budget).unwrap();
            if total(&greedy, &tensors).1 > d + 1e-9 {
                beat_greedy += 1;
            }
            assert!(allocate_knapsack(&tensors, min_total - 1).is_none());
        }
        // The instances are varied enough that points off the hull matter somewhere.
        assert!(beat_greedy > 0);
    }

    /// With coarse buckets the result still fits, and it is no worse than the exact optimum of the
    /// budget shrunk by one bucket per tensor (the documented rounding bound).
    #[test]
    fn knapsack_rounding_loss_is_bounded() {
        let mut rng = Rng::new(8);
        for _case in 0..200 {
            let tensors = random_instance(&mut rng, 1 << 20);
            let min_total: u64 = tensors
                .iter()
                .map(|o| o.iter().map(|x| x.bytes).min().unwrap())
                .sum();
            let spare = rng.below(3 << 20);
            let budget = min_total + spare;
            let choice = allocate_knapsack(&tensors, budget).unwrap();
            let (bytes, d) = total(&choice, &tensors);
            assert!(bytes <= budget);
            assert!(d >= brute_force(&tensors, budget) - 1e-9);
            let grain = spare.div_ceil(KNAPSACK_MAX_BUCKETS).max(1);
            let shrunk = budget.saturating_sub(grain * tensors.len() as u64);
            assert!(d <= brute_force(&tensors, shrunk) + 1e-9);
        }
    }

    #[test]
    fn allocator_names_round_trip() {
        for a in Allocator::ALL {
            assert_eq!(Allocator::from_name(a.name()), Some(a));
        }
        assert_eq!(Allocator::from_name("dp"), None);
    }

    #[test]
    fn budget_below_minimum_is_refused() {
        let tensors = vec![vec![p(10, 1.0)], vec![p(10, 1.0)]];
        assert!(allocate_budget(&tensors, 19).is_none());
        assert_eq!(allocate_budget(&tensors, 20), Some(vec![0, 0]));
        assert!(allocate_knapsack(&tensors, 19).is_none());
        assert_eq!(allocate_knapsack(&tensors, 20), Some(vec![0, 0]));
    }

    #[test]
    fn max_error_takes_the_cheapest_qualifying_option() {
        let tensors = vec![vec![p(10, 0.5), p(20, 0.1), p(40, 0.0)]];
        let pick = allocate_max_error(&tensors, 0.2, |t, i| tensors[t][i].distortion);
        assert_eq!(pick, vec![Some(1)]);
        let none = allocate_max_error(&tensors, -1.0, |t, i| tensors[t][i].distortion);
        assert_eq!(none, vec![None]);
    }
}
