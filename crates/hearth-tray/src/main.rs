//! `hearth-tray`: the node, its local API and the tray icon, in one process without a webview.
//!
//! The window (`hearth-app`) is a separate program that finds this one through the data
//! folder's server file, shows the UI and calls the API; closing it ends that program and
//! everything WebKit started, so living in the tray costs what this process costs. Started by
//! the window when it is not running yet, or at login (`--in-tray`, through `hearth-app`).

mod desktop;
mod tray;
#[cfg(windows)]
mod windows_menu;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hearth_instance::IN_TRAY_FLAG;
use hearth_node::{Node, RunningNode, StartOptions, server};

/// How long running jobs get to be handed back when Hearth quits.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

fn main() {
    // A child started to list the GPUs answers and exits here (see hearth_hardware::probe).
    hearth_hardware::probe::serve_probe_if_asked();
    limit_malloc_arenas();
    if let Err(error) = run() {
        tracing::error!("{error:#}");
        eprintln!("Hearth could not start: {error:#}");
        std::process::exit(1);
    }
}

fn run() -> anyhow::Result<()> {
    let in_tray = std::env::args().any(|arg| arg == IN_TRAY_FLAG);
    let data_dir = hearth_instance::DataFolder::Hearth
        .path()
        .map_err(anyhow::Error::msg)?;
    std::fs::create_dir_all(&data_dir)?;
    let _log_guard = hearth_instance::logging::init(&data_dir)
        .map_err(|e| anyhow::anyhow!("could not start logging: {e}"))?;
    if let Some(running) = hearth_instance::running_node(&data_dir) {
        tracing::info!(pid = running.pid, "Hearth is already running");
        return Ok(());
    }
    // Without a desktop there is nobody to show the tray to, and no way to quit but a signal:
    // say so rather than work unseen.
    #[cfg(target_os = "linux")]
    gtk::init().map_err(|e| {
        anyhow::anyhow!(
            "no desktop session to show the tray in ({e}); for a node without a desktop, \
             run `hearth-node run`"
        )
    })?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("hearth-node")
        .build()?;
    let node = Node::new();
    let running = runtime.block_on(start(&data_dir, node.clone()))?;
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        in_tray,
        node = running.node_id(),
        device = running.device(),
        "Hearth started"
    );
    desktop::apply_start_at_login(running.settings().start_at_login);
    desktop::spawn_notifier(&runtime, Arc::clone(&running));

    run_tray(&runtime, &running);

    tracing::info!("Hearth quitting: giving running jobs back");
    hearth_instance::withdraw(&data_dir);
    runtime.block_on(running.shutdown(SHUTDOWN_GRACE));
    Ok(())
}

/// glibc gives each thread that allocates an arena of its own (up to 8 per core), and what
/// the models freed stays spread over them. This process lives in the tray for days and works
/// on a few threads: two arenas keep its resident memory after a pause close to a fresh start.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn limit_malloc_arenas() {
    // SAFETY: mallopt only sets an allocator parameter; called before any other thread runs.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, 2) };
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn limit_malloc_arenas() {}

/// Start the node and its API on 127.0.0.1 (a free port), and publish where it listens.
async fn start(data_dir: &Path, node: Node) -> anyhow::Result<Arc<RunningNode>> {
    let options = StartOptions::from_data_dir(data_dir)?;
    let running = Arc::new(RunningNode::start_with(options, node).await?);
    let in_data_dir = |what: &str, error: std::io::Error| {
        anyhow::anyhow!(
            "{what} in {}: {}",
            data_dir.display(),
            hearth_instance::explain_io(&error)
        )
    };
    let token =
        server::load_or_create_token(data_dir).map_err(|e| in_data_dir("the API token", e))?;
    let api = server::serve(Arc::clone(&running), 0, token, None).await?;
    hearth_instance::publish(data_dir, &format!("http://{}", api.addr))
        .map_err(|e| in_data_dir("publishing the API's address", e))?;
    tracing::info!(addr = %api.addr, "local API listening");
    Ok(running)
}

/// Show the tray and run the desktop's main loop until Quit, a termination signal or the end
/// of the desktop session (its display closing).
#[cfg(target_os = "linux")]
fn run_tray(runtime: &tokio::runtime::Runtime, running: &Arc<RunningNode>) {
    if let Some(display) = gtk::gdk::Display::default() {
        display.connect_closed(|_, _| {
            tracing::info!("the desktop session ended");
            gtk::main_quit();
        });
    }
    let tray = match tray::Tray::create(Arc::clone(running)) {
        Ok(tray) => Some(tray),
        Err(error) => {
            tracing::warn!(%error, "could not create the tray icon");
            None
        }
    };
    if let Some(tray) = tray {
        tray.follow(running);
    }
    runtime.spawn(async {
        termination().await;
        tracing::info!("asked to stop");
        gtk::glib::MainContext::default().invoke(gtk::main_quit);
    });
    gtk::main();
}

/// Show the tray and run Windows' message loop on this thread (the tray icon's hidden window
/// lives here) until Quit or Ctrl-C. The node's events reach the tray
/// through a channel; each wakes the loop with a thread message.
#[cfg(windows)]
#[allow(unsafe_code)]
fn run_tray(runtime: &tokio::runtime::Runtime, running: &Arc<RunningNode>) {
    use windows_sys::Win32::System::Threading::GetCurrentThreadId;
    use windows_sys::Win32::UI::WindowsAndMessaging::{
        DispatchMessageW, GetMessageW, MSG, PostThreadMessageW, TranslateMessage, WM_APP, WM_QUIT,
    };
    // SAFETY: takes no arguments.
    let thread = unsafe { GetCurrentThreadId() };
    let tray = match tray::Tray::create(Arc::clone(running)) {
        Ok(tray) => Some(tray),
        Err(error) => {
            tracing::warn!(%error, "could not create the tray icon");
            None
        }
    };
    let (updates, updated) = std::sync::mpsc::channel();
    let mut events = running.node().subscribe();
    runtime.spawn(async move {
        loop {
            let event = events.recv().await;
            let closed = matches!(event, Err(tokio::sync::broadcast::error::RecvError::Closed));
            if closed || updates.send(event).is_err() {
                break;
            }
            // SAFETY: posts a message without pointers to a thread of this process.
            unsafe { PostThreadMessageW(thread, WM_APP, 0, 0) };
        }
    });
    runtime.spawn(async move {
        termination().await;
        tracing::info!("asked to stop");
        // SAFETY: as above.
        unsafe { PostThreadMessageW(thread, WM_QUIT, 0, 0) };
    });
    let mut follower = tray.map(|tray| tray::Follower::new(tray, running));
    // SAFETY: a zeroed MSG is a valid place for GetMessageW to fill; the loop runs on the
    // thread that made the tray's window, as Windows requires.
    unsafe {
        let mut message: MSG = std::mem::zeroed();
        while GetMessageW(&mut message, std::ptr::null_mut(), 0, 0) > 0 {
            if message.hwnd.is_null() && message.message == WM_APP {
                while let Ok(event) = updated.try_recv() {
                    if let Some(follower) = follower.as_mut() {
                        follower.handle(event);
                    }
                }
                continue;
            }
            TranslateMessage(&message);
            DispatchMessageW(&message);
        }
    }
}

/// macOS needs its own event loop for a tray, not written yet; Hearth runs until it is asked
/// to stop.
#[cfg(not(any(target_os = "linux", windows)))]
fn run_tray(runtime: &tokio::runtime::Runtime, _running: &Arc<RunningNode>) {
    tracing::warn!("the tray icon is only built on Linux so far");
    runtime.block_on(termination());
}

/// Resolves on Ctrl-C or SIGTERM.
async fn termination() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    if let Err(error) = tokio::signal::ctrl_c().await {
        // No way to hear Ctrl-C: wait for the tray's Quit instead of quitting at once.
        tracing::warn!(%error, "cannot listen for Ctrl-C");
        std::future::pending::<()>().await;
    }
}

/// Open the window: start `hearth-app`, which shows the running node (or, when a window is
/// already open, hands over to it and exits).
pub(crate) fn open_window() {
    let Some(program) = window_program() else {
        tracing::error!("could not find the window program");
        return;
    };
    match std::process::Command::new(&program)
        .stdin(std::process::Stdio::null())
        .spawn()
    {
        Ok(mut child) => {
            tracing::info!(pid = child.id(), "opening the window");
            // Reap it when it ends, so no zombie is left behind.
            let reaper = std::thread::Builder::new()
                .name("hearth-window-reaper".into())
                .spawn(move || child.wait());
            if let Err(error) = reaper {
                tracing::warn!(%error, "the window's exit will not be collected");
            }
        }
        Err(error) => {
            tracing::error!(%error, program = %program.display(), "could not open the window");
        }
    }
}

/// The path of the window program, for the login entry.
pub(crate) fn window_program() -> Option<PathBuf> {
    hearth_instance::sibling_program(hearth_instance::WINDOW_PROGRAM).ok()
}
