//! The `runtime` benchmark section: lowbit's model runtime against the project's independent
//! float64 numpy reference (benches/model_reference.py, benches/minilm_eval.py) on the real models,
//! and its speed.
//!
//! Rows:
//! - SmolLM2-135M: perplexity of the first 4096 tokens of fortunes.txt (windows of 256), lowbit
//!   vs the reference (equal within 1e-4 relative means the logits agree);
//! - SmolLM2-135M: tokens per second of `lowbit run` (greedy, 128 tokens, median of 3), natively
//!   on all cores;
//! - all-MiniLM-L6-v2 at 3 and 4 bpw: `lowbit eval`'s cosines vs benches/minilm_eval.py's on the
//!   same 256 sentences (target: within 0.002), and the seconds each takes to embed 2 x 256
//!   sentences.

use std::fs;
use std::path::Path;
use std::time::Instant;

use serde_json::{json, Map, Value};

use crate::bench::{last_json_line, python, row, status_row, Lowbit, Results};
use crate::setup::{self, Paths};

/// The first `n` lines of `text` the encoder evaluation takes (trimmed, 20 to 200 characters,
/// not "%"): the same rule as `lowbit eval` and benches/minilm_eval.py's candidates.
fn sentences(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| *l != "%" && (20..=200).contains(&l.chars().count()))
        .take(n)
        .collect();
    lines.join("\n") + "\n"
}

fn lowbit_json(bin: &Path, args: &[&str]) -> Result<(Value, f64), String> {
    let started = Instant::now();
    let ran = setup::run(std::process::Command::new(bin).arg("--json").args(args))?;
    let seconds = started.elapsed().as_secs_f64();
    let v = serde_json::from_str(ran.stdout.trim()).map_err(|e| {
        format!(
            "lowbit printed no JSON ({e}): {}",
            setup::tail(&ran.stdout, 3)
        )
    })?;
    Ok((v, seconds))
}

fn push(results: &mut Results, m: Map<String, Value>, outcome: Result<(), String>) {
    let r = outcome_row(m, outcome);
    Results::push(&mut results.runtime, &mut results.failures, r);
}

fn outcome_row(m: Map<String, Value>, outcome: Result<(), String>) -> Value {
    match outcome {
        Ok(()) => status_row(m, "ok".into()),
        Err(e) => status_row(m, format!("failed: {e}")),
    }
}

fn push_web(results: &mut Results, m: Map<String, Value>, outcome: Result<(), String>) {
    let r = outcome_row(m, outcome);
    Results::push(&mut results.runtime_web, &mut results.failures, r);
}

pub fn runtime(paths: &Paths, lowbit: &Lowbit, results: &mut Results) -> Result<(), String> {
    let Lowbit::Ready(bin) = lowbit else {
        return Ok(());
    };
    let fortunes = paths.data.join("text").join("fortunes.txt");
    let hf = paths.data.join("smollm2").join("hf");
    let work = paths.work();

    let mut m = row("SmolLM2-135M perplexity, lowbit runtime vs numpy reference");
    let outcome = (|| {
        if !hf.join("model.safetensors").is_file() {
            return Err(format!(
                "{} missing (benches/fetch_data.sh makes it)",
                hf.display()
            ));
        }
        let (v, s) = lowbit_json(
            bin,
            &[
                "eval",
                path(&hf),
                path(&hf),
                "--text",
                path(&fortunes),
                "--tokens",
                "4096",
                "--context",
                "256",
                "--backend",
                "cpu",
            ],
        )?;
        let started = Instant::now();
        let ran = setup::run(
            python(paths)
                .arg(paths.bench_script("model_reference.py"))
                .args(["eval-decoder", path(&hf)])
                .arg(hf.join("model.safetensors"))
                .args([
                    "--text",
                    path(&fortunes),
                    "--tokens",
                    "4096",
                    "--ctx",
                    "256",
                ]),
        )?;
        let reference_seconds = started.elapsed().as_secs_f64();
        let r: Value = serde_json::from_str(ran.stdout.trim()).map_err(|e| e.to_string())?;
        let (ours, theirs) = (v["perplexity_original"].as_f64(), r["ppl_orig"].as_f64());
        let (Some(ours), Some(theirs)) = (ours, theirs) else {
            return Err(format!("figures missing: {v} / {r}"));
        };
        m.insert("tokens".into(), v["scored"].clone());
        m.insert("perplexity".into(), json!(ours));
        m.insert("reference_perplexity".into(), json!(theirs));
        m.insert(
            "relative_difference".into(),
            json!((ours - theirs).abs() / theirs),
        );
        m.insert("seconds".into(), json!(s));
        m.insert("reference_seconds".into(), json!(reference_seconds));
        if (ours - theirs).abs() > 1e-4 * theirs {
            return Err(format!("perplexity {ours} vs reference {theirs}"));
        }
        Ok(())
    })();
    push(results, m, outcome);

    let mut m = row("SmolLM2-135M generation, lowbit run (greedy, 128 tokens)");
    let outcome = (|| {
        let mut rates = Vec::new();
        for _ in 0..3 {
            let (v, _) = lowbit_json(
                bin,
                &[
                    "run",
                    path(&hf),
                    "--prompt",
                    "The history of the printing press",
                    "--max-tokens",
                    "128",
                    // `run` takes a real GPU when there is one (auto); this row is the CPU's.
                    "--backend",
                    "cpu",
                ],
            )?;
            let tokens = v["tokens"].as_f64().unwrap_or(0.0);
            rates.push(tokens / v["seconds"].as_f64().unwrap_or(f64::INFINITY));
        }
        rates.sort_by(f64::total_cmp);
        m.insert("tokens_per_second".into(), json!(rates[1]));
        m.insert("runs".into(), json!(rates));
        m.insert("backend".into(), json!("CPU, all cores"));
        Ok(())
    })();
    push(results, m, outcome);

    let minilm = paths.minilm_dir();
    let text = fs::read_to_string(&fortunes).map_err(|e| format!("{}: {e}", fortunes.display()))?;
    let sentence_file = work.join("runtime-sentences.txt");
    fs::write(&sentence_file, sentences(&text, 256)).map_err(|e| e.to_string())?;
    for bpw in ["3", "4"] {
        let mut m = row(&format!(
            "all-MiniLM-L6-v2 at --bpw {bpw}: lowbit eval vs minilm_eval.py"
        ));
        let outcome = (|| {
            let packed = work.join(format!("runtime-minilm{bpw}.lowbit"));
            let restored_dir = work.join(format!("runtime-minilm{bpw}"));
            fs::create_dir_all(&restored_dir).map_err(|e| e.to_string())?;
            let restored = restored_dir.join("model.safetensors");
            let checkpoint = minilm.join("model.safetensors");
            for args in [
                vec![
                    "compress",
                    path(&checkpoint),
                    "-o",
                    path(&packed),
                    "--bpw",
                    bpw,
                    "--backend",
                    "cpu",
                ],
                vec![
                    "decompress",
                    path(&packed),
                    "-o",
                    path(&restored),
                    "--no-model-files",
                ],
            ] {
                setup::run(std::process::Command::new(bin).arg("--quiet").args(&args))?;
            }
            let (v, s) = lowbit_json(
                bin,
                &[
                    "eval",
                    path(&minilm),
                    path(&packed),
                    "--text",
                    path(&sentence_file),
                    "--backend",
                    "cpu",
                ],
            )?;
            let started = Instant::now();
            let ran = setup::run(
                python(paths)
                    .arg(paths.bench_script("minilm_eval.py"))
                    .arg(&minilm)
                    .arg(&restored)
                    .args(["--sentences", path(&sentence_file), "--n", "256"]),
            )?;
            let reference_seconds = started.elapsed().as_secs_f64();
            let line = ran
                .stdout
                .lines()
                .find(|l| l.contains("cos_mean="))
                .unwrap_or("");
            let figure = |key: &str| -> Option<f64> {
                line.split_whitespace()
                    .find_map(|p| p.strip_prefix(&format!("{key}=")))
                    .and_then(|x| x.parse().ok())
            };
            let (Some(cos), Some(cos_min)) = (figure("cos_mean"), figure("cos_min")) else {
                return Err(format!("minilm_eval.py printed no figures: {line}"));
            };
            m.insert("cos_mean".into(), v["cosine_mean"].clone());
            m.insert("cos_min".into(), v["cosine_min"].clone());
            m.insert("nn_agreement".into(), v["neighbour_agreement"].clone());
            m.insert("reference_cos_mean".into(), json!(cos));
            m.insert("reference_cos_min".into(), json!(cos_min));
            m.insert("seconds".into(), json!(s));
            m.insert("reference_seconds".into(), json!(reference_seconds));
            let ours = v["cosine_mean"].as_f64().unwrap_or(f64::NAN);
            if ours.is_nan() || (ours - cos).abs() > 0.002 {
                return Err(format!("cos_mean {ours} vs reference {cos}"));
            }
            Ok(())
        })();
        push(results, m, outcome);
    }
    Ok(())
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap_or_default()
}

/// The runtime rows as a table.
pub fn markdown(rows: &[Value]) -> String {
    let cell = |r: &Value, k: &str| match &r[k] {
        Value::Null => String::new(),
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or(0.0);
            if x.abs() >= 100.0 || x == x.trunc() {
                format!("{x:.1}")
            } else if x.abs() < 1e-3 && x != 0.0 {
                format!("{x:.2e}")
            } else {
                format!("{x:.5}")
            }
        }
        v => v
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| v.to_string()),
    };
    let mut out = String::from(
        "### Model runtime: lowbit's CPU forward pass vs the float64 numpy reference\n\n\
         | run | lowbit | reference | seconds (lowbit / reference) | status |\n|---|---|---|---|---|\n",
    );
    for r in rows {
        let (ours, theirs) = if r.get("perplexity").is_some() {
            (
                format!("ppl {}", cell(r, "perplexity")),
                format!("ppl {}", cell(r, "reference_perplexity")),
            )
        } else if r.get("tokens_per_second").is_some() {
            (
                format!("{} tokens/s", cell(r, "tokens_per_second")),
                String::new(),
            )
        } else {
            (
                format!(
                    "cos mean {} min {}",
                    cell(r, "cos_mean"),
                    cell(r, "cos_min")
                ),
                format!(
                    "cos mean {} min {}",
                    cell(r, "reference_cos_mean"),
                    cell(r, "reference_cos_min")
                ),
            )
        };
        out += &format!(
            "| {} | {} | {} | {} / {} | {} |\n",
            cell(r, "method"),
            ours,
            theirs,
            cell(r, "seconds"),
            cell(r, "reference_seconds"),
            cell(r, "status")
        );
    }
    out + "\n"
}

/// Medians of `runs` (sorted in place).
fn median_of(runs: &mut [f64]) -> f64 {
    runs.sort_by(f64::total_cmp);
    runs[runs.len() / 2]
}

/// The model runtime in the page beside the native CLI, in the same run and on the same files:
/// all-MiniLM-L6-v2 and SmolLM2-135M compressed to 4 bpw by the native CLI (`--no-sensitivity`:
/// the decoded weights are f32 whatever the allocation), then run by the CLI
/// (all cores, and one thread) and by the page in headless Chromium (the wasm CPU path on one
/// worker thread; the `.lowbit` opened by itself, its Try-it panel). MiniLM embeds 256 sentences
/// of fortunes.txt, SmolLM2 generates 128 tokens greedily; medians of 3 runs, the model loaded
/// once. The page's WebGPU runtime is not timed here: without a GPU it runs on SwiftShader, which
/// proves correctness (the browser tests), not speed.
pub fn runtime_web(paths: &Paths, lowbit: &Lowbit, results: &mut Results) -> Result<(), String> {
    let Lowbit::Ready(bin) = lowbit else {
        return Ok(());
    };
    let work = paths.work();
    let fortunes = paths.data.join("text").join("fortunes.txt");
    let text = fs::read_to_string(&fortunes).map_err(|e| format!("{}: {e}", fortunes.display()))?;
    let sentence_file = work.join("runtime-sentences.txt");
    fs::write(&sentence_file, sentences(&text, 256)).map_err(|e| e.to_string())?;
    let prompt = "The history of the printing press";

    let (port, tests, chromium) = crate::web::page_for_bench(&paths.root)?;

    let models = [
        ("all-MiniLM-L6-v2", paths.minilm_dir()),
        ("SmolLM2-135M", paths.data.join("smollm2").join("hf")),
    ];
    for (model, dir) in models {
        let packed = work.join(format!("runtime-web-{model}.lowbit"));
        let made = setup::run(
            std::process::Command::new(bin)
                .arg("--quiet")
                .arg("compress")
                .arg(dir.join("model.safetensors"))
                .arg("-o")
                .arg(&packed)
                // The runtime's speed depends on the model's shapes, not on the allocation:
                // the quicker allocation by weight error alone makes the files.
                .args(["--bpw", "4", "--backend", "cpu", "--no-sensitivity"]),
        );
        if let Err(e) = made {
            let m = row(&format!("{model} at 4 bpw: compress"));
            push_web(results, m, Err(e));
            continue;
        }
        let encoder = model.starts_with("all-MiniLM");
        for threads in ["all", "1"] {
            let mut m = row(&format!("{model} at 4 bpw, native CLI"));
            m.insert(
                "where".into(),
                json!(format!("native, {threads} thread(s)")),
            );
            let outcome = (|| {
                let mut runs = Vec::new();
                for _ in 0..3 {
                    // Without `--threads`: one per core.
                    let mut args = match threads {
                        "1" => vec!["--threads", "1"],
                        _ => Vec::new(),
                    };
                    if encoder {
                        // `eval` embeds every sentence with both models (here the same one).
                        args.extend(["eval", path(&packed), path(&packed), "--text"]);
                        args.extend([path(&sentence_file), "--backend", "cpu"]);
                        let (v, _) = lowbit_json(bin, &args)?;
                        runs.push(v["seconds"].as_f64().ok_or("eval printed no seconds")? / 2.0);
                    } else {
                        args.extend(["run", path(&packed), "--prompt", prompt]);
                        args.extend(["--max-tokens", "128", "--backend", "cpu"]);
                        let (v, _) = lowbit_json(bin, &args)?;
                        let tokens = v["tokens"].as_f64().unwrap_or(0.0);
                        runs.push(tokens / v["seconds"].as_f64().unwrap_or(f64::INFINITY));
                    }
                }
                record(&mut m, encoder, &mut runs);
                Ok(())
            })();
            push_web(results, m, outcome);
        }
        let mut m = row(&format!("{model} at 4 bpw, page"));
        m.insert("where".into(), json!("page, CPU (wasm, 1 worker)"));
        let outcome = (|| {
            let mut cmd = std::process::Command::new("node");
            cmd.current_dir(&tests)
                .arg("bench_tryit.mjs")
                .arg(format!("--url=http://127.0.0.1:{port}/"))
                .arg(format!("--file={}", packed.display()))
                .arg("--backend=cpu")
                .arg(format!("--sentences={}", sentence_file.display()))
                .arg(format!("--prompt={prompt}"))
                .args(["--tokens=128", "--repeat=3"])
                .arg(format!("--chromium={chromium}"));
            let ran = setup::run(&mut cmd)?;
            let got = last_json_line(&ran.stdout, "bench_tryit.mjs")?;
            let status = got["status"].as_str().unwrap_or("failed: no status");
            if status != "ok" {
                return Err(status.to_string());
            }
            let key = if encoder {
                "seconds"
            } else {
                "tokens_per_second"
            };
            let mut runs: Vec<f64> = got[key]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_f64).collect())
                .unwrap_or_default();
            if runs.is_empty() {
                return Err(format!("bench_tryit.mjs gave no {key}: {got}"));
            }
            record(&mut m, encoder, &mut runs);
            m.insert("load_seconds".into(), got["load_seconds"].clone());
            Ok(())
        })();
        push_web(results, m, outcome);
    }
    Ok(())
}

/// An encoder row's seconds per 256 sentences, or a decoder row's tokens per second: the median
/// and every run.
fn record(m: &mut Map<String, Value>, encoder: bool, runs: &mut [f64]) {
    let key = if encoder {
        "embed_seconds"
    } else {
        "tokens_per_second"
    };
    m.insert(key.into(), json!(median_of(runs)));
    m.insert("runs".into(), json!(runs));
}

/// The page-vs-native rows as a table.
pub fn markdown_web(rows: &[Value]) -> String {
    let num = |r: &Value, k: &str| r[k].as_f64().map(|x| format!("{x:.2}")).unwrap_or_default();
    let mut out = String::from(
        "### Model runtime in the page vs the native CLI (the same .lowbit files, 4 bpw)\n\n\
         | model | where | median | runs | load s (page) | status |\n|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let median = if r.get("embed_seconds").is_some() {
            format!("{} s for 256 sentences", num(r, "embed_seconds"))
        } else if r.get("tokens_per_second").is_some() {
            format!("{} tokens/s", num(r, "tokens_per_second"))
        } else {
            String::new()
        };
        let runs: Vec<String> = r["runs"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_f64)
                    .map(|x| format!("{x:.2}"))
                    .collect()
            })
            .unwrap_or_default();
        out += &format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            r["method"].as_str().unwrap_or(""),
            r["where"].as_str().unwrap_or(""),
            median,
            runs.join(", "),
            num(r, "load_seconds"),
            r["status"].as_str().unwrap_or("")
        );
    }
    out + "\n"
}
