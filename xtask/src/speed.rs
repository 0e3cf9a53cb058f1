//! The `speed` benchmark section: how long lowbit takes to compress real models, beside the build
//! of an earlier commit measured in the same run on the same machine.
//!
//! Rows:
//! - all-MiniLM-L6-v2, `compress --bpw 4 --backend cpu --no-sensitivity` (the allocation the
//!   reference commit made, so the two files can be compared byte for byte): the current build and
//!   the reference build, runs interleaved, the median wall time of each, their ratio, the peak
//!   resident memory, and the embedding cosine of each file's restored model
//!   (benches/minilm_eval.py);
//! - SmolLM2-135M (f16), `--bpw 4 --backend cpu`, with and without the measured sensitivity: the
//!   current build only (the reference build takes over 20 minutes on this model), one run each.
//!
//! Wall times and peak memory come from `/usr/bin/time` (GNU time, `%e %M`).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Map, Value};

use crate::bench::{row, status_row, Lowbit, Results};
use crate::setup::{self, Paths};

/// The commit the speed issue measures against (its analysis encoded every option of every tensor
/// on one core per tensor).
pub const REFERENCE_COMMIT: &str = "92802f0";

/// Builds lowbit at [`REFERENCE_COMMIT`] once (a git worktree under target/bench), or finds it built.
fn reference_binary(paths: &Paths) -> Result<PathBuf, String> {
    let root = paths.work().join(format!("ref-{REFERENCE_COMMIT}"));
    let target = root.join("target");
    let binary = target.join("release").join("lowbit");
    if binary.is_file() {
        return Ok(binary);
    }
    let source = root.join("src-tree");
    if !source.join("Cargo.toml").is_file() {
        setup::run(Command::new("git").args([
            "worktree",
            "add",
            "--force",
            "--detach",
            path(&source),
            REFERENCE_COMMIT,
        ]))?;
    }
    setup::run_visible(
        Command::new("cargo")
            .args(["build", "--release", "--bin", "lowbit"])
            .current_dir(&source)
            .env("CARGO_TARGET_DIR", &target),
    )?;
    binary
        .is_file()
        .then_some(binary.clone())
        .ok_or_else(|| format!("{} was not built", binary.display()))
}

fn path(p: &Path) -> &str {
    p.to_str().expect("bench paths are UTF-8")
}

/// Runs `bin args` under GNU time: (wall seconds, peak resident KiB).
fn timed(bin: &Path, args: &[&str]) -> Result<(f64, u64), String> {
    let ran = setup::run(
        Command::new("/usr/bin/time")
            .args(["-f", "TIME %e %M"])
            .arg(bin)
            .args(args),
    )?;
    let line = ran
        .stderr
        .lines()
        .rev()
        .find(|l| l.starts_with("TIME "))
        .ok_or("/usr/bin/time printed no figures")?;
    let mut f = line.split_whitespace().skip(1);
    let seconds = f.next().and_then(|s| s.parse().ok()).ok_or("no seconds")?;
    let kib = f.next().and_then(|s| s.parse().ok()).ok_or("no memory")?;
    Ok((seconds, kib))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn push(results: &mut Results, m: Map<String, Value>, outcome: Result<(), String>) {
    let r = match outcome {
        Ok(()) => status_row(m, "ok".into()),
        Err(e) => status_row(m, format!("failed: {e}")),
    };
    Results::push(&mut results.speed, &mut results.failures, r);
}

pub fn speed(
    paths: &Paths,
    repeat: usize,
    lowbit: &Lowbit,
    results: &mut Results,
) -> Result<(), String> {
    let Lowbit::Ready(bin) = lowbit else {
        return Ok(());
    };
    if !Path::new("/usr/bin/time").is_file() {
        let m = row("speed");
        push(
            results,
            m,
            Err("/usr/bin/time (GNU time) is missing".into()),
        );
        return Ok(());
    }
    minilm(paths, repeat, bin, results);
    smollm2(paths, bin, results);
    Ok(())
}

fn minilm(paths: &Paths, repeat: usize, bin: &Path, results: &mut Results) {
    let mut m = row("all-MiniLM-L6-v2 --bpw 4: this build vs the reference commit");
    let outcome = (|| {
        let reference = reference_binary(paths)?;
        let model = paths.minilm_dir().join("model.safetensors");
        let work = paths.work();
        let out = |who: &str| work.join(format!("speed-minilm-{who}.lowbit"));
        // The reference commit had no sensitivity measurement (nor its flag); this build is
        // asked to leave it out too.
        let args = |o: &Path, ours: bool| -> Vec<String> {
            let mut a = [
                "compress",
                path(&model),
                "-o",
                path(o),
                "--bpw",
                "4",
                "--backend",
                "cpu",
                "--quiet",
            ]
            .map(String::from)
            .to_vec();
            if ours {
                a.push("--no-sensitivity".into());
            }
            a
        };
        let (mut ours, mut theirs, mut peak) = (Vec::new(), Vec::new(), (0u64, 0u64));
        for _ in 0..repeat {
            for (who, b) in [("ours", bin), ("reference", reference.as_path())] {
                let a = args(&out(who), who == "ours");
                let a: Vec<&str> = a.iter().map(String::as_str).collect();
                let (s, kib) = timed(b, &a)?;
                if who == "ours" {
                    ours.push(s);
                    peak.0 = peak.0.max(kib);
                } else {
                    theirs.push(s);
                    peak.1 = peak.1.max(kib);
                }
            }
        }
        let (a, b) = (
            std::fs::read(out("ours")).map_err(|e| e.to_string())?,
            std::fs::read(out("reference")).map_err(|e| e.to_string())?,
        );
        let (seconds, reference_seconds) = (median(ours.clone()), median(theirs.clone()));
        m.insert("reference_commit".into(), json!(REFERENCE_COMMIT));
        m.insert("runs".into(), json!(repeat));
        m.insert("seconds".into(), json!(seconds));
        m.insert("reference_seconds".into(), json!(reference_seconds));
        m.insert("all_seconds".into(), json!(ours));
        m.insert("all_reference_seconds".into(), json!(theirs));
        m.insert("speedup".into(), json!(reference_seconds / seconds));
        m.insert("peak_mib".into(), json!(peak.0 / 1024));
        m.insert("reference_peak_mib".into(), json!(peak.1 / 1024));
        m.insert("bytes".into(), json!(a.len()));
        m.insert("reference_bytes".into(), json!(b.len()));
        m.insert("identical".into(), json!(a == b));
        // The model's quality from each file, restored by its own build and judged by
        // benches/minilm_eval.py (this build's file also holds the model's config and tokenizer,
        // outside the budget, so the two files are not expected to be equal byte for byte).
        for (who, b) in [("ours", bin), ("reference", reference.as_path())] {
            let restored = work.join(format!("speed-minilm-{who}.safetensors"));
            let packed = out(who);
            let mut args = vec![
                "decompress",
                path(&packed),
                "-o",
                path(&restored),
                "--quiet",
            ];
            if who == "ours" {
                args.push("--no-model-files");
            }
            setup::run(Command::new(b).args(&args))?;
            let mut figures = Map::new();
            crate::bench::evaluate(paths, &restored, &mut figures)?;
            let key = if who == "ours" {
                "cos_mean"
            } else {
                "reference_cos_mean"
            };
            m.insert(key.into(), figures["cos_mean"].clone());
        }
        Ok(())
    })();
    push(results, m, outcome);
}

fn smollm2(paths: &Paths, bin: &Path, results: &mut Results) {
    let hf = paths.data.join("smollm2").join("hf");
    for sensitivity in [false, true] {
        let label = if sensitivity {
            "SmolLM2-135M --bpw 4 (sensitivity measured, the default)"
        } else {
            "SmolLM2-135M --bpw 4 --no-sensitivity"
        };
        let mut m = row(label);
        let outcome = (|| {
            if !hf.join("model.safetensors").is_file() {
                return Err(format!("{} missing", hf.display()));
            }
            let out = paths.work().join("speed-smollm2.lowbit");
            let mut args = vec![
                "compress",
                path(&hf),
                "-o",
                path(&out),
                "--bpw",
                "4",
                "--backend",
                "cpu",
                "--quiet",
            ];
            if !sensitivity {
                args.push("--no-sensitivity");
            }
            let (s, kib) = timed(bin, &args)?;
            m.insert("runs".into(), json!(1));
            m.insert("seconds".into(), json!(s));
            m.insert("peak_mib".into(), json!(kib / 1024));
            let bytes = std::fs::metadata(&out).map_err(|e| e.to_string())?.len();
            m.insert("bytes".into(), json!(bytes));
            Ok(())
        })();
        push(results, m, outcome);
    }
}

/// The section's table.
pub fn markdown(rows: &[Value]) -> String {
    let num = |r: &Value, k: &str| r[k].as_f64().map(|x| format!("{x:.1}")).unwrap_or_default();
    let mut out = String::from(
        "### Speed: compressing real models (CPU backend, all cores)\n\n\
         | run | seconds (median) | peak MiB | reference seconds | reference peak MiB | speed-up | cos mean / reference | status |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let speedup = r["speedup"]
            .as_f64()
            .map(|x| format!("{x:.2}x"))
            .unwrap_or_default();
        out += &format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
            r["method"].as_str().unwrap_or(""),
            num(r, "seconds"),
            r["peak_mib"]
                .as_u64()
                .map(|x| x.to_string())
                .unwrap_or_default(),
            num(r, "reference_seconds"),
            r["reference_peak_mib"]
                .as_u64()
                .map(|x| x.to_string())
                .unwrap_or_default(),
            speedup,
            match (r["cos_mean"].as_f64(), r["reference_cos_mean"].as_f64()) {
                (Some(a), Some(b)) => format!("{a:.5} / {b:.5}"),
                _ => String::new(),
            },
            r["status"].as_str().unwrap_or(""),
        );
    }
    out + "\n"
}
