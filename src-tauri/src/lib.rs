//! Hearth's window. It owns no logic and no node: the background process (`hearth-tray`: the
//! node, its local API and the tray icon) does the work, and this program shows the UI, which
//! calls that API. Closing the window ends this program and every WebKit process with it, so
//! Hearth in the tray costs only what the background process costs.
//!
//! On start it finds the background process through the data folder (starting it when it is
//! not running), opens the window, and quits when the background process does (Quit in the
//! tray). A second launch while the window is open hands over to it and exits.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hearth_instance::{IN_TRAY_FLAG, RunningNode};
use tauri::{AppHandle, Manager};

/// The label of the one window, as in `tauri.conf.json`.
pub const MAIN_WINDOW: &str = "main";

/// How long the background process gets to start and publish its address.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// How often the window checks that the background process is still there.
const WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// The background process the window talks to, once found, or why there is none.
#[derive(Debug, Default)]
struct Core {
    found: Mutex<Option<Result<RunningNode, CoreError>>>,
}

/// Why the window has no background process to show.
#[derive(Clone, Debug, thiserror::Error)]
enum CoreError {
    #[error("{0} is missing")]
    Missing(PathBuf),
    #[error("could not find Hearth's programs: {0}")]
    Locate(String),
    #[error("could not start {program}: {reason}")]
    Spawn { program: PathBuf, reason: String },
    #[error("Hearth's background process stopped ({status}); its log is in {log_dir}")]
    Stopped { status: String, log_dir: PathBuf },
    #[error("Hearth's background process did not start within {0:?}")]
    Timeout(Duration),
}

/// The UI shows the error's words.
impl serde::Serialize for CoreError {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Where the UI finds the node's API: its address and token.
#[tauri::command]
async fn core_address(core: tauri::State<'_, Core>) -> Result<RunningNode, CoreError> {
    loop {
        if let Some(found) = core.found.lock().unwrap_or_else(|e| e.into_inner()).clone() {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Start the app and block until it quits.
pub fn run() {
    let data_dir = match hearth_instance::DataFolder::Hearth.path() {
        Ok(dir) => dir,
        Err(error) => fail(&error.to_string()),
    };
    let _log_guard = match hearth_instance::logging::init(&data_dir) {
        Ok(guard) => Some(guard),
        Err(error) => {
            eprintln!("Hearth: logging to a file failed: {error}");
            None
        }
    };
    if std::env::args().any(|arg| arg == IN_TRAY_FLAG) {
        // At login: the background process alone, no window.
        match find_or_start_core(&data_dir, true) {
            Ok(core) => tracing::info!(pid = core.pid, "Hearth is running in the tray"),
            Err(error) => fail(&error.to_string()),
        }
        return;
    }
    let result = tauri::Builder::default()
        // Must come first: a second launch hands over to the first and exits here.
        .plugin(tauri_plugin_single_instance::init(|app, _args, _cwd| {
            tracing::info!("second launch: focusing the running instance");
            show_main_window(app);
        }))
        .manage(Core::default())
        .invoke_handler(tauri::generate_handler![core_address])
        .setup(move |app| {
            show_main_window(app.handle());
            let handle = app.handle().clone();
            std::thread::Builder::new()
                .name("hearth-core-watch".into())
                .spawn(move || connect_and_watch(&handle, &data_dir))?;
            Ok(())
        })
        .build(tauri::generate_context!("../tauri.conf.json"));
    match result {
        // Closing the window quits: the background process goes on in the tray.
        Ok(app) => app.run(|_, _| {}),
        Err(error) => fail(&error.to_string()),
    }
}

fn fail(error: &str) -> ! {
    tracing::error!(%error, "the window could not start");
    eprintln!("Hearth could not start: {error}");
    std::process::exit(1);
}

/// Find (or start) the background process and tell the UI; then quit when it goes away.
fn connect_and_watch(app: &AppHandle, data_dir: &Path) {
    let found = find_or_start_core(data_dir, false);
    if let Err(error) = &found {
        tracing::error!(%error, "no background process");
    }
    let pid = found.as_ref().ok().map(|core| core.pid);
    *app.state::<Core>()
        .found
        .lock()
        .unwrap_or_else(|e| e.into_inner()) = Some(found);
    let Some(pid) = pid else { return };
    tracing::info!(pid, "window connected to the running node");
    while hearth_instance::process_alive(pid) {
        std::thread::sleep(WATCH_INTERVAL);
    }
    tracing::info!("the background process has quit: closing the window");
    app.exit(0);
}

/// The running background process, or a new one started (and waited for).
fn find_or_start_core(data_dir: &Path, in_tray: bool) -> Result<RunningNode, CoreError> {
    if let Some(core) = hearth_instance::running_node(data_dir) {
        return Ok(core);
    }
    let program = core_program()?;
    let mut command = Command::new(&program);
    if in_tray {
        command.arg(IN_TRAY_FLAG);
    }
    detach(&mut command);
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| CoreError::Spawn {
            program: program.clone(),
            reason: e.to_string(),
        })?;
    tracing::info!(pid = child.id(), "started the background process");
    let started = Instant::now();
    loop {
        if let Some(core) = hearth_instance::running_node(data_dir) {
            // Reap it when it ends (it outlives this window, usually).
            std::thread::spawn(move || child.wait());
            return Ok(core);
        }
        if let Ok(Some(status)) = child.try_wait() {
            // Another launch may have started one at the same moment.
            return hearth_instance::running_node(data_dir).ok_or_else(|| CoreError::Stopped {
                status: status.to_string(),
                log_dir: hearth_instance::logging::log_dir(data_dir),
            });
        }
        if started.elapsed() > START_TIMEOUT {
            return Err(CoreError::Timeout(START_TIMEOUT));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `hearth-tray` beside this program.
fn core_program() -> Result<PathBuf, CoreError> {
    let program = hearth_instance::sibling_program(hearth_instance::TRAY_PROGRAM)
        .map_err(|e| CoreError::Locate(e.to_string()))?;
    if program.is_file() {
        Ok(program)
    } else {
        Err(CoreError::Missing(program))
    }
}

/// The background process gets its own session, so it outlives this window (and a terminal
/// it was started from).
#[cfg(unix)]
fn detach(command: &mut Command) {
    use std::os::unix::process::CommandExt as _;
    command.process_group(0);
}

#[cfg(not(unix))]
fn detach(_command: &mut Command) {}

/// Show, unminimise and focus the main window, building it (from `tauri.conf.json`) when it
/// does not exist yet.
fn show_main_window(app: &AppHandle) {
    let window = match app.get_webview_window(MAIN_WINDOW) {
        Some(window) => window,
        None => {
            let Some(config) = app
                .config()
                .app
                .windows
                .iter()
                .find(|w| w.label == MAIN_WINDOW)
            else {
                tracing::error!("tauri.conf.json has no main window");
                return;
            };
            match tauri::WebviewWindowBuilder::from_config(app, config).and_then(|b| b.build()) {
                Ok(window) => window,
                Err(error) => {
                    tracing::error!(%error, "could not open the window");
                    return;
                }
            }
        }
    };
    for (what, result) in [
        ("show", window.show()),
        ("unminimize", window.unminimize()),
        ("focus", window.set_focus()),
    ] {
        if let Err(error) = result {
            tracing::warn!(%error, what, "could not raise the window");
        }
    }
}
