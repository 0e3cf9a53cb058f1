//! The benchmark's surroundings: where things live, running commands with their output captured,
//! the real data, the Python venv with the reference tools, and a description of the machine.
//!
//! Nothing here measures anything; it prepares what `bench.rs` measures and records where and how.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Instant;

use serde_json::{json, Value};

/// Python packages the reference scripts and `minilm_eval.py` import. zipnn pulls in torch (~4 GB
/// with its CUDA wheels from PyPI): it is the price of measuring zipnn, the lossless reference.
pub const PIP_PACKAGES: &[&str] = &[
    "numpy",
    "scipy",
    "tokenizers",
    "safetensors",
    "gguf",
    "zipnn",
    "scikit-learn",
    "faiss-cpu",
    "zstandard",
    "threadpoolctl",
];

/// Import names of `PIP_PACKAGES`: if all import, the venv is complete and pip is not run again.
const IMPORT_CHECK: &str =
    "import numpy, scipy, tokenizers, safetensors, gguf, zipnn, sklearn, faiss, zstandard, threadpoolctl";

/// Every path the benchmark reads or writes, resolved once.
pub struct Paths {
    /// The lowbit repository (parent of `xtask/`).
    pub root: PathBuf,
    /// Real data from `benches/fetch_data.sh`: `$LOWBIT_DATA` or `~/.cache/lowbit-data`.
    pub data: PathBuf,
    /// `target/bench-venv` in the repository.
    pub venv: PathBuf,
    /// `target/bench`: latest.md, latest.json and the scratch folder `work/`.
    pub out: PathBuf,
}

impl Paths {
    pub fn resolve() -> Result<Paths, String> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .ok_or("xtask has no parent directory")?
            .to_path_buf();
        let data = match std::env::var_os("LOWBIT_DATA") {
            Some(dir) => PathBuf::from(dir),
            None => {
                let home = std::env::var_os("HOME").ok_or("neither LOWBIT_DATA nor HOME is set")?;
                PathBuf::from(home).join(".cache").join("lowbit-data")
            }
        };
        Ok(Paths {
            venv: root.join("target").join("bench-venv"),
            out: root.join("target").join("bench"),
            root,
            data,
        })
    }

    pub fn python(&self) -> PathBuf {
        self.venv.join("bin").join("python")
    }

    pub fn minilm_dir(&self) -> PathBuf {
        self.data.join("minilm")
    }

    pub fn work(&self) -> PathBuf {
        self.out.join("work")
    }

    pub fn bench_script(&self, name: &str) -> PathBuf {
        self.root.join("benches").join(name)
    }
}

/// A finished command: its captured output and how long it ran (wall clock, seconds).
pub struct Ran {
    pub stdout: String,
    pub stderr: String,
    pub seconds: f64,
}

/// Shell-like rendering of a command, for the log line printed before it runs.
pub fn describe(cmd: &Command) -> String {
    let mut parts = vec![cmd.get_program().to_string_lossy().into_owned()];
    parts.extend(cmd.get_args().map(|a| a.to_string_lossy().into_owned()));
    parts.join(" ")
}

/// Runs `cmd` with stdout and stderr captured, printing the command first. A non-zero exit is an
/// `Err` that carries the exit status and the tail of stderr, so a failed row says why.
pub fn run(cmd: &mut Command) -> Result<Ran, String> {
    let shown = describe(cmd);
    println!("  $ {shown}");
    let start = Instant::now();
    let output = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot start `{shown}`: {e}"))?;
    let seconds = start.elapsed().as_secs_f64();
    check(&shown, output, seconds)
}

/// Like `run` but with stdout/stderr going to the terminal (long installs show their progress).
pub fn run_visible(cmd: &mut Command) -> Result<f64, String> {
    let shown = describe(cmd);
    println!("  $ {shown}");
    let start = Instant::now();
    let status = cmd
        .stdin(Stdio::null())
        .status()
        .map_err(|e| format!("cannot start `{shown}`: {e}"))?;
    if !status.success() {
        return Err(format!("`{shown}` failed ({status})"));
    }
    Ok(start.elapsed().as_secs_f64())
}

fn check(shown: &str, output: Output, seconds: f64) -> Result<Ran, String> {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    if !output.status.success() {
        return Err(format!(
            "`{shown}` failed ({}): {}",
            output.status,
            tail(
                if stderr.trim().is_empty() {
                    &stdout
                } else {
                    &stderr
                },
                6
            )
        ));
    }
    Ok(Ran {
        stdout,
        stderr,
        seconds,
    })
}

/// The last `lines` non-empty lines of a command's output, joined with " | " for one-line messages.
pub fn tail(text: &str, lines: usize) -> String {
    let kept: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    kept[kept.len().saturating_sub(lines)..].join(" | ")
}

/// Parses every line of `text` that is a JSON object (scripts may print other lines too).
pub fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .filter(|l| l.trim_start().starts_with('{'))
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(Value::is_object)
        .collect()
}

/// Step 1: real data, through `benches/fetch_data.sh` (idempotent, checks the sha256 sums).
pub fn fetch_data(paths: &Paths) -> Result<(), String> {
    let script = paths.bench_script("fetch_data.sh");
    if !script.is_file() {
        return Err(format!("{} not found", script.display()));
    }
    run_visible(Command::new("bash").arg(&script).arg(&paths.data))?;
    Ok(())
}

/// Step 2: the venv with the reference tools, created when missing or incomplete.
pub fn ensure_venv(paths: &Paths) -> Result<(), String> {
    let python = paths.python();
    if !python.exists() {
        let system_python = find_python3()?;
        println!("  creating {}", paths.venv.display());
        run_visible(
            Command::new(&system_python)
                .args(["-m", "venv"])
                .arg(&paths.venv),
        )
        .map_err(|e| format!("{e} (on Debian: apt-get install python3-venv)"))?;
    }
    let complete = Command::new(&python)
        .args(["-c", IMPORT_CHECK])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if complete {
        println!("  venv complete: {}", paths.venv.display());
        return Ok(());
    }
    println!("  installing the reference tools (first run: several minutes, zipnn pulls torch)");
    run_visible(
        Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .args(PIP_PACKAGES),
    )
    .map_err(|e| format!("pip install of the reference tools failed: {e}"))?;
    run(Command::new(&python).args(["-c", IMPORT_CHECK]))
        .map_err(|e| format!("the venv still lacks a package after pip install: {e}"))?;
    Ok(())
}

fn find_python3() -> Result<PathBuf, String> {
    let found = Command::new("python3")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if found {
        Ok(PathBuf::from("python3"))
    } else {
        Err("python3 not found on PATH (the reference tools need Python >= 3.9 with venv)".into())
    }
}

/// Versions of the Python packages, numpy's BLAS (threadpoolctl) and OPENBLAS_CORETYPE.
pub fn python_versions(paths: &Paths) -> Result<Value, String> {
    let ran = run(Command::new(paths.python()).arg(paths.bench_script("env_report.py")))?;
    json_lines(&ran.stdout)
        .into_iter()
        .next()
        .ok_or_else(|| "env_report.py printed no JSON".to_string())
}

/// Date, machine and source version, for the header of the results.
pub fn machine(paths: &Paths) -> Value {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let meminfo = fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory_gib = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kib| kib.parse::<f64>().ok())
        .map(|kib| kib / (1024.0 * 1024.0));
    let os = fs::read_to_string("/etc/os-release")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_string());
    let nproc = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let quiet = |cmd: &mut Command| -> Option<String> {
        let o = cmd.current_dir(&paths.root).output().ok()?;
        o.status
            .success()
            .then(|| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let commit = quiet(Command::new("git").args(["rev-parse", "HEAD"]));
    let dirty = quiet(Command::new("git").args(["status", "--porcelain"])).map(|s| !s.is_empty());
    json!({
        "date": quiet(Command::new("date").args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])),
        "git_commit": commit,
        "git_dirty": dirty,
        "nproc": nproc,
        "cpu_model": cpu_model,
        "memory_gib": memory_gib,
        "os": os,
        "rustc": quiet(Command::new("rustc").arg("-V")),
    })
}

/// Sizes read from a safetensors header (the 8-byte length, then the JSON table of tensors).
pub struct SafetensorsCount {
    /// Elements of every tensor, whatever the dtype: the denominator of bits per weight.
    pub parameters: u64,
    pub tensors: usize,
}

/// Counts the parameters of a safetensors file from its header alone, independently of lowbit.
pub fn count_parameters(path: &Path) -> Result<SafetensorsCount, String> {
    let bytes = fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let len_bytes: [u8; 8] = bytes
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| format!("{}: shorter than a safetensors header", path.display()))?;
    let header_len = u64::from_le_bytes(len_bytes);
    let header = usize::try_from(header_len)
        .ok()
        .and_then(|n| bytes.get(8..8usize.checked_add(n)?))
        .ok_or_else(|| {
            format!(
                "{}: header length {header_len} past the end",
                path.display()
            )
        })?;
    let table: Value = serde_json::from_slice(header)
        .map_err(|e| format!("{}: header is not JSON: {e}", path.display()))?;
    let table = table
        .as_object()
        .ok_or_else(|| format!("{}: header is not a JSON object", path.display()))?;
    let mut parameters = 0u64;
    let mut tensors = 0;
    for (name, info) in table {
        if name == "__metadata__" {
            continue;
        }
        let shape = info
            .get("shape")
            .and_then(Value::as_array)
            .ok_or_else(|| format!("{}: tensor {name} has no shape", path.display()))?;
        let elements = shape
            .iter()
            .try_fold(1u64, |acc, d| d.as_u64().and_then(|d| acc.checked_mul(d)));
        parameters +=
            elements.ok_or_else(|| format!("{}: bad shape for {name}", path.display()))?;
        tensors += 1;
    }
    Ok(SafetensorsCount {
        parameters,
        tensors,
    })
}

pub fn file_size(path: &Path) -> Result<u64, String> {
    fs::metadata(path)
        .map(|m| m.len())
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// sha256 of a file through coreutils' `sha256sum` (present on every Debian machine).
pub fn sha256(path: &Path) -> Result<String, String> {
    let o = Command::new("sha256sum")
        .arg(path)
        .output()
        .map_err(|e| format!("cannot run sha256sum: {e}"))?;
    if !o.status.success() {
        return Err(format!("sha256sum {} failed", path.display()));
    }
    String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .next()
        .map(str::to_string)
        .ok_or_else(|| "sha256sum printed nothing".into())
}

/// Median of a non-empty sample (the mean of the two middle values for an even count).
pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}
