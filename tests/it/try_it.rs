//! The page's Try-it helpers (`api::compare_sentences`, `api::generate_text`) on the tiny fixture
//! models: the original against a perturbed copy (tests/fixtures/models/README.md).

use std::path::{Path, PathBuf};

use lowbit::api::{compare_sentences, generate_text, load_model};
use lowbit::model::eval::{self, Downstream, EvalOptions};
use lowbit::model::sample::Sampler;
use lowbit::model::Model;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/models")
        .join(name)
}

fn load(name: &str, weights: &str) -> Model {
    let dir = fixture(name);
    let bytes = std::fs::read(dir.join(weights)).unwrap();
    load_model(&bytes, weights, &super::model::model_files(&dir)).unwrap()
}

#[test]
fn compare_sentences_gives_both_similarity_matrices_and_the_cosines_of_eval() {
    let (a, b) = (
        load("tiny-bert", "model.safetensors"),
        load("tiny-bert", "perturbed.safetensors"),
    );
    let text = std::fs::read_to_string(fixture("tiny-bert").join("sentences.txt")).unwrap();
    let sentences = eval::sentences_of(&text, 256);
    let c = compare_sentences(Some(&a), &b, &sentences).unwrap();
    let n = sentences.len();
    let (before, after) = (c.similarity_original.unwrap(), c.similarity_compressed);
    for m in [&before, &after] {
        assert_eq!(m.len(), n);
        for (i, row) in m.iter().enumerate() {
            assert!((row[i] - 1.0).abs() < 1e-6, "a sentence is its own match");
            for (j, v) in row.iter().enumerate() {
                assert!((v - m[j][i]).abs() < 1e-12, "symmetric");
            }
        }
    }
    let cosine = c.cosine.unwrap();
    let Downstream::Encoder(e) = eval::compare(&a, &b, &text, &EvalOptions::default()).unwrap()
    else {
        panic!("an encoder");
    };
    assert_eq!(c.summary.unwrap(), e);
    let mean = cosine.iter().sum::<f64>() / n as f64;
    assert!((mean - e.cosine_mean).abs() < 1e-12);
    // Without the original: the compressed model's matrix alone.
    let alone = compare_sentences(None, &b, &sentences).unwrap();
    assert!(alone.cosine.is_none() && alone.similarity_original.is_none());
    assert_eq!(alone.similarity_compressed, after);
    // A decoder does not embed.
    let llama = load("tiny-llama", "model.safetensors");
    assert!(compare_sentences(None, &llama, &sentences).is_err());
}

#[test]
fn generate_text_streams_the_text_that_generate_makes() {
    let model = load("tiny-llama", "model.safetensors");
    let prompt = "The model reads";
    let mut seen = Vec::new();
    let g = generate_text(
        &model,
        prompt,
        12,
        &mut Sampler::greedy(),
        &mut |text, n| {
            seen.push((text.to_string(), n));
            true
        },
    )
    .unwrap();
    let llama = model.as_decoder().unwrap();
    let ids = llama.tokenizer.encode(prompt).unwrap();
    let out = llama
        .generate(&ids, 12, &mut Sampler::greedy(), &mut |_| true)
        .unwrap();
    assert_eq!(g.text, llama.tokenizer.decode(&out).unwrap());
    assert_eq!((g.tokens, g.prompt_tokens), (out.len(), ids.len()));
    assert!(!seen.is_empty());
    assert!(
        seen.windows(2).all(|w| w[0].1 < w[1].1),
        "token counts grow"
    );
    // Stopping early: the callback's first false ends the generation (it is not called while the
    // text ends inside a UTF-8 character).
    let stop = seen.iter().map(|s| s.1).find(|&n| n >= 3 && n < g.tokens);
    let g2 = generate_text(&model, prompt, 12, &mut Sampler::greedy(), &mut |_, n| {
        n < 3
    })
    .unwrap();
    if let Some(stop) = stop {
        assert_eq!(g2.tokens, stop);
    }
}
