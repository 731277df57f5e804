//! Models that arrive from the pool, as the owner sees them: the app starts for the first time
//! with an empty model folder and a pool that sells three models (an embedded pool in this
//! process, behind a proxy that passes 10 MB/s, a home line's speed, so there is a download to
//! see). The first-run guide shows the downloads (`first-run-model-download.png`); the window
//! then shows each model being fetched, with a progress bar, the megabytes and the speed, says
//! the node waits for its models, and tells of the newer release the pool announces
//! (`window-model-download.png`); once the models are here, it does real jobs on them.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hearth_e2e::{App, Desktop, wait_for};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the proxy passes from the pool, per second.
const LINE_BYTES_PER_SECOND: f64 = 10e6;

/// A TCP proxy to `pool` that passes the pool's replies at most at [`LINE_BYTES_PER_SECOND`]
/// per connection.
async fn slow_line(pool: SocketAddr) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(upstream) = TcpStream::connect(pool).await else {
                    return;
                };
                let (mut client_read, mut client_write) = client.into_split();
                let (mut pool_read, mut pool_write) = upstream.into_split();
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut client_read, &mut pool_write).await;
                });
                let started = Instant::now();
                let mut passed = 0f64;
                let mut buffer = vec![0; 64 << 10];
                while let Ok(read) = pool_read.read(&mut buffer).await {
                    if read == 0 || client_write.write_all(&buffer[..read]).await.is_err() {
                        break;
                    }
                    passed += read as f64;
                    // The line's pace: a byte may not arrive before its time.
                    let due = Duration::from_secs_f64(passed / LINE_BYTES_PER_SECOND);
                    if let Some(early) = due.checked_sub(started.elapsed()) {
                        tokio::time::sleep(early).await;
                    }
                }
            });
        }
    });
    Ok(addr)
}

fn number(text: &str) -> Option<f64> {
    text.split_whitespace().next()?.parse().ok()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_window_shows_models_arriving_from_the_pool_then_work() -> anyhow::Result<()> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let shots = root.join("test-output/screenshots");
    let pool_dir = tempfile::tempdir()?;
    let release = hearth_pool::ReleaseNotice {
        version: "9.9.0".into(),
        url: "https://example.org/hearth/9.9.0".into(),
        notes: "Faster chat on every processor.\nAnd a long list of fixes.".into(),
    };
    let pool = hearth_pool::embedded::start_from(
        pool_dir.path(),
        &hearth_inference::ModelStore::from_env(),
        Some(Duration::from_millis(500)),
        hearth_pool::PoolConfig {
            release: Some(release),
            ..hearth_pool::PoolConfig::default()
        },
    )
    .await?;
    let pool_addr: SocketAddr = pool.url().trim_start_matches("http://").parse()?;
    let line = slow_line(pool_addr).await?;

    // A computer Hearth never ran on, joining a pool the owner named.
    let desktop = Desktop::start_first_run().await?;
    std::fs::create_dir_all(desktop.app_data_dir())?;
    std::fs::write(
        desktop.app_data_dir().join("config.toml"),
        format!("pool = \"http://{line}\"\n"),
    )?;
    let models = pool_dir.path().join("node-models");
    std::fs::create_dir_all(&models)?;
    desktop.set_env("HEARTH_MODELS", &models.display().to_string());
    let app = App::launch_showing(&desktop, "[data-testid=first-run]").await?;
    let guide = app
        .wait_for_text("[data-testid=first-run-downloads]", |t| t.contains("MB/s"))
        .await?;
    assert!(guide.contains("fetching the AI models"), "{guide}");
    desktop.screenshot(&shots.join("first-run-model-download.png"))?;
    app.click("[data-testid=first-run-skip]").await?;
    app.wait_for_text("[data-testid=state-label]", |t| !t.is_empty())
        .await?;

    let figures = app
        .wait_for_text("[data-testid=download-figures]", |t| t.contains("MB/s"))
        .await?;
    let download = app
        .text("[data-testid=model-download]")
        .await
        .unwrap_or_default();
    assert!(download.contains("from the pool"), "{download}");
    let detail = app
        .text("[data-testid=state-detail]")
        .await
        .unwrap_or_default();
    assert!(
        detail.contains("fetching the models it runs"),
        "no model here yet: not \"taking work\": {detail}"
    );
    let banner = app
        .wait_for_text("[data-testid=new-version]", |t| t.contains("9.9.0"))
        .await?;
    assert!(
        banner.contains("A new version is available: Hearth 9.9.0.")
            && banner.contains("Faster chat on every processor.")
            && !banner.contains("fixes"),
        "the version and the notes' first line: {banner}"
    );
    desktop.screenshot(&shots.join("window-model-download.png"))?;
    eprintln!("the window shows: {download}");
    // "12.3 of 91.3 MB, 19.8 MB/s": part of the way, at about the line's speed.
    let numbers: Vec<f64> = figures
        .split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .filter_map(|n| n.parse().ok())
        .collect();
    let [done, total, speed] = numbers[..] else {
        panic!("figures: {figures}");
    };
    assert!(done < total, "{figures}");
    assert!(speed > 1.0 && speed < 15.0, "{figures}");

    // Once the models are here, the demo customer's requests are served by this node.
    wait_for(
        "jobs done on the fetched models",
        Duration::from_secs(90),
        || async {
            let jobs = number(&app.text("[data-testid=jobs-today]").await?)?;
            (jobs >= 1.0).then_some(())
        },
    )
    .await?;
    // Work starts with the first model here; the downloads leave the window as they end.
    wait_for(
        "the downloads to leave the window",
        Duration::from_secs(90),
        || async {
            app.text("[data-testid=model-download]")
                .await
                .is_none()
                .then_some(())
        },
    )
    .await?;
    assert_eq!(
        app.text("[data-testid=state-detail]").await.as_deref(),
        Some("Hearth is taking work from the pool.")
    );
    for id in [
        "all-minilm-l6-v2",
        "efficientnet-lite0",
        "smollm2-135m-instruct",
    ] {
        hearth_inference::ModelStore::new(&models).verify(id)?;
    }
    app.close().await?;
    Ok(())
}
