//! The CLI end to end: round trips for every codec and dtype, determinism, targets, reports, and the
//! hostile inputs that must fail cleanly (non-zero exit, the file named, no output left behind,
//! the input untouched).

use std::fs;

use crate::common::*;
use lowbit::dtype::DType;

fn compress_ok(dir: &std::path::Path, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["compress", "in.safetensors", "-o", "out.lowbit", "--json"];
    args.extend_from_slice(extra);
    let o = lowbit(&args, dir);
    assert!(o.status.success(), "compress failed: {}", stderr(&o));
    serde_json::from_slice(&o.stdout).expect("--json prints the report")
}

fn decompress_ok(dir: &std::path::Path) -> Vec<u8> {
    let o = lowbit(
        &[
            "decompress",
            "out.lowbit",
            "-o",
            "restored.safetensors",
            "--quiet",
        ],
        dir,
    );
    assert!(o.status.success(), "decompress failed: {}", stderr(&o));
    fs::read(dir.join("restored.safetensors")).unwrap()
}

#[test]
fn round_trip_every_method_and_dtype() {
    let dir = tempfile::tempdir().unwrap();
    let input = mixed_checkpoint();
    fs::write(dir.path().join("in.safetensors"), &input).unwrap();
    for method in [
        "auto",
        "scalar",
        "vq",
        "lowrank",
        "sparse-lowrank",
        "fwsvd",
        "hyper",
        "turbo",
        "lossless",
    ] {
        let bpw = if method == "lossless" { "32" } else { "12" };
        let report = compress_ok(dir.path(), &["--method", method, "--bpw", bpw]);
        let restored = decompress_ok(dir.path());
        let (orig, back) = (tensors_of(&input), tensors_of(&restored));
        assert_eq!(
            orig.keys().collect::<Vec<_>>(),
            back.keys().collect::<Vec<_>>(),
            "{method}: same names"
        );
        for (name, (dtype, shape, bytes)) in &orig {
            let (d2, s2, b2) = &back[name];
            assert_eq!(
                (dtype, shape),
                (d2, s2),
                "{method}: {name} keeps dtype and shape"
            );
            let exact = !dtype.is_lossy_compressible() || shape.len() < 2 || method == "lossless";
            if exact {
                assert_eq!(bytes, b2, "{method}: {name} must come back bit-exact");
            } else if !bytes.is_empty() {
                // At 12 bits per weight the allocator can afford accurate options; vq and low rank,
                // when forced, only offer what pays for itself on these small tensors.
                let bound = if matches!(method, "auto" | "scalar") {
                    0.01
                } else {
                    0.75
                };
                let err = rel_error(*dtype, bytes, b2);
                assert!(err < bound, "{method}: {name} rel. error {err}");
            }
        }
        let bpw = report["output"]["bits_per_weight"].as_f64().unwrap();
        let size = fs::metadata(dir.path().join("out.lowbit")).unwrap().len();
        let params = report["input"]["parameters"].as_u64().unwrap();
        assert!(
            (bpw - 8.0 * size as f64 / params as f64).abs() < 1e-9,
            "reported bpw is the file's"
        );
        if method == "lossless" {
            assert_eq!(
                restored, input,
                "lossless restores the whole file byte for byte"
            );
        }
    }
}

#[test]
fn budget_is_met_and_output_is_the_same_on_any_number_of_threads() {
    let dir = tempfile::tempdir().unwrap();
    let input = mixed_checkpoint();
    fs::write(dir.path().join("in.safetensors"), &input).unwrap();
    let params: u64 = tensors_of(&input)
        .values()
        .map(|(_, s, _)| s.iter().product::<usize>() as u64)
        .sum();
    let mut previous_error = f64::INFINITY;
    for bpw in [3.0, 4.0, 6.0] {
        // Once on three threads, once on one: the analysis spreads each tensor's options over
        // the threads, and the file must not depend on it.
        compress_ok(dir.path(), &["--bpw", &bpw.to_string(), "--threads", "3"]);
        let first = fs::read(dir.path().join("out.lowbit")).unwrap();
        assert!(
            8.0 * first.len() as f64 / params as f64 <= bpw,
            "file within {bpw} bpw"
        );
        compress_ok(dir.path(), &["--bpw", &bpw.to_string(), "--threads", "1"]);
        assert_eq!(
            first,
            fs::read(dir.path().join("out.lowbit")).unwrap(),
            "byte-identical at {bpw} bpw on 3 threads and on 1"
        );
        let restored = decompress_ok(dir.path());
        let (o, r) = (tensors_of(&input), tensors_of(&restored));
        let err = rel_error(DType::F32, &o["layer.0.weight"].2, &r["layer.0.weight"].2);
        assert!(err <= previous_error + 1e-12, "more bits, less error");
        previous_error = err;
    }
}

#[test]
fn max_error_bounds_every_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let input = mixed_checkpoint();
    fs::write(dir.path().join("in.safetensors"), &input).unwrap();
    compress_ok(dir.path(), &["--max-error", "0.05"]);
    let restored = decompress_ok(dir.path());
    for (name, (dtype, shape, bytes)) in tensors_of(&input) {
        if dtype.is_lossy_compressible() && !bytes.is_empty() {
            let err = rel_error(dtype, &bytes, &tensors_of(&restored)[&name].2);
            assert!(err <= 0.05 + 1e-6, "{name} {shape:?}: {err}");
        }
    }
}

#[test]
fn keep_override_applies_by_pattern() {
    let dir = tempfile::tempdir().unwrap();
    let input = mixed_checkpoint();
    fs::write(dir.path().join("in.safetensors"), &input).unwrap();
    let report = compress_ok(dir.path(), &["--bpw", "16", "--keep", "layer.0.*=lossless"]);
    let restored = decompress_ok(dir.path());
    assert_eq!(
        tensors_of(&input)["layer.0.weight"],
        tensors_of(&restored)["layer.0.weight"]
    );
    let t = report["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "layer.0.weight")
        .unwrap();
    assert_eq!(t["codec"]["codec"], "lossless");
}

#[test]
fn nan_and_inf_tensors_are_stored_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = weights(9, 64, 64);
    w[5] = f32::NAN;
    w[77] = f32::INFINITY;
    let input = safetensors_file(&[
        (
            "bad",
            DType::F32,
            vec![64, 64],
            lowbit::dtype::from_f32(DType::F32, &w),
        ),
        (
            "good",
            DType::F32,
            vec![64, 64],
            lowbit::dtype::from_f32(DType::F32, &weights(3, 64, 64)),
        ),
    ]);
    fs::write(dir.path().join("in.safetensors"), &input).unwrap();
    let report = compress_ok(dir.path(), &["--bpw", "24"]);
    let restored = decompress_ok(dir.path());
    assert_eq!(tensors_of(&input)["bad"], tensors_of(&restored)["bad"]);
    let bad = report["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "bad")
        .unwrap();
    assert_eq!(bad["non_finite"], 2);
    assert!(
        report["notes"][0].as_str().unwrap().contains("bad"),
        "the report says which tensor"
    );
}

#[test]
fn plan_writes_nothing_and_predicts_the_size() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("in.safetensors"), mixed_checkpoint()).unwrap();
    let o = lowbit(
        &["plan", "in.safetensors", "--bpw", "4", "--json"],
        dir.path(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let plan: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        fs::read_dir(dir.path()).unwrap().count(),
        1,
        "plan wrote nothing"
    );
    let report = compress_ok(dir.path(), &["--bpw", "4"]);
    assert_eq!(
        plan["output"]["bytes"], report["output"]["bytes"],
        "the plan's size is the real size"
    );
}

/// The default measures the scalar ladder's one-bit rungs and refines near the choice;
/// `--exhaustive` measures every rung. Both plans are exact (no size estimated) and within the
/// budget, and `compress --exhaustive` writes the file its plan predicts.
#[test]
fn exhaustive_measures_the_whole_ladder() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("in.safetensors"), mixed_checkpoint()).unwrap();
    let scalar_options = |extra: &[&str]| {
        let mut args = vec!["plan", "in.safetensors", "--bpw", "4", "--json"];
        args.extend_from_slice(extra);
        let o = lowbit(&args, dir.path());
        assert!(o.status.success(), "{}", stderr(&o));
        let plan: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert!(
            plan["output"].get("sizes_estimated").is_none(),
            "a plan's sizes are coded"
        );
        assert!(plan["output"]["bits_per_weight"].as_f64().unwrap() <= 4.0);
        let count = plan["tensors"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|t| t["options"].as_array().unwrap())
            .filter(|o| o["label"].as_str().unwrap().starts_with("scalar"))
            .count();
        (count, plan["output"]["bytes"].clone())
    };
    let (refined, _) = scalar_options(&[]);
    let (whole, bytes) = scalar_options(&["--exhaustive"]);
    assert!(refined < whole, "{refined} scalar options against {whole}");
    let report = compress_ok(dir.path(), &["--bpw", "4", "--exhaustive"]);
    assert_eq!(report["output"]["bytes"], bytes);
}

#[test]
fn inspect_and_report_files() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("in.safetensors"), mixed_checkpoint()).unwrap();
    compress_ok(dir.path(), &["--report", "rep"]);
    let html = fs::read_to_string(dir.path().join("rep/report.html")).unwrap();
    assert!(html.contains("<svg") && html.contains("layer.0.weight"));
    let json: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.path().join("rep/report.json")).unwrap()).unwrap();
    assert_eq!(json["schema_version"], 1);
    for file in ["in.safetensors", "out.lowbit"] {
        let o = lowbit(&["inspect", file, "--json"], dir.path());
        assert!(o.status.success(), "{}", stderr(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(v["tensors"].as_array().unwrap().len(), 7);
    }
}

#[test]
fn npy_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let w = weights(4, 100, 32);
    let mut file = lowbit::io::npy::encode_header(DType::F32, &[100, 32]).unwrap();
    file.extend(lowbit::dtype::from_f32(DType::F32, &w));
    fs::write(dir.path().join("a.npy"), &file).unwrap();
    let o = lowbit(
        &[
            "compress", "a.npy", "-o", "a.lowbit", "--bpw", "7", "--quiet",
        ],
        dir.path(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let o = lowbit(
        &["decompress", "a.lowbit", "-o", "b.npy", "--quiet"],
        dir.path(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let back = fs::read(dir.path().join("b.npy")).unwrap();
    let h = lowbit::io::npy::read_header(&back).unwrap();
    assert_eq!(h.shape, vec![100, 32]);
    assert!(rel_error(DType::F32, &file[h.data_start..], &back[h.data_start..]) < 0.1);
}

#[test]
fn demo_runs() {
    let dir = tempfile::tempdir().unwrap();
    let o = lowbit(&["demo", "--out", "d"], dir.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("bits per weight"), "{out}");
    for f in [
        "demo.lowbit",
        "demo.restored.safetensors",
        "report.html",
        "report.json",
    ] {
        assert!(dir.path().join("d").join(f).exists(), "{f}");
    }
}

/// Asserts a clean failure: non-zero exit, `needles` in the message, no output, input untouched.
fn assert_fails(dir: &std::path::Path, args: &[&str], input: &str, needles: &[&str]) {
    let before = fs::read(dir.join(input)).ok();
    let listing = |d: &std::path::Path| {
        let mut v: Vec<_> = fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        v.sort();
        v
    };
    let files_before = listing(dir);
    let o = lowbit(args, dir);
    let err = stderr(&o);
    assert!(!o.status.success(), "{args:?} should fail");
    assert!(err.starts_with("error: "), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    for n in needles {
        assert!(err.contains(n), "{args:?}: '{n}' not in: {err}");
    }
    assert_eq!(listing(dir), files_before, "{args:?} left files behind");
    assert_eq!(fs::read(dir.join(input)).ok(), before, "the input changed");
}

#[test]
fn hostile_inputs_fail_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let good = mixed_checkpoint();
    fs::write(d.join("empty.safetensors"), b"").unwrap();
    assert_fails(
        d,
        &["compress", "empty.safetensors", "-o", "x.lowbit"],
        "empty.safetensors",
        &["empty.safetensors", "empty"],
    );
    fs::write(d.join("trunc.safetensors"), &good[..good.len() - 100]).unwrap();
    assert_fails(
        d,
        &["compress", "trunc.safetensors", "-o", "x.lowbit"],
        "trunc.safetensors",
        &["trunc.safetensors"],
    );
    fs::write(d.join("short.safetensors"), &good[..5]).unwrap();
    assert_fails(
        d,
        &["compress", "short.safetensors", "-o", "x.lowbit"],
        "short.safetensors",
        &["short.safetensors"],
    );
    let mut huge = (u64::MAX / 2).to_le_bytes().to_vec();
    huge.extend_from_slice(b"{}");
    fs::write(d.join("huge.safetensors"), &huge).unwrap();
    assert_fails(
        d,
        &["compress", "huge.safetensors", "-o", "x.lowbit"],
        "huge.safetensors",
        &["huge.safetensors"],
    );
    fs::write(
        d.join("garbage.safetensors"),
        b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!",
    )
    .unwrap();
    assert_fails(
        d,
        &["compress", "garbage.safetensors", "-o", "x.lowbit"],
        "garbage.safetensors",
        &["garbage.safetensors"],
    );
    // Unknown dtype, named with its tensor.
    let h = br#"{"w":{"dtype":"F4","shape":[2],"data_offsets":[0,1]}}"#;
    let mut f = (h.len() as u64).to_le_bytes().to_vec();
    f.extend_from_slice(h);
    f.push(0);
    fs::write(d.join("f4.safetensors"), &f).unwrap();
    assert_fails(
        d,
        &["compress", "f4.safetensors", "-o", "x.lowbit"],
        "f4.safetensors",
        &["f4.safetensors", "F4"],
    );
    // Output equal to input.
    fs::write(d.join("in.safetensors"), &good).unwrap();
    assert_fails(
        d,
        &["compress", "in.safetensors", "-o", "in.safetensors"],
        "in.safetensors",
        &["in.safetensors"],
    );
    assert_fails(
        d,
        &["compress", "in.safetensors", "-o", "./in.safetensors"],
        "in.safetensors",
        &["in.safetensors"],
    );
    // Unwritable output path.
    assert_fails(
        d,
        &["compress", "in.safetensors", "-o", "no/such/dir/x.lowbit"],
        "in.safetensors",
        &["no/such/dir/x.lowbit"],
    );
    // A budget no file can meet.
    assert_fails(
        d,
        &[
            "compress",
            "in.safetensors",
            "-o",
            "x.lowbit",
            "--bpw",
            "0.01",
        ],
        "in.safetensors",
        &["--bpw"],
    );
    // A missing file.
    assert_fails(
        d,
        &["compress", "nope.safetensors", "-o", "x.lowbit"],
        "in.safetensors",
        &["nope.safetensors"],
    );
    // Decompressing something that is not a .lowbit.
    assert_fails(
        d,
        &["decompress", "in.safetensors", "-o", "x.safetensors"],
        "in.safetensors",
        &["in.safetensors", "not a .lowbit"],
    );
}

#[test]
fn corrupt_lowbit_files_fail_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fs::write(d.join("in.safetensors"), mixed_checkpoint()).unwrap();
    compress_ok(d, &["--bpw", "4", "--method", "scalar"]);
    fs::remove_file(d.join("in.safetensors")).unwrap();
    let good = fs::read(d.join("out.lowbit")).unwrap();
    let header_len = u64::from_le_bytes(good[..8].try_into().unwrap()) as usize;
    // Damage inside the sections (no section of this file is padded, so every byte is coded).
    let mut rng = lowbit::rng::Rng::new(5);
    for _ in 0..40 {
        let mut bad = good.clone();
        let at = 8 + header_len + rng.below((good.len() - 8 - header_len) as u64) as usize;
        bad[at] ^= 1 << rng.below(8);
        fs::write(d.join("bad.lowbit"), &bad).unwrap();
        // Every damaged section is caught by its checksum, named, and nothing is written.
        assert_fails(
            d,
            &["decompress", "bad.lowbit", "-o", "x.safetensors"],
            "bad.lowbit",
            &["bad.lowbit", "damaged"],
        );
    }
    // A manifest that claims far more output than its section can hold: a decompression bomb.
    let text = String::from_utf8_lossy(&good[8..8 + header_len]).into_owned();
    let bomb = text.replacen("[96,128]", "[96000000,128000]", 1);
    assert_ne!(bomb, text);
    let mut file = (bomb.len() as u64).to_le_bytes().to_vec();
    file.extend_from_slice(bomb.as_bytes());
    file.extend_from_slice(&good[8 + header_len..]);
    fs::write(d.join("bomb.lowbit"), &file).unwrap();
    assert_fails(
        d,
        &["decompress", "bomb.lowbit", "-o", "x.safetensors"],
        "bomb.lowbit",
        &["bomb.lowbit", "decompression bomb"],
    );
    // A truncated .lowbit.
    fs::write(d.join("cut.lowbit"), &good[..good.len() / 2]).unwrap();
    assert_fails(
        d,
        &["decompress", "cut.lowbit", "-o", "x.safetensors"],
        "cut.lowbit",
        &["cut.lowbit"],
    );
}

#[test]
fn lossless_restores_a_foreign_header_byte_for_byte() {
    // A header laid out the way another writer might: metadata last, spaces, keys out of order.
    let a: Vec<u8> = lowbit::dtype::from_f32(DType::F32, &weights(6, 32, 48));
    let b: Vec<u8> = (0..10i64).flat_map(|i| i.to_le_bytes()).collect();
    let json = format!(
        r#"{{ "b": {{"dtype": "I64", "shape": [10], "data_offsets": [0, 80]}}, "a": {{"shape": [32, 48], "dtype": "F32", "data_offsets": [80, {}]}}, "__metadata__": {{"format": "pt"}} }}  "#,
        80 + a.len()
    );
    let mut file = (json.len() as u64).to_le_bytes().to_vec();
    file.extend_from_slice(json.as_bytes());
    file.extend_from_slice(&b);
    file.extend_from_slice(&a);
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("in.safetensors"), &file).unwrap();
    compress_ok(dir.path(), &["--method", "lossless"]);
    assert_eq!(
        decompress_ok(dir.path()),
        file,
        "the very same file comes back"
    );
    // A lossy run restores the tensors under lowbit's own header layout.
    compress_ok(dir.path(), &["--bpw", "12"]);
    let restored = decompress_ok(dir.path());
    assert_eq!(tensors_of(&restored)["b"], tensors_of(&file)["b"]);
}
