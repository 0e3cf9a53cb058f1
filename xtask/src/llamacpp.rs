//! The `llamacpp` benchmark section: llama.cpp's own quantizer (`llama-quantize`, with and without
//! an importance matrix from `llama-imatrix`) on SmolLM2-135M, judged by `lowbit eval` like
//! lowbit's files (benches/llamacpp_reference.py does the work; this section runs it and tabulates).
//!
//! llama.cpp is not built by the harness: `benches/build_llamacpp.sh target/llama.cpp
//! target/bench-venv/bin/python` builds its tools from the llama-cpp-python source package (minutes
//! on 2 cores). The section takes `$LLAMACPP_BIN`, or else the newest `target/llama.cpp/build-*/bin`
//! with `llama-quantize` and `llama-imatrix` in it; with neither, its row says `skipped` and why.
//! Only with `--only llamacpp`: about 22 quantizations, each judged on 4096 tokens (~1 h on 2 cores).

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::bench::{python, row, status_row, Lowbit, Results};
use crate::setup::{self, Paths};

/// The llama.cpp tool folder, or why there is none.
fn tool_dir(paths: &Paths) -> Result<PathBuf, String> {
    let has_tools =
        |d: &Path| d.join("llama-quantize").is_file() && d.join("llama-imatrix").is_file();
    if let Some(dir) = std::env::var_os("LLAMACPP_BIN") {
        let dir = PathBuf::from(dir);
        return if has_tools(&dir) {
            Ok(dir)
        } else {
            Err(format!(
                "LLAMACPP_BIN={} has no llama-quantize and llama-imatrix",
                dir.display()
            ))
        };
    }
    let base = paths.root.join("target").join("llama.cpp");
    let mut found: Vec<PathBuf> = fs::read_dir(&base)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
                .filter(|d| {
                    d.parent()
                        .and_then(Path::file_name)
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("build-"))
                        && has_tools(d)
                })
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found.pop().ok_or_else(|| {
        format!(
            "no llama.cpp build in {} (benches/build_llamacpp.sh target/llama.cpp \
             target/bench-venv/bin/python makes one) and LLAMACPP_BIN is not set",
            base.display()
        )
    })
}

pub fn llamacpp(paths: &Paths, lowbit: &Lowbit, results: &mut Results) -> Result<(), String> {
    let skip = |results: &mut Results, why: String| {
        let r = status_row(row("llama.cpp reference"), format!("skipped: {why}"));
        Results::push(&mut results.llamacpp, &mut results.failures, r);
    };
    let bin = match lowbit {
        Lowbit::Ready(bin) => bin,
        Lowbit::Missing(why) => {
            skip(results, why.clone());
            return Ok(());
        }
    };
    let tools = match tool_dir(paths) {
        Ok(dir) => dir,
        Err(why) => {
            skip(results, why);
            return Ok(());
        }
    };
    println!("  llama.cpp tools: {}", tools.display());
    let smollm2 = paths.data.join("smollm2");
    let gguf = smollm2.join("SmolLM2-135M-Instruct.Q4_1.gguf");
    let hf = smollm2.join("hf");
    let text = paths.data.join("text").join("fortunes.txt");
    for needed in [&gguf, &hf.join("model.safetensors"), &text] {
        if !needed.is_file() {
            skip(
                results,
                format!(
                    "{} missing (benches/fetch_data.sh makes it)",
                    needed.display()
                ),
            );
            return Ok(());
        }
    }
    let work = paths.work().join("llamacpp");
    let ran = setup::run(
        python(paths)
            .arg(paths.bench_script("llamacpp_reference.py"))
            .arg(&tools)
            .arg(&gguf)
            .arg(&hf)
            .arg(bin)
            .arg(&text)
            .arg(&work),
    );
    let lines = match ran {
        Ok(ran) => setup::json_lines(&ran.stdout),
        Err(e) => {
            let r = status_row(row("llama.cpp reference"), format!("failed: {e}"));
            Results::push(&mut results.llamacpp, &mut results.failures, r);
            return Ok(());
        }
    };
    for line in lines {
        if line.get("imatrix").is_some_and(Value::is_string) {
            let mut m = row("llama-imatrix");
            m.insert("command".into(), line["command"].clone());
            m.insert("calibration".into(), line["calibration"].clone());
            Results::push(
                &mut results.llamacpp,
                &mut results.failures,
                status_row(m, "ok".into()),
            );
            continue;
        }
        let mut name = format!("llama.cpp {}", line["type"].as_str().unwrap_or("?"));
        if line["pure"].as_bool() == Some(true) {
            name += " --pure";
        }
        if line["imatrix"].as_bool() == Some(true) {
            name += " + imatrix";
        }
        let mut m = row(&name);
        for key in [
            "bpw_file",
            "bpw_tensors",
            "file_bytes",
            "parameters",
            "perplexity",
            "perplexity_original",
            "mean_kl",
            "top1_agreement",
            "tensor_types",
            "token_embd_type",
            "command",
        ] {
            m.insert(key.into(), line[key].clone());
        }
        let ok = ["perplexity", "mean_kl", "top1_agreement"]
            .iter()
            .all(|k| line[*k].is_number());
        let status = if ok {
            "ok".to_string()
        } else {
            format!("failed: figures missing: {}", line["eval"])
        };
        Results::push(
            &mut results.llamacpp,
            &mut results.failures,
            status_row(m, status),
        );
    }
    Ok(())
}

/// The rows as a table.
pub fn markdown(rows: &[Value]) -> String {
    let num = |r: &Value, k: &str, digits: usize| {
        r[k].as_f64()
            .map(|x| format!("{x:.digits$}"))
            .unwrap_or_default()
    };
    let mut out = String::from(
        "### llama.cpp's quantizer on SmolLM2-135M, judged by `lowbit eval` (first 4096 tokens of \
         fortunes.txt)\n\n\
         | quantization | bpw (whole file) | bpw (tensor data) | perplexity | mean KL | top-1 | status |\n\
         |---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        if r["method"].as_str() == Some("llama-imatrix") {
            out += &format!(
                "| imatrix: `{}` | | | | | | {} |\n",
                r["command"].as_str().unwrap_or(""),
                r["status"].as_str().unwrap_or("")
            );
            continue;
        }
        out += &format!(
            "| {} | {} | {} | {} | {} | {} | {} |\n",
            r["method"].as_str().unwrap_or(""),
            num(r, "bpw_file", 3),
            num(r, "bpw_tensors", 3),
            num(r, "perplexity", 2),
            num(r, "mean_kl", 4),
            num(r, "top1_agreement", 3),
            r["status"].as_str().unwrap_or("")
        );
    }
    out + "\n"
}
