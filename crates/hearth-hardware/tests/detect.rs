//! Detection against fixture sysfs trees, a stand-in for NVML, and the real wgpu adapters.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers fail the test by panicking

use hearth_hardware::amd::read_cards;
use hearth_hardware::{
    AdapterRecord, GpuKind, SourceStatus, Sources, Vendor, detect, merge_adapters, render_table,
    wgpu_adapters,
};

mod support;

use support::{NoDriver, OneRtx4090, fixture};

fn adapter(name: &str, vendor_id: u32, device_id: u32, kind: GpuKind, api: &str) -> AdapterRecord {
    AdapterRecord {
        name: name.into(),
        vendor_id,
        device_id,
        kind,
        api: api.into(),
        driver: "driver".into(),
        driver_info: String::new(),
    }
}

#[test]
fn amd_card_with_hwmon_reads_every_sensor() {
    let cards = read_cards(&fixture("amd-with-hwmon"));
    assert_eq!(cards.len(), 1, "connectors like card0-DP-1 are not cards");
    let card = &cards[0];
    assert_eq!((card.vendor_id, card.device_id), (0x1002, 0x747e));
    assert_eq!(card.vram_total_bytes, Some(17_163_091_968));
    assert_eq!(card.vram_used_bytes, Some(1_073_741_824));
    assert_eq!(card.busy_percent, Some(37));
    assert_eq!(card.temperature_c, Some(61.0));
    assert_eq!(card.power_w, Some(143.0));
    assert_eq!(card.power_cap_w, Some(220.0));
    assert_eq!(card.core_clock_mhz, Some(1800));
    assert_eq!(card.memory_clock_mhz, Some(1000));
}

#[test]
fn two_cards_are_listed_in_order() {
    let cards = read_cards(&fixture("two-cards"));
    let names: Vec<_> = cards
        .iter()
        .map(|c| (c.name.as_str(), c.vendor_id))
        .collect();
    assert_eq!(names, [("card0", 0x8086), ("card1", 0x1002)]);
    assert_eq!(
        cards[0].vram_total_bytes, None,
        "Intel publishes no VRAM file"
    );
    assert_eq!(cards[1].busy_percent, Some(0));
}

#[test]
fn missing_and_malformed_files_leave_fields_empty() {
    let cards = read_cards(&fixture("missing-files"));
    assert_eq!(cards.len(), 1, "a card without a vendor file is skipped");
    assert_eq!(cards[0].vram_total_bytes, None, "'garbage' is not a size");
    assert_eq!(cards[0].device_id, 0);
    assert_eq!(cards[0].temperature_c, None);
    assert!(read_cards(&fixture("does-not-exist")).is_empty());
}

#[test]
fn amd_gpu_gets_its_vram_from_sysfs() {
    let report = detect(&Sources {
        sysfs: fixture("amd-with-hwmon"),
        nvidia: &NoDriver,
        adapters: Some(vec![
            adapter(
                "AMD Radeon RX 7800 XT",
                0x1002,
                0x747e,
                GpuKind::Discrete,
                "Vulkan",
            ),
            adapter(
                "AMD Radeon RX 7800 XT",
                0x1002,
                0x747e,
                GpuKind::Discrete,
                "Gl",
            ),
        ]),
    });
    assert_eq!(report.gpus.len(), 1);
    assert_eq!(report.gpus[0].vram_total_bytes, Some(17_163_091_968));
    assert_eq!(report.gpus[0].sysfs_card.as_deref(), Some("card0"));
    assert!(
        matches!(report.nvml, SourceStatus::NotAvailable { ref reason } if reason.contains("libnvidia-ml"))
    );
}

#[test]
fn nvidia_gpu_gets_vram_and_driver_from_nvml() {
    let report = detect(&Sources {
        sysfs: fixture("does-not-exist"),
        nvidia: &OneRtx4090,
        adapters: Some(vec![adapter(
            "NVIDIA GeForce RTX 4090",
            0x10de,
            0x2684,
            GpuKind::Discrete,
            "Vulkan",
        )]),
    });
    assert_eq!(report.nvml, SourceStatus::Available);
    let gpu = &report.gpus[0];
    assert_eq!(gpu.vendor, Vendor::Nvidia);
    assert_eq!(gpu.vram_total_bytes, Some(25_757_220_864));
    assert_eq!(gpu.driver_version.as_deref(), Some("550.54.14"));
    let table = render_table(&report);
    assert!(table.contains("NVIDIA GeForce RTX 4090"), "{table}");
    assert!(table.contains("24.0 GiB"), "{table}");
}

#[test]
fn a_gpu_only_nvml_sees_is_still_listed() {
    let report = detect(&Sources {
        sysfs: fixture("does-not-exist"),
        nvidia: &OneRtx4090,
        adapters: Some(vec![]),
    });
    assert_eq!(report.gpus.len(), 1);
    assert!(report.gpus[0].apis.is_empty());
}

#[test]
fn this_machine_shows_its_vulkan_adapter_cpu_and_memory() {
    let adapters = wgpu_adapters();
    assert!(
        adapters.iter().any(|a| a.api == "Vulkan"),
        "expected a Vulkan adapter (lavapipe on machines without a GPU): {adapters:?}"
    );
    let report = detect(&Sources {
        sysfs: "/sys".into(),
        nvidia: &NoDriver,
        adapters: Some(adapters),
    });
    assert!(
        report
            .gpus
            .iter()
            .any(|g| g.apis.contains(&"Vulkan".to_owned()))
    );
    assert!(report.cpu.logical_cores >= 1);
    assert!(!report.cpu.model.is_empty());
    let total = report.memory.total_bytes.unwrap();
    assert!(total > 512 * 1024 * 1024, "{total}");
    let json = serde_json::to_value(&report).unwrap();
    assert!(json["gpus"].is_array() && json["cpu"]["logical_cores"].is_u64());
}

#[test]
fn one_gpu_seen_through_vulkan_and_gl_is_one_entry() {
    let gpus = merge_adapters(&[
        adapter(
            "AMD Radeon RX 7800 XT (RADV NAVI32)",
            0x1002,
            0x747e,
            GpuKind::Discrete,
            "Gl",
        ),
        adapter(
            "AMD Radeon RX 7800 XT (RADV NAVI32)",
            0x1002,
            0x747e,
            GpuKind::Discrete,
            "Vulkan",
        ),
        adapter(
            "llvmpipe (LLVM 15.0.6, 256 bits)",
            0x10005,
            0,
            GpuKind::Software,
            "Vulkan",
        ),
        adapter(
            "llvmpipe (LLVM 15.0.6, 256 bits)",
            0,
            0,
            GpuKind::Software,
            "Gl",
        ),
    ]);
    assert_eq!(gpus.len(), 2, "{gpus:#?}");
    assert_eq!(gpus[0].vendor, Vendor::Amd);
    assert_eq!(gpus[0].apis, ["Vulkan", "Gl"]);
    assert!(gpus[0].is_hardware());
    assert_eq!(gpus[1].kind, GpuKind::Software);
    assert_eq!(gpus[1].apis, ["Vulkan", "Gl"]);
}

#[test]
fn different_devices_stay_separate_and_sort_by_name() {
    let gpus = merge_adapters(&[
        adapter(
            "NVIDIA GeForce RTX 4090",
            0x10de,
            0x2684,
            GpuKind::Discrete,
            "Vulkan",
        ),
        adapter(
            "AMD Radeon Graphics",
            0x1002,
            0x164e,
            GpuKind::Integrated,
            "Vulkan",
        ),
    ]);
    assert_eq!(gpus.len(), 2);
    assert_eq!(gpus[0].name, "AMD Radeon Graphics");
    assert_eq!(gpus[1].vendor, Vendor::Nvidia);
}
