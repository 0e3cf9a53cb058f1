//! lowbit's project chores, run as `cargo xtask <command>` (alias in .cargo/config.toml).
//!
//! `test` (the README's test command) and `bench`. This crate is not part of lowbit's build: it has its own workspace, lock
//! file and target directory, and depends on serde_json alone.

mod bench;
mod llamacpp;
mod report;
mod runtime;
mod setup;
mod speed;
mod test;
mod web;

use bench::{Options, Section};

const USAGE: &str = "\
usage: cargo xtask test
       cargo xtask serve [--port N]
       cargo xtask build-web [--out DIR]
       cargo xtask test-web [--big] [--only=REGEX]
       cargo xtask bench [--quick] [--only minilm|methods|lossless|kernels|vectors|sequences|web|runtime|speed|llamacpp] [--repeat N] [--xz] [--keep]

  test      every test (what CI runs): installs the wasm32 target, checks that the library builds
            for wasm32, cargo test, then the browser tests (test-web)

  serve     builds the web app and serves it on http://127.0.0.1:8000/ (or --port N)
  build-web writes the static web app to target/web (or --out DIR): any static file host serves it
  test-web  Playwright + Debian's Chromium against the served page (WebGPU on SwiftShader and the
            CPU path); --big adds the > 4 GiB checkpoint run (minutes; a benchmark, not in CI);
            --only=REGEX runs the tests whose names match (after the page's start)

  bench     lowbit beside the reference tools on the same data and machine (BENCHMARKS.md):
            rate-distortion on all-MiniLM-L6-v2 (lowbit at 3, 4, 5, 7 bpw vs gguf Q8_0..Q4_0),
            lossless (lowbit vs zipnn and zstd, fp32 and bf16), kernels (SVD, k-means examples vs
            scikit-learn / numpy / faiss). Writes target/bench/latest.md and target/bench/latest.json.
            First run: fetches the real data (benches/fetch_data.sh) and creates target/bench-venv
            (several GB, minutes).

  --quick   lowbit at 4 bpw (with gguf Q4_0 beside it) and the kernels only
  --only S  one section: minilm, methods (MiniLM with --method hyper|turbo|sparse-lowrank and
            --allocator greedy|knapsack at 3, 4, 5 bpw), lossless, kernels, vectors, sequences,
            or web (MiniLM at 4 bpw in headless Chromium, wasm CPU and WebGPU, beside the native
            CLI on one thread; never in the full run: WebGPU on SwiftShader takes tens of minutes),
            runtime (the model runtime on SmolLM2-135M and MiniLM against the numpy reference:
            perplexity, embedding cosines, tokens per second), or speed (compression time and peak
            memory on MiniLM beside the build of an earlier commit, which it builds first, and on
            SmolLM2-135M; never in the full run), or llamacpp (llama.cpp's llama-quantize on
            SmolLM2-135M at Q8_0..Q2_K, with and without an imatrix from the tail of fortunes.txt,
            judged by lowbit eval; needs benches/build_llamacpp.sh's build; never in the full run)
  --repeat N  runs of each lowbit compress/decompress, median reported (default 1 lossy, 3 lossless)
  --xz      add xz -9e to the lossless references (about 4 minutes more)
  --keep    keep compressed and restored files in target/bench/work

environment: LOWBIT_DATA (data dir, default ~/.cache/lowbit-data),
             LOWBIT_BIN (measure this lowbit binary instead of building one),
             LLAMACPP_BIN (llama.cpp's tool folder; default: target/llama.cpp/build-*/bin)";

fn parse_bench(args: &[String]) -> Result<Options, String> {
    let mut options = Options {
        quick: false,
        only: None,
        repeat: None,
        xz: false,
        keep: false,
    };
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--quick" => options.quick = true,
            "--xz" => options.xz = true,
            "--keep" => options.keep = true,
            "--only" => {
                i += 1;
                options.only = Some(match args.get(i).map(String::as_str) {
                    Some("minilm") => Section::Minilm,
                    Some("methods") => Section::Methods,
                    Some("lossless") => Section::Lossless,
                    Some("kernels") => Section::Kernels,
                    Some("vectors") => Section::Vectors,
                    Some("sequences") => Section::Sequences,
                    Some("web") => Section::Web,
                    Some("runtime") => Section::Runtime,
                    Some("runtime-web") => Section::RuntimeWeb,
                    Some("speed") => Section::Speed,
                    Some("llamacpp") => Section::Llamacpp,
                    other => {
                        return Err(format!(
                            "--only takes minilm, methods, lossless, kernels, vectors, sequences, web, runtime, runtime-web, speed or llamacpp, not {other:?}"
                        ))
                    }
                });
            }
            "--repeat" => {
                i += 1;
                let n = args
                    .get(i)
                    .and_then(|s| s.parse::<usize>().ok())
                    .filter(|&n| n >= 1)
                    .ok_or("--repeat takes a positive integer")?;
                options.repeat = Some(n);
            }
            other => return Err(format!("unknown option {other}")),
        }
        i += 1;
    }
    Ok(options)
}

/// Exit code of a command: 0, or 1 with the error printed.
fn report(result: Result<(), String>) -> i32 {
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = match args.first().map(String::as_str) {
        Some("bench") => match parse_bench(&args[1..]) {
            Ok(options) => match bench::run(&options) {
                Ok(code) => code,
                Err(e) => {
                    eprintln!("error: {e}");
                    1
                }
            },
            Err(e) => {
                eprintln!("error: {e}\n\n{USAGE}");
                2
            }
        },
        Some("test") => match test::run() {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("error: {e}");
                1
            }
        },
        Some("serve") => {
            let port = match args.get(1).map(String::as_str) {
                Some("--port") => args.get(2).and_then(|p| p.parse().ok()),
                None => Some(8000),
                _ => None,
            };
            match port {
                Some(port) => report(web::serve(port)),
                None => {
                    eprintln!("error: serve takes --port N\n\n{USAGE}");
                    2
                }
            }
        }
        Some("build-web") => {
            let out = match args.get(1).map(String::as_str) {
                Some("--out") => args.get(2).map(std::path::PathBuf::from),
                None => {
                    Some(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/web"))
                }
                _ => None,
            };
            match out {
                Some(out) => report(web::build_web(&out)),
                None => {
                    eprintln!("error: build-web takes --out DIR\n\n{USAGE}");
                    2
                }
            }
        }
        Some("test-web") => report(web::test_web(&args[1..])),
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            0
        }
        Some(other) => {
            eprintln!("error: unknown command {other}\n\n{USAGE}");
            2
        }
        None => {
            eprintln!("{USAGE}");
            2
        }
    };
    std::process::exit(code);
}
