//! Dispatch throughput: 32 simulated nodes on loopback lease and submit no-op jobs as fast as
//! the pool hands them out; every request authenticated (a session MAC, as Hearth's node sends
//! after registering) and checked, every receipt signed and stored durably (sled, flushed)
//! before the node hears of it.
//!
//!     cargo bench -p hearth-pool --bench dispatch
//!
//! Reports jobs/s through lease and submit, and per-job overhead (the round trips a node
//! spends per job: the result, which also leases the next job, plus a separate lease only when
//! that came back empty) at p50 and p99. `HEARTH_DISPATCH_JOBS` sets the job count.
//!
//! The cost of trust: the same runs with no verification, with the default share of an
//! established node's jobs checked, and with every node but eight seed nodes new (each new
//! node's first 20 jobs all checked by a seed). Every answer is honest (true token counts by
//! the pool's tokenizer, unit vectors), so what is measured is the checking itself.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hearth_pool::meter::Metered;
use hearth_pool::queue::NewJob;
use hearth_pool::{Meter, Pool, PoolConfig, SledStore};
use hearth_protocol::{
    Challenge, HardwareProfile, JobResult, KeyPair, LeaseReply, LeaseRequest, PROTOCOL_VERSION,
    Registration, RegistrationReply, RequestSigner, ResultReply, SessionSecret, TaskOutput,
    TaskPayload,
};

/// The allocator `hearth-pool` runs with.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const MODEL: &str = "all-minilm-l6-v2";

/// How much checking a run does.
#[derive(Clone, Copy, Debug)]
enum Trust {
    /// Nothing is verified (dispatch alone).
    None,
    /// Every node established; the default share of jobs verified.
    Established,
    /// Eight seed nodes established, the rest new: their first jobs are all verified.
    NewNodes,
}

const SEEDS: usize = 8;

const NODES: usize = 32;

async fn send(
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
        "{path}: {}",
        response.status()
    );
    Ok(response)
}

/// One node: register, then lease and submit until no job comes within 500 ms. Each result
/// also asks for the next job (`next`), as a busy node does: one round trip per job. With
/// `every`, the node starts a job at most that often (a node whose model takes time).
async fn node(
    url: String,
    key: KeyPair,
    tokens: Arc<HashMap<String, u32>>,
    every: Option<Duration>,
) -> anyhow::Result<Vec<Duration>> {
    let http = reqwest::Client::new();
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
            models: vec!["all-minilm-l6-v2".into()],
            matmul_gflops: None,
        },
        client: "dispatch bench".into(),
        session_key: Some(session.public()),
    };
    let mut signer = RequestSigner::new(key);
    let joined: RegistrationReply = send(
        &http,
        &url,
        &signer,
        "/node/v1/register",
        serde_json::to_vec(&registration)?,
    )
    .await?
    .json()
    .await?;
    // As Hearth's node does: a session, so requests carry a MAC rather than a signature.
    let grant = joined
        .session
        .ok_or_else(|| anyhow::anyhow!("no session"))?;
    signer.start_session(&session, &grant, &joined.pool_public_key)?;
    let lease = serde_json::to_vec(&LeaseRequest {
        max_jobs: 1,
        wait_ms: 500,
        models: None,
    })?;
    let mut overheads = Vec::new();
    let mut handed: Vec<hearth_protocol::Job> = Vec::new();
    let mut pace = every.map(|every| {
        let mut pace = tokio::time::interval(every);
        pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        pace
    });
    loop {
        if let Some(pace) = pace.as_mut() {
            pace.tick().await;
        }
        let started = Instant::now();
        if handed.is_empty() {
            let reply: LeaseReply = send(&http, &url, &signer, "/node/v1/lease", lease.clone())
                .await?
                .json()
                .await?;
            handed = reply.jobs;
        }
        let leased = started.elapsed();
        let Some(job) = handed.pop() else {
            return Ok(overheads);
        };
        let TaskPayload::Embeddings { texts } = &job.task else {
            anyhow::bail!("unexpected task");
        };
        let mut unit = vec![0.0f32; 384];
        unit[0] = 1.0;
        let result = JobResult {
            lease_id: job.lease_id.clone(),
            output: TaskOutput::Embeddings {
                vectors: vec![unit; texts.len()],
                tokens: texts
                    .iter()
                    .map(|text| tokens.get(text).copied())
                    .collect::<Option<Vec<u32>>>()
                    .ok_or_else(|| anyhow::anyhow!("a text the bench did not queue"))?,
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
        let submitted = Instant::now();
        let path = format!("/node/v1/jobs/{}/result", job.id);
        let reply: ResultReply = send(&http, &url, &signer, &path, serde_json::to_vec(&result)?)
            .await?
            .json()
            .await?;
        anyhow::ensure!(
            reply.receipt.is_some() || reply.pending_verification,
            "no receipt"
        );
        handed = reply.jobs;
        overheads.push(leased + submitted.elapsed());
    }
}

/// CPU time of this whole process (pool and simulated nodes), in seconds.
fn process_cpu_s() -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    let ns: u64 = tasks
        .filter_map(Result::ok)
        .filter_map(|t| {
            std::fs::read_to_string(t.path().join("schedstat"))
                .ok()?
                .split_whitespace()
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum();
    ns as f64 / 1e9
}

/// `jobs` no-op jobs through `nodes` nodes, as fast as they go or paced to `offered` jobs/s
/// in all; prints throughput, round trips and CPU per job.
async fn run(
    meter: &Arc<Meter>,
    nodes: usize,
    jobs: usize,
    offered: Option<f64>,
    trust: Trust,
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = Arc::new(SledStore::open(&dir.path().join("pool"))?);
    let keys = (0..nodes)
        .map(|_| KeyPair::generate())
        .collect::<Result<Vec<_>, _>>()?;
    // Every job is queued before the clock starts.
    let defaults = PoolConfig {
        max_queued_jobs: jobs.max(1),
        ..PoolConfig::default()
    };
    let config = match trust {
        Trust::None => PoolConfig {
            verification_share: 0.0,
            probation_jobs: 0,
            ..defaults
        },
        Trust::Established => PoolConfig {
            probation_jobs: 0,
            ..defaults
        },
        Trust::NewNodes => PoolConfig {
            trusted_nodes: keys[..SEEDS.min(nodes)]
                .iter()
                .map(|k| hearth_protocol::node_id(&k.public_key()))
                .collect(),
            ..defaults
        },
    };
    let pool = Pool::start(config, store, Arc::clone(meter)).await?;
    let queue = &pool.state().queue;
    let mut receivers = Vec::with_capacity(jobs);
    // The nodes' model is a no-op: their answers (the true token counts) are worked out
    // before the clock starts, so what is timed is the pool and the round trips.
    let mut answers = HashMap::with_capacity(jobs);
    for i in 0..jobs {
        let texts = vec![format!("job {i}")];
        let tokens = meter
            .embedding_tokens(MODEL, &texts)
            .map_err(anyhow::Error::msg)?;
        answers.insert(texts[0].clone(), tokens[0]);
        let job = NewJob {
            task: TaskPayload::Embeddings { texts },
            metered: Metered::Embeddings { tokens },
            customer: None,
        };
        let submitted = queue.submit(MODEL, vec![job], false).await?;
        receivers.extend(submitted.into_iter().map(|s| s.done));
    }
    let answers = Arc::new(answers);
    let (started, cpu_before) = (Instant::now(), process_cpu_s());
    let every = offered.map(|rate| Duration::from_secs_f64(nodes as f64 / rate));
    let tasks: Vec<_> = keys
        .into_iter()
        .map(|key| tokio::spawn(node(pool.url(), key, Arc::clone(&answers), every)))
        .collect();
    let mut overheads = Vec::new();
    for task in tasks {
        overheads.extend(task.await??);
    }
    // The last 500 ms were the nodes' final empty lease.
    let elapsed = started.elapsed().as_secs_f64() - 0.5;
    let cpu = process_cpu_s() - cpu_before;
    let mut completed = 0;
    for done in receivers {
        if matches!(done.await, Ok(Ok(_))) {
            completed += 1;
        }
    }
    overheads.sort();
    let pct = |p: f64| overheads[((overheads.len() as f64 * p) as usize).min(overheads.len() - 1)];
    let load = offered.map_or_else(
        || "as fast as they go".to_owned(),
        |rate| format!("paced to {rate:.0} jobs/s"),
    );
    println!(
        "[{trust:?}] {completed} of {jobs} jobs through {nodes} nodes ({load}) in {elapsed:.2} s: {:.0} jobs/s; \
         per-job overhead (a node's round trips per job) p50 {:.2} ms, p99 {:.2} ms; \
         CPU {:.0} us per job (pool and nodes together)",
        completed as f64 / elapsed,
        pct(0.5).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
        cpu / completed.max(1) as f64 * 1e6
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if !std::env::args().any(|arg| arg == "--bench") {
        println!("dispatch: run with `cargo bench -p hearth-pool --bench dispatch`");
        return Ok(());
    }
    let jobs: usize = std::env::var("HEARTH_DISPATCH_JOBS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000);
    let (meter, missing) = Meter::load(&hearth_inference::ModelStore::from_env(), &[]);
    anyhow::ensure!(
        missing.is_empty(),
        "model files missing (run hearth-models fetch): {missing:?}"
    );
    let meter = Arc::new(meter);
    for trust in [Trust::None, Trust::Established, Trust::NewNodes] {
        // Saturation: every node asks again the moment it has an answer, so a round trip is
        // mostly the wait behind the 31 others on these 2 shared cores.
        run(&meter, NODES, jobs, None, trust).await?;
        // The target load, 5,000 jobs/s from 32 nodes (each starting a job every 6.4 ms): the
        // per-job overhead the pool adds when it is busy but not overrun.
        run(&meter, NODES, jobs / 2, Some(5_000.0), trust).await?;
    }
    // 4 nodes, unverified: the pool is not saturated, so the round trips show the per-job
    // cost itself rather than the wait behind 31 other nodes.
    run(&meter, 4, jobs / 4, None, Trust::None).await?;
    Ok(())
}
