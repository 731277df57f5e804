//! [`Node`]: the handle every frontend holds.

use std::sync::Arc;

use tokio::sync::{broadcast, watch};

use crate::status::{
    ActivityState, ControlSource, NodeEvent, NodeStatus, PauseOverride, PauseReason,
};

/// How many events a slow subscriber may fall behind before it starts missing some.
/// A subscriber that lags gets `RecvError::Lagged` and should re-read [`Node::status`].
const EVENT_BUFFER: usize = 256;

/// Why "Resume anyway" was refused, in words the owner reads.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OverrideRefused {
    #[error("paused by you: resume instead")]
    PausedByOwner,
    #[error("not paused: nothing to resume")]
    NotPaused,
    /// The pause protects the computer (heat, short GPU memory); holds its description.
    #[error("{0} and this pause protects the computer: it cannot be overridden")]
    Protective(String),
}

/// A cheap, cloneable handle to the node. All clones share one state.
#[derive(Clone, Debug)]
pub struct Node {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    status: watch::Sender<NodeStatus>,
    events: broadcast::Sender<NodeEvent>,
    /// What the state is made of: the owner's pause, and the pause policy's (games, …).
    inputs: std::sync::Mutex<Inputs>,
}

#[derive(Debug, Default)]
struct Inputs {
    /// The owner's pause: from where, and until when (ms since the epoch) if timed.
    user: Option<(ControlSource, Option<u64>)>,
    automatic: Option<PauseReason>,
    /// A storage fault ([`crate::storage`]): before everything, as nothing could be recorded.
    fault: Option<PauseReason>,
    /// The policy's duty cycle while nothing pauses the node (`None`: flat out).
    throttle: Option<u8>,
    /// The owner's "Resume anyway": kept only while it covers the automatic pause.
    overriding: Option<PauseOverride>,
}

impl Inputs {
    /// A storage fault comes first (no one can lift it but a disk with room), then the
    /// owner's pause (it is theirs to lift), then the policy's unless the owner chose to work
    /// through it.
    fn activity(&self) -> ActivityState {
        if let Some(fault) = &self.fault {
            return ActivityState::Paused {
                reason: fault.clone(),
            };
        }
        let automatic = self.automatic.as_ref().filter(|reason| {
            !self
                .overriding
                .as_ref()
                .is_some_and(|o| o.reason.covers(reason))
        });
        match (&self.user, automatic) {
            (Some((source, until_ms)), _) => ActivityState::Paused {
                reason: PauseReason::User {
                    source: *source,
                    until_ms: *until_ms,
                },
            },
            (None, Some(reason)) => ActivityState::Paused {
                reason: reason.clone(),
            },
            (None, None) => match self.throttle {
                Some(duty_percent) if duty_percent < 100 => ActivityState::Throttled {
                    duty_percent: duty_percent.max(1),
                },
                _ => ActivityState::Running,
            },
        }
    }
}

impl Default for Node {
    fn default() -> Self {
        Self::new()
    }
}

impl Node {
    /// A node that starts out running.
    pub fn new() -> Self {
        let initial = NodeStatus {
            activity: ActivityState::Running,
            changed_at_ms: hearth_protocol::now_unix_ms(),
            revision: 0,
            overriding: None,
        };
        let (status, _) = watch::channel(initial);
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        Self {
            shared: Arc::new(Shared {
                status,
                events,
                inputs: std::sync::Mutex::new(Inputs::default()),
            }),
        }
    }

    /// The current state.
    pub fn status(&self) -> NodeStatus {
        self.shared.status.borrow().clone()
    }

    /// Every event from now on, in the order the changes happened.
    pub fn subscribe(&self) -> broadcast::Receiver<NodeEvent> {
        self.shared.events.subscribe()
    }

    /// A receiver that always holds the latest status; for code that only needs "now".
    pub fn watch_status(&self) -> watch::Receiver<NodeStatus> {
        self.shared.status.subscribe()
    }

    /// Stop taking work until resumed. Pausing a paused node keeps its first reason (a timed
    /// pause becomes one until resumed). It ends any "Resume anyway".
    pub fn pause(&self, source: ControlSource) -> NodeStatus {
        self.update(|inputs| {
            let (from, _) = inputs.user.get_or_insert((source, None));
            inputs.user = Some((*from, None));
            inputs.overriding = None;
        })
    }

    /// Stop taking work for `duration`, then resume by itself (see [`Node::expire_timed`]).
    pub fn pause_for(&self, source: ControlSource, duration: std::time::Duration) -> NodeStatus {
        let until = hearth_protocol::now_unix_ms().saturating_add(duration.as_millis() as u64);
        self.update(|inputs| {
            inputs.user = Some((source, Some(until)));
            inputs.overriding = None;
        })
    }

    /// End what the owner timed whose time is up: their pause, their "Resume anyway" (the
    /// watcher calls this each tick).
    pub fn expire_pause(&self, now_ms: u64) -> NodeStatus {
        self.update(|inputs| {
            if let Some((_, Some(until))) = inputs.user
                && until <= now_ms
            {
                inputs.user = None;
            }
            if inputs
                .overriding
                .as_ref()
                .is_some_and(|o| o.until_ms.is_some_and(|until| until <= now_ms))
            {
                inputs.overriding = None;
            }
        })
    }

    /// The next moment something the owner timed ends (their pause, their "Resume anyway"),
    /// in ms since the Unix epoch; `None` when nothing is timed.
    pub fn next_deadline_ms(&self) -> Option<u64> {
        let inputs = self.shared.inputs.lock().unwrap_or_else(|e| e.into_inner());
        let pause = inputs.user.and_then(|(_, until)| until);
        let anyway = inputs.overriding.as_ref().and_then(|o| o.until_ms);
        pause.into_iter().chain(anyway).min()
    }

    /// Keep the owner's timed pauses and overrides to their time, on a timer of their own
    /// (independent of the pause watcher: a node without one still resumes after "pause for
    /// 30 minutes"). The task holds a handle to the node and runs until aborted (the running node
    /// aborts its tasks when it stops).
    pub fn expire_timed(&self) -> tokio::task::JoinHandle<()> {
        let node = self.clone();
        let mut status = node.watch_status();
        tokio::spawn(async move {
            loop {
                status.borrow_and_update();
                let wait = node.next_deadline_ms().map(|deadline| {
                    std::time::Duration::from_millis(
                        deadline.saturating_sub(hearth_protocol::now_unix_ms()),
                    )
                });
                let changed = match wait {
                    Some(wait) => tokio::select! {
                        changed = status.changed() => changed,
                        () = tokio::time::sleep(wait) => {
                            node.expire_pause(hearth_protocol::now_unix_ms());
                            Ok(())
                        }
                    },
                    None => status.changed().await,
                };
                if changed.is_err() {
                    break;
                }
            }
        })
    }

    /// "Resume anyway" (or "Skip wait" during the wait after a game): work through the
    /// automatic pause in force until its reason ends, or until `until_ms` where given.
    /// Refused, with the reason in words, when the node is not paused automatically or the
    /// pause is not the owner's to override (heat, short GPU memory).
    pub fn resume_anyway(
        &self,
        source: ControlSource,
        until_ms: Option<u64>,
    ) -> Result<NodeStatus, OverrideRefused> {
        let mut refusal = None;
        let status = self.update(|inputs| {
            if inputs.user.is_some() {
                refusal = Some(OverrideRefused::PausedByOwner);
                return;
            }
            let Some(reason) = inputs.automatic.clone() else {
                refusal = Some(OverrideRefused::NotPaused);
                return;
            };
            if !reason.can_override() {
                refusal = Some(OverrideRefused::Protective(reason.describe()));
                return;
            }
            inputs.overriding = Some(PauseOverride {
                reason,
                until_ms,
                source,
            });
        });
        match refusal {
            Some(reason) => Err(reason),
            None => Ok(status),
        }
    }

    /// Let the automatic pause that the owner overrode apply again.
    pub fn end_override(&self) -> NodeStatus {
        self.update(|inputs| inputs.overriding = None)
    }

    /// Lift the owner's pause. A pause for a game (or any other automatic reason) stays
    /// until its reason goes away.
    pub fn resume(&self, _source: ControlSource) -> NodeStatus {
        self.update(|inputs| inputs.user = None)
    }

    /// Pause when running, resume when paused by the owner.
    pub fn toggle(&self, source: ControlSource) -> NodeStatus {
        self.update(|inputs| {
            if inputs.user.is_some() {
                inputs.user = None;
            } else if inputs.automatic.is_none() {
                inputs.user = Some((source, None));
            }
        })
    }

    /// The pause policy's verdict in full: paused for `reason`, else working `duty_percent`
    /// of the time (100: flat out). One change, so no in-between state is announced.
    /// A "Resume anyway" ends when its reason does, and when another pause takes over.
    pub fn set_policy(&self, reason: Option<PauseReason>, duty_percent: u8) -> NodeStatus {
        self.update(|inputs| {
            let still_covered = inputs
                .overriding
                .as_ref()
                .zip(reason.as_ref())
                .is_some_and(|(o, reason)| o.reason.covers(reason));
            if !still_covered {
                inputs.overriding = None;
            }
            inputs.automatic = reason;
            inputs.throttle = (duty_percent < 100).then_some(duty_percent);
        })
    }

    /// Pause for a storage fault (a [`PauseReason::DiskFull`] or
    /// [`PauseReason::StorageFailing`]), or lift it with `None`.
    pub fn set_storage_fault(&self, fault: Option<PauseReason>) -> NodeStatus {
        self.update(|inputs| inputs.fault = fault)
    }

    /// Change the inputs, and if the resulting state differs, publish it and announce it.
    /// The event is sent while the inputs are locked, so subscribers see changes in exactly
    /// the order they were made.
    fn update(&self, change: impl FnOnce(&mut Inputs)) -> NodeStatus {
        let mut inputs = self.shared.inputs.lock().unwrap_or_else(|e| e.into_inner());
        change(&mut inputs);
        let next = inputs.activity();
        let overriding = inputs.overriding.clone();
        self.shared.status.send_if_modified(|status| {
            if status.activity == next && status.overriding == overriding {
                return false;
            }
            status.activity = next;
            status.overriding = overriding;
            status.changed_at_ms = hearth_protocol::now_unix_ms();
            status.revision += 1;
            tracing::info!(
                revision = status.revision,
                paused = status.activity.is_paused(),
                reason = ?status.activity,
                "node state changed"
            );
            // No subscriber is not an error: the window may simply be closed.
            let _ = self.shared.events.send(NodeEvent::StatusChanged {
                status: status.clone(),
            });
            true
        });
        drop(inputs);
        self.status()
    }

    /// Send `event` to every subscriber (none listening is fine: the window may be closed).
    pub(crate) fn announce(&self, event: NodeEvent) {
        let _ = self.shared.events.send(event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_running_at_revision_zero() {
        let node = Node::new();
        assert_eq!(node.status().activity, ActivityState::Running);
        assert_eq!(node.status().revision, 0);
    }

    #[test]
    fn pause_then_resume_bumps_revision_and_records_source() {
        let node = Node::new();
        let paused = node.pause(ControlSource::Tray);
        assert_eq!(
            paused.activity,
            ActivityState::Paused {
                reason: PauseReason::User {
                    source: ControlSource::Tray,
                    until_ms: None,
                }
            }
        );
        assert_eq!(paused.revision, 1);
        let running = node.resume(ControlSource::Window);
        assert_eq!(running.activity, ActivityState::Running);
        assert_eq!(running.revision, 2);
    }

    #[test]
    fn repeated_pause_keeps_first_reason_and_sends_nothing() {
        let node = Node::new();
        let mut events = node.subscribe();
        node.pause(ControlSource::Window);
        let again = node.pause(ControlSource::Tray);
        assert_eq!(again.revision, 1);
        assert_eq!(
            again.activity,
            ActivityState::Paused {
                reason: PauseReason::User {
                    source: ControlSource::Window,
                    until_ms: None,
                }
            }
        );
        assert!(events.try_recv().is_ok());
        assert!(events.try_recv().is_err(), "second pause must not announce");
    }

    #[test]
    fn a_timed_pause_ends_by_itself_and_a_plain_pause_does_not() {
        let node = Node::new();
        let paused = node.pause_for(ControlSource::Tray, std::time::Duration::from_secs(1800));
        let ActivityState::Paused {
            reason:
                PauseReason::User {
                    until_ms: Some(until),
                    ..
                },
        } = paused.activity
        else {
            panic!("{paused:?}")
        };
        assert!(node.expire_pause(until - 1).activity.is_paused());
        assert!(!node.expire_pause(until).activity.is_paused());
        node.pause(ControlSource::Window);
        assert!(node.expire_pause(u64::MAX).activity.is_paused());
        // An automatic pause outlives the owner's resume.
        node.set_policy(Some(PauseReason::Game { name: "g".into() }), 100);
        node.resume(ControlSource::Window);
        assert_eq!(
            node.status().activity,
            ActivityState::Paused {
                reason: PauseReason::Game { name: "g".into() }
            }
        );
        node.set_policy(None, 100);
        assert!(!node.status().activity.is_paused());
    }

    /// A storage fault pauses over everything, the owner's resume cannot lift it, and when it
    /// ends the pause beneath it shows again.
    #[test]
    fn a_storage_fault_pauses_over_everything_until_it_is_lifted() {
        let node = Node::new();
        let full = PauseReason::DiskFull {
            needed_bytes: 120_000_000,
        };
        node.pause(ControlSource::Tray);
        node.set_storage_fault(Some(full.clone()));
        assert_eq!(
            node.status().activity,
            ActivityState::Paused {
                reason: full.clone()
            }
        );
        node.resume(ControlSource::Tray);
        assert_eq!(
            node.status().activity,
            ActivityState::Paused { reason: full }
        );
        node.pause(ControlSource::Tray);
        assert!(
            node.set_storage_fault(None).activity.is_paused(),
            "the owner's pause stays"
        );
        node.resume(ControlSource::Tray);
        assert_eq!(node.status().activity, ActivityState::Running);
    }

    #[test]
    fn a_throttle_shows_only_while_nothing_pauses_the_node() {
        let node = Node::new();
        assert_eq!(
            node.set_policy(None, 50).activity,
            ActivityState::Throttled { duty_percent: 50 }
        );
        assert_eq!(node.status().activity.duty_percent(), 50);
        node.pause(ControlSource::Tray);
        assert_eq!(node.status().activity.duty_percent(), 0);
        node.resume(ControlSource::Tray);
        assert_eq!(
            node.status().activity,
            ActivityState::Throttled { duty_percent: 50 }
        );
        let game = node.set_policy(Some(PauseReason::Game { name: "g".into() }), 100);
        assert!(game.activity.is_paused());
        assert_eq!(node.set_policy(None, 100).activity, ActivityState::Running);
    }

    #[test]
    fn resume_anyway_works_through_a_game_and_its_wait_then_ends_with_them() {
        let node = Node::new();
        let game = PauseReason::Game {
            name: "Doom.exe".into(),
        };
        assert_eq!(
            node.resume_anyway(ControlSource::Window, None).unwrap_err(),
            OverrideRefused::NotPaused
        );
        node.set_policy(Some(game.clone()), 100);
        let anyway = node.resume_anyway(ControlSource::Tray, None).unwrap();
        assert_eq!(anyway.activity, ActivityState::Running);
        let o = anyway.overriding.expect("the override is shown");
        assert_eq!(
            (o.reason, o.until_ms, o.source),
            (game.clone(), None, ControlSource::Tray)
        );
        // The game ends: the wait after it is covered too, then the override is gone.
        let wait = PauseReason::CoolingDown { until_ms: 5 };
        assert_eq!(
            node.set_policy(Some(wait), 100).activity,
            ActivityState::Running
        );
        assert_eq!(node.set_policy(None, 100).overriding, None);
        // The next game pauses again.
        assert!(
            node.set_policy(Some(game.clone()), 100)
                .activity
                .is_paused()
        );
    }

    #[test]
    fn resume_anyway_until_a_time_and_never_through_heat() {
        let node = Node::new();
        let game = PauseReason::Game { name: "g".into() };
        node.set_policy(Some(game.clone()), 100);
        node.resume_anyway(ControlSource::Cli, Some(1_000)).unwrap();
        assert!(!node.expire_pause(999).activity.is_paused());
        let back = node.expire_pause(1_000);
        assert_eq!(
            back.activity,
            ActivityState::Paused {
                reason: game.clone()
            }
        );
        assert_eq!(back.overriding, None);
        // Another pause taking over ends the override.
        node.resume_anyway(ControlSource::Cli, None).unwrap();
        let hot = node.set_policy(Some(PauseReason::Temperature), 100);
        assert_eq!(
            hot.activity,
            ActivityState::Paused {
                reason: PauseReason::Temperature
            }
        );
        assert!(
            node.resume_anyway(ControlSource::Cli, None)
                .unwrap_err()
                .to_string()
                .contains("cannot be overridden")
        );
        // The owner's own pause is lifted by resume, not by "anyway"; pausing ends an override.
        node.set_policy(Some(game.clone()), 100);
        node.resume_anyway(ControlSource::Cli, None).unwrap();
        assert!(node.pause(ControlSource::Window).overriding.is_none());
        assert!(
            node.resume_anyway(ControlSource::Cli, None)
                .unwrap_err()
                .to_string()
                .contains("resume instead")
        );
        node.resume(ControlSource::Window);
        node.resume_anyway(ControlSource::Cli, None).unwrap();
        assert_eq!(
            node.end_override().activity,
            ActivityState::Paused { reason: game }
        );
    }

    #[test]
    fn toggle_flips_state() {
        let node = Node::new();
        assert!(node.toggle(ControlSource::Cli).activity.is_paused());
        assert!(!node.toggle(ControlSource::Cli).activity.is_paused());
    }

    #[tokio::test]
    async fn events_arrive_in_revision_order_across_threads() {
        let node = Node::new();
        let mut events = node.subscribe();
        let workers: Vec<_> = (0..4)
            .map(|_| {
                let node = node.clone();
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        node.toggle(ControlSource::Cli);
                    }
                })
            })
            .collect();
        for worker in workers {
            worker.join().unwrap();
        }
        let final_revision = node.status().revision;
        let mut last = 0;
        let mut seen = 0;
        while let Ok(NodeEvent::StatusChanged { status }) = events.try_recv() {
            assert_eq!(status.revision, last + 1, "events out of order");
            last = status.revision;
            seen += 1;
        }
        assert_eq!(seen, final_revision);
        assert_eq!(last, final_revision);
    }

    #[tokio::test]
    async fn timed_pauses_and_overrides_end_on_their_own_timer() {
        let node = Node::new();
        let timer = node.expire_timed();
        let mut status = node.watch_status();
        assert_eq!(node.next_deadline_ms(), None);
        node.pause_for(ControlSource::Cli, std::time::Duration::from_millis(150));
        assert!(node.next_deadline_ms().is_some());
        // No watcher runs here: the timer alone ends the pause.
        tokio::time::timeout(std::time::Duration::from_secs(5), async {
            while status.borrow_and_update().activity.is_paused() {
                status.changed().await.unwrap();
            }
        })
        .await
        .expect("the timed pause ended by itself");
        node.set_policy(Some(PauseReason::Game { name: "g".into() }), 100);
        let until = hearth_protocol::now_unix_ms() + 150;
        node.resume_anyway(ControlSource::Cli, Some(until)).unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(5), async {
            while !status.borrow_and_update().activity.is_paused() {
                status.changed().await.unwrap();
            }
        })
        .await
        .expect("the timed override ended by itself");
        assert_eq!(node.status().overriding, None);
        timer.abort();
    }

    #[tokio::test]
    async fn watch_receiver_sees_latest_state() {
        let node = Node::new();
        let mut watcher = node.watch_status();
        node.pause(ControlSource::Window);
        watcher.changed().await.unwrap();
        assert!(watcher.borrow().activity.is_paused());
    }
}
