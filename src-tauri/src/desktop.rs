//! The desktop integrations the settings switch: start at login (tauri-plugin-autostart) and
//! notifications when Hearth pauses or resumes by itself (tauri-plugin-notification).

use hearth_node::{ActivityState, PauseReason};
use tauri::{AppHandle, Manager};
use tauri_plugin_autostart::ManagerExt as _;
use tauri_plugin_notification::NotificationExt as _;

use crate::Running;

/// Register (or unregister) the app to start when the owner logs in.
pub fn apply_start_at_login(app: &AppHandle, wanted: bool) {
    let launcher = app.autolaunch();
    let result = match (wanted, launcher.is_enabled()) {
        (true, Ok(false)) => launcher.enable(),
        (false, Ok(true)) => launcher.disable(),
        (_, Ok(_)) => Ok(()),
        (_, Err(error)) => Err(error),
    };
    match result {
        Ok(()) => tracing::debug!(wanted, "start at login set"),
        Err(error) => tracing::warn!(%error, wanted, "could not change start at login"),
    }
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

/// Show `text` as a desktop notification, when the owner wants them.
pub fn notify(app: &AppHandle, text: &str) {
    let wanted = match app.state::<Running>().get() {
        Some(Ok(service)) => service.settings().notify_on_auto_pause,
        _ => false,
    };
    if !wanted {
        return;
    }
    match app
        .notification()
        .builder()
        .title("Hearth")
        .body(text)
        .show()
    {
        Ok(()) => tracing::info!(text, "notified"),
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
