//! Requests made at the same moment, served by one database round trip: one task takes every
//! request waiting when it turns to them (up to a bound) and answers each. Under load one
//! statement serves many jobs; alone, a request waits for nobody.

use std::future::Future;

use tokio::sync::{mpsc, oneshot};

use crate::store::{StoreError, next_batch};

type Reply<A> = oneshot::Sender<Result<A, StoreError>>;

/// A task serving requests `Q` with answers `A` in batches.
pub(super) struct Batcher<Q, A> {
    requests: mpsc::UnboundedSender<(Q, Reply<A>)>,
    task: tokio::task::JoinHandle<()>,
    /// What it does, for errors.
    what: &'static str,
}

impl<Q, A> Drop for Batcher<Q, A> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl<Q: Send + 'static, A: Send + 'static> Batcher<Q, A> {
    /// Start serving with `serve`, which gets up to `max` requests and answers each, in order
    /// (an error for the batch answers every request with it).
    pub(super) fn start<F, Fut>(what: &'static str, max: usize, mut serve: F) -> Self
    where
        F: FnMut(Vec<Q>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Vec<A>, StoreError>> + Send,
    {
        let (requests, mut incoming) = mpsc::unbounded_channel::<(Q, Reply<A>)>();
        let task = tokio::spawn(async move {
            while let Some(batch) = next_batch(&mut incoming, max).await {
                let (requests, replies): (Vec<Q>, Vec<Reply<A>>) = batch.into_iter().unzip();
                match serve(requests).await {
                    Ok(answers) => {
                        for (reply, answer) in replies.into_iter().zip(answers) {
                            let _ = reply.send(Ok(answer));
                        }
                    }
                    Err(error) => {
                        for reply in replies {
                            let _ = reply.send(Err(error.clone()));
                        }
                    }
                }
            }
        });
        Self {
            requests,
            task,
            what,
        }
    }

    /// `request`'s answer, when its batch has been served.
    pub(super) async fn ask(&self, request: Q) -> Result<A, StoreError> {
        let stopped =
            || StoreError::Unavailable(format!("the task that {} has stopped", self.what));
        let (reply, answer) = oneshot::channel();
        self.requests
            .send((request, reply))
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}
