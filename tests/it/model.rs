//! The model runtime against reference outputs of an independent implementation: the tiny models
//! in tests/fixtures/models and their `reference.json` were made by benches/make_tiny_models.py,
//! whose float64 numpy forward pass (benches/model_reference.py) shares no code with the runtime.

use std::path::{Path, PathBuf};

use lowbit::model::eval::{self, Downstream, EvalOptions};
use lowbit::model::sample::Sampler;
use lowbit::model::weights::SafetensorsWeights;
use lowbit::model::{Model, ModelFiles};
use serde_json::Value;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/models")
        .join(name)
}

/// The model files of a fixture folder (what `compress` would store beside the weights).
pub fn model_files(dir: &Path) -> ModelFiles {
    let mut files = ModelFiles::new();
    for name in lowbit::model::files::MODEL_FILE_NAMES {
        if let Ok(bytes) = std::fs::read(dir.join(name)) {
            files.insert(name, bytes).unwrap();
        }
    }
    files
}

fn load(name: &str, weights: &str) -> Model {
    let dir = fixture(name);
    let bytes = std::fs::read(dir.join(weights)).unwrap();
    let source = SafetensorsWeights::new(&bytes).unwrap();
    Model::load(&model_files(&dir), &source).unwrap()
}

fn reference(name: &str) -> Value {
    serde_json::from_slice(&std::fs::read(fixture(name).join("reference.json")).unwrap()).unwrap()
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .flat_map(|x| match x {
            Value::Array(_) => floats(x),
            x => vec![x.as_f64().unwrap()],
        })
        .collect()
}

fn ids(v: &Value) -> Vec<u32> {
    floats(v).into_iter().map(|x| x as u32).collect()
}

/// The largest difference relative to the largest reference magnitude.
fn relative_error(got: &[f32], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    got.iter()
        .zip(want)
        .map(|(g, w)| (*g as f64 - w).abs())
        .fold(0.0, f64::max)
        / scale
}

#[test]
fn encoder_embeddings_match_the_reference() {
    let Model::Encoder(bert) = load("tiny-bert", "model.safetensors") else {
        panic!("tiny-bert is an encoder")
    };
    let r = reference("tiny-bert");
    let sentences: Vec<String> = r["sentences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect();
    for (s, want) in sentences.iter().zip(r["ids"].as_array().unwrap()) {
        assert_eq!(bert.tokenizer.encode(s).unwrap(), ids(want), "ids of {s:?}");
    }
    let got = bert.embed_sentences(&sentences).unwrap();
    for (g, w) in got.iter().zip(r["embeddings"].as_array().unwrap()) {
        let err = relative_error(g, &floats(w));
        assert!(err < 1e-5, "embedding error {err}");
    }
}

#[test]
fn encoder_eval_matches_the_reference() {
    let (a, b) = (
        load("tiny-bert", "model.safetensors"),
        load("tiny-bert", "perturbed.safetensors"),
    );
    let (Model::Encoder(a), Model::Encoder(b)) = (&a, &b) else {
        panic!("encoders")
    };
    let r = &reference("tiny-bert")["eval_encoder"];
    let text = std::fs::read_to_string(fixture("tiny-bert").join("sentences.txt")).unwrap();
    let sentences: Vec<String> = text.lines().map(str::to_string).collect();
    let e = eval::compare_embeddings(
        &a.embed_sentences(&sentences).unwrap(),
        &b.embed_sentences(&sentences).unwrap(),
    );
    assert_eq!(e.sentences, 6);
    assert!((e.cosine_mean - r["cos_mean"].as_f64().unwrap()).abs() < 1e-6);
    assert!((e.cosine_min - r["cos_min"].as_f64().unwrap()).abs() < 1e-6);
    assert_eq!(e.neighbour_agreement, r["nn_agreement"].as_f64().unwrap());
}

fn check_decoder(name: &str) {
    let mut model = load(name, "model.safetensors");
    let Model::Decoder(llama) = &mut model else {
        panic!("{name} is a decoder")
    };
    // The reference generates a fixed number of tokens, end-of-sequence or not.
    llama.config.eos_token_ids.clear();
    let r = reference(name);
    let vocab = llama.config.vocab_size;
    for p in r["prompts"].as_array().unwrap() {
        let text = p["text"].as_str().unwrap();
        let prompt = llama.tokenizer.encode(text).unwrap();
        assert_eq!(prompt, ids(&p["ids"]), "{name}: ids of {text:?}");
        let states = llama.forward(&prompt, &mut llama.new_cache()).unwrap();
        let logits = llama.logits(&states, prompt.len());
        assert_eq!(logits.len(), prompt.len() * vocab);
        let err = relative_error(&logits, &floats(&p["logits"]));
        assert!(err < 1e-5, "{name}: logits error {err} on {text:?}");
        // One token at a time through the cache gives the same last logits as the whole prompt.
        let mut cache = llama.new_cache();
        let mut last = Vec::new();
        for &t in &prompt {
            last = llama.forward(&[t], &mut cache).unwrap();
        }
        let step = llama.logits(&last, 1);
        let err = relative_error(&step, &floats(&p["logits"])[(prompt.len() - 1) * vocab..]);
        assert!(err < 1e-5, "{name}: cached logits error {err}");
        let max = r["max_tokens"].as_u64().unwrap() as usize;
        let generated = llama
            .generate(&prompt, max, &mut Sampler::greedy(), &mut |_| true)
            .unwrap();
        assert_eq!(
            generated,
            ids(&p["generated_ids"]),
            "{name}: greedy continuation"
        );
        assert_eq!(
            llama.tokenizer.decode(&generated).unwrap(),
            p["generated_text"].as_str().unwrap()
        );
    }
    let e = &r["eval_decoder"];
    let text = std::fs::read_to_string(fixture(name).join("text.txt")).unwrap();
    assert_eq!(llama.tokenizer.encode(&text).unwrap(), ids(&r["text_ids"]));
    let restored = load(name, "perturbed.safetensors");
    let options = EvalOptions {
        tokens: e["tokens_arg"].as_u64().unwrap() as usize,
        context: e["ctx"].as_u64().unwrap() as usize,
        ..EvalOptions::default()
    };
    let Downstream::Decoder(d) = eval::compare(&model, &restored, &text, &options).unwrap() else {
        panic!("decoder figures")
    };
    assert_eq!(
        (d.tokens, d.windows, d.scored),
        (100, 7, e["scored_positions"].as_u64().unwrap() as usize)
    );
    let close = |got: f64, key: &str| {
        let want = e[key].as_f64().unwrap();
        assert!(
            (got - want).abs() <= 1e-4 * want.abs(),
            "{name}: {key} {got} vs {want}"
        );
    };
    close(d.perplexity_original, "ppl_orig");
    close(d.perplexity_compressed, "ppl_restored");
    close(d.kl_mean, "kl_mean");
    assert_eq!(d.top1_agreement, e["top1_agree"].as_f64().unwrap());
}

#[test]
fn decoder_with_biases_and_its_own_head_matches_the_reference() {
    check_decoder("tiny-llama");
}

#[test]
fn decoder_with_tied_embeddings_matches_the_reference() {
    check_decoder("tiny-llama-tied");
}

// ---------------------------------------------------------------------------------------------
// The CLI: a `.lowbit` is a complete model (run, eval, decompress with its files).

use crate::common::{lowbit, stderr};

/// A scratch folder holding a copy of a fixture model (weights, config, tokenizer, text).
fn scratch_model(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(fixture(name)).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    dir
}

fn json_of(o: &std::process::Output) -> Value {
    assert!(o.status.success(), "lowbit failed: {}", stderr(o));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn a_lowbit_runs_and_evaluates_without_a_restored_file() {
    let dir = scratch_model("tiny-llama");
    let d = dir.path();
    let report = json_of(&lowbit(
        &[
            "compress",
            "model.safetensors",
            "-o",
            "m.lowbit",
            "--bpw",
            "6",
            "--json",
            "--eval-text",
            "text.txt",
        ],
        d,
    ));
    let files = std::fs::read(d.join("config.json")).unwrap().len()
        + std::fs::read(d.join("tokenizer.json")).unwrap().len();
    // The model files' sections and their manifest entries; the weights' rate leaves them out and
    // meets the budget, the file size counts them.
    let extra = report["output"]["model_files_bytes"].as_u64().unwrap();
    assert!(
        extra > files as u64 && extra < files as u64 + 512,
        "{extra} for {files}"
    );
    let bpw = report["output"]["bits_per_weight"].as_f64().unwrap();
    let bytes = report["output"]["bytes"].as_u64().unwrap();
    assert_eq!(bytes, std::fs::metadata(d.join("m.lowbit")).unwrap().len());
    let params = report["input"]["parameters"].as_f64().unwrap();
    assert!(
        bpw <= 6.0 && (8.0 * (bytes - extra) as f64 / params - bpw).abs() < 1e-9,
        "{bpw}"
    );
    let downstream = &report["downstream"];
    assert_eq!(downstream["family"], "decoder");
    // `lowbit eval` of the same pair on the same text gives the same figures (and says how
    // long it took, where).
    let mut eval = json_of(&lowbit(
        &["eval", ".", "m.lowbit", "--text", "text.txt", "--json"],
        d,
    ));
    let fields = eval.as_object_mut().unwrap();
    assert!(fields.remove("seconds").unwrap().as_f64().unwrap() >= 0.0);
    assert!(fields
        .remove("backend")
        .unwrap()
        .as_str()
        .unwrap()
        .starts_with("CPU"));
    assert_eq!(&eval, downstream);
    let ppl = eval["perplexity_original"].as_f64().unwrap();
    assert!(ppl > 1.0 && ppl.is_finite());

    // Moved alone into an empty folder, the .lowbit still runs (its files travel inside it) and
    // gives the same tokens as its restored checkpoint.
    let alone = tempfile::tempdir().unwrap();
    std::fs::copy(d.join("m.lowbit"), alone.path().join("m.lowbit")).unwrap();
    let run = |model: &str, cwd: &std::path::Path| {
        json_of(&lowbit(
            &[
                "run",
                model,
                "--prompt",
                "The model reads",
                "--max-tokens",
                "8",
                "--json",
            ],
            cwd,
        ))["text"]
            .clone()
    };
    let from_lowbit = run("m.lowbit", alone.path());
    std::fs::create_dir(alone.path().join("out")).unwrap();
    let o = lowbit(
        &["decompress", "m.lowbit", "-o", "out/model.safetensors"],
        alone.path(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    for name in ["config.json", "tokenizer.json"] {
        assert_eq!(
            std::fs::read(alone.path().join("out").join(name)).unwrap(),
            std::fs::read(d.join(name)).unwrap(),
            "{name} restored byte for byte"
        );
    }
    assert_eq!(run("out/model.safetensors", alone.path()), from_lowbit);
}

#[test]
fn decompress_never_overwrites_a_different_model_file() {
    let dir = scratch_model("tiny-bert");
    let d = dir.path();
    // A model folder stands for its model.safetensors.
    let o = lowbit(
        &["compress", ".", "-o", "m.lowbit", "--bpw", "8", "--quiet"],
        d,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    std::fs::create_dir(d.join("out")).unwrap();
    std::fs::write(d.join("out/config.json"), b"{}").unwrap();
    let o = lowbit(
        &["decompress", "m.lowbit", "-o", "out/model.safetensors"],
        d,
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("config.json"), "{}", stderr(&o));
    assert!(
        !d.join("out/model.safetensors").exists(),
        "no partial output"
    );
    assert_eq!(std::fs::read(d.join("out/config.json")).unwrap(), b"{}");
    // Same contents are fine, and --no-model-files writes the checkpoint alone.
    let o = lowbit(
        &[
            "decompress",
            "m.lowbit",
            "-o",
            "out/model.safetensors",
            "--no-model-files",
        ],
        d,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!d.join("out/tokenizer.json").exists());
}

#[test]
fn broken_model_files_are_named_and_refused() {
    let cases: &[(&str, &[u8], &str)] = &[
        (
            "config.json",
            br#"{"model_type": "llama", "hidden_size": 48, "num_attention_heads": 0}"#,
            "config.json",
        ),
        ("config.json", b"not json", "config.json"),
        ("config.json", br#"{"model_type": "gpt2"}"#, "gpt2"),
        ("tokenizer.json", b"{\"version\": 1}", "tokenizer.json"),
    ];
    for (file, contents, expected) in cases {
        let dir = scratch_model("tiny-llama");
        let d = dir.path();
        std::fs::write(d.join(file), contents).unwrap();
        let o = lowbit(&["run", "model.safetensors", "--prompt", "hi"], d);
        assert!(!o.status.success(), "{file}: accepted");
        let err = stderr(&o);
        assert!(
            err.contains(expected) && !err.contains("panicked"),
            "{file}: {err}"
        );
    }
    // A checkpoint without one of the tensors the config implies: the tensor is named.
    let dir = scratch_model("tiny-llama");
    let d = dir.path();
    let bytes = std::fs::read(d.join("model.safetensors")).unwrap();
    let kept: Vec<_> = crate::common::tensors_of(&bytes)
        .into_iter()
        .filter(|(n, _)| n != "model.norm.weight")
        .map(|(n, (dt, shape, data))| (n, dt, shape, data))
        .collect();
    let kept: Vec<_> = kept
        .iter()
        .map(|(n, dt, s, b)| (n.as_str(), *dt, s.clone(), b.clone()))
        .collect();
    std::fs::write(
        d.join("model.safetensors"),
        crate::common::safetensors_file(&kept),
    )
    .unwrap();
    let o = lowbit(&["run", "model.safetensors", "--prompt", "hi"], d);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("model.norm.weight"), "{}", stderr(&o));
    // An encoder and a decoder cannot be compared.
    let o = lowbit(
        &[
            "eval",
            fixture("tiny-bert").to_str().unwrap(),
            fixture("tiny-llama").to_str().unwrap(),
        ],
        d,
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("same family"), "{}", stderr(&o));
}

/// `file` with its manifest changed by `edit` (the header re-encoded; the sections unchanged).
fn with_manifest(file: &[u8], edit: impl Fn(&mut Value)) -> Vec<u8> {
    let n = u64::from_le_bytes(file[..8].try_into().unwrap()) as usize;
    let mut header: Value = serde_json::from_slice(&file[8..8 + n]).unwrap();
    let manifest = header["__metadata__"]["lowbit.manifest"].as_str().unwrap();
    let mut manifest: Value = serde_json::from_str(manifest).unwrap();
    edit(&mut manifest);
    header["__metadata__"]["lowbit.manifest"] = Value::String(manifest.to_string());
    let json = header.to_string();
    let mut out = (json.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(json.as_bytes());
    out.extend_from_slice(&file[8 + n..]);
    out
}

#[test]
fn lying_model_file_records_are_refused() {
    let dir = scratch_model("tiny-llama");
    let d = dir.path();
    let o = lowbit(
        &["compress", "model.safetensors", "-o", "m.lowbit", "--quiet"],
        d,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let good = std::fs::read(d.join("m.lowbit")).unwrap();
    // The unchanged re-encoding is accepted (the helper itself is sound).
    std::fs::write(d.join("same.lowbit"), with_manifest(&good, |_| {})).unwrap();
    let o = lowbit(
        &["run", "same.lowbit", "--prompt", "hi", "--max-tokens", "2"],
        d,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    type Edit = Box<dyn Fn(&mut Value)>;
    let cases: Vec<(&str, Edit)> = vec![
        (
            "a path outside the folder",
            Box::new(|m| m["files"][0]["name"] = "../evil.json".into()),
        ),
        (
            "a name that is no model file",
            Box::new(|m| m["files"][0]["name"] = "model.safetensors".into()),
        ),
        (
            "a wrong length",
            Box::new(|m| m["files"][0]["bytes"] = 3.into()),
        ),
        (
            "a wrong checksum",
            Box::new(|m| m["files"][1]["crc32"] = 7.into()),
        ),
        (
            "a file listed twice",
            Box::new(|m| {
                let first = m["files"][0].clone();
                m["files"].as_array_mut().unwrap().push(first);
            }),
        ),
        (
            "a file with no section",
            Box::new(|m| {
                m["files"].as_array_mut().unwrap().push(serde_json::json!(
                    {"name": "vocab.txt", "bytes": 1, "crc32": 0}
                ));
            }),
        ),
    ];
    for (what, edit) in cases {
        std::fs::write(d.join("bad.lowbit"), with_manifest(&good, edit)).unwrap();
        for args in [
            vec!["decompress", "bad.lowbit", "-o", "restored.safetensors"],
            vec!["run", "bad.lowbit", "--prompt", "hi"],
        ] {
            let o = lowbit(&args, d);
            let err = stderr(&o);
            assert!(!o.status.success(), "{what}: {args:?} accepted");
            assert!(
                err.contains("bad.lowbit") && !err.contains("panicked"),
                "{what}: {err}"
            );
        }
        assert!(
            !d.join("restored.safetensors").exists(),
            "{what}: partial output"
        );
        assert!(!d.join("../evil.json").exists());
    }
}

#[test]
fn compress_weighs_a_model_by_its_sensitivity_unless_told_not_to() {
    let dir = scratch_model("tiny-llama-tied");
    let d = dir.path();
    let compress = |extra: &[&str], out: &str| {
        let mut args = vec![
            "compress",
            "model.safetensors",
            "-o",
            out,
            "--bpw",
            "6",
            "--json",
        ];
        args.extend_from_slice(extra);
        json_of(&lowbit(&args, d))
    };
    // By default (config.json and the tokenizer beside the checkpoint): measured on the built-in
    // text, and the report says so.
    let default = compress(&["--report", "rep"], "a.lowbit");
    let html = std::fs::read_to_string(d.join("rep/report.html")).unwrap();
    assert!(
        html.contains("sensitivity (KL per rel. MSE)") && html.contains("predicted output change")
    );
    assert_eq!(default["sensitivity"]["source"], "built-in text");
    // `plan` measures it too: it plans what `compress` writes.
    let plan = json_of(&lowbit(&["plan", ".", "--bpw", "6", "--json"], d));
    assert_eq!(plan["output"]["bytes"], default["output"]["bytes"]);
    assert_eq!(plan["sensitivity"], default["sensitivity"]);
    assert_eq!(default["sensitivity"]["measure"], "KL");
    assert!(default["sensitivity"]["predicted_change"].as_f64().unwrap() > 0.0);
    assert!(default["tensors"][0]["sensitivity"].as_f64().is_some());
    // On a text of one's own.
    let own = compress(&["--calibrate", "text.txt"], "b.lowbit");
    assert_eq!(own["sensitivity"]["source"], "text.txt");
    // Turned off, with the model files left out: the bytes of the checkpoint compressed alone.
    let off = compress(&["--no-sensitivity", "--no-model-files"], "c.lowbit");
    assert!(off.get("sensitivity").is_none());
    let alone = tempfile::tempdir().unwrap();
    std::fs::copy(
        d.join("model.safetensors"),
        alone.path().join("model.safetensors"),
    )
    .unwrap();
    let o = lowbit(
        &[
            "compress",
            "model.safetensors",
            "-o",
            "c.lowbit",
            "--bpw",
            "6",
            "--quiet",
        ],
        alone.path(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        std::fs::read(d.join("c.lowbit")).unwrap(),
        std::fs::read(alone.path().join("c.lowbit")).unwrap()
    );
    // The two flags contradict each other.
    let o = lowbit(
        &[
            "compress",
            "model.safetensors",
            "-o",
            "d.lowbit",
            "--calibrate",
            "text.txt",
            "--no-sensitivity",
        ],
        d,
    );
    assert!(!o.status.success() && !d.join("d.lowbit").exists());
    // A text the model cannot be run on: a clear error, nothing written.
    std::fs::write(d.join("empty.txt"), "").unwrap();
    let o = lowbit(
        &[
            "compress",
            "model.safetensors",
            "-o",
            "e.lowbit",
            "--calibrate",
            "empty.txt",
        ],
        d,
    );
    assert!(!o.status.success() && !d.join("e.lowbit").exists());
    assert!(stderr(&o).contains("empty.txt"), "{}", stderr(&o));
}
