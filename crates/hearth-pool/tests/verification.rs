//! Verification over HTTP: with every job checked, nobody is paid until a second node agrees;
//! a disagreeing node is outvoted by a third and struck; a chat answer is scored by teacher
//! forcing and redone elsewhere when it fails.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers fail the test by panicking

use hearth_protocol::{ReceiptsReply, ReceiptsRequest, ResultReply, TaskOutput, TaskPayload};
use serde_json::{Value, json};

mod support;

use support::{Node, answer, chat_token_ids, customer, marker, pool, unit_vector};

async fn reply(
    node: &Node,
    job: &hearth_protocol::Job,
    output: TaskOutput,
) -> (u16, Option<ResultReply>) {
    let response = node.submit(job, output).await;
    let status = response.status().as_u16();
    (status, response.json::<ResultReply>().await.ok())
}

async fn receipts(node: &Node) -> ReceiptsReply {
    node.post(
        "/node/v1/receipts",
        &ReceiptsRequest {
            after_sequence: None,
            limit: 100,
        },
    )
    .await
    .json()
    .await
    .unwrap()
}

#[tokio::test]
async fn two_agreeing_answers_are_both_paid_and_an_outvoted_one_is_struck() {
    let (pool, _dir) = pool(|c| c.verification_share = 1.0).await;
    let url = pool.url();
    let nodes = [
        Node::join(&url, &["all-minilm-l6-v2"]).await,
        Node::join(&url, &["all-minilm-l6-v2"]).await,
        Node::join(&url, &["all-minilm-l6-v2"]).await,
    ];
    let request = tokio::spawn(customer(
        &url,
        "/v1/embeddings",
        json!({ "model": "all-minilm-l6-v2", "input": ["verify me"] }),
    ));

    // The first node answers wrongly: held, not paid.
    let job = nodes[0].lease(2000).await.remove(0);
    // Well formed (unit length, true token counts), but pointing elsewhere.
    let TaskOutput::Embeddings { tokens, .. } = answer(&job) else {
        unreachable!()
    };
    let wrong = TaskOutput::Embeddings {
        vectors: vec![unit_vector(0.9)],
        tokens,
    };
    let (status, first) = reply(&nodes[0], &job, wrong).await;
    assert_eq!(status, 200);
    assert!(first.unwrap().pending_verification);
    // The same node is never asked to check itself.
    assert!(nodes[0].lease(300).await.is_empty());
    // The second disagrees with the first: a third decides.
    let job2 = nodes[1].lease(2000).await.remove(0);
    assert_eq!(job2.id, job.id);
    let (_, second) = reply(&nodes[1], &job2, answer(&job2)).await;
    assert!(second.unwrap().pending_verification);
    let job3 = nodes[2].lease(2000).await.remove(0);
    let (status, third) = reply(&nodes[2], &job3, answer(&job3)).await;
    assert_eq!(status, 200);
    assert!(third.unwrap().receipt.is_some());

    let body: Value = request.await.unwrap().json().await.unwrap();
    assert_eq!(
        body["data"][0]["embedding"][0],
        f64::from(marker("verify me")),
        "the agreeing answer"
    );
    // Nodes 1 and 2 are paid (node 1 finds its receipt later), node 0 gets nothing and a strike.
    assert!(receipts(&nodes[0]).await.receipts.is_empty());
    assert_eq!(receipts(&nodes[1]).await.receipts.len(), 1);
    assert_eq!(
        pool.state()
            .nodes
            .record(nodes[0].signer.node_id())
            .await
            .unwrap()
            .strikes,
        1
    );
    let balances = pool.state().store.balances().await.unwrap();
    assert_eq!(balances.len(), 2);
}

#[tokio::test]
async fn a_chat_answer_is_scored_and_redone_when_it_fails() {
    let (pool, _dir) = pool(|c| c.verification_share = 1.0).await;
    let url = pool.url();
    let model = ["smollm2-135m-instruct"];
    let (author, scorer, other, checker) = (
        Node::join(&url, &model).await,
        Node::join(&url, &model).await,
        Node::join(&url, &model).await,
        Node::join(&url, &model).await,
    );
    let request = tokio::spawn(customer(
        &url,
        "/v1/chat/completions",
        json!({ "model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": "Hi"}] }),
    ));
    let job = author.lease(2000).await.remove(0);
    let (_, held) = reply(&author, &job, answer(&job)).await;
    assert!(held.unwrap().pending_verification);

    // The scorer is asked to rank the author's tokens, and finds them implausible.
    let check = scorer.lease(2000).await.remove(0);
    let TaskPayload::ChatScore { token_ids, .. } = &check.task else {
        panic!("expected a scoring job, got {:?}", check.task);
    };
    assert_eq!(token_ids, &chat_token_ids());
    let mut ranks = vec![0; token_ids.len()];
    ranks[1] = 900;
    let (status, scored) = reply(&scorer, &check, TaskOutput::ChatScore { ranks }).await;
    assert_eq!(status, 200);
    assert!(
        scored.unwrap().receipt.is_some(),
        "the scorer is paid for its work"
    );

    // Redone by a node that has not touched it, checked again by a fourth, and accepted.
    let redo = other.lease(2000).await.remove(0);
    assert!(matches!(redo.task, TaskPayload::Chat { .. }));
    let (status, held) = reply(&other, &redo, answer(&redo)).await;
    assert_eq!(status, 200);
    assert!(held.unwrap().pending_verification);
    let check = checker.lease(2000).await.remove(0);
    let (status, scored) = reply(&checker, &check, answer(&check)).await;
    assert_eq!(status, 200);
    assert!(scored.unwrap().receipt.is_some());
    assert_eq!(receipts(&other).await.receipts.len(), 1, "the redo is paid");
    let body: Value = request.await.unwrap().json().await.unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], "Hello there!");
    assert_eq!(
        pool.state()
            .nodes
            .record(author.signer.node_id())
            .await
            .unwrap()
            .strikes,
        1
    );
    assert!(
        receipts(&author).await.receipts.is_empty(),
        "no credit for the failed answer"
    );
}

#[tokio::test]
async fn the_embedded_pool_runs_its_demo_customer_through_the_public_api() {
    let dir = tempfile::tempdir().unwrap();
    let embedded = hearth_pool::embedded::start(
        dir.path(),
        &hearth_inference::ModelStore::from_env(),
        Some(std::time::Duration::from_millis(5)),
    )
    .await
    .unwrap();
    let node = Node::join(
        &embedded.url(),
        &[
            "all-minilm-l6-v2",
            "smollm2-135m-instruct",
            "efficientnet-lite0",
        ],
    )
    .await;
    let stats = std::sync::Arc::clone(embedded.demo_stats());
    let mut kinds = std::collections::BTreeSet::new();
    while stats.completed.load(std::sync::atomic::Ordering::Relaxed) < 6 {
        for job in node.lease(2000).await {
            kinds.insert(match &job.task {
                TaskPayload::Embeddings { .. } => "embeddings",
                TaskPayload::Chat { .. } => "chat",
                TaskPayload::ImageClassification { images, .. } => {
                    assert!(images[0].len() > 100_000, "a real photo");
                    "images"
                }
                TaskPayload::ChatScore { .. } => "score",
            });
            assert_eq!(node.submit(&job, answer(&job)).await.status(), 200);
        }
    }
    assert_eq!(
        kinds.into_iter().collect::<Vec<_>>(),
        ["chat", "embeddings", "images"]
    );
    assert_eq!(stats.failed.load(std::sync::atomic::Ordering::Relaxed), 0);
    let registration_demo = embedded.pool().state().config.demo;
    assert!(registration_demo);
}
