//! GPUs in Linux sysfs (`/sys/class/drm/cardN/device`). AMD's amdgpu driver publishes VRAM,
//! utilisation and, through hwmon, temperature and power; other drivers publish less. Every
//! file is optional: a missing or unreadable one leaves its field empty.

use std::path::Path;

use serde::Serialize;

/// AMD's PCI vendor id.
pub const AMD_VENDOR: u32 = 0x1002;

/// One DRM card.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DrmCard {
    /// `card0`, `card1`, ...
    pub name: String,
    pub vendor_id: u32,
    pub device_id: u32,
    pub vram_total_bytes: Option<u64>,
    pub vram_used_bytes: Option<u64>,
    /// `gpu_busy_percent`, 0..=100.
    pub busy_percent: Option<u8>,
    /// Edge temperature in °C (hwmon `temp1_input`, millidegrees).
    pub temperature_c: Option<f32>,
    /// Average board power in W (hwmon `power1_average`, microwatts).
    pub power_w: Option<f32>,
    /// Board power limit in W (hwmon `power1_cap`), for energy estimates.
    pub power_cap_w: Option<f32>,
    /// Fan duty in percent (hwmon `pwm1`, 0..=255).
    pub fan_percent: Option<f32>,
    /// Current shader clock (`pp_dpm_sclk`, the line marked `*`).
    pub core_clock_mhz: Option<u32>,
    /// Current memory clock (`pp_dpm_mclk`).
    pub memory_clock_mhz: Option<u32>,
}

/// Every `cardN` under `<sysfs>/class/drm`, by number.
pub fn read_cards(sysfs: &Path) -> Vec<DrmCard> {
    let drm = sysfs.join("class/drm");
    let Ok(entries) = std::fs::read_dir(&drm) else {
        return Vec::new();
    };
    let mut cards: Vec<(u32, DrmCard)> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let number: u32 = name.strip_prefix("card")?.parse().ok()?;
            read_card(&drm.join(&name), name).map(|card| (number, card))
        })
        .collect();
    cards.sort_by_key(|(number, _)| *number);
    cards.into_iter().map(|(_, card)| card).collect()
}

fn read_card(card_dir: &Path, name: String) -> Option<DrmCard> {
    let device = card_dir.join("device");
    let vendor_id = read_hex(&device.join("vendor"))?;
    let device_id = read_hex(&device.join("device")).unwrap_or(0);
    let hwmon = first_hwmon(&device);
    Some(DrmCard {
        name,
        vendor_id,
        device_id,
        vram_total_bytes: read_number(&device.join("mem_info_vram_total")),
        vram_used_bytes: read_number(&device.join("mem_info_vram_used")),
        busy_percent: read_number(&device.join("gpu_busy_percent"))
            .and_then(|v| u8::try_from(v).ok()),
        temperature_c: hwmon
            .as_deref()
            .and_then(|h| read_number(&h.join("temp1_input")))
            .map(|milli| milli as f32 / 1000.0),
        power_w: hwmon
            .as_deref()
            .and_then(|h| read_number(&h.join("power1_average")))
            .map(|micro| micro as f32 / 1_000_000.0),
        power_cap_w: hwmon
            .as_deref()
            .and_then(|h| read_number(&h.join("power1_cap")))
            .map(|micro| micro as f32 / 1_000_000.0),
        fan_percent: hwmon
            .as_deref()
            .and_then(|h| read_number(&h.join("pwm1")))
            .map(|duty| (duty.min(255) as f32 / 255.0 * 100.0).round()),
        core_clock_mhz: read_current_clock(&device.join("pp_dpm_sclk")),
        memory_clock_mhz: read_current_clock(&device.join("pp_dpm_mclk")),
    })
}

/// The active level of a `pp_dpm_*` table: lines like `1: 1800Mhz *`.
fn read_current_clock(path: &Path) -> Option<u32> {
    let text = std::fs::read_to_string(path).ok()?;
    let line = text.lines().find(|l| l.trim_end().ends_with('*'))?;
    let (_, rest) = line.split_once(':')?;
    let digits: String = rest
        .trim()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

fn first_hwmon(device: &Path) -> Option<std::path::PathBuf> {
    let mut dirs: Vec<_> = std::fs::read_dir(device.join("hwmon"))
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    dirs.sort();
    dirs.into_iter().next()
}

fn read_trimmed(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_owned())
}

pub(crate) fn read_number(path: &Path) -> Option<u64> {
    read_trimmed(path)?.parse().ok()
}

fn read_hex(path: &Path) -> Option<u32> {
    let text = read_trimmed(path)?;
    u32::from_str_radix(text.trim_start_matches("0x"), 16).ok()
}
