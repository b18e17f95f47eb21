//! Live trace streams: LISTEN/NOTIFY wake-ups, and the caps on open streams.
//!
//! One Postgres LISTEN connection per replica, not one per stream, receives a
//! notification for every committed batch of trace events (the trigger of migration
//! 0009 on `execution_events`) and fans the execution id out to this replica's streams,
//! which then read the new events. When that connection drops, notifications sent in
//! the meantime are lost, so every stream is woken to read again once it is back.
//!
//! Trace events notify only executions that some stream watches ([`watch`], migration
//! 0013): a NOTIFY serialises the commits that send it, so unwatched runs, nearly all
//! of them, commit their steps without one.
//!
//! Streams are capped per org and in total ([`LiveEvents::open`]); each holds a
//! [`StreamSlot`] that gives its place back when the stream is dropped.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::error::ApiError;

/// The channel migration 0007's trigger notifies, with the execution id as payload (for
/// watched executions only, since migration 0013).
pub const CHANNEL: &str = "glassbox_execution_events";
/// How long a registered watch lasts without renewal.
pub const WATCH_TTL: Duration = Duration::from_secs(60);
/// How often an open stream renews its watch: well within [`WATCH_TTL`], so a watch
/// never lapses while its stream is open.
pub const WATCH_RENEW_EVERY: Duration = Duration::from_secs(20);
/// Metric: live event streams open on this replica.
pub const OPEN_STREAMS: &str = "glassbox_event_streams";
/// Wake-ups a slow stream may fall behind by before it just reads again.
const WAKE_BACKLOG: usize = 1024;

/// What a notification says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// New events of this execution were committed.
    Execution(Uuid),
    /// Notifications may have been missed: every stream reads again.
    Everyone,
}

impl Wake {
    pub fn concerns(self, execution_id: Uuid) -> bool {
        match self {
            Self::Execution(id) => id == execution_id,
            Self::Everyone => true,
        }
    }
}

#[derive(Default)]
struct OpenStreams {
    total: usize,
    per_org: HashMap<Uuid, usize>,
}

/// The replica's live-stream hub.
pub struct LiveEvents {
    wakes: broadcast::Sender<Wake>,
    open: Mutex<OpenStreams>,
    max_streams: usize,
    max_streams_per_org: usize,
    /// Fires when the server shuts down: streams end, so the graceful shutdown does not
    /// wait for them.
    closing: CancellationToken,
}

impl LiveEvents {
    pub fn new(max_streams: usize, max_streams_per_org: usize) -> Arc<Self> {
        Arc::new(Self {
            wakes: broadcast::channel(WAKE_BACKLOG).0,
            open: Mutex::new(OpenStreams::default()),
            max_streams,
            max_streams_per_org,
            closing: CancellationToken::new(),
        })
    }

    /// Ends every stream (at its next step) and refuses new ones: the server is stopping.
    pub fn close_streams(&self) {
        self.closing.cancel();
    }

    /// Fires once [`Self::close_streams`] was called.
    pub fn closing(&self) -> CancellationToken {
        self.closing.clone()
    }

    /// Wake-ups from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Wake> {
        self.wakes.subscribe()
    }

    /// Takes a stream slot for `org_id`: 429 when the org has its most streams open,
    /// 503 when this replica has.
    pub fn open(self: &Arc<Self>, org_id: Uuid) -> Result<StreamSlot, ApiError> {
        if self.closing.is_cancelled() {
            return Err(ApiError::Overloaded {
                code: "shutting_down",
                message: "this server is shutting down; reconnect",
                retry_after: Duration::from_secs(1),
            });
        }
        let mut open = self
            .open
            .lock()
            .expect("the stream count is never poisoned");
        let of_org = open.per_org.get(&org_id).copied().unwrap_or(0);
        if of_org >= self.max_streams_per_org {
            metrics::counter!(crate::limits::REFUSED, "reason" => "too_many_streams").increment(1);
            return Err(ApiError::TooManyRequests {
                code: "too_many_streams",
                message: format!(
                    "this org already has {of_org} live event streams open, the most allowed"
                ),
                retry_after: Duration::from_secs(5),
            });
        }
        if open.total >= self.max_streams {
            metrics::counter!(crate::limits::REFUSED, "reason" => "too_many_streams").increment(1);
            return Err(ApiError::Overloaded {
                code: "too_many_streams",
                message: "this server has as many live event streams open as it allows; try again shortly",
                retry_after: Duration::from_secs(5),
            });
        }
        open.total += 1;
        *open.per_org.entry(org_id).or_default() += 1;
        metrics::gauge!(OPEN_STREAMS).set(open.total as f64);
        Ok(StreamSlot {
            live: self.clone(),
            org_id,
        })
    }

    fn close(&self, org_id: Uuid) {
        let mut open = self
            .open
            .lock()
            .expect("the stream count is never poisoned");
        open.total = open.total.saturating_sub(1);
        if let Some(count) = open.per_org.get_mut(&org_id) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.per_org.remove(&org_id);
            }
        }
        metrics::gauge!(OPEN_STREAMS).set(open.total as f64);
    }

    /// Listens for notifications until `shutdown`, reconnecting after a lost connection
    /// (a Postgres restart) and waking every stream each time it is back.
    pub async fn listen(self: Arc<Self>, pool: PgPool, shutdown: CancellationToken) {
        while !shutdown.is_cancelled() {
            match self.listen_once(&pool, &shutdown).await {
                Ok(()) => return,
                Err(error) => {
                    tracing::warn!(%error, "live events listener lost postgres; reconnecting")
                }
            }
            // Notifications may have been missed while the connection was down.
            let _ = self.wakes.send(Wake::Everyone);
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    /// One connection's life; `Ok` only on shutdown.
    async fn listen_once(&self, pool: &PgPool, shutdown: &CancellationToken) -> sqlx::Result<()> {
        let mut listener = PgListener::connect_with(pool).await?;
        listener.listen(CHANNEL).await?;
        let _ = self.wakes.send(Wake::Everyone);
        loop {
            let received = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                received = listener.try_recv() => received?,
            };
            match received {
                Some(notification) => match notification.payload().parse::<Uuid>() {
                    Ok(execution_id) => {
                        let _ = self.wakes.send(Wake::Execution(execution_id));
                    }
                    Err(_) => {
                        tracing::debug!(payload = notification.payload(), "ignoring a notification")
                    }
                },
                // The connection was lost and is back (sqlx listens again by itself).
                None => {
                    tracing::warn!("live events listener reconnected; waking every stream");
                    let _ = self.wakes.send(Wake::Everyone);
                }
            }
        }
    }
}

/// Registers (or renews) a watch on `execution_id` for [`WATCH_TTL`]: until it expires,
/// statements that add its trace events notify [`CHANNEL`]. A statement whose snapshot
/// predates the registration's commit does not see it, so a new watcher reads once more
/// shortly after registering (see `routes::events`).
pub async fn watch(pool: &PgPool, execution_id: Uuid) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO execution_watches (execution_id, until) VALUES ($1, now() + make_interval(secs => $2)) \
         ON CONFLICT (execution_id) DO UPDATE SET until = GREATEST(execution_watches.until, EXCLUDED.until)",
    )
    .bind(execution_id)
    .bind(WATCH_TTL.as_secs_f64())
    .execute(pool)
    .await?;
    Ok(())
}

/// Deletes expired watches (the sweeper's pass); returns how many.
pub async fn forget_expired_watches(pool: &PgPool) -> sqlx::Result<u64> {
    let deleted = sqlx::query("DELETE FROM execution_watches WHERE until < now()")
        .execute(pool)
        .await?;
    Ok(deleted.rows_affected())
}

/// A live stream's place in the caps; given back on drop.
pub struct StreamSlot {
    live: Arc<LiveEvents>,
    org_id: Uuid,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.live.close(self.org_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_capped_per_org_and_in_total_and_come_back_on_drop() {
        let live = LiveEvents::new(3, 2);
        let first_org = Uuid::now_v7();
        let second_org = Uuid::now_v7();
        let first = live.open(first_org).unwrap();
        let _second = live.open(first_org).unwrap();
        let refused = live.open(first_org).err().unwrap();
        assert!(matches!(
            refused,
            ApiError::TooManyRequests {
                code: "too_many_streams",
                ..
            }
        ));
        let _third = live.open(second_org).unwrap();
        let full = live.open(second_org).err().unwrap();
        assert!(matches!(
            full,
            ApiError::Overloaded {
                code: "too_many_streams",
                ..
            }
        ));
        drop(first);
        assert!(live.open(second_org).is_ok());
    }

    #[test]
    fn wakes_concern_their_execution_or_everyone() {
        let id = Uuid::now_v7();
        assert!(Wake::Execution(id).concerns(id));
        assert!(!Wake::Execution(Uuid::now_v7()).concerns(id));
        assert!(Wake::Everyone.concerns(id));
    }
}
