//! Results: taken once for payment, answers recorded for verification, outcomes handed to the
//! customer, and jobs put back (or failed) when a result is refused or a lease is lost.

use super::*;

impl Queue {
    /// Take a result for payment: the lease must be this node's and live. The job is marked so
    /// that no second result is accepted while the receipt is written. A first answer is
    /// checked by another node with chance `verification_share` (the answering node's).
    pub async fn accept_result(
        &self,
        job_id: &str,
        node_id: &str,
        lease_id: &str,
        verification_share: f64,
    ) -> Result<Accepted, LeaseError> {
        let expires_unix_ms = now_unix_ms() + self.config.lease_ms;
        self.edit(job_id, |job| {
            if !job.is_leased_to(node_id, lease_id) {
                return (Edit::keep(), Err(LeaseError::NotYourLease));
            }
            let (Some(leased_task), Some(task), Some(metered)) = (
                job.leased_task().cloned(),
                job.body.task.clone(),
                job.body.metered.clone(),
            ) else {
                return (Edit::keep(), Err(LeaseError::UnknownJob));
            };
            job.state = JobState::Paying {
                node_id: node_id.to_owned(),
                lease_id: lease_id.to_owned(),
                expires_unix_ms,
            };
            if job.body.answers.is_empty() {
                job.body.verify = draw() < verification_share;
            }
            let accepted = Accepted {
                model: job.model.clone(),
                leased_task,
                task,
                metered,
                customer: job.body.customer.clone(),
                streamed: job.body.streamed.clone(),
                verify: job.body.verify,
                lease_to_result_ms: now_unix_ms().saturating_sub(job.leased_unix_ms),
            };
            (Edit::put(Vec::new()), Ok(accepted))
        })
        .await?
    }

    /// Add an answer to a job under verification and decide. On [`Verdict::NeedAnother`] and
    /// [`Verdict::Redo`] the job is back in the queue for a node that has not answered it; on
    /// [`Verdict::Unresolved`] the customer gets an error. On [`Verdict::Settled`] the caller
    /// pays and then calls [`Queue::complete`].
    pub async fn record_answer(&self, job_id: &str, answer: Answer) -> Result<Verdict, StoreError> {
        let verdict = self
            .edit(job_id, |job| {
                let Some(task) = job.body.task.clone() else {
                    return (Edit::keep(), Verdict::Unresolved);
                };
                job.exclude.push(answer.node_id.clone());
                job.body.answers.push(answer.clone());
                let verdict = verify::judge(&task, &job.body.answers);
                let edit = match &verdict {
                    Verdict::NeedAnother { check_task } => {
                        let mut events = Vec::new();
                        if job.body.stream && !job.body.answered {
                            // The customer has read the text as it came: they get the answer
                            // now, and the node is paid once the check holds.
                            job.body.answered = true;
                            events.push(QueueEvent::Finished {
                                job_id: job.id.clone(),
                            });
                        }
                        job.body.check_task = check_task.clone();
                        let mut edit = job.requeue();
                        edit.events.extend(events);
                        edit
                    }
                    // The customer already has the streamed text: nothing to redo.
                    Verdict::Redo { .. } if job.body.answered => Edit::delete(),
                    Verdict::Redo { .. } => {
                        // A fresh answer from another node, drawn for a check like any other.
                        job.body.answers.clear();
                        job.body.check_task = None;
                        job.requeue()
                    }
                    Verdict::Unresolved => job.finish(Err(JobFailure::Unverified)),
                    // Still being paid: the caller finishes it.
                    Verdict::Settled { .. } => Edit::put(Vec::new()),
                };
                (edit, verdict)
            })
            .await;
        match verdict {
            Ok(verdict) => Ok(verdict),
            Err(LeaseError::Store(error)) => Err(error),
            Err(_) => Ok(Verdict::Unresolved),
        }
    }

    /// The receipt is stored: hand the result to the customer (wherever it waits). A
    /// customer of this process is answered directly and the job forgotten in the same step;
    /// one elsewhere is told through the store.
    pub async fn complete(&self, job_id: &str, completed: Completed) -> Result<(), StoreError> {
        let here = self.local.lock().customers.contains_key(job_id);
        let edited = self
            .edit(job_id, |job| {
                if here && !job.body.answered && !job.body.cancelled {
                    let stream = (
                        std::mem::take(&mut job.body.streamed),
                        std::mem::take(&mut job.body.stream_breaks),
                    );
                    return (Edit::delete(), Some(stream));
                }
                (job.finish(Ok(completed.output.clone())), None)
            })
            .await;
        match edited {
            Ok(Some((streamed, breaks))) => {
                // The pieces its events have not brought yet, then the answer.
                if let Some(customer) = self.local.lock().customers.get_mut(job_id) {
                    customer.pass_stream(&streamed, &breaks);
                }
                tell(&self.local, job_id, Ok(completed.output));
                Ok(())
            }
            Ok(None) | Err(LeaseError::UnknownJob | LeaseError::NotYourLease) => Ok(()),
            Err(LeaseError::Store(error)) => Err(error),
        }
    }

    /// A result was refused (wrong shape, failed checks) or could not be paid: the job counts
    /// an attempt and goes back to the queue, or fails when out of attempts.
    pub async fn reject_result(&self, job_id: &str) -> Result<(), StoreError> {
        self.requeue_or_fail(job_id, |_| true).await
    }

    /// Count an attempt against `job_id` (if `still` holds for it) and queue it again, or end
    /// it when out of attempts or time.
    pub(super) async fn requeue_or_fail(
        &self,
        job_id: &str,
        still: impl Fn(&JobRow) -> bool + Send + Sync,
    ) -> Result<(), StoreError> {
        let max_attempts = self.config.max_attempts;
        let now = now_unix_ms();
        match self
            .edit(job_id, |job| {
                if !still(job) {
                    return (Edit::keep(), ());
                }
                if job.is_partly_streamed() {
                    return (job.finish(Err(JobFailure::StreamBroken)), ());
                }
                job.attempts += 1;
                let edit = if job.body.cancelled {
                    Edit::delete()
                } else if job.attempts >= max_attempts {
                    job.finish(Err(JobFailure::Exhausted(job.attempts)))
                } else if job.deadline_unix_ms <= now {
                    job.finish(Err(JobFailure::Expired))
                } else {
                    job.requeue()
                };
                (edit, ())
            })
            .await
        {
            Ok(()) | Err(LeaseError::UnknownJob | LeaseError::NotYourLease) => Ok(()),
            Err(LeaseError::Store(error)) => Err(error),
        }
    }
}
