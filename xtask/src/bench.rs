//! `cargo xtask bench`: lowbit measured beside the reference tools on the same input, same machine,
//! same run (the rows and the targets they are judged by: BENCHMARKS.md).
//!
//! Three sections: rate-distortion on all-MiniLM-L6-v2 (lowbit at several bits per weight against
//! llama.cpp's block quantizers), lossless (against zipnn and zstd), and kernels (the Rust examples
//! `bench_svd` / `bench_kmeans` against their Python references). Every figure here is measured by
//! the harness or by a reference script from files; nothing is taken from lowbit's own report:
//! bits per weight come from the file size and the parameter count in the safetensors header.
//! A row whose tool is not there yet is printed as `skipped: <why>`; a tool that is there and fails
//! makes the row `failed: <why>` and the whole run exit non-zero.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Map, Value};

use crate::report;
use crate::setup::{self, Paths};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Section {
    Minilm,
    /// The issue-5 codecs forced on MiniLM (`--method hyper|turbo`), rows in the rate-distortion table.
    Methods,
    Lossless,
    Kernels,
    /// MiniLM's word-embedding matrix as a vector dataset: lowbit's vector coders against faiss PQ.
    Vectors,
    /// FASTA and text, lossless, against zstd -19 / xz -9e / bzip2 -9 (target: <= 1.90
    /// bits per base on the Klebsiella genome, and below xz -9e on text).
    Sequences,
    /// MiniLM at 4 bpw in headless Chromium (wasm CPU path, WebGPU) beside the native CLI on one
    /// thread. Only with `--only web`: the WebGPU run on SwiftShader takes tens of minutes.
    Web,
    /// The model runtime on SmolLM2-135M and MiniLM against the numpy reference, and its speed.
    Runtime,
    /// The model runtime in the page (headless Chromium, wasm CPU path) beside the native CLI:
    /// MiniLM embeddings and SmolLM2-135M tokens per second. Only with `--only runtime-web`.
    RuntimeWeb,
    /// Compression time and peak memory on MiniLM and SmolLM2-135M, beside an earlier commit's
    /// build (made by the harness). Only with `--only speed`: it builds that commit first.
    Speed,
    /// llama.cpp's own quantizer (llama-quantize, with and without llama-imatrix) on SmolLM2-135M,
    /// judged by `lowbit eval`. Only with `--only llamacpp`: about an hour on 2 cores, and it needs
    /// a llama.cpp build (benches/build_llamacpp.sh).
    Llamacpp,
}

pub struct Options {
    /// Only 4 bpw (with the Q4_0 reference beside it) and the kernels.
    pub quick: bool,
    pub only: Option<Section>,
    /// Repetitions of each lowbit compress/decompress (median reported); None = 1 lossy, 3 lossless.
    pub repeat: Option<usize>,
    /// Also run xz -9e in the lossless section (about 4 minutes on 2 cores).
    pub xz: bool,
    /// Keep the compressed and restored files under target/bench/work.
    pub keep: bool,
}

impl Options {
    fn runs(&self, section: Section) -> bool {
        match self.only {
            Some(only) => only == section,
            None if matches!(
                section,
                Section::Web | Section::Speed | Section::RuntimeWeb | Section::Llamacpp
            ) =>
            {
                false
            }
            None => {
                !(self.quick
                    && matches!(
                        section,
                        Section::Lossless | Section::Methods | Section::Sequences
                    ))
            }
        }
    }
}

/// Bits per weight lowbit is asked for in the full run (`--quick`: 4 only).
const LOWBIT_BPW: &[u32] = &[3, 4, 5, 7];
/// Methods forced on MiniLM in the `methods` section, and the budgets they are asked for.
const FORCED_METHODS: &[&str] = &["hyper", "turbo"];
const FORCED_BPW: &[u32] = &[3, 4, 5];
/// llama.cpp block formats measured as references, highest rate first.
const GGUF_TYPES: &[&str] = &["Q8_0", "Q5_1", "Q5_0", "Q4_1", "Q4_0"];

/// Rows gathered by the sections, written to latest.json and rendered to latest.md.
#[derive(Default)]
pub struct Results {
    pub rate_distortion: Vec<Value>,
    pub lossless: Vec<Value>,
    pub kernels: Vec<Value>,
    pub vectors: Vec<Value>,
    pub sequences: Vec<Value>,
    pub web: Vec<Value>,
    pub runtime: Vec<Value>,
    pub runtime_web: Vec<Value>,
    pub speed: Vec<Value>,
    pub llamacpp: Vec<Value>,
    pub failures: Vec<String>,
}

impl Results {
    /// Records a row's outcome: failures are also collected for the exit status.
    pub fn push(rows: &mut Vec<Value>, failures: &mut Vec<String>, row: Value) {
        report::print_row(&row);
        if let Some(status) = row.get("status").and_then(Value::as_str) {
            if status.starts_with("failed") {
                let name = row.get("method").and_then(Value::as_str).unwrap_or("?");
                failures.push(format!("{name}: {status}"));
            }
        }
        rows.push(row);
    }
}

/// The lowbit CLI, or why there is none to measure yet.
pub enum Lowbit {
    Ready(PathBuf),
    Missing(String),
}

pub fn run(options: &Options) -> Result<i32, String> {
    let paths = Paths::resolve()?;
    fs::create_dir_all(paths.work()).map_err(|e| format!("{}: {e}", paths.work().display()))?;

    println!("[1/4] real data: {}", paths.data.display());
    setup::fetch_data(&paths)?;

    // The sequence rows need no Python: their references are the system's compressors.
    let python_env = if matches!(
        options.only,
        Some(Section::Sequences | Section::Web | Section::RuntimeWeb)
    ) {
        println!("[2/4] python venv: not needed for this section");
        Value::Null
    } else {
        println!(
            "[2/4] python venv with the reference tools: {}",
            paths.venv.display()
        );
        setup::ensure_venv(&paths)?;
        // The SmolLM2 folder is converted from its GGUF by the venv's Python (numpy + gguf): on a
        // first run the data step came before the venv existed.
        if !paths.data.join("smollm2/hf/model.safetensors").is_file() {
            setup::fetch_data(&paths)?;
        }
        setup::python_versions(&paths)?
    };
    println!("  {python_env}");
    let machine = setup::machine(&paths);
    println!("  {machine}");

    let needs_lowbit = options.runs(Section::Minilm)
        || options.runs(Section::Methods)
        || options.runs(Section::Lossless)
        || options.runs(Section::Vectors)
        || options.runs(Section::Sequences)
        || options.runs(Section::Web)
        || options.runs(Section::Runtime)
        || options.runs(Section::RuntimeWeb)
        || options.runs(Section::Speed)
        || options.runs(Section::Llamacpp);
    let lowbit = if needs_lowbit {
        println!("[3/4] building lowbit (release)");
        prepare_lowbit(&paths)
    } else {
        Lowbit::Missing("not needed".into())
    };
    if let Lowbit::Missing(why) = &lowbit {
        println!("  lowbit rows will be skipped: {why}");
    }

    println!("[4/4] measuring");
    let mut results = Results::default();
    if options.runs(Section::Minilm) {
        println!("== rate-distortion: all-MiniLM-L6-v2");
        minilm(&paths, options, &lowbit, &mut results)?;
    }
    if options.runs(Section::Methods) {
        println!("== rate-distortion: all-MiniLM-L6-v2, forced methods");
        forced_methods(&paths, options, &lowbit, &mut results)?;
    }
    if options.runs(Section::Lossless) {
        println!("== lossless: all-MiniLM-L6-v2, fp32 and bf16");
        lossless(&paths, options, &lowbit, &mut results)?;
    }
    if options.runs(Section::Kernels) {
        println!("== kernels");
        kernels(&paths, &mut results)?;
    }
    if options.runs(Section::Vectors) {
        println!("== vectors: all-MiniLM-L6-v2 word embeddings, recall@10");
        vectors(&paths, options, &lowbit, &mut results)?;
    }
    if options.runs(Section::Sequences) {
        println!("== sequences: Klebsiella genome (FASTA), fortunes (text)");
        sequences(&paths, options, &lowbit, &mut results)?;
    }
    if options.runs(Section::Web) {
        println!("== web: all-MiniLM-L6-v2 at 4 bpw in headless Chromium vs the native CLI");
        web(&paths, &lowbit, &mut results)?;
    }

    if options.runs(Section::Runtime) {
        println!("== model runtime: SmolLM2-135M and all-MiniLM-L6-v2 vs the numpy reference");
        crate::runtime::runtime(&paths, &lowbit, &mut results)?;
    }

    if options.runs(Section::RuntimeWeb) {
        println!("== model runtime in the page: MiniLM and SmolLM2-135M, page vs native CLI");
        crate::runtime::runtime_web(&paths, &lowbit, &mut results)?;
    }

    if options.runs(Section::Speed) {
        println!(
            "== speed: compressing MiniLM and SmolLM2-135M, beside commit {}",
            crate::speed::REFERENCE_COMMIT
        );
        crate::speed::speed(&paths, options.repeat.unwrap_or(3), &lowbit, &mut results)?;
    }

    if options.runs(Section::Llamacpp) {
        println!("== llama.cpp's quantizer on SmolLM2-135M, with and without an imatrix");
        crate::llamacpp::llamacpp(&paths, &lowbit, &mut results)?;
    }

    let document = json!({
        "machine": machine,
        "python": python_env,
        "options": {
            "quick": options.quick,
            "only": options.only.map(|s| format!("{s:?}").to_lowercase()),
            "repeat": options.repeat,
            "xz": options.xz,
        },
        "rate_distortion": results.rate_distortion,
        "lossless": results.lossless,
        "kernels": results.kernels,
        "vectors": results.vectors,
        "sequences": results.sequences,
        "web": results.web,
        "runtime": results.runtime,
        "runtime_web": results.runtime_web,
        "speed": results.speed,
        "llamacpp": results.llamacpp,
        "failures": results.failures,
    });
    let markdown = report::markdown(&document);
    let json_path = paths.out.join("latest.json");
    let md_path = paths.out.join("latest.md");
    let pretty = serde_json::to_string_pretty(&document).map_err(|e| e.to_string())?;
    fs::write(&json_path, pretty + "\n").map_err(|e| format!("{}: {e}", json_path.display()))?;
    fs::write(&md_path, &markdown).map_err(|e| format!("{}: {e}", md_path.display()))?;
    println!("\n{markdown}");
    println!("wrote {} and {}", md_path.display(), json_path.display());
    if results.failures.is_empty() {
        Ok(0)
    } else {
        eprintln!("{} row(s) failed:", results.failures.len());
        for f in &results.failures {
            eprintln!("  {f}");
        }
        Ok(1)
    }
}

/// Builds the lowbit binary (or takes `$LOWBIT_BIN`, for trying the harness against another build)
/// and checks that it has the `compress` command with `--bpw`.
fn prepare_lowbit(paths: &Paths) -> Lowbit {
    let binary = match std::env::var_os("LOWBIT_BIN") {
        Some(bin) => {
            println!("  using LOWBIT_BIN={}", PathBuf::from(&bin).display());
            PathBuf::from(bin)
        }
        None => {
            let manifest = paths.root.join("Cargo.toml");
            let build = setup::run(
                Command::new("cargo")
                    .args(["build", "--release", "--bin", "lowbit", "--manifest-path"])
                    .arg(&manifest),
            );
            if let Err(e) = build {
                return Lowbit::Missing(format!("lowbit binary missing (build failed: {e})"));
            }
            match target_dir(&manifest) {
                Ok(dir) => dir.join("release").join("lowbit"),
                Err(e) => return Lowbit::Missing(e),
            }
        }
    };
    if !binary.is_file() {
        return Lowbit::Missing(format!("lowbit binary missing ({})", binary.display()));
    }
    // The skeleton's binary builds but does nothing: only a CLI that documents `--bpw` is measured.
    match setup::run(Command::new(&binary).args(["compress", "--help"])) {
        Ok(ran) if ran.stdout.contains("--bpw") || ran.stderr.contains("--bpw") => {
            Lowbit::Ready(binary)
        }
        Ok(_) => Lowbit::Missing("lowbit CLI has no `compress --bpw` yet".into()),
        Err(e) => Lowbit::Missing(format!("lowbit CLI has no `compress` command yet ({e})")),
    }
}

/// Cargo's target directory for lowbit (honours CARGO_TARGET_DIR and .cargo/config.toml).
fn target_dir(manifest: &Path) -> Result<PathBuf, String> {
    let ran = setup::run(
        Command::new("cargo")
            .args([
                "metadata",
                "--format-version",
                "1",
                "--no-deps",
                "--manifest-path",
            ])
            .arg(manifest),
    )?;
    let meta: Value =
        serde_json::from_str(&ran.stdout).map_err(|e| format!("cargo metadata: {e}"))?;
    meta.get("target_directory")
        .and_then(Value::as_str)
        .map(PathBuf::from)
        .ok_or_else(|| "cargo metadata has no target_directory".into())
}

pub fn python(paths: &Paths) -> Command {
    let mut cmd = Command::new(paths.python());
    // torch (imported by zipnn and gguf) warns on import; the warnings are noise in failure messages.
    cmd.env("PYTHONWARNINGS", "ignore");
    cmd
}

pub fn row(method: &str) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("method".into(), json!(method));
    m
}

/// A kernel row before any figure: the job and implementation named, for skipped and failed rows.
fn kernel_row(job: &str, implementation: &str) -> Map<String, Value> {
    let mut m = row(&format!("{job} {implementation}"));
    m.insert("job".into(), json!(job));
    m.insert("impl".into(), json!(implementation));
    m
}

pub fn status_row(mut m: Map<String, Value>, status: String) -> Value {
    m.insert("status".into(), json!(status));
    Value::Object(m)
}

/// Downstream and weight-space quality of a restored MiniLM: benches/relmse.py + benches/minilm_eval.py.
pub fn evaluate(
    paths: &Paths,
    restored: &Path,
    into: &mut Map<String, Value>,
) -> Result<(), String> {
    let model = paths.minilm_dir().join("model.safetensors");
    let ran = setup::run(
        python(paths)
            .arg(paths.bench_script("relmse.py"))
            .arg(&model)
            .arg(restored),
    )?;
    let mse = setup::json_lines(&ran.stdout)
        .into_iter()
        .next()
        .ok_or("relmse.py printed no JSON")?;
    into.insert("rel_mse".into(), mse["rel_mse"].clone());
    into.insert(
        "max_tensor_rel_mse".into(),
        mse["max_tensor_rel_mse"].clone(),
    );
    into.insert("max_tensor".into(), mse["max_tensor"].clone());
    let ran = setup::run(
        python(paths)
            .arg(paths.bench_script("minilm_eval.py"))
            .arg(paths.minilm_dir())
            .arg(restored),
    )?;
    // Output: "sentences=256 cos_mean=0.96145 cos_min=0.91966 nn_agreement=0.660"
    let line = ran
        .stdout
        .lines()
        .find(|l| l.contains("cos_mean="))
        .ok_or_else(|| {
            format!(
                "minilm_eval.py printed no figures: {}",
                setup::tail(&ran.stdout, 3)
            )
        })?;
    for pair in line.split_whitespace() {
        if let Some((key, value)) = pair.split_once('=') {
            let number: f64 = value
                .parse()
                .map_err(|_| format!("minilm_eval.py: cannot read {pair}"))?;
            into.insert(key.to_string(), json!(number));
        }
    }
    for key in ["cos_mean", "cos_min", "nn_agreement"] {
        if !into.contains_key(key) {
            return Err(format!("minilm_eval.py output lacks {key}: {line}"));
        }
    }
    Ok(())
}

fn remove(paths: &[&Path], options: &Options) {
    if !options.keep {
        for p in paths {
            let _ = fs::remove_file(p);
        }
    }
}

fn minilm(
    paths: &Paths,
    options: &Options,
    lowbit: &Lowbit,
    results: &mut Results,
) -> Result<(), String> {
    let model = paths.minilm_dir().join("model.safetensors");
    let count = setup::count_parameters(&model)?;
    println!(
        "  {}: {} parameters in {} tensors",
        model.display(),
        count.parameters,
        count.tensors
    );
    let work = paths.work();
    let bpws: &[u32] = if options.quick { &[4] } else { LOWBIT_BPW };
    for &bpw in bpws {
        let bpw_arg = bpw.to_string();
        minilm_lowbit_row(
            paths,
            options,
            lowbit,
            &format!("lowbit --bpw {bpw}"),
            &format!("minilm-bpw{bpw}"),
            &["--bpw", &bpw_arg],
            bpw,
            results,
        )?;
    }

    let types: Vec<&str> = if options.quick {
        vec!["Q4_0"]
    } else {
        GGUF_TYPES.to_vec()
    };
    let gguf_dir = work.join("gguf");
    let ran = setup::run(
        python(paths)
            .arg(paths.bench_script("gguf_reference.py"))
            .arg(&model)
            .arg(&gguf_dir)
            .arg("--types")
            .arg(types.join(",")),
    );
    let lines = match ran {
        Ok(ran) => setup::json_lines(&ran.stdout),
        Err(e) => {
            let r = status_row(row("gguf reference"), format!("failed: {e}"));
            Results::push(&mut results.rate_distortion, &mut results.failures, r);
            return Ok(());
        }
    };
    for line in lines {
        let type_name = line["type"].as_str().unwrap_or("?").to_string();
        let mut m = row(&format!("gguf {type_name}"));
        m.insert("kind".into(), json!("reference"));
        m.insert(
            "bits_per_weight".into(),
            line["bits_per_weight_format"].clone(),
        );
        m.insert(
            "bits_per_weight_tensors".into(),
            line["bits_per_weight_tensors"].clone(),
        );
        m.insert("quantize_seconds".into(), line["quantize_seconds"].clone());
        m.insert(
            "dequantize_seconds".into(),
            line["dequantize_seconds"].clone(),
        );
        let restored = PathBuf::from(line["restored"].as_str().unwrap_or_default());
        let r = match evaluate(paths, &restored, &mut m) {
            Ok(()) => status_row(m, "ok".into()),
            Err(e) => status_row(m, format!("failed: {e}")),
        };
        remove(&[&restored], options);
        Results::push(&mut results.rate_distortion, &mut results.failures, r);
    }
    Ok(())
}

/// MiniLM compressed with each of [`FORCED_METHODS`] at each of [`FORCED_BPW`].
fn forced_methods(
    paths: &Paths,
    options: &Options,
    lowbit: &Lowbit,
    results: &mut Results,
) -> Result<(), String> {
    for &method in FORCED_METHODS {
        for &bpw in FORCED_BPW {
            let bpw_arg = bpw.to_string();
            minilm_lowbit_row(
                paths,
                options,
                lowbit,
                &format!("lowbit --method {method} --bpw {bpw}"),
                &format!("minilm-{method}-bpw{bpw}"),
                &["--method", method, "--bpw", &bpw_arg],
                bpw,
                results,
            )?;
        }
    }
    // Issue 5 part B: the two allocators side by side, and the forced sparse-lowrank and
    // shared-lowrank codecs.
    for &bpw in FORCED_BPW {
        let bpw_arg = bpw.to_string();
        for (flag, value) in [
            ("--allocator", "greedy"),
            ("--allocator", "knapsack"),
            ("--method", "sparse-lowrank"),
            ("--method", "shared-lowrank"),
        ] {
            minilm_lowbit_row(
                paths,
                options,
                lowbit,
                &format!("lowbit {flag} {value} --bpw {bpw}"),
                &format!("minilm-{value}-bpw{bpw}"),
                &[flag, value, "--bpw", &bpw_arg],
                bpw,
                results,
            )?;
        }
    }
    Ok(())
}

/// One lowbit row of the rate-distortion table: compress MiniLM with `args`, decompress, measure
/// the file's bits per weight and the restored model's quality.
#[allow(clippy::too_many_arguments)]
fn minilm_lowbit_row(
    paths: &Paths,
    options: &Options,
    lowbit: &Lowbit,
    method: &str,
    stem: &str,
    args: &[&str],
    bpw: u32,
    results: &mut Results,
) -> Result<(), String> {
    let model = paths.minilm_dir().join("model.safetensors");
    let count = setup::count_parameters(&model)?;
    let work = paths.work();
    let repeat = options.repeat.unwrap_or(1).max(1);
    let mut m = row(method);
    m.insert("kind".into(), json!("lowbit"));
    m.insert("bpw_requested".into(), json!(bpw));
    let bin = match lowbit {
        Lowbit::Ready(bin) => bin,
        Lowbit::Missing(why) => {
            let r = status_row(m, format!("skipped: {why}"));
            Results::push(&mut results.rate_distortion, &mut results.failures, r);
            return Ok(());
        }
    };
    let packed = work.join(format!("{stem}.lowbit"));
    let restored = work.join(format!("{stem}.restored.safetensors"));
    let outcome = lowbit_round_trip(bin, &model, &packed, &restored, args, repeat, &mut m)
        .and_then(|()| {
            let size = setup::file_size(&packed)?;
            m.insert("compressed_bytes".into(), json!(size));
            m.insert(
                "bits_per_weight".into(),
                json!(8.0 * size as f64 / count.parameters as f64),
            );
            let back = setup::count_parameters(&restored)?;
            if back.parameters != count.parameters || back.tensors != count.tensors {
                return Err(format!(
                    "restored file has {} parameters in {} tensors, the original {} in {}",
                    back.parameters, back.tensors, count.parameters, count.tensors
                ));
            }
            evaluate(paths, &restored, &mut m)
        });
    remove(&[&packed, &restored], options);
    let r = match outcome {
        Ok(()) => status_row(m, "ok".into()),
        Err(e) => status_row(m, format!("failed: {e}")),
    };
    Results::push(&mut results.rate_distortion, &mut results.failures, r);
    Ok(())
}

/// `lowbit compress INPUT -o PACKED ARGS --quiet` then `lowbit decompress PACKED -o RESTORED --quiet`,
/// `repeat` times; median wall times go into `m`.
fn lowbit_round_trip(
    bin: &Path,
    input: &Path,
    packed: &Path,
    restored: &Path,
    args: &[&str],
    repeat: usize,
    m: &mut Map<String, Value>,
) -> Result<(), String> {
    let mut compress = Vec::new();
    let mut decompress = Vec::new();
    for _ in 0..repeat {
        let _ = fs::remove_file(packed);
        let _ = fs::remove_file(restored);
        let c = setup::run(
            Command::new(bin)
                .arg("compress")
                .arg(input)
                .arg("-o")
                .arg(packed)
                .args(args)
                .arg("--quiet"),
        )?;
        if !packed.is_file() {
            return Err(format!(
                "compress exited 0 but wrote no {}",
                packed.display()
            ));
        }
        let d = setup::run(
            Command::new(bin)
                .arg("decompress")
                .arg(packed)
                .arg("-o")
                .arg(restored)
                .arg("--quiet"),
        )?;
        if !restored.is_file() {
            return Err(format!(
                "decompress exited 0 but wrote no {}",
                restored.display()
            ));
        }
        compress.push(c.seconds);
        decompress.push(d.seconds);
    }
    m.insert("compress_seconds".into(), json!(setup::median(&compress)));
    m.insert(
        "decompress_seconds".into(),
        json!(setup::median(&decompress)),
    );
    m.insert("repeat".into(), json!(repeat));
    Ok(())
}

fn lossless(
    paths: &Paths,
    options: &Options,
    lowbit: &Lowbit,
    results: &mut Results,
) -> Result<(), String> {
    let fp32 = paths.minilm_dir().join("model.safetensors");
    let work = paths.work();
    let bf16 = work.join("minilm-bf16.safetensors");
    if !bf16.is_file() {
        setup::run(
            python(paths)
                .arg(paths.bench_script("cast_bf16.py"))
                .arg(&fp32)
                .arg(&bf16),
        )?;
    }
    let repeat = options.repeat.unwrap_or(3).max(1);
    let inputs = [("fp32", &fp32, "float32"), ("bf16", &bf16, "bfloat16")];
    for (label, input, dtype) in inputs {
        let original_size = setup::file_size(input)?;
        // lowbit
        let mut m = row("lowbit --method lossless");
        m.insert("kind".into(), json!("lowbit"));
        m.insert("input".into(), json!(label));
        m.insert("input_bytes".into(), json!(original_size));
        let r = match lowbit {
            Lowbit::Missing(why) => status_row(m, format!("skipped: {why}")),
            Lowbit::Ready(bin) => {
                let packed = work.join(format!("minilm-{label}.lossless.lowbit"));
                let restored = work.join(format!("minilm-{label}.lossless.safetensors"));
                let outcome = lowbit_round_trip(
                    bin,
                    input,
                    &packed,
                    &restored,
                    &["--method", "lossless"],
                    repeat,
                    &mut m,
                )
                .and_then(|()| {
                    let size = setup::file_size(&packed)?;
                    m.insert("compressed_bytes".into(), json!(size));
                    m.insert("ratio".into(), json!(original_size as f64 / size as f64));
                    let same = setup::sha256(input)? == setup::sha256(&restored)?;
                    m.insert("round_trip".into(), json!(same));
                    if same {
                        Ok(())
                    } else {
                        Err("restored file differs from the original (sha256)".into())
                    }
                });
                remove(&[&packed, &restored], options);
                match outcome {
                    Ok(()) => status_row(m, "ok".into()),
                    Err(e) => status_row(m, format!("failed: {e}")),
                }
            }
        };
        Results::push(&mut results.lossless, &mut results.failures, r);

        // zipnn
        let ran = setup::run(
            python(paths)
                .arg(paths.bench_script("zipnn_reference.py"))
                .arg(input)
                .args(["--dtype", dtype, "--repeat", &repeat.to_string()]),
        );
        reference_rows(ran, "zipnn", label, results);

        // zstd (and xz): -19 and xz take minutes, so on the fp32 file only.
        let mut cmd = python(paths);
        cmd.arg(paths.bench_script("zstd_reference.py")).arg(input);
        if label == "fp32" {
            cmd.args(["--levels", "3,19"]);
            if options.xz {
                cmd.arg("--xz");
            }
        } else {
            cmd.args(["--levels", "3"]);
        }
        reference_rows(setup::run(&mut cmd), "zstd", label, results);
    }
    if !options.keep {
        let _ = fs::remove_file(&bf16);
    }
    Ok(())
}

/// Turns a lossless reference script's JSON lines into rows (one failed row if it crashed).
fn reference_rows(ran: Result<setup::Ran, String>, what: &str, input: &str, results: &mut Results) {
    match ran {
        Ok(ran) => {
            let lines = setup::json_lines(&ran.stdout);
            if lines.is_empty() {
                let msg = format!("failed: printed no JSON: {}", setup::tail(&ran.stderr, 3));
                let r = status_row(row(what), msg);
                Results::push(&mut results.lossless, &mut results.failures, r);
            }
            for line in lines {
                let mut m = row(line["reference"].as_str().unwrap_or(what));
                m.insert("kind".into(), json!("reference"));
                m.insert("input".into(), json!(input));
                for key in [
                    "input_bytes",
                    "compressed_bytes",
                    "ratio",
                    "compress_seconds",
                    "decompress_seconds",
                    "repeat",
                    "threads",
                    "round_trip",
                ] {
                    if let Some(v) = line.get(key) {
                        m.insert(key.into(), v.clone());
                    }
                }
                let ok = line["round_trip"].as_bool() == Some(true);
                let status = if ok {
                    "ok".to_string()
                } else {
                    "failed: round trip differs".to_string()
                };
                Results::push(
                    &mut results.lossless,
                    &mut results.failures,
                    status_row(m, status),
                );
            }
        }
        Err(e) => {
            let r = status_row(row(&format!("{what} ({input})")), format!("failed: {e}"));
            Results::push(&mut results.lossless, &mut results.failures, r);
        }
    }
}

/// One kernel job: the Rust example writes the input to a file and times lowbit; the Python
/// reference times the reference tools on that same file.
struct KernelJob {
    job: &'static str,
    example: &'static str,
    script: &'static str,
    /// Arguments after the input path: rows and columns (svd) or points and dimension (kmeans).
    shape: [&'static str; 2],
}

const KERNEL_JOBS: &[KernelJob] = &[
    KernelJob {
        job: "svd",
        example: "bench_svd",
        script: "svd_reference.py",
        shape: ["768", "3072"],
    },
    KernelJob {
        job: "kmeans",
        example: "bench_kmeans",
        script: "kmeans_reference.py",
        shape: ["100000", "8"],
    },
];

fn kernels(paths: &Paths, results: &mut Results) -> Result<(), String> {
    // Every backend kernel on the CPU and, where an adapter exists, the GPU backend (forced: on a
    // machine without a GPU that is an emulated adapter, and its rows say so by the adapter name).
    let ran = setup::run(Command::new("cargo").current_dir(&paths.root).args([
        "run",
        "--quiet",
        "--release",
        "--example",
        "bench_backend",
    ]));
    kernel_rows(ran, "backend", "lowbit", results);
    for job in KERNEL_JOBS {
        let input = paths.work().join(format!("{}.f32", job.job));
        let _ = fs::remove_file(&input);
        let example = paths
            .root
            .join("examples")
            .join(format!("{}.rs", job.example));
        let mut lowbit_ok = false;
        if !example.is_file() {
            let m = kernel_row(job.job, "lowbit");
            let r = status_row(m, format!("skipped: examples/{}.rs missing", job.example));
            Results::push(&mut results.kernels, &mut results.failures, r);
        } else {
            let ran = setup::run(
                Command::new("cargo")
                    .current_dir(&paths.root)
                    .args([
                        "run",
                        "--quiet",
                        "--release",
                        "--example",
                        job.example,
                        "--",
                    ])
                    .arg(&input),
            );
            lowbit_ok = kernel_rows(ran, job.job, "lowbit", results);
        }
        let script = paths.bench_script(job.script);
        if !script.is_file() {
            let m = kernel_row(job.job, "reference");
            let r = status_row(m, format!("skipped: benches/{} missing", job.script));
            Results::push(&mut results.kernels, &mut results.failures, r);
        } else if !lowbit_ok || !input.is_file() {
            let m = kernel_row(job.job, "reference");
            let why = format!("skipped: no input ({} did not write it)", job.example);
            Results::push(
                &mut results.kernels,
                &mut results.failures,
                status_row(m, why),
            );
        } else {
            let ran = setup::run(python(paths).arg(&script).arg(&input).args(job.shape));
            kernel_rows(ran, job.job, "reference", results);
        }
        let _ = fs::remove_file(&input);
    }
    Ok(())
}

/// Rows from a kernel program's JSON lines; true if at least one row came out.
fn kernel_rows(
    ran: Result<setup::Ran, String>,
    job: &str,
    kind: &str,
    results: &mut Results,
) -> bool {
    match ran {
        Ok(ran) => {
            let lines: Vec<Value> = setup::json_lines(&ran.stdout)
                .into_iter()
                .filter(|l| l.get("job").and_then(Value::as_str) == Some(job))
                .collect();
            if lines.is_empty() {
                let msg = format!(
                    "failed: no {{\"job\":\"{job}\"}} JSON lines in the output: {}",
                    setup::tail(&ran.stdout, 3)
                );
                let r = status_row(kernel_row(job, kind), msg);
                Results::push(&mut results.kernels, &mut results.failures, r);
                return false;
            }
            for line in lines {
                let Value::Object(mut m) = line else { continue };
                let implementation = m
                    .get("impl")
                    .and_then(Value::as_str)
                    .unwrap_or(kind)
                    .to_string();
                // Jobs that time several kernels name each row's kernel.
                let method = match m.get("kernel").and_then(Value::as_str) {
                    Some(kernel) => format!("{job} {kernel} ({implementation})"),
                    None => format!("{job} {implementation}"),
                };
                m.insert("method".into(), json!(method));
                m.insert("kind".into(), json!(kind));
                Results::push(
                    &mut results.kernels,
                    &mut results.failures,
                    status_row(m, "ok".into()),
                );
            }
            true
        }
        Err(e) => {
            let r = status_row(kernel_row(job, kind), format!("failed: {e}"));
            Results::push(&mut results.kernels, &mut results.failures, r);
            false
        }
    }
}

/// Bits per vector compared in the vectors section: faiss PQ with m = bits/8 one-byte codes (its
/// code length, codebooks not counted: m8, m16, m32), lowbit at a whole-file budget of the same
/// bits per vector.
const VECTOR_BITS: &[u32] = &[64, 128, 256];
/// lowbit methods run in the vectors section.
const VECTOR_METHODS: &[&str] = &["auto", "transform", "pq"];

/// MiniLM's 30522 x 384 word-embedding matrix, 1000 rows held out as queries (seeded): lowbit
/// compresses the other 29522 rows (a `.npy`) to a whole-file budget of B bits per vector, and
/// faiss-cpu's ProductQuantizer codes them in B bits per vector; recall@10 of the queries against
/// each decoded base (`benches/vectors_reference.py`).
fn vectors(
    paths: &Paths,
    options: &Options,
    lowbit: &Lowbit,
    results: &mut Results,
) -> Result<(), String> {
    let script = paths.bench_script("vectors_reference.py");
    let dir = paths.work().join("vectors");
    fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let model = paths.minilm_dir().join("model.safetensors");
    let push = |results: &mut Results, row: Value| {
        Results::push(&mut results.vectors, &mut results.failures, row)
    };
    let prepared = setup::run(
        python(paths)
            .arg(&script)
            .arg("prepare")
            .arg(&model)
            .arg(&dir),
    )
    .and_then(|ran| {
        let line = setup::json_lines(&ran.stdout).pop();
        line.and_then(|l| Some((l["base_rows"].as_f64()?, l["dim"].as_f64()?)))
            .ok_or_else(|| "prepare printed no base_rows/dim".to_string())
    });
    let (rows, dim) = match prepared {
        Ok(shape) => shape,
        Err(e) => {
            push(
                results,
                status_row(row("vectors"), format!("failed: prepare: {e}")),
            );
            return Ok(());
        }
    };
    let bits: Vec<String> = VECTOR_BITS.iter().map(|b| b.to_string()).collect();
    match setup::run(
        python(paths)
            .arg(&script)
            .arg("faiss")
            .arg(&dir)
            .args(&bits),
    ) {
        Ok(ran) => {
            for line in setup::json_lines(&ran.stdout) {
                let Value::Object(mut m) = line else { continue };
                let name = m["reference"].as_str().unwrap_or("faiss").to_string();
                m.insert("method".into(), json!(name));
                m.insert("kind".into(), json!("reference"));
                push(results, status_row(m, "ok".into()));
            }
        }
        Err(e) => push(results, status_row(row("faiss PQ"), format!("failed: {e}"))),
    }
    let Lowbit::Ready(bin) = lowbit else {
        return Ok(());
    };
    let base = dir.join("base.npy");
    let packed = dir.join("base.lowbit");
    let restored = dir.join("restored.npy");
    for &b in VECTOR_BITS {
        for method in VECTOR_METHODS {
            let mut m = row(&format!("lowbit {method} {b} bits/vector"));
            m.insert("kind".into(), json!("lowbit"));
            m.insert("target_bits_per_vector".into(), json!(b));
            let bpw = format!("{}", b as f64 / dim);
            let args = ["--bpw", bpw.as_str(), "--method", method];
            let ran = lowbit_round_trip(bin, &base, &packed, &restored, &args, 1, &mut m).and_then(
                |()| {
                    let bytes = fs::metadata(&packed).map_err(|e| e.to_string())?.len();
                    m.insert(
                        "bits_per_vector_whole_file".into(),
                        json!(8.0 * bytes as f64 / rows),
                    );
                    let ran = setup::run(
                        python(paths)
                            .arg(&script)
                            .arg("recall")
                            .arg(&dir)
                            .arg(&restored),
                    )?;
                    let line = setup::json_lines(&ran.stdout)
                        .pop()
                        .ok_or("recall printed no JSON")?;
                    for key in ["recall_at_10", "mse_per_dimension"] {
                        m.insert(key.into(), line[key].clone());
                    }
                    Ok(())
                },
            );
            let status = match ran {
                Ok(()) => "ok".to_string(),
                // A budget under the method's smallest file is an answer, not a failure.
                Err(e) if e.contains("below the smallest file") => {
                    format!("skipped: {}", setup::tail(&e, 1))
                }
                Err(e) => format!("failed: {e}"),
            };
            push(results, status_row(m, status));
        }
    }
    gaussian_rows(paths, bin, &script, &dir, results);
    remove(&[&packed, &restored], options);
    Ok(())
}

/// Budgets (bits per dimension) of the Gaussian rows: issue 6 asks for 0.3 bit/dim of R(D) at 2-6.
const GAUSSIAN_BUDGETS: &[f64] = &[2.0, 4.0, 6.0];

/// Generated Gaussian data with a known covariance (`vectors_reference.py gaussian`): lowbit's
/// transform coder at each budget, whole-file bits per dimension against the Gaussian R(D) on the
/// true eigenvalues at the MSE it reached.
fn gaussian_rows(paths: &Paths, bin: &Path, script: &Path, dir: &Path, results: &mut Results) {
    let push = |results: &mut Results, row: Value| {
        Results::push(&mut results.vectors, &mut results.failures, row)
    };
    let generated =
        setup::run(python(paths).arg(script).arg("gaussian").arg(dir)).and_then(|ran| {
            setup::json_lines(&ran.stdout)
                .pop()
                .and_then(|l| l["rows"].as_f64())
                .ok_or_else(|| "gaussian printed no rows".to_string())
        });
    let rows = match generated {
        Ok(rows) => rows,
        Err(e) => {
            let mut m = row("lowbit transform (Gaussian)");
            m.insert("kind".into(), json!("gaussian"));
            push(results, status_row(m, format!("failed: generate: {e}")));
            return;
        }
    };
    let input = dir.join("gaussian.npy");
    let packed = dir.join("gaussian.lowbit");
    let restored = dir.join("gaussian-restored.npy");
    for &budget in GAUSSIAN_BUDGETS {
        let mut m = row(&format!("lowbit transform --bpw {budget} (Gaussian)"));
        m.insert("kind".into(), json!("gaussian"));
        m.insert("budget_bits_per_dimension".into(), json!(budget));
        let bpw = budget.to_string();
        let args = ["--bpw", bpw.as_str(), "--method", "transform"];
        let ran =
            lowbit_round_trip(bin, &input, &packed, &restored, &args, 1, &mut m).and_then(|()| {
                let bytes = fs::metadata(&packed).map_err(|e| e.to_string())?.len();
                let bits = 8.0 * bytes as f64 / (rows * 16.0);
                let ran = setup::run(python(paths).arg(script).arg("rd").arg(dir).arg(&restored))?;
                let line = setup::json_lines(&ran.stdout)
                    .pop()
                    .ok_or("rd printed no JSON")?;
                let bound = line["rd_bits_per_dimension"]
                    .as_f64()
                    .ok_or("no rd figure")?;
                m.insert("bits_per_dimension_whole_file".into(), json!(bits));
                m.insert("rd_bits_per_dimension".into(), json!(bound));
                m.insert("gap_bits_per_dimension".into(), json!(bits - bound));
                m.insert(
                    "mse_per_dimension".into(),
                    line["mse_per_dimension"].clone(),
                );
                Ok(())
            });
        let status = match ran {
            Ok(()) => "ok".to_string(),
            Err(e) => format!("failed: {e}"),
        };
        push(results, status_row(m, status));
    }
    let _ = fs::remove_file(&packed);
    let _ = fs::remove_file(&restored);
}

/// The symbols a bits-per-symbol figure divides by: for FASTA, the A/C/G/T letters (either case)
/// of the sequence lines (headers, line ends, N and other IUPAC letters excluded); for text, bytes.
fn sequence_symbols(path: &Path, fasta: bool) -> Result<u64, String> {
    let bytes = fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if !fasta {
        return Ok(bytes.len() as u64);
    }
    Ok(bytes
        .split(|&b| b == b'\n')
        .filter(|line| line.first() != Some(&b'>'))
        .map(|line| {
            line.iter()
                .filter(|b| matches!(b.to_ascii_uppercase(), b'A' | b'C' | b'G' | b'T'))
                .count() as u64
        })
        .sum())
}

/// Reference compressors: (name, compress command, decompress command), each `sh -c` with
/// "$1" = input and "$2" = output.
const SEQUENCE_REFERENCES: &[(&str, &str, &str)] = &[
    (
        "zstd -19",
        "zstd -19 -q -c \"$1\" > \"$2\"",
        "zstd -d -q -c \"$1\" > \"$2\"",
    ),
    (
        "xz -9e",
        "xz -9e -c \"$1\" > \"$2\"",
        "xz -d -c \"$1\" > \"$2\"",
    ),
    (
        "bzip2 -9",
        "bzip2 -9 -c \"$1\" > \"$2\"",
        "bzip2 -d -c \"$1\" > \"$2\"",
    ),
];

fn shell(script: &str, input: &Path, output: &Path) -> Command {
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(script).arg("sh").arg(input).arg(output);
    cmd
}

/// Sizes in bits per symbol and per byte, and the speed, of a finished row.
fn sequence_figures(m: &mut Map<String, Value>, input_bytes: u64, symbols: u64, size: u64) {
    m.insert("compressed_bytes".into(), json!(size));
    m.insert("symbols".into(), json!(symbols));
    m.insert(
        "bits_per_symbol".into(),
        json!(8.0 * size as f64 / symbols.max(1) as f64),
    );
    m.insert(
        "bits_per_byte".into(),
        json!(8.0 * size as f64 / input_bytes.max(1) as f64),
    );
    if let Some(t) = m.get("compress_seconds").and_then(Value::as_f64) {
        m.insert(
            "compress_mb_per_s".into(),
            json!(input_bytes as f64 / 1e6 / t),
        );
    }
}

fn sequences(
    paths: &Paths,
    options: &Options,
    lowbit: &Lowbit,
    results: &mut Results,
) -> Result<(), String> {
    let work = paths.work();
    let inputs = [
        (
            "klebsiella.fna",
            paths.data.join("dna").join("klebsiella.fna"),
            true,
        ),
        (
            "fortunes.txt",
            paths.data.join("text").join("fortunes.txt"),
            false,
        ),
    ];
    let repeat = options.repeat.unwrap_or(1).max(1);
    for (label, input, fasta) in inputs {
        let input_bytes = setup::file_size(&input)?;
        let symbols = sequence_symbols(&input, fasta)?;
        let unit = if fasta { "ACGT bases" } else { "bytes" };
        let base = |method: &str, kind: &str| {
            let mut m = row(method);
            m.insert("kind".into(), json!(kind));
            m.insert("input".into(), json!(label));
            m.insert("input_bytes".into(), json!(input_bytes));
            m.insert("symbol".into(), json!(unit));
            m
        };
        // lowbit, with its report for the (k, alpha) selection figures.
        let mut m = base("lowbit", "lowbit");
        let r = match lowbit {
            Lowbit::Missing(why) => status_row(m, format!("skipped: {why}")),
            Lowbit::Ready(bin) => {
                let packed = work.join(format!("{label}.lowbit"));
                let restored = work.join(format!("{label}.restored"));
                let report_dir = work.join(format!("{label}.report"));
                let report_arg = report_dir.to_string_lossy().into_owned();
                let outcome = lowbit_round_trip(
                    bin,
                    &input,
                    &packed,
                    &restored,
                    &["--report", &report_arg],
                    repeat,
                    &mut m,
                )
                .and_then(|()| {
                    let size = setup::file_size(&packed)?;
                    sequence_figures(&mut m, input_bytes, symbols, size);
                    let same = setup::sha256(&input)? == setup::sha256(&restored)?;
                    m.insert("round_trip".into(), json!(same));
                    let report: Value = fs::read_to_string(report_dir.join("report.json"))
                        .ok()
                        .and_then(|t| serde_json::from_str(&t).ok())
                        .unwrap_or(Value::Null);
                    if !report["selection"].is_null() {
                        m.insert("selection".into(), report["selection"].clone());
                    }
                    if same {
                        Ok(())
                    } else {
                        Err("restored file differs from the original (sha256)".into())
                    }
                });
                remove(&[&packed, &restored], options);
                match outcome {
                    Ok(()) => status_row(m, "ok".into()),
                    Err(e) => status_row(m, format!("failed: {e}")),
                }
            }
        };
        Results::push(&mut results.sequences, &mut results.failures, r);
        for (name, compress, decompress) in SEQUENCE_REFERENCES {
            let tool = name.split_whitespace().next().unwrap_or(name);
            let mut m = base(name, "reference");
            if setup::run(Command::new("sh").args(["-c", &format!("command -v {tool}")])).is_err() {
                let r = status_row(
                    m,
                    format!("skipped: {tool} not installed (apt-get install {tool})"),
                );
                Results::push(&mut results.sequences, &mut results.failures, r);
                continue;
            }
            let packed = work.join(format!("{label}.{tool}"));
            let restored = work.join(format!("{label}.{tool}.restored"));
            let outcome = setup::run(&mut shell(compress, &input, &packed)).and_then(|c| {
                let d = setup::run(&mut shell(decompress, &packed, &restored))?;
                m.insert("compress_seconds".into(), json!(c.seconds));
                m.insert("decompress_seconds".into(), json!(d.seconds));
                let size = setup::file_size(&packed)?;
                sequence_figures(&mut m, input_bytes, symbols, size);
                let same = setup::sha256(&input)? == setup::sha256(&restored)?;
                m.insert("round_trip".into(), json!(same));
                if same {
                    Ok(())
                } else {
                    Err("round trip differs".to_string())
                }
            });
            remove(&[&packed, &restored], options);
            let r = match outcome {
                Ok(()) => status_row(m, "ok".into()),
                Err(e) => status_row(m, format!("failed: {e}")),
            };
            Results::push(&mut results.sequences, &mut results.failures, r);
        }
    }
    Ok(())
}

/// Seconds the WebGPU run may take before its row says "stopped" (SwiftShader emulates the GPU on
/// the CPU: the whole model takes tens of minutes on 2 cores).
const WEB_GPU_LIMIT_S: u32 = 1200;

/// MiniLM at 4 bpw: the native CLI on one thread (`taskset -c 0`) and on every core, then the page
/// in headless Chromium with the CPU forced (wasm, one worker thread) and on WebGPU. The page's
/// time is measure + encode as the page runs them (file open to "done"), without the browser's
/// start-up. Target (issue 4): wasm <= 2.5x the native CLI on the same thread count.
fn web(paths: &Paths, lowbit: &Lowbit, results: &mut Results) -> Result<(), String> {
    let model = paths.minilm_dir().join("model.safetensors");
    let count = setup::count_parameters(&model)?;
    let Lowbit::Ready(bin) = lowbit else {
        let Lowbit::Missing(why) = lowbit else {
            unreachable!()
        };
        Results::push(
            &mut results.web,
            &mut results.failures,
            status_row(row("native CLI"), format!("skipped: {why}")),
        );
        return Ok(());
    };
    let work = paths.work();
    let packed = work.join("web-native.lowbit");
    for (label, threads) in [
        ("native CLI, 1 thread (taskset -c 0)", Some("0")),
        ("native CLI, every core", None),
    ] {
        let mut m = row(label);
        m.insert("kind".into(), json!("lowbit"));
        let _ = fs::remove_file(&packed);
        let mut cmd = match threads {
            Some(cpu) => {
                let mut c = Command::new("taskset");
                c.args(["-c", cpu]).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        cmd.arg("compress").arg(&model).arg("-o").arg(&packed);
        cmd.args(["--bpw", "4", "--backend", "cpu", "--quiet"]);
        let status = match setup::run(&mut cmd) {
            Ok(ran) => {
                let bytes = fs::metadata(&packed).map(|m| m.len()).unwrap_or(0);
                m.insert("backend".into(), json!("cpu"));
                m.insert(
                    "threads".into(),
                    json!(if threads.is_some() { "1" } else { "all" }),
                );
                m.insert("seconds".into(), json!(ran.seconds));
                m.insert("bytes".into(), json!(bytes));
                m.insert(
                    "bits_per_weight".into(),
                    json!(8.0 * bytes as f64 / count.parameters as f64),
                );
                "ok".to_string()
            }
            Err(e) => format!("failed: {e}"),
        };
        Results::push(
            &mut results.web,
            &mut results.failures,
            status_row(m, status),
        );
    }
    let _ = fs::remove_file(&packed);

    let (port, tests, chromium) = crate::web::page_for_bench(&paths.root)?;
    for (label, backend, limit) in [
        ("page in Chromium, CPU forced (wasm, 1 worker)", "cpu", 3600),
        ("page in Chromium, WebGPU", "gpu", WEB_GPU_LIMIT_S),
    ] {
        let mut m = row(label);
        m.insert("kind".into(), json!("lowbit"));
        // The wasm runs on one worker thread; an emulated adapter adds the threads it emulates on.
        let threads = if backend == "gpu" {
            "1 + adapter's"
        } else {
            "1"
        };
        m.insert("threads".into(), json!(threads));
        let mut cmd = Command::new("node");
        cmd.current_dir(&tests)
            .arg("bench.mjs")
            .arg(format!("--url=http://127.0.0.1:{port}/"))
            .arg(format!("--file={}", model.display()))
            .arg(format!("--backend={backend}"))
            .args(["--bpw=4", &format!("--limit={limit}")])
            .arg(format!("--chromium={chromium}"));
        let status = match setup::run(&mut cmd) {
            Ok(ran) => {
                let got = last_json_line(&ran.stdout, "bench.mjs")?;
                for key in [
                    "backend",
                    "adapter",
                    "seconds",
                    "measure_seconds",
                    "encode_seconds",
                    "bytes",
                    "bits_per_weight",
                    "rel_mse",
                ] {
                    if let Some(v) = got.get(key) {
                        m.insert(key.into(), v.clone());
                    }
                }
                got.get("status")
                    .and_then(Value::as_str)
                    .unwrap_or("failed: no status")
                    .to_string()
            }
            Err(e) => format!("failed: {e}"),
        };
        // Running out of time on an emulated adapter is a measurement, not a failure.
        Results::push(
            &mut results.web,
            &mut results.failures,
            status_row(m, status),
        );
    }
    Ok(())
}

/// The last line of a script's output that is a JSON object (the browser benchmarks print their
/// figures that way after their progress lines); `{}` when there is none.
pub fn last_json_line(stdout: &str, script: &str) -> Result<Value, String> {
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or("{}");
    serde_json::from_str(line).map_err(|e| format!("{script} said {line:?}: {e}"))
}
