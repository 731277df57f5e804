//! Customer accounts over real HTTP: keys stored only as hashes, each request charged what the
//! nodes were paid plus the pool's fee, and a key's rate limit, cap on requests in flight and
//! quota answered with OpenAI's 429; keys made, listed and revoked with `hearth-pool keys`
//! while the pool serves.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers fail the test by panicking

use std::time::Duration;

use hearth_pool::accounts::NewKey;
use serde_json::{Value, json};

mod support;

use support::{EMBEDDING_MODEL, Node, answer, pool};

fn post(url: &str, secret: &str, body: Value) -> impl Future<Output = reqwest::Response> + use<> {
    let request = reqwest::Client::new()
        .post(format!("{url}/v1/embeddings"))
        .bearer_auth(secret)
        .json(&body);
    async move { request.send().await.unwrap() }
}

fn new_key(name: &str) -> NewKey {
    NewKey {
        name: name.into(),
        requests_per_minute: 600,
        max_concurrent: 16,
        quota_micro_credits: None,
    }
}

#[tokio::test]
async fn customers_are_charged_what_nodes_are_paid_plus_the_fee_within_their_limits() {
    let (pool, dir) = pool(|c| c.fee_basis_points = 2_500).await;
    let url = pool.url();
    let accounts = &pool.state().accounts;
    let node = Node::join(&url, &[EMBEDDING_MODEL]).await;

    // Charged exactly: the node's pay plus 25 %, rounded up, in integer micro-credits.
    let metered = accounts.add(&new_key("metered")).await.unwrap();
    let texts: Vec<String> = (0..40).map(|i| format!("text number {i}")).collect();
    let request = tokio::spawn(post(
        &url,
        &metered.secret,
        json!({ "model": EMBEDDING_MODEL, "input": texts }),
    ));
    for _ in 0..3 {
        let job = node.lease(2000).await.remove(0);
        assert_eq!(node.submit(&job, answer(&job)).await.status(), 200);
    }
    assert_eq!(request.await.unwrap().status(), 200);
    let receipts = pool
        .state()
        .store
        .receipts_after(node.signer.node_id(), None, 100)
        .await
        .unwrap();
    assert_eq!(receipts.len(), 3);
    // The fee is charged on each job's pay, rounded up there.
    let charged: u64 = receipts
        .iter()
        .map(|r| {
            r.receipt.payment.micro_credits
                + (r.receipt.payment.micro_credits * 2_500).div_ceil(10_000)
        })
        .sum();
    let usage = pool.state().store.usage().await.unwrap();
    let (_, model, used) = usage.iter().find(|(k, _, _)| *k == metered.key.id).unwrap();
    assert_eq!(model, EMBEDDING_MODEL);
    assert_eq!(used.jobs, 3);
    assert_eq!(used.charged_micro_credits, charged);
    let tokens: u64 = support::meter()
        .embedding_tokens(EMBEDDING_MODEL, &texts)
        .unwrap()
        .iter()
        .map(|&t| u64::from(t))
        .sum();
    assert_eq!(used.units, tokens);

    // A quota: the first request fits, the next is refused once it is used up.
    let capped = accounts
        .add(&NewKey {
            quota_micro_credits: Some(1),
            ..new_key("capped")
        })
        .await
        .unwrap();
    let request = tokio::spawn(post(
        &url,
        &capped.secret,
        json!({ "model": EMBEDDING_MODEL, "input": "hi" }),
    ));
    let job = node.lease(2000).await.remove(0);
    node.submit(&job, answer(&job)).await;
    assert_eq!(request.await.unwrap().status(), 200);
    let over = post(
        &url,
        &capped.secret,
        json!({ "model": EMBEDDING_MODEL, "input": "hi" }),
    )
    .await;
    assert_eq!(over.status(), 429);
    let body: Value = over.json().await.unwrap();
    assert_eq!(body["error"]["code"], "insufficient_quota");
    assert_eq!(
        pool.state().queue.counts().await.unwrap(),
        (0, 0),
        "nothing queued for it"
    );

    // A rate limit: the third request within a minute is refused with Retry-After.
    let slow = accounts
        .add(&NewKey {
            requests_per_minute: 2,
            ..new_key("slow")
        })
        .await
        .unwrap();
    let models = |secret: String| {
        let url = url.clone();
        async move {
            reqwest::Client::new()
                .get(format!("{url}/v1/models"))
                .bearer_auth(secret)
                .send()
                .await
                .unwrap()
        }
    };
    assert_eq!(models(slow.secret.clone()).await.status(), 200);
    assert_eq!(models(slow.secret.clone()).await.status(), 200);
    let limited = models(slow.secret.clone()).await;
    assert_eq!(limited.status(), 429);
    assert!(limited.headers().contains_key("retry-after"));
    let body: Value = limited.json().await.unwrap();
    assert_eq!(body["error"]["type"], "rate_limit_error");

    // A cap on requests in flight: the second waits for nobody, it is refused at once.
    let single = accounts
        .add(&NewKey {
            max_concurrent: 1,
            ..new_key("single")
        })
        .await
        .unwrap();
    let first = tokio::spawn(post(
        &url,
        &single.secret,
        json!({ "model": EMBEDDING_MODEL, "input": "first" }),
    ));
    let job = node.lease(2000).await.remove(0);
    let second = post(
        &url,
        &single.secret,
        json!({ "model": EMBEDDING_MODEL, "input": "second" }),
    )
    .await;
    assert_eq!(second.status(), 429);
    node.submit(&job, answer(&job)).await;
    assert_eq!(first.await.unwrap().status(), 200);
    let third = tokio::spawn(post(
        &url,
        &single.secret,
        json!({ "model": EMBEDDING_MODEL, "input": "third" }),
    ));
    let job = node.lease(2000).await.remove(0);
    node.submit(&job, answer(&job)).await;
    assert_eq!(third.await.unwrap().status(), 200, "its place came back");

    // Revoked: refused as an unknown key.
    accounts.revoke(&single.key.id).await.unwrap();
    let revoked = post(
        &url,
        &single.secret,
        json!({ "model": EMBEDDING_MODEL, "input": "x" }),
    )
    .await;
    assert_eq!(revoked.status(), 401);

    // The store holds hashes, never a secret: what it gives back, and (sled) every byte on disk.
    let mut stored =
        serde_json::to_vec(&pool.state().store.customer_keys().await.unwrap()).unwrap();
    drop(pool);
    tokio::time::sleep(Duration::from_millis(200)).await;
    for entry in walk(dir.path()) {
        stored.extend(std::fs::read(entry).unwrap());
    }
    let text = String::from_utf8_lossy(&stored);
    for issued in [&metered, &capped, &slow, &single] {
        assert!(!text.contains(&issued.secret), "a secret is on disk");
        assert!(text.contains(&issued.key.key_hash));
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

fn cli(data: &std::path::Path, args: &[&str]) -> (bool, String) {
    // The config beside the data folder names the database, where it is PostgreSQL.
    let config = data.with_file_name("pool.toml");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_hearth-pool"))
        .args(args)
        .arg("--data")
        .arg(data)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    (output.status.success(), text)
}

#[tokio::test]
async fn keys_usage_and_payouts_work_while_the_pool_serves() {
    let home = tempfile::tempdir().unwrap();
    let data = home.path().join("data");
    let config = home.path().join("pool.toml");
    std::fs::write(
        &config,
        support::database_line().await
            + "bind = \"127.0.0.1:0\"\nprobation_jobs = 0\nverification_share = 0.0\n",
    )
    .unwrap();
    let (mut serve, url) = support::serve_binary(&config, &data).await;

    let (ok, text) = cli(
        &data,
        &["keys", "add", "--name", "Acme Corp", "--quota", "1000000"],
    );
    assert!(ok, "{text}");
    let issued: Value = serde_json::from_str(&text).unwrap();
    let secret = issued["secret"].as_str().unwrap().to_owned();
    let id = issued["key"]["id"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("sk-hearth-"));

    let node = Node::join(&url, &[EMBEDDING_MODEL]).await;
    let request = tokio::spawn(post(
        &url,
        &secret,
        json!({ "model": EMBEDDING_MODEL, "input": "hello world" }),
    ));
    let job = node.lease(2000).await.remove(0);
    assert_eq!(node.submit(&job, answer(&job)).await.status(), 200);
    assert_eq!(request.await.unwrap().status(), 200);

    let (ok, list) = cli(&data, &["keys", "list"]);
    assert!(
        ok && list.contains(&id) && list.contains("Acme Corp") && !list.contains(&secret),
        "{list}"
    );
    let (ok, usage) = cli(&data, &["usage"]);
    // [CLS] hello world [SEP]: 4 tokens; the node's 1 micro-credit plus the 10 % fee, rounded up.
    assert!(
        ok && usage.contains(&format!("{id},Acme Corp,false,{EMBEDDING_MODEL},1,4,2")),
        "{usage}"
    );
    let (ok, payouts) = cli(&data, &["payouts"]);
    assert!(
        ok && payouts.contains(&format!("{},0,1,0", node.signer.node_id())),
        "{payouts}"
    );
    let (ok, _) = cli(&data, &["keys", "revoke", &id]);
    assert!(ok);
    let refused = post(
        &url,
        &secret,
        json!({ "model": EMBEDDING_MODEL, "input": "x" }),
    )
    .await;
    assert_eq!(refused.status(), 401);

    // Stopped, the same commands work on the database itself.
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &serve.id().unwrap().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    assert!(serve.wait().await.unwrap().success());
    let (ok, list) = cli(&data, &["keys", "list"]);
    assert!(
        ok && list.contains(&id) && list.contains("revoked_unix_ms"),
        "{list}"
    );
    let (ok, usage) = cli(&data, &["usage"]);
    assert!(
        ok && usage.contains(&format!("{id},Acme Corp,true,")),
        "{usage}"
    );
}
