//! macOS: idle time from Quartz's combined session event source.
//!
//! Platform calls are foreign functions, hence `unsafe`; each block says why it is sound.
#![allow(unsafe_code)]

use std::time::Duration;

use crate::DesktopError;

#[link(name = "CoreGraphics", kind = "framework")]
unsafe extern "C" {
    /// Seconds since the last event of `event_type` from `source_state`.
    fn CGEventSourceSecondsSinceLastEventType(source_state: i32, event_type: u32) -> f64;
}

/// `kCGEventSourceStateCombinedSessionState`.
const COMBINED_SESSION_STATE: i32 = 0;
/// `kCGAnyInputEventType`.
const ANY_INPUT_EVENT: u32 = !0;

/// The user's login session.
#[derive(Debug)]
pub struct MacDesktop;

impl MacDesktop {
    /// The session (`display` is an X11 notion and is ignored here).
    pub fn connect(_display: Option<&str>) -> Result<Self, DesktopError> {
        Ok(Self)
    }

    /// Not detected on macOS yet: an error, so the watcher turns the rule off and says why.
    pub fn is_fullscreen(&self) -> Result<bool, DesktopError> {
        Err(DesktopError::Unsupported("fullscreen detection"))
    }

    /// Time since the user last touched keyboard, mouse or trackpad.
    pub fn idle(&self) -> Result<Duration, DesktopError> {
        // SAFETY: plain values in, a double out.
        let seconds = unsafe {
            CGEventSourceSecondsSinceLastEventType(COMBINED_SESSION_STATE, ANY_INPUT_EVENT)
        };
        if seconds.is_finite() && seconds >= 0.0 {
            Ok(Duration::from_secs_f64(seconds))
        } else {
            Err(DesktopError::Query {
                question: "Quartz idle time",
                reason: format!("answered {seconds} s"),
            })
        }
    }
}
