//! [`Node`]: the handle every frontend holds.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::{broadcast, watch};

use crate::status::{ActivityState, ControlSource, NodeEvent, NodeStatus, PauseReason};

/// How many events a slow subscriber may fall behind before it starts missing some.
/// A subscriber that lags gets `RecvError::Lagged` and should re-read [`Node::status`].
const EVENT_BUFFER: usize = 256;

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
    /// The policy's duty cycle while nothing pauses the node (`None`: flat out).
    throttle: Option<u8>,
}

impl Inputs {
    /// The owner's pause comes first (it is theirs to lift), then the policy's.
    fn activity(&self) -> ActivityState {
        match (&self.user, &self.automatic) {
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
            changed_at_ms: unix_millis(),
            revision: 0,
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
    /// pause becomes one until resumed).
    pub fn pause(&self, source: ControlSource) -> NodeStatus {
        self.update(|inputs| {
            let (from, _) = inputs.user.get_or_insert((source, None));
            inputs.user = Some((*from, None));
        })
    }

    /// Stop taking work for `duration`, then resume by itself (see [`Node::expire_pause`]).
    pub fn pause_for(&self, source: ControlSource, duration: std::time::Duration) -> NodeStatus {
        let until = unix_millis().saturating_add(duration.as_millis() as u64);
        self.update(|inputs| inputs.user = Some((source, Some(until))))
    }

    /// End a timed pause of the owner's whose time is up (the watcher calls this each tick).
    pub fn expire_pause(&self, now_ms: u64) -> NodeStatus {
        self.update(|inputs| {
            if let Some((_, Some(until))) = inputs.user
                && until <= now_ms
            {
                inputs.user = None;
            }
        })
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
    pub fn set_policy(&self, reason: Option<PauseReason>, duty_percent: u8) -> NodeStatus {
        self.update(|inputs| {
            inputs.automatic = reason;
            inputs.throttle = (duty_percent < 100).then_some(duty_percent);
        })
    }

    /// Change the inputs, and if the resulting state differs, publish it and announce it.
    /// The event is sent while the inputs are locked, so subscribers see changes in exactly
    /// the order they were made.
    fn update(&self, change: impl FnOnce(&mut Inputs)) -> NodeStatus {
        let mut inputs = self.shared.inputs.lock().unwrap_or_else(|e| e.into_inner());
        change(&mut inputs);
        let next = inputs.activity();
        self.shared.status.send_if_modified(|status| {
            if status.activity == next {
                return false;
            }
            status.activity = next;
            status.changed_at_ms = unix_millis();
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

fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
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
    async fn watch_receiver_sees_latest_state() {
        let node = Node::new();
        let mut watcher = node.watch_status();
        node.pause(ControlSource::Window);
        watcher.changed().await.unwrap();
        assert!(watcher.borrow().activity.is_paused());
    }
}
