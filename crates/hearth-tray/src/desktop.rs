//! What the settings switch on the desktop: start at login (the platform's autostart entry,
//! which runs `hearth-app --in-tray`) and notifications when Hearth pauses or resumes by itself.

use std::sync::Arc;

use hearth_node::{ActivityState, NodeEvent, PauseReason, RunningNode};
use tokio::sync::broadcast::error::RecvError;

/// Register (or unregister) Hearth to start in the tray when the owner logs in: the login
/// entry runs the window program with `--in-tray`.
pub fn apply_start_at_login(wanted: bool) {
    let result = crate::window_program()
        .ok_or_else(|| std::io::Error::other("cannot find the window program"))
        .and_then(|program| {
            hearth_desktop::set_start_at_login(&program, hearth_instance::IN_TRAY_FLAG, wanted)
        });
    match result {
        Ok(()) => tracing::debug!(wanted, "start at login set"),
        Err(error) => tracing::warn!(%error, wanted, "could not change start at login"),
    }
}

/// Follow the node's events: notify the owner of pauses Hearth takes by itself (when the
/// settings ask for it) and keep the login entry in step with the settings.
pub fn spawn_notifier(runtime: &tokio::runtime::Runtime, running: Arc<RunningNode>) {
    let node = running.node().clone();
    let mut events = node.subscribe();
    // Read once here; later changes arrive as events (no file read per state change).
    let mut wanted = running.settings().notify_on_auto_pause;
    runtime.spawn(async move {
        let mut last = node.status().activity;
        loop {
            match events.recv().await {
                Ok(NodeEvent::StatusChanged { status }) => {
                    if let Some(text) = pause_notice(&last, &status.activity)
                        && wanted
                    {
                        tokio::task::spawn_blocking(move || notify(&text));
                    }
                    last = status.activity;
                }
                Ok(NodeEvent::SettingsChanged { settings }) => {
                    wanted = settings.notify_on_auto_pause;
                    tokio::task::spawn_blocking(move || {
                        apply_start_at_login(settings.start_at_login);
                    });
                }
                Ok(_) | Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => break,
            }
        }
    });
}

/// What to tell the owner when the state goes from `before` to `after`: a pause Hearth took
/// by itself, or work resuming after one. Their own pauses and the cooldown are not news.
pub fn pause_notice(before: &ActivityState, after: &ActivityState) -> Option<String> {
    let automatic = |state: &ActivityState| match state {
        ActivityState::Paused { reason } => !matches!(reason, PauseReason::User { .. }),
        _ => false,
    };
    match after {
        ActivityState::Paused { reason }
            if !matches!(
                reason,
                PauseReason::User { .. } | PauseReason::CoolingDown { .. }
            ) && !automatic(before) =>
        {
            Some(format!("Hearth paused: {}", reason.describe()))
        }
        ActivityState::Running | ActivityState::Throttled { .. } if automatic(before) => {
            Some("Hearth is working again".into())
        }
        _ => None,
    }
}

/// Show `text` as a desktop notification.
fn notify(text: &str) {
    match notify_rust::Notification::new()
        .appname("Hearth")
        .summary("Hearth")
        .body(text)
        .show()
    {
        Ok(_) => tracing::info!(text, "notified"),
        Err(error) => tracing::warn!(%error, text, "could not show a notification"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paused(reason: PauseReason) -> ActivityState {
        ActivityState::Paused { reason }
    }

    #[test]
    fn automatic_pauses_and_their_end_are_news_the_owners_own_are_not() {
        let game = paused(PauseReason::Game {
            name: "eldenring.exe".into(),
        });
        let own = paused(PauseReason::User {
            source: hearth_node::ControlSource::Tray,
            until_ms: None,
        });
        let cooling = paused(PauseReason::CoolingDown { until_ms: 1 });
        assert_eq!(
            pause_notice(&ActivityState::Running, &game).as_deref(),
            Some("Hearth paused: eldenring.exe is running")
        );
        assert_eq!(pause_notice(&game, &cooling), None, "still paused");
        assert_eq!(
            pause_notice(&cooling, &ActivityState::Running).as_deref(),
            Some("Hearth is working again")
        );
        assert_eq!(pause_notice(&ActivityState::Running, &own), None);
        assert_eq!(pause_notice(&own, &ActivityState::Running), None);
    }
}
