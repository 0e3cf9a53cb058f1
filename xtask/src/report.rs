//! Renders the benchmark results (the JSON document of `bench.rs`) as markdown tables, lowbit rows
//! beside the reference rows with the comparison the targets are stated in (BENCHMARKS.md, Targets).
//!
//! Pure formatting: no figure is computed here except ratios and differences of measured figures.

use serde_json::Value;

/// Downstream targets on MiniLM (BENCHMARKS.md, Targets): each gguf reference's mean cosine at 1.5
/// fewer bits per weight (whole file). (reference it derives from, minimum mean cosine, maximum bits per weight).
const RATE_TARGETS: &[(&str, f64, f64)] = &[
    ("Q8_0", 0.9998, 7.0),
    ("Q5_0", 0.9895, 4.0),
    ("Q4_0", 0.9615, 3.0),
];

fn num(row: &Value, key: &str) -> Option<f64> {
    row.get(key).and_then(Value::as_f64)
}

fn text(row: &Value, key: &str) -> String {
    match row.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(v) => v.to_string(),
    }
}

fn fixed(v: Option<f64>, decimals: usize) -> String {
    v.map(|x| format!("{x:.decimals$}")).unwrap_or_default()
}

fn sci(v: Option<f64>) -> String {
    v.map(|x| format!("{x:.2e}")).unwrap_or_default()
}

/// Seconds with 3 significant figures or so: 0.0123, 0.456, 12.3, 123.
fn secs(v: Option<f64>) -> String {
    match v {
        Some(x) if x < 1.0 => format!("{x:.3}"),
        Some(x) if x < 100.0 => format!("{x:.2}"),
        Some(x) => format!("{x:.0}"),
        None => String::new(),
    }
}

fn is_ok(row: &Value) -> bool {
    row.get("status").and_then(Value::as_str) == Some("ok")
}

fn is_lowbit(row: &Value) -> bool {
    row.get("kind").and_then(Value::as_str) == Some("lowbit")
}

/// Status cell: "ok", or the reason shortened to one table cell.
fn status(row: &Value) -> String {
    let s = text(row, "status").replace('|', "/").replace('\n', " ");
    if s.chars().count() > 160 {
        let cut: String = s.chars().take(157).collect();
        format!("{cut}...")
    } else {
        s
    }
}

fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut out = format!("| {} |\n", headers.join(" | "));
    out += &format!("|{}\n", "---|".repeat(headers.len()));
    for r in rows {
        out += &format!("| {} |\n", r.join(" | "));
    }
    out
}

/// One line per finished row on the terminal while the run goes on.
pub fn print_row(row: &Value) {
    let mut parts = vec![text(row, "method")];
    for key in [
        "input",
        "bits_per_weight",
        "rel_mse",
        "cos_mean",
        "cos_min",
        "nn_agreement",
        "ratio",
        "power_iters",
        "seconds",
        "rel_error",
        "mse",
        "compress_seconds",
        "decompress_seconds",
        "bits_per_vector_whole_file",
        "recall_at_10",
        "mse_per_dimension",
        "gap_bits_per_dimension",
    ] {
        if let Some(v) = row.get(key) {
            parts.push(format!("{key}={v}"));
        }
    }
    parts.push(format!("[{}]", text(row, "status")));
    println!("  -> {}", parts.join(" "));
}

pub fn markdown(doc: &Value) -> String {
    let machine = &doc["machine"];
    let python = &doc["python"];
    let mut out = String::new();
    out += &format!(
        "## Run of {} (commit {}{})\n\n",
        text(machine, "date"),
        text(machine, "git_commit")
            .chars()
            .take(12)
            .collect::<String>(),
        if machine["git_dirty"].as_bool() == Some(true) {
            ", with uncommitted changes"
        } else {
            ""
        }
    );
    out += &format!(
        "Machine: {} ({} logical CPUs), {:.1} GiB memory, {}; {}.  \n",
        text(machine, "cpu_model"),
        text(machine, "nproc"),
        num(machine, "memory_gib").unwrap_or(f64::NAN),
        text(machine, "os"),
        text(machine, "rustc"),
    );
    let packages = python["packages"]
        .as_object()
        .map(|p| {
            p.iter()
                .map(|(k, v)| format!("{k} {}", v.as_str().unwrap_or("-")))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default();
    if !python.is_null() {
        out += &format!(
            "Python {}: {}; numpy BLAS: {}; OPENBLAS_CORETYPE={}.  \n",
            text(python, "python"),
            packages,
            blas(python),
            text(python, "OPENBLAS_CORETYPE"),
        );
    }
    out += &format!("Options: {}.\n\n", doc["options"]);

    let rd = doc["rate_distortion"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if !rd.is_empty() {
        out += &rate_distortion(&rd);
    }
    let ll = doc["lossless"].as_array().cloned().unwrap_or_default();
    if !ll.is_empty() {
        out += &lossless(&ll);
    }
    let k = doc["kernels"].as_array().cloned().unwrap_or_default();
    if !k.is_empty() {
        out += &kernels(&k);
    }
    let v = doc["vectors"].as_array().cloned().unwrap_or_default();
    if !v.is_empty() {
        out += &vectors(&v);
    }
    let sq = doc["sequences"].as_array().cloned().unwrap_or_default();
    if !sq.is_empty() {
        out += &sequences(&sq);
    }
    let w = doc["web"].as_array().cloned().unwrap_or_default();
    if !w.is_empty() {
        out += &web(&w);
    }
    let rt = doc["runtime"].as_array().cloned().unwrap_or_default();
    if !rt.is_empty() {
        out += &crate::runtime::markdown(&rt);
    }
    let rw = doc["runtime_web"].as_array().cloned().unwrap_or_default();
    if !rw.is_empty() {
        out += &crate::runtime::markdown_web(&rw);
    }
    let sp = doc["speed"].as_array().cloned().unwrap_or_default();
    if !sp.is_empty() {
        out += &crate::speed::markdown(&sp);
    }
    let lc = doc["llamacpp"].as_array().cloned().unwrap_or_default();
    if !lc.is_empty() {
        out += &crate::llamacpp::markdown(&lc);
    }
    out
}

/// MiniLM at 4 bpw in the page vs the native CLI; ratio against the native CLI on one thread.
fn web(rows: &[Value]) -> String {
    let native = rows
        .iter()
        .find(|r| is_ok(r) && text(r, "method").starts_with("native CLI, 1 thread"))
        .and_then(|r| num(r, "seconds"));
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let ratio = match (num(r, "seconds"), native) {
                (Some(s), Some(n)) if is_ok(r) => format!("{:.2}x", s / n),
                _ => String::new(),
            };
            vec![
                text(r, "method"),
                text(r, "adapter"),
                text(r, "threads"),
                secs(num(r, "measure_seconds")),
                secs(num(r, "encode_seconds")),
                secs(num(r, "seconds")),
                ratio,
                text(r, "bytes"),
                fixed(num(r, "bits_per_weight"), 4),
                sci(num(r, "rel_mse")),
                status(r),
            ]
        })
        .collect();
    format!(
        "### Web: all-MiniLM-L6-v2 at --bpw 4, page vs native CLI\n\n\
         The page's seconds run from dropping the file to \"done\" (measure + encode), without the \
         browser's start-up; the native CLI's include reading the file and writing the output. \
         Target (issue 4): wasm CPU <= 2.5x the native CLI on one thread. WebGPU in headless \
         Chromium without a GPU is SwiftShader: emulation on the CPU, not a GPU figure.\n\n{}\n",
        table(
            &[
                "run",
                "adapter",
                "threads",
                "measure s",
                "encode s",
                "total s",
                "vs native 1 thread",
                "file bytes",
                "bits/weight",
                "rel. MSE (2-D)",
                "status",
            ],
            &body
        )
    )
}

fn vectors(all: &[Value]) -> String {
    let is_gaussian = |r: &&Value| r.get("kind").and_then(Value::as_str) == Some("gaussian");
    let gaussian: Vec<&Value> = all.iter().filter(is_gaussian).collect();
    let rows: Vec<&Value> = all.iter().filter(|r| !is_gaussian(r)).collect();
    // faiss's recall at each code length, for the lowbit rows of the same target.
    let faiss_at = |bits: f64| {
        rows.iter()
            .filter(|r| !is_lowbit(r) && is_ok(r))
            .find(|r| num(r, "code_bits_per_vector") == Some(bits))
            .and_then(|r| num(r, "recall_at_10"))
    };
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let versus = match (
                num(r, "target_bits_per_vector").and_then(faiss_at),
                num(r, "recall_at_10").filter(|_| is_ok(r)),
            ) {
                (Some(faiss), Some(own)) => format!("{:+.4}", own - faiss),
                _ => String::new(),
            };
            vec![
                text(r, "method"),
                fixed(
                    num(r, "bits_per_vector_whole_file").or_else(|| num(r, "code_bits_per_vector")),
                    1,
                ),
                fixed(num(r, "bits_per_vector_with_codebook"), 1),
                fixed(num(r, "recall_at_10"), 4),
                sci(num(r, "mse_per_dimension")),
                secs(num(r, "compress_seconds").or_else(|| num(r, "seconds"))),
                versus,
                status(r),
            ]
        })
        .collect();
    let mut out = String::from("### Vectors: MiniLM word embeddings (29522 x 384), recall@10\n\n");
    out += &table(
        &[
            "method",
            "bits/vector (lowbit: whole file; faiss: codes)",
            "faiss incl. f32 codebooks",
            "recall@10",
            "MSE/dim",
            "seconds",
            "recall vs faiss PQ at the same bits",
            "status",
        ],
        &cells,
    );
    out += "\n1000 rows held out (seeded) as queries, exact; truth = their 10 nearest base rows; recall@10 = \
            the fraction of them among the 10 nearest decoded base rows. faiss: ProductQuantizer, nbits 8, \
            m = bits/8; lowbit: `compress base.npy --bpw bits/384 --method M`, everything in the file counted.\n\n";
    if !gaussian.is_empty() {
        let cells: Vec<Vec<String>> = gaussian
            .iter()
            .map(|r| {
                vec![
                    text(r, "method"),
                    fixed(num(r, "bits_per_dimension_whole_file"), 4),
                    sci(num(r, "mse_per_dimension")),
                    fixed(num(r, "rd_bits_per_dimension"), 4),
                    fixed(num(r, "gap_bits_per_dimension"), 4),
                    status(r),
                ]
            })
            .collect();
        out += "### Vectors: Gaussian data with a known covariance against R(D)\n\n";
        out += &table(
            &[
                "method",
                "bits/dim (whole file)",
                "MSE/dim",
                "Gaussian R(D) bits/dim",
                "gap (target <= 0.3)",
                "status",
            ],
            &cells,
        );
        out += "\n40000 rows, 16 dimensions, covariance eigenvalues 0.8^i in a random basis \
                (`benches/vectors_reference.py gaussian`); R(D) by reverse water-filling on the true \
                eigenvalues at the MSE reached.\n\n";
    }
    out
}

fn blas(python: &Value) -> String {
    match &python["blas"] {
        Value::Array(libs) => libs
            .iter()
            .map(|l| {
                format!(
                    "{} {} ({} threads, {})",
                    text(l, "internal_api"),
                    text(l, "version"),
                    text(l, "num_threads"),
                    text(l, "architecture")
                )
            })
            .collect::<Vec<_>>()
            .join(", "),
        other => other.to_string(),
    }
}

fn rate_distortion(rows: &[Value]) -> String {
    let references: Vec<&Value> = rows.iter().filter(|r| !is_lowbit(r) && is_ok(r)).collect();
    let mut cells = Vec::new();
    for r in rows {
        let versus = if is_lowbit(r) && is_ok(r) {
            versus_reference(r, &references)
        } else {
            String::new()
        };
        cells.push(vec![
            text(r, "method"),
            match num(r, "bits_per_weight_tensors") {
                Some(all) => format!(
                    "{} ({all:.3} all tensors)",
                    fixed(num(r, "bits_per_weight"), 3)
                ),
                None => fixed(num(r, "bits_per_weight"), 3),
            },
            sci(num(r, "rel_mse")),
            fixed(num(r, "cos_mean"), 5),
            fixed(num(r, "cos_min"), 5),
            fixed(num(r, "nn_agreement"), 3),
            secs(num(r, "compress_seconds").or(num(r, "quantize_seconds"))),
            secs(num(r, "decompress_seconds").or(num(r, "dequantize_seconds"))),
            versus,
            status(r),
        ]);
    }
    let mut out = String::from("### Rate-distortion: all-MiniLM-L6-v2\n\n");
    out += &table(
        &[
            "method",
            "bits/weight",
            "rel. MSE (2-D)",
            "cos mean",
            "cos min",
            "NN kept",
            "compress s",
            "decompress s",
            "vs reference",
            "status",
        ],
        &cells,
    );
    out += "\nbits/weight: lowbit = 8 x whole .lowbit file / parameters; gguf = bits per block / weights \
            per block as llama.cpp stores them, and in brackets over all tensors (1-D tensors kept as stored, \
            file header not counted); the comparisons use the block figure, which favours the reference. \
            gguf times are its numpy port, not llama.cpp's C code. vs reference: the best reference whose \
            mean cosine lowbit matches or beats, and the difference in bits per weight.\n\n";

    let lowbit_ok: Vec<&Value> = rows.iter().filter(|r| is_lowbit(r) && is_ok(r)).collect();
    let mut target_cells = Vec::new();
    for &(reference, min_cos, max_bpw) in RATE_TARGETS {
        let best = lowbit_ok
            .iter()
            .filter(|r| num(r, "bits_per_weight").is_some_and(|b| b <= max_bpw))
            .filter_map(|r| num(r, "cos_mean").map(|c| (c, *r)))
            .max_by(|a, b| a.0.total_cmp(&b.0));
        let (row_name, bpw, cos, met) = match best {
            Some((c, r)) => (
                text(r, "method"),
                fixed(num(r, "bits_per_weight"), 3),
                format!("{c:.5}"),
                if c >= min_cos { "yes" } else { "no" }.to_string(),
            ),
            None => (
                "no lowbit row at this rate".into(),
                String::new(),
                String::new(),
                "not measured".into(),
            ),
        };
        target_cells.push(vec![
            format!("cos mean >= {min_cos} at <= {max_bpw} bpw ({reference} - 1.5 bits)"),
            row_name,
            bpw,
            cos,
            met,
        ]);
    }
    out += &table(
        &[
            "target (BENCHMARKS.md, Targets 1)",
            "best lowbit row at that rate",
            "bits/weight",
            "cos mean",
            "met",
        ],
        &target_cells,
    );
    out += "\n";
    out
}

/// "reaches gguf Q5_0 quality at -1.50 bpw": the best reference (highest mean cosine) whose
/// quality this row reaches, and how many bits per weight fewer lowbit spends for it.
fn versus_reference(row: &Value, references: &[&Value]) -> String {
    let (Some(cos), Some(bpw)) = (num(row, "cos_mean"), num(row, "bits_per_weight")) else {
        return String::new();
    };
    let matched = references
        .iter()
        .filter(|r| num(r, "cos_mean").is_some_and(|c| c <= cos))
        .filter_map(|r| num(r, "bits_per_weight").map(|b| (b, *r)))
        .max_by(|a, b| {
            let cos = |v: &Value| num(v, "cos_mean").unwrap_or(f64::NEG_INFINITY);
            cos(a.1).total_cmp(&cos(b.1))
        });
    match matched {
        Some((ref_bpw, r)) => format!(
            "reaches {} quality at {:+.2} bpw",
            text(r, "method"),
            bpw - ref_bpw
        ),
        None if references.is_empty() => String::new(),
        None => "below every reference's quality".into(),
    }
}

fn lossless(rows: &[Value]) -> String {
    let mut cells = Vec::new();
    for r in rows {
        let zipnn = rows.iter().find(|z| {
            text(z, "method") == "zipnn" && text(z, "input") == text(r, "input") && is_ok(z)
        });
        let versus = match (is_lowbit(r) && is_ok(r), zipnn) {
            (true, Some(z)) => match (
                num(r, "ratio"),
                num(z, "ratio"),
                num(r, "compress_seconds"),
                num(z, "compress_seconds"),
                num(r, "decompress_seconds"),
                num(z, "decompress_seconds"),
            ) {
                (Some(a), Some(b), Some(ca), Some(cb), Some(da), Some(db)) => format!(
                    "ratio x{:.3}, compress time x{:.2}, decompress time x{:.2}",
                    a / b,
                    ca / cb,
                    da / db
                ),
                _ => String::new(),
            },
            _ => String::new(),
        };
        cells.push(vec![
            text(r, "method"),
            text(r, "input"),
            text(r, "input_bytes"),
            text(r, "compressed_bytes"),
            fixed(num(r, "ratio"), 3),
            secs(num(r, "compress_seconds")),
            secs(num(r, "decompress_seconds")),
            text(r, "round_trip"),
            versus,
            status(r),
        ]);
    }
    let mut out =
        String::from("### Lossless: all-MiniLM-L6-v2 (fp32 file, and the same cast to bf16)\n\n");
    out += &table(
        &[
            "method",
            "input",
            "bytes in",
            "bytes out",
            "ratio",
            "compress s",
            "decompress s",
            "round trip",
            "vs zipnn",
            "status",
        ],
        &cells,
    );
    out += "\nratio = input file bytes / compressed bytes (whole files). Times: wall clock, median of the \
            repetitions; lowbit's include process start and file I/O, the references' are in-memory. \
            round trip: output identical to the input (sha256 for lowbit, bytes for the references).\n\n";
    out
}

fn kernels(rows: &[Value]) -> String {
    let mut cells = Vec::new();
    for r in rows {
        let error = num(r, "rel_error")
            .map(|e| format!("rel. error {e:.4}"))
            .or_else(|| num(r, "mse").map(|e| format!("MSE {e:.5}")))
            .unwrap_or_default();
        let versus = if is_lowbit(r) && is_ok(r) {
            kernel_versus(r, rows)
        } else {
            String::new()
        };
        cells.push(vec![
            text(r, "job"),
            text(r, "impl"),
            text(r, "power_iters"),
            secs(num(r, "seconds")),
            error,
            versus,
            status(r),
        ]);
    }
    let mut out = String::from("### Kernels (CPU)\n\n");
    out += &table(
        &[
            "job",
            "impl",
            "power iters",
            "seconds",
            "error",
            "time vs reference",
            "status",
        ],
        &cells,
    );
    out += "\nsvd: rank 128 of a 768 x 3072 f32 matrix (rows scaled by 0.97^i), 10 oversamples, rel. Frobenius \
            error; reference scikit-learn randomized_svd at the same power iterations. kmeans: 100k x 8 f32, \
            k = 256, 20 iterations, all points; reference faiss-cpu Kmeans. Both read the same input file, \
            written by the Rust example. Seconds as each program reports them (median or best, see its source).\n\n";
    out
}

/// Time ratio against the reference of the same job (sklearn at equal power iterations; faiss).
fn kernel_versus(row: &Value, rows: &[Value]) -> String {
    let job = text(row, "job");
    let reference_impl = match job.as_str() {
        "svd" => "sklearn",
        "kmeans" => "faiss",
        _ => return String::new(),
    };
    let iters = row.get("power_iters");
    let reference = rows.iter().find(|r| {
        text(r, "job") == job
            && text(r, "impl") == reference_impl
            && (job != "svd" || r.get("power_iters").or_else(|| r.get("n_iter")) == iters)
    });
    match (reference, num(row, "seconds")) {
        (Some(r), Some(s)) => match num(r, "seconds") {
            Some(rs) if rs > 0.0 => format!("x{:.2} of {reference_impl}", s / rs),
            _ => String::new(),
        },
        _ => format!("no {reference_impl} row"),
    }
}

/// Sequences: bits per symbol (ACGT base for FASTA, byte for text) of the whole compressed file,
/// speed, and lowbit's (k, alpha) selection study.
fn sequences(rows: &[Value]) -> String {
    let mut cells = Vec::new();
    for r in rows {
        cells.push(vec![
            text(r, "input"),
            text(r, "method"),
            text(r, "compressed_bytes"),
            format!(
                "{} / {}",
                fixed(num(r, "bits_per_symbol"), 4),
                text(r, "symbol")
            ),
            fixed(num(r, "bits_per_byte"), 4),
            secs(num(r, "compress_seconds")),
            fixed(num(r, "compress_mb_per_s"), 3),
            secs(num(r, "decompress_seconds")),
            text(r, "status"),
        ]);
    }
    let mut out = "### Sequences (lossless; whole file restored byte-exact)\n\n".to_string();
    out += &table(
        &[
            "input",
            "method",
            "bytes",
            "bits per symbol",
            "bits per input byte",
            "compress",
            "MB/s",
            "decompress",
            "status",
        ],
        &cells,
    );
    let mut sel = Vec::new();
    for r in rows {
        let s = &r["selection"];
        if s.is_null() {
            continue;
        }
        for way in ["two_step", "grid"] {
            let c = &s[way];
            sel.push(vec![
                text(r, "input"),
                way.replace('_', "-"),
                text(c, "order"),
                fixed(num(c, "alpha"), 4),
                fixed(num(c, "bits_per_symbol"), 4),
                secs(num(c, "seconds")),
                text(s, "symbols"),
            ]);
        }
    }
    if !sel.is_empty() {
        out += "\nOne adaptive FCM's (k, alpha), from lowbit's report (exact code length of that single model on a prefix of the bases, not the mixture's size):\n\n";
        out += &table(
            &[
                "input",
                "selection",
                "k",
                "alpha",
                "bits/base",
                "time",
                "bases",
            ],
            &sel,
        );
    }
    out + "\n"
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    /// The vectors tables: lowbit rows compared with the faiss row of the same bits, the Gaussian
    /// rows in their own table.
    #[test]
    fn vectors_tables_compare_at_the_same_bits() {
        let doc = json!({
            "vectors": [
                {"method": "faiss PQ m16 nbits8", "kind": "reference", "status": "ok",
                 "code_bits_per_vector": 128, "recall_at_10": 0.1869},
                {"method": "lowbit transform 128 bits/vector", "kind": "lowbit", "status": "ok",
                 "target_bits_per_vector": 128, "bits_per_vector_whole_file": 119.76,
                 "recall_at_10": 0.2162, "mse_per_dimension": 0.00183},
                {"method": "lowbit pq 64 bits/vector", "kind": "lowbit",
                 "status": "skipped: below the smallest file", "target_bits_per_vector": 64},
                {"method": "lowbit transform --bpw 2 (Gaussian)", "kind": "gaussian", "status": "ok",
                 "bits_per_dimension_whole_file": 1.8782, "rd_bits_per_dimension": 1.6041,
                 "gap_bits_per_dimension": 0.2741, "mse_per_dimension": 0.0203}
            ]
        });
        let md = super::markdown(&doc);
        let line = |needle: &str| {
            md.lines()
                .find(|l| l.contains(needle))
                .unwrap_or_else(|| panic!("no line with {needle} in\n{md}"))
                .to_string()
        };
        assert!(line("lowbit transform 128").contains("| +0.0293 |"));
        assert!(!line("lowbit pq 64").contains('+'));
        let gaussian = line("(Gaussian)");
        assert!(gaussian.contains("| 0.2741 |") && gaussian.contains("| 1.6041 |"));
        assert!(md.find("against R(D)") > md.find("recall@10"));
    }
}
