//! Start at login: the entry that runs Hearth's window program (in the tray) when the owner
//! logs in. Linux and macOS: the autostart entry (`~/.config/autostart/Hearth.desktop`, a
//! launch agent), through auto-launch. Windows: the owner's Run key, written directly.

use std::path::Path;

/// The login entry's name: the autostart file's on Linux, the Run key's value on Windows (the
/// installer writes the same one).
pub const LOGIN_ENTRY: &str = "Hearth";

/// Make the login entry start `program` with `flag`, or remove it; unchanged when it already is
/// as wanted.
#[cfg(not(windows))]
pub fn set_start_at_login(program: &Path, flag: &str, wanted: bool) -> std::io::Result<()> {
    let failed = |error: auto_launch::Error| std::io::Error::other(error.to_string());
    let launcher = auto_launch::AutoLaunchBuilder::new()
        .set_app_name(LOGIN_ENTRY)
        .set_app_path(&program.display().to_string())
        .set_args(&[flag])
        .build()
        .map_err(failed)?;
    match (wanted, launcher.is_enabled().map_err(failed)?) {
        (true, false) => launcher.enable().map_err(failed),
        (false, true) => launcher.disable().map_err(failed),
        _ => Ok(()),
    }
}

/// Windows: the owner's Run key (HKCU, no administrator needed), its value the program's path
/// in quotes (user folders have spaces) and the flag, exactly as the installer writes it.
/// (auto-launch writes for every user when it may, and without quotes.)
#[cfg(windows)]
pub fn set_start_at_login(program: &Path, flag: &str, wanted: bool) -> std::io::Result<()> {
    use windows_registry::CURRENT_USER;
    const RUN_KEY: &str = r"Software\Microsoft\Windows\CurrentVersion\Run";
    /// Task Manager's Startup tab: a value whose last 8 bytes are not zero turned it off there.
    const STARTUP_APPROVED: &str =
        r"Software\Microsoft\Windows\CurrentVersion\Explorer\StartupApproved\Run";
    const APPROVED: [u8; 12] = [2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    /// What Windows answers for a value or key that is not there.
    const ERROR_FILE_NOT_FOUND: u32 = 0x8007_0002;
    if wanted {
        let command = format!("\"{}\" {flag}", program.display());
        let run = CURRENT_USER.create(RUN_KEY)?;
        if run.get_string(LOGIN_ENTRY).ok().as_deref() != Some(command.as_str()) {
            run.set_string(LOGIN_ENTRY, &command)?;
        }
        // Turned on in Settings: on, even where the Startup tab had turned it off.
        if let Ok(approved) = CURRENT_USER.options().read().write().open(STARTUP_APPROVED)
            && approved
                .get_value(LOGIN_ENTRY)
                .is_ok_and(|value| value.iter().rev().take(8).any(|b| *b != 0))
        {
            approved.set_bytes(LOGIN_ENTRY, windows_registry::Type::Bytes, &APPROVED)?;
        }
        return Ok(());
    }
    match CURRENT_USER
        .options()
        .write()
        .open(RUN_KEY)
        .and_then(|run| run.remove_value(LOGIN_ENTRY))
    {
        Err(error) if error.code().0 as u32 != ERROR_FILE_NOT_FOUND => Err(error.into()),
        _ => Ok(()),
    }
}

/// Run as a Windows program (under Wine here). On Linux the autostart entry is checked end to
/// end, from the Settings page (`tests/app_pages.rs`).
#[cfg(all(test, windows))]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// The login entry is the Run key's value, exactly as the installer writes it, and goes
    /// when turned off.
    #[test]
    fn on_windows_start_at_login_is_the_run_key_the_installer_writes() {
        const RUN_KEY: &str = r"HKCU\Software\Microsoft\Windows\CurrentVersion\Run";
        let entry = || {
            let output = std::process::Command::new("reg")
                .args(["query", RUN_KEY, "/v", LOGIN_ENTRY])
                .output()
                .unwrap();
            String::from_utf8_lossy(&output.stdout)
                .lines()
                .find_map(|line| {
                    let rest = line.trim_start().strip_prefix(LOGIN_ENTRY)?;
                    Some(rest.trim_start().strip_prefix("REG_SZ")?.trim().to_owned())
                })
        };
        // A folder with a space in its name, as many user names give.
        let program = Path::new(r"C:\users\Jo Owner\AppData\Local\Programs\Hearth\hearth-app.exe");
        set_start_at_login(program, "--in-tray", false).unwrap();
        assert_eq!(entry(), None);
        set_start_at_login(program, "--in-tray", true).unwrap();
        let written = format!("\"{}\" --in-tray", program.display());
        assert_eq!(entry().as_deref(), Some(written.as_str()));
        set_start_at_login(program, "--in-tray", true).unwrap();
        assert_eq!(entry().as_deref(), Some(written.as_str()), "unchanged");
        set_start_at_login(program, "--in-tray", false).unwrap();
        assert_eq!(entry(), None);
    }
}
