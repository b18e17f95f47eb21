//! SQS queues: the message envelope, sending, receiving, visibility and DLQ plumbing.
//!
//! A message is only a wake-up: it carries ids, a kind and trace context, never state.
//! Postgres is the truth, so any message may arrive twice, late or never.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_sqs::types::{
    DeleteMessageBatchRequestEntry, MessageSystemAttributeName, QueueAttributeName,
    SendMessageBatchRequestEntry,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::aws::describe_sdk_error;
use crate::telemetry::TraceCarrier;

/// The message attributes that carry W3C trace context (the header names of the spec).
const TRACEPARENT: &str = "traceparent";
const TRACESTATE: &str = "tracestate";

/// `carrier`'s trace-context fields as SQS String attributes; anything else in it, and
/// values SQS would refuse (empty, over 512 bytes), are left out.
fn trace_attributes(
    carrier: &TraceCarrier,
) -> impl Iterator<Item = (String, aws_sdk_sqs::types::MessageAttributeValue)> + '_ {
    carrier
        .iter()
        .filter(|(name, value)| {
            (name.as_str() == TRACEPARENT || name.as_str() == TRACESTATE)
                && !value.is_empty()
                && value.len() <= 512
        })
        .filter_map(|(name, value)| {
            let attribute = aws_sdk_sqs::types::MessageAttributeValue::builder()
                .data_type("String")
                .string_value(value)
                .build()
                .ok()?;
            Some((name.clone(), attribute))
        })
}

/// What a job message says: which job, of which org, and which kind of work.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobMessage {
    /// Envelope version, for rolling upgrades.
    pub v: u32,
    pub kind: JobKind,
    pub job_id: Uuid,
    pub org_id: Uuid,
    /// W3C trace id of the request that caused the job, for log correlation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
}

impl JobMessage {
    pub const VERSION: u32 = 1;

    pub fn new(kind: JobKind, job_id: Uuid, org_id: Uuid) -> Self {
        Self {
            v: Self::VERSION,
            kind,
            job_id,
            org_id,
            trace_id: None,
        }
    }

    pub fn parse(body: &str) -> Result<Self, String> {
        let message: Self = serde_json::from_str(body)
            .map_err(|error| format!("unparseable job message: {error}"))?;
        if message.v != Self::VERSION {
            return Err(format!("unsupported job message version {}", message.v));
        }
        Ok(message)
    }

    pub fn to_body(&self) -> String {
        serde_json::to_string(self).expect("a job message always serialises")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum JobKind {
    /// Extract, chunk, embed and store one file.
    #[serde(rename = "file.process")]
    FileProcess,
    /// Run (or resume) one agent execution.
    #[serde(rename = "agent.run")]
    AgentRun,
    /// A clock tick (EventBridge Scheduler on AWS): fire the Postgres schedules that are
    /// due. Its ids are nil; the schedules' own (schedule, fire time) key keeps each tick
    /// once, whoever fires it.
    #[serde(rename = "schedule.tick")]
    ScheduleTick,
}

/// The logical name of the queue that carries file jobs (and clock ticks). Queues are
/// named logically in the outbox and in ops routes, so a row never holds an
/// account-specific URL.
pub const FILE_JOBS: &str = "file-jobs";
/// The logical name of the queue that carries agent runs.
pub const AGENT_JOBS: &str = "agent-jobs";

impl JobKind {
    pub const ALL: [JobKind; 3] = [Self::FileProcess, Self::AgentRun, Self::ScheduleTick];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::FileProcess => "file.process",
            Self::AgentRun => "agent.run",
            Self::ScheduleTick => "schedule.tick",
        }
    }

    /// The kind named `name` (`file.process`, `agent.run`, `schedule.tick`).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == name)
    }

    /// The logical queue this kind of job travels on: the one place that pairs a kind
    /// with a queue, so an outbox entry can never name the wrong one.
    pub fn queue(self) -> &'static str {
        match self {
            // EventBridge Scheduler sends ticks to file-jobs, whose worker fires them.
            Self::FileProcess | Self::ScheduleTick => FILE_JOBS,
            Self::AgentRun => AGENT_JOBS,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("sqs {operation} failed: {message}")]
    Sqs {
        operation: &'static str,
        message: String,
    },
    #[error("queue {0} has no RedrivePolicy; every queue needs a DLQ")]
    NoRedrivePolicy(String),
}

pub(crate) fn sqs_error<E, R>(
    operation: &'static str,
) -> impl FnOnce(aws_sdk_sqs::error::SdkError<E, R>) -> QueueError
where
    E: std::error::Error + 'static,
    R: std::fmt::Debug,
{
    move |error| QueueError::Sqs {
        operation,
        message: describe_sdk_error(&error),
    }
}

/// The ARN of the queue at `url`.
pub(crate) async fn queue_arn(
    client: &aws_sdk_sqs::Client,
    url: &str,
) -> Result<String, QueueError> {
    Ok(client
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(sqs_error("GetQueueAttributes"))?
        .attributes
        .unwrap_or_default()
        .remove(&QueueAttributeName::QueueArn)
        .unwrap_or_default())
}

/// One received message.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub message_id: String,
    pub receipt_handle: String,
    pub body: String,
    /// How many times SQS has handed this message out, this time included.
    pub receive_count: u32,
    /// When the message was first sent, for queue-wait metrics.
    pub sent_at_epoch_ms: Option<u64>,
    /// The W3C trace context the message carries as attributes (`traceparent`,
    /// `tracestate`); empty when the sender exported no trace.
    pub trace_context: TraceCarrier,
}

/// One message for [`Queue::send_batch`].
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// The caller's id for the entry, unique within the batch.
    pub id: String,
    pub body: String,
    /// Sent as String message attributes, so the consumer's spans join the trace.
    pub trace_context: TraceCarrier,
}

/// A source queue together with its DLQ and redrive settings.
#[derive(Debug, Clone)]
pub struct Queue {
    pub(crate) client: aws_sdk_sqs::Client,
    pub name: String,
    pub url: String,
    pub dlq_url: String,
    pub max_receive_count: u32,
    pub visibility_timeout: Duration,
}

impl Queue {
    /// Looks up a queue by name or URL and reads its redrive policy, so the workers'
    /// idea of `maxReceiveCount` always matches the queue's.
    pub async fn open(client: &aws_sdk_sqs::Client, name_or_url: &str) -> Result<Self, QueueError> {
        let url = if name_or_url.starts_with("http://") || name_or_url.starts_with("https://") {
            name_or_url.to_string()
        } else {
            client
                .get_queue_url()
                .queue_name(name_or_url)
                .send()
                .await
                .map_err(sqs_error("GetQueueUrl"))?
                .queue_url
                .unwrap_or_default()
        };
        let attributes = client
            .get_queue_attributes()
            .queue_url(&url)
            .attribute_names(QueueAttributeName::RedrivePolicy)
            .attribute_names(QueueAttributeName::VisibilityTimeout)
            .send()
            .await
            .map_err(sqs_error("GetQueueAttributes"))?
            .attributes
            .unwrap_or_default();
        let name = url.rsplit('/').next().unwrap_or(&url).to_string();
        let policy = attributes
            .get(&QueueAttributeName::RedrivePolicy)
            .ok_or_else(|| QueueError::NoRedrivePolicy(name.clone()))?;
        let policy: serde_json::Value =
            serde_json::from_str(policy).map_err(|_| QueueError::NoRedrivePolicy(name.clone()))?;
        let max_receive_count = match &policy["maxReceiveCount"] {
            serde_json::Value::Number(number) => number.as_u64().unwrap_or(5) as u32,
            serde_json::Value::String(text) => text.parse().unwrap_or(5),
            _ => 5,
        };
        let dlq_arn = policy["deadLetterTargetArn"]
            .as_str()
            .ok_or_else(|| QueueError::NoRedrivePolicy(name.clone()))?;
        let dlq_name = dlq_arn.rsplit(':').next().unwrap_or_default();
        let dlq_url = client
            .get_queue_url()
            .queue_name(dlq_name)
            .send()
            .await
            .map_err(sqs_error("GetQueueUrl"))?
            .queue_url
            .unwrap_or_default();
        let visibility_secs = attributes
            .get(&QueueAttributeName::VisibilityTimeout)
            .and_then(|value| value.parse().ok())
            .unwrap_or(30);
        Ok(Self {
            client: client.clone(),
            name,
            url,
            dlq_url,
            max_receive_count,
            visibility_timeout: Duration::from_secs(visibility_secs),
        })
    }

    /// Creates the queue and its DLQ when missing (local stacks and tests; CDK owns them
    /// on AWS), then opens it.
    pub async fn ensure(
        client: &aws_sdk_sqs::Client,
        name: &str,
        max_receive_count: u32,
        visibility_timeout_secs: u32,
    ) -> Result<Self, QueueError> {
        let dlq_name = format!("{name}-dlq");
        let dlq_url = client
            .create_queue()
            .queue_name(&dlq_name)
            .attributes(
                QueueAttributeName::MessageRetentionPeriod,
                (14 * 24 * 3600).to_string(),
            )
            .send()
            .await
            .map_err(sqs_error("CreateQueue"))?
            .queue_url
            .unwrap_or_default();
        let dlq_arn = queue_arn(client, &dlq_url).await?;
        let redrive = serde_json::json!({ "deadLetterTargetArn": dlq_arn, "maxReceiveCount": max_receive_count.to_string() });
        client
            .create_queue()
            .queue_name(name)
            .attributes(QueueAttributeName::RedrivePolicy, redrive.to_string())
            .attributes(
                QueueAttributeName::VisibilityTimeout,
                visibility_timeout_secs.to_string(),
            )
            .attributes(
                QueueAttributeName::MessageRetentionPeriod,
                (4 * 24 * 3600).to_string(),
            )
            .send()
            .await
            .map_err(sqs_error("CreateQueue"))?;
        Self::open(client, name).await
    }

    /// Opens the queue, or creates it (with its DLQ) first when the settings ask for it
    /// (local stacks and tests).
    pub async fn from_settings(
        client: &aws_sdk_sqs::Client,
        name_or_url: &str,
        settings: &crate::config::QueueSettings,
    ) -> Result<Self, QueueError> {
        if settings.create {
            Self::ensure(
                client,
                name_or_url,
                settings.max_receive_count,
                settings.visibility_timeout_secs,
            )
            .await
        } else {
            Self::open(client, name_or_url).await
        }
    }

    pub async fn send(&self, body: &str) -> Result<String, QueueError> {
        let output = self
            .client
            .send_message()
            .queue_url(&self.url)
            .message_body(body)
            .send()
            .await
            .map_err(sqs_error("SendMessage"))?;
        Ok(output.message_id.unwrap_or_default())
    }

    /// Sends up to ten messages; returns the ids of the entries SQS accepted.
    pub async fn send_batch(&self, entries: &[Outgoing]) -> Result<Vec<String>, QueueError> {
        let request_entries = entries
            .iter()
            .map(|entry| {
                let mut builder = SendMessageBatchRequestEntry::builder()
                    .id(&entry.id)
                    .message_body(&entry.body);
                for (name, value) in trace_attributes(&entry.trace_context) {
                    builder = builder.message_attributes(name, value);
                }
                builder.build().expect("id and body are set")
            })
            .collect::<Vec<_>>();
        let output = self
            .client
            .send_message_batch()
            .queue_url(&self.url)
            .set_entries(Some(request_entries))
            .send()
            .await
            .map_err(sqs_error("SendMessageBatch"))?;
        Ok(output
            .successful
            .into_iter()
            .map(|entry| entry.id)
            .collect())
    }

    /// Long-polls for up to `max` messages (at most ten, an SQS limit).
    pub async fn receive(&self, max: i32, wait: Duration) -> Result<Vec<Delivery>, QueueError> {
        let output = self
            .client
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(max.clamp(1, 10))
            .wait_time_seconds(wait.as_secs().min(20) as i32)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
            .message_attribute_names(TRACEPARENT)
            .message_attribute_names(TRACESTATE)
            .send()
            .await
            .map_err(sqs_error("ReceiveMessage"))?;
        Ok(output
            .messages
            .unwrap_or_default()
            .into_iter()
            .map(|message| {
                let attributes: HashMap<MessageSystemAttributeName, String> =
                    message.attributes.unwrap_or_default();
                let trace_context = message
                    .message_attributes
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|(name, _)| name == TRACEPARENT || name == TRACESTATE)
                    .filter_map(|(name, value)| Some((name, value.string_value?)))
                    .collect();
                Delivery {
                    message_id: message.message_id.unwrap_or_default(),
                    receipt_handle: message.receipt_handle.unwrap_or_default(),
                    body: message.body.unwrap_or_default(),
                    receive_count: attributes
                        .get(&MessageSystemAttributeName::ApproximateReceiveCount)
                        .and_then(|value| value.parse().ok())
                        .unwrap_or(1),
                    sent_at_epoch_ms: attributes
                        .get(&MessageSystemAttributeName::SentTimestamp)
                        .and_then(|value| value.parse().ok()),
                    trace_context,
                }
            })
            .collect())
    }

    pub async fn delete(&self, delivery: &Delivery) -> Result<(), QueueError> {
        self.delete_received(&self.url, &delivery.receipt_handle)
            .await
    }

    /// Deletes a message received from `url` (this queue or its DLQ).
    pub(crate) async fn delete_received(
        &self,
        url: &str,
        receipt_handle: &str,
    ) -> Result<(), QueueError> {
        self.client
            .delete_message()
            .queue_url(url)
            .receipt_handle(receipt_handle)
            .send()
            .await
            .map_err(sqs_error("DeleteMessage"))?;
        Ok(())
    }

    /// Deletes up to ten received messages of this queue in one call (DeleteMessageBatch).
    /// Returns the receipt handles SQS did not delete, each with its reason; a failed call
    /// is an error for all of them.
    pub async fn delete_batch(
        &self,
        receipt_handles: &[String],
    ) -> Result<Vec<(String, String)>, QueueError> {
        let entries = receipt_handles
            .iter()
            .enumerate()
            .map(|(index, handle)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(index.to_string())
                    .receipt_handle(handle)
                    .build()
                    .expect("id and receipt handle are set")
            })
            .collect::<Vec<_>>();
        let output = self
            .client
            .delete_message_batch()
            .queue_url(&self.url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(sqs_error("DeleteMessageBatch"))?;
        Ok(output
            .failed
            .into_iter()
            .filter_map(|failure| {
                let handle = receipt_handles.get(failure.id.parse::<usize>().ok()?)?;
                let reason = failure.message.unwrap_or(failure.code);
                Some((handle.clone(), reason))
            })
            .collect())
    }

    /// Hides the message for `delay` more (a heartbeat, a backoff), or makes it visible
    /// again at once with a zero delay (a release).
    pub async fn set_visibility(
        &self,
        delivery: &Delivery,
        delay: Duration,
    ) -> Result<(), QueueError> {
        self.client
            .change_message_visibility()
            .queue_url(&self.url)
            .receipt_handle(&delivery.receipt_handle)
            .visibility_timeout(delay.as_secs().min(12 * 3600) as i32)
            .send()
            .await
            .map_err(sqs_error("ChangeMessageVisibility"))?;
        Ok(())
    }

    /// Moves a message straight to the DLQ, with the reason as the message attribute
    /// [`crate::dlq::ERROR_ATTRIBUTE`]; used for messages no worker can ever handle (an
    /// unparseable body).
    pub async fn dead_letter(&self, delivery: &Delivery, reason: &str) -> Result<(), QueueError> {
        let attribute = aws_sdk_sqs::types::MessageAttributeValue::builder()
            .data_type("String")
            .string_value(reason.chars().take(1000).collect::<String>())
            .build()
            .expect("data type is set");
        self.client
            .send_message()
            .queue_url(&self.dlq_url)
            .message_body(if delivery.body.is_empty() {
                "<empty>"
            } else {
                &delivery.body
            })
            .message_attributes(crate::dlq::ERROR_ATTRIBUTE, attribute)
            .send()
            .await
            .map_err(sqs_error("SendMessage"))?;
        self.delete(delivery).await
    }

    /// Approximate counts of the queue and its DLQ.
    pub async fn depth(&self) -> Result<QueueDepth, QueueError> {
        let source = self.counts(&self.url).await?;
        let dead = self.counts(&self.dlq_url).await?;
        Ok(QueueDepth {
            visible: source.0,
            in_flight: source.1,
            delayed: source.2,
            dead_letter_visible: dead.0,
            dead_letter_in_flight: dead.1,
        })
    }

    async fn counts(&self, url: &str) -> Result<(u64, u64, u64), QueueError> {
        let attributes = self
            .client
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesDelayed)
            .send()
            .await
            .map_err(sqs_error("GetQueueAttributes"))?
            .attributes
            .unwrap_or_default();
        let read = |name: QueueAttributeName| {
            attributes
                .get(&name)
                .and_then(|value| value.parse().ok())
                .unwrap_or(0)
        };
        Ok((
            read(QueueAttributeName::ApproximateNumberOfMessages),
            read(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
            read(QueueAttributeName::ApproximateNumberOfMessagesDelayed),
        ))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct QueueDepth {
    pub visible: u64,
    pub in_flight: u64,
    pub delayed: u64,
    pub dead_letter_visible: u64,
    pub dead_letter_in_flight: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_round_trips_and_rejects_garbage() {
        let message = JobMessage::new(JobKind::FileProcess, Uuid::now_v7(), Uuid::now_v7());
        assert_eq!(JobMessage::parse(&message.to_body()).unwrap(), message);
        assert!(message.to_body().contains("\"file.process\""));
        assert!(
            JobMessage::parse("not json")
                .unwrap_err()
                .contains("unparseable")
        );
        assert!(
            JobMessage::parse(r#"{"v":1,"kind":"file.process","job_id":"nope","org_id":"nope"}"#)
                .is_err()
        );
        let future = message.to_body().replace("\"v\":1", "\"v\":9");
        assert!(
            JobMessage::parse(&future)
                .unwrap_err()
                .contains("version 9")
        );
    }
}
