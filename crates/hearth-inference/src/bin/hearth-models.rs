//! Try Hearth's models by hand.
//!
//!     hearth-models list
//!     hearth-models fetch                   (download and verify every model's weights)
//!     hearth-models embed [--backend auto|cpu|wgpu] "a sentence" ["another" ...]
//!     hearth-models classify [--backend ...] [--top 5] image.png [...]
//!     hearth-models preprocess image.png out.npy   (the classifier's input, for reference runs)
//!     hearth-models bench [--json] [--force]   (the capability benchmark; stored, re-run when
//!                                              the hardware or drivers change, or with --force)
//!     hearth-models chat [--backend ...] [--max-tokens 256] [--temperature 0.7] [--seed 1]
//!                        [--system TEXT] ["a message"]   (no message: a conversation on stdin)

use std::io::{BufRead, Write};

use anyhow::Context;
use hearth_cli::{take_flag, take_option, usage};
use hearth_inference::chat::SMOLLM2_ID as CHAT_MODEL_ID;
use hearth_inference::embeddings::MINILM_ID;
use hearth_inference::images::EFFICIENTNET_ID;
use hearth_inference::{
    BackendPreference, CancelToken, ChatGenerator, ChatMessage, ComputeDevice, GenerationParams,
    ImageClassifier, ModelStore, Role, TextEmbedder,
};

const USAGE: &str = "usage: hearth-models [--backend auto|cpu|wgpu] <command>
  list                          the models and whether their files are here and verified
  fetch                         download and verify every model's weights
  embed TEXT...                 sentence embeddings
  classify [--top 5] IMAGE...   what is in each image
  preprocess IMAGE OUT.npy      the classifier's input, for reference runs
  bench [--json] [--force]      the capability benchmark
  gpu-check [--json]            whether the GPU computes a small product right (run by the
                                node, in a process of its own, before it trusts a GPU)
  chat [--max-tokens 256] [--temperature 0.7] [--seed 1] [--system TEXT] [MESSAGE]
                                a reply (no MESSAGE: a conversation on standard input)";

/// The commands, for naming the nearest one to a typo.
const COMMANDS: &[&str] = &[
    "list",
    "fetch",
    "embed",
    "classify",
    "preprocess",
    "bench",
    "gpu-check",
    "chat",
    "help",
];

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => hearth_cli::report("hearth-models", &error),
    }
}

/// `--name VALUE` parsed, or a usage error naming the option and the value.
fn parsed<T: std::str::FromStr>(value: Option<String>, name: &str) -> anyhow::Result<Option<T>>
where
    T::Err: std::fmt::Display,
{
    value
        .map(|v| {
            v.parse::<T>()
                .map_err(|e| usage(format!("{name} {v:?}: {e}")))
        })
        .transpose()
}

fn run() -> anyhow::Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let backend: BackendPreference =
        parsed(take_option(&mut args, "--backend")?, "--backend")?.unwrap_or_default();
    let top: usize = parsed(take_option(&mut args, "--top")?, "--top")?.unwrap_or(5);
    let max_tokens: usize =
        parsed(take_option(&mut args, "--max-tokens")?, "--max-tokens")?.unwrap_or(256);
    let temperature: f32 =
        parsed(take_option(&mut args, "--temperature")?, "--temperature")?.unwrap_or(0.0);
    let seed: u64 = parsed(take_option(&mut args, "--seed")?, "--seed")?.unwrap_or(0);
    let system = take_option(&mut args, "--system")?;
    let json = take_flag(&mut args, "--json");
    let force = take_flag(&mut args, "--force");
    // The models Hearth uses here (`ModelStore::for_data_dir`): $HEARTH_MODELS when set; an
    // installed app's (its own over its package's); else this checkout's.
    let store = match hearth_instance::DataFolder::Hearth.path() {
        Ok(data_dir) => ModelStore::for_data_dir(&data_dir),
        Err(_) => ModelStore::from_env(),
    };
    let Some(command) = args.first().cloned() else {
        return Err(usage("no command given"));
    };
    let rest = &args[1..];
    match command.as_str() {
        "list" => {
            for manifest in store.list()? {
                let state = match store.verify(&manifest.id) {
                    Ok(_) => "verified".to_owned(),
                    Err(e) => format!("not ready: {e}"),
                };
                println!(
                    "{:<22} {:<22} {}",
                    manifest.id,
                    manifest.task.as_str(),
                    state
                );
            }
        }
        "fetch" => {
            let cache = hearth_inference::fetch::default_package_cache();
            for manifest in store.list()? {
                let report = store.fetch(&manifest.id, &cache)?;
                println!(
                    "{:<20} {} extracted, {} already verified",
                    report.model,
                    report.extracted.len(),
                    report.present.len()
                );
            }
        }
        "help" | "--help" | "-h" => println!("{USAGE}"),
        "embed" if rest.is_empty() => return Err(usage("embed needs at least one TEXT")),
        "classify" if rest.is_empty() => return Err(usage("classify needs at least one IMAGE")),
        "embed" => {
            let device = ComputeDevice::select(backend)?;
            let embedder = TextEmbedder::load(&store, MINILM_ID, device)?;
            let texts: Vec<&str> = rest.iter().map(String::as_str).collect();
            let output = embedder.embed(&texts)?;
            for ((text, vector), tokens) in texts.iter().zip(&output.vectors).zip(&output.tokens) {
                let head: Vec<String> = vector.iter().take(6).map(|v| format!("{v:+.4}")).collect();
                println!(
                    "{text:?}: {tokens} tokens, [{} ...] ({} dims)",
                    head.join(", "),
                    vector.len()
                );
            }
            eprintln!("ran on {}", embedder.device().describe());
        }
        "classify" => {
            let device = ComputeDevice::select(backend)?;
            let classifier = ImageClassifier::load(&store, EFFICIENTNET_ID, device)?;
            let files = rest
                .iter()
                .map(|p| std::fs::read(p).with_context(|| format!("reading {p}")))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let inputs: Vec<&[u8]> = files.iter().map(Vec::as_slice).collect();
            for (path, scores) in rest.iter().zip(classifier.classify(&inputs, top)?) {
                println!("{path}:");
                for score in scores {
                    println!(
                        "  {:>5.1}%  {:>4}  {}",
                        score.probability * 100.0,
                        score.class,
                        score.label
                    );
                }
            }
            eprintln!("ran on {}", classifier.device().describe());
        }
        "preprocess" => {
            let [image, out] = rest else {
                return Err(usage("preprocess needs an IMAGE and an OUT.npy"));
            };
            let classifier = ImageClassifier::load(&store, EFFICIENTNET_ID, ComputeDevice::cpu())?;
            let bytes = std::fs::read(image)?;
            let planar = classifier.preprocessing().prepare(0, &bytes)?;
            let side = classifier.preprocessing().crop as usize;
            write_npy(out, &planar, [1, 3, side, side])?;
        }
        "bench" => {
            let path = hearth_inference::fetch::cache_dir().join("capability.json");
            let (report, measured) =
                hearth_inference::capability::load_or_run_here(&path, &store, force, &mut |p| {
                    eprintln!("[{:>3.0}%] {}", p.fraction * 100.0, p.message)
                })?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", hearth_inference::capability::render(&report));
            }
            if !measured {
                eprintln!(
                    "(stored result for this hardware, from {}; --force measures again)",
                    path.display()
                );
            }
        }
        "gpu-check" => {
            let verdict = hearth_inference::gpu_check::check_here()?;
            if json {
                println!("{}", serde_json::to_string(&verdict)?);
            } else {
                println!(
                    "{} ({}): {}: {}",
                    verdict.adapter,
                    verdict.api,
                    if verdict.passed { "passed" } else { "failed" },
                    verdict.detail
                );
            }
            anyhow::ensure!(
                verdict.passed,
                "the GPU failed the check: {}",
                verdict.detail
            );
        }
        "chat" => {
            let device = ComputeDevice::select(backend)?;
            eprintln!("loading {CHAT_MODEL_ID} on {}", device.describe());
            let generator = ChatGenerator::load(&store, CHAT_MODEL_ID, &device)?;
            let params = GenerationParams {
                max_tokens,
                temperature,
                seed,
                top_p: if temperature > 0.0 { 0.9 } else { 1.0 },
                ..GenerationParams::default()
            };
            let mut messages: Vec<ChatMessage> = system
                .map(|s| ChatMessage::new(Role::System, s))
                .into_iter()
                .collect();
            let one_shot = rest.join(" ");
            let stdin = std::io::stdin();
            let mut lines = stdin.lock().lines();
            loop {
                let prompt = if one_shot.is_empty() {
                    eprint!("> ");
                    match lines.next() {
                        Some(line) => line?,
                        None => break,
                    }
                } else {
                    one_shot.clone()
                };
                if prompt.trim().is_empty() {
                    continue;
                }
                messages.push(ChatMessage::new(Role::User, prompt));
                let mut out = std::io::stdout();
                let generation = generator.generate(
                    &messages,
                    &params,
                    &CancelToken::new(),
                    &mut |_, text| {
                        let _ = out.write_all(text.as_bytes());
                        let _ = out.flush();
                    },
                )?;
                let _ = writeln!(std::io::stdout());
                let decoded = generation.tokens.len().saturating_sub(1);
                eprintln!(
                    "[{} prompt tokens in {:.2} s, {} tokens at {:.1} tokens/s, finished: {}]",
                    generation.prompt_tokens,
                    generation.prefill.as_secs_f64(),
                    generation.tokens.len(),
                    decoded as f64 / generation.decode.as_secs_f64().max(1e-9),
                    generation.finish_reason
                );
                messages.push(ChatMessage::new(Role::Assistant, generation.text));
                if !one_shot.is_empty() {
                    break;
                }
            }
        }
        other => return Err(hearth_cli::unknown_command(other, COMMANDS)),
    }
    Ok(())
}

/// Write a little-endian f32 array in NumPy's .npy format (version 1.0).
fn write_npy(path: &str, values: &[f32], shape: [usize; 4]) -> anyhow::Result<()> {
    let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
    let mut header = format!(
        "{{'descr': '<f4', 'fortran_order': False, 'shape': ({}), }}",
        dims.join(", ")
    );
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
    file.write_all(b"\x93NUMPY\x01\x00")?;
    file.write_all(&u16::try_from(header.len())?.to_le_bytes())?;
    file.write_all(header.as_bytes())?;
    for value in values {
        file.write_all(&value.to_le_bytes())?;
    }
    file.flush()?;
    Ok(())
}
