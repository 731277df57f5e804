//! Bad input from users, files and the network: each gives a typed error, never a panic, and
//! never a huge allocation.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers fail the test by panicking

use std::path::{Path, PathBuf};

use hearth_inference::bert::BertConfig;
use hearth_inference::efficientnet::EfficientNetLite;
use hearth_inference::embeddings::{MINILM_ID, texts_from_wire};
use hearth_inference::images::{EFFICIENTNET_ID, MAX_IMAGE_SIDE};
use hearth_inference::{ComputeDevice, ImageClassifier, InferenceError, ModelStore, TextEmbedder};

fn store() -> ModelStore {
    ModelStore::from_env()
}

/// A copy of one model's folder in a temporary store, to damage freely.
fn scratch_store(id: &str) -> (tempfile::TempDir, ModelStore) {
    let dir = tempfile::tempdir().unwrap();
    let from = store().root().join(id);
    let to = dir.path().join(id);
    std::fs::create_dir_all(to.join("weights")).unwrap();
    for entry in std::fs::read_dir(&from).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::copy(&path, to.join(path.file_name().unwrap())).unwrap();
        }
    }
    for entry in std::fs::read_dir(from.join("weights")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, to.join("weights").join(path.file_name().unwrap())).unwrap();
    }
    let store = ModelStore::new(dir.path());
    (dir, store)
}

fn truncate(path: &Path, keep: u64) {
    let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    file.set_len(keep).unwrap();
}

#[test]
fn empty_text_is_refused_and_long_text_is_truncated() {
    let embedder = TextEmbedder::load(&store(), MINILM_ID, ComputeDevice::cpu()).unwrap();
    assert!(matches!(
        embedder.embed(&["fine", ""]),
        Err(InferenceError::EmptyInput { index: 1 })
    ));
    assert!(matches!(
        embedder.embed(&[" \n\t"]),
        Err(InferenceError::EmptyInput { index: 0 })
    ));

    let long = "Hearth lends spare GPUs. ".repeat(4000); // 100,000 characters
    assert_eq!(long.len(), 100_000);
    let output = embedder.embed(&[&long]).unwrap();
    assert_eq!(output.tokens, [256]);
    let norm: f32 = output.vectors[0].iter().map(|v| v * v).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-4, "unit length, got {norm}");
}

#[test]
fn invalid_utf8_from_the_wire_names_the_input() {
    let inputs = vec![b"ok".to_vec(), b"caf\xc3".to_vec()];
    match texts_from_wire(&inputs) {
        Err(
            error @ InferenceError::InvalidUtf8 {
                index: 1,
                offset: 3,
            },
        ) => {
            assert!(error.to_string().contains("input 1"));
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn truncated_and_corrupted_weights_are_refused_by_the_store() {
    let (dir, scratch) = scratch_store(MINILM_ID);
    let weights = dir.path().join(MINILM_ID).join("weights/model.safetensors");
    truncate(&weights, 1_000_000);
    let error = TextEmbedder::load(&scratch, MINILM_ID, ComputeDevice::cpu()).unwrap_err();
    assert!(
        matches!(
            error,
            InferenceError::SizeMismatch {
                actual: 1_000_000,
                ..
            }
        ),
        "{error}"
    );

    let (dir, scratch) = scratch_store(EFFICIENTNET_ID);
    let weights = dir
        .path()
        .join(EFFICIENTNET_ID)
        .join("weights/efficientnet-lite0-57934424.pth");
    let mut bytes = std::fs::read(&weights).unwrap();
    bytes[5_000_000] ^= 0x40;
    std::fs::write(&weights, &bytes).unwrap();
    let error = ImageClassifier::load(&scratch, EFFICIENTNET_ID, ComputeDevice::cpu()).unwrap_err();
    let message = error.to_string();
    assert!(
        matches!(error, InferenceError::HashMismatch { .. }),
        "{message}"
    );
    assert!(
        message.contains("efficientnet-lite0-57934424.pth"),
        "{message}"
    );
    assert!(
        message.contains("579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"),
        "{message}"
    );
}

#[test]
fn truncated_weight_files_fail_to_load_without_panicking() {
    let device = ComputeDevice::cpu().device;
    let dir = tempfile::tempdir().unwrap();
    let source = store()
        .verify(MINILM_ID)
        .unwrap()
        .file("model.safetensors")
        .unwrap();
    let cut = dir.path().join("cut.safetensors");
    std::fs::copy(&source, &cut).unwrap();
    truncate(&cut, 40_000_000);
    let result = BertConfig::MINILM_L6.init(&device).load_safetensors(&cut);
    assert!(
        matches!(result, Err(InferenceError::Weights { .. })),
        "{result:?}"
    );

    let source = store()
        .verify(EFFICIENTNET_ID)
        .unwrap()
        .file("efficientnet-lite0-57934424.pth")
        .unwrap();
    let cut = dir.path().join("cut.pth");
    std::fs::copy(&source, &cut).unwrap();
    truncate(&cut, 9_000_000);
    let result = EfficientNetLite::lite0(&device, 1000).load_pytorch(&cut);
    assert!(
        matches!(result, Err(InferenceError::Weights { .. })),
        "{result:?}"
    );

    let garbage = dir.path().join("garbage.pth");
    std::fs::write(&garbage, b"not a pickle at all").unwrap();
    let result = EfficientNetLite::lite0(&device, 1000).load_pytorch(&garbage);
    assert!(
        matches!(result, Err(InferenceError::Weights { .. })),
        "{result:?}"
    );
}

/// A minimal safetensors file holding the given f32 tensors.
fn write_safetensors(path: &PathBuf, tensors: &[(&str, Vec<usize>)]) {
    let mut header = serde_json::Map::new();
    let mut offset = 0usize;
    for (name, shape) in tensors {
        let bytes = shape.iter().product::<usize>() * 4;
        header.insert(
            (*name).to_owned(),
            serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + bytes]}),
        );
        offset += bytes;
    }
    let header = serde_json::to_vec(&header).unwrap();
    let mut file = (header.len() as u64).to_le_bytes().to_vec();
    file.extend_from_slice(&header);
    file.resize(file.len() + offset, 0);
    std::fs::write(path, file).unwrap();
}

#[test]
fn a_tensor_of_the_wrong_shape_is_a_weights_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wrong.safetensors");
    write_safetensors(&path, &[("embeddings.word_embeddings.weight", vec![10, 4])]);
    let device = ComputeDevice::cpu().device;
    let error = BertConfig::MINILM_L6
        .init(&device)
        .load_safetensors(&path)
        .unwrap_err();
    assert!(matches!(error, InferenceError::Weights { .. }), "{error}");
}

/// CRC-32 (IEEE), for writing a valid PNG header by hand.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn png_chunk(png: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    png.extend_from_slice(&u32::try_from(data.len()).unwrap().to_be_bytes());
    let mut body = kind.to_vec();
    body.extend_from_slice(data);
    png.extend_from_slice(&body);
    png.extend_from_slice(&crc32(&body).to_be_bytes());
}

/// A PNG signature and header chunk claiming `width`x`height` 8-bit RGB pixels.
fn png_header(width: u32, height: u32) -> Vec<u8> {
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = width.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    png_chunk(&mut png, b"IHDR", &ihdr);
    png
}

/// A well-formed PNG file that claims `width`x`height` but carries only a few bytes of data:
/// what an attacker sends to make a decoder allocate the claimed size.
fn png_bomb(width: u32, height: u32) -> Vec<u8> {
    let mut png = png_header(width, height);
    png_chunk(
        &mut png,
        b"IDAT",
        &[0x78, 0x9c, 0x63, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01],
    );
    png_chunk(&mut png, b"IEND", &[]);
    png
}

#[test]
fn non_images_and_huge_images_are_refused() {
    let classifier =
        ImageClassifier::load(&store(), EFFICIENTNET_ID, ComputeDevice::cpu()).unwrap();
    let error = classifier
        .classify(&[b"definitely not an image"], 5)
        .unwrap_err();
    assert!(
        matches!(error, InferenceError::ImageDecode { index: 0, .. }),
        "{error}"
    );

    let huge = png_bomb(20_000, 20_000);
    let error = classifier.classify(&[&huge], 5).unwrap_err();
    assert!(
        matches!(
            error,
            InferenceError::ImageTooLarge {
                width: 20_000,
                height: 20_000,
                limit: MAX_IMAGE_SIDE,
                ..
            }
        ),
        "{error}"
    );

    // A valid header with no pixel data behind it.
    let truncated = png_header(64, 64);
    let error = classifier.classify(&[&truncated], 5).unwrap_err();
    assert!(
        matches!(error, InferenceError::ImageDecode { .. }),
        "{error}"
    );
}
