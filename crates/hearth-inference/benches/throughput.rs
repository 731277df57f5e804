//! Throughput of our models against PyTorch on the same inputs, side by side in one run.
//!
//!     cargo bench -p hearth-inference --bench throughput
//!
//! Set `HEARTH_REFERENCE_PYTHON` to a Python with torch and sentence-transformers (and
//! efficientnet_lite_pytorch) to run the reference; `HEARTH_BENCH_WGPU=0` skips wgpu.
//! Prints embeddings/s on 256 sentences of mixed lengths, images/s on a batch of 32, achieved
//! GFLOP/s as a share of the backend's own 1024² sgemm (the capability benchmark's, on the
//! kernel the models use), and ours/reference ratios.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use hearth_inference::efficientnet::EfficientNetLite;
use hearth_inference::embeddings::MINILM_ID;
use hearth_inference::images::EFFICIENTNET_ID;
use hearth_inference::{ComputeDevice, ImageClassifier, ModelStore, TextEmbedder};

const SENTENCES: usize = 256;
const IMAGES: usize = 32;
const WORDS: &[&str] = &[
    "the",
    "graphics",
    "card",
    "idles",
    "while",
    "its",
    "owner",
    "sleeps",
    "and",
    "a",
    "pool",
    "sends",
    "small",
    "inference",
    "jobs",
    "embedding",
    "text",
    "images",
    "quickly",
    "home",
    "energy",
    "price",
    "earns",
    "credits",
    "Hearth",
    "pauses",
    "when",
    "games",
    "start",
    "again",
];

/// 256 deterministic sentences from 3 to ~300 words (some past the 256-token limit).
fn sentences() -> Vec<String> {
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    (0..SENTENCES)
        .map(|i| {
            let words = 3 + (i * i * 7 + 11 * i) % 300;
            (0..words)
                .map(|_| WORDS[(next() % WORDS.len() as u64) as usize])
                .collect::<Vec<_>>()
                .join(" ")
                + "."
        })
        .collect()
}

struct Figures {
    embeddings_per_s: f64,
    embedding_gflops: f64,
    images_per_s: f64,
    image_gflops: f64,
    peak_gflops: f64,
}

fn measure(
    store: &ModelStore,
    device: ComputeDevice,
    texts: &[&str],
    images: &[Vec<f32>],
) -> anyhow::Result<Figures> {
    // The machine's 1024² product on the kernel this backend's models use.
    let peak_gflops = hearth_inference::capability::measure_backend(&device)?.matmul_gflops;
    let embedder = TextEmbedder::load(store, MINILM_ID, device.clone())?;
    let tokens: usize = embedder.tokenize(texts)?.iter().map(Vec::len).sum();
    embedder.embed(texts)?; // warm-up: every batch shape once
    let start = Instant::now();
    embedder.embed(texts)?;
    let seconds = start.elapsed().as_secs_f64();
    let config = embedder.config();
    // Approximate: attention cost taken at the mean sequence length.
    let flops = config.flops(tokens, tokens / texts.len());
    let classifier = ImageClassifier::load(store, EFFICIENTNET_ID, device)?;
    classifier.probabilities(images)?;
    let start = Instant::now();
    classifier.probabilities(images)?;
    let image_seconds = start.elapsed().as_secs_f64();
    Ok(Figures {
        embeddings_per_s: texts.len() as f64 / seconds,
        embedding_gflops: flops / seconds / 1e9,
        images_per_s: images.len() as f64 / image_seconds,
        image_gflops: EfficientNetLite::flops(224, 1000) * images.len() as f64
            / image_seconds
            / 1e9,
        peak_gflops,
    })
}

fn report(name: &str, f: &Figures) {
    println!(
        "{name:<26} {:>8.1} emb/s ({:>5.1} GFLOP/s, {:>4.0}% of sgemm)   {:>7.1} img/s ({:>5.1} GFLOP/s, {:>4.0}% of sgemm)   sgemm {:>6.1} GFLOP/s",
        f.embeddings_per_s,
        f.embedding_gflops,
        100.0 * f.embedding_gflops / f.peak_gflops,
        f.images_per_s,
        f.image_gflops,
        100.0 * f.image_gflops / f.peak_gflops,
        f.peak_gflops
    );
}

fn main() -> anyhow::Result<()> {
    // `cargo test --all-targets` runs bench binaries too, without `--bench`: do nothing then.
    if !std::env::args().any(|arg| arg == "--bench") {
        println!("throughput: run with `cargo bench -p hearth-inference --bench throughput`");
        return Ok(());
    }
    let store = ModelStore::from_env();
    let owned = sentences();
    let texts: Vec<&str> = owned.iter().map(String::as_str).collect();
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    let cpu_classifier = ImageClassifier::load(&store, EFFICIENTNET_ID, ComputeDevice::cpu())?;
    let photos = [
        std::fs::read(fixtures.join("chelsea.png"))?,
        std::fs::read(fixtures.join("coffee.png"))?,
    ];
    let prepared: Vec<Vec<f32>> = (0..IMAGES)
        .map(|i| cpu_classifier.preprocessing().prepare(i, &photos[i % 2]))
        .collect::<Result<_, _>>()?;
    drop(cpu_classifier);

    println!(
        "{SENTENCES} sentences ({} words in all), {IMAGES} images of 224x224",
        owned.iter().map(|s| s.split(' ').count()).sum::<usize>()
    );
    let cpu = measure(&store, ComputeDevice::cpu(), &texts, &prepared)?;
    report("hearth, cpu", &cpu);
    if std::env::var("HEARTH_BENCH_WGPU").as_deref() != Ok("0") {
        match ComputeDevice::wgpu() {
            Ok(device) => {
                let name = format!("hearth, {}", device.describe());
                let gpu = measure(&store, device, &texts, &prepared)?;
                report(&name, &gpu);
            }
            Err(error) => println!("wgpu skipped: {error}"),
        }
    }

    let Ok(python) = std::env::var("HEARTH_REFERENCE_PYTHON") else {
        println!("reference skipped: set HEARTH_REFERENCE_PYTHON to a Python with torch");
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let input = dir.path().join("sentences.json");
    std::fs::write(&input, serde_json::to_string(&owned)?)?;
    let script = fixtures.join("bench_reference.py");
    let output = Command::new(python)
        .arg(script)
        .arg(&input)
        .arg(IMAGES.to_string())
        .output()?;
    anyhow::ensure!(
        output.status.success(),
        "reference failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let reference: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    for device in ["cpu", "cuda"] {
        let Some(r) = reference.get(device) else {
            continue;
        };
        let emb = r["embeddings_per_s"].as_f64().unwrap_or(f64::NAN);
        let img = r["images_per_s"].as_f64().unwrap_or(f64::NAN);
        println!(
            "pytorch {device:<19} {emb:>8.1} emb/s   {img:>7.1} img/s   ({})",
            r["threads"]
        );
        if device == "cpu" {
            println!(
                "ratio hearth-cpu / pytorch-cpu: embeddings {:.2}x, images {:.2}x",
                cpu.embeddings_per_s / emb,
                cpu.images_per_s / img
            );
        }
    }
    Ok(())
}
