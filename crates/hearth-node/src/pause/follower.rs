//! How the rest of the node follows the pause state: the worker leases only while the node
//! works, at its duty cycle; a pause that lasts frees the models' memory; every change goes into
//! the ledger. And how the watcher is set up from the owner's settings.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hearth_hardware::Nvml;
use hearth_ledger::Ledger;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::Node;
use crate::config::NodeConfig;
use crate::executor::Executor;
use crate::storage::{StorageHealth, WriteFailure};

/// How the pause watcher runs for `config`.
pub(crate) fn watcher_config(config: &NodeConfig) -> crate::pause::watcher::WatcherConfig {
    crate::pause::watcher::WatcherConfig {
        interval: Duration::from_millis(config.watch_interval_ms),
        policy: crate::pause::policy::PolicyConfig {
            cooldown: Duration::from_secs(config.game_cooldown_s),
            temperature_stop_c: config.temperature_stop_c,
            temperature_resume_c: config.temperature_resume_c,
            idle_only: config.idle_only,
            throttle_when_active: (config.throttle_when_active_percent < 100)
                .then_some(config.throttle_when_active_percent),
        },
        power_supply: config
            .pause_on_battery
            .then(|| PathBuf::from("/sys/class/power_supply")),
        // Input is watched only when a mode needs to know whether the owner is here.
        active_for: (config.idle_only || config.throttle_when_active_percent < 100)
            .then(|| Duration::from_secs(config.away_after_s)),
        games: config.detect_games.then(|| {
            crate::pause::games::GameList::builtin()
                .without(&config.games_off)
                .with_user_entries(&config.games)
        }),
        fullscreen: config.detect_fullscreen,
        gpu_use: config
            .detect_gpu_processes
            .then(crate::pause::gpu_use::GpuUseConfig::default),
        nvidia: config
            .detect_gpu_processes
            .then(|| Arc::new(Nvml::default()) as Arc<dyn hearth_hardware::NvidiaSource>),
        // Validated when the settings were read.
        schedule: crate::pause::schedule::Schedule::parse(&config.schedule).unwrap_or_default(),
        ..crate::pause::watcher::WatcherConfig::default()
    }
}

/// Every pause and resume, with its reason, goes into the ledger. A write the disk refuses
/// pauses the node for it ([`StorageHealth`]).
pub(crate) fn record_state_changes(
    node: &Node,
    ledger: Arc<Ledger>,
    storage: Arc<StorageHealth>,
) -> JoinHandle<()> {
    let mut status = node.watch_status();
    tokio::spawn(async move {
        while status.changed().await.is_ok() {
            let now = status.borrow_and_update().clone();
            let ledger = Arc::clone(&ledger);
            let written = tokio::task::spawn_blocking(move || {
                ledger.record_activity(now.changed_at_ms, &now)
            })
            .await;
            match written {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    tracing::error!(%error, "could not record a state change");
                    if let Some(failure) = WriteFailure::from_ledger(&error) {
                        storage.failed(&failure);
                    }
                }
                Err(error) => tracing::error!(%error, "could not record a state change"),
            }
        }
    })
}

/// The worker works while the node is not paused, at the node's duty cycle; a pause that lasts
/// (`free_memory_after`) frees the models' memory; a short one keeps them.
pub(crate) fn follow_pause_state(
    node: &Node,
    paused: watch::Sender<bool>,
    duty: watch::Sender<u8>,
    executor: Arc<Executor>,
    free_memory_after: Duration,
) -> JoinHandle<()> {
    let mut status = node.watch_status();
    tokio::spawn(async move {
        loop {
            let activity = status.borrow_and_update().activity.clone();
            let is_paused = activity.is_paused();
            paused.send_if_modified(|p| std::mem::replace(p, is_paused) != is_paused);
            if !is_paused {
                let percent = activity.duty_percent();
                duty.send_if_modified(|d| std::mem::replace(d, percent) != percent);
            }
            let changed = if is_paused {
                tokio::select! {
                    changed = status.changed() => changed,
                    () = tokio::time::sleep(free_memory_after) => {
                        let released = executor.release_all();
                        if released > 0 {
                            tracing::info!(released, "paused a while: models unloaded to free memory");
                        }
                        status.changed().await
                    }
                }
            } else {
                status.changed().await
            };
            if changed.is_err() {
                break;
            }
        }
    })
}
