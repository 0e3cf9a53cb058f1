//! The model runtime on the GPU backend against the CPU runtime: every forward kernel (linear,
//! norms, element-wise steps, rotary positions, attention, pooling) against its CPU twin on
//! awkward shapes, the tiny decoders and encoder of tests/fixtures/models whole (logits, the KV
//! cache path, greedy continuations, embeddings, evaluation figures), the fallback to the CPU
//! when the device is lost or a model does not fit a binding, and `lowbit run` / `lowbit eval`
//! with `--backend gpu`.
//!
//! As in `backend`: without an adapter the GPU cases are skipped, unless `REQUIRE_GPU=1`.

#![cfg(feature = "gpu")]

use std::sync::OnceLock;

use lowbit::backend::gpu::{Gpu, GpuOptions};
use lowbit::backend::kernels::attention::{self, AttentionShape};
use lowbit::backend::kernels::elementwise::{self, Elementwise};
use lowbit::backend::kernels::pool::{self, Pool};
use lowbit::backend::kernels::{linear, norm, rope};
use lowbit::backend::{block_on, Backend, GpuFailure};
use lowbit::model::device::{Decoder, DeviceBert, DeviceLlama, Encoder};
use lowbit::model::eval::{self, Downstream, EvalOptions};
use lowbit::model::sample::Sampler;
use lowbit::model::weights::SafetensorsWeights;
use lowbit::model::Model;
use lowbit::rng::Rng;

use crate::common::{lowbit, stderr};
use crate::model::model_files;

fn gpu() -> Option<&'static Gpu> {
    static GPU: OnceLock<Option<Gpu>> = OnceLock::new();
    GPU.get_or_init(|| open(None)).as_ref()
}

fn open(max_binding_bytes: Option<u64>) -> Option<Gpu> {
    match block_on(Gpu::new(GpuOptions { max_binding_bytes })) {
        Ok(g) => Some(g),
        Err(e) => {
            if std::env::var("REQUIRE_GPU").as_deref() == Ok("1") {
                panic!("REQUIRE_GPU=1 but no GPU adapter: {e}");
            }
            eprintln!("no GPU adapter ({e}): GPU cases skipped");
            None
        }
    }
}

fn ok<T>(r: Result<T, GpuFailure>, what: &str) -> T {
    r.unwrap_or_else(|e| panic!("{what}: the GPU kernel did not run: {e:?}"))
}

fn random(n: usize, seed: u64, scale: f64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    (0..n).map(|_| (rng.normal() * scale) as f32).collect()
}

/// The largest difference over the largest magnitude of `want` (1 if that is 0).
fn rel(got: &[f32], want: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(0.0f64, |m, x| m.max(x.abs() as f64));
    let diff = got
        .iter()
        .zip(want)
        .fold(0.0f64, |m, (a, b)| m.max((*a as f64 - *b as f64).abs()));
    diff / if scale > 0.0 { scale } else { 1.0 }
}

#[test]
fn linear_matches_cpu_on_awkward_shapes() {
    let Some(g) = gpu() else { return };
    let shapes = [
        (1, 1, 1),
        (1, 3, 17),
        (1, 130, 65),
        (1, 17, 300),
        (2, 3, 1),
        (3, 17, 65),
        (17, 130, 3),
        (65, 1, 130),
    ];
    for (seed, &(n, out_dim, in_dim)) in shapes.iter().enumerate() {
        let x = random(n * in_dim, seed as u64, 1.0);
        let w = random(out_dim * in_dim, 100 + seed as u64, 1.0);
        let b = random(out_dim, 200 + seed as u64, 1.0);
        for bias in [None, Some(&b[..])] {
            let want = linear::linear(&x, n, &w, out_dim, in_dim, bias);
            let got = ok(
                block_on(g.linear(&x, n, &w, out_dim, in_dim, bias)),
                "linear",
            );
            // Sums of in_dim terms of size ~1 in another order: within ~1e-6 * sqrt(in_dim) * ...
            for (i, (a, e)) in got.iter().zip(&want).enumerate() {
                let tol = 1e-5 * (in_dim as f32).sqrt() * 4.0;
                assert!(
                    (a - e).abs() <= tol,
                    "linear {n} x {in_dim} -> {out_dim} bias {}: [{i}] {a} vs {e}",
                    bias.is_some()
                );
            }
        }
    }
}

#[test]
fn norms_match_cpu() {
    let Some(g) = gpu() else { return };
    for (seed, &(rows, dim)) in [(1, 1), (1, 3), (3, 65), (17, 130), (2, 300), (5, 1000)]
        .iter()
        .enumerate()
    {
        let seed = seed as u64;
        let x: Vec<f32> = random(rows * dim, seed, 3.0)
            .iter()
            .map(|v| v + 0.5)
            .collect();
        let w = random(dim, seed + 10, 1.0);
        let b = random(dim, seed + 20, 1.0);
        let want = norm::rms_norm(&x, &w, 1e-5);
        let got = ok(block_on(g.norm(&x, &w, None, 1e-5)), "rms_norm");
        assert!(rel(&got, &want) < 1e-5, "rms {rows} x {dim}");
        let mut want = x.clone();
        norm::layer_norm(&mut want, &w, &b, 1e-12);
        let got = ok(block_on(g.norm(&x, &w, Some(&b), 1e-12)), "layer_norm");
        assert!(rel(&got, &want) < 1e-5, "layer {rows} x {dim}");
    }
}

#[test]
fn elementwise_steps_match_cpu() {
    let Some(g) = gpu() else { return };
    for (seed, &len) in [1usize, 3, 17, 255, 257, 70_000].iter().enumerate() {
        let a = random(len, seed as u64, 4.0);
        let b = random(len, seed as u64 + 50, 1.0);
        for step in [
            Elementwise::Add,
            Elementwise::SwiGlu,
            Elementwise::Gelu,
            Elementwise::GeluTanh,
        ] {
            let mut want = a.clone();
            elementwise::apply(step, &mut want, &b);
            let got = ok(block_on(g.elementwise(step, &a, &b)), "elementwise");
            for (i, (x, e)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (x - e).abs() <= 1e-6 * (1.0 + e.abs()) * 4.0,
                    "{step:?} [{i}] of {len}: {x} vs {e} (input {})",
                    a[i]
                );
            }
        }
    }
}

#[test]
fn rope_matches_cpu() {
    let Some(g) = gpu() else { return };
    for &(rows, heads, head_dim, past) in &[(1, 1, 2, 0), (3, 3, 6, 5), (17, 2, 64, 1000)] {
        let inv_freq: Vec<f64> = (0..head_dim / 2)
            .map(|k| 10000f64.powf(-((2 * k) as f64) / head_dim as f64))
            .collect();
        let table = rope::rope_table(&inv_freq, past, rows);
        let x = random(rows * heads * head_dim, rows as u64, 1.0);
        let mut want = x.clone();
        rope::rope(&mut want, heads, head_dim, &table);
        let got = ok(block_on(g.rope(&x, heads, head_dim, &table)), "rope");
        assert!(
            rel(&got, &want) < 1e-6,
            "rope {rows} x {heads} x {head_dim}"
        );
    }
}

#[test]
fn attention_matches_cpu() {
    let Some(g) = gpu() else { return };
    let shape = |rows, heads, kv_heads, head_dim, past, causal| AttentionShape {
        rows,
        heads,
        kv_heads,
        head_dim,
        past,
        causal,
    };
    let shapes = [
        shape(1, 1, 1, 1, 0, true),
        shape(1, 6, 2, 8, 17, true),
        shape(3, 6, 3, 5, 65, true),
        shape(17, 4, 1, 65, 0, true),
        shape(130, 2, 2, 3, 0, true),
        shape(1, 3, 3, 7, 0, false),
        shape(17, 3, 3, 7, 0, false),
        shape(130, 2, 2, 17, 0, false),
    ];
    for (seed, s) in shapes.iter().enumerate() {
        let seed = seed as u64;
        let q = random(s.rows * s.heads * s.head_dim, seed, 1.0);
        let kv = s.keys() * s.kv_heads * s.head_dim;
        let (k, v) = (random(kv, seed + 10, 1.0), random(kv, seed + 20, 1.0));
        let want = attention::attention(&q, &k, &v, s);
        let got = ok(block_on(g.attention(&q, &k, &v, s)), "attention");
        assert!(
            rel(&got, &want) < 1e-5,
            "attention {s:?}: {}",
            rel(&got, &want)
        );
    }
}

#[test]
fn pooling_matches_cpu() {
    let Some(g) = gpu() else { return };
    for &(rows, dim) in &[(1, 1), (3, 65), (17, 300)] {
        let x = random(rows * dim, dim as u64, 1.0);
        for mode in [Pool::Mean, Pool::Max, Pool::First] {
            let want = pool::pool(&x, rows, dim, mode);
            let got = ok(block_on(g.pool(&x, rows, dim, mode)), "pool");
            assert!(rel(&got, &want) < 1e-6, "{mode:?} {rows} x {dim}");
        }
    }
}

fn fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/models")
        .join(name)
}

fn load(name: &str, weights: &str) -> Model {
    let dir = fixture(name);
    let bytes = std::fs::read(dir.join(weights)).unwrap();
    let source = SafetensorsWeights::new(&bytes).unwrap();
    Model::load(&model_files(&dir), &source).unwrap()
}

const PROMPTS: &[&str] = &["The cat", "Once upon a time there was a small model that"];

#[test]
fn tiny_decoders_on_the_gpu_match_the_cpu() {
    let Some(g) = gpu() else { return };
    for name in ["tiny-llama", "tiny-llama-tied"] {
        let mut model = load(name, "model.safetensors");
        let Model::Decoder(llama) = &mut model else {
            panic!("{name} is a decoder")
        };
        llama.config.eos_token_ids.clear();
        let llama = &*llama;
        let device = ok(DeviceLlama::load(llama, g), "loading the decoder");
        for text in PROMPTS {
            let ids = llama.tokenizer.encode(text).unwrap();
            let n = ids.len();
            let want = llama.logits(&llama.forward(&ids, &mut llama.new_cache()).unwrap(), n);
            let x = device.embed(&ids, 0).unwrap();
            let got = ok(block_on(device.window_logits(&x, n)), "window");
            let err = rel(&got, &want);
            assert!(err < 1e-4, "{name}: window logits {err} on {text:?}");
            eprintln!("{name}: {n} positions, logits within {err:.1e} of the largest");
            // One token at a time through the resident cache (grown from 1 position).
            let mut cache = ok(device.new_cache(1), "cache");
            let mut last = Vec::new();
            for (i, &t) in ids.iter().enumerate() {
                let x = device.embed(&[t], i).unwrap();
                last = ok(block_on(device.step(&x, 1, &mut cache, false)), "step");
            }
            assert_eq!(cache.len(), n);
            let vocab = llama.config.vocab_size;
            let err = rel(&last, &want[(n - 1) * vocab..]);
            assert!(err < 1e-4, "{name}: cached logits {err}");
            eprintln!("{name}: through the cache, last logits within {err:.1e}");
            let cpu = llama
                .generate(&ids, 20, &mut Sampler::greedy(), &mut |_| true)
                .unwrap();
            let backend = Backend::Gpu(Box::new(open(None).unwrap()));
            let mut decoder = Decoder::load(llama, &backend);
            assert_eq!(decoder.name(), "gpu");
            let on_gpu =
                block_on(decoder.generate(&ids, 20, &mut Sampler::greedy(), &mut |_| true));
            assert_eq!(
                on_gpu.unwrap(),
                cpu,
                "{name}: greedy continuation of {text:?}"
            );
            assert_eq!(backend.fallback(), None);
        }
    }
}

#[test]
fn tiny_encoder_on_the_gpu_matches_the_cpu() {
    let Some(g) = gpu() else { return };
    let model = load("tiny-bert", "model.safetensors");
    let Model::Encoder(bert) = &model else {
        panic!("tiny-bert is an encoder")
    };
    let device = ok(DeviceBert::load(bert, g), "loading the encoder");
    for text in [
        "a",
        "The quick brown fox jumps over the lazy dog again and again.",
    ] {
        let ids = bert.tokenizer.encode(text).unwrap();
        let want = bert.embed_ids(&ids).unwrap();
        let x = bert_input(bert, &ids);
        let got = ok(block_on(device.embed(&x)), "embedding");
        let err = rel(&got, &want);
        assert!(err < 1e-4, "embedding of {text:?}: {err}");
        eprintln!(
            "tiny-bert: {} tokens, embedding within {err:.1e} of the largest",
            ids.len()
        );
    }
}

/// The encoder's first-layer input through the public path: `Encoder` on the CPU backend gives
/// the reference, so the device is fed by `Encoder` too (it does the lookup itself).
fn bert_input(bert: &lowbit::model::bert::Bert, ids: &[u32]) -> Vec<f32> {
    lowbit::model::device::encoder_input(bert, ids).unwrap()
}

#[test]
fn evaluation_on_the_gpu_matches_the_cpu() {
    if gpu().is_none() {
        return;
    }
    for (name, text) in [("tiny-llama", "text.txt"), ("tiny-bert", "sentences.txt")] {
        let a = load(name, "model.safetensors");
        let b = load(name, "perturbed.safetensors");
        let text = std::fs::read_to_string(fixture(name).join(text)).unwrap();
        let options = EvalOptions {
            tokens: 100,
            context: 16,
            sentences: 20,
        };
        let cpu = eval::compare(&a, &b, &text, &options).unwrap();
        let backend = Backend::Gpu(Box::new(open(None).unwrap()));
        let on_gpu = block_on(eval::compare_on(&a, &b, &text, &options, &backend)).unwrap();
        assert_eq!(backend.fallback(), None, "{name}");
        let close = |x: f64, y: f64, what: &str| {
            assert!(
                (x - y).abs() <= 1e-4 * y.abs().max(1e-3),
                "{name} {what}: {x} vs {y}"
            )
        };
        match (on_gpu, cpu) {
            (Downstream::Decoder(x), Downstream::Decoder(y)) => {
                assert_eq!(
                    (x.tokens, x.windows, x.scored),
                    (y.tokens, y.windows, y.scored)
                );
                close(x.perplexity_original, y.perplexity_original, "ppl");
                close(x.perplexity_compressed, y.perplexity_compressed, "ppl");
                close(x.kl_mean, y.kl_mean, "kl");
            }
            (Downstream::Encoder(x), Downstream::Encoder(y)) => {
                assert_eq!(x.sentences, y.sentences);
                close(x.cosine_mean, y.cosine_mean, "cosine");
                close(x.cosine_min, y.cosine_min, "cosine");
            }
            _ => panic!("{name}: families differ"),
        }
    }
}

#[test]
fn a_lost_device_or_a_model_too_large_falls_back_to_the_cpu() {
    if gpu().is_none() {
        return;
    }
    let mut model = load("tiny-llama", "model.safetensors");
    let Model::Decoder(llama) = &mut model else {
        panic!("a decoder")
    };
    llama.config.eos_token_ids.clear();
    let llama = &*llama;
    let ids = llama.tokenizer.encode(PROMPTS[1]).unwrap();
    let cpu = llama
        .generate(&ids, 12, &mut Sampler::greedy(), &mut |_| true)
        .unwrap();
    // Lost after a few tokens: the rest is generated on the CPU from the tokens so far.
    let backend = Backend::Gpu(Box::new(open(None).unwrap()));
    let mut decoder = Decoder::load(llama, &backend);
    let Backend::Gpu(g) = &backend else {
        unreachable!()
    };
    let mut seen = 0;
    let out = block_on(
        decoder.generate(&ids, 12, &mut Sampler::greedy(), &mut |_| {
            seen += 1;
            if seen == 4 {
                g.simulate_device_loss();
            }
            true
        }),
    )
    .unwrap();
    assert_eq!(out, cpu);
    assert_eq!(decoder.name(), "cpu");
    assert!(backend.fallback().is_some());
    // An 8 KiB binding cannot hold the output layer (362 x 48 floats): the model stays on the CPU.
    let small = Backend::Gpu(Box::new(open(Some(8 << 10)).unwrap()));
    let mut decoder = Decoder::load(llama, &small);
    assert_eq!(decoder.name(), "cpu");
    let why = small.fallback().expect("recorded");
    assert!(why.contains("binding"), "{why}");
    let out = block_on(decoder.generate(&ids, 12, &mut Sampler::greedy(), &mut |_| true));
    assert_eq!(out.unwrap(), cpu);
    // And an encoder on a lost device.
    let model = load("tiny-bert", "model.safetensors");
    let Model::Encoder(bert) = &model else {
        panic!("an encoder")
    };
    let sentences = vec![
        "one sentence here".to_string(),
        "and another one".to_string(),
    ];
    let want = bert.embed_sentences(&sentences).unwrap();
    let backend = Backend::Gpu(Box::new(open(None).unwrap()));
    let mut encoder = Encoder::load(bert, &backend);
    assert_eq!(encoder.name(), "gpu");
    let Backend::Gpu(g) = &backend else {
        unreachable!()
    };
    g.simulate_device_loss();
    let got = block_on(encoder.embed_sentences(&sentences)).unwrap();
    assert_eq!(got, want);
    assert!(backend.fallback().is_some());
}

#[test]
fn run_and_eval_take_the_gpu_backend() {
    if gpu().is_none() {
        return;
    }
    let dir = fixture("tiny-llama");
    let run = |backend: &str| {
        let o = lowbit(
            &[
                "run",
                "model.safetensors",
                "--prompt",
                "The cat",
                "--max-tokens",
                "12",
                "--backend",
                backend,
            ],
            &dir,
        );
        assert!(
            o.status.success(),
            "run --backend {backend}: {}",
            stderr(&o)
        );
        o
    };
    let (on_cpu, on_gpu) = (run("cpu"), run("gpu"));
    assert_eq!(on_gpu.stdout, on_cpu.stdout, "the same greedy text");
    let said = stderr(&on_gpu);
    assert!(
        said.contains("tokens/s") && said.contains("GPU: "),
        "{said}"
    );
    assert!(!said.contains("given up"), "{said}");
    assert!(
        stderr(&on_cpu).contains("CPU, requested"),
        "{}",
        stderr(&on_cpu)
    );
    let o = lowbit(
        &[
            "eval",
            "model.safetensors",
            "perturbed.safetensors",
            "--text",
            "text.txt",
            "--backend",
            "gpu",
        ],
        &dir,
    );
    assert!(o.status.success(), "eval --backend gpu: {}", stderr(&o));
    assert!(stderr(&o).contains("on GPU: "), "{}", stderr(&o));
    let o = lowbit(
        &[
            "run",
            "model.safetensors",
            "--prompt",
            "hi",
            "--backend",
            "tpu",
        ],
        &dir,
    );
    assert!(!o.status.success());
}
