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

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed call fails the test
mod tests {
    use super::*;
    use windows_sys::Win32::System::LibraryLoader::GetModuleHandleW;
    use windows_sys::Win32::UI::WindowsAndMessaging::{
        CreateWindowExW, DefWindowProcW, DispatchMessageW, GetMessageW, GetSystemMetrics, MSG,
        RegisterClassW, SM_CXSCREEN, SM_CYSCREEN, SW_SHOW, SetForegroundWindow, ShowWindow,
        TranslateMessage, WNDCLASSW, WS_POPUP, WS_VISIBLE,
    };

    /// One test at a time: a window coming to the front counts as input under Wine.
    static DESKTOP: std::sync::Mutex<()> = std::sync::Mutex::new(());

    /// Nobody touches keyboard or mouse during the test: the idle time grows with the clock.
    #[test]
    fn idle_time_grows_while_nobody_touches_anything() {
        let _alone = DESKTOP.lock().unwrap_or_else(|e| e.into_inner());
        let desktop = WindowsDesktop::connect(None).unwrap();
        let before = desktop.idle().unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let after = desktop.idle().unwrap();
        assert!(
            after >= before + Duration::from_millis(250),
            "{before:?} then {after:?}"
        );
    }

    /// A program whose window covers the whole screen in front counts as fullscreen; once it
    /// ends, nothing does. The program is this test binary again, running
    /// [`fullscreen_stand_in`] (another process: Hearth's own windows never count).
    #[test]
    fn another_programs_window_covering_the_screen_is_fullscreen() {
        let _alone = DESKTOP.lock().unwrap_or_else(|e| e.into_inner());
        let desktop = WindowsDesktop::connect(None).unwrap();
        assert!(!desktop.is_fullscreen().unwrap(), "nothing in front yet");
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--ignored",
                "--exact",
                "windows::tests::fullscreen_stand_in",
            ])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let until = |wanted: bool| {
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            while desktop.is_fullscreen().unwrap() != wanted {
                assert!(
                    std::time::Instant::now() < deadline,
                    "fullscreen never became {wanted}"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        };
        until(true);
        child.kill().unwrap();
        child.wait().unwrap();
        until(false);
    }

    /// Stands in for a game: a window covering the primary screen, brought to the front, kept
    /// until the process is killed.
    #[test]
    #[ignore = "started by another_programs_window_covering_the_screen_is_fullscreen"]
    fn fullscreen_stand_in() {
        let class: Vec<u16> = "HearthFullscreenStandIn\0".encode_utf16().collect();
        // SAFETY: a window class and window made the documented way: the class name outlives
        // the calls, the window procedure is the system's default, and the message loop
        // runs on the thread that made the window.
        unsafe {
            let instance = GetModuleHandleW(std::ptr::null());
            let mut wc: WNDCLASSW = std::mem::zeroed();
            wc.lpfnWndProc = Some(DefWindowProcW);
            wc.hInstance = instance;
            wc.lpszClassName = class.as_ptr();
            assert_ne!(RegisterClassW(&wc), 0);
            let window = CreateWindowExW(
                0,
                class.as_ptr(),
                class.as_ptr(),
                WS_POPUP | WS_VISIBLE,
                0,
                0,
                GetSystemMetrics(SM_CXSCREEN),
                GetSystemMetrics(SM_CYSCREEN),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                instance,
                std::ptr::null(),
            );
            assert!(!window.is_null());
            ShowWindow(window, SW_SHOW);
            SetForegroundWindow(window);
            let mut message: MSG = std::mem::zeroed();
            while GetMessageW(&mut message, std::ptr::null_mut(), 0, 0) > 0 {
                TranslateMessage(&message);
                DispatchMessageW(&message);
            }
        }
    }
}
