//! The database restarts under a running pool: requests meanwhile are answered 503 with
//! `Retry-After` (not hung, not 500), and once it is back the pool reconnects by itself: its
//! connections and its event listener (a customer is answered through `NOTIFY` again), with
//! nothing paid twice. A PostgreSQL server of this test's own, so stopping it troubles no
//! other test.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use hearth_pool::{PgStore, Pool, PoolConfig, PoolStore, audit_chains};
use serde_json::json;
use support::{EMBEDDING_MODEL, KEY, Node, answer, customer, meter};

/// A PostgreSQL cluster in a temporary folder, run by the `postgres` user when this is root
/// (the server refuses root), on a free loopback port.
struct Server {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
}

impl Server {
    fn run(&self, program: &str, args: &[&str]) {
        let program = self.bin.join(program);
        let mut command = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&program);
            c
        } else {
            Command::new(&program)
        };
        let status = command.args(args).status().unwrap();
        assert!(status.success(), "{} {args:?}: {status}", program.display());
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn new() -> Self {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL's server programs (apt package postgresql)")
            .filter_map(Result::ok)
            .map(|e| e.path().join("bin"))
            .filter(|p| p.join("initdb").exists())
            .max()
            .expect("an initdb under /usr/lib/postgresql");
        let dir = tempfile::tempdir().unwrap();
        if is_root() {
            let status = Command::new("chown")
                .arg("postgres")
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(status.success());
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let server = Self { bin, dir, port };
        let data = server.data();
        server.run(
            "initdb",
            &["-D", &data, "-A", "trust", "-U", "hearth", "--no-sync"],
        );
        server.start();
        server
    }

    fn start(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("server.log").display().to_string();
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-w",
                "-l",
                &log,
                "-o",
                &options,
                "start",
            ],
        );
    }

    fn stop(&self) {
        self.run("pg_ctl", &["-D", &self.data(), "-w", "-m", "fast", "stop"]);
    }

    fn url(&self) -> String {
        format!("postgres://hearth@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let data = self.data();
        let mut command = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"])
                .arg(self.bin.join("pg_ctl"));
            c
        } else {
            Command::new(self.bin.join("pg_ctl"))
        };
        let _ = command
            .args(["-D", &data, "-m", "immediate", "stop"])
            .status();
    }
}

/// Whether this test runs as root (its effective user id, from /proc).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find(|l| l.starts_with("Uid:"))
            .and_then(|l| l.split_whitespace().nth(2))
            == Some("0")
    })
}

/// One embeddings request to `url` answered by `node`, which leases there and reports to
/// `report_to`: the customer hears of it through the database's events.
async fn one_job(url: &str, report_to: &str, node: &mut Node, text: &str) -> reqwest::Response {
    let request = tokio::spawn(customer(
        url,
        "/v1/embeddings",
        json!({ "model": EMBEDDING_MODEL, "input": text }),
    ));
    node.url = url.to_owned();
    let job = loop {
        if let Some(job) = node.lease(1000).await.pop() {
            break job;
        }
    };
    node.url = report_to.to_owned();
    assert_eq!(node.submit(&job, answer(&job)).await.status(), 200);
    tokio::time::timeout(Duration::from_secs(10), request)
        .await
        .expect("the customer is answered")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_reconnects_after_the_database_restarts() {
    let server = Server::new();
    let store = PgStore::connect(&server.url(), 4).await.unwrap();
    store.migrate().await.unwrap();
    let store: Arc<dyn PoolStore> = Arc::new(store);
    let config = PoolConfig {
        api_keys: vec![KEY.into()],
        verification_share: 0.0,
        probation_jobs: 0,
        ..PoolConfig::default()
    };
    // Two pools on one database (as two processes would be), sharing its events.
    let pool = Pool::start(config.clone(), Arc::clone(&store), meter())
        .await
        .unwrap();
    let other = Pool::start(config, Arc::clone(&store), meter())
        .await
        .unwrap();
    let (url, other_url) = (pool.url(), other.url());
    let mut node = Node::join(&url, &[EMBEDDING_MODEL]).await;
    assert_eq!(
        one_job(&url, &other_url, &mut node, "before")
            .await
            .status(),
        200
    );

    server.stop();
    // While it is down: refused at once with a reason and a time to retry.
    let down = customer(
        &url,
        "/v1/embeddings",
        json!({ "model": EMBEDDING_MODEL, "input": "while down" }),
    )
    .await;
    assert_eq!(down.status(), 503);
    assert!(down.headers().contains_key("retry-after"));
    let health = reqwest::get(format!("{url}/health")).await.unwrap();
    assert_eq!(health.status(), 503);

    server.start();
    // Back: the same pool, no restart of its own, serves again, customers answered by the
    // event listener's new connection.
    let mut healthy = false;
    for _ in 0..100 {
        let health = reqwest::get(format!("{url}/health")).await.unwrap();
        if health.status() == 200 {
            healthy = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(healthy, "the pool reconnected to the database");
    // The node's session survived in the database: no new registration needed.
    assert_eq!(
        one_job(&url, &other_url, &mut node, "after").await.status(),
        200
    );
    let checked = audit_chains(store.as_ref(), &node.pool_key).await.unwrap();
    assert_eq!(checked, 2, "two jobs, each paid once");
}
