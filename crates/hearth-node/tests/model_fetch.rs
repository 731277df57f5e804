//! Models from the pool, over real HTTP on loopback: a node with an empty model folder fetches
//! all-MiniLM-L6-v2 (90 MB) from a pool that sells it. Broken off at points drawn at random
//! (a proxy between them cuts the connection), the download goes on from where it stopped,
//! and the model verifies; a byte flipped in the pool's copy, a file longer than its manifest
//! says and a disk quota too small are each refused without leaving a file that could be used.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers fail the test by panicking

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hearth_inference::ModelStore;
use hearth_node::model_fetch::{FetchError, FileProgress, fetch_file, fetch_model};
use hearth_node::worker::PoolClient;
use hearth_protocol::{HardwareProfile, KeyPair};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

mod support;

const MODEL: &str = "all-minilm-l6-v2";

/// A pool selling a copy of the repository's MiniLM (its own copy, so the test may damage it).
async fn pool_with_a_copy(dir: &Path) -> (hearth_pool::Pool, std::path::PathBuf) {
    let source = ModelStore::from_env();
    source
        .verify(MODEL)
        .expect("the model's files are fetched (scripts/dev.sh test does it)");
    let copy = dir.join("pool-models");
    let weights = copy.join(MODEL).join("weights");
    std::fs::create_dir_all(&weights).unwrap();
    std::fs::copy(
        source.root().join(MODEL).join("manifest.toml"),
        copy.join(MODEL).join("manifest.toml"),
    )
    .unwrap();
    for file in source.manifest(MODEL).unwrap().files {
        std::fs::copy(
            source.root().join(MODEL).join("weights").join(&file.name),
            weights.join(&file.name),
        )
        .unwrap();
    }
    let store: Arc<dyn hearth_pool::PoolStore> =
        Arc::new(hearth_pool::SledStore::open(&dir.join("pool-db")).unwrap());
    let (meter, missing) = hearth_pool::Meter::load(&ModelStore::new(&copy), &[]);
    assert!(missing.is_empty(), "{missing:?}");
    let pool = hearth_pool::Pool::start(hearth_pool::PoolConfig::default(), store, Arc::new(meter))
        .await
        .unwrap();
    (pool, weights)
}

/// A node's profile: the processor, no models yet.
fn profile() -> HardwareProfile {
    HardwareProfile {
        backend: "cpu".into(),
        device: "your processor".into(),
        memory_bytes: 1 << 30,
        models: vec![],
        matmul_gflops: None,
    }
}

/// A registered client for the pool at `url`.
async fn registered(url: &str) -> PoolClient {
    let client = PoolClient::new(url, KeyPair::generate().unwrap(), None).unwrap();
    client.register(profile(), None).await.unwrap();
    client
}

/// A TCP proxy to `pool` that cuts its first connection after `cut_after` bytes from the pool
/// have passed (the others pass whole); counts the bytes it passed from the pool.
async fn cutting_proxy(pool: SocketAddr, cut_after: u64) -> (SocketAddr, Arc<AtomicU64>) {
    proxy(pool, Some(cut_after), None).await
}

/// A TCP proxy to `pool` that passes at most `pace` bytes a second on each connection (a home
/// line); counts the bytes it passed from the pool.
async fn line(pool: SocketAddr, pace: Option<f64>) -> (SocketAddr, Arc<AtomicU64>) {
    proxy(pool, None, pace).await
}

/// [`cutting_proxy`] and [`line`]: the first connection cut after `cut_after` bytes, every
/// one paced at `pace` bytes a second.
async fn proxy(
    pool: SocketAddr,
    cut_after: Option<u64>,
    pace: Option<f64>,
) -> (SocketAddr, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let passed = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&passed);
    tokio::spawn(async move {
        let mut first = true;
        while let Ok((client, _)) = listener.accept().await {
            let limit = if first { cut_after } else { None };
            first = false;
            let counter = Arc::clone(&counter);
            tokio::spawn(async move {
                let upstream = TcpStream::connect(pool).await.unwrap();
                let (mut client_read, mut client_write) = client.into_split();
                let (mut pool_read, mut pool_write) = upstream.into_split();
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut client_read, &mut pool_write).await;
                });
                let mut buffer = vec![0; 64 << 10];
                let mut sent = 0u64;
                let started = Instant::now();
                loop {
                    let read = match pool_read.read(&mut buffer).await {
                        Ok(0) | Err(_) => break,
                        Ok(read) => read,
                    };
                    let allowed =
                        limit.map_or(read as u64, |limit| (limit - sent).min(read as u64));
                    if client_write
                        .write_all(&buffer[..allowed as usize])
                        .await
                        .is_err()
                    {
                        break;
                    }
                    sent += allowed;
                    counter.fetch_add(allowed, Ordering::SeqCst);
                    // The line's pace: a byte may not arrive before its time.
                    if let Some(due) = pace.map(|pace| Duration::from_secs_f64(sent as f64 / pace))
                        && let Some(early) = due.checked_sub(started.elapsed())
                    {
                        tokio::time::sleep(early).await;
                    }
                    if limit.is_some_and(|limit| sent >= limit) {
                        // Cut: both halves dropped, the connection closes mid-reply.
                        break;
                    }
                }
            });
        }
    });
    (addr, passed)
}

/// Points in 1..max drawn from the clock (a different run, different points), sorted.
fn random_points(count: usize, max: u64) -> Vec<u64> {
    let mut state = Instant::now().elapsed().as_nanos() as u64
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
    let mut points: Vec<u64> = (0..count)
        .map(|_| {
            // xorshift
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            1 + state % (max - 1)
        })
        .collect();
    points.sort_unstable();
    points
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_broken_off_anywhere_goes_on_where_it_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let (pool, _) = pool_with_a_copy(dir.path()).await;
    let manifest = ModelStore::from_env().manifest(MODEL).unwrap();
    let total: u64 = manifest.files.iter().map(|f| f.size).sum();
    let pool_addr: SocketAddr = pool.url().trim_start_matches("http://").parse().unwrap();
    let node_store = ModelStore::new(dir.path().join("node-models"));
    let started = Instant::now();
    // Cut points in the big weights file, drawn at random; each attempt is cut that far into
    // the file (its connection's limit is what is still missing up to the point, plus the
    // reply's headers).
    for point in random_points(3, 90_000_000) {
        let done = partial_bytes(&node_store);
        let cut = point.saturating_sub(done) + 400;
        let (proxy, passed) = cutting_proxy(pool_addr, cut).await;
        let client = registered_through(pool_addr, proxy).await;
        let error = fetch_model(&client, &node_store, &manifest, u64::MAX, &mut |_| {})
            .await
            .expect_err("the proxy cut the download");
        // Within the reply's headers the request itself fails; anywhere later the download
        // breaks off and keeps what came.
        assert!(
            matches!(
                error,
                FetchError::BrokeOff { .. } | FetchError::Refused { .. }
            ),
            "cut at {point}: {error}"
        );
        assert!(passed.load(Ordering::SeqCst) <= cut);
        eprintln!("cut at byte {point} of the weights: {error}");
    }
    // Then the rest, straight from the pool: it resumes (the first progress is past the start
    // of what was left), and the model verifies.
    let client = registered(&pool.url()).await;
    let before = partial_bytes(&node_store);
    assert!(before > 0, "something was kept from the broken downloads");
    let mut resumed_from = None;
    let mut fastest = 0f64;
    fetch_model(
        &client,
        &node_store,
        &manifest,
        u64::MAX,
        &mut |p: &FileProgress| {
            resumed_from.get_or_insert(p.done);
            fastest = fastest.max(p.bytes_per_second);
        },
    )
    .await
    .unwrap();
    node_store.verify(MODEL).unwrap();
    assert!(
        resumed_from.unwrap() > 0 || before >= total,
        "the last attempt went on from the partial file"
    );
    eprintln!(
        "{total} bytes in {:.1} s in all; {:.0} MB/s at best on loopback",
        started.elapsed().as_secs_f64(),
        fastest / 1e6
    );
    assert_no_partials(&node_store);
}

/// The real node program, killed (SIGKILL) part-way through fetching the model over a slow
/// line, then started again on a fast one: it goes on from what it kept (the second start
/// fetches only the rest) and the model verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_mid_download_goes_on_from_what_it_kept() {
    const KILL_AT: u64 = 30_000_000;
    let dir = tempfile::tempdir().unwrap();
    let (pool, _) = pool_with_a_copy(dir.path()).await;
    let pool_addr: SocketAddr = pool.url().trim_start_matches("http://").parse().unwrap();
    let manifest = ModelStore::from_env().manifest(MODEL).unwrap();
    let total: u64 = manifest.files.iter().map(|f| f.size).sum();
    let node_store = ModelStore::new(dir.path().join("node-models"));
    std::fs::create_dir_all(node_store.root()).unwrap();
    let models = node_store.root().display().to_string();
    let data = dir.path().join("node-data");
    let start = |proxy: SocketAddr| {
        support::NodeProcess::try_start(
            &data,
            &[
                "--pool",
                &format!("http://{proxy}"),
                "--port",
                "0",
                "--backend",
                "cpu",
            ],
            &[("HEARTH_MODELS", &models)],
        )
        .unwrap()
    };

    let (slow, _) = line(pool_addr, Some(20e6)).await;
    let node = start(slow);
    let deadline = Instant::now() + Duration::from_secs(60);
    while partial_bytes(&node_store) < KILL_AT {
        assert!(
            Instant::now() < deadline,
            "the download did not reach {KILL_AT} bytes"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    node.kill_hard();
    let kept = partial_bytes(&node_store);
    assert!(kept < total, "killed part-way: {kept} of {total}");

    let (fast, passed) = line(pool_addr, None).await;
    let started = Instant::now();
    let node = start(fast);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !node_store.is_present(MODEL) {
        assert!(
            Instant::now() < deadline,
            "the model did not arrive after the restart"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = started.elapsed();
    node_store.verify(MODEL).unwrap();
    let fetched = passed.load(Ordering::SeqCst);
    eprintln!(
        "killed with {:.1} of {:.1} MB kept; the restart fetched {:.1} MB more and had the model in {:.1} s",
        kept as f64 / 1e6,
        total as f64 / 1e6,
        fetched as f64 / 1e6,
        took.as_secs_f64()
    );
    // What was kept is not fetched again (the rest, plus the node's own small requests).
    assert!(
        fetched < total - kept + 1_000_000,
        "the restart fetched {fetched} bytes; {} were missing",
        total - kept
    );
    assert_no_partials(&node_store);
    node.kill_hard();
}

/// A client registered with the pool directly, whose later requests go through `proxy`.
async fn registered_through(pool: SocketAddr, proxy: SocketAddr) -> PoolClient {
    let key = KeyPair::generate().unwrap();
    // Signed requests (no session) need no state from the registration's connection, so a
    // client for the proxy's address can use the node registered through the pool's.
    let copy = KeyPair::from_secret_bytes(&key.secret_bytes()).unwrap();
    let direct = PoolClient::new(&format!("http://{pool}"), copy, None).unwrap();
    direct.register(profile(), None).await.unwrap();
    PoolClient::new(&format!("http://{proxy}"), key, None).unwrap()
}

fn partial_bytes(store: &ModelStore) -> u64 {
    hearth_node::model_fetch::bytes_used(store)
}

fn assert_no_partials(store: &ModelStore) {
    let weights = store.root().join(MODEL).join("weights");
    let partials: Vec<_> = std::fs::read_dir(&weights)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".partial"))
        .collect();
    assert!(partials.is_empty(), "{partials:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_or_overlong_download_is_never_used_and_a_quota_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let (pool, pool_weights) = pool_with_a_copy(dir.path()).await;
    let manifest = ModelStore::from_env().manifest(MODEL).unwrap();
    let client = registered(&pool.url()).await;
    let node_store = ModelStore::new(dir.path().join("node-models"));

    // A quota too small: refused before anything is written.
    let error = fetch_model(&client, &node_store, &manifest, 50_000_000, &mut |_| {})
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            FetchError::OverQuota {
                needed_mb: 42,
                allowed_mb: 50,
                ..
            }
        ),
        "{error}"
    );
    assert!(!node_store.root().join(MODEL).exists());

    // One byte flipped in the pool's copy: the download is discarded, nothing is left.
    let weights_file = manifest
        .files
        .iter()
        .find(|f| f.name == "model.safetensors")
        .unwrap();
    let damaged = pool_weights.join(&weights_file.name);
    let original = std::fs::read(&damaged).unwrap();
    let mut flipped = original.clone();
    let at = random_points(1, flipped.len() as u64)[0] as usize;
    flipped[at] ^= 0x01;
    std::fs::write(&damaged, &flipped).unwrap();
    let error = fetch_model(&client, &node_store, &manifest, u64::MAX, &mut |_| {})
        .await
        .unwrap_err();
    assert!(
        matches!(error, FetchError::WrongHash { .. }),
        "byte {at}: {error}"
    );
    let node_weights = node_store.root().join(MODEL).join("weights");
    assert!(!node_weights.join(&weights_file.name).exists());
    assert_no_partials(&node_store);
    assert!(node_store.verify(MODEL).is_err());

    // A file longer than the manifest says (a manifest that names it shorter): cut off and
    // discarded as soon as it runs over.
    std::fs::write(&damaged, &original).unwrap();
    let mut short = weights_file.clone();
    short.size -= 1000;
    let error = fetch_file(&client, &short, &node_weights, &mut |_| {})
        .await
        .unwrap_err();
    assert!(matches!(error, FetchError::TooLong { .. }), "{error}");
    assert!(!node_weights.join(&weights_file.name).exists());
    assert_no_partials(&node_store);

    // The pool's copy mended: fetched whole, verified.
    fetch_model(&client, &node_store, &manifest, u64::MAX, &mut |_| {})
        .await
        .unwrap();
    node_store.verify(MODEL).unwrap();

    // Only registered nodes get files; an unknown hash is a 404.
    let http = reqwest::Client::new();
    let anonymous = http
        .get(format!(
            "{}/node/v1/files/{}",
            pool.url(),
            weights_file.sha256
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    let unknown = client.get_file(&"0".repeat(64), 0).await.unwrap();
    assert_eq!(unknown.status(), 404);
    // A range: 206, the bytes from there on, said in Content-Range; past the end: 416.
    let from = original.len() as u64 - 5000;
    let tail = client.get_file(&weights_file.sha256, from).await.unwrap();
    assert_eq!(tail.status(), 206);
    assert_eq!(
        tail.headers()["content-range"],
        format!("bytes {from}-{}/{}", original.len() - 1, original.len()).as_str()
    );
    assert_eq!(tail.bytes().await.unwrap(), original[from as usize..]);
    let past = client
        .get_file(&weights_file.sha256, original.len() as u64)
        .await
        .unwrap();
    assert_eq!(past.status(), 416);
}
