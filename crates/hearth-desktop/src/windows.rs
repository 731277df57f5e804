//! Windows: fullscreen from the shell and the foreground window, idle time from
//! `GetLastInputInfo`.
//!
//! Platform calls are foreign functions, hence `unsafe`; each block says why it is sound.
#![allow(unsafe_code)]

use std::time::Duration;

use crate::DesktopError;

use windows_sys::Win32::Foundation::RECT;
use windows_sys::Win32::Graphics::Gdi::{
    GetMonitorInfoW, MONITOR_DEFAULTTONEAREST, MONITORINFO, MonitorFromWindow,
};
use windows_sys::Win32::System::SystemInformation::GetTickCount;
use windows_sys::Win32::UI::Input::KeyboardAndMouse::{GetLastInputInfo, LASTINPUTINFO};
use windows_sys::Win32::UI::Shell::{
    QUNS_PRESENTATION_MODE, QUNS_RUNNING_D3D_FULL_SCREEN, SHQueryUserNotificationState,
};
use windows_sys::Win32::UI::WindowsAndMessaging::{
    GetDesktopWindow, GetForegroundWindow, GetShellWindow, GetWindowRect, GetWindowThreadProcessId,
};

/// The interactive desktop of this session.
#[derive(Debug)]
pub struct WindowsDesktop {
    own_pid: u32,
}

impl WindowsDesktop {
    /// The session's desktop (`display` is an X11 notion and is ignored here).
    pub fn connect(_display: Option<&str>) -> Result<Self, DesktopError> {
        Ok(Self {
            own_pid: std::process::id(),
        })
    }

    /// True when a Direct3D program runs exclusive fullscreen, a presentation is on, or the
    /// foreground window (not Hearth's, not the desktop's) covers its whole monitor.
    pub fn is_fullscreen(&self) -> Result<bool, DesktopError> {
        let mut state = 0;
        // SAFETY: `state` is a valid place for the one value the call writes.
        if unsafe { SHQueryUserNotificationState(&mut state) } == 0
            && (state == QUNS_RUNNING_D3D_FULL_SCREEN || state == QUNS_PRESENTATION_MODE)
        {
            return Ok(true);
        }
        // SAFETY: these calls take no pointers; a null window is handled below.
        let (window, shell, desktop) =
            unsafe { (GetForegroundWindow(), GetShellWindow(), GetDesktopWindow()) };
        if window.is_null() || window == shell || window == desktop {
            return Ok(false);
        }
        let mut pid = 0u32;
        // SAFETY: `window` is a window handle from the system; `pid` is a valid place.
        unsafe { GetWindowThreadProcessId(window, &mut pid) };
        if pid == self.own_pid {
            return Ok(false);
        }
        let mut rect = RECT {
            left: 0,
            top: 0,
            right: 0,
            bottom: 0,
        };
        // SAFETY: as above; `rect` is a valid place for the window's rectangle.
        if unsafe { GetWindowRect(window, &mut rect) } == 0 {
            // The window went away between the two questions.
            return Ok(false);
        }
        let mut monitor = MONITORINFO {
            cbSize: std::mem::size_of::<MONITORINFO>() as u32,
            rcMonitor: rect,
            rcWork: rect,
            dwFlags: 0,
        };
        // SAFETY: `monitor.cbSize` is set as the call requires; the handle comes from the
        // system and MONITOR_DEFAULTTONEAREST never gives a null one.
        let found = unsafe {
            GetMonitorInfoW(
                MonitorFromWindow(window, MONITOR_DEFAULTTONEAREST),
                &mut monitor,
            )
        };
        if found == 0 {
            return Err(DesktopError::Query {
                question: "GetMonitorInfoW",
                reason: std::io::Error::last_os_error().to_string(),
            });
        }
        let screen = monitor.rcMonitor;
        Ok(rect.left <= screen.left
            && rect.top <= screen.top
            && rect.right >= screen.right
            && rect.bottom >= screen.bottom)
    }

    /// Time since the user last touched keyboard or mouse (in this session).
    pub fn idle(&self) -> Result<Duration, DesktopError> {
        let mut info = LASTINPUTINFO {
            cbSize: std::mem::size_of::<LASTINPUTINFO>() as u32,
            dwTime: 0,
        };
        // SAFETY: `info.cbSize` is set as the call requires.
        if unsafe { GetLastInputInfo(&mut info) } == 0 {
            return Err(DesktopError::Query {
                question: "GetLastInputInfo",
                reason: std::io::Error::last_os_error().to_string(),
            });
        }
        // Both are milliseconds since boot, wrapping every 49.7 days.
        // SAFETY: takes no arguments.
        let now = unsafe { GetTickCount() };
        Ok(Duration::from_millis(u64::from(
            now.wrapping_sub(info.dwTime),
        )))
    }
}
