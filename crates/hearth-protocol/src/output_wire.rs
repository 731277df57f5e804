//! Reading a [`TaskOutput`] off the wire without a second pass. serde reads an internally
//! tagged enum by first copying the whole value into a buffer of its own (to find the tag
//! wherever it is), and for an embedding result that is hundreds of numbers copied, each
//! as its own boxed value, on every result a pool takes. Hearth writes the tag first, so
//! when it comes first an embeddings output is read straight into its vectors; anything
//! else (another task, the tag later in the object) is read as before.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};

use crate::TaskOutput;

/// The fields of [`TaskOutput::Embeddings`], read after its tag.
#[derive(Deserialize)]
struct EmbeddingsFields {
    vectors: Vec<Vec<f32>>,
    tokens: Vec<u32>,
}

/// `deserialize_with` for a [`TaskOutput`] field.
pub(crate) fn read<'de, D: Deserializer<'de>>(deserializer: D) -> Result<TaskOutput, D::Error> {
    deserializer.deserialize_map(OutputVisitor)
}

struct OutputVisitor;

impl<'de> Visitor<'de> for OutputVisitor {
    type Value = TaskOutput;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a task output (an object with a \"task\" field)")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<TaskOutput, A::Error> {
        let mut fields = serde_json::Map::new();
        if let Some(key) = map.next_key::<Cow<'de, str>>()? {
            if key == "task" {
                let tag: Cow<'de, str> = map.next_value()?;
                if tag == "embeddings" {
                    let EmbeddingsFields { vectors, tokens } =
                        EmbeddingsFields::deserialize(de::value::MapAccessDeserializer::new(map))?;
                    return Ok(TaskOutput::Embeddings { vectors, tokens });
                }
                fields.insert(
                    key.into_owned(),
                    serde_json::Value::String(tag.into_owned()),
                );
            } else {
                fields.insert(key.into_owned(), map.next_value()?);
            }
        }
        while let Some((key, value)) = map.next_entry::<String, serde_json::Value>()? {
            fields.insert(key, value);
        }
        TaskOutput::deserialize(serde_json::Value::Object(fields)).map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::ClassScore;

    #[derive(Debug, Deserialize)]
    struct Holder {
        #[serde(deserialize_with = "read")]
        output: TaskOutput,
    }

    fn read_json(json: &str) -> Result<TaskOutput, serde_json::Error> {
        serde_json::from_str::<Holder>(&format!("{{\"output\":{json}}}")).map(|h| h.output)
    }

    #[test]
    fn every_output_reads_as_the_derived_reader_reads_it_whatever_the_field_order() {
        let outputs = [
            TaskOutput::Embeddings {
                vectors: vec![vec![0.25, -1.5], vec![3.0, 0.0]],
                tokens: vec![4, 5],
            },
            TaskOutput::Chat {
                text: "hi".into(),
                prompt_tokens: 3,
                completion_tokens: 1,
                token_ids: vec![7],
                finish_reason: "stop".into(),
            },
            TaskOutput::ImageClassification {
                results: vec![vec![ClassScore {
                    class: 281,
                    label: "cat".into(),
                    probability: 0.5,
                }]],
            },
            TaskOutput::ChatScore { ranks: vec![1, 2] },
        ];
        for output in outputs {
            let json = serde_json::to_string(&output).unwrap();
            assert!(json.starts_with("{\"task\":"), "{json}");
            assert_eq!(read_json(&json).unwrap(), output);
            // The tag last: read the slow way, to the same value.
            let tag = serde_json::to_value(&output).unwrap()["task"].clone();
            let rest = json.strip_prefix(&format!("{{\"task\":{tag},")).unwrap();
            let reordered = format!("{{{},\"task\":{tag}}}", &rest[..rest.len() - 1]);
            assert!(
                reordered.ends_with(&format!("\"task\":{tag}}}")),
                "{reordered}"
            );
            assert_eq!(read_json(&reordered).unwrap(), output);
        }
    }

    #[test]
    fn bad_outputs_are_errors_as_before() {
        for bad in [
            r#"{"task":"embeddings","vectors":[[1.0]]}"#,
            r#"{"task":"embeddings","vectors":"no","tokens":[1]}"#,
            r#"{"task":"dance"}"#,
            r#"{"vectors":[[1.0]],"tokens":[1]}"#,
            r#"[1, 2]"#,
            r#"{}"#,
        ] {
            assert!(read_json(bad).is_err(), "{bad}");
        }
    }
}
