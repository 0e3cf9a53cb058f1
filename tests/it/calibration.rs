//! Calibration (docs/CALIBRATION.md): with activation statistics a weight's options are judged by
//! the error they cause in its output, and the allocator's choice follows; without statistics for
//! a tensor nothing changes, byte for byte.

use lowbit::distortion::OutputWeights;
use lowbit::dtype::DType;
use lowbit::model::calibrate::ActivationStats;
use lowbit::rng::Rng;
use lowbit::{CompressOptions, NoProgress, Target};

use crate::common::{safetensors_file, tensors_of};

const ROWS: usize = 64;
const COLS: usize = 256;

/// Two weights: `p.weight`, whose first half of columns (inputs of energy 1) is large and whose
/// second half (inputs of energy 1000, a 1000x difference) is small, so that its relative weight
/// error hardly sees the second half and its output error mostly does; and `q.weight`, plain
/// Gaussian with inputs of energy 1 (its output error is its weight error).
fn weights() -> Vec<(&'static str, Vec<f32>, Vec<f32>)> {
    let mut rng = Rng::new(11);
    let p: Vec<f32> = (0..ROWS * COLS)
        .map(|i| match i % COLS < COLS / 2 {
            true => rng.normal() as f32,
            false => 0.03 * rng.normal() as f32,
        })
        .collect();
    let d_p = (0..COLS)
        .map(|c| if c < COLS / 2 { 1.0 } else { 1000.0 })
        .collect();
    let q = (0..ROWS * COLS).map(|_| rng.normal() as f32).collect();
    vec![("p.weight", p, d_p), ("q.weight", q, vec![1.0; COLS])]
}

fn compress(stats: Option<ActivationStats>, bpw: f64) -> (Vec<u8>, lowbit::Report) {
    let tensors: Vec<_> = weights()
        .into_iter()
        .map(|(name, w, _)| {
            let bytes: Vec<u8> = w.iter().flat_map(|v| v.to_le_bytes()).collect();
            (name, DType::F32, vec![ROWS, COLS], bytes)
        })
        .collect();
    let file = safetensors_file(&tensors);
    let mut opts = CompressOptions::new(Target::BitsPerWeight(bpw));
    opts.backend = lowbit::BackendChoice::Cpu;
    opts.activations = stats;
    let mut out = Vec::new();
    let report = lowbit::compress(&file[..], "t.safetensors", &opts, &mut NoProgress, &mut out)
        .expect("compresses");
    (out, report)
}

/// The output error of every weight of a `.lowbit` of [`weights`].
fn output_errors(packed: &[u8]) -> Vec<f64> {
    let mut out = Vec::new();
    lowbit::decompress(packed, "t.lowbit", &mut NoProgress, &mut out).expect("decompresses");
    let mut restored = tensors_of(&out);
    weights()
        .iter()
        .map(|(name, w, d)| {
            let (_, _, bytes) = restored.remove(*name).expect("the tensor");
            let r: Vec<f32> = bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                .collect();
            OutputWeights::new(w, d).relative_error(w, &r, DType::F32)
        })
        .collect()
}

fn stats(names: &[&str]) -> ActivationStats {
    ActivationStats {
        source: "test".into(),
        tokens: 1,
        tensors: weights()
            .into_iter()
            .filter(|(n, _, _)| names.contains(n))
            .map(|(n, _, d)| (n.to_string(), d))
            .collect(),
    }
}

#[test]
fn statistics_lower_the_output_error_at_the_same_budget() {
    for bpw in [2.0, 3.0] {
        let (plain, _) = compress(None, bpw);
        let (calibrated, report) = compress(Some(stats(&["p.weight", "q.weight"])), bpw);
        let budget = (bpw * (2 * ROWS * COLS) as f64 / 8.0) as usize;
        assert!(plain.len() <= budget && calibrated.len() <= budget);
        let (e_plain, e_calibrated) = (output_errors(&plain), output_errors(&calibrated));
        let sum = |e: &[f64]| e.iter().sum::<f64>();
        assert!(
            sum(&e_calibrated) < 0.95 * sum(&e_plain),
            "at {bpw} bpw: output errors {e_calibrated:?} calibrated vs {e_plain:?} plain"
        );
        let t = &report.tensors[0];
        assert_eq!(t.input_energy, Some(500.5));
        let reported = t.output_error.expect("the output error is reported");
        assert!((reported - e_calibrated[0]).abs() <= 1e-9 + 1e-6 * e_calibrated[0]);
        assert!(report.distortion_measure.contains("output error"));
        assert_eq!(report.calibration.as_ref().map(|c| c.weights), Some(2));
    }
}

#[test]
fn without_statistics_for_a_tensor_nothing_changes() {
    let (plain, report) = compress(None, 3.0);
    let (other, _) = compress(Some(stats(&[])), 3.0);
    assert_eq!(plain, other);
    assert!(report.calibration.is_none() && report.tensors[0].input_energy.is_none());
    let json = report.to_json();
    assert!(!json.contains("input_energy") && !json.contains("\"calibration\""));
}
