//! The executor keeps models warm within a memory budget: the least recently used model is
//! evicted to make room, a warm model is reused, and `release_all` lets every model go.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers fail the test by panicking

use base64::Engine;
use hearth_inference::chat::SMOLLM2_ID;
use hearth_inference::embeddings::MINILM_ID;
use hearth_inference::images::EFFICIENTNET_ID;
use hearth_inference::{CancelToken, ComputeDevice, ModelStore};
use hearth_node::executor::Executor;
use hearth_protocol::{ChatMessage, ChatParams, TaskOutput, TaskPayload};

fn embeddings() -> TaskPayload {
    TaskPayload::Embeddings {
        texts: vec!["warm models answer fast".into()],
    }
}

fn image() -> TaskPayload {
    let photo = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../hearth-inference/fixtures/coffee.png"
    ))
    .unwrap();
    TaskPayload::ImageClassification {
        images: vec![base64::engine::general_purpose::STANDARD.encode(photo)],
        top_k: 1,
    }
}

#[test]
fn least_recently_used_models_make_room_within_the_budget() {
    // Manifests: MiniLM 200 MiB, EfficientNet 400 MiB, SmolLM2 1200 MiB.
    let executor = Executor::with_budget(ModelStore::from_env(), ComputeDevice::cpu(), 700 << 20);
    let run = |model: &str, task: &TaskPayload| {
        executor
            .run(model, task, &CancelToken::new(), &mut |_| {})
            .unwrap()
    };
    run(MINILM_ID, &embeddings());
    let TaskOutput::ImageClassification { results } = run(EFFICIENTNET_ID, &image()) else {
        panic!("not a classification")
    };
    assert_eq!(results[0][0].label, "espresso");
    assert_eq!(executor.loaded_models(), [MINILM_ID, EFFICIENTNET_ID]);
    // Using MiniLM again makes EfficientNet the least recently used.
    run(MINILM_ID, &embeddings());
    assert_eq!(executor.loaded_models(), [EFFICIENTNET_ID, MINILM_ID]);
    // The chat model alone is over the budget: everything else goes, it is still allowed.
    let chat = TaskPayload::Chat {
        messages: vec![ChatMessage {
            role: "user".into(),
            content: "Say hi.".into(),
        }],
        params: ChatParams {
            max_tokens: 4,
            temperature: 0.0,
            top_p: 1.0,
            seed: 1,
            stop: vec![],
            stream: false,
        },
    };
    run(SMOLLM2_ID, &chat);
    assert_eq!(executor.loaded_models(), [SMOLLM2_ID]);
    run(MINILM_ID, &embeddings());
    assert_eq!(executor.loaded_models(), [MINILM_ID]);
    assert_eq!(executor.release_all(), 1);
    assert!(executor.loaded_models().is_empty());
}

/// A second embedding model added the way the docs say: a folder with its manifest (here
/// all-MiniLM-L6-v2's, under another id and price) and its files. No code names it.
fn store_with_an_added_model() -> (tempfile::TempDir, ModelStore) {
    let shipped = ModelStore::from_env();
    let dir = tempfile::tempdir().unwrap();
    let added = dir.path().join("minilm-added/weights");
    std::fs::create_dir_all(&added).unwrap();
    let manifest = std::fs::read_to_string(shipped.root().join(MINILM_ID).join("manifest.toml"))
        .unwrap()
        .replace(&format!("id = \"{MINILM_ID}\""), "id = \"minilm-added\"");
    std::fs::write(dir.path().join("minilm-added/manifest.toml"), manifest).unwrap();
    for file in ["model.safetensors", "tokenizer.json"] {
        let from = shipped.root().join(MINILM_ID).join("weights").join(file);
        std::fs::hard_link(&from, added.join(file))
            .or_else(|_| std::fs::copy(&from, added.join(file)).map(|_| ()))
            .unwrap();
    }
    let store = ModelStore::new(dir.path());
    (dir, store)
}

#[test]
fn a_model_added_by_its_manifest_alone_is_offered_and_run() {
    let (_dir, store) = store_with_an_added_model();
    let executor = Executor::new(store, ComputeDevice::cpu());
    assert_eq!(executor.available_models(), ["minilm-added"]);
    let added = executor
        .run(
            "minilm-added",
            &embeddings(),
            &CancelToken::new(),
            &mut |_| {},
        )
        .unwrap();
    let shipped = Executor::new(ModelStore::from_env(), ComputeDevice::cpu())
        .run(MINILM_ID, &embeddings(), &CancelToken::new(), &mut |_| {})
        .unwrap();
    assert_eq!(added, shipped, "the same weights give the same vectors");
    // A task the model's manifest does not name is refused, naming both.
    let error = executor
        .run("minilm-added", &image(), &CancelToken::new(), &mut |_| {})
        .unwrap_err()
        .to_string();
    assert_eq!(
        error,
        "model minilm-added does embeddings, not image_classification"
    );
    let unknown = executor
        .run(
            "not-a-model",
            &embeddings(),
            &CancelToken::new(),
            &mut |_| {},
        )
        .unwrap_err()
        .to_string();
    assert_eq!(unknown, "model not-a-model is not offered by this node");
}
