//! Deleting finished messages in batches.
//!
//! Every job ends by deleting its message. One DeleteMessage per job would be one SQS
//! call per job on top of its share of a receive; the [`Acker`] gathers the receipt
//! handles of jobs that finish close together and deletes up to ten with one
//! DeleteMessageBatch. A handle waits at most [`ACK_LINGER`] for company. The message
//! stays hidden meanwhile, and if the worker dies before the flush, the message comes
//! back and the claim finds the job finished: one more receive, nothing run twice.
//!
//! Closing the acker (on shutdown, after the last job ended) flushes what is left.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use tracing::warn;

use crate::metrics as names;
use crate::queue::Queue;

/// The longest a finished job's receipt handle waits for others to share its call.
pub const ACK_LINGER: Duration = Duration::from_millis(50);
/// How long a stopping worker waits for its last deletes.
pub const ACK_CLOSE_LIMIT: Duration = Duration::from_secs(5);
/// DeleteMessageBatch takes at most ten entries.
const BATCH: usize = 10;
/// Batches in flight at once; beyond it, handles wait in the channel and batches fill up.
const FLUSHES_IN_FLIGHT: usize = 4;

/// A cheap handle for the jobs: [`AckSender::ack`] queues a message for deletion.
#[derive(Clone)]
pub struct AckSender(mpsc::UnboundedSender<String>);

impl AckSender {
    pub fn ack(&self, receipt_handle: &str) {
        // The receiver lives until every sender is gone, so this cannot fail.
        let _ = self.0.send(receipt_handle.to_string());
    }
}

pub struct Acker {
    sender: AckSender,
    task: JoinHandle<()>,
}

impl Acker {
    pub fn start(queue: Arc<Queue>, linger: Duration) -> Self {
        let (sender, receiver) = mpsc::unbounded_channel();
        Self {
            sender: AckSender(sender),
            task: tokio::spawn(run(queue, receiver, linger)),
        }
    }

    pub fn sender(&self) -> AckSender {
        self.sender.clone()
    }

    /// Deletes every handle queued so far and stops, waiting at most `limit` for SQS:
    /// shutdown must not hang on an endpoint that stopped answering. Handles sent through
    /// clones that are still alive keep it running until those are dropped too.
    pub async fn close(self, limit: Duration) {
        drop(self.sender);
        let mut task = self.task;
        match tokio::time::timeout(limit, &mut task).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                warn!(%error, "the acker stopped abnormally; unacknowledged messages will come back and be found finished")
            }
            Err(_) => {
                task.abort();
                warn!(
                    limit_secs = limit.as_secs_f64(),
                    "sqs did not take the last deletes in time; those messages will come back and be found finished"
                );
            }
        }
    }
}

async fn run(queue: Arc<Queue>, mut receiver: mpsc::UnboundedReceiver<String>, linger: Duration) {
    let mut flushes = JoinSet::new();
    while let Some(first) = receiver.recv().await {
        let mut batch = Vec::with_capacity(BATCH);
        batch.push(first);
        let until = tokio::time::Instant::now() + linger;
        while batch.len() < BATCH {
            match tokio::time::timeout_at(until, receiver.recv()).await {
                Ok(Some(handle)) => batch.push(handle),
                // Closed (drained) or the linger is over.
                Ok(None) | Err(_) => break,
            }
        }
        if flushes.len() >= FLUSHES_IN_FLIGHT {
            flushes.join_next().await;
        }
        flushes.spawn(flush(queue.clone(), batch));
    }
    while flushes.join_next().await.is_some() {}
}

async fn flush(queue: Arc<Queue>, batch: Vec<String>) {
    metrics::histogram!(names::ACK_BATCH_SIZE, "queue" => queue.name.clone())
        .record(batch.len() as f64);
    match queue.delete_batch(&batch).await {
        Ok(failed) => {
            for (_, reason) in failed {
                // Typically a handle that expired: the message was received again, and
                // that delivery's claim finds the job finished.
                warn!(
                    reason,
                    "sqs did not delete a finished job's message; it will be redelivered and found finished"
                );
            }
        }
        Err(error) => warn!(
            %error,
            messages = batch.len(),
            "delete batch failed; the messages will be redelivered and found finished"
        ),
    }
}

#[cfg(test)]
mod tests {
    use aws_sdk_sqs::config::{BehaviorVersion, Credentials, Region};

    use super::*;

    #[tokio::test]
    async fn closing_gives_up_on_an_endpoint_that_never_answers() {
        // Accepts connections and never answers them.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let silent = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((connection, _)) = listener.accept().await {
                held.push(connection);
            }
        });
        let config = aws_sdk_sqs::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url(format!("http://{address}"))
            .credentials_provider(Credentials::new("test", "test", None, None, "test"))
            .build();
        let queue = Queue {
            client: aws_sdk_sqs::Client::from_conf(config),
            name: "silent".into(),
            url: format!("http://{address}/000000000000/silent"),
            dlq_url: format!("http://{address}/000000000000/silent-dlq"),
            max_receive_count: 3,
            visibility_timeout: Duration::from_secs(30),
        };
        let acker = Acker::start(Arc::new(queue), Duration::ZERO);
        acker.sender().ack("a-receipt-handle");
        tokio::time::timeout(
            Duration::from_secs(60),
            acker.close(Duration::from_millis(500)),
        )
        .await
        .expect("close returned after its limit, not after the endpoint answered");
        silent.abort();
    }
}
