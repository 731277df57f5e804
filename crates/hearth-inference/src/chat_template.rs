//! A chat model's words without its weights: the GGUF vocabulary, the template that turns a
//! conversation into prompt tokens (the file's own `tokenizer.chat_template`, a Jinja template
//! rendered by minijinja, else ChatML written here), the tokens that end the assistant's turn,
//! and how generated tokens become the answer's text ([`AnswerText`]). The node's generator and
//! the pool's meter (which counts and checks what a node claims it generated) share this one
//! definition.

use std::path::Path;

use crate::chat::{ChatMessage, FinishReason, Role};
use crate::error::{InferenceError, Result};
use crate::gguf::GgufFile;
use crate::gguf_tokenizer::{GgufTokenizer, StreamDecoder};
use crate::llama::LlamaConfig;
use crate::store::{ModelStore, TaskKind};

/// Longest text of all messages of one request, in bytes.
pub const MAX_PROMPT_BYTES: usize = 256 * 1024;

/// The tokenizer and prompt template of a ChatML chat model.
#[derive(Debug)]
pub struct ChatTemplate {
    tokenizer: GgufTokenizer,
    /// Tokens that end the assistant's turn.
    end_of_turn: Vec<u32>,
    im_start: u32,
    im_end: u32,
    default_system: String,
    /// The file's own template, when it has one that renders (else ChatML as written here).
    jinja: Option<Box<JinjaTemplate>>,
    /// The model's context window, in tokens.
    context: usize,
}

/// A GGUF file's `tokenizer.chat_template`, with what it is rendered with.
#[derive(Debug)]
struct JinjaTemplate {
    source: String,
    bos_token: String,
    eos_token: String,
    /// The vocabulary's special tokens (`<|im_start|>` ...) by their spelling, longest first:
    /// where the template writes one, it is that token; in a message it is plain text.
    specials: Vec<(String, u32)>,
}

/// Marks where message `i`'s text goes in a rendered template: characters from Unicode's
/// private use area, which no message may contain (checked).
const CONTENT_OPEN: char = '\u{F8F0}';
const CONTENT_CLOSE: char = '\u{F8F1}';

impl JinjaTemplate {
    /// The template rendered for `roles` (each message's text left as a marker) with the
    /// generation prompt.
    fn render(&self, roles: &[&str]) -> std::result::Result<String, minijinja::Error> {
        let mut env = minijinja::Environment::new();
        env.add_function(
            "raise_exception",
            |message: String| -> std::result::Result<String, minijinja::Error> {
                Err(minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    message,
                ))
            },
        );
        let messages: Vec<minijinja::Value> = roles
            .iter()
            .enumerate()
            .map(|(i, role)| {
                minijinja::context! {
                    role => *role,
                    content => format!("{CONTENT_OPEN}{i}{CONTENT_CLOSE}"),
                }
            })
            .collect();
        env.render_str(
            &self.source,
            minijinja::context! {
                messages => messages,
                add_generation_prompt => true,
                bos_token => &self.bos_token,
                eos_token => &self.eos_token,
            },
        )
    }
}

impl ChatTemplate {
    /// The template of chat model `model_id` in `store`, its file verified first.
    pub fn load(store: &ModelStore, model_id: &str) -> Result<Self> {
        let path = gguf_path(store, model_id)?;
        Self::from_gguf(&GgufFile::open(&path)?, &path)
    }

    /// The template described by a Llama-architecture GGUF file with a ChatML vocabulary.
    pub fn from_gguf(file: &GgufFile, path: &Path) -> Result<Self> {
        let context = LlamaConfig::from_gguf(file)?.context;
        let tokenizer = GgufTokenizer::from_gguf(file)?;
        let special = |text: &str| {
            tokenizer.token_id(text).ok_or_else(|| {
                InferenceError::Unsupported(format!(
                    "{}: the vocabulary has no {text} token, so it does not use the ChatML template",
                    path.display()
                ))
            })
        };
        let im_start = special("<|im_start|>")?;
        let im_end = special("<|im_end|>")?;
        let mut end_of_turn = vec![im_end];
        if let Ok(eos) = file.get_u64("tokenizer.ggml.eos_token_id") {
            end_of_turn.push(eos as u32);
        }
        if let Some(eot) = tokenizer.token_id("<|endoftext|>") {
            end_of_turn.push(eot);
        }
        // SmolLM2's template adds this system message when the conversation has none.
        let default_system = file
            .get_str("tokenizer.chat_template")
            .ok()
            .and_then(|t| {
                let start = t.find("<|im_start|>system\n")? + "<|im_start|>system\n".len();
                let len = t[start..].find("<|im_end|>")?;
                Some(t[start..start + len].to_owned())
            })
            .unwrap_or_default();
        let jinja = file.get_str("tokenizer.chat_template").ok().and_then(|source| {
            let spelling = |key: &str| {
                file.get_u64(key)
                    .ok()
                    .and_then(|id| tokenizer.token_text(id as u32))
                    .map(str::to_owned)
                    .unwrap_or_default()
            };
            let mut specials: Vec<(String, u32)> = (0..tokenizer.vocab_size() as u32)
                .filter(|&id| tokenizer.is_special(id))
                .filter_map(|id| {
                    let text = tokenizer.token_text(id)?;
                    (!text.is_empty()).then(|| (text.to_owned(), id))
                })
                .collect();
            specials.sort_by_key(|(text, _)| std::cmp::Reverse(text.len()));
            let template = JinjaTemplate {
                source: source.to_owned(),
                bos_token: spelling("tokenizer.ggml.bos_token_id"),
                eos_token: spelling("tokenizer.ggml.eos_token_id"),
                specials,
            };
            // A template that cannot render a plain conversation is not used.
            match template.render(&["system", "user", "assistant", "user"]) {
                Ok(_) => Some(Box::new(template)),
                Err(error) => {
                    tracing::warn!(file = %path.display(), %error, "the file's chat template does not render; using ChatML");
                    None
                }
            }
        });
        Ok(Self {
            tokenizer,
            end_of_turn,
            im_start,
            im_end,
            default_system,
            jinja,
            context,
        })
    }

    /// Whether prompts come from the file's own (Jinja) template.
    pub fn uses_file_template(&self) -> bool {
        self.jinja.is_some()
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &GgufTokenizer {
        &self.tokenizer
    }

    /// The context window, in tokens (prompt and answer together).
    pub fn context(&self) -> usize {
        self.context
    }

    /// Whether `id` ends the assistant's turn.
    pub fn ends_turn(&self, id: u32) -> bool {
        self.end_of_turn.contains(&id)
    }

    /// The prompt's token ids: each message as `<|im_start|>role\ncontent<|im_end|>\n`, a default
    /// system message first when there is none, then `<|im_start|>assistant\n`.
    pub fn prompt_tokens(&self, messages: &[ChatMessage]) -> Result<Vec<u32>> {
        if messages.is_empty() {
            return Err(InferenceError::InvalidRequest("no messages".into()));
        }
        let bytes: usize = messages.iter().map(|m| m.content.len()).sum();
        if bytes > MAX_PROMPT_BYTES {
            return Err(InferenceError::InputTooLong {
                index: 0,
                actual: bytes,
                limit: MAX_PROMPT_BYTES,
            });
        }
        if let Some(jinja) = &self.jinja {
            return self.render_tokens(jinja, messages);
        }
        self.chatml_tokens(messages)
    }

    /// The prompt from the file's template: rendered with a marker for each message's text,
    /// then tokenised run by run: a special token's spelling that the template wrote is that
    /// token; the messages' text, spliced in where its marker is, stays plain text (so a user
    /// typing "<|im_end|>" cannot end their turn early).
    fn render_tokens(&self, jinja: &JinjaTemplate, messages: &[ChatMessage]) -> Result<Vec<u32>> {
        if let Some(i) = messages
            .iter()
            .position(|m| m.content.contains([CONTENT_OPEN, CONTENT_CLOSE]))
        {
            return Err(InferenceError::InvalidRequest(format!(
                "message {i} holds a private-use character Hearth reserves (U+F8F0 or U+F8F1)"
            )));
        }
        let roles: Vec<&str> = messages.iter().map(|m| m.role.as_str()).collect();
        let rendered = jinja.render(&roles).map_err(|e| {
            InferenceError::InvalidRequest(format!("the model's chat template refused: {e}"))
        })?;
        let mut ids = Vec::new();
        // Plain text waiting to be tokenised as one run.
        let mut run = String::new();
        let mut rest = rendered.as_str();
        while !rest.is_empty() {
            if let Some(after_open) = rest.strip_prefix(CONTENT_OPEN) {
                let (index, after) = after_open.split_once(CONTENT_CLOSE).ok_or_else(|| {
                    InferenceError::InvalidRequest("the chat template cut a message".into())
                })?;
                let message = index
                    .parse::<usize>()
                    .ok()
                    .and_then(|i| messages.get(i))
                    .ok_or_else(|| {
                        InferenceError::InvalidRequest("the chat template changed a message".into())
                    })?;
                run.push_str(&message.content);
                rest = after;
            } else if let Some((text, id)) = jinja
                .specials
                .iter()
                .find(|(text, _)| rest.starts_with(text.as_str()))
            {
                ids.extend(self.encode_plain(&run)?);
                run.clear();
                ids.push(*id);
                rest = &rest[text.len()..];
            } else {
                let next = rest.chars().next().map_or(1, char::len_utf8);
                run.push_str(&rest[..next]);
                rest = &rest[next..];
            }
        }
        ids.extend(self.encode_plain(&run)?);
        Ok(ids)
    }

    /// ChatML, as written here (files without a template of their own).
    fn chatml_tokens(&self, messages: &[ChatMessage]) -> Result<Vec<u32>> {
        let newline = self.tokenizer.encode("\n")?;
        let mut ids = Vec::new();
        let mut push = |role: Role, content: &str| -> Result<()> {
            ids.push(self.im_start);
            // Role and text are tokenised together, as the reference tokenises the rendered
            // template; special-token spellings inside the text stay plain text, so a user
            // typing "<|im_end|>" cannot end their turn early.
            ids.extend(self.encode_plain(&format!("{}\n{content}", role.as_str()))?);
            ids.push(self.im_end);
            ids.extend(&newline);
            Ok(())
        };
        if messages[0].role != Role::System && !self.default_system.is_empty() {
            push(Role::System, &self.default_system)?;
        }
        for m in messages {
            push(m.role, &m.content)?;
        }
        ids.push(self.im_start);
        ids.extend(self.tokenizer.encode("assistant\n")?);
        Ok(ids)
    }

    /// Tokenise text with special-token spellings treated as ordinary characters.
    fn encode_plain(&self, text: &str) -> Result<Vec<u32>> {
        // Split at each `<|`; BPE never merges across the split point because `<|` starts
        // every special token and never occurs inside ordinary merged tokens of this template.
        let mut ids = Vec::new();
        let mut rest = text;
        while let Some(at) = rest.find("<|").filter(|&at| {
            let tail = &rest[at..];
            tail.starts_with("<|im_start|>")
                || tail.starts_with("<|im_end|>")
                || tail.starts_with("<|endoftext|>")
        }) {
            ids.extend(self.tokenizer.encode(&rest[..at])?);
            ids.extend(self.tokenizer.encode("<")?);
            rest = &rest[at + 1..];
        }
        ids.extend(self.tokenizer.encode(rest)?);
        Ok(ids)
    }

    /// The answer that generated tokens `ids` make under `stop` strings, exactly as generation
    /// makes it: its text and why it ended ([`FinishReason::Length`] when nothing ended it).
    /// Refused: an id outside the vocabulary, and any token after the one that ended the answer.
    pub fn replay(&self, ids: &[u32], stop: &[String]) -> Result<(String, FinishReason)> {
        let vocabulary = self.tokenizer.vocab_size();
        let mut answer = AnswerText::new(self, stop);
        for (i, &id) in ids.iter().enumerate() {
            if id as usize >= vocabulary {
                return Err(InferenceError::InvalidRequest(format!(
                    "token id {id} is outside the vocabulary of {vocabulary}"
                )));
            }
            if answer.push(id).ended {
                if i + 1 != ids.len() {
                    return Err(InferenceError::InvalidRequest(format!(
                        "{} tokens follow the end of the answer",
                        ids.len() - i - 1
                    )));
                }
                answer.finish();
                return Ok((answer.into_text(), FinishReason::Stop));
            }
        }
        answer.finish();
        Ok((answer.into_text(), FinishReason::Length))
    }
}

/// Where the GGUF file of chat model `model_id` is, after checking it against its manifest.
pub(crate) fn gguf_path(store: &ModelStore, model_id: &str) -> Result<std::path::PathBuf> {
    let model = store.verify(model_id)?;
    if model.manifest.task != TaskKind::Chat {
        return Err(InferenceError::Unsupported(format!(
            "model {model_id:?} is not a chat model"
        )));
    }
    let file = model
        .manifest
        .files
        .iter()
        .find(|f| f.name.ends_with(".gguf"))
        .ok_or_else(|| InferenceError::Manifest {
            path: model.weights_dir.clone(),
            reason: "lists no .gguf file".into(),
        })?;
    Ok(model.weights_dir.join(&file.name))
}

/// What one generated token did to the answer.
#[derive(Debug, PartialEq, Eq)]
pub struct Pushed {
    /// Text now safe to show (held back while it may start a stop string).
    pub shown: String,
    /// The token ended the answer (end of turn, or a stop string appeared).
    pub ended: bool,
}

/// Builds an answer's text from generated tokens: bytes of unfinished characters and text that
/// may begin a stop string are held back, the end-of-turn token and a stop string end it.
#[derive(Debug)]
pub struct AnswerText<'a> {
    template: &'a ChatTemplate,
    decoder: StreamDecoder,
    stops: StopMatcher<'a>,
}

impl<'a> AnswerText<'a> {
    /// An empty answer that ends at any of `stop`.
    pub fn new(template: &'a ChatTemplate, stop: &'a [String]) -> Self {
        Self {
            template,
            decoder: StreamDecoder::default(),
            stops: StopMatcher::new(stop),
        }
    }

    /// Add a generated token.
    pub fn push(&mut self, id: u32) -> Pushed {
        if self.stops.stopped || self.template.ends_turn(id) {
            return Pushed {
                shown: String::new(),
                ended: true,
            };
        }
        let piece = self.decoder.push(&self.template.tokenizer, id);
        let (shown, ended) = self.stops.push(&piece);
        Pushed { shown, ended }
    }

    /// Release what is held back at the end (unless a stop string ended the answer); the
    /// text shown by it.
    pub fn finish(&mut self) -> String {
        if self.stops.stopped {
            return String::new();
        }
        let (mut shown, _) = self.stops.push(&self.decoder.finish());
        shown.push_str(&self.stops.flush());
        shown
    }

    /// The answer's text so far.
    pub fn text(&self) -> &str {
        &self.stops.text
    }

    /// The answer's text.
    pub fn into_text(self) -> String {
        self.stops.text
    }
}

/// Holds back text that could be the start of a stop string, and ends at the first match.
#[derive(Debug)]
struct StopMatcher<'a> {
    stop: &'a [String],
    /// Text shown so far.
    text: String,
    /// Text not shown yet.
    held: String,
    stopped: bool,
}

impl<'a> StopMatcher<'a> {
    fn new(stop: &'a [String]) -> Self {
        Self {
            stop,
            text: String::new(),
            held: String::new(),
            stopped: false,
        }
    }

    /// Add generated text; returns the text now safe to show and whether a stop string ended it.
    fn push(&mut self, piece: &str) -> (String, bool) {
        if self.stopped {
            return (String::new(), true);
        }
        self.held.push_str(piece);
        if let Some(at) = self
            .stop
            .iter()
            .filter_map(|s| self.held.find(s.as_str()))
            .min()
        {
            let shown = self.held[..at].to_owned();
            self.text.push_str(&shown);
            self.held.clear();
            self.stopped = true;
            return (shown, true);
        }
        // Keep the longest tail that is a prefix of some stop string.
        let keep = self
            .stop
            .iter()
            .flat_map(|s| {
                (1..s.len().min(self.held.len() + 1))
                    .rev()
                    .filter(|&n| s.is_char_boundary(n) && self.held.ends_with(&s[..n]))
                    .take(1)
            })
            .max()
            .unwrap_or(0);
        let cut = self.held.len() - keep;
        let shown: String = self.held.drain(..cut).collect();
        self.text.push_str(&shown);
        (shown, false)
    }

    /// Release held text at the end.
    fn flush(&mut self) -> String {
        let rest = std::mem::take(&mut self.held);
        self.text.push_str(&rest);
        rest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_matcher_holds_back_prefixes_and_cuts_at_the_match() {
        let stop = vec!["END".to_owned()];
        let mut m = StopMatcher::new(&stop);
        assert_eq!(m.push("hello E"), ("hello ".to_owned(), false));
        assert_eq!(m.push("N"), (String::new(), false));
        assert_eq!(m.push("Dx"), (String::new(), true));
        assert_eq!(m.text, "hello ");

        let mut m = StopMatcher::new(&stop);
        assert_eq!(m.push("E"), (String::new(), false));
        assert_eq!(m.push("gg"), ("Egg".to_owned(), false));
        m.push("EN");
        assert_eq!(m.flush(), "EN");
        assert_eq!(m.text, "EggEN");
    }
}
