// No console window on Windows release builds.
#![cfg_attr(not(debug_assertions), windows_subsystem = "windows")]

fn main() {
    webkit_defaults();
    hearth_app::run();
}

/// WebKitGTK defaults for a dashboard that sits idle most of the day; the owner's own settings
/// (environment variables) win.
/// - No accelerated compositing: it needs no GPU compositor, and without one the window costs
///   about 50 MiB less (measured on a bare Tauri window: 255 → 201 MiB PSS) and leaves the GPU to
///   the jobs.
/// - JavaScriptCore without its JIT compilers: the UI's scripts are light (a few hundred
///   updates a minute), the interpreter runs them without a visible difference, and WebKit's web
///   process holds about 8 MiB less (119 → 111 MiB PSS, measured with the footprint bench).
#[allow(unsafe_code)]
fn webkit_defaults() {
    if !cfg!(target_os = "linux") {
        return;
    }
    for (name, value) in [
        ("WEBKIT_DISABLE_COMPOSITING_MODE", "1"),
        ("JSC_useJIT", "false"),
    ] {
        if std::env::var_os(name).is_none() {
            // SAFETY: first thing in `main`, before any other thread exists.
            unsafe { std::env::set_var(name, value) };
        }
    }
}
