//! What a job asks for and what it produces: the kinds of task, their inputs and their outputs.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The kinds of work Hearth's models do: the one list that model manifests, the pool's offers,
/// the node's executor and the wire share. Written in snake case (`embeddings`, `chat`,
/// `image_classification`) in manifests, configs and messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskKind {
    /// Texts in, one unit-length vector per text out.
    Embeddings,
    /// Chat messages in, generated text out.
    Chat,
    /// Images in, class labels with probabilities out.
    ImageClassification,
}

impl TaskKind {
    /// The kind's name as written in manifests, configs and on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Embeddings => "embeddings",
            Self::Chat => "chat",
            Self::ImageClassification => "image_classification",
        }
    }
}

impl fmt::Display for TaskKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One message of a chat job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

/// Sampling settings of a chat job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChatParams {
    pub max_tokens: u32,
    pub temperature: f32,
    pub top_p: f32,
    pub seed: u64,
    #[serde(default)]
    pub stop: Vec<String>,
    /// Send the text as it is generated, in heartbeats.
    #[serde(default)]
    pub stream: bool,
}

/// What to compute.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "task", rename_all = "snake_case")]
pub enum TaskPayload {
    Embeddings {
        texts: Vec<String>,
    },
    Chat {
        messages: Vec<ChatMessage>,
        params: ChatParams,
    },
    ImageClassification {
        /// Encoded images (PNG, JPEG), base64.
        images: Vec<String>,
        top_k: u32,
    },
    /// Verification of another node's chat answer by teacher forcing: run the conversation
    /// followed by `token_ids` and report, for each of those tokens, its rank among the
    /// model's own predictions at that position (0 = the most likely).
    ChatScore {
        messages: Vec<ChatMessage>,
        token_ids: Vec<u32>,
    },
}

impl TaskPayload {
    /// The kind of model the task needs (checking a chat answer needs a chat model).
    pub fn kind(&self) -> TaskKind {
        match self {
            Self::Embeddings { .. } => TaskKind::Embeddings,
            Self::Chat { .. } | Self::ChatScore { .. } => TaskKind::Chat,
            Self::ImageClassification { .. } => TaskKind::ImageClassification,
        }
    }

    /// The task's name as tagged on the wire (`chat_score` for a check of a chat answer).
    pub fn name(&self) -> &'static str {
        match self {
            Self::ChatScore { .. } => "chat_score",
            other => other.kind().as_str(),
        }
    }
}

/// One class with its probability.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClassScore {
    pub class: u32,
    pub label: String,
    pub probability: f32,
}

/// What a job produced.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "task", rename_all = "snake_case")]
pub enum TaskOutput {
    Embeddings {
        vectors: Vec<Vec<f32>>,
        /// Tokens per input.
        tokens: Vec<u32>,
    },
    Chat {
        text: String,
        prompt_tokens: u32,
        completion_tokens: u32,
        /// Token ids of the answer, for verification by teacher forcing.
        token_ids: Vec<u32>,
        /// `stop` or `length`.
        finish_reason: String,
    },
    ImageClassification {
        results: Vec<Vec<ClassScore>>,
    },
    ChatScore {
        /// One rank per scored token.
        ranks: Vec<u32>,
    },
}
