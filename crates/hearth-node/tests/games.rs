//! Game detection against real processes: a copy of `sleep` renamed like a Windows game is
//! found while it runs and gone when it exits; a fixture /proc covers the folder rules.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers fail the test by panicking

use std::path::Path;
use std::process::Command;

use hearth_node::pause::games::GameList;

#[test]
fn a_running_game_process_is_found_and_its_exit_noticed() {
    let dir = tempfile::tempdir().unwrap();
    let game = dir.path().join("Cyberpunk2077.exe");
    std::fs::copy("/bin/sleep", &game).unwrap();
    let mut child = Command::new(&game).arg("30").spawn().unwrap();
    let pid = child.id();
    let list = GameList::builtin();
    // Right after spawn the child may not have exec'd yet (it still shows the test's command
    // line): look again for up to 2 s, as the watcher's next poll would.
    let started = std::time::Instant::now();
    let hit = loop {
        let found = list.scan(Path::new("/proc"), std::process::id());
        if let Some(hit) = found.into_iter().find(|g| g.pid == pid) {
            break hit;
        }
        assert!(started.elapsed().as_secs() < 2, "the game was not found");
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    assert_eq!(hit.name, "Cyberpunk2077.exe");
    assert!(hit.rule.contains("Windows"), "{}", hit.rule);
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        list.scan(Path::new("/proc"), std::process::id())
            .iter()
            .all(|g| g.pid != pid)
    );
}

#[test]
fn folder_rules_and_user_entries_work_on_a_fixture_proc() {
    let root = tempfile::tempdir().unwrap();
    let proc_entry = |pid: u32, argv0: &str, exe: Option<&str>| {
        let dir = root.path().join(pid.to_string());
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("cmdline"), format!("{argv0}\0--flag\0")).unwrap();
        if let Some(exe) = exe {
            std::os::unix::fs::symlink(exe, dir.join("exe")).unwrap();
        }
    };
    proc_entry(
        10,
        "./eldenring",
        Some("/home/p/.steam/steam/steamapps/common/ELDEN RING/eldenring"),
    );
    proc_entry(11, "/usr/bin/bash", Some("/usr/bin/bash"));
    proc_entry(12, "C:\\Program Files\\Steam\\steam.exe", None);
    proc_entry(13, "/opt/indie/MyGame", Some("/opt/indie/MyGame"));
    std::fs::create_dir_all(root.path().join("14")).unwrap(); // a kernel thread: no cmdline
    let list = GameList::builtin().with_user_entries(&["mygame".into()]);
    let found: Vec<(u32, String)> = list
        .scan(root.path(), 0)
        .into_iter()
        .map(|g| (g.pid, g.name))
        .collect();
    assert_eq!(
        found,
        [(10, "eldenring".to_owned()), (13, "MyGame".to_owned())]
    );
}
