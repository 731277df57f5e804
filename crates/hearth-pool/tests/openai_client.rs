//! The official OpenAI Python client against the pool, unchanged: models, embeddings (base64
//! and float), chat, streamed chat, and errors. A scripted node answers the jobs.
//!
//! The client comes from the README's test command (`scripts/dev.sh test` installs a pinned
//! `openai` into a virtualenv and sets `HEARTH_TEST_PYTHON`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers fail the test by panicking

use std::path::PathBuf;

use hearth_protocol::{ChatMessage, Heartbeat, TaskPayload};
use serde_json::Value;

mod support;

use support::{KEY, Node, answer, chat_token_ids, marker, meter, pool};

#[tokio::test]
async fn the_official_openai_client_works_unchanged() {
    let python = std::env::var("HEARTH_TEST_PYTHON").expect(
        "HEARTH_TEST_PYTHON must name a Python with the openai package: run scripts/dev.sh test",
    );
    let (pool, _dir) = pool(|_| {}).await;
    let url = pool.url();
    let node = Node::join(&url, &["all-minilm-l6-v2", "smollm2-135m-instruct"]).await;

    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/openai_client.py");
    let client = tokio::process::Command::new(python)
        .arg(script)
        .arg(&url)
        .arg(KEY)
        .kill_on_drop(true)
        .output();
    // The node answers until the client is done; streamed chats get their text in pieces.
    let serve = async {
        loop {
            for job in node.lease(500).await {
                if let TaskPayload::Chat { params, .. } = &job.task
                    && params.stream
                {
                    for piece in ["Hello", " there", "!"] {
                        let beat = Heartbeat {
                            lease_id: job.lease_id.clone(),
                            text_delta: piece.into(),
                        };
                        node.post(&format!("/node/v1/jobs/{}/heartbeat", job.id), &beat)
                            .await;
                    }
                }
                assert_eq!(node.submit(&job, answer(&job)).await.status(), 200);
            }
        }
    };
    let output = tokio::select! {
        output = client => output.unwrap(),
        () = serve => unreachable!(),
    };
    assert!(
        output.status.success(),
        "client failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let seen: Value = serde_json::from_slice(&output.stdout).unwrap();
    eprintln!("openai {}", seen["version"]);
    assert_eq!(
        seen["models"],
        serde_json::json!([
            "all-minilm-l6-v2",
            "efficientnet-lite0",
            "smollm2-135m-instruct"
        ])
    );
    // The scripted node's vectors start with a marker of their text: base64 decoded by the
    // client (the f32 exactly; the script's JSON prints it to 16 digits).
    for (i, text) in ["hello world", "a second text"].iter().enumerate() {
        let vector = seen["embeddings"][i].as_array().unwrap();
        assert_eq!(vector.len(), support::DIMENSIONS);
        let first = vector[0].as_f64().unwrap();
        assert!((first - f64::from(marker(text))).abs() < 1e-12, "{first}");
    }
    // [CLS] hello world [SEP] and [CLS] a second text [SEP], by the pool's own tokenizer.
    assert_eq!(seen["embedding_tokens"], 4 + 5);
    let float = seen["float_embedding"][0].as_f64().unwrap();
    assert!((float - f64::from(marker("one"))).abs() < 1e-6, "{float}");
    assert_eq!(seen["chat"], "Hello there!");
    assert_eq!(seen["chat_finish"], "stop");
    let prompt = meter()
        .prompt_tokens(
            support::CHAT_MODEL,
            &[
                ChatMessage {
                    role: "system".into(),
                    content: "Be brief.".into(),
                },
                ChatMessage {
                    role: "user".into(),
                    content: "Hi".into(),
                },
            ],
        )
        .unwrap();
    assert_eq!(
        seen["chat_usage"],
        serde_json::json!([prompt, chat_token_ids().len()])
    );
    assert_eq!(
        seen["stream_pieces"],
        serde_json::json!(["Hello", " there", "!"])
    );
    assert_eq!(seen["stream_finish"], "stop");
    assert_eq!(seen["stream_usage"], chat_token_ids().len());
    assert_eq!(
        seen["not_found"],
        serde_json::json!([404, "model_not_found"])
    );
    assert_eq!(seen["bad_key"], 401);
}
