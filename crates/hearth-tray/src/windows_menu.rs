//! Opening the tray menu on Windows when the icon is clicked.
//!
//! `tray-icon` 0.25 asks the shell where its icon is (`Shell_NotifyIconGetRect`) before it
//! handles any click, and drops the click when the shell cannot say. Wine's shell answers
//! `E_NOTIMPL`, so under Wine its menu never opened. Hearth does not need the icon's place to
//! open a menu at the cursor: the tray's hidden window is subclassed, and a click's button
//! release opens the menu there, the way Windows' own notification-area programs do. On
//! Windows and on Wine alike, so the test under Wine exercises the path Windows users get.

use std::cell::RefCell;

use tray_icon::TrayIcon;
use tray_icon::menu::{ContextMenu, Menu};
use windows_sys::Win32::Foundation::{HWND, LPARAM, LRESULT, WPARAM};
use windows_sys::Win32::UI::Shell::{DefSubclassProc, SetWindowSubclass};
use windows_sys::Win32::UI::WindowsAndMessaging::{
    PostMessageW, WM_LBUTTONUP, WM_NULL, WM_RBUTTONUP,
};

/// The message `tray-icon` 0.25 asks the shell to send its hidden window for the icon's mouse
/// events (its `WM_USER_TRAYICON`, not public). Cargo.lock pins that version; the tray test
/// under Wine opens the menu through this path, so a change of the number fails that test.
const TRAY_CALLBACK_MESSAGE: u32 = 6002;

/// This subclass's id among the window's subclasses (muda's own use 200 and 202).
const SUBCLASS_ID: usize = 0x4845_4152; // "HEAR"

thread_local! {
    /// The menu to open: the tray's window and this loop live on the message loop's thread.
    static MENU: RefCell<Option<Menu>> = const { RefCell::new(None) };
}

/// Open `menu` at the cursor when `icon` is clicked (either button). Call on the thread that
/// runs the message loop, after the icon is built.
pub fn open_menu_on_click(icon: &TrayIcon, menu: Menu) -> anyhow::Result<()> {
    MENU.with(|slot| *slot.borrow_mut() = Some(menu));
    let window = icon.window_handle();
    #[allow(unsafe_code)]
    // SAFETY: `window` is the icon's live window, made on this thread; the procedure keeps no
    // pointer in its reference data.
    let added = unsafe { SetWindowSubclass(window as HWND, Some(on_message), SUBCLASS_ID, 0) };
    anyhow::ensure!(added != 0, "could not watch the tray icon's clicks");
    Ok(())
}

/// The subclass procedure: opens the menu on a button release over the icon and passes every
/// other message on (to muda's subclass, which turns the menu's commands into `MenuEvent`s,
/// and to tray-icon's window procedure).
#[allow(unsafe_code)]
unsafe extern "system" fn on_message(
    window: HWND,
    message: u32,
    wparam: WPARAM,
    lparam: LPARAM,
    _id: usize,
    _data: usize,
) -> LRESULT {
    if message == TRAY_CALLBACK_MESSAGE && matches!(lparam as u32, WM_LBUTTONUP | WM_RBUTTONUP) {
        MENU.with(|slot| {
            if let Some(menu) = slot.borrow().as_ref() {
                // SAFETY: `window` is the live window this message came to. Muda brings it to
                // the front (so a click elsewhere closes the menu), runs the menu at the
                // cursor and sends the chosen item's `MenuEvent`.
                unsafe { menu.show_context_menu_for_hwnd(window as isize, None) };
            }
        });
        // What Windows asks for after a notification area's menu, so the next click works.
        // SAFETY: posts a message without pointers to a live window.
        unsafe { PostMessageW(window, WM_NULL, 0, 0) };
        return 0;
    }
    // SAFETY: forwards the message as it came, as a subclass procedure must.
    unsafe { DefSubclassProc(window, message, wparam, lparam) }
}
