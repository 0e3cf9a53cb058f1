//! `cargo xtask test`: the README's test command. Sets up what the tests need and runs them all:
//! the library must also build for wasm32 (the browser target), then every Rust test.

use std::process::Command;

fn step(what: &str, cmd: &mut Command) -> Result<(), String> {
    eprintln!("xtask test: {what}");
    let status = cmd
        .status()
        .map_err(|e| format!("{what}: cannot start: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{what}: failed ({status})"))
    }
}

pub fn run() -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    // The wasm32 standard library comes from rustup; a machine without rustup must have it already.
    if Command::new("rustup").arg("--version").output().is_ok() {
        step(
            "rustup target add wasm32-unknown-unknown",
            Command::new("rustup").args(["target", "add", "wasm32-unknown-unknown"]),
        )?;
    }
    step(
        "the library builds for wasm32 (the browser target)",
        Command::new(&cargo).args([
            "check",
            "--lib",
            "--no-default-features",
            "--target",
            "wasm32-unknown-unknown",
        ]),
    )?;
    step(
        "cargo test (unit, integration, golden, hostile-input tests)",
        Command::new(&cargo).args(["test"]),
    )?;
    Ok(())
}
