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

// Sensitivity (model::sensitivity): each weight matrix's output change per unit of relative MSE,
// measured by running the model; the allocator then minimises the predicted output change.

mod sensitivity {
    use std::path::{Path, PathBuf};

    use lowbit::api::load_model;
    use lowbit::model::eval::{self, Downstream, EvalOptions, BUILTIN_TEXT};
    use lowbit::model::sensitivity::{measure, OutputChange, Sensitivity, SensitivityOptions};
    use lowbit::model::Model;
    use lowbit::rng::Rng;
    use lowbit::{CompressOptions, NoProgress, Target};

    pub(super) fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/models")
            .join(name)
    }

    pub(super) fn checkpoint(name: &str) -> Vec<u8> {
        std::fs::read(fixture(name).join("model.safetensors")).unwrap()
    }

    pub(super) fn load(name: &str) -> Model {
        let files = crate::model::model_files(&fixture(name));
        load_model(&checkpoint(name), "model.safetensors", &files).unwrap()
    }

    pub(super) fn sensitivity_of(name: &str) -> Sensitivity {
        measure(
            &mut load(name),
            BUILTIN_TEXT,
            &SensitivityOptions::default(),
            "built-in text",
        )
        .unwrap()
    }

    /// Adds Gaussian noise of relative MSE `delta` to the matrices of `model` named in `names`.
    fn perturb(model: &mut Model, names: &[&str], delta: f64) {
        let Model::Decoder(m) = model else {
            panic!("a decoder")
        };
        for (_, lin) in m.matrices_mut() {
            if !names.contains(&lin.name.as_str()) {
                continue;
            }
            let mut rng = Rng::new(5);
            let norm: f64 = lin.weight.iter().map(|&v| (v as f64).powi(2)).sum();
            let sigma = (delta * norm / lin.weight.len() as f64).sqrt();
            lin.weight
                .iter_mut()
                .for_each(|w| *w += (sigma * rng.normal()) as f32);
        }
    }

    fn kl(a: &Model, b: &Model) -> f64 {
        match eval::compare(a, b, BUILTIN_TEXT, &EvalOptions::default()).unwrap() {
            Downstream::Decoder(d) => d.kl_mean,
            Downstream::Encoder(_) => panic!("a decoder"),
        }
    }

    #[test]
    fn every_matrix_is_measured_and_the_model_is_put_back_exactly() {
        for name in ["tiny-llama", "tiny-llama-tied", "tiny-bert"] {
            let mut model = load(name);
            let options = SensitivityOptions::default();
            let s = measure(&mut model, BUILTIN_TEXT, &options, "t").unwrap();
            // 2 layers of 7 matrices and the embedding (and lm_head when not tied); BERT: the
            // three embeddings and 6 per layer.
            let expected = match name {
                "tiny-llama" => 16,
                "tiny-llama-tied" => 15,
                _ => 3 + 6 * 2,
            };
            assert_eq!(s.tensors.len(), expected, "{name}");
            assert!(s.tensors.values().all(|v| v.is_finite() && *v >= 0.0));
            assert!(s.tensors.values().any(|v| *v > 0.0));
            assert_eq!(
                s.measure,
                match name {
                    "tiny-bert" => OutputChange::OneMinusCosine,
                    _ => OutputChange::KlDivergence,
                }
            );
            // Deterministic, and the weights were restored bit for bit: measuring the changed
            // model again gives the same figures, and it computes what a fresh load does.
            let again = measure(&mut model, BUILTIN_TEXT, &options, "t").unwrap();
            assert_eq!(s, again, "{name}");
            if name != "tiny-bert" {
                assert_eq!(kl(&model, &load(name)), 0.0, "{name}");
            }
            // A tensor the model does not multiply takes the largest sensitivity.
            assert_eq!(s.for_tensor("model.norm.weight"), s.largest());
        }
    }

    #[test]
    fn the_sum_of_sensitivities_predicts_the_output_change() {
        // Two matrices perturbed together: the change is close to the sum of what each one's
        // sensitivity predicts (first order: changes quadratic in the error, errors independent).
        let s = sensitivity_of("tiny-llama-tied");
        let names = [
            "model.layers.0.mlp.down_proj.weight",
            "model.layers.1.self_attn.v_proj.weight",
        ];
        let delta = 0.005;
        let predicted: f64 = names.iter().map(|n| s.tensors[*n] * delta).sum();
        let original = load("tiny-llama-tied");
        let mut perturbed = load("tiny-llama-tied");
        perturb(&mut perturbed, &names, delta);
        let measured = kl(&original, &perturbed);
        assert!(
            measured > 0.0 && (predicted / measured - 1.0).abs() < 0.5,
            "predicted {predicted:.3e}, measured {measured:.3e}"
        );
        // The embedding, also the output layer here, matters more than a middle matrix.
        assert!(s.tensors["model.embed_tokens.weight"] > s.tensors[names[1]]);
    }

    fn compress(
        name: &str,
        sensitivity: Option<Sensitivity>,
        bpw: f64,
    ) -> (Vec<u8>, lowbit::Report) {
        let mut opts = CompressOptions::new(Target::BitsPerWeight(bpw));
        opts.backend = lowbit::BackendChoice::Cpu;
        opts.sensitivity = sensitivity;
        compress_with(name, &opts)
    }

    /// The `.lowbit` of fixture model `name` with `opts`, and its report.
    pub(super) fn compress_with(name: &str, opts: &CompressOptions) -> (Vec<u8>, lowbit::Report) {
        let mut out = Vec::new();
        let report = lowbit::compress(
            &checkpoint(name)[..],
            "model.safetensors",
            opts,
            &mut NoProgress,
            &mut out,
        )
        .expect("compresses");
        (out, report)
    }

    #[test]
    fn weighing_by_sensitivity_lowers_the_output_change_at_the_same_budget() {
        let name = "tiny-llama-tied";
        let files = crate::model::model_files(&fixture(name));
        let original = load(name);
        let s = sensitivity_of(name);
        // Not lower: this model's smallest file is 3.65 bpw (its exact tensors and header), and
        // at 4 bpw the rest is coded so coarsely (KL ~2) that the first-order prediction fails
        // (measured: 2.48 weighed vs 1.96 plain; 1.30 vs 2.20 at 5 bpw, 0.038 vs 0.151 at 8).
        for bpw in [5.0, 6.0, 8.0] {
            let (plain, _) = compress(name, None, bpw);
            let (weighed, report) = compress(name, Some(s.clone()), bpw);
            let budget = (bpw * report.input.parameters as f64 / 8.0) as usize;
            assert!(plain.len() <= budget && weighed.len() <= budget);
            let run = |bytes: &[u8]| load_model(bytes, "x.lowbit", &files).unwrap();
            let (kl_plain, kl_weighed) =
                (kl(&original, &run(&plain)), kl(&original, &run(&weighed)));
            assert!(
                kl_weighed < 0.8 * kl_plain,
                "at {bpw} bpw: KL {kl_weighed:.4} weighed vs {kl_plain:.4} plain"
            );
            // The report says what was minimised and predicts the change (an estimate).
            let summary = report
                .sensitivity
                .as_ref()
                .expect("the sensitivity summary");
            assert_eq!(summary.measure, "KL");
            assert!(report.distortion_measure.contains("sensitivity"));
            let per_tensor: f64 = report
                .tensors
                .iter()
                .filter_map(|t| t.predicted_change)
                .sum();
            assert!((summary.predicted_change - per_tensor).abs() <= 1e-12 * per_tensor.max(1.0));
            assert!(summary.predicted_change > 0.0);
        }
    }

    #[test]
    fn without_sensitivity_nothing_changes() {
        let name = "tiny-llama-tied";
        let (plain, report) = compress(name, None, 4.5);
        let json = report.to_json();
        assert!(!json.contains("predicted_change") && !json.contains("\"sensitivity\""));
        // Every tensor equally sensitive (a power of two, so every product is exact): the same
        // choices, byte for byte, as weighing by relative error alone.
        let mut uniform = sensitivity_of(name);
        uniform.tensors.values_mut().for_each(|v| *v = 2.0);
        let (weighed, _) = compress(name, Some(uniform), 4.5);
        assert_eq!(plain, weighed);
    }
}

// Search (pipeline::search): after the allocation, an evolutionary search over the tensors'
// options at the same size, judged by running the compressed model.

mod search {
    use lowbit::api::load_model;
    use lowbit::model::eval::{self, Downstream, EvalOptions, BUILTIN_TEXT};
    use lowbit::model::sensitivity::OutputChange;
    use lowbit::pipeline::search::SearchOptions;
    use lowbit::{CompressOptions, NoProgress, Target};

    use super::sensitivity::{checkpoint, compress_with, fixture, load, sensitivity_of};

    /// The calibration text: the built-in one, or for the encoder its sentences that fit it.
    fn text(name: &str) -> String {
        match name {
            "tiny-bert" => std::fs::read_to_string(fixture(name).join("sentences.txt")).unwrap(),
            _ => BUILTIN_TEXT.to_string(),
        }
    }

    fn compress(name: &str, bpw: f64, generations: usize) -> (Vec<u8>, lowbit::Report) {
        let mut opts = CompressOptions::new(Target::BitsPerWeight(bpw));
        opts.backend = lowbit::BackendChoice::Cpu;
        opts.sensitivity = Some(sensitivity_of(name));
        opts.model_files = crate::model::model_files(&fixture(name));
        opts.search = Some(SearchOptions::new(generations, text(name), "t".into()));
        compress_with(name, &opts)
    }

    /// What the search's fitness is, measured on a written file by `lowbit eval`'s code: the
    /// mean KL over the first 256 tokens of the text in one window, or the mean 1 - cosine.
    fn judged(name: &str, file: &[u8]) -> f64 {
        let files = crate::model::model_files(&fixture(name));
        let restored = load_model(file, "x.lowbit", &files).unwrap();
        let options = EvalOptions {
            tokens: 256,
            context: 256,
            sentences: 32,
        };
        match eval::compare(&load(name), &restored, &text(name), &options).unwrap() {
            Downstream::Decoder(d) => d.kl_mean,
            Downstream::Encoder(e) => 1.0 - e.cosine_mean,
        }
    }

    #[test]
    fn the_search_judges_the_model_the_file_restores_within_the_budget() {
        for (name, bpw) in [("tiny-llama-tied", 5.0), ("tiny-bert", 6.0)] {
            let generations = 6;
            let (plain, _) = compress(name, bpw, 0);
            let (searched, report) = compress(name, bpw, generations);
            // The model files are stored outside the budget.
            let budget = (bpw * report.input.parameters as f64 / 8.0) as u64;
            let weights = report.output.bytes - report.output.model_files_bytes;
            assert!(weights <= budget, "{name}: {weights} > {budget}");
            let s = report.search.as_ref().expect("the search's summary");
            assert_eq!(s.generations, generations);
            assert_eq!(s.curve.len(), generations + 1);
            assert!(
                s.curve.windows(2).all(|w| w[1] <= w[0]),
                "{name}: {:?}",
                s.curve
            );
            assert!(s.tensors > 0);
            assert_eq!(
                s.measure,
                match name {
                    "tiny-bert" => OutputChange::OneMinusCosine,
                    _ => OutputChange::KlDivergence,
                }
            );
            // The fitness is that of the very model the file restores: the curve starts at the
            // allocator's file and ends at the written one.
            let (before, after) = (judged(name, &plain), judged(name, &searched));
            let near = |a: f64, b: f64| (a - b).abs() <= 1e-9 * a.abs().max(1e-12);
            assert!(
                near(s.curve[0], before),
                "{name}: {} vs {before}",
                s.curve[0]
            );
            assert!(
                near(*s.curve.last().unwrap(), after),
                "{name}: {:?} vs {after}",
                s.curve
            );
            assert!(after <= before);
            // Deterministic: the same options give the same bytes.
            assert_eq!(compress(name, bpw, generations).0, searched, "{name}");
            assert!(report.to_json().contains("\"search\""));
        }
    }

    #[test]
    fn the_cli_searches_and_reports_the_curve() {
        let out = tempfile::tempdir().unwrap();
        let model = fixture("tiny-llama");
        let run = |extra: &[&str]| {
            let mut args = vec!["compress", model.to_str().unwrap(), "-o", "m.lowbit"];
            args.extend(["--bpw", "5", "--backend", "cpu", "--report", "r"]);
            args.extend(extra);
            crate::common::lowbit(&args, out.path())
        };
        let o = run(&["--search", "2", "--search-tokens", "64"]);
        assert!(o.status.success(), "{}", crate::common::stderr(&o));
        let report: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.path().join("r/report.json")).unwrap())
                .unwrap();
        assert_eq!(report["search"]["generations"], 2);
        assert_eq!(report["search"]["units"], 64);
        assert_eq!(report["search"]["curve"].as_array().unwrap().len(), 3);
        let html = std::fs::read_to_string(out.path().join("r/report.html")).unwrap();
        assert!(html.contains("Search: mean KL divergence"));
        // Too little text to judge on is refused before anything is written.
        std::fs::remove_file(out.path().join("m.lowbit")).unwrap();
        let o = run(&["--search", "2", "--search-tokens", "1"]);
        assert!(!o.status.success());
        assert!(crate::common::stderr(&o).contains("--search-tokens"));
        assert!(!out.path().join("m.lowbit").exists());
    }

    #[test]
    fn the_search_needs_the_model_files() {
        let mut opts = CompressOptions::new(Target::BitsPerWeight(5.0));
        opts.backend = lowbit::BackendChoice::Cpu;
        opts.search = Some(SearchOptions::new(2, BUILTIN_TEXT.into(), "t".into()));
        let e = lowbit::compress(
            &checkpoint("tiny-llama")[..],
            "model.safetensors",
            &opts,
            &mut NoProgress,
            &mut Vec::new(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("config.json"), "{e}");
    }
}

// Importance matrices from llama.cpp (`--imatrix`) and statistics collected over `--calibrate`'s
// text: the per-column scalar grid, chosen by output error.

mod imatrix {
    use super::sensitivity::fixture;
    use crate::common::{lowbit, stderr};

    /// llama.cpp's name of a Llama checkpoint weight (`None`: not a linear layer it measures).
    fn gguf_name(name: &str) -> Option<String> {
        let rest = name.strip_prefix("model.layers.")?;
        let (layer, kind) = rest.split_once('.')?;
        let kind = match kind {
            "self_attn.q_proj.weight" => "attn_q",
            "self_attn.k_proj.weight" => "attn_k",
            "self_attn.v_proj.weight" => "attn_v",
            "self_attn.o_proj.weight" => "attn_output",
            "mlp.gate_proj.weight" => "ffn_gate",
            "mlp.up_proj.weight" => "ffn_up",
            "mlp.down_proj.weight" => "ffn_down",
            _ => return None,
        };
        Some(format!("blk.{layer}.{kind}.weight"))
    }

    /// A legacy `.dat` importance matrix for tiny-llama: input channels alternately 1 and 300
    /// in energy (`cols_off` columns more than each weight has, to make it wrong).
    fn dat_for_tiny_llama(cols_off: usize) -> (Vec<u8>, usize) {
        let ckpt = std::fs::read(fixture("tiny-llama").join("model.safetensors")).unwrap();
        let (c, _) = lowbit::checkpoint::Checkpoint::load(&ckpt[..], "model.safetensors").unwrap();
        let mut entries = Vec::new();
        for t in &c.tensors {
            if let Some(name) = gguf_name(&t.name) {
                let cols = t.shape[1] + cols_off;
                let values: Vec<f32> = (0..cols).map(|j| [1.0, 300.0][j % 2]).collect();
                entries.push((name, values));
            }
        }
        let mut b = (entries.len() as i32).to_le_bytes().to_vec();
        for (name, values) in &entries {
            b.extend((name.len() as i32).to_le_bytes());
            b.extend(name.as_bytes());
            b.extend(1i32.to_le_bytes());
            b.extend((values.len() as i32).to_le_bytes());
            values.iter().for_each(|v| b.extend(v.to_le_bytes()));
        }
        (b, entries.len())
    }

    fn compress(dir: &std::path::Path, extra: &[&str]) -> std::process::Output {
        let model = fixture("tiny-llama");
        let mut args = vec!["compress", model.to_str().unwrap(), "-o", "m.lowbit"];
        args.extend(["--bpw", "4", "--backend", "cpu", "--report", "r"]);
        args.extend(extra);
        lowbit(&args, dir)
    }

    fn report(dir: &std::path::Path) -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(dir.join("r/report.json")).unwrap()).unwrap()
    }

    #[test]
    fn an_imatrix_steps_each_input_channel_by_its_energy() {
        let out = tempfile::tempdir().unwrap();
        let (dat, weights) = dat_for_tiny_llama(0);
        std::fs::write(out.path().join("i.dat"), &dat).unwrap();
        let o = compress(out.path(), &["--imatrix", "i.dat"]);
        assert!(o.status.success(), "{}", stderr(&o));
        let r = report(out.path());
        assert_eq!(r["calibration"]["source"], "i.dat");
        // Every linear weight has statistics; the smallest ones are stored exactly (not analysed).
        let with_stats: Vec<&str> = r["tensors"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| !t["input_energy"].is_null())
            .map(|t| t["name"].as_str().unwrap())
            .collect();
        assert_eq!(r["calibration"]["weights"], with_stats.len());
        assert!(with_stats.len() >= weights / 2 && with_stats.len() <= weights);
        assert!(
            with_stats.iter().all(|n| gguf_name(n).is_some()),
            "{with_stats:?}"
        );
        assert!(r["distortion_measure"]
            .as_str()
            .unwrap()
            .contains("output error"));
        let chosen: Vec<&str> = r["tensors"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|t| t["label"].as_str())
            .collect();
        assert!(chosen.iter().any(|c| c.contains("cols")), "{chosen:?}");
        // The file restores without the importance matrix, and the same run gives the same bytes.
        let first = std::fs::read(out.path().join("m.lowbit")).unwrap();
        let o = lowbit(
            &["decompress", "m.lowbit", "-o", "back.safetensors"],
            out.path(),
        );
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(compress(out.path(), &["--imatrix", "i.dat"])
            .status
            .success());
        assert_eq!(std::fs::read(out.path().join("m.lowbit")).unwrap(), first);
    }

    #[test]
    fn a_wrong_or_damaged_imatrix_is_a_named_error_and_writes_nothing() {
        let out = tempfile::tempdir().unwrap();
        let (wrong, _) = dat_for_tiny_llama(3);
        std::fs::write(out.path().join("wrong.dat"), &wrong).unwrap();
        let o = compress(out.path(), &["--imatrix", "wrong.dat"]);
        let e = stderr(&o);
        assert!(!o.status.success());
        assert!(
            e.contains("wrong.dat") && e.contains("blk.0.") && e.contains("columns"),
            "{e}"
        );
        let (good, _) = dat_for_tiny_llama(0);
        std::fs::write(out.path().join("cut.dat"), &good[..good.len() / 2]).unwrap();
        let o = compress(out.path(), &["--imatrix", "cut.dat"]);
        assert!(!o.status.success());
        assert!(stderr(&o).contains("cut.dat"), "{}", stderr(&o));
        std::fs::write(out.path().join("text.dat"), b"not an imatrix at all").unwrap();
        assert!(!compress(out.path(), &["--imatrix", "text.dat"])
            .status
            .success());
        assert!(!out.path().join("m.lowbit").exists());
    }

    #[test]
    fn a_calibration_text_gives_statistics_too() {
        let out = tempfile::tempdir().unwrap();
        let text = lowbit::model::eval::BUILTIN_TEXT.repeat(2);
        std::fs::write(out.path().join("t.txt"), text).unwrap();
        let o = compress(out.path(), &["--calibrate", "t.txt"]);
        assert!(o.status.success(), "{}", stderr(&o));
        let r = report(out.path());
        assert_eq!(r["calibration"]["source"], "t.txt");
        assert!(r["calibration"]["tokens"].as_u64().unwrap() > 100);
        assert!(r["distortion_measure"]
            .as_str()
            .unwrap()
            .contains("sensitivity x output error"));
        // Without --calibrate (the built-in paragraph): no statistics.
        assert!(compress(out.path(), &[]).status.success());
        assert!(report(out.path())["calibration"].is_null());
    }
}
