//! Our models against the upstream implementations, on fixed inputs, on both backends.
//! References: fixtures/embeddings.json (sentence-transformers) and fixtures/images.json
//! (efficientnet_lite_pytorch), made by fixtures/make_fixtures.py.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers fail the test by panicking

use std::path::PathBuf;

use hearth_inference::embeddings::MINILM_ID;
use hearth_inference::images::EFFICIENTNET_ID;
use hearth_inference::{ComputeBackend, ComputeDevice, ImageClassifier, ModelStore, TextEmbedder};
use serde_json::Value;

/// Cosine similarity every sentence must reach against sentence-transformers.
const MIN_COSINE: f64 = 0.9999;
/// Largest allowed difference of any class probability from the reference.
const MAX_PROBABILITY_DIFF: f32 = 1e-3;

fn fixture(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn wgpu() -> ComputeDevice {
    let device = ComputeDevice::wgpu().expect("wgpu needs an adapter: install mesa-vulkan-drivers");
    let adapter = device.adapter.clone().unwrap();
    assert_eq!(
        adapter.api, "Vulkan",
        "wgpu should run on Vulkan here, got {adapter:?}"
    );
    device
}

fn cosine(a: &[f32], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| f64::from(*x) * y).sum();
    let na: f64 = a.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|y| y.powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

fn check_embeddings(device: ComputeDevice) {
    let backend = device.backend;
    let reference = fixture("embeddings.json");
    let sentences: Vec<&str> = reference["sentences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    let embedder = TextEmbedder::load(&ModelStore::from_env(), MINILM_ID, device).unwrap();
    let output = embedder.embed(&sentences).unwrap();

    let expected_tokens: Vec<usize> = reference["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_u64().unwrap() as usize)
        .collect();
    assert_eq!(
        output.tokens, expected_tokens,
        "token counts differ from the reference tokenizer"
    );
    assert_eq!(
        *output.tokens.iter().max().unwrap(),
        256,
        "the long text is cut at 256 tokens"
    );

    let mut worst = f64::MAX;
    for (i, (ours, theirs)) in output
        .vectors
        .iter()
        .zip(reference["embeddings"].as_array().unwrap())
        .enumerate()
    {
        let theirs: Vec<f64> = theirs
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert_eq!(ours.len(), 384);
        let similarity = cosine(ours, &theirs);
        assert!(
            similarity >= MIN_COSINE,
            "{backend}: sentence {i} ({:?}) has cosine {similarity}",
            sentences[i]
        );
        worst = worst.min(similarity);
    }
    eprintln!(
        "{backend}: {} sentences, lowest cosine {worst:.7}",
        sentences.len()
    );
}

fn check_images(device: ComputeDevice) {
    let backend = device.backend;
    let reference = fixture("images.json");
    let classifier =
        ImageClassifier::load(&ModelStore::from_env(), EFFICIENTNET_ID, device).unwrap();
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    let mut singles = Vec::new();
    for (name, class, label) in [
        ("chelsea.png", 285, "Egyptian cat"),
        ("coffee.png", 967, "espresso"),
    ] {
        let bytes = std::fs::read(dir.join(name)).unwrap();
        let prepared = classifier.preprocessing().prepare(0, &bytes).unwrap();
        let ours = classifier
            .probabilities(std::slice::from_ref(&prepared))
            .unwrap()
            .remove(0);
        singles.push((prepared, ours.clone()));
        let theirs: Vec<f32> = reference["images"][name]["probabilities"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_f64().unwrap() as f32)
            .collect();
        assert_eq!(ours.len(), 1000);
        let worst = ours
            .iter()
            .zip(&theirs)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(
            worst <= MAX_PROBABILITY_DIFF,
            "{backend}: {name} differs by {worst}"
        );

        let top = classifier.classify(&[&bytes], 3).unwrap().remove(0);
        assert_eq!(top[0].class, class, "{backend}: {name} top-1 {:?}", top[0]);
        assert_eq!(top[0].label, label);
        let pil_top1 = reference["images"][name]["pil_top5"][0][0]
            .as_u64()
            .unwrap() as usize;
        assert_eq!(
            pil_top1, class,
            "reference with PIL preprocessing agrees on the class"
        );
        eprintln!(
            "{backend}: {name} -> {} {:.4}, max |dp| {worst:.2e}",
            top[0].label, top[0].probability
        );
    }

    // A batch (run differently from a single image on the CPU: one image per thread) gives
    // each image the probabilities it gets alone.
    let batch: Vec<Vec<f32>> = (0..5).map(|i| singles[i % 2].0.clone()).collect();
    for (i, probabilities) in classifier.probabilities(&batch).unwrap().iter().enumerate() {
        let alone = &singles[i % 2].1;
        let worst = probabilities
            .iter()
            .zip(alone)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(
            worst <= 1e-5,
            "{backend}: image {i} of the batch differs by {worst}"
        );
    }
}

#[test]
fn minilm_matches_sentence_transformers_on_cpu() {
    check_embeddings(ComputeDevice::cpu());
}

#[test]
fn minilm_matches_sentence_transformers_on_wgpu() {
    let device = wgpu();
    assert_eq!(device.backend, ComputeBackend::Wgpu);
    check_embeddings(device);
}

#[test]
fn efficientnet_matches_reference_on_cpu() {
    check_images(ComputeDevice::cpu());
}

#[test]
fn efficientnet_matches_reference_on_wgpu() {
    check_images(wgpu());
}
