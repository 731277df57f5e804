//! The model store: one manifest per model under `models/<id>/manifest.toml`, weights beside it
//! in `models/<id>/weights/`. Nothing is loaded before its size and sha256 match the manifest.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{InferenceError, Result};

pub use hearth_protocol::TaskKind;

/// How a model is built: which of Hearth's implementations runs it. Each runs one kind of task.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Architecture {
    /// A BERT encoder in safetensors, mean-pooled into sentence embeddings; its sizes are in
    /// the manifest's `[config]` ([`crate::bert::BertConfig`]).
    Bert,
    /// EfficientNet-Lite0 in a PyTorch checkpoint, with `labels.txt` beside the manifest.
    EfficientnetLite0,
    /// A Llama-family decoder in a GGUF file that carries its own sizes, vocabulary and chat
    /// template.
    Llama,
}

impl Architecture {
    /// The kind of task this architecture runs.
    pub fn task(self) -> TaskKind {
        match self {
            Self::Bert => TaskKind::Embeddings,
            Self::EfficientnetLite0 => TaskKind::ImageClassification,
            Self::Llama => TaskKind::Chat,
        }
    }
}

/// What a pool charges for a model unless its operator sets another price.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Price {
    /// Micro-credits per unit: per 1000 input tokens for embeddings, per output token for
    /// chat, per image for image classification.
    pub micro_credits_per_unit: u64,
}

/// The registry package the weights come from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    /// Package registry: `pypi` or `npm`.
    pub registry: String,
    /// Package name in that registry.
    pub package: String,
    /// Exact version.
    pub version: String,
}

/// One file the model needs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelFile {
    /// File name under `weights/`.
    pub name: String,
    /// Where the file sits inside the package.
    pub path_in_package: String,
    /// Size in bytes.
    pub size: u64,
    /// Lower-case hex sha256.
    pub sha256: String,
}

/// A model's manifest, as written in `manifest.toml`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Stable id, also the folder name.
    pub id: String,
    /// What the model does.
    pub task: TaskKind,
    /// Which implementation runs it; it must run `task`.
    pub architecture: Architecture,
    /// Human-readable name.
    pub name: String,
    /// SPDX licence of the weights.
    pub licence: String,
    /// Where the weights come from.
    pub source: Source,
    /// The files, each checked before use.
    pub files: Vec<ModelFile>,
    /// Memory the model takes when loaded and running a typical batch (measured peak RSS
    /// growth on the CPU backend), for deciding where it fits.
    #[serde(default)]
    pub memory_mib: Option<u64>,
    /// Task-specific settings (token limits, image size, normalisation), read by each model.
    #[serde(default)]
    pub preprocessing: BTreeMap<String, toml::Value>,
    /// The architecture's sizes where its files do not carry them (a BERT's layers and widths).
    #[serde(default)]
    pub config: Option<toml::Table>,
    /// What a pool charges for it by default; a model without one is not offered unless the
    /// operator prices it.
    #[serde(default)]
    pub price: Option<Price>,
}

impl Manifest {
    /// Parse a manifest file.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| InferenceError::io(path, e))?;
        let manifest: Manifest = toml::from_str(&text).map_err(|e| InferenceError::Manifest {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        manifest.check(path)?;
        Ok(manifest)
    }

    /// Check what a manifest must be before anything uses it: an id that is a plain folder
    /// name, plain file names, sha256s of 64 hex digits, an architecture that runs its task.
    /// (A manifest from a pool is checked as a file's is; `origin` names it in the error.)
    pub fn check(&self, origin: &Path) -> Result<()> {
        let bad = |reason: String| InferenceError::Manifest {
            path: origin.to_owned(),
            reason,
        };
        if !is_model_id(&self.id) {
            return Err(bad(format!(
                "id {:?} must be lower-case letters, digits, '-' and '.'",
                self.id
            )));
        }
        if self.files.is_empty() {
            return Err(bad("lists no files".into()));
        }
        if self.architecture.task() != self.task {
            return Err(bad(format!(
                "architecture {:?} runs {}, not {}",
                self.architecture,
                self.architecture.task(),
                self.task
            )));
        }
        for file in &self.files {
            let plain_name = Path::new(&file.name)
                .file_name()
                .map(|n| n == file.name.as_str());
            if plain_name != Some(true) {
                return Err(bad(format!(
                    "file name {:?} must be a plain file name",
                    file.name
                )));
            }
            if file.sha256.len() != 64 || !file.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad(format!("sha256 of {} is not 64 hex digits", file.name)));
            }
        }
        Ok(())
    }

    /// A numeric preprocessing setting.
    pub fn setting_f64(&self, key: &str) -> Option<f64> {
        match self.preprocessing.get(key)? {
            toml::Value::Float(f) => Some(*f),
            toml::Value::Integer(i) => Some(*i as f64),
            _ => None,
        }
    }

    /// A list of numbers from the preprocessing settings.
    pub fn setting_f32_list(&self, key: &str) -> Option<Vec<f32>> {
        let toml::Value::Array(items) = self.preprocessing.get(key)? else {
            return None;
        };
        items
            .iter()
            .map(|v| match v {
                toml::Value::Float(f) => Some(*f as f32),
                toml::Value::Integer(i) => Some(*i as f32),
                _ => None,
            })
            .collect()
    }
}

/// A model whose files were all found and verified.
#[derive(Clone, Debug)]
pub struct VerifiedModel {
    /// Its manifest.
    pub manifest: Manifest,
    /// Its `weights/` folder.
    pub weights_dir: PathBuf,
}

impl VerifiedModel {
    /// The verified path of the file called `name`.
    pub fn file(&self, name: &str) -> Result<PathBuf> {
        if self.manifest.files.iter().any(|f| f.name == name) {
            Ok(self.weights_dir.join(name))
        } else {
            Err(InferenceError::Manifest {
                path: self.weights_dir.clone(),
                reason: format!("{} lists no file {name:?}", self.manifest.id),
            })
        }
    }
}

/// The folder of model folders: the node's own (`root`, where downloads go), and, for an
/// installed app, the read-only folder of models shipped with it (`shipped`). A model in both
/// is the node's own.
#[derive(Clone, Debug)]
pub struct ModelStore {
    root: PathBuf,
    shipped: Option<PathBuf>,
}

/// Where an installed app's shipped models are, from its program's folder: `../share/hearth/models`
/// (a Linux package's `/usr/bin` → `/usr/share/hearth/models`), else `models` beside it (Windows).
pub fn shipped_models_beside(program_dir: &Path) -> Option<PathBuf> {
    [
        program_dir.join("../share/hearth/models"),
        program_dir.join("models"),
    ]
    .into_iter()
    .find(|dir| dir.is_dir())
    .map(|dir| dir.canonicalize().unwrap_or(dir))
}

impl ModelStore {
    /// A store rooted at `root` (the repository's `models/`).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            shipped: None,
        }
    }

    /// The same store, also reading the models shipped in `shipped` (never written).
    pub fn with_shipped(mut self, shipped: impl Into<PathBuf>) -> Self {
        self.shipped = Some(shipped.into());
        self
    }

    /// The store in this repository: `$HEARTH_MODELS`, else `models/` at the workspace root.
    pub fn from_env() -> Self {
        match std::env::var_os("HEARTH_MODELS") {
            Some(dir) => Self::new(dir),
            None => Self::new(Self::repository_models()),
        }
    }

    /// The models an app uses with data folder `data_dir`: `$HEARTH_MODELS` when set
    /// (developers, tests); for an installed app, `models/` in the data folder over the models
    /// shipped beside the program; from a checkout, the repository's `models/`.
    pub fn for_data_dir(data_dir: &Path) -> Self {
        if let Some(dir) = std::env::var_os("HEARTH_MODELS") {
            return Self::new(dir);
        }
        let shipped = std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().and_then(shipped_models_beside));
        match shipped {
            Some(shipped) => Self::new(data_dir.join("models")).with_shipped(shipped),
            None if Self::repository_models().is_dir() => Self::new(Self::repository_models()),
            None => Self::new(data_dir.join("models")),
        }
    }

    fn repository_models() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models")
    }

    /// Its own folder, where models are written.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The folder of shipped models it also reads, if any.
    pub fn shipped(&self) -> Option<&Path> {
        self.shipped.as_deref()
    }

    /// The folder of model `id`: the store's own when it holds the model's manifest, else the
    /// shipped one's when that does, else (a model not there yet) where it would be written.
    pub fn model_dir(&self, id: &str) -> PathBuf {
        let own = self.root.join(id);
        if own.join("manifest.toml").exists() {
            return own;
        }
        match &self.shipped {
            Some(shipped) if shipped.join(id).join("manifest.toml").exists() => shipped.join(id),
            _ => own,
        }
    }

    /// The manifest of model `id`.
    pub fn manifest(&self, id: &str) -> Result<Manifest> {
        if !is_model_id(id) {
            return Err(InferenceError::UnknownModel(id.to_owned()));
        }
        let path = self.model_dir(id).join("manifest.toml");
        if !path.exists() {
            return Err(InferenceError::UnknownModel(id.to_owned()));
        }
        Manifest::read(&path)
    }

    /// Every model with a manifest, by id (the store's own first, then the shipped ones it
    /// lacks). A store whose own folder is not there yet lists the shipped models.
    pub fn list(&self) -> Result<Vec<Manifest>> {
        let mut manifests: Vec<Manifest> = Vec::new();
        let folders = std::iter::once(&self.root).chain(self.shipped.as_ref());
        for (n, folder) in folders.enumerate() {
            let entries = match std::fs::read_dir(folder) {
                Ok(entries) => entries,
                Err(e)
                    if n == 0
                        && self.shipped.is_some()
                        && e.kind() == std::io::ErrorKind::NotFound =>
                {
                    continue;
                }
                Err(e) => return Err(InferenceError::io(folder, e)),
            };
            for entry in entries {
                let entry = entry.map_err(|e| InferenceError::io(folder, e))?;
                let path = entry.path().join("manifest.toml");
                if path.exists() {
                    let manifest = Manifest::read(&path)?;
                    if !manifests.iter().any(|m| m.id == manifest.id) {
                        manifests.push(manifest);
                    }
                }
            }
        }
        manifests.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(manifests)
    }

    /// Whether every file of model `id` is on disk with its manifest's size: a quick check for
    /// listing what a node can offer. Loading still verifies the hashes.
    pub fn is_present(&self, id: &str) -> bool {
        let Ok(manifest) = self.manifest(id) else {
            return false;
        };
        let weights_dir = self.model_dir(id).join("weights");
        manifest.files.iter().all(|file| {
            std::fs::metadata(weights_dir.join(&file.name)).is_ok_and(|m| m.len() == file.size)
        })
    }

    /// Check every file of model `id` against its manifest: present, right size, right hash.
    pub fn verify(&self, id: &str) -> Result<VerifiedModel> {
        let manifest = self.manifest(id)?;
        let weights_dir = self.model_dir(id).join("weights");
        for file in &manifest.files {
            verify_file(&weights_dir.join(&file.name), file.size, &file.sha256)?;
        }
        tracing::debug!(
            model = id,
            files = manifest.files.len(),
            "model files verified"
        );
        Ok(VerifiedModel {
            manifest,
            weights_dir,
        })
    }
}

/// A model id: lower-case letters, digits, '-' and '.', not starting with '.' (so it is a
/// plain folder name in the store).
pub fn is_model_id(id: &str) -> bool {
    !id.is_empty()
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
}

/// Check one file's size, then its sha256 (streamed, so large files cost no memory).
pub fn verify_file(path: &Path, expected_size: u64, expected_sha256: &str) -> Result<()> {
    let metadata = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(InferenceError::MissingFile {
                path: path.to_owned(),
            });
        }
        Err(e) => return Err(InferenceError::io(path, e)),
    };
    if metadata.len() != expected_size {
        return Err(InferenceError::SizeMismatch {
            path: path.to_owned(),
            expected: expected_size,
            actual: metadata.len(),
        });
    }
    let actual = sha256_file(path)?;
    if !actual.eq_ignore_ascii_case(expected_sha256) {
        return Err(InferenceError::HashMismatch {
            path: path.to_owned(),
            expected: expected_sha256.to_ascii_lowercase(),
            actual,
        });
    }
    Ok(())
}

/// The lower-case hex sha256 of a file.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file = File::open(path).map_err(|e| InferenceError::io(path, e))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let read = file
            .read(&mut buffer)
            .map_err(|e| InferenceError::io(path, e))?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFEST: &str = r#"
id = "tiny"
task = "embeddings"
architecture = "bert"
name = "Tiny"
licence = "MIT"
[source]
registry = "pypi"
package = "tiny"
version = "1.0"
[[files]]
name = "weights.bin"
path_in_package = "tiny/weights.bin"
size = 5
sha256 = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
[preprocessing]
max_tokens = 256
mean = [0.5, 0.5, 0.5]
"#;

    fn store_with(contents: &[u8]) -> (tempfile::TempDir, ModelStore) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("tiny/weights")).unwrap();
        std::fs::write(dir.path().join("tiny/manifest.toml"), MANIFEST).unwrap();
        std::fs::write(dir.path().join("tiny/weights/weights.bin"), contents).unwrap();
        let store = ModelStore::new(dir.path());
        (dir, store)
    }

    /// An installed app: its own folder (not made yet) over the package's read-only one.
    #[test]
    fn shipped_models_are_read_where_they_are_and_the_own_copy_wins() {
        let (shipped, _) = store_with(b"hello");
        let home = tempfile::tempdir().unwrap();
        let own = home.path().join("models");
        let store = ModelStore::new(&own).with_shipped(shipped.path());
        let ids: Vec<String> = store.list().unwrap().into_iter().map(|m| m.id).collect();
        assert_eq!(ids, ["tiny"]);
        assert!(store.is_present("tiny"));
        assert_eq!(store.model_dir("tiny"), shipped.path().join("tiny"));
        assert_eq!(
            store.verify("tiny").unwrap().weights_dir,
            shipped.path().join("tiny/weights")
        );
        assert!(!own.exists(), "reading writes nothing");
        assert_eq!(
            store.model_dir("other"),
            own.join("other"),
            "a new model goes to the own folder"
        );

        // A copy of its own (fetched from a pool, say) is the one used.
        std::fs::create_dir_all(own.join("tiny/weights")).unwrap();
        std::fs::write(own.join("tiny/manifest.toml"), MANIFEST).unwrap();
        std::fs::write(own.join("tiny/weights/weights.bin"), b"hello").unwrap();
        assert_eq!(store.model_dir("tiny"), own.join("tiny"));
        assert_eq!(store.list().unwrap().len(), 1, "listed once");
        assert_eq!(
            store.verify("tiny").unwrap().weights_dir,
            own.join("tiny/weights")
        );
    }

    #[test]
    fn an_installed_program_finds_the_models_its_package_ships() {
        let prefix = tempfile::tempdir().unwrap();
        let bin = prefix.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        assert_eq!(shipped_models_beside(&bin), None);
        std::fs::create_dir_all(prefix.path().join("share/hearth/models")).unwrap();
        assert_eq!(
            shipped_models_beside(&bin).map(|d| d.canonicalize().unwrap()),
            Some(
                prefix
                    .path()
                    .join("share/hearth/models")
                    .canonicalize()
                    .unwrap()
            )
        );
    }

    #[test]
    fn verifies_a_matching_file_and_reads_settings() {
        let (_dir, store) = store_with(b"hello");
        let model = store.verify("tiny").unwrap();
        assert_eq!(model.manifest.setting_f64("max_tokens"), Some(256.0));
        assert_eq!(model.manifest.setting_f32_list("mean"), Some(vec![0.5; 3]));
        assert!(
            model
                .file("weights.bin")
                .unwrap()
                .ends_with("tiny/weights/weights.bin")
        );
        assert!(model.file("other.bin").is_err());
    }

    #[test]
    fn refuses_a_corrupted_file_naming_both_hashes() {
        let (_dir, store) = store_with(b"hellO");
        let err = store.verify("tiny").unwrap_err();
        let message = err.to_string();
        assert!(
            matches!(err, InferenceError::HashMismatch { .. }),
            "{err:?}"
        );
        assert!(message.contains("weights.bin"), "{message}");
        assert!(
            message.contains("2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824")
        );
        assert!(
            message.contains(&sha256_file(&store.root().join("tiny/weights/weights.bin")).unwrap())
        );
    }

    #[test]
    fn refuses_a_truncated_file_before_hashing() {
        let (_dir, store) = store_with(b"hell");
        let err = store.verify("tiny").unwrap_err();
        assert!(
            matches!(
                err,
                InferenceError::SizeMismatch {
                    expected: 5,
                    actual: 4,
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn missing_file_and_unknown_model_are_distinct_errors() {
        let (dir, store) = store_with(b"hello");
        std::fs::remove_file(dir.path().join("tiny/weights/weights.bin")).unwrap();
        assert!(matches!(
            store.verify("tiny"),
            Err(InferenceError::MissingFile { .. })
        ));
        assert!(matches!(
            store.verify("nope"),
            Err(InferenceError::UnknownModel(_))
        ));
        assert!(matches!(
            store.verify("../tiny"),
            Err(InferenceError::UnknownModel(_))
        ));
    }

    #[test]
    fn an_architecture_that_does_not_run_the_task_is_refused() {
        let (dir, store) = store_with(b"hello");
        let wrong = MANIFEST.replace("architecture = \"bert\"", "architecture = \"llama\"");
        std::fs::write(dir.path().join("tiny/manifest.toml"), wrong).unwrap();
        let error = store.manifest("tiny").unwrap_err().to_string();
        assert!(error.contains("runs chat, not embeddings"), "{error}");
    }

    #[test]
    fn malformed_manifest_is_an_error() {
        let (dir, store) = store_with(b"hello");
        std::fs::write(dir.path().join("tiny/manifest.toml"), "id = 3").unwrap();
        assert!(matches!(
            store.manifest("tiny"),
            Err(InferenceError::Manifest { .. })
        ));
        let unsafe_name = MANIFEST.replace("name = \"weights.bin\"", "name = \"../x\"");
        std::fs::write(dir.path().join("tiny/manifest.toml"), unsafe_name).unwrap();
        assert!(matches!(
            store.manifest("tiny"),
            Err(InferenceError::Manifest { .. })
        ));
    }

    #[test]
    fn lists_every_manifest() {
        let (_dir, store) = store_with(b"hello");
        let ids: Vec<_> = store.list().unwrap().into_iter().map(|m| m.id).collect();
        assert_eq!(ids, ["tiny"]);
    }
}
