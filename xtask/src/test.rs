//! `cargo xtask test`: the README's test command. Sets up what the tests need and runs them all:
//! the library must also build for wasm32 (the browser target), then every Rust test.

use std::process::Command;

use crate::web;

pub fn run() -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    // The wasm32 standard library comes from rustup; a machine without rustup must have it already.
    if Command::new("rustup").arg("--version").output().is_ok() {
        web::run(
            "rustup target add wasm32-unknown-unknown",
            Command::new("rustup").args(["target", "add", "wasm32-unknown-unknown"]),
        )?;
    }
    web::run(
        "the library builds for wasm32 (the browser target)",
        Command::new(&cargo).args([
            "check",
            "--lib",
            "--no-default-features",
            "--target",
            "wasm32-unknown-unknown",
        ]),
    )?;
    web::run(
        "the library with its WebGPU backend builds for wasm32",
        Command::new(&cargo).args([
            "check",
            "--lib",
            "--no-default-features",
            "--features",
            "gpu",
            "--target",
            "wasm32-unknown-unknown",
        ]),
    )?;
    let (passed, failed) = cargo_test(&cargo)?;
    // One closing line over every test binary (cargo's own last line is the doc-test binary's).
    println!("{passed} passed, {failed} failed");
    if failed > 0 {
        return Err(format!("{failed} test(s) failed"));
    }
    crate::web::test_web(&[])
}

/// The count before `word` in a `test result:` line, e.g. `3` in `ok. 3 passed; 0 failed; ...`.
fn count(result: &str, word: &str) -> u64 {
    result
        .split(';')
        .filter_map(|part| part.trim().strip_suffix(word))
        .filter_map(|n| n.rsplit(' ').next()?.parse().ok())
        .next()
        .unwrap_or(0)
}

/// Runs `cargo test`, echoing its output as it comes, and adds up the `test result:` lines.
fn cargo_test(cargo: &str) -> Result<(u64, u64), String> {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    eprintln!("xtask test: cargo test (unit, integration, golden, hostile-input tests)");
    let mut child = Command::new(cargo)
        .arg("test")
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cargo test: cannot start: {e}"))?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let (mut passed, mut failed) = (0u64, 0u64);
    for line in BufReader::new(stdout).lines() {
        let line = line.map_err(|e| format!("cargo test: {e}"))?;
        println!("{line}");
        if let Some(result) = line.strip_prefix("test result: ") {
            passed += count(result, " passed");
            failed += count(result, " failed");
        }
    }
    let status = child.wait().map_err(|e| format!("cargo test: {e}"))?;
    if !status.success() && failed == 0 {
        return Err(format!("cargo test failed ({status})"));
    }
    Ok((passed, failed))
}
