//! The one worker loop every job kind shares: `receive → claim → run → ack`.
//!
//! The loop knows nothing about files, agents or schedules. It looks up the
//! [`JobHandler`] registered for each message's kind ([`Handlers`]); the handler claims the
//! job (a fenced lease in Postgres, or nothing for a row-less job such as a clock tick),
//! runs it and reports a [`JobError`] when it fails; the loop alone turns that into
//! delete, change-visibility (backoff) or dead-letter, heartbeats long jobs, and shuts
//! down in three phases on SIGTERM: stop receiving, let in-flight jobs finish until a
//! deadline, then cancel and release the rest (visibility 0).
//!
//! SQS calls are shared where they can be: while the queue has a backlog, a receive waits
//! up to [`RECEIVE_GATHER`] for more slots to free up and fetches for all of them, and
//! finished jobs' messages are deleted up to ten to a call by the [`crate::acker`].
//!
//! A second message of a job another worker is running now (a live lease taken with
//! another message) is a duplicate: that worker holds the job's own message and hands it
//! back or finishes it, so the duplicate is deleted instead of delayed. Delaying it would
//! spend its receives and push a healthy job's copy onto the DLQ. The holder's own
//! message coming back early (its worker died, or could not record an outcome) waits for
//! the lease to run out instead.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use rand::Rng;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, info, info_span, warn};
use uuid::Uuid;

use crate::acker::{ACK_CLOSE_LIMIT, ACK_LINGER, AckSender, Acker};
use crate::config::RetrySettings;
use crate::error::JobError;
pub use crate::lease::{Claim, Receipt};
use crate::metrics as names;
use crate::queue::{Delivery, JobKind, JobMessage, Queue};

/// How a failed attempt ends, as recorded on the job's row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// A permanent error: the job is failed and its message deleted.
    Failed,
    /// A transient error: the message comes back after `delay`.
    Retrying { delay: Duration },
    /// A transient error on the last allowed receive: SQS moves the message to the DLQ.
    DeadLettered,
}

#[async_trait]
pub trait JobHandler: Send + Sync + 'static {
    /// The kind of job this handler runs.
    fn kind(&self) -> JobKind;
    /// Takes the job for the message `receipt` describes.
    async fn claim(&self, job: &JobMessage, receipt: Receipt<'_>) -> Result<Claim, JobError>;
    /// Does the work. `cancel` fires when the lease is lost or the shutdown deadline
    /// passes; the handler should then stop at its next safe point.
    async fn run(
        &self,
        job: &JobMessage,
        lease: Uuid,
        attempt: u32,
        cancel: CancellationToken,
    ) -> Result<(), JobError>;
    /// Extends the lease; `Ok(false)` means another worker took it over.
    async fn renew(&self, job: &JobMessage, lease: Uuid) -> Result<bool, JobError>;
    /// Records a failed attempt on the job's row (fenced by the lease).
    async fn record_failure(
        &self,
        job: &JobMessage,
        lease: Uuid,
        error: &JobError,
        disposition: Disposition,
    ) -> Result<(), JobError>;
    /// Gives the job back unfinished so another worker can take it at once.
    async fn release(&self, job: &JobMessage, lease: Uuid) -> Result<(), JobError>;
}

/// The handlers of one worker, by the kind of job each runs. A message of a kind with no
/// handler here does not belong on this queue: it is poison.
#[derive(Clone, Default)]
pub struct Handlers(HashMap<JobKind, Arc<dyn JobHandler>>);

impl Handlers {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `handler` for its kind (replacing any earlier one of that kind).
    pub fn with(mut self, handler: Arc<dyn JobHandler>) -> Self {
        self.0.insert(handler.kind(), handler);
        self
    }

    fn get(&self, kind: JobKind) -> Option<&Arc<dyn JobHandler>> {
        self.0.get(&kind)
    }

    fn kinds(&self) -> Vec<&'static str> {
        let mut kinds: Vec<&'static str> = self.0.keys().map(|kind| kind.as_str()).collect();
        kinds.sort_unstable();
        kinds
    }
}

#[derive(Debug, Clone)]
pub struct WorkerOptions {
    pub concurrency: usize,
    pub receive_wait: Duration,
    /// The lease length; heartbeats run at half of it (or of the visibility timeout).
    pub lease: Duration,
    pub shutdown_deadline: Duration,
    pub retry: RetrySettings,
}

/// The delay before attempt `receive_count + 1`: exponential from the base, capped, with
/// "equal jitter" (half fixed, half random) so retries spread out but never collapse to 0.
pub fn backoff_delay(retry: &RetrySettings, receive_count: u32) -> Duration {
    let exponent = receive_count.saturating_sub(1).min(30);
    let ceiling = (retry.base_delay_secs * 2f64.powi(exponent as i32))
        .min(retry.max_delay_secs)
        .max(0.0);
    let half = ceiling / 2.0;
    let jitter = if half > 0.0 {
        rand::thread_rng().gen_range(0.0..=half)
    } else {
        0.0
    };
    Duration::from_secs_f64(half + jitter)
}

/// How long the loop waits for more free slots before a receive, while the queue has a
/// backlog (the last receive was full): jobs that end close together then share one
/// ReceiveMessage instead of one each. With no backlog it receives at once.
pub const RECEIVE_GATHER: Duration = Duration::from_millis(25);

/// What every job of one worker loop shares.
struct Loop {
    queue: Arc<Queue>,
    handlers: Handlers,
    options: WorkerOptions,
    acks: AckSender,
}

/// Runs the loop until `shutdown` fires, then drains as described in the module docs.
pub async fn run_worker(
    queue: Queue,
    handlers: Handlers,
    options: WorkerOptions,
    shutdown: CancellationToken,
) {
    let permits = Arc::new(Semaphore::new(options.concurrency.max(1)));
    let tracker = TaskTracker::new();
    // Fires when the shutdown deadline passes: in-flight jobs are then cancelled and released.
    let hard_stop = CancellationToken::new();
    let queue = Arc::new(queue);
    let acker = Acker::start(queue.clone(), ACK_LINGER);
    info!(queue = %queue.name, kinds = ?handlers.kinds(), concurrency = options.concurrency, max_receive_count = queue.max_receive_count, "worker started");
    if options.lease > queue.visibility_timeout {
        // A dead worker's message would then come back while its lease still looks live,
        // be taken for a duplicate and dropped; the sweeper would find the job later.
        warn!(
            lease_secs = options.lease.as_secs(),
            visibility_timeout_secs = queue.visibility_timeout.as_secs(),
            "the lease outlasts the queue's visibility timeout; keep it shorter"
        );
    }
    let shutdown_deadline = options.shutdown_deadline;
    let context = Arc::new(Loop {
        queue: queue.clone(),
        handlers,
        options,
        acks: acker.sender(),
    });
    // A receive asks for at most ten messages (an SQS limit), and never for more than
    // there are free slots, so no message waits unleased.
    let most_per_receive = context.options.concurrency.clamp(1, 10);
    let mut backlog = false;

    while !shutdown.is_cancelled() {
        let first_slot = tokio::select! {
            _ = shutdown.cancelled() => break,
            permit = permits.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
        };
        let gather = if backlog {
            RECEIVE_GATHER
        } else {
            Duration::ZERO
        };
        let slots = gather_slots(&permits, first_slot, most_per_receive, gather).await;
        let receive = queue.receive(slots.len() as i32, context.options.receive_wait);
        tokio::pin!(receive);
        let received = tokio::select! {
            received = &mut receive => received,
            _ = shutdown.cancelled() => {
                // Let the long poll end (it is bounded by the receive wait): SQS may already
                // have handed us messages, and dropping the call would hide them for a whole
                // visibility timeout. Give them back at once instead.
                if let Ok(deliveries) = receive.await {
                    for delivery in &deliveries {
                        set_visibility(&queue, delivery, Duration::ZERO).await;
                    }
                    if !deliveries.is_empty() {
                        info!(released = deliveries.len(), "released messages received during shutdown");
                    }
                }
                break;
            }
        };
        let deliveries = match received {
            Ok(deliveries) => deliveries,
            Err(error) => {
                warn!(%error, "receive failed; retrying in 1s");
                drop(slots);
                backlog = false;
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        backlog = deliveries.len() == slots.len();
        // Slots no message came for go back with the rest of the iterator.
        for (delivery, slot) in deliveries.into_iter().zip(slots) {
            let context = context.clone();
            let hard_stop = hard_stop.clone();
            tracker.spawn(async move {
                handle_delivery(&context, delivery, hard_stop).await;
                drop(slot);
            });
        }
    }

    tracker.close();
    info!(
        in_flight = tracker.len(),
        deadline_secs = shutdown_deadline.as_secs(),
        "shutting down: no longer receiving"
    );
    if tokio::time::timeout(shutdown_deadline, tracker.wait())
        .await
        .is_err()
    {
        warn!(
            in_flight = tracker.len(),
            "shutdown deadline passed: releasing unfinished jobs"
        );
        hard_stop.cancel();
        tracker.wait().await;
    }
    // Every job has ended: delete the messages still waiting for a batch.
    drop(context);
    acker.close(ACK_CLOSE_LIMIT).await;
    info!("worker stopped");
}

/// `first` and up to `most - 1` more free slots: those free now, then, for up to
/// `gather`, those that jobs free meanwhile.
async fn gather_slots(
    permits: &Arc<Semaphore>,
    first: OwnedSemaphorePermit,
    most: usize,
    gather: Duration,
) -> Vec<OwnedSemaphorePermit> {
    let mut slots = vec![first];
    let until = tokio::time::Instant::now() + gather;
    while slots.len() < most {
        if let Ok(slot) = permits.clone().try_acquire_owned() {
            slots.push(slot);
            continue;
        }
        if gather.is_zero() {
            break;
        }
        match tokio::time::timeout_at(until, permits.clone().acquire_owned()).await {
            Ok(slot) => slots.push(slot.expect("the semaphore is never closed")),
            Err(_) => break,
        }
    }
    slots
}

async fn handle_delivery(context: &Loop, delivery: Delivery, hard_stop: CancellationToken) {
    let queue = &context.queue;
    let job = match JobMessage::parse(&delivery.body) {
        Ok(job) => job,
        Err(reason) => return dead_letter_poison(queue, &delivery, &reason).await,
    };
    let Some(handler) = context.handlers.get(job.kind) else {
        let reason = format!(
            "job kind {} does not belong on {}",
            job.kind.as_str(),
            queue.name
        );
        return dead_letter_poison(queue, &delivery, &reason).await;
    };
    let span = info_span!("job", kind = job.kind.as_str(), job_id = %job.job_id, org_id = %job.org_id, receive_count = delivery.receive_count);
    // The trace of the request that enqueued the job continues here (when exported).
    crate::telemetry::set_parent(&span, &delivery.trace_context);
    process_job(context, handler.as_ref(), &delivery, &job, hard_stop)
        .instrument(span)
        .await;
}

async fn dead_letter_poison(queue: &Queue, delivery: &Delivery, reason: &str) {
    warn!(message_id = %delivery.message_id, reason, "poison message: moving it to the dlq");
    metrics::counter!(names::POISON_MESSAGES, "queue" => queue.name.clone()).increment(1);
    if let Err(error) = queue.dead_letter(delivery, reason).await {
        warn!(%error, "could not move the poison message; sqs will dead-letter it after maxReceiveCount");
    }
}

async fn process_job(
    context: &Loop,
    handler: &dyn JobHandler,
    delivery: &Delivery,
    job: &JobMessage,
    hard_stop: CancellationToken,
) {
    let (queue, options) = (context.queue.as_ref(), &context.options);
    let kind = job.kind.as_str();
    if let (Some(sent_at), Ok(now)) = (
        delivery.sent_at_epoch_ms,
        SystemTime::now().duration_since(UNIX_EPOCH),
    ) {
        let waited = now.as_millis().saturating_sub(u128::from(sent_at)) as f64 / 1000.0;
        metrics::histogram!(names::QUEUE_WAIT_SECONDS, "kind" => kind).record(waited);
    }
    let receipt = Receipt {
        message_id: &delivery.message_id,
        last_receive: delivery.receive_count >= queue.max_receive_count,
    };
    let (lease, attempt) = match handler.claim(job, receipt).await {
        Ok(Claim::Acquired { lease, attempt }) => (lease, attempt),
        Ok(Claim::Finished) => {
            info!("job already finished; acknowledging the message");
            context.acks.ack(&delivery.receipt_handle);
            return;
        }
        Ok(Claim::Duplicate) => {
            info!("another worker is running this job; dropping the duplicate message");
            metrics::counter!(names::DUPLICATE_MESSAGES, "queue" => queue.name.clone())
                .increment(1);
            context.acks.ack(&delivery.receipt_handle);
            return;
        }
        Ok(Claim::Busy { retry_after }) => {
            info!(
                retry_after_secs = retry_after.as_secs(),
                "this job's worker stopped with its lease still live; looking again when it runs out"
            );
            set_visibility(queue, delivery, retry_after).await;
            return;
        }
        Err(error) => {
            let delay = backoff_delay(&options.retry, delivery.receive_count);
            warn!(%error, delay_secs = delay.as_secs(), "claim failed; retrying later");
            set_visibility(queue, delivery, delay).await;
            return;
        }
    };
    metrics::counter!(names::JOBS_STARTED, "kind" => kind).increment(1);
    info!(attempt, "job claimed");

    let job_cancel = hard_stop.child_token();
    let lease_lost = AtomicBool::new(false);
    let result = {
        let run = handler.run(job, lease, attempt, job_cancel.clone());
        let beat = heartbeat(
            queue,
            delivery,
            handler,
            job,
            lease,
            options.lease,
            &job_cancel,
            &lease_lost,
        );
        tokio::pin!(run, beat);
        tokio::select! {
            result = &mut run => result,
            // The lease was lost and the job cancelled: wait for it to stop.
            () = &mut beat => run.await,
        }
    };

    if lease_lost.load(Ordering::SeqCst) || matches!(result, Err(JobError::LeaseLost { .. })) {
        warn!("lease lost to another worker; leaving the message to it");
        metrics::counter!(names::JOBS_FINISHED, "kind" => kind, "outcome" => "lease_lost", "error_class" => "", "error_code" => "").increment(1);
        return;
    }
    if hard_stop.is_cancelled() && result.is_err() {
        info!("shutdown deadline: releasing the job for another worker");
        if let Err(error) = handler.release(job, lease).await {
            warn!(%error, "could not release the lease; it will expire");
        }
        set_visibility(queue, delivery, Duration::ZERO).await;
        metrics::counter!(names::JOBS_FINISHED, "kind" => kind, "outcome" => "released", "error_class" => "", "error_code" => "").increment(1);
        return;
    }
    match result {
        Ok(()) => {
            info!("job succeeded");
            metrics::counter!(names::JOBS_FINISHED, "kind" => kind, "outcome" => "succeeded", "error_class" => "", "error_code" => "").increment(1);
            context.acks.ack(&delivery.receipt_handle);
        }
        Err(error) => {
            let disposition = match &error {
                JobError::Permanent { .. } | JobError::LeaseLost { .. } => Disposition::Failed,
                JobError::Transient { .. } if delivery.receive_count >= queue.max_receive_count => {
                    Disposition::DeadLettered
                }
                JobError::Transient { retry_after, .. } => Disposition::Retrying {
                    delay: retry_after
                        .unwrap_or_else(|| backoff_delay(&options.retry, delivery.receive_count)),
                },
            };
            let outcome = match disposition {
                Disposition::Failed => "failed",
                Disposition::Retrying { .. } => "retried",
                Disposition::DeadLettered => "dead_lettered",
            };
            warn!(
                error_class = error.class(),
                error_code = error.code(),
                error = error.message(),
                outcome,
                "job failed"
            );
            metrics::counter!(names::JOBS_FINISHED, "kind" => kind, "outcome" => outcome, "error_class" => error.class(), "error_code" => error.code().to_string()).increment(1);
            if let Err(record_error) = handler
                .record_failure(job, lease, &error, disposition)
                .await
            {
                warn!(error = %record_error, "could not record the failure on the row");
            }
            match disposition {
                Disposition::Failed => context.acks.ack(&delivery.receipt_handle),
                Disposition::Retrying { delay } => set_visibility(queue, delivery, delay).await,
                // Visible again at once: the next receive exceeds maxReceiveCount, so SQS
                // moves the message to the DLQ instead of delivering it.
                Disposition::DeadLettered => set_visibility(queue, delivery, Duration::ZERO).await,
            }
        }
    }
}

/// Extends the job's lease and the message's visibility at half the lease length. Returns
/// only when the lease turns out to be lost, after cancelling the job.
#[allow(clippy::too_many_arguments)]
async fn heartbeat(
    queue: &Queue,
    delivery: &Delivery,
    handler: &dyn JobHandler,
    job: &JobMessage,
    lease: Uuid,
    lease_length: Duration,
    job_cancel: &CancellationToken,
    lease_lost: &AtomicBool,
) {
    let period = (lease_length.min(queue.visibility_timeout) / 2).max(Duration::from_millis(200));
    loop {
        tokio::time::sleep(period).await;
        match handler.renew(job, lease).await {
            Ok(true) => {}
            Ok(false) => {
                lease_lost.store(true, Ordering::SeqCst);
                job_cancel.cancel();
                return;
            }
            Err(error) => warn!(%error, "lease renewal failed; trying again at the next beat"),
        }
        if let Err(error) = queue
            .set_visibility(delivery, queue.visibility_timeout)
            .await
        {
            warn!(%error, "visibility extension failed");
        }
        metrics::counter!(names::HEARTBEATS, "queue" => queue.name.clone()).increment(1);
    }
}

async fn set_visibility(queue: &Queue, delivery: &Delivery, delay: Duration) {
    if let Err(error) = queue.set_visibility(delivery, delay).await {
        warn!(%error, "change visibility failed; the message reappears at its current timeout");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A semaphore of `size` slots with `held` of them taken (returned to hold them).
    fn slots(size: usize, held: usize) -> (Arc<Semaphore>, Vec<OwnedSemaphorePermit>) {
        let permits = Arc::new(Semaphore::new(size));
        let taken = (0..held)
            .map(|_| permits.clone().try_acquire_owned().unwrap())
            .collect();
        (permits, taken)
    }

    #[tokio::test]
    async fn without_a_backlog_a_receive_takes_only_the_slots_free_now() {
        let (permits, mut held) = slots(16, 15);
        let first = permits.clone().try_acquire_owned().unwrap();
        held.truncate(12); // three more free
        let gathered = gather_slots(&permits, first, 10, Duration::ZERO).await;
        assert_eq!(gathered.len(), 4);
        let (permits, _held) = slots(16, 15);
        let first = permits.clone().try_acquire_owned().unwrap();
        assert_eq!(
            gather_slots(&permits, first, 10, Duration::ZERO)
                .await
                .len(),
            1
        );
    }

    #[tokio::test]
    async fn with_a_backlog_a_receive_waits_for_slots_that_jobs_free_up_to_its_most() {
        let (permits, mut held) = slots(16, 15);
        let first = permits.clone().try_acquire_owned().unwrap();
        let ending_jobs = tokio::spawn(async move {
            for _ in 0..5 {
                tokio::time::sleep(Duration::from_millis(20)).await;
                held.pop();
            }
            held
        });
        // Ends when it holds 3, long before its hour is up.
        let gathered = tokio::time::timeout(
            Duration::from_secs(20),
            gather_slots(&permits, first, 3, Duration::from_secs(3600)),
        )
        .await
        .expect("stopped at its most");
        assert_eq!(gathered.len(), 3);
        let held = ending_jobs.await.unwrap();
        // And gives up when the wait is over: 2 more freed meanwhile, none after.
        drop(gathered);
        let first = permits.clone().try_acquire_owned().unwrap();
        let gathered = gather_slots(&permits, first, 10, Duration::from_millis(50)).await;
        assert_eq!(gathered.len(), 16 - held.len());
    }

    #[test]
    fn backoff_grows_is_capped_and_jittered_within_bounds() {
        let retry = RetrySettings {
            base_delay_secs: 10.0,
            max_delay_secs: 300.0,
        };
        for _ in 0..200 {
            let first = backoff_delay(&retry, 1).as_secs_f64();
            assert!((5.0..=10.0).contains(&first), "{first}");
            let fourth = backoff_delay(&retry, 4).as_secs_f64();
            assert!((40.0..=80.0).contains(&fourth), "{fourth}");
            let late = backoff_delay(&retry, 30).as_secs_f64();
            assert!((150.0..=300.0).contains(&late), "{late}");
        }
    }
}
