//! The pool at network scale: 10,000 simulated nodes (light clients, each with its own key and
//! session, long-polling) against three `hearth-pool serve` processes on one PostgreSQL
//! database, with a no-op model (nodes answer at once with honest unit vectors and the pool's
//! own token counts). Bounded and on loopback; it stops by itself.
//!
//!     HEARTH_TEST_DATABASE_URL=postgres://hearth@127.0.0.1:PORT \
//!         cargo bench -p hearth-pool --bench scale -- --bench
//!
//! (`scripts/dev.sh bench-scale` starts a PostgreSQL server and runs it.) Reports nodes held,
//! pool memory per 1,000 connected nodes, idle CPU with every node connected and no work,
//! jobs/s at saturation, lease-to-result p50/p99 as nodes see it, and the CPU time of the
//! pool processes against PostgreSQL's during the saturated run. `HEARTH_SCALE_NODES` and
//! `HEARTH_SCALE_JOBS` change the sizes, `HEARTH_SCALE_IDLE_MS` the idle window (default: a
//! long poll and 10 s).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hearth_pool::Meter;
use hearth_protocol::{
    Challenge, HardwareProfile, JobResult, KeyPair, LeaseReply, LeaseRequest, PROTOCOL_VERSION,
    Registration, RegistrationReply, RequestSigner, ResultReply, SessionSecret, TaskOutput,
    TaskPayload,
};
use std::sync::Mutex;

const MODEL: &str = "all-minilm-l6-v2";
const PROCESSES: usize = 3;
const KEY: &str = "sk-scale-bench";
/// How long a node's long poll waits for work.
const POLL_MS: u64 = 60_000;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// CPU seconds (user + system) of process `pid`, from /proc.
fn cpu_s(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name (which is in parentheses and may hold spaces).
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of stat: 12 and 13 after the name.
    (ticks(11) + ticks(12)) / 100.0
}

/// Resident memory of process `pid`, in MiB.
fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))?
                .split_whitespace()
                .nth(1)?
                .parse::<f64>()
                .ok()
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

/// The PostgreSQL server's processes (the postmaster and its backends).
fn postgres_pids() -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim() == "postgres")
        })
        .collect()
}

struct Cpu {
    pools: Vec<u32>,
}

impl Cpu {
    /// (pool processes, PostgreSQL, this bench) CPU seconds so far.
    fn sample(&self) -> (f64, f64, f64) {
        (
            self.pools.iter().map(|&p| cpu_s(p)).sum(),
            postgres_pids().into_iter().map(cpu_s).sum(),
            cpu_s(std::process::id()),
        )
    }
}

async fn scratch_database() -> anyhow::Result<String> {
    let server = std::env::var("HEARTH_TEST_DATABASE_URL").map_err(|_| {
        anyhow::anyhow!("set HEARTH_TEST_DATABASE_URL (scripts/dev.sh bench-scale does)")
    })?;
    let (client, connection) =
        tokio_postgres::connect(&format!("{server}/postgres"), tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    let name = hearth_pool::queue::random_id("hearth_scale_");
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await?;
    Ok(format!("{server}/{name}"))
}

async fn start_pool(
    config: &std::path::Path,
    data: &std::path::Path,
) -> anyhow::Result<(tokio::process::Child, String)> {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_hearth-pool"))
        .args(["serve", "--config"])
        .arg(config)
        .arg("--data")
        .arg(data)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));
    let line = lines
        .next_line()
        .await?
        .ok_or_else(|| anyhow::anyhow!("the pool said nothing"))?;
    let url = line
        .trim()
        .rsplit(' ')
        .next()
        .unwrap_or_default()
        .to_owned();
    Ok((child, url))
}

/// The sum of `name`'s value over the processes' `/metrics`.
async fn metric(http: &reqwest::Client, urls: &[String], name: &str) -> f64 {
    let mut sum = 0.0;
    for url in urls {
        let Ok(response) = http.get(format!("{url}/metrics")).send().await else {
            continue;
        };
        let Ok(text) = response.text().await else {
            continue;
        };
        sum += text
            .lines()
            .filter_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<f64>().ok())
            .sum::<f64>();
    }
    sum
}

/// A simulated node: its signer (with its session) and the process it talks to.
struct SimNode {
    signer: RequestSigner,
    url: String,
}

async fn post(
    http: &reqwest::Client,
    url: &str,
    signer: &RequestSigner,
    path: &str,
    body: Vec<u8>,
) -> anyhow::Result<reqwest::Response> {
    let mut request = http.post(format!("{url}{path}")).body(body.clone());
    for (name, value) in signer.headers("POST", path, hearth_protocol::now_unix_ms(), &body) {
        request = request.header(name, value);
    }
    let response = request.send().await?;
    anyhow::ensure!(
        response.status().is_success(),
        "{path}: {} {}",
        response.status(),
        response.text().await.unwrap_or_default()
    );
    Ok(response)
}

async fn register(http: reqwest::Client, url: String) -> anyhow::Result<SimNode> {
    let key = KeyPair::generate()?;
    let session = SessionSecret::generate()?;
    let challenge: Challenge = http
        .post(format!("{url}/node/v1/challenge"))
        .send()
        .await?
        .json()
        .await?;
    let registration = Registration {
        protocol_version: PROTOCOL_VERSION,
        challenge: challenge.challenge,
        public_key: key.public_key(),
        profile: HardwareProfile {
            backend: "cpu".into(),
            device: "no-op".into(),
            memory_bytes: 1 << 30,
            models: vec![MODEL.into()],
            matmul_gflops: None,
        },
        client: "scale bench".into(),
        session_key: Some(session.public()),
    };
    let mut signer = RequestSigner::new(key);
    let joined: RegistrationReply = post(
        &http,
        &url,
        &signer,
        "/node/v1/register",
        serde_json::to_vec(&registration)?,
    )
    .await?
    .json()
    .await?;
    let grant = joined
        .session
        .ok_or_else(|| anyhow::anyhow!("no session"))?;
    signer.start_session(&session, &grant, &joined.pool_public_key)?;
    Ok(SimNode { signer, url })
}

/// What the nodes saw, shared.
#[derive(Default)]
struct Seen {
    jobs: AtomicU64,
    /// Lease received to result answered, per job, in microseconds.
    latencies_us: Mutex<Vec<u64>>,
}

/// Long-poll, answer at once, ask for the next job with each result; until `stop`.
async fn run_node(
    http: reqwest::Client,
    node: SimNode,
    meter: Arc<Meter>,
    seen: Arc<Seen>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<()> {
    let lease = serde_json::to_vec(&LeaseRequest {
        max_jobs: 1,
        wait_ms: POLL_MS,
        models: None,
    })?;
    let mut handed = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        if handed.is_empty() {
            let reply: LeaseReply = post(
                &http,
                &node.url,
                &node.signer,
                "/node/v1/lease",
                lease.clone(),
            )
            .await?
            .json()
            .await?;
            handed = reply.jobs;
        }
        let Some(job) = handed.pop() else {
            continue;
        };
        let leased = Instant::now();
        let TaskPayload::Embeddings { texts } = &job.task else {
            anyhow::bail!("unexpected task");
        };
        let mut unit = vec![0.0f32; 384];
        unit[0] = 1.0;
        let result = JobResult {
            lease_id: job.lease_id.clone(),
            output: TaskOutput::Embeddings {
                vectors: vec![unit; texts.len()],
                tokens: meter
                    .embedding_tokens(MODEL, texts)
                    .map_err(anyhow::Error::msg)?,
            },
            started_unix_ms: hearth_protocol::now_unix_ms(),
            finished_unix_ms: hearth_protocol::now_unix_ms(),
            energy_wh: None,
            energy_estimated: false,
            next: Some(LeaseRequest {
                max_jobs: 1,
                wait_ms: 0,
                models: None,
            }),
        };
        let path = format!("/node/v1/jobs/{}/result", job.id);
        let reply: ResultReply = post(
            &http,
            &node.url,
            &node.signer,
            &path,
            serde_json::to_vec(&result)?,
        )
        .await?
        .json()
        .await?;
        anyhow::ensure!(reply.receipt.is_some(), "no receipt");
        seen.latencies_us
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(leased.elapsed().as_micros() as u64);
        seen.jobs.fetch_add(1, Ordering::Relaxed);
        handed = reply.jobs;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if !std::env::args().any(|arg| arg == "--bench") {
        println!("scale: run with `scripts/dev.sh bench-scale`");
        return Ok(());
    }
    let nodes = env_usize("HEARTH_SCALE_NODES", 10_000);
    let jobs = env_usize("HEARTH_SCALE_JOBS", 60_000);
    let files = hearth_pool::raise_open_files_limit();
    anyhow::ensure!(
        files as usize > nodes + 1000,
        "{nodes} connections need more open files than {files}"
    );
    let (meter, missing) = Meter::load(&hearth_inference::ModelStore::from_env(), &[]);
    anyhow::ensure!(missing.is_empty(), "model files missing: {missing:?}");
    let meter = Arc::new(meter);

    let home = tempfile::tempdir()?;
    let database = scratch_database().await?;
    let config = home.path().join("pool.toml");
    std::fs::write(
        &config,
        format!(
            "database = \"{database}\"\nbind = \"127.0.0.1:0\"\napi_keys = [\"{KEY}\"]\n\
             max_connections = {}\nregistrations_per_minute = 1000000\nmax_lease_wait_ms = {POLL_MS}\n\
             probation_jobs = 0\nverification_share = 0.0\nmax_queued_jobs = 1000000\n\
             embeddings_per_job = 1\nrequest_timeout_ms = 600000\ndatabase_connections = 24\n",
            nodes / PROCESSES + 2000
        ),
    )?;
    let mut children = Vec::new();
    let mut urls = Vec::new();
    for i in 0..PROCESSES {
        let (child, url) = start_pool(&config, &home.path().join(format!("data-{i}"))).await?;
        children.push(child);
        urls.push(url);
    }
    let pids: Vec<u32> = children.iter().filter_map(|c| c.id()).collect();
    let cpu = Cpu {
        pools: pids.clone(),
    };
    let pool_rss = || pids.iter().map(|&p| rss_mib(p)).sum::<f64>();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(usize::MAX)
        .build()?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_empty = pool_rss();

    // Register every node, 64 at a time, spread over the processes.
    let started = Instant::now();
    let mut registered = Vec::with_capacity(nodes);
    let mut pending = tokio::task::JoinSet::new();
    for i in 0..nodes {
        if pending.len() >= 64
            && let Some(done) = pending.join_next().await
        {
            registered.push(done??);
        }
        pending.spawn(register(http.clone(), urls[i % PROCESSES].clone()));
    }
    while let Some(done) = pending.join_next().await {
        registered.push(done??);
    }
    let registering = started.elapsed();
    println!(
        "registered {} nodes in {:.1} s ({:.0}/s)",
        registered.len(),
        registering.as_secs_f64(),
        registered.len() as f64 / registering.as_secs_f64()
    );

    // Every node long-polls.
    let seen = Arc::new(Seen::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = tokio::task::JoinSet::new();
    for node in registered {
        workers.spawn(run_node(
            http.clone(),
            node,
            Arc::clone(&meter),
            Arc::clone(&seen),
            Arc::clone(&stop),
        ));
    }
    let until = Instant::now() + Duration::from_secs(120);
    let mut held = 0.0;
    while Instant::now() < until {
        held = metric(&http, &urls, "hearth_pool_nodes_waiting").await;
        if held as usize >= nodes {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_held = pool_rss();
    println!(
        "nodes held in long polls: {held:.0} of {nodes}; pool memory {rss_empty:.0} MiB empty, {rss_held:.0} MiB with them ({:.1} MiB per 1,000 nodes, three processes together)",
        (rss_held - rss_empty) / (nodes as f64 / 1000.0)
    );

    // Idle: every node connected, no work, over a window longer than a long poll (so every
    // node's poll runs out and is made again once inside it).
    let window =
        Duration::from_millis(env_usize("HEARTH_SCALE_IDLE_MS", POLL_MS as usize + 10_000) as u64);
    let before = cpu.sample();
    tokio::time::sleep(window).await;
    let after = cpu.sample();
    let share = |a: f64, b: f64| (b - a) / window.as_secs_f64() * 100.0;
    println!(
        "idle for {} s with {nodes} nodes connected: pool processes {:.2}% of a core (together), PostgreSQL {:.2}%, the simulated nodes {:.2}%",
        window.as_secs(),
        share(before.0, after.0),
        share(before.1, after.1),
        share(before.2, after.2)
    );

    // Saturation: customers send requests of 100 texts (100 jobs each) to every process.
    let per_request = 100;
    let requests = jobs / per_request;
    let in_flight = env_usize("HEARTH_SCALE_CUSTOMERS", 30);
    let before = cpu.sample();
    let jobs_before = seen.jobs.load(Ordering::Relaxed);
    let started = Instant::now();
    let mut customers = tokio::task::JoinSet::new();
    let customer_http = reqwest::Client::new();
    for r in 0..requests {
        if customers.len() >= in_flight
            && let Some(done) = customers.join_next().await
        {
            done??;
        }
        let url = urls[r % PROCESSES].clone();
        let http = customer_http.clone();
        customers.spawn(async move {
            let input: Vec<String> = (0..per_request).map(|i| format!("r{r} t{i}")).collect();
            let response = http
                .post(format!("{url}/v1/embeddings"))
                .bearer_auth(KEY)
                .json(&serde_json::json!({ "model": MODEL, "input": input }))
                .send()
                .await?;
            anyhow::ensure!(response.status() == 200, "{}", response.status());
            anyhow::Ok(())
        });
    }
    while let Some(done) = customers.join_next().await {
        done??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let after = cpu.sample();
    let done = seen.jobs.load(Ordering::Relaxed) - jobs_before;
    let (pool_cpu, pg_cpu, bench_cpu) =
        (after.0 - before.0, after.1 - before.1, after.2 - before.2);
    println!(
        "saturated: {done} jobs in {elapsed:.1} s = {:.0} jobs/s through PostgreSQL; CPU: pool processes {pool_cpu:.1} s ({:.0} us/job), PostgreSQL {pg_cpu:.1} s ({:.0} us/job), customers and nodes {bench_cpu:.1} s",
        done as f64 / elapsed,
        pool_cpu / done as f64 * 1e6,
        pg_cpu / done as f64 * 1e6,
    );

    stop.store(true, Ordering::SeqCst);
    // Nodes in a long poll see `stop` after it: their processes go first.
    for child in &mut children {
        child.start_kill()?;
    }
    while workers.join_next().await.is_some() {}
    let mut latencies =
        std::mem::take(&mut *seen.latencies_us.lock().unwrap_or_else(|e| e.into_inner()));
    latencies.sort_unstable();
    if !latencies.is_empty() {
        let pct = |p: f64| {
            latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)] as f64
                / 1000.0
        };
        println!(
            "lease to result (the node's answer sent, its receipt back): p50 {:.1} ms, p99 {:.1} ms over {} jobs",
            pct(0.5),
            pct(0.99),
            latencies.len()
        );
    }
    Ok(())
}
