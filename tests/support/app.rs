//! The real Hearth app, driven through tauri-driver and WebKitWebDriver.

use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};

use crate::process::Owned;
use crate::{Desktop, wait_for};

/// How long the UI gets to show a change.
pub const UI_TIMEOUT: Duration = Duration::from_secs(15);

/// The app running on a [`Desktop`], with a WebDriver session on its window.
#[derive(Debug)]
pub struct App {
    client: Client,
    _driver: Owned,
}

impl App {
    /// Launch the app binary on `desktop` and wait until its window shows the node's state.
    pub async fn launch(desktop: &Desktop) -> anyhow::Result<Self> {
        Self::launch_showing(desktop, "[data-testid=state-label]").await
    }

    /// Launch the app binary on `desktop` and wait until the element `css` has text.
    pub async fn launch_showing(desktop: &Desktop, css: &str) -> anyhow::Result<Self> {
        Self::launch_program(desktop, &app_binary()?, css).await
    }

    /// Launch `program` (an installed app) on `desktop` and wait until the element `css` has
    /// text.
    pub async fn launch_program(
        desktop: &Desktop,
        program: &Path,
        css: &str,
    ) -> anyhow::Result<Self> {
        let binary = program;
        let port = free_port()?;
        let native_port = free_port()?;
        let driver = Owned::spawn(
            "tauri-driver",
            Command::new(tauri_driver()?)
                .args(["--port", &port.to_string()])
                .args(["--native-port", &native_port.to_string()])
                .envs(desktop.env())
                .stdout(Stdio::null())
                .stderr(Stdio::inherit()),
        )?;
        wait_for(
            "tauri-driver to listen",
            Duration::from_secs(10),
            || async { TcpStream::connect((Ipv4Addr::LOCALHOST, port)).ok() },
        )
        .await?;
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "tauri:options".into(),
            serde_json::json!({ "application": binary }),
        );
        capabilities.insert("browserName".into(), "wry".into());
        let client = ClientBuilder::native()
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await?;
        let app = Self {
            client,
            _driver: driver,
        };
        app.wait_for_text(css, |t| !t.is_empty()).await?;
        Ok(app)
    }

    /// The WebDriver session, for anything the helpers below do not cover.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The text of the element matching `css`, or `None` when there is none yet.
    pub async fn text(&self, css: &str) -> Option<String> {
        let element = self.client.find(Locator::Css(css)).await.ok()?;
        element.text().await.ok()
    }

    /// Wait until the element matching `css` has text for which `accept` holds; return it.
    pub async fn wait_for_text(
        &self,
        css: &str,
        accept: impl Fn(&str) -> bool,
    ) -> anyhow::Result<String> {
        let what = format!("text of {css}");
        let accept = &accept;
        wait_for(&what, UI_TIMEOUT, || async move {
            self.text(css).await.filter(|t| accept(t))
        })
        .await
    }

    /// Click the element matching `css`. A page that is redrawing (a step of the first-run
    /// guide replacing the last) may swap the element between finding and clicking it: the
    /// click is tried again on the element found anew, for up to the UI timeout.
    pub async fn click(&self, css: &str) -> anyhow::Result<()> {
        let what = format!("a click on {css}");
        wait_for(&what, UI_TIMEOUT, || async {
            let element = self.client.find(Locator::Css(css)).await.ok()?;
            element.click().await.ok()
        })
        .await
    }

    /// Replace the text of the input matching `css` with `text`, as typing would.
    pub async fn fill(&self, css: &str, text: &str) -> anyhow::Result<()> {
        let input = self.client.find(Locator::Css(css)).await?;
        input.clear().await?;
        // Clearing fires no `input` event, so the page would not notice an emptied field:
        // type something and delete it.
        let keys = if text.is_empty() {
            " \u{E003}".to_owned()
        } else {
            text.to_owned()
        };
        input.send_keys(&keys).await?;
        Ok(())
    }

    /// The current value of the form control matching `css`.
    pub async fn value(&self, css: &str) -> anyhow::Result<String> {
        let input = self.client.find(Locator::Css(css)).await?;
        Ok(input.prop("value").await?.unwrap_or_default())
    }

    /// Open one of the window's pages from the sidebar and wait for its title.
    pub async fn open_page(&self, id: &str, title: &str) -> anyhow::Result<()> {
        self.click(&format!("[data-testid=nav-{id}]")).await?;
        self.wait_for_text("[data-testid=page-title]", |t| t == title)
            .await?;
        Ok(())
    }

    /// Drive the app's window that exists now (after the old one was closed and a new one
    /// opened, the session still points at the old one).
    pub async fn follow_window(&self) -> anyhow::Result<()> {
        let handle = wait_for("the new window's webview", UI_TIMEOUT, || async {
            self.client.windows().await.ok()?.into_iter().last()
        })
        .await?;
        self.client.switch_to_window(handle).await?;
        Ok(())
    }

    /// End the WebDriver session, which quits the app.
    pub async fn close(self) -> anyhow::Result<()> {
        self.client.close().await?;
        Ok(())
    }
}

/// The app binary beside this test binary: `<target>/debug/hearth-app`, or `$HEARTH_APP_BINARY`.
pub fn app_binary() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("HEARTH_APP_BINARY") {
        return Ok(PathBuf::from(path));
    }
    let test_binary = std::env::current_exe()?;
    // <target>/debug/deps/<test> -> <target>/debug/hearth-app
    let profile_dir = test_binary
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| anyhow::anyhow!("unexpected test binary path {}", test_binary.display()))?;
    let binary = profile_dir.join("hearth-app");
    anyhow::ensure!(
        binary.exists(),
        "{} is missing: build it first with `cargo build --workspace --all-targets`",
        binary.display()
    );
    Ok(binary)
}

/// `tauri-driver` from PATH or from cargo's bin directory.
fn tauri_driver() -> anyhow::Result<PathBuf> {
    let candidates = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain(std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo/bin")));
    for dir in candidates {
        let candidate = dir.join("tauri-driver");
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    anyhow::bail!(
        "tauri-driver not found: install it with `cargo install --locked tauri-driver --version ^2`"
    )
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}
