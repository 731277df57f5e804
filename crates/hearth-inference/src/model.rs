//! Any of Hearth's models, loaded by the implementation its manifest names. A program that runs
//! models asks for one by id and gets the right kind; adding a model whose architecture Hearth
//! already runs takes its folder in `models/` and nothing else.

use crate::chat::ChatGenerator;
use crate::device::ComputeDevice;
use crate::embeddings::TextEmbedder;
use crate::error::Result;
use crate::images::ImageClassifier;
use crate::store::{Architecture, ModelStore, TaskKind};

/// A loaded model, of the kind its manifest says (boxed: the kinds differ much in size).
#[derive(Debug)]
pub enum Model {
    /// Sentence embeddings.
    Embedder(Box<TextEmbedder>),
    /// Image classification.
    Classifier(Box<ImageClassifier>),
    /// Chat generation.
    Chat(Box<ChatGenerator>),
}

impl Model {
    /// Verify and load model `id` from `store` onto `device`, with the implementation of the
    /// architecture its manifest names.
    pub fn load(store: &ModelStore, id: &str, device: &ComputeDevice) -> Result<Self> {
        let manifest = store.manifest(id)?;
        Ok(match manifest.architecture {
            Architecture::Bert => {
                Self::Embedder(Box::new(TextEmbedder::load(store, id, device.clone())?))
            }
            Architecture::EfficientnetLite0 => {
                Self::Classifier(Box::new(ImageClassifier::load(store, id, device.clone())?))
            }
            Architecture::Llama => Self::Chat(Box::new(ChatGenerator::load(store, id, device)?)),
        })
    }

    /// The kind of task it runs.
    pub fn task(&self) -> TaskKind {
        match self {
            Self::Embedder(_) => TaskKind::Embeddings,
            Self::Classifier(_) => TaskKind::ImageClassification,
            Self::Chat(_) => TaskKind::Chat,
        }
    }
}
