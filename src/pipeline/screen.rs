//! Screening: the expensive codecs (vq, hyper, turbo) tried on a sample of a matrix's rows first,
//! beside the scalar ladder on the same sample, and measured in full only when the sample does
//! not show them dominated. On all-MiniLM-L6-v2 and SmolLM2-135M the allocator almost never
//! chooses them (hyper once in 39 matrices of MiniLM at 3 bpw, none at 4), yet they took about
//! a third of the analysis: a k-means fit or a lattice search over the whole matrix, to learn
//! that the scalar grid beats it.
//!
//! An option is screened out when, on the sample, its distortion is more than [`MARGIN`] times
//! the scalar ladder's at the same rate (the ladder's points interpolated in rate and log
//! distortion). Rates are for the whole matrix: the sample's payload scaled by the rows left
//! out, the side information (codebooks, tables, headers) counted once, as the whole matrix
//! pays it. An option whose rate falls outside the ladder's range is measured in full (nothing
//! to compare with). `--exhaustive` measures every option in full.

use crate::codec::{CodecParams, Shape2};

/// One row in this many is in the sample.
const STRIDE: usize = 8;
/// Matrices with fewer rows are measured in full (cheap, and a sample of them says little).
const MIN_ROWS: usize = 256;
/// How much worse than the scalar ladder an option may look on the sample and still be measured
/// in full: a sample's estimate of the whole is not exact (a codebook fitted to fewer rows,
/// statistics of fewer values), so only a clear loss screens an option out.
pub const MARGIN: f64 = 1.25;

/// Whether `codec` is screened on a sample before it is measured in full.
pub fn screened(codec: &CodecParams) -> bool {
    matches!(
        codec,
        CodecParams::Vq(_) | CodecParams::Hyper(_) | CodecParams::Turbo(_)
    )
}

/// Every [`STRIDE`]-th row of a matrix (the first one included).
pub struct Sample {
    pub values: Vec<f32>,
    pub shape: Shape2,
    /// Elements of the whole matrix.
    full_len: usize,
}

impl Sample {
    /// The sample of `values` (a `shape` matrix), or `None` for a matrix too small to screen.
    pub fn of(values: &[f32], shape: Shape2) -> Option<Sample> {
        if shape.rows < MIN_ROWS || shape.cols == 0 {
            return None;
        }
        let values: Vec<f32> = values
            .chunks_exact(shape.cols)
            .step_by(STRIDE)
            .flatten()
            .copied()
            .collect();
        Some(Sample {
            shape: Shape2::new(values.len() / shape.cols, shape.cols),
            values,
            full_len: shape.len(),
        })
    }

    /// Bits per weight of the whole matrix for an option that codes the sample in
    /// `coded_bytes`, `side_bytes` of them side information.
    pub fn full_rate(&self, coded_bytes: u64, side_bytes: u64) -> f64 {
        let payload = coded_bytes.saturating_sub(side_bytes) as f64;
        let scale = self.full_len as f64 / self.values.len().max(1) as f64;
        8.0 * (payload * scale + side_bytes as f64) / self.full_len.max(1) as f64
    }
}

/// The scalar ladder on a sample: (whole-matrix bits per weight, distortion) points.
pub struct Screen {
    points: Vec<(f64, f64)>,
}

impl Screen {
    pub fn new(mut points: Vec<(f64, f64)>) -> Screen {
        points.retain(|&(r, d)| r.is_finite() && d.is_finite() && d > 0.0);
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        Screen { points }
    }

    /// Whether an option at (`rate`, `distortion`) on the sample is more than [`MARGIN`] times
    /// the ladder's distortion at that rate.
    pub fn dominates(&self, rate: f64, distortion: f64) -> bool {
        let Some(i) = self.points.iter().position(|&(r, _)| r >= rate) else {
            return false; // beyond the finest rung
        };
        if i == 0 || !distortion.is_finite() {
            return false; // below the coarsest rung (or nothing to judge)
        }
        let ((r0, d0), (r1, d1)) = (self.points[i - 1], self.points[i]);
        let t = if r1 > r0 {
            (rate - r0) / (r1 - r0)
        } else {
            1.0
        };
        let ladder = (d0.ln() + t * (d1.ln() - d0.ln())).exp();
        distortion > MARGIN * ladder
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_option_is_screened_out_only_when_clearly_above_the_ladder() {
        let s = Screen::new(vec![(1.0, 0.1), (2.0, 0.025), (3.0, 0.00625)]);
        // Between rungs the ladder is interpolated in log distortion: at 1.5 bits, 0.05.
        assert!(!s.dominates(1.5, 0.05 * MARGIN * 0.99));
        assert!(s.dominates(1.5, 0.05 * MARGIN * 1.01));
        // Outside the ladder's range nothing is screened out.
        assert!(!s.dominates(0.5, 1.0));
        assert!(!s.dominates(3.5, 1.0));
        assert!(!s.dominates(2.0, f64::NAN));
    }

    #[test]
    fn the_sample_is_every_eighth_row_and_rates_scale_to_the_whole() {
        let values: Vec<f32> = (0..300 * 4).map(|i| i as f32).collect();
        let s = Sample::of(&values, Shape2::new(300, 4)).expect("large enough");
        assert_eq!(s.shape, Shape2::new(38, 4));
        assert_eq!(
            &s.values[..8],
            &[0.0, 1.0, 2.0, 3.0, 32.0, 33.0, 34.0, 35.0]
        );
        // 100 bytes of payload for 152 of 1200 values, 10 of side information counted once.
        let rate = s.full_rate(110, 10);
        assert!((rate - 8.0 * (100.0 * 1200.0 / 152.0 + 10.0) / 1200.0).abs() < 1e-12);
        assert!(Sample::of(&values[..100 * 4], Shape2::new(100, 4)).is_none());
    }
}
