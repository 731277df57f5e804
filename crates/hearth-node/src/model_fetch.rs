//! Models from the pool: a node that lacks a model its pool sells fetches the files from the
//! pool (`GET /node/v1/files/{sha256}`), resuming a broken download where it stopped, and uses
//! them only once their size and sha256 match the manifest.
//!
//! A file is written to `<name>.partial` beside its final name; a download that breaks off
//! leaves that file, and the next attempt (after a restart too) asks the pool for the rest with
//! a range request, after hashing what is there. A download longer than the manifest says, or
//! whose hash is wrong, is discarded (never renamed into place) and fetched again from the
//! start. Models may use at most the disk the owner allows.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hearth_inference::store::ModelFile;
use hearth_inference::{Manifest, ModelStore};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::worker::PoolClient;

/// The ending of a file being downloaded.
pub const PARTIAL_SUFFIX: &str = ".partial";

/// Longest the pool may send nothing in the middle of a file before the download is called
/// broken (and resumed later).
pub const STALL_TIMEOUT: Duration = Duration::from_secs(30);

/// How far one file's download has come.
#[derive(Clone, Debug, PartialEq)]
pub struct FileProgress {
    /// The file's name under the model's `weights/`.
    pub file: String,
    /// Bytes on disk (what an earlier attempt left included).
    pub done: u64,
    /// The file's size.
    pub total: u64,
    /// Bytes received per second in this attempt so far.
    pub bytes_per_second: f64,
}

/// Why a model or one of its files was not fetched.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{file}: the pool refused: {reason}")]
    Refused { file: String, reason: String },
    #[error(
        "{file}: the download broke off at {done} of {total} bytes ({reason}); it goes on from there next time"
    )]
    BrokeOff {
        file: String,
        done: u64,
        total: u64,
        reason: String,
    },
    #[error(
        "{file}: the pool sent more than the {total} bytes the manifest says; the download was discarded"
    )]
    TooLong { file: String, total: u64 },
    #[error(
        "{file}: what arrived has sha256 {actual}, not {expected}; it was discarded and is fetched again"
    )]
    WrongHash {
        file: String,
        expected: String,
        actual: String,
    },
    #[error(
        "{model} needs {needed_mb} MB more for its files; models may use {allowed_mb} MB of disk (Settings)"
    )]
    OverQuota {
        model: String,
        needed_mb: u64,
        allowed_mb: u64,
    },
    #[error("{path}: {}", hearth_instance::explain_io(.source))]
    Disk {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Model(#[from] hearth_inference::InferenceError),
}

fn disk(path: &Path) -> impl FnOnce(std::io::Error) -> FetchError + '_ {
    move |source| FetchError::Disk {
        path: path.to_owned(),
        source,
    }
}

/// The sha256 state of the first bytes of `path` (what an earlier attempt wrote) and how many
/// there are; a file longer than `total` is emptied (it cannot be a prefix of the right one).
fn resume_point(path: &Path, total: u64) -> Result<(Sha256, u64), FetchError> {
    let mut hasher = Sha256::new();
    let mut file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok((hasher, 0)),
        Err(error) => return Err(disk(path)(error)),
    };
    let length = file.metadata().map_err(disk(path))?.len();
    if length > total {
        drop(file);
        std::fs::remove_file(path).map_err(disk(path))?;
        return Ok((Sha256::new(), 0));
    }
    let mut buffer = vec![0; 1 << 20];
    let mut done = 0;
    loop {
        let read = file.read(&mut buffer).map_err(disk(path))?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
        done += read as u64;
    }
    Ok((hasher, done))
}

/// Fetch `file` from the pool into `weights` (its folder), resuming a `.partial` left there,
/// calling `progress` as bytes arrive. Returns once the file is in place under its name with
/// its manifest's size and hash; a file already there is left alone.
pub async fn fetch_file(
    pool: &PoolClient,
    file: &ModelFile,
    weights: &Path,
    progress: &mut (dyn FnMut(&FileProgress) + Send),
) -> Result<(), FetchError> {
    let target = weights.join(&file.name);
    if std::fs::metadata(&target).is_ok_and(|m| m.len() == file.size) {
        return Ok(());
    }
    std::fs::create_dir_all(weights).map_err(disk(weights))?;
    let partial = weights.join(format!("{}{PARTIAL_SUFFIX}", file.name));
    let expected = file.sha256.to_ascii_lowercase();
    let (mut hasher, mut done) = {
        let partial = partial.clone();
        let total = file.size;
        tokio::task::spawn_blocking(move || resume_point(&partial, total))
            .await
            .map_err(|e| FetchError::Disk {
                path: weights.to_owned(),
                source: std::io::Error::other(e.to_string()),
            })??
    };
    if done < file.size {
        let response = pool
            .get_file(&expected, done)
            .await
            .map_err(|e| FetchError::Refused {
                file: file.name.clone(),
                reason: e.to_string(),
            })?;
        let status = response.status();
        let starts_at = match status {
            reqwest::StatusCode::PARTIAL_CONTENT => content_range_start(response.headers()),
            reqwest::StatusCode::OK => Some(0),
            _ => None,
        };
        let Some(starts_at) = starts_at.filter(|&start| start == done || start == 0) else {
            let said = response.text().await.unwrap_or_default();
            return Err(FetchError::Refused {
                file: file.name.clone(),
                reason: format!("{status}: {}", said.chars().take(300).collect::<String>()),
            });
        };
        let mut out = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&partial)
            .await
            .map_err(disk(&partial))?;
        if starts_at == 0 && done > 0 {
            // The pool sent the whole file: start again from nothing.
            out.set_len(0).await.map_err(disk(&partial))?;
            hasher = Sha256::new();
            done = 0;
        }
        let started = Instant::now();
        let first = done;
        let mut response = response;
        loop {
            let chunk = match tokio::time::timeout(STALL_TIMEOUT, response.chunk()).await {
                Ok(Ok(Some(chunk))) => chunk,
                Ok(Ok(None)) => break,
                Ok(Err(error)) => {
                    out.sync_data().await.map_err(disk(&partial))?;
                    return Err(broke_off(file, done, hearth_cli::error_chain(&error)));
                }
                Err(_) => {
                    out.sync_data().await.map_err(disk(&partial))?;
                    return Err(broke_off(
                        file,
                        done,
                        format!("nothing arrived for {} s", STALL_TIMEOUT.as_secs()),
                    ));
                }
            };
            if done + chunk.len() as u64 > file.size {
                drop(out);
                let _ = std::fs::remove_file(&partial);
                return Err(FetchError::TooLong {
                    file: file.name.clone(),
                    total: file.size,
                });
            }
            out.write_all(&chunk).await.map_err(disk(&partial))?;
            hasher.update(&chunk);
            done += chunk.len() as u64;
            let seconds = started.elapsed().as_secs_f64();
            progress(&FileProgress {
                file: file.name.clone(),
                done,
                total: file.size,
                bytes_per_second: if seconds > 0.0 {
                    (done - first) as f64 / seconds
                } else {
                    0.0
                },
            });
        }
        out.sync_all().await.map_err(disk(&partial))?;
        if done < file.size {
            return Err(broke_off(
                file,
                done,
                "the pool ended the reply early".into(),
            ));
        }
    }
    let actual = hex(&hasher.finalize());
    if actual != expected {
        std::fs::remove_file(&partial).map_err(disk(&partial))?;
        return Err(FetchError::WrongHash {
            file: file.name.clone(),
            expected,
            actual,
        });
    }
    std::fs::rename(&partial, &target).map_err(disk(&target))?;
    hearth_instance::sync_folder(&target).map_err(disk(&target))?;
    Ok(())
}

fn broke_off(file: &ModelFile, done: u64, reason: String) -> FetchError {
    FetchError::BrokeOff {
        file: file.name.clone(),
        done,
        total: file.size,
        reason,
    }
}

/// The first byte of a 206 reply (`Content-Range: bytes START-END/SIZE`).
fn content_range_start(headers: &reqwest::header::HeaderMap) -> Option<u64> {
    headers
        .get(reqwest::header::CONTENT_RANGE)?
        .to_str()
        .ok()?
        .strip_prefix("bytes ")?
        .split('-')
        .next()?
        .parse()
        .ok()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Bytes the models' files take in `store` now (finished files and unfinished downloads).
pub fn bytes_used(store: &ModelStore) -> u64 {
    let Ok(models) = std::fs::read_dir(store.root()) else {
        return 0;
    };
    models
        .flatten()
        .filter_map(|model| std::fs::read_dir(model.path().join("weights")).ok())
        .flat_map(|files| files.flatten())
        .filter_map(|file| file.metadata().ok())
        .filter(std::fs::Metadata::is_file)
        .map(|m| m.len())
        .sum()
}

/// Fetch every file of `manifest` that `store` lacks, within `allowed_bytes` of disk for all
/// models, and check the whole model; the manifest is written into the store first (a model
/// the node did not know). `progress` hears each file's progress.
pub async fn fetch_model(
    pool: &PoolClient,
    store: &ModelStore,
    manifest: &Manifest,
    allowed_bytes: u64,
    progress: &mut (dyn FnMut(&FileProgress) + Send),
) -> Result<(), FetchError> {
    // A manifest from the network: its id and file names become paths, so they are checked
    // first (a pool naming "../" would write outside the model folder).
    manifest.check(Path::new(&format!(
        "the pool's manifest of {:?}",
        manifest.id
    )))?;
    let folder = store.root().join(&manifest.id);
    let weights = folder.join("weights");
    let have = |file: &ModelFile| {
        std::fs::metadata(weights.join(&file.name))
            .map_or(0, |m| if m.len() == file.size { m.len() } else { 0 })
            + std::fs::metadata(weights.join(format!("{}{PARTIAL_SUFFIX}", file.name)))
                .map_or(0, |m| m.len().min(file.size))
    };
    // Sizes from the network: added without overflowing.
    let missing: u64 = manifest
        .files
        .iter()
        .map(|f| f.size - have(f).min(f.size))
        .fold(0, u64::saturating_add);
    let used = bytes_used(store);
    if used.saturating_add(missing) > allowed_bytes {
        return Err(FetchError::OverQuota {
            model: manifest.id.clone(),
            needed_mb: (used.saturating_add(missing) - allowed_bytes).div_ceil(1_000_000),
            allowed_mb: allowed_bytes / 1_000_000,
        });
    }
    let manifest_path = folder.join("manifest.toml");
    if !manifest_path.exists() {
        std::fs::create_dir_all(&folder).map_err(disk(&folder))?;
        let text = toml::to_string(manifest).map_err(|e| FetchError::Disk {
            path: manifest_path.clone(),
            source: std::io::Error::other(e.to_string()),
        })?;
        hearth_instance::write_atomic(&manifest_path, text.as_bytes())
            .map_err(disk(&manifest_path))?;
    }
    for file in &manifest.files {
        fetch_file(pool, file, &weights, progress).await?;
    }
    let store = store.clone();
    let id = manifest.id.clone();
    tokio::task::spawn_blocking(move || store.verify(&id).map(drop))
        .await
        .map_err(|e| FetchError::Disk {
            path: folder.clone(),
            source: std::io::Error::other(e.to_string()),
        })??;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resume_point_hashes_what_is_there_and_drops_what_cannot_be_a_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.partial");
        let (hasher, done) = resume_point(&path, 10).unwrap();
        assert_eq!(
            (hex(&hasher.finalize()), done),
            (hex(&Sha256::digest(b"")), 0)
        );
        std::fs::write(&path, b"hello").unwrap();
        let (hasher, done) = resume_point(&path, 10).unwrap();
        assert_eq!(
            (hex(&hasher.finalize()), done),
            (hex(&Sha256::digest(b"hello")), 5)
        );
        std::fs::write(&path, b"hello world, too long").unwrap();
        let (_, done) = resume_point(&path, 10).unwrap();
        assert_eq!(done, 0);
        assert!(!path.exists());
    }

    #[tokio::test]
    async fn a_manifest_naming_paths_outside_the_model_folder_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = ModelStore::new(dir.path().join("models"));
        let good = ModelStore::from_env().manifest("all-minilm-l6-v2").unwrap();
        // Nobody listens there: the refusal comes before any request.
        let pool = PoolClient::new(
            "http://127.0.0.1:9",
            hearth_protocol::KeyPair::generate().unwrap(),
            None,
        )
        .unwrap();
        let mut escaping_id = good.clone();
        escaping_id.id = "../escape".into();
        let mut escaping_file = good.clone();
        escaping_file.files[0].name = "../../escape".into();
        for manifest in [escaping_id, escaping_file] {
            let error = fetch_model(&pool, &store, &manifest, u64::MAX, &mut |_| {})
                .await
                .unwrap_err();
            assert!(matches!(error, FetchError::Model(_)), "{error}");
        }
        assert!(!dir.path().join("escape").exists());
        assert!(!store.root().exists(), "nothing written");
    }

    #[test]
    fn the_start_of_a_partial_reply_is_read_from_its_content_range() {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::CONTENT_RANGE,
            reqwest::header::HeaderValue::from_static("bytes 1024-2047/4096"),
        );
        assert_eq!(content_range_start(&headers), Some(1024));
        assert_eq!(
            content_range_start(&reqwest::header::HeaderMap::new()),
            None
        );
    }
}
