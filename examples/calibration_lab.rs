//! Calibration measurements on a real model folder (docs/CALIBRATION.md): analyses the checkpoint
//! once, then allocates, writes and judges several variants from that one analysis: the
//! uncalibrated choice (relative weight error), the sensitivity-weighed one (measured on the
//! calibration text), the calibrated output error (activation statistics), and the output
//! layer's weight error weighted by hand.
//!
//! cargo run --release --example calibration_lab -- DIR CALIB_TEXT JUDGE_TEXT OUT_DIR BPW[,BPW..] [VARIANTS]
//!
//! VARIANTS (comma-separated): plain | sens | calib | rel:W | sum:W | search:N (the sensitivity-
//! weighed choice, then N generations of `pipeline::search` on the calibration text) | cols (the
//! sensitivity times each option's equivalent MSE, the scalar options on per-column steps).
//! LAB_NO_STATS=1 drops the activation statistics (the analysis without them).
//! (default: plain,sens)
use std::time::Instant;

use lowbit::backend::{self, Backend};
use lowbit::distortion::Distortion;
use lowbit::model::calibrate::{collect, CalibrationOptions};
use lowbit::model::eval::{compare, EvalOptions};
use lowbit::model::sensitivity::{measure, SensitivityOptions};
use lowbit::model::ModelFiles;
use lowbit::pipeline::search::SearchOptions;
use lowbit::{CompressOptions, NoProgress, Target};

fn main() -> lowbit::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = std::path::Path::new(&args[0]);
    let calib = std::fs::read_to_string(&args[1]).expect("calibration text");
    let judge = std::fs::read_to_string(&args[2]).expect("judging text");
    let out = std::path::Path::new(&args[3]);
    let bpws: Vec<f64> = args[4].split(',').map(|b| b.parse().unwrap()).collect();
    let variants: Vec<String> = args
        .get(5)
        .map(|s| s.split(',').map(str::to_string).collect())
        .unwrap_or_else(|| vec!["plain".into(), "sens".into()]);
    std::fs::create_dir_all(out).unwrap();
    let mut files = ModelFiles::new();
    for name in lowbit::model::files::MODEL_FILE_NAMES {
        if let Ok(b) = std::fs::read(dir.join(name)) {
            files.insert(name, b)?;
        }
    }
    let ckpt = std::fs::read(dir.join("model.safetensors")).unwrap();
    let t = Instant::now();
    let mut original = lowbit::api::load_model(&ckpt, "model.safetensors", &files)?;
    let sensitivity = measure(
        &mut original,
        &calib,
        &SensitivityOptions::default(),
        &args[1],
    )?;
    eprintln!(
        "sensitivity: {} matrices, {:.1} s",
        sensitivity.tensors.len(),
        t.elapsed().as_secs_f64()
    );
    let mut ranked: Vec<(&String, &f64)> = sensitivity.tensors.iter().collect();
    ranked.sort_by(|a, b| b.1.total_cmp(a.1));
    for (name, s) in ranked.iter().take(12) {
        eprintln!("  {s:12.4} {name}");
    }
    let t = Instant::now();
    // The activation statistics only matter to the variants that use them.
    let options = match variants
        .iter()
        .any(|v| v == "calib" || v == "cols" || v.contains("rel:") || v.contains("sum:"))
    {
        true => CalibrationOptions::default(),
        false => CalibrationOptions {
            tokens: 1,
            sentences: 1,
            ..CalibrationOptions::default()
        },
    };
    let mut stats = collect(&original, &calib, &options, &args[1])?;
    if std::env::var("LAB_NO_STATS").is_ok() {
        stats.tensors.clear();
    }
    eprintln!(
        "calibration: {} tokens, {} weights, {:.1} s",
        stats.tokens,
        stats.tensors.len(),
        t.elapsed().as_secs_f64()
    );
    let head = match &original {
        lowbit::model::Model::Decoder(_) => Some(if stats.tensors.contains_key("lm_head.weight") {
            "lm_head.weight"
        } else {
            "model.embed_tokens.weight"
        }),
        _ => None,
    };
    let mut opts = CompressOptions::new(Target::BitsPerWeight(bpws[0]));
    opts.backend = lowbit::BackendChoice::Cpu;
    opts.model_files = files.clone();
    opts.activations = Some(stats);
    let t = Instant::now();
    let analysed = backend::block_on(lowbit::pipeline::analyse_on(
        &Backend::Cpu,
        "cpu",
        &ckpt[..],
        "model.safetensors",
        &opts,
        &mut NoProgress,
    ))?;
    eprintln!("analysis: {:.1} s", t.elapsed().as_secs_f64());
    for &bpw in &bpws {
        for name in &variants {
            // plain | calib | sum:W (tied head: W * (output error + weight error)) | rel:W (no
            // calibration, the head's weight error times W)
            let (kind, w) = match name.split_once(':') {
                Some((k, w)) => (k, w.parse::<f64>().unwrap()),
                None => (name.as_str(), 1.0),
            };
            let mut a = analysed.clone();
            for (t, an) in a.checkpoint.tensors.iter().zip(a.analyses.iter_mut()) {
                let is_head = Some(t.name.as_str()) == head;
                for c in an.candidates.iter_mut() {
                    if kind == "cols" {
                        // The per-column grid's options (analysed with the statistics), each
                        // judged by its sensitivity times its equivalent MSE.
                        c.distortion = c.distortion.weighed(sensitivity.for_tensor(&t.name));
                        continue;
                    }
                    if kind == "sens" || kind == "search" {
                        c.distortion = Distortion::RelativeMse(c.distortion.relative_mse())
                            .weighed(sensitivity.for_tensor(&t.name));
                        continue;
                    }
                    if let Distortion::OutputError {
                        output_error,
                        relative_mse,
                        equivalent_mse,
                    } = c.distortion
                    {
                        c.distortion = match (kind, is_head) {
                            ("plain", _) => Distortion::RelativeMse(relative_mse),
                            ("rel", true) => Distortion::RelativeMse(w * relative_mse),
                            ("rel", false) => Distortion::RelativeMse(relative_mse),
                            ("sum", true) => Distortion::OutputError {
                                output_error: w * (output_error + relative_mse),
                                relative_mse,
                                equivalent_mse,
                            },
                            _ => c.distortion,
                        };
                    }
                }
            }
            let mut o = opts.clone();
            o.target = Target::BitsPerWeight(bpw);
            let mut a = a.clone();
            let mut plan = backend::block_on(lowbit::pipeline::settle(
                &Backend::Cpu,
                &mut a,
                &o,
                &ckpt[..],
                &mut NoProgress,
            ))?;
            if kind == "search" {
                let t = Instant::now();
                // SEARCH_TOKENS / SEARCH_SENTENCES: how much of the calibration text it reads.
                let mut so = SearchOptions::new(w as usize, calib.clone(), args[1].clone());
                let env = |k: &str| std::env::var(k).ok().and_then(|v| v.parse().ok());
                so.tokens = env("SEARCH_TOKENS").unwrap_or(so.tokens);
                so.sentences = env("SEARCH_SENTENCES").unwrap_or(so.sentences);
                o.search = Some(so);
                plan.search = backend::block_on(lowbit::pipeline::search::improve(
                    &Backend::Cpu,
                    &mut plan,
                    &o,
                    &ckpt[..],
                    &mut NoProgress,
                ))?;
                let s = plan.search.as_ref().expect("a search ran");
                eprintln!(
                    "search at {bpw} bpw: {:.1} s, {} of {} generations accepted, {} of {} tensors changed, curve {:?}",
                    t.elapsed().as_secs_f64(),
                    s.accepted,
                    s.generations,
                    s.changed,
                    s.tensors,
                    s.curve
                );
            }
            lowbit::pipeline::model::attach_files(&mut plan, &files)?;
            let path = out.join(format!("{name}-{bpw}.lowbit"));
            let mut bytes = Vec::new();
            backend::block_on(lowbit::api::write_plan_on(
                &Backend::Cpu,
                &a,
                &mut plan,
                &o,
                &ckpt[..],
                &mut NoProgress,
                &mut bytes,
            ))?;
            std::fs::write(&path, &bytes).unwrap();
            let heads: Vec<String> = plan
                .checkpoint
                .tensors
                .iter()
                .zip(&plan.manifest.tensors)
                .filter(|(t, _)| Some(t.name.as_str()) == head || t.name.contains("embed"))
                .map(|(t, r)| {
                    format!(
                        "{} {:.2} bpw",
                        t.name,
                        8.0 * r.coded_bytes as f64 / t.numel() as f64
                    )
                })
                .collect();
            let restored = lowbit::api::load_model(&bytes, "x.lowbit", &files)?;
            let d = compare(&original, &restored, &judge, &EvalOptions::default())?;
            println!(
                "{name} bpw={bpw} file_bpw={:.4} {d} | {}",
                8.0 * bytes.len() as f64 / plan.checkpoint.parameters() as f64,
                heads.join(", ")
            );
        }
    }
    Ok(())
}
