// No console window on Windows release builds.
#![cfg_attr(not(debug_assertions), windows_subsystem = "windows")]

fn main() {
    webkit_defaults();
    hearth_app::run();
}

/// WebKitGTK without accelerated compositing: a dashboard that sits idle most of the day does
/// not need a GPU compositor, and without it the window costs about 50 MiB less (measured on a
/// bare Tauri window: 255 → 201 MiB PSS) and leaves the GPU to the jobs. The owner's own
/// setting wins.
#[allow(unsafe_code)]
fn webkit_defaults() {
    if cfg!(target_os = "linux") && std::env::var_os("WEBKIT_DISABLE_COMPOSITING_MODE").is_none() {
        // SAFETY: first thing in `main`, before any other thread exists.
        unsafe { std::env::set_var("WEBKIT_DISABLE_COMPOSITING_MODE", "1") };
    }
}
