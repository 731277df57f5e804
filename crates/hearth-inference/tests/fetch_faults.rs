//! The model store's writes under storage faults: `hearth-models fetch` extracts a model's
//! weights with the fault library preloaded (`hearth-faults`), which numbers every write in the store and fails one (and all after it)
//! with ENOSPC or EIO, or kills the process there. After each: no file under the weights' name
//! that is not whole, nothing unfinished left behind (unless killed), and the next fetch,
//! with the fault gone, makes the model whole and verified.
//!
//! The extraction writes the file in some thousands of pieces: every creation, sync and
//! rename is failed, and the data writes at the start, the end and evenly between.

#![cfg(target_os = "linux")] // the library is preloaded the way glibc's loader does it
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers fail the test by panicking

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use hearth_faults::{Injection, Mode, writes_logged};
use hearth_inference::ModelStore;

const MODEL: &str = "efficientnet-lite0";

/// A store holding the model's manifest and labels, its weights not fetched yet.
fn bare_store(root: &Path) -> PathBuf {
    let source = ModelStore::from_env().root().join(MODEL);
    let store = root.join("store");
    std::fs::create_dir_all(store.join(MODEL)).unwrap();
    for entry in std::fs::read_dir(&source).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::copy(&path, store.join(MODEL).join(path.file_name().unwrap())).unwrap();
        }
    }
    store
}

fn fetch(store: &Path, env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hearth-models"))
        .arg("fetch")
        .env("HEARTH_MODELS", store)
        .env("RUST_BACKTRACE", "0")
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

/// Files in the model's weights folder.
fn weights(store: &Path) -> Vec<String> {
    std::fs::read_dir(store.join(MODEL).join("weights"))
        .map(|entries| {
            entries
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn every_kind_of_model_store_write_fails_and_the_next_fetch_makes_it_whole() {
    let root = tempfile::tempdir().unwrap();

    // Counting run.
    let store = bare_store(&root.path().join("count"));
    let log = root.path().join("count.log");
    let counted = fetch(&store, &Injection::watching(&store).logging_to(&log).env());
    assert!(counted.status.success(), "{counted:?}");
    let writes = writes_logged(&log);
    let total = writes.len();
    // Every creation, sync and rename; the data writes at both ends and evenly between.
    let mut points: Vec<usize> = writes
        .iter()
        .enumerate()
        .filter(|(_, line)| line.split(' ').nth(1).is_none_or(|op| op != "write"))
        .map(|(i, _)| i + 1)
        .collect();
    points.extend([
        1,
        2,
        3,
        total / 4,
        total / 2,
        3 * total / 4,
        total - 2,
        total - 1,
        total,
    ]);
    points.sort_unstable();
    points.dedup();
    eprintln!(
        "fetching {MODEL} makes {total} numbered writes; failing {} of them in each mode: {points:?}",
        points.len()
    );
    assert!(total > 10, "{writes:?}");

    let target = ModelStore::from_env().manifest(MODEL).unwrap().files[0]
        .name
        .clone();
    for mode in [Mode::DiskFull, Mode::IoError, Mode::Kill] {
        for &at in &points {
            let store = bare_store(&root.path().join(format!("{}-{at}", mode.name())));
            let injection = Injection::watching(&store).failing_from(at, mode);
            let failed = fetch(&store, &injection.env());
            assert!(
                !failed.status.success(),
                "{mode:?} at write {at}: the fetch failed"
            );
            let left = weights(&store);
            if mode == Mode::Kill {
                // Killed: at most its unfinished file, never one under the weights' name.
                assert!(
                    left.iter().all(|name| name.ends_with(".partial")),
                    "{mode:?} at write {at}: {left:?}"
                );
            } else {
                let said = String::from_utf8_lossy(&failed.stderr);
                let expected = if mode == Mode::DiskFull {
                    "No space left on device"
                } else {
                    "Input/output error"
                };
                assert!(said.contains(expected), "{mode:?} at write {at}: {said}");
                assert!(left.is_empty(), "{mode:?} at write {at}: left {left:?}");
            }
            // The fault gone, the next fetch makes the model whole and verified.
            let again = fetch(&store, &[]);
            assert!(again.status.success(), "{mode:?} at write {at}: {again:?}");
            assert_eq!(
                weights(&store),
                std::slice::from_ref(&target),
                "{mode:?} at write {at}"
            );
            ModelStore::new(&store).verify(MODEL).unwrap();
        }
    }
}
