//! The node's settings file, `config.toml` in the data directory: which pool, which backend,
//! how many jobs at once, the headless server's port. Every field has a default, so a missing
//! file is a working configuration; an unreadable one is an error that names the field.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use hearth_inference::BackendPreference;
use serde::{Deserialize, Serialize};

/// What went wrong with the settings.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {reason}")]
    File { path: String, reason: String },
    #[error("{key}: {reason}")]
    Invalid { key: String, reason: String },
}

/// The pool value that selects the embedded local pool.
pub const EMBEDDED_POOL: &str = "embedded";

/// The node's settings. The window's Settings page edits them too (TypeScript generated).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ts_rs::TS)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// `embedded` (the local demo pool, started in-process) or a pool's `http(s)://` URL.
    pub pool: String,
    /// `auto` (a real GPU if there is one, else the CPU), `cpu` or `wgpu`.
    pub backend: String,
    /// Jobs run at once.
    pub concurrency: usize,
    /// The embedded pool's demo customer sends a request this often (0: never).
    #[ts(type = "number")]
    pub demo_interval_ms: u64,
    /// Port of the headless server on 127.0.0.1 (0: any free port).
    pub api_port: u16,
    /// Memory loaded models may hold (GPU memory on wgpu, RAM on the CPU), in MiB; the least
    /// recently used model is unloaded to make room.
    #[ts(type = "number")]
    pub model_memory_mib: u64,
    /// Disk the models' files may take, in MiB: a model the pool sells that would not fit is
    /// not fetched.
    #[ts(type = "number")]
    #[serde(default = "default_model_disk_mib")]
    pub model_disk_mib: u64,
    /// Pause by itself while a game runs.
    pub detect_games: bool,
    /// Pause by itself while a fullscreen window is in front.
    pub detect_fullscreen: bool,
    /// Pause by itself while a laptop runs on its battery.
    pub pause_on_battery: bool,
    /// Work only while the owner is away (no keyboard or mouse input for `away_after_s`).
    pub idle_only: bool,
    /// Seconds without input after which the owner counts as away.
    #[ts(type = "number")]
    pub away_after_s: u64,
    /// While the owner is at the computer (input within `away_after_s`) and not gaming, work
    /// only this share of the time, in percent, so the desktop stays smooth (100: no throttle).
    pub throttle_when_active_percent: u8,
    /// Pause while another program keeps the GPU busy (DRM fdinfo; NVML compute processes).
    pub detect_gpu_processes: bool,
    /// Pause when other programs leave less GPU memory free than this (MiB) beyond what
    /// Hearth's own models hold; resume once twice this is free (0: no VRAM limit).
    #[ts(type = "number")]
    pub vram_min_free_mib: u64,
    /// The owner's own games: program names, or folders (with a `/`).
    pub games: Vec<String>,
    /// Entries of the built-in game list (a launcher's folder or a program name) the owner
    /// turned off.
    pub games_off: Vec<String>,
    /// After the last game ends, wait this long before working again.
    #[ts(type = "number")]
    pub game_cooldown_s: u64,
    /// After this long paused, loaded models are unloaded to give their memory back.
    #[ts(type = "number")]
    pub free_memory_after_s: u64,
    /// How often the watcher looks for games, in ms.
    #[ts(type = "number")]
    pub watch_interval_ms: u64,
    /// Pause at or above this GPU temperature (°C)…
    pub temperature_stop_c: f32,
    /// …and resume at or below this one.
    pub temperature_resume_c: f32,
    /// When Hearth may work, e.g. `["mon-fri 18:00-08:00", "weekends 00:00-24:00"]`
    /// (local time); empty: any time. See [`crate::pause::schedule`].
    pub schedule: Vec<String>,
    /// Where the pool pays out (its own format, e.g. a wallet address); empty: not set.
    pub payout_address: String,
    /// Electricity price per kWh in `currency`, for earnings net of electricity.
    pub electricity_price_per_kwh: f64,
    /// The processor's rated power (TDP) in watts: where no sensor measures its power, its
    /// energy is estimated as this × its use.
    pub cpu_watts: u32,
    /// Three-letter currency code, e.g. `EUR`.
    pub currency: String,
    /// What one credit pays out in `currency`.
    pub credit_value: f64,
    /// The window's first-run guide has been completed (it shows until then).
    pub first_run_done: bool,
    /// Start the desktop app when the owner logs in.
    pub start_at_login: bool,
    /// Tell the owner (a desktop notification) when Hearth pauses or resumes by itself.
    pub notify_on_auto_pause: bool,
    /// A PEM file of certificates to trust for an HTTPS pool beside the system's roots (a
    /// private pool with its own CA).
    #[ts(optional)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pool_ca_file: Option<String>,
    /// The pool's public key (base64) as its operator publishes it. Without it the key the
    /// pool first answers with is pinned, and a pool answering with another is refused.
    #[ts(optional)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pool_key: Option<String>,
}

/// 20 GiB: the models Hearth serves today take well under 1 GiB.
fn default_model_disk_mib() -> u64 {
    20 << 10
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            pool: EMBEDDED_POOL.into(),
            backend: "auto".into(),
            concurrency: 1,
            demo_interval_ms: 1500,
            api_port: 7420,
            model_memory_mib: 2048,
            model_disk_mib: default_model_disk_mib(),
            detect_games: true,
            detect_fullscreen: true,
            pause_on_battery: true,
            idle_only: false,
            away_after_s: 300,
            throttle_when_active_percent: 100,
            detect_gpu_processes: true,
            vram_min_free_mib: 512,
            games: Vec::new(),
            games_off: Vec::new(),
            game_cooldown_s: 30,
            free_memory_after_s: 60,
            watch_interval_ms: 250,
            temperature_stop_c: 83.0,
            temperature_resume_c: 70.0,
            schedule: Vec::new(),
            payout_address: String::new(),
            electricity_price_per_kwh: 0.30,
            cpu_watts: 65,
            currency: "EUR".into(),
            credit_value: 1.0,
            first_run_done: false,
            start_at_login: false,
            notify_on_auto_pause: true,
            pool_ca_file: None,
            pool_key: None,
        }
    }
}

impl NodeConfig {
    /// `config.toml` in `data_dir`.
    pub fn path(data_dir: &Path) -> PathBuf {
        data_dir.join("config.toml")
    }

    /// Read the settings from `data_dir` (defaults when there is no file).
    pub fn load(data_dir: &Path) -> Result<Self, ConfigError> {
        let path = Self::path(data_dir);
        let bad = |reason: String| ConfigError::File {
            path: path.display().to_string(),
            reason,
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(bad(e.to_string())),
        };
        let config: Self = toml::from_str(&text).map_err(|e| bad(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Write the settings to `data_dir` (atomically: a crash leaves the old or the new file).
    pub fn save(&self, data_dir: &Path) -> Result<(), ConfigError> {
        self.validate()?;
        let path = Self::path(data_dir);
        let bad = |reason: String| ConfigError::File {
            path: path.display().to_string(),
            reason,
        };
        let text = toml::to_string_pretty(self).map_err(|e| bad(e.to_string()))?;
        std::fs::create_dir_all(data_dir).map_err(|e| bad(hearth_instance::explain_io(&e)))?;
        hearth_instance::write_atomic(&path, text.as_bytes())
            .map_err(|e| bad(hearth_instance::explain_io(&e)))
    }

    /// Check every field, with a message a user can act on.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, reason: String| ConfigError::Invalid {
            key: key.into(),
            reason,
        };
        if self.pool != EMBEDDED_POOL
            && !(self.pool.starts_with("http://") || self.pool.starts_with("https://"))
        {
            return Err(invalid(
                "pool",
                format!(
                    "{:?} is neither \"embedded\" nor an http(s):// URL",
                    self.pool
                ),
            ));
        }
        if let Some(file) = &self.pool_ca_file {
            let pem = std::fs::read(file)
                .map_err(|e| invalid("pool_ca_file", format!("cannot read {file}: {e}")))?;
            let certificates = reqwest::Certificate::from_pem_bundle(&pem).unwrap_or_default();
            if certificates.is_empty() {
                return Err(invalid(
                    "pool_ca_file",
                    format!("{file} holds no PEM certificate"),
                ));
            }
        }
        if let Some(key) = &self.pool_key
            && !hearth_protocol::PublicKey(key.clone()).is_valid()
        {
            return Err(invalid(
                "pool_key",
                format!("{key:?} is not an ed25519 public key in base64"),
            ));
        }
        BackendPreference::from_str(&self.backend).map_err(|_| {
            invalid(
                "backend",
                format!("{:?}: use auto, cpu or wgpu", self.backend),
            )
        })?;
        if !(1..=8).contains(&self.concurrency) {
            return Err(invalid(
                "concurrency",
                format!("{} is outside 1..=8", self.concurrency),
            ));
        }
        if self.model_memory_mib < 256 {
            return Err(invalid(
                "model_memory_mib",
                format!(
                    "{} MiB is too little for any model (256 at least)",
                    self.model_memory_mib
                ),
            ));
        }
        if self.model_disk_mib < 512 {
            return Err(invalid(
                "model_disk_mib",
                format!(
                    "{} MiB is too little for the models (512 at least)",
                    self.model_disk_mib
                ),
            ));
        }
        if !(50..=5000).contains(&self.watch_interval_ms) {
            return Err(invalid(
                "watch_interval_ms",
                format!("{} is outside 50..=5000", self.watch_interval_ms),
            ));
        }
        if !(40.0..=110.0).contains(&self.temperature_stop_c)
            || !(30.0..self.temperature_stop_c).contains(&self.temperature_resume_c)
        {
            return Err(invalid(
                "temperature_stop_c",
                format!(
                    "stop at {} °C, resume at {} °C: stop must be 40..=110 and resume below it",
                    self.temperature_stop_c, self.temperature_resume_c
                ),
            ));
        }
        crate::pause::schedule::Schedule::parse(&self.schedule)
            .map_err(|e| invalid("schedule", e.to_string()))?;
        if !(5..=86_400).contains(&self.away_after_s) {
            return Err(invalid(
                "away_after_s",
                format!("{} is outside 5..=86400 seconds", self.away_after_s),
            ));
        }
        if !(10..=100).contains(&self.throttle_when_active_percent) {
            return Err(invalid(
                "throttle_when_active_percent",
                format!(
                    "{} is outside 10..=100 (100: no throttle)",
                    self.throttle_when_active_percent
                ),
            ));
        }
        if self.vram_min_free_mib > 65_536 {
            return Err(invalid(
                "vram_min_free_mib",
                format!("{} MiB is more than any GPU has", self.vram_min_free_mib),
            ));
        }
        if !(0.0..=10.0).contains(&self.electricity_price_per_kwh) {
            return Err(invalid(
                "electricity_price_per_kwh",
                format!(
                    "{} per kWh is outside 0 to 10",
                    self.electricity_price_per_kwh
                ),
            ));
        }
        if !(5..=1000).contains(&self.cpu_watts) {
            return Err(invalid(
                "cpu_watts",
                format!("{} W is outside 5 to 1000", self.cpu_watts),
            ));
        }
        if self.currency.len() != 3 || !self.currency.chars().all(|c| c.is_ascii_uppercase()) {
            return Err(invalid(
                "currency",
                format!(
                    "{:?}: use a three-letter code such as EUR or USD",
                    self.currency
                ),
            ));
        }
        if !(0.0..=1e6).contains(&self.credit_value) {
            return Err(invalid(
                "credit_value",
                format!("{} is outside 0 to 1000000", self.credit_value),
            ));
        }
        if self.payout_address.len() > 200
            || self
                .payout_address
                .chars()
                .any(|c| c.is_control() || c.is_whitespace())
        {
            return Err(invalid(
                "payout_address",
                "use at most 200 characters, without spaces".into(),
            ));
        }
        if self.free_memory_after_s > 86_400 {
            return Err(invalid(
                "free_memory_after_s",
                format!("{} s is more than a day", self.free_memory_after_s),
            ));
        }
        if self.game_cooldown_s > 3600 {
            return Err(invalid(
                "game_cooldown_s",
                format!("{} s is more than an hour", self.game_cooldown_s),
            ));
        }
        Ok(())
    }

    /// Set one field from text, as `hearth-node config set KEY VALUE` does.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), ConfigError> {
        let invalid = |reason: String| ConfigError::Invalid {
            key: key.into(),
            reason,
        };
        let number = |value: &str| {
            value
                .parse::<u64>()
                .map_err(|e| invalid(format!("{value:?}: {e}")))
        };
        let mut next = self.clone();
        match key {
            "pool" => next.pool = value.trim_end_matches('/').to_owned(),
            "backend" => next.backend = value.to_ascii_lowercase(),
            "concurrency" => next.concurrency = number(value)? as usize,
            "demo_interval_ms" => next.demo_interval_ms = number(value)?,
            "model_memory_mib" => next.model_memory_mib = number(value)?,
            "model_disk_mib" => next.model_disk_mib = number(value)?,
            "detect_games" => {
                next.detect_games = value
                    .parse()
                    .map_err(|_| invalid(format!("{value:?}: use true or false")))?;
            }
            "detect_fullscreen" => {
                next.detect_fullscreen = value
                    .parse()
                    .map_err(|_| invalid(format!("{value:?}: use true or false")))?;
            }
            "pause_on_battery" => {
                next.pause_on_battery = value
                    .parse()
                    .map_err(|_| invalid(format!("{value:?}: use true or false")))?;
            }
            "idle_only" => {
                next.idle_only = value
                    .parse()
                    .map_err(|_| invalid(format!("{value:?}: use true or false")))?;
            }
            "away_after_s" => next.away_after_s = number(value)?,
            "throttle_when_active_percent" => {
                next.throttle_when_active_percent = u8::try_from(number(value)?)
                    .map_err(|_| invalid(format!("{value} is not a percentage")))?;
            }
            "detect_gpu_processes" => {
                next.detect_gpu_processes = value
                    .parse()
                    .map_err(|_| invalid(format!("{value:?}: use true or false")))?;
            }
            "vram_min_free_mib" => next.vram_min_free_mib = number(value)?,
            "games" => {
                next.games = value
                    .split(',')
                    .map(str::trim)
                    .filter(|g| !g.is_empty())
                    .map(str::to_owned)
                    .collect();
            }
            "games_off" => {
                next.games_off = value
                    .split(',')
                    .map(str::trim)
                    .filter(|g| !g.is_empty())
                    .map(str::to_owned)
                    .collect();
            }
            "game_cooldown_s" => next.game_cooldown_s = number(value)?,
            "free_memory_after_s" => next.free_memory_after_s = number(value)?,
            "payout_address" => next.payout_address = value.trim().to_owned(),
            "currency" => next.currency = value.trim().to_ascii_uppercase(),
            "electricity_price_per_kwh" | "credit_value" => {
                let amount: f64 = value
                    .parse()
                    .map_err(|_| invalid(format!("{value:?} is not a number")))?;
                if key == "credit_value" {
                    next.credit_value = amount;
                } else {
                    next.electricity_price_per_kwh = amount;
                }
            }
            "schedule" => {
                next.schedule = value
                    .split(';')
                    .map(str::trim)
                    .filter(|w| !w.is_empty())
                    .map(str::to_owned)
                    .collect();
            }
            "watch_interval_ms" => next.watch_interval_ms = number(value)?,
            "cpu_watts" => {
                next.cpu_watts = u32::try_from(number(value)?)
                    .map_err(|_| invalid(format!("{value} W is not a processor's power")))?;
            }
            "temperature_stop_c" | "temperature_resume_c" => {
                let celsius: f32 = value
                    .parse()
                    .map_err(|_| invalid(format!("{value:?} is not a temperature")))?;
                if key == "temperature_stop_c" {
                    next.temperature_stop_c = celsius;
                } else {
                    next.temperature_resume_c = celsius;
                }
            }
            "api_port" => {
                next.api_port = u16::try_from(number(value)?)
                    .map_err(|_| invalid(format!("{value} is not a port")))?;
            }
            other => {
                return Err(invalid(format!(
                    "unknown setting {other:?} (pool, backend, concurrency, demo_interval_ms, api_port, \
                     model_memory_mib, model_disk_mib, detect_games, detect_fullscreen, pause_on_battery, detect_gpu_processes, idle_only, away_after_s, \
                     throttle_when_active_percent, vram_min_free_mib, games, games_off, game_cooldown_s, free_memory_after_s, watch_interval_ms, \
                     payout_address, electricity_price_per_kwh, cpu_watts, currency, credit_value, temperature_stop_c, temperature_resume_c, schedule)"
                )));
            }
        }
        next.validate()?;
        *self = next;
        Ok(())
    }

    /// The backend preference (validated on load).
    pub fn backend_preference(&self) -> BackendPreference {
        BackendPreference::from_str(&self.backend).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_file_means_defaults_and_saved_settings_come_back() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(NodeConfig::load(dir.path()).unwrap(), NodeConfig::default());
        let mut config = NodeConfig::default();
        config.set("pool", "http://10.0.0.2:8040/").unwrap();
        config.set("concurrency", "2").unwrap();
        config.set("games", "MyGame, /srv/games/").unwrap();
        config
            .set("schedule", "mon-fri 18:00-08:00; weekends 00:00-24:00")
            .unwrap();
        config.save(dir.path()).unwrap();
        let back = NodeConfig::load(dir.path()).unwrap();
        assert_eq!(back.pool, "http://10.0.0.2:8040");
        assert_eq!(back.concurrency, 2);
        assert_eq!(back.games, ["MyGame", "/srv/games/"]);
        assert_eq!(
            back.schedule,
            ["mon-fri 18:00-08:00", "weekends 00:00-24:00"]
        );
    }

    #[test]
    fn bad_values_are_refused_with_the_key_and_change_nothing() {
        let mut config = NodeConfig::default();
        for (key, value, expect) in [
            ("pool", "ftp://x", "pool"),
            ("backend", "tpu", "backend"),
            ("concurrency", "0", "concurrency"),
            ("concurrency", "many", "concurrency"),
            ("api_port", "70000", "api_port"),
            ("model_memory_mib", "10", "model_memory_mib"),
            ("model_disk_mib", "100", "model_disk_mib"),
            ("detect_games", "maybe", "detect_games"),
            (
                "throttle_when_active_percent",
                "5",
                "throttle_when_active_percent",
            ),
            (
                "throttle_when_active_percent",
                "300",
                "throttle_when_active_percent",
            ),
            ("vram_min_free_mib", "999999", "vram_min_free_mib"),
            ("watch_interval_ms", "1", "watch_interval_ms"),
            ("temperature_resume_c", "90", "temperature"),
            ("temperature_stop_c", "hot", "temperature_stop_c"),
            ("schedule", "mon-fri 18:00-25:00", "schedule"),
            ("colour", "red", "unknown setting"),
        ] {
            let error = config.set(key, value).unwrap_err().to_string();
            assert!(error.contains(expect), "{key}={value}: {error}");
        }
        assert_eq!(config, NodeConfig::default());
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(NodeConfig::path(dir.path()), "concurrency = \"two\"\n").unwrap();
        let error = NodeConfig::load(dir.path()).unwrap_err().to_string();
        assert!(error.contains("config.toml"), "{error}");
        std::fs::write(NodeConfig::path(dir.path()), "volume = 11\n").unwrap();
        assert!(NodeConfig::load(dir.path()).is_err());
    }
}
