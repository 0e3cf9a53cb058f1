//! The report's per-tensor "why" against the allocator's own data, and fwsvd's importance file
//! through the library (validation, the report's note, a file that decodes).

use crate::common;

use lowbit::codec::Method;
use lowbit::dtype::{self, DType};
use lowbit::{CompressOptions, NoProgress, Report, Target};

fn compress(input: &[u8], opts: &CompressOptions) -> lowbit::Result<(Vec<u8>, Report)> {
    let mut out = Vec::new();
    let report = lowbit::compress(input, "mixed.safetensors", opts, &mut NoProgress, &mut out)?;
    Ok((out, report))
}

/// Section bytes of an option, back from the report's bits per weight.
fn bytes_of(bpw: f64, parameters: u64) -> i64 {
    (bpw * parameters as f64 / 8.0).round() as i64
}

/// Every tensor's `why` names a rule, and its neighbours are real options of the tensor, with
/// the byte and error differences the options table shows, on the right sides of the chosen one.
fn check_why(report: &Report, allowed_rules: &[&str]) {
    for t in &report.tensors {
        let w = &t.why;
        assert!(
            allowed_rules.contains(&w.rule.as_str()),
            "{}: rule {} ({})",
            t.name,
            w.rule,
            w.text
        );
        assert_eq!(t.reason, w.text);
        assert!(!w.text.contains("  "), "{}: {}", t.name, w.text);
        let chosen = t.options.iter().find(|o| o.chosen).expect("one chosen");
        for (n, up) in [(&w.dearer, true), (&w.cheaper, false)] {
            let Some(n) = n else { continue };
            let o = t
                .options
                .iter()
                .find(|o| o.label == n.label)
                .unwrap_or_else(|| panic!("{}: neighbour {} is not an option", t.name, n.label));
            let delta = bytes_of(o.bits_per_weight, t.parameters)
                - bytes_of(chosen.bits_per_weight, t.parameters);
            assert_eq!(n.bytes_delta, delta, "{}: {}", t.name, n.label);
            assert!((n.rel_mse_delta - (o.rel_mse - chosen.rel_mse)).abs() < 1e-12);
            assert_eq!(n.bytes_delta > 0, up, "{}", t.name);
            // Dearer means better, cheaper means worse (on the front; in error mode the cheaper
            // one misses the bound).
            assert_eq!(n.rel_mse_delta < 0.0, up, "{}", t.name);
            if !up || w.rule != "max-error" {
                assert!(w.text.contains(&n.label), "{}: {}", t.name, w.text);
            }
        }
    }
}

#[test]
fn why_per_tensor_comes_from_the_allocators_data() {
    let input = common::mixed_checkpoint();
    for allocator in lowbit::alloc::Allocator::ALL {
        let mut opts = CompressOptions::new(Target::BitsPerWeight(3.0));
        opts.allocator = allocator;
        opts.spectra = false;
        opts.backend = lowbit::BackendChoice::Cpu;
        let (_, report) = compress(&input, &opts).unwrap();
        check_why(&report, &[allocator.name(), "exact", "restricted"]);
        let lossy: Vec<_> = report
            .tensors
            .iter()
            .filter(|t| t.why.rule == allocator.name())
            .collect();
        assert!(
            !lossy.is_empty(),
            "{allocator:?}: no tensor went through the allocator"
        );
        // At 3 bpw the matrices sit between options: each has a dearer one and says what it costs.
        for t in &lossy {
            assert!(t.why.dearer.is_some(), "{}: {}", t.name, t.why.text);
            assert!(t.why.text.contains("would cost +"), "{}", t.why.text);
        }
        let norm = report
            .tensors
            .iter()
            .find(|t| t.name == "layer.0.norm")
            .unwrap();
        assert_eq!(norm.why.rule, "restricted");
        assert!(norm.why.text.contains("1-D tensor"), "{}", norm.why.text);
        assert!(report.to_html().contains("would cost +"));
    }
    // Error mode: the cheapest option within the bound, and the next cheaper one misses it.
    let mut opts = CompressOptions::new(Target::MaxError(0.05));
    opts.spectra = false;
    opts.backend = lowbit::BackendChoice::Cpu;
    let (_, report) = compress(&input, &opts).unwrap();
    check_why(&report, &["max-error", "exact", "restricted"]);
    let t = report
        .tensors
        .iter()
        .find(|t| t.name == "layer.0.weight")
        .unwrap();
    assert_eq!(t.why.rule, "max-error");
    assert!(t.rel_error <= 0.05);
    assert!(t.why.text.contains("next cheaper option"), "{}", t.why.text);
    // A forced method says so.
    let mut opts = CompressOptions::new(Target::BitsPerWeight(4.0));
    opts.method = Some(Method::Hyper);
    opts.spectra = false;
    opts.backend = lowbit::BackendChoice::Cpu;
    let (_, report) = compress(&input, &opts).unwrap();
    let t = report
        .tensors
        .iter()
        .find(|t| t.name == "layer.0.weight")
        .unwrap();
    assert_eq!(t.why.forced_method.as_deref(), Some("hyper"));
    assert!(t.why.text.starts_with("--method hyper: "), "{}", t.why.text);
}

fn importance_file(tensors: &[(&str, Vec<usize>, Vec<f32>)]) -> Vec<u8> {
    let entries: Vec<(&str, DType, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(n, s, v)| (*n, DType::F32, s.clone(), dtype::from_f32(DType::F32, v)))
        .collect();
    common::safetensors_file(&entries)
}

#[test]
fn importance_file_is_validated_used_and_reported() {
    let input = common::mixed_checkpoint();
    let rows: Vec<f32> = (0..96).map(|r| 1.0 + (r % 5) as f32).collect();
    let good = importance_file(&[
        ("layer.0.weight", vec![96], rows.clone()),
        ("not.in.the.checkpoint", vec![3], vec![1.0; 3]),
    ]);
    let map = lowbit::checkpoint::importance_map(&good, "fisher.safetensors").unwrap();
    let mut opts = CompressOptions::new(Target::BitsPerWeight(4.0));
    opts.method = Some(Method::Fwsvd);
    opts.spectra = false;
    opts.backend = lowbit::BackendChoice::Cpu;
    opts.importance = Some(map.clone());
    let (out, report) = compress(&input, &opts).unwrap();
    let t = report
        .tensors
        .iter()
        .find(|t| t.name == "layer.0.weight")
        .unwrap();
    assert!(t.label.starts_with("fwsvd file"), "{}", t.label);
    let other = report
        .tensors
        .iter()
        .find(|t| t.name == "layer.1.weight")
        .unwrap();
    assert!(!other.label.contains("file"), "{}", other.label);
    let note = report
        .notes
        .iter()
        .find(|n| n.contains("fisher.safetensors"))
        .expect("a note on the importance file");
    assert!(note.contains("weighted 1 tensor"), "{note}");
    assert!(note.contains("layer.1.weight"), "{note}");
    assert!(note.contains("1 entr(ies) match no tensor"), "{note}");
    let mut restored = Vec::new();
    lowbit::decompress(&out, "x.lowbit", &mut NoProgress, &mut restored).unwrap();
    // The same input and importance give the same bytes.
    assert_eq!(compress(&input, &opts).unwrap().0, out);

    // Auto tries fwsvd with the file for that tensor (and only that one).
    let mut auto = opts.clone();
    auto.method = None;
    let (_, report) = compress(&input, &auto).unwrap();
    let labels = |name: &str| -> Vec<String> {
        report
            .tensors
            .iter()
            .find(|t| t.name == name)
            .unwrap()
            .options
            .iter()
            .map(|o| o.label.clone())
            .collect()
    };
    assert!(labels("layer.0.weight")
        .iter()
        .any(|l| l.starts_with("fwsvd file")));
    assert!(!labels("layer.1.weight")
        .iter()
        .any(|l| l.starts_with("fwsvd")));

    // Bad entries: a clear error naming the file and the tensor.
    let per_element = vec![1.0f32; 96 * 128];
    for (shape, values, what) in [
        (vec![95], vec![1.0f32; 95], "shape"),
        (
            vec![96],
            {
                let mut v = rows.clone();
                v[3] = f32::NAN;
                v
            },
            "finite",
        ),
        (
            vec![96, 128],
            {
                let mut v = per_element.clone();
                v[7] = -1.0;
                v
            },
            "negative",
        ),
        (vec![96], vec![0.0; 96], "zero"),
    ] {
        let bad = importance_file(&[("layer.0.weight", shape, values)]);
        let mut o = opts.clone();
        o.importance = Some(lowbit::checkpoint::importance_map(&bad, "bad.safetensors").unwrap());
        let e = compress(&input, &o).unwrap_err().to_string();
        assert!(
            e.contains("bad.safetensors") && e.contains("layer.0.weight") && e.contains(what),
            "{e}"
        );
    }
    // Per-element weights work (summed over each row).
    let elem = importance_file(&[("layer.0.weight", vec![96, 128], per_element)]);
    let mut o = opts.clone();
    o.importance = Some(lowbit::checkpoint::importance_map(&elem, "elem.safetensors").unwrap());
    compress(&input, &o).unwrap();
    // A non-float importance tensor is refused when the file is read.
    let ints = common::safetensors_file(&[("x", DType::I64, vec![1], 1i64.to_le_bytes().to_vec())]);
    let e = lowbit::checkpoint::importance_map(&ints, "ints.safetensors").unwrap_err();
    assert!(e.to_string().contains("ints.safetensors"), "{e}");
}

/// `--importance FILE` on the command line: `plan` and `compress` read it; a bad entry fails
/// with a message naming the file and the tensor.
#[test]
fn importance_flag_on_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("in.safetensors"),
        common::mixed_checkpoint(),
    )
    .unwrap();
    let rows: Vec<f32> = (0..96).map(|r| 1.0 + (r % 3) as f32).collect();
    std::fs::write(
        dir.path().join("imp.safetensors"),
        importance_file(&[("layer.0.weight", vec![96], rows)]),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("bad.safetensors"),
        importance_file(&[("layer.0.weight", vec![7], vec![1.0; 7])]),
    )
    .unwrap();
    let common_args = ["--method", "fwsvd", "--bpw", "4", "--backend", "cpu"];
    let mut plan = vec![
        "--json",
        "plan",
        "in.safetensors",
        "--importance",
        "imp.safetensors",
    ];
    plan.extend(common_args);
    let o = common::lowbit(&plan, dir.path());
    assert!(o.status.success(), "{}", common::stderr(&o));
    let json = String::from_utf8_lossy(&o.stdout);
    assert!(json.contains("fwsvd file"), "{json}");
    assert!(json.contains("importance file imp.safetensors"), "{json}");
    let mut compress = vec![
        "--quiet",
        "compress",
        "in.safetensors",
        "-o",
        "out.lowbit",
        "--importance",
        "bad.safetensors",
    ];
    compress.extend(common_args);
    let o = common::lowbit(&compress, dir.path());
    assert!(!o.status.success());
    let e = common::stderr(&o);
    assert!(
        e.contains("bad.safetensors") && e.contains("layer.0.weight"),
        "{e}"
    );
    assert!(!dir.path().join("out.lowbit").exists());
}
