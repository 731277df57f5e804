//! The live card of a graphics card: the node reads an AMD card's figures from sysfs (here a
//! recorded sysfs tree, through HEARTH_SYSFS) and the Overview shows each one with its unit and
//! source, the same figures as the node's own telemetry, and its power measured, not estimated.

use std::time::Duration;

use hearth_e2e::{App, Desktop, wait_for};

#[tokio::test(flavor = "multi_thread")]
async fn the_overview_shows_a_graphics_cards_figures_from_its_driver() -> anyhow::Result<()> {
    let desktop = Desktop::start().await?;
    let sysfs = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../crates/hearth-hardware/tests/fixtures/amd-with-hwmon");
    desktop.set_env("HEARTH_SYSFS", &sysfs.display().to_string());
    let app = App::launch(&desktop).await?;

    let card = app
        .wait_for_text("[data-testid=resource-gpu-0]", |t| t.contains("Load"))
        .await?;
    let node = wait_for("the app's node", Duration::from_secs(10), || async {
        hearth_instance::running_node(&desktop.app_data_dir())
    })
    .await?;
    // The node's own reading of the same card (plain HTTP on loopback, with its token).
    let telemetry = {
        use std::io::{Read, Write};
        let host = node.url.trim_start_matches("http://").trim_end_matches('/');
        let mut stream = std::net::TcpStream::connect(host)?;
        write!(
            stream,
            "GET /api/overview HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
            node.token
        )?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer)?;
        let body = answer
            .split_once("\r\n\r\n")
            .map(|(_, b)| b)
            .unwrap_or_default();
        serde_json::from_str::<serde_json::Value>(body)?["telemetry"].clone()
    };
    let gpu = &telemetry["gpus"][0];
    assert_eq!(gpu["id"], "drm:card0", "{telemetry}");
    assert_eq!(gpu["source"], "Linux graphics driver (sysfs)");
    assert_eq!(gpu["energy_estimated"], false, "the card reports its power");
    // Each figure the node read is the one the card shows, with its unit.
    let compact: String = card.chars().filter(|c| !c.is_whitespace()).collect();
    for (figure, label, unit) in [
        (&gpu["utilisation_percent"], "Load", "%"),
        (&gpu["temperature_c"], "Temperature", "°C"),
        (&gpu["power_w"], "Power", "W"),
        (&gpu["fan_percent"], "Fan", "%"),
    ] {
        let value = figure.as_f64().unwrap_or(f64::NAN);
        let shown = format!("{label}{}{unit}", value.round());
        assert!(
            compact.contains(&shown),
            "{shown:?} in {card:?} ({telemetry})"
        );
    }
    assert_eq!(
        [
            &gpu["utilisation_percent"],
            &gpu["temperature_c"],
            &gpu["power_w"],
            &gpu["fan_percent"]
        ]
        .map(|v| v.as_f64()),
        [Some(37.0), Some(61.0), Some(143.0), Some(50.0)],
        "the recorded card's figures"
    );
    assert!(
        card.contains("Video memory 1.0 GiB of 16.0 GiB used"),
        "{card}"
    );
    assert!(
        card.contains("figures from the Linux graphics driver (sysfs)"),
        "{card}"
    );
    assert!(
        app.text("[data-testid=resource-no-gpu]").await.is_none(),
        "no 'no graphics card' card beside a card"
    );
    let shots =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../test-output/screenshots");
    // The card's sparkline has a reading or two to draw by now.
    app.wait_for_text("[data-testid=resource-gpu-0]", |t| {
        t.contains("figures from")
    })
    .await?;
    desktop.screenshot(&shots.join("overview-gpu-card.png"))?;
    app.close().await
}
