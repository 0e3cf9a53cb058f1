//! Choosing a single finite-context model's hyperparameters (order k, smoothing alpha) for a
//! symbol sequence, two ways (docs/SEQUENCES.md; after Contente, Martins, Pinho, Gouveia):
//!
//! - **two-step**: k from serial-dependence measures by lag (Cramer's V, Cohen's kappa, partial
//!   mutual information, each with a significance test at 5%), then alpha by maximum likelihood
//!   given k (golden-section search on ln alpha);
//! - **grid**: every (k, alpha) of a grid, keeping the lowest bits per symbol.
//!
//! Both score a candidate by the exact code length of the adaptive estimator
//! P(s|c) = (n_{c,s} + a) / (n_c + M a): with counts that start at zero it is the
//! Dirichlet-multinomial likelihood of the final counts, so it is computed from count histograms
//! instead of a pass over the sequence (the first k symbols cost log2 M each). These are figures
//! for the report and for comparison; the coder itself uses the mixture of `fcm.rs`. Floating point
//! here never reaches the coded bytes.

use crate::rng::Rng;

/// Dependence measures at one lag.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct LagMeasures {
    pub lag: usize,
    pub cramers_v: f64,
    pub cramers_v_significant: bool,
    pub cohens_kappa: f64,
    pub cohens_kappa_significant: bool,
    /// Partial (conditional) mutual information I(X_t; X_{t-h} | X_{t-1..t-h+1}), bits.
    pub pami_bits: f64,
    /// G-test at 5%, only at lags where the test is valid (N >= 5 M^(h+1)); false beyond.
    pub pami_significant: bool,
}

/// The result of one way of choosing (k, alpha).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Choice {
    pub order: usize,
    pub alpha: f64,
    pub bits_per_symbol: f64,
    pub seconds: f64,
}

/// Upper 0.95 quantile of chi-squared with `df` degrees of freedom (Wilson-Hilferty; within 1% for
/// df >= 3, which is all we use: (M-1)^2 >= 9 for M = 4).
pub fn chi2_quantile_95(df: f64) -> f64 {
    let z = 1.644_853_626_951_472_2;
    let a = 2.0 / (9.0 * df);
    df * (1.0 - a + z * a.sqrt()).powi(3)
}

/// Cramer's V and Cohen's kappa at lag `h` from the joint counts of (X_t, X_{t-h}).
fn v_and_kappa(seq: &[u8], m: usize, h: usize) -> (f64, f64, f64) {
    let mut joint = vec![0u64; m * m];
    for t in h..seq.len() {
        joint[seq[t] as usize * m + seq[t - h] as usize] += 1;
    }
    let n = (seq.len() - h) as f64;
    let mut row = vec![0f64; m];
    let mut col = vec![0f64; m];
    for i in 0..m {
        for j in 0..m {
            let p = joint[i * m + j] as f64 / n;
            row[i] += p;
            col[j] += p;
        }
    }
    let mut chi = 0.0;
    let (mut agree, mut chance) = (0.0, 0.0);
    for i in 0..m {
        for j in 0..m {
            let e = row[i] * col[j];
            if e > 0.0 {
                let d = joint[i * m + j] as f64 / n - e;
                chi += d * d / e;
            }
        }
        agree += joint[i * m + i] as f64 / n;
        chance += row[i] * col[i];
    }
    let v = (chi / (m as f64 - 1.0)).sqrt();
    let kappa = if chance < 1.0 {
        (agree - chance) / (1.0 - chance)
    } else {
        0.0
    };
    (v, kappa, n * chi)
}

/// The sorted codes of every (k+1)-gram ending at t >= k: context in the high bits, symbol low.
fn gram_codes(seq: &[u8], m: usize, k: usize) -> Vec<u64> {
    let bits = (usize::BITS - (m - 1).leading_zeros()).max(1) as u64;
    let mut codes = Vec::with_capacity(seq.len().saturating_sub(k));
    if (k as u64 + 1) * bits > 64 {
        return codes;
    }
    let mask = if (k as u64 + 1) * bits == 64 {
        u64::MAX
    } else {
        (1u64 << ((k as u64 + 1) * bits)) - 1
    };
    let mut code = 0u64;
    for (t, &s) in seq.iter().enumerate() {
        code = ((code << bits) | s as u64) & mask;
        if t >= k {
            codes.push(code);
        }
    }
    codes.sort_unstable();
    codes
}

/// Histograms of the final counts of an order-k model: of n_c (per context) and of n_{c,s}
/// (per context and symbol, zeros included), as (value, how many) pairs, and the context count.
struct CountHistograms {
    contexts: u64,
    context_totals: Vec<(u64, u64)>,
    symbol_counts: Vec<(u64, u64)>,
    /// Symbols scored by the model (the first k are coded uniformly).
    scored: u64,
}

fn histograms(seq: &[u8], m: usize, k: usize) -> CountHistograms {
    use std::collections::BTreeMap;
    let codes = gram_codes(seq, m, k);
    let bits = (usize::BITS - (m - 1).leading_zeros()).max(1);
    let mut totals: BTreeMap<u64, u64> = BTreeMap::new();
    let mut symbols: BTreeMap<u64, u64> = BTreeMap::new();
    let mut contexts = 0u64;
    let mut i = 0;
    while i < codes.len() {
        let ctx = codes[i] >> bits;
        let mut per_symbol = vec![0u64; m];
        let mut n = 0;
        while i < codes.len() && codes[i] >> bits == ctx {
            per_symbol[(codes[i] & ((1 << bits) - 1)) as usize] += 1;
            n += 1;
            i += 1;
        }
        contexts += 1;
        *totals.entry(n).or_default() += 1;
        for c in per_symbol {
            *symbols.entry(c).or_default() += 1;
        }
    }
    CountHistograms {
        contexts,
        context_totals: totals.into_iter().collect(),
        symbol_counts: symbols.into_iter().collect(),
        scored: codes.len() as u64,
    }
}

/// ln Gamma(x) for x > 0 (Lanczos, g = 7, 9 terms; relative error ~1e-15).
pub fn ln_gamma(x: f64) -> f64 {
    const G: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut a = G[0];
    let t = x + 7.5;
    for (i, g) in G.iter().enumerate().skip(1) {
        a += g / (x + i as f64);
    }
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

impl CountHistograms {
    /// Log-likelihood (nats) of the sequence under the adaptive estimator with this alpha.
    fn log_likelihood(&self, m: usize, alpha: f64) -> f64 {
        let ma = m as f64 * alpha;
        let mut l = self.contexts as f64 * ln_gamma(ma);
        for &(n, c) in &self.context_totals {
            l -= c as f64 * ln_gamma(n as f64 + ma);
        }
        let lga = ln_gamma(alpha);
        for &(n, c) in &self.symbol_counts {
            if n > 0 {
                l += c as f64 * (ln_gamma(n as f64 + alpha) - lga);
            }
        }
        l
    }

    fn bits_per_symbol(&self, m: usize, alpha: f64, total: usize) -> f64 {
        let uniform = (total as u64 - self.scored) as f64 * (m as f64).log2();
        (uniform - self.log_likelihood(m, alpha) / std::f64::consts::LN_2) / total.max(1) as f64
    }
}

/// Exact bits per symbol of the adaptive order-k estimator with this alpha.
pub fn fcm_bits_per_symbol(seq: &[u8], m: usize, k: usize, alpha: f64) -> f64 {
    histograms(seq, m, k).bits_per_symbol(m, alpha, seq.len())
}

/// Dependence measures for lags 1..=max_lag. `seq` holds symbols 0..m-1. Kappa's significance is a
/// permutation test (99 shuffles of at most the first 200k symbols, seeded).
pub fn dependence_by_lag(seq: &[u8], m: usize, max_lag: usize) -> Vec<LagMeasures> {
    let max_lag = max_lag.min(seq.len().saturating_sub(1));
    let mut out = Vec::with_capacity(max_lag);
    if max_lag == 0 || m < 2 {
        return out;
    }
    let df_pair = ((m - 1) * (m - 1)) as f64;
    // Kappa under independence: its 95th percentile over shuffles (any lag; shuffling destroys all).
    let sample = &seq[..seq.len().min(200_000)];
    let mut rng = Rng::new(0x006b_6170_7061);
    let mut null: Vec<f64> = (0..99)
        .map(|_| {
            let mut s = sample.to_vec();
            for i in (1..s.len()).rev() {
                s.swap(i, rng.below(i as u64 + 1) as usize);
            }
            (1..=max_lag.min(s.len() - 1))
                .map(|h| v_and_kappa(&s, m, h).1)
                .fold(f64::MIN, f64::max)
        })
        .collect();
    null.sort_by(f64::total_cmp);
    let kappa_threshold = null[94] * (sample.len() as f64 / seq.len() as f64).sqrt();
    // Block entropies B(k) in bits, for pami(h) = 2B(h) - B(h-1) - B(h+1).
    let block_entropy = |k: usize| -> Option<f64> {
        if k == 0 {
            return Some(0.0);
        }
        let codes = gram_codes(seq, m, k - 1);
        if codes.is_empty() {
            return None;
        }
        let n = codes.len() as f64;
        let mut h = 0.0;
        let mut i = 0;
        while i < codes.len() {
            let j = i + codes[i..].partition_point(|&c| c == codes[i]);
            let p = (j - i) as f64 / n;
            h -= p * p.log2();
            i = j;
        }
        Some(h)
    };
    let mut blocks: Vec<Option<f64>> = (0..=max_lag + 1).map(block_entropy).collect();
    if blocks.len() < 2 {
        blocks.push(None);
    }
    for h in 1..=max_lag {
        let (v, kappa, chi) = v_and_kappa(seq, m, h);
        let pami = match (blocks[h - 1], blocks[h], blocks[h + 1]) {
            (Some(a), Some(b), Some(c)) => (2.0 * b - a - c).max(0.0),
            _ => 0.0,
        };
        let n = (seq.len() - h) as f64;
        let df = (m as f64).powi(h as i32 - 1) * df_pair;
        let g = 2.0 * n * std::f64::consts::LN_2 * pami;
        // The G-test's chi-squared approximation needs about 5 expected observations per cell of
        // the (h+1)-gram table; beyond that the plug-in pami is mostly estimation bias (it grows
        // with h on real DNA) and the test says "significant" for any sequence.
        let testable = n >= 5.0 * (m as f64).powi(h as i32 + 1);
        out.push(LagMeasures {
            lag: h,
            cramers_v: v,
            cramers_v_significant: chi > chi2_quantile_95(df_pair),
            cohens_kappa: kappa,
            cohens_kappa_significant: kappa > kappa_threshold,
            pami_bits: pami,
            pami_significant: testable && g > chi2_quantile_95(df),
        });
    }
    out
}

/// Step 1: k = the largest lag whose partial mutual information is significant (at least 1).
/// (How the paper combines its three measures is not verified; pami is the one that conditions on
/// the lags between, so it is the one that speaks to the order of a Markov chain.)
pub fn order_from_measures(measures: &[LagMeasures]) -> usize {
    measures
        .iter()
        .filter(|m| m.pami_significant)
        .map(|m| m.lag)
        .max()
        .unwrap_or(1)
}

/// Step 2: alpha maximising the likelihood at order k, by golden-section search on ln alpha in
/// [ln 1e-4, ln 16]. Returns (alpha, bits per symbol).
pub fn ml_alpha(seq: &[u8], m: usize, k: usize) -> (f64, f64) {
    let h = histograms(seq, m, k);
    let f = |ln_a: f64| -h.log_likelihood(m, ln_a.exp());
    let (mut a, mut b) = (1e-4f64.ln(), 16f64.ln());
    let r = (5f64.sqrt() - 1.0) / 2.0;
    let (mut c, mut d) = (b - r * (b - a), a + r * (b - a));
    let (mut fc, mut fd) = (f(c), f(d));
    for _ in 0..60 {
        if fc < fd {
            b = d;
            d = c;
            fd = fc;
            c = b - r * (b - a);
            fc = f(c);
        } else {
            a = c;
            c = d;
            fc = fd;
            d = a + r * (b - a);
            fd = f(d);
        }
    }
    let alpha = ((a + b) / 2.0).exp();
    (alpha, h.bits_per_symbol(m, alpha, seq.len()))
}

/// The alphas of the grid search.
pub const GRID_ALPHAS: [f64; 11] = [
    1.0 / 64.0,
    1.0 / 32.0,
    1.0 / 16.0,
    1.0 / 8.0,
    1.0 / 4.0,
    1.0 / 2.0,
    1.0,
    2.0,
    4.0,
    8.0,
    16.0,
];

/// Exhaustive search over k = 1..=max_order and [`GRID_ALPHAS`]: (k, alpha, bits per symbol).
pub fn grid_search(seq: &[u8], m: usize, max_order: usize) -> (usize, f64, f64) {
    let mut best = (1, 1.0, f64::INFINITY);
    for k in 1..=max_order {
        let h = histograms(seq, m, k);
        for &alpha in &GRID_ALPHAS {
            let bps = h.bits_per_symbol(m, alpha, seq.len());
            if bps < best.2 {
                best = (k, alpha, bps);
            }
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sequence from a random order-k Markov chain over 4 symbols with peaked transitions.
    fn simulated_fcm(k: usize, n: usize, seed: u64) -> Vec<u8> {
        let mut rng = Rng::new(seed);
        let contexts = 4usize.pow(k as u32);
        let probs: Vec<[f64; 4]> = (0..contexts)
            .map(|_| {
                let mut p = [0.0; 4];
                for x in &mut p {
                    *x = rng.uniform().powi(4);
                }
                let s: f64 = p.iter().sum();
                p.map(|x| x / s)
            })
            .collect();
        let mut seq = Vec::with_capacity(n);
        let mut ctx = 0usize;
        for _ in 0..n {
            let u = rng.uniform();
            let mut acc = 0.0;
            let mut s = 3;
            for (i, p) in probs[ctx].iter().enumerate() {
                acc += p;
                if u < acc {
                    s = i;
                    break;
                }
            }
            seq.push(s as u8);
            ctx = (ctx * 4 + s) % contexts;
        }
        seq
    }

    #[test]
    fn ln_gamma_matches_known_values() {
        assert!(ln_gamma(1.0).abs() < 1e-12);
        assert!((ln_gamma(5.0) - 24f64.ln()).abs() < 1e-12);
        assert!((ln_gamma(0.5) - std::f64::consts::PI.sqrt().ln()).abs() < 1e-12);
        assert!((ln_gamma(0.01) - 4.599_479_878_042_022).abs() < 1e-9);
    }

    #[test]
    fn closed_form_equals_the_sequential_code_length() {
        // "ACAAC" (0,1,0,0,1), order 1, alpha 1: first symbol 2 bits, then
        // A->C: (0+1)/(0+4); C->A: 1/4; A->A: (0+1)/(1+4); A->C: (1+1)/(2+4).
        let seq = [0u8, 1, 0, 0, 1];
        let bits = 2.0 - (0.25f64 * 0.25 * 0.2 * (2.0 / 6.0)).log2();
        assert!((fcm_bits_per_symbol(&seq, 4, 1, 1.0) - bits / 5.0).abs() < 1e-12);
    }

    #[test]
    fn measures_match_hand_computed_values() {
        // Alternating ABAB...: at lag 1 every pair disagrees (kappa = -1, V = 1); lag 2 agrees.
        let seq: Vec<u8> = (0..1000).map(|i| (i % 2) as u8).collect();
        let m = dependence_by_lag(&seq, 2, 2);
        assert!((m[0].cohens_kappa + 1.0).abs() < 1e-2);
        assert!((m[0].cramers_v - 1.0).abs() < 1e-2);
        assert!((m[1].cohens_kappa - 1.0).abs() < 1e-2);
        // Given X_{t-1}, X_{t-2} adds nothing.
        assert!(m[1].pami_bits < 1e-3, "{}", m[1].pami_bits);
        assert!((m[0].pami_bits - 1.0).abs() < 1e-2);
        assert!((chi2_quantile_95(9.0) - 16.919).abs() < 0.1);
    }

    #[test]
    fn uniform_noise_costs_two_bits_and_has_no_order() {
        let mut rng = Rng::new(2);
        let seq: Vec<u8> = (0..50_000).map(|_| rng.below(4) as u8).collect();
        let (alpha, bps) = ml_alpha(&seq, 4, 1);
        assert!((bps - 2.0).abs() < 0.01, "{bps} at alpha {alpha}");
        let measures = dependence_by_lag(&seq, 4, 4);
        assert!(measures.iter().filter(|m| m.pami_significant).count() <= 1);
    }

    #[test]
    fn two_step_finds_the_order_of_a_simulated_fcm_and_matches_the_grid() {
        let seq = simulated_fcm(3, 100_000, 9);
        let measures = dependence_by_lag(&seq, 4, 6);
        let k = order_from_measures(&measures);
        assert_eq!(k, 3, "{measures:?}");
        let (_, two_step) = ml_alpha(&seq, 4, k);
        let (gk, _, grid) = grid_search(&seq, 4, 6);
        assert_eq!(gk, 3);
        assert!(
            two_step <= grid + 0.01,
            "two-step {two_step} vs grid {grid}"
        );
    }
}
