//! Dead-letter queue operations for ops: peek at dead messages, move them back to their
//! source queue, discard them.
//!
//! Peeking receives with a short visibility timeout and gives the messages back at once,
//! because SQS has no read-only browse. Moving one message sends it to the source queue
//! first and deletes it from the DLQ only after the send succeeded: a failure in between
//! can duplicate a message (every handler is idempotent) but never loses one. Moving
//! everything can also be handed to SQS itself ([`Queue::start_move_task`]) where the
//! endpoint supports StartMessageMoveTask; moto does not.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, MessageSystemAttributeName, QueueAttributeName,
};
use chrono::{DateTime, Utc};

use crate::queue::{Queue, QueueError, queue_arn, sqs_error};

/// The message attribute a poison message carries: why it was dead-lettered.
pub const ERROR_ATTRIBUTE: &str = "glassbox_error";

/// One message on a DLQ, held (invisible) until released, moved or discarded.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub message_id: String,
    pub receipt_handle: String,
    pub body: String,
    /// Receives on the source queue and the DLQ together (SQS keeps counting).
    pub receive_count: u32,
    /// When the message was first sent to the source queue.
    pub sent_at: Option<DateTime<Utc>>,
    /// The reason a worker gave when it dead-lettered the message itself (poison).
    pub error: Option<String>,
}

/// Progress of an SQS message move task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MoveTaskProgress {
    /// `RUNNING`, `COMPLETED`, `CANCELLING`, `CANCELLED` or `FAILED`.
    pub status: String,
    pub moved: u64,
    pub to_move: Option<u64>,
    pub failure_reason: Option<String>,
}

impl MoveTaskProgress {
    pub fn is_finished(&self) -> bool {
        !matches!(self.status.as_str(), "RUNNING" | "CANCELLING")
    }
}

fn epoch_ms(value: Option<&String>) -> Option<DateTime<Utc>> {
    value
        .and_then(|text| text.parse::<i64>().ok())
        .and_then(DateTime::from_timestamp_millis)
}

impl Queue {
    /// Receives up to `limit` messages from the DLQ and hides them for `hold`. Callers
    /// move, discard or [`release`](Self::release_dead_letters) each one.
    pub async fn receive_dead_letters(
        &self,
        limit: usize,
        hold: Duration,
    ) -> Result<Vec<DeadLetter>, QueueError> {
        let mut letters = Vec::new();
        let mut seen = HashSet::new();
        while letters.len() < limit {
            let want = (limit - letters.len()).min(10) as i32;
            // A short wait makes real SQS ask every server, so an empty answer means
            // empty, not unlucky sampling.
            let output = self
                .client
                .receive_message()
                .queue_url(&self.dlq_url)
                .max_number_of_messages(want)
                .wait_time_seconds(1)
                .visibility_timeout(hold.as_secs().clamp(1, 12 * 3600) as i32)
                .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
                .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
                .message_attribute_names(ERROR_ATTRIBUTE)
                .send()
                .await
                .map_err(sqs_error("ReceiveMessage"))?;
            let batch = output.messages.unwrap_or_default();
            if batch.is_empty() {
                break;
            }
            for message in batch {
                let attributes: HashMap<MessageSystemAttributeName, String> =
                    message.attributes.unwrap_or_default();
                let message_id = message.message_id.unwrap_or_default();
                if !seen.insert(message_id.clone()) {
                    continue;
                }
                letters.push(DeadLetter {
                    message_id,
                    receipt_handle: message.receipt_handle.unwrap_or_default(),
                    body: message.body.unwrap_or_default(),
                    receive_count: attributes
                        .get(&MessageSystemAttributeName::ApproximateReceiveCount)
                        .and_then(|value| value.parse().ok())
                        .unwrap_or(1),
                    sent_at: epoch_ms(attributes.get(&MessageSystemAttributeName::SentTimestamp)),
                    error: message
                        .message_attributes
                        .unwrap_or_default()
                        .remove(ERROR_ATTRIBUTE)
                        .and_then(|value| value.string_value),
                });
            }
        }
        Ok(letters)
    }

    /// Messages on the DLQ now, visible or held (approximate, as SQS counts).
    pub async fn dead_letter_count(&self) -> Result<u64, QueueError> {
        let attributes = self
            .client
            .get_queue_attributes()
            .queue_url(&self.dlq_url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .map_err(sqs_error("GetQueueAttributes"))?
            .attributes
            .unwrap_or_default();
        Ok([
            QueueAttributeName::ApproximateNumberOfMessages,
            QueueAttributeName::ApproximateNumberOfMessagesNotVisible,
        ]
        .iter()
        .filter_map(|name| attributes.get(name)?.parse::<u64>().ok())
        .sum())
    }

    /// Makes held DLQ messages visible again at once.
    pub async fn release_dead_letters(&self, letters: &[DeadLetter]) -> Result<(), QueueError> {
        for batch in letters.chunks(10) {
            let entries = batch
                .iter()
                .enumerate()
                .map(|(index, letter)| {
                    ChangeMessageVisibilityBatchRequestEntry::builder()
                        .id(index.to_string())
                        .receipt_handle(&letter.receipt_handle)
                        .visibility_timeout(0)
                        .build()
                        .expect("id and receipt handle are set")
                })
                .collect::<Vec<_>>();
            self.client
                .change_message_visibility_batch()
                .queue_url(&self.dlq_url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(sqs_error("ChangeMessageVisibilityBatch"))?;
        }
        Ok(())
    }

    /// Sends a held DLQ message back to the source queue, then deletes it from the DLQ.
    /// The new copy starts with a fresh receive count.
    pub async fn move_dead_letter(&self, letter: &DeadLetter) -> Result<(), QueueError> {
        self.client
            .send_message()
            .queue_url(&self.url)
            .message_body(&letter.body)
            .send()
            .await
            .map_err(sqs_error("SendMessage"))?;
        self.discard_dead_letter(letter).await
    }

    /// Deletes a held DLQ message for good.
    pub async fn discard_dead_letter(&self, letter: &DeadLetter) -> Result<(), QueueError> {
        self.delete_received(&self.dlq_url, &letter.receipt_handle)
            .await
    }

    /// Asks SQS to move every DLQ message back to the source queue at up to
    /// `per_second` messages a second. Returns the task handle, or the endpoint's
    /// refusal (moto has no StartMessageMoveTask), in which case the caller moves the
    /// messages itself.
    pub async fn start_move_task(&self, per_second: Option<i32>) -> Result<String, QueueError> {
        let source_arn = queue_arn(&self.client, &self.dlq_url).await?;
        let destination_arn = queue_arn(&self.client, &self.url).await?;
        let output = self
            .client
            .start_message_move_task()
            .source_arn(source_arn)
            .destination_arn(destination_arn)
            .set_max_number_of_messages_per_second(per_second)
            .send()
            .await
            .map_err(sqs_error("StartMessageMoveTask"))?;
        output.task_handle.ok_or_else(|| QueueError::Sqs {
            operation: "StartMessageMoveTask",
            message: "no task handle in the answer".into(),
        })
    }

    /// Progress of the move task `task_handle` started on this queue's DLQ.
    pub async fn move_task_progress(
        &self,
        task_handle: &str,
    ) -> Result<Option<MoveTaskProgress>, QueueError> {
        let source_arn = queue_arn(&self.client, &self.dlq_url).await?;
        let output = self
            .client
            .list_message_move_tasks()
            .source_arn(source_arn)
            .max_results(10)
            .send()
            .await
            .map_err(sqs_error("ListMessageMoveTasks"))?;
        Ok(output
            .results
            .unwrap_or_default()
            .into_iter()
            .find(|task| task.task_handle.as_deref() == Some(task_handle))
            .map(|task| MoveTaskProgress {
                status: task.status.unwrap_or_default(),
                moved: task.approximate_number_of_messages_moved.max(0) as u64,
                to_move: task
                    .approximate_number_of_messages_to_move
                    .map(|count| count.max(0) as u64),
                failure_reason: task.failure_reason,
            }))
    }
}
