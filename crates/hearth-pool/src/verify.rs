//! Verification: a share of jobs is answered twice before anyone is paid: every job of a node
//! on probation, fewer as its record grows ([`crate::reputation`]). The share is drawn after
//! the node answered, so it cannot tell which answers are checked, and only established nodes
//! check others.
//!
//! - Embeddings: a second node embeds the same texts; every vector pair must reach cosine
//!   [`MIN_COSINE`].
//! - Image classification: a second node classifies the same images; the top class must be
//!   the same and its probability within [`MAX_PROBABILITY_DIFF`].
//! - Chat: answers are sampled, so a second answer would differ; instead a second node scores
//!   the first answer by teacher forcing ([`TaskPayload::ChatScore`]): the answer's tokens must
//!   rank among its own most likely ones ([`chat_answer_holds`]).
//!
//! When two answers disagree a third decides; the node in the minority gets a strike and no
//! credit. A chat answer that fails scoring is struck and the job redone by another node.

use hearth_protocol::{TaskOutput, TaskPayload};

/// Cosine every embedding must reach against the other node's.
pub const MIN_COSINE: f64 = 0.999;
/// Largest difference between the top class's probabilities.
pub const MAX_PROBABILITY_DIFF: f32 = 0.02;
/// A chat answer holds when this share of its tokens are in the scorer's top [`TOP_RANK`]...
pub const MIN_SHARE_IN_TOP: f64 = 0.95;
/// ...(ranks below this count as "top")...
pub const TOP_RANK: u32 = 5;
/// ...and none is ranked this low or lower.
pub const MAX_RANK: u32 = 50;

/// One node's answer to a job under verification.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Answer {
    pub node_id: String,
    pub output: TaskOutput,
    /// Units the answer is worth (tokens, images), as checked.
    pub units: u64,
}

/// What to do after an answer came in.
#[derive(Debug, PartialEq)]
pub enum Verdict {
    /// Another node must answer first: run `check_task` (chat scoring) or the job again.
    NeedAnother { check_task: Option<TaskPayload> },
    /// Pay `paid`, strike `struck`, give the customer `output`.
    Settled {
        paid: Vec<Answer>,
        struck: Vec<String>,
        output: TaskOutput,
    },
    /// A chat answer failed scoring: strike its node, pay the scorer, run the job again
    /// (without verification) on another node.
    Redo {
        paid: Vec<Answer>,
        struck: Vec<String>,
    },
    /// Three answers and no two agree: nobody is paid and the customer gets an error.
    Unresolved,
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum();
    let na: f64 = a.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|y| f64::from(*y).powi(2)).sum::<f64>().sqrt();
    if na == 0.0 || nb == 0.0 {
        return 0.0;
    }
    dot / (na * nb)
}

/// Whether two answers to the same embeddings or classification job agree.
pub fn agree(a: &TaskOutput, b: &TaskOutput) -> bool {
    match (a, b) {
        (
            TaskOutput::Embeddings { vectors: va, .. },
            TaskOutput::Embeddings { vectors: vb, .. },
        ) => {
            va.len() == vb.len()
                && va
                    .iter()
                    .zip(vb)
                    .all(|(x, y)| x.len() == y.len() && cosine(x, y) >= MIN_COSINE)
        }
        (
            TaskOutput::ImageClassification { results: ra },
            TaskOutput::ImageClassification { results: rb },
        ) => {
            ra.len() == rb.len()
                && ra
                    .iter()
                    .zip(rb)
                    .all(|(x, y)| match (x.first(), y.first()) {
                        (Some(x), Some(y)) => {
                            x.class == y.class
                                && (x.probability - y.probability).abs() <= MAX_PROBABILITY_DIFF
                        }
                        _ => false,
                    })
        }
        _ => false,
    }
}

/// Whether a chat answer's tokens are ones the scoring node's model would also have picked.
pub fn chat_answer_holds(ranks: &[u32]) -> bool {
    // No ranks is no evidence: it never holds.
    if ranks.is_empty() {
        return false;
    }
    let in_top = ranks.iter().filter(|&&r| r < TOP_RANK).count();
    in_top as f64 / ranks.len() as f64 >= MIN_SHARE_IN_TOP && ranks.iter().all(|&r| r < MAX_RANK)
}

/// Decide, given the job and the answers so far (oldest first, each from a different node).
pub fn judge(task: &TaskPayload, answers: &[Answer]) -> Verdict {
    match task {
        TaskPayload::Chat { messages, .. } => match answers {
            [first] => match &first.output {
                TaskOutput::Chat { token_ids, .. } => Verdict::NeedAnother {
                    check_task: Some(TaskPayload::ChatScore {
                        messages: messages.clone(),
                        token_ids: token_ids.clone(),
                    }),
                },
                _ => Verdict::Unresolved,
            },
            [first, scorer, ..] => match &scorer.output {
                TaskOutput::ChatScore { ranks } if chat_answer_holds(ranks) => Verdict::Settled {
                    paid: vec![first.clone(), scorer.clone()],
                    struck: Vec::new(),
                    output: first.output.clone(),
                },
                TaskOutput::ChatScore { .. } => Verdict::Redo {
                    paid: vec![scorer.clone()],
                    struck: vec![first.node_id.clone()],
                },
                _ => Verdict::Unresolved,
            },
            [] => Verdict::NeedAnother { check_task: None },
        },
        _ => match answers {
            [] | [_] => Verdict::NeedAnother { check_task: None },
            [a, b] if agree(&a.output, &b.output) => Verdict::Settled {
                paid: vec![a.clone(), b.clone()],
                struck: Vec::new(),
                output: a.output.clone(),
            },
            [_, _] => Verdict::NeedAnother { check_task: None },
            [a, b, c, ..] => {
                // The pair that agrees wins; the third is struck.
                let pairs = [(a, b, c), (a, c, b), (b, c, a)];
                match pairs.iter().find(|(x, y, _)| agree(&x.output, &y.output)) {
                    Some((x, y, odd)) => Verdict::Settled {
                        paid: vec![(*x).clone(), (*y).clone()],
                        struck: vec![odd.node_id.clone()],
                        output: x.output.clone(),
                    },
                    None => Verdict::Unresolved,
                }
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use hearth_protocol::{ChatMessage, ChatParams, ClassScore};

    use super::*;

    fn embed(node: &str, vectors: Vec<Vec<f32>>) -> Answer {
        Answer {
            node_id: node.into(),
            units: 1,
            output: TaskOutput::Embeddings {
                tokens: vec![1; vectors.len()],
                vectors,
            },
        }
    }

    #[test]
    fn embeddings_agree_by_cosine_and_the_odd_one_out_is_struck() {
        let task = TaskPayload::Embeddings {
            texts: vec!["a".into()],
        };
        let good = vec![vec![1.0, 2.0, 3.0]];
        let close = vec![vec![1.0, 2.0, 3.001]];
        let wrong = vec![vec![3.0, 2.0, 1.0]];
        assert_eq!(
            judge(&task, &[embed("a", good.clone())]),
            Verdict::NeedAnother { check_task: None }
        );
        assert!(matches!(
            judge(&task, &[embed("a", good.clone()), embed("b", close.clone())]),
            Verdict::Settled { struck, .. } if struck.is_empty()
        ));
        assert_eq!(
            judge(
                &task,
                &[embed("a", wrong.clone()), embed("b", good.clone())]
            ),
            Verdict::NeedAnother { check_task: None }
        );
        match judge(
            &task,
            &[
                embed("a", wrong.clone()),
                embed("b", good.clone()),
                embed("c", close),
            ],
        ) {
            Verdict::Settled { paid, struck, .. } => {
                assert_eq!(struck, vec!["a".to_owned()]);
                let ids: Vec<&str> = paid.iter().map(|a| a.node_id.as_str()).collect();
                assert_eq!(ids, ["b", "c"]);
            }
            other => panic!("{other:?}"),
        }
        let other = vec![vec![0.0, 0.0, 1.0]];
        assert_eq!(
            judge(
                &task,
                &[embed("a", wrong), embed("b", good), embed("c", other)]
            ),
            Verdict::Unresolved
        );
    }

    #[test]
    fn image_answers_agree_on_the_top_class_and_its_probability() {
        let answer = |class, probability| TaskOutput::ImageClassification {
            results: vec![vec![ClassScore {
                class,
                label: String::new(),
                probability,
            }]],
        };
        assert!(agree(&answer(285, 0.90), &answer(285, 0.91)));
        assert!(!agree(&answer(285, 0.90), &answer(285, 0.80)));
        assert!(!agree(&answer(285, 0.90), &answer(281, 0.90)));
    }

    #[test]
    fn chat_answers_are_scored_by_teacher_forcing() {
        let task = TaskPayload::Chat {
            messages: vec![ChatMessage {
                role: "user".into(),
                content: "hi".into(),
            }],
            params: ChatParams {
                max_tokens: 8,
                temperature: 0.7,
                top_p: 1.0,
                seed: 1,
                stop: vec![],
                stream: false,
            },
        };
        let first = Answer {
            node_id: "a".into(),
            units: 3,
            output: TaskOutput::Chat {
                text: "Hi!".into(),
                prompt_tokens: 5,
                completion_tokens: 3,
                token_ids: vec![7, 8, 9],
                finish_reason: "stop".into(),
            },
        };
        match judge(&task, std::slice::from_ref(&first)) {
            Verdict::NeedAnother {
                check_task: Some(TaskPayload::ChatScore { token_ids, .. }),
            } => assert_eq!(token_ids, vec![7, 8, 9]),
            other => panic!("{other:?}"),
        }
        let scored = |ranks: Vec<u32>| Answer {
            node_id: "b".into(),
            units: 3,
            output: TaskOutput::ChatScore { ranks },
        };
        assert!(matches!(
            judge(&task, &[first.clone(), scored(vec![0, 1, 0])]),
            Verdict::Settled { .. }
        ));
        assert_eq!(
            judge(&task, &[first.clone(), scored(vec![0, 400, 0])]),
            Verdict::Redo {
                paid: vec![scored(vec![0, 400, 0])],
                struck: vec!["a".into()],
            }
        );
        assert!(chat_answer_holds(&[0; 100]));
        assert!(!chat_answer_holds(&[]), "empty ranks are no evidence");
        assert!(!chat_answer_holds(
            &[[0; 90].as_slice(), &[10; 10]].concat()
        ));
    }
}
