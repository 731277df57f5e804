//! The models the pool sells that this computer lacks, fetched in the background once the node
//! has joined (`crate::model_fetch` does each file: resumed, checked, within the disk allowed).
//! Progress goes to the owner as [`WorkerEvent::Downloads`]; a model fetched is offered from
//! the next lease on. A fetch that fails waits (10 s, doubling to 10 minutes) and goes on from
//! where it stopped; a model that does not fit the disk allowed is not fetched, and a notice
//! says so.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hearth_inference::Manifest;

use super::{Context, WorkerEvent};
use crate::model_fetch::{FetchError, FileProgress, fetch_model};
use crate::status::ModelDownload;

/// Shortest gap between two progress events.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);
/// The first wait after a failed fetch, and the longest.
const FIRST_RETRY: Duration = Duration::from_secs(10);
const LAST_RETRY: Duration = Duration::from_secs(600);

/// The background fetching; it stops when dropped (with the worker).
pub(super) struct Fetching(tokio::task::JoinHandle<()>);

impl Drop for Fetching {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Fetching {
    pub(super) fn start(context: Arc<Context>) -> Self {
        Self(tokio::spawn(fetch_missing(context)))
    }
}

/// The models of `offered` this node has no files for (by id).
fn missing(context: &Context, offered: Vec<Manifest>) -> Vec<Manifest> {
    let present = context.executor.available_models();
    let broken = context.executor.broken_models();
    offered
        .into_iter()
        .filter(|m| !present.contains(&m.id) && !broken.contains_key(&m.id))
        .collect()
}

async fn fetch_missing(context: Arc<Context>) {
    let offered: Vec<Manifest> = match context.client.get("/node/v1/models").await {
        Ok(offered) => offered,
        Err(error) => {
            // An older pool offers no models; the node works with what it has.
            tracing::info!(%error, "the pool lists no models to fetch");
            return;
        }
    };
    let mut queue = missing(&context, offered);
    if queue.is_empty() {
        return;
    }
    tracing::info!(models = ?queue.iter().map(|m| &m.id).collect::<Vec<_>>(), "fetching models from the pool");
    let mut downloads: Vec<ModelDownload> = queue
        .iter()
        .map(|m| ModelDownload {
            model: m.id.clone(),
            done_bytes: 0,
            total_bytes: m.files.iter().map(|f| f.size).fold(0, u64::saturating_add),
            bytes_per_second: 0.0,
            error: None,
        })
        .collect();
    (context.events)(WorkerEvent::Downloads(downloads.clone()));
    let mut retry = FIRST_RETRY;
    while let Some(manifest) = queue.first().cloned() {
        let store = context.executor.store().clone();
        let index = downloads.iter().position(|d| d.model == manifest.id);
        // Bytes of the files already finished, to add each file's progress to.
        let mut finished_before: u64 = 0;
        let mut current_file = String::new();
        let mut last_sent = Instant::now();
        let events = Arc::clone(&context.events);
        let mut shown = downloads.clone();
        let mut on_progress = |progress: &FileProgress| {
            if progress.file != current_file {
                if !current_file.is_empty() {
                    finished_before += manifest
                        .files
                        .iter()
                        .find(|f| f.name == current_file)
                        .map_or(0, |f| f.size);
                }
                current_file.clone_from(&progress.file);
            }
            if let Some(download) = index.and_then(|i| shown.get_mut(i)) {
                download.done_bytes = finished_before + progress.done;
                download.bytes_per_second = progress.bytes_per_second;
                download.error = None;
            }
            if last_sent.elapsed() >= PROGRESS_EVERY || progress.done == progress.total {
                last_sent = Instant::now();
                events(WorkerEvent::Downloads(shown.clone()));
            }
        };
        let outcome = fetch_model(
            &context.client,
            &store,
            &manifest,
            context.config.model_disk_bytes,
            &mut on_progress,
        )
        .await;
        // The progress shown, kept (an attempt that broke off keeps what it fetched).
        downloads = shown;
        match outcome {
            Ok(()) => {
                tracing::info!(model = %manifest.id, "model fetched from the pool and verified");
                (context.events)(WorkerEvent::Serving(context.executor.available_models()));
                queue.remove(0);
                if let Some(i) = index {
                    downloads.remove(i);
                }
                retry = FIRST_RETRY;
            }
            Err(error @ FetchError::OverQuota { .. }) => {
                tracing::warn!(model = %manifest.id, %error, "not fetched");
                queue.remove(0);
                if let Some(download) = index.and_then(|i| downloads.get_mut(i)) {
                    download.error = Some(error.to_string());
                    download.bytes_per_second = 0.0;
                }
            }
            Err(error) => {
                tracing::warn!(model = %manifest.id, %error, retry_s = retry.as_secs(), "fetching a model failed; trying again");
                if let Some(download) = index.and_then(|i| downloads.get_mut(i)) {
                    download.bytes_per_second = 0.0;
                    download.error =
                        Some(format!("{error} (trying again in {} s)", retry.as_secs()));
                }
                (context.events)(WorkerEvent::Downloads(downloads.clone()));
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(LAST_RETRY);
                continue;
            }
        }
        (context.events)(WorkerEvent::Downloads(downloads.clone()));
    }
}
