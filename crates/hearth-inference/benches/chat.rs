//! Chat generation speed against PyTorch `transformers` and llama.cpp, side by side in one run.
//!
//!     cargo bench -p hearth-inference --bench chat
//!
//! Set `HEARTH_REFERENCE_PYTHON` to a Python with torch, transformers, gguf (and optionally
//! llama-cpp-python) to run the references; `HEARTH_BENCH_WGPU=0` skips wgpu.
//! Prints prefill tokens/s on a 512-token prompt and greedy decode tokens/s over 128 tokens,
//! and the ratios of ours to each reference.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use hearth_inference::chat::SMOLLM2_ID;
use hearth_inference::{ChatGenerator, ComputeDevice, ModelStore};

const PROMPT_TOKENS: usize = 512;
const DECODE_TOKENS: usize = 128;

#[derive(Debug, Clone, Copy)]
struct Speed {
    prefill: f64,
    decode: f64,
}

fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, v) in logits.iter().enumerate() {
        if *v > logits[best] {
            best = i;
        }
    }
    best as u32
}

/// Prefill `prompt` once to warm up (on wgpu: compile and tune kernels, also for a few decode
/// steps), then time prefill and `DECODE_TOKENS` greedy steps.
fn measure(generator: &ChatGenerator, prompt: &[u32]) -> anyhow::Result<Speed> {
    let model = generator.model();
    let mut cache = model.new_cache();
    let mut logits = model.forward(prompt, &mut cache)?;
    for _ in 0..4 {
        logits = model.forward(&[argmax(&logits)], &mut cache)?;
    }

    let mut cache = model.new_cache();
    let start = Instant::now();
    let mut logits = model.forward(prompt, &mut cache)?;
    let prefill = start.elapsed().as_secs_f64();
    let start = Instant::now();
    for _ in 0..DECODE_TOKENS {
        logits = model.forward(&[argmax(&logits)], &mut cache)?;
    }
    let decode = start.elapsed().as_secs_f64();
    Ok(Speed {
        prefill: prompt.len() as f64 / prefill,
        decode: DECODE_TOKENS as f64 / decode,
    })
}

fn report(name: &str, s: Speed) {
    println!(
        "{name:<44} prefill {:>8.1} tokens/s   decode {:>6.1} tokens/s",
        s.prefill, s.decode
    );
}

fn main() -> anyhow::Result<()> {
    // `cargo test --all-targets` runs bench binaries too, without `--bench`: do nothing then.
    if !std::env::args().any(|arg| arg == "--bench") {
        println!("chat: run with `cargo bench -p hearth-inference --bench chat`");
        return Ok(());
    }
    let store = ModelStore::from_env();
    let cpu_generator = ChatGenerator::load(&store, SMOLLM2_ID, &ComputeDevice::cpu())?;
    // A 512-token prompt: a paragraph repeated, cut to length.
    let text = "Hearth lends a home computer's idle graphics card to a pool of AI inference jobs, \
                pauses the moment a game starts, and pays its owner for every verified answer. "
        .repeat(40);
    let mut prompt = cpu_generator.tokenizer().encode(&text)?;
    anyhow::ensure!(prompt.len() >= PROMPT_TOKENS, "prompt too short");
    prompt.truncate(PROMPT_TOKENS);
    println!("SmolLM2-135M-Instruct, prompt {PROMPT_TOKENS} tokens, {DECODE_TOKENS} greedy tokens");

    let cpu = measure(&cpu_generator, &prompt)?;
    report("hearth, cpu (host pass, Q4_1-block decode)", cpu);
    drop(cpu_generator);
    if std::env::var("HEARTH_BENCH_WGPU").as_deref() != Ok("0") {
        match ComputeDevice::wgpu() {
            Ok(device) => {
                let name = format!("hearth, {}", device.describe());
                let generator = ChatGenerator::load(&store, SMOLLM2_ID, &device)?;
                report(&name, measure(&generator, &prompt)?);
            }
            Err(error) => println!("wgpu skipped: {error}"),
        }
    }

    let Ok(python) = std::env::var("HEARTH_REFERENCE_PYTHON") else {
        println!("reference skipped: set HEARTH_REFERENCE_PYTHON to a Python with transformers");
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let input = dir.path().join("prompt.json");
    std::fs::write(&input, serde_json::to_string(&prompt)?)?;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/bench_chat_reference.py");
    let output = Command::new(python)
        .arg(script)
        .arg(&input)
        .arg(DECODE_TOKENS.to_string())
        .output()?;
    anyhow::ensure!(
        output.status.success(),
        "reference failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let reference: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    for (key, name) in [
        ("transformers_cpu", "pytorch transformers, cpu (f32)"),
        ("llama_cpp_cpu", "llama.cpp, cpu (Q4_1 as stored)"),
    ] {
        let r = &reference[key];
        let (Some(prefill), Some(decode)) = (
            r["prefill_tokens_per_s"].as_f64(),
            r["decode_tokens_per_s"].as_f64(),
        ) else {
            println!("{name}: {}", r["skipped"]);
            continue;
        };
        report(
            &format!("{name}, {} threads", r["threads"]),
            Speed { prefill, decode },
        );
        println!(
            "  ratio hearth-cpu / {key}: prefill {:.2}x, decode {:.2}x",
            cpu.prefill / prefill,
            cpu.decode / decode
        );
    }
    Ok(())
}
