//! `GET /v1/executions/{id}/events`: an execution's trace as Server-Sent Events, live.
//!
//! Each event's id is the trace event id, so a client that reconnects with
//! `Last-Event-ID` (or `?after=`) resumes right after the last event it saw. New events
//! arrive by LISTEN/NOTIFY ([`crate::live`]) for as long as the stream keeps its watch on
//! the execution registered ([`live::watch`]); a slow poll is only the fallback for a
//! notification lost in a database restart. The stream closes once the run has ended
//! and every event was sent, or earlier: at its maximum lifetime or when the caller's
//! token expires or the server shuts down, with a last `stream_closed` event saying which
//! (the client then reconnects, with a fresh token if need be). Streams are capped per
//! org and per replica.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use serde_json::json;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{ApiPath, ApiQuery};
use crate::live::{self, StreamSlot, Wake};
use crate::routes::executions::{TraceEvent, TraceQuery};
use crate::state::AppState;

/// How often a stream reads anyway when no notification came: only a fallback.
const FALLBACK_POLL: Duration = Duration::from_secs(10);
/// The first wait after a stream registers its watch reads again this soon: a step
/// commit whose statement began before the watch was committed neither sees the watch
/// (so sends no notification) nor, possibly, was visible to the read after it.
const SETTLE_POLL: Duration = Duration::from_secs(1);
/// Trace events read at once.
const PAGE: i64 = 200;

/// Why a stream closed before its run ended.
#[derive(Debug, Clone, Copy)]
enum Deadline {
    MaxLifetime,
    TokenExpired,
    /// The server is shutting down.
    Shutdown,
}

impl Deadline {
    fn reason(self) -> &'static str {
        match self {
            Self::MaxLifetime => "max_lifetime",
            Self::TokenExpired => "token_expired",
            Self::Shutdown => "server_shutdown",
        }
    }
}

/// Where a live event stream is.
struct LiveCursor {
    pool: sqlx::PgPool,
    org_id: Uuid,
    execution_id: Uuid,
    after: i64,
    buffer: VecDeque<TraceEvent>,
    /// The run ended and every event up to its end is buffered: close after the buffer.
    finished: bool,
    wakes: broadcast::Receiver<Wake>,
    closes_at: tokio::time::Instant,
    deadline: Deadline,
    closing: CancellationToken,
    /// When the watch was last registered; `None`: register it before the next read
    /// (at the start, and after the listener reconnected, since a restarted Postgres
    /// has lost its unlogged watches).
    watched_at: Option<tokio::time::Instant>,
    /// The watch was just registered: the next wait is [`SETTLE_POLL`].
    settling: bool,
    /// Holds the stream's place in the caps until the stream is dropped.
    _slot: StreamSlot,
}

/// What the stream sends next.
enum Next {
    Trace(TraceEvent),
    Closed(Deadline),
}

impl LiveCursor {
    /// Registers the watch when it is due (see [`Self::watched_at`]). A failure only
    /// costs notifications: the fallback poll still reads, and the next read retries.
    async fn keep_watching(&mut self) {
        if self
            .watched_at
            .is_some_and(|at| at.elapsed() < live::WATCH_RENEW_EVERY)
        {
            return;
        }
        match live::watch(&self.pool, self.execution_id).await {
            Ok(()) => {
                let now = tokio::time::Instant::now();
                self.settling |= watch_lapsed(self.watched_at, now);
                self.watched_at = Some(now);
            }
            Err(error) => tracing::warn!(%error, "registering the stream's watch failed; retrying"),
        }
    }

    async fn fetch(&mut self) -> sqlx::Result<()> {
        let events: Vec<TraceEvent> = sqlx::query_as(
            "SELECT id, step, kind, data, created_at FROM execution_events \
             WHERE execution_id = $1 AND org_id = $2 AND id > $3 ORDER BY id LIMIT $4",
        )
        .bind(self.execution_id)
        .bind(self.org_id)
        .bind(self.after)
        .bind(PAGE)
        .fetch_all(&self.pool)
        .await?;
        if let Some(last) = events.last() {
            self.after = last.id;
        }
        self.buffer.extend(events);
        Ok(())
    }

    /// Whether the run has ended (`None` when the execution is gone).
    async fn ended(&self) -> sqlx::Result<Option<bool>> {
        sqlx::query_scalar(
            "SELECT status IN ('completed', 'failed', 'cancelled') FROM executions WHERE id = $1 AND org_id = $2",
        )
        .bind(self.execution_id)
        .bind(self.org_id)
        .fetch_optional(&self.pool)
        .await
    }

    async fn next(&mut self) -> Option<Next> {
        loop {
            if let Some(event) = self.buffer.pop_front() {
                return Some(Next::Trace(event));
            }
            if self.finished {
                return None;
            }
            if self.closing.is_cancelled() {
                self.finished = true;
                return Some(Next::Closed(Deadline::Shutdown));
            }
            if tokio::time::Instant::now() >= self.closes_at {
                self.finished = true;
                return Some(Next::Closed(self.deadline));
            }
            self.keep_watching().await;
            if let Err(error) = self.fetch().await {
                tracing::warn!(%error, "event stream query failed; retrying");
            }
            if !self.buffer.is_empty() {
                continue;
            }
            match self.ended().await {
                Ok(None) => return None,
                // The final status commits with the run's last events: one more read
                // catches any that landed since the previous one.
                Ok(Some(true)) => {
                    if self.fetch().await.is_ok() {
                        self.finished = true;
                    }
                }
                Ok(Some(false)) => self.wait().await,
                Err(error) => {
                    tracing::warn!(%error, "event stream status query failed; retrying");
                    self.wait().await;
                }
            }
        }
    }

    /// Until a notification concerns this execution, the fallback poll, or the deadline.
    async fn wait(&mut self) {
        let poll = if std::mem::take(&mut self.settling) {
            SETTLE_POLL
        } else {
            FALLBACK_POLL
        };
        let fallback = tokio::time::sleep(poll);
        tokio::pin!(fallback);
        loop {
            tokio::select! {
                _ = &mut fallback => return,
                _ = tokio::time::sleep_until(self.closes_at) => return,
                _ = self.closing.cancelled() => return,
                wake = self.wakes.recv() => match wake {
                    // The listener is back after a lost connection: register again.
                    Ok(Wake::Everyone) => {
                        self.watched_at = None;
                        return;
                    }
                    Ok(wake) if wake.concerns(self.execution_id) => return,
                    Ok(_) => {}
                    // Fell behind: something of ours may be among the skipped wakes,
                    // a reconnection's included.
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        self.watched_at = None;
                        return;
                    }
                    // The hub is gone (shutdown): the fallback poll alone remains.
                    Err(broadcast::error::RecvError::Closed) => {
                        (&mut fallback).await;
                        return;
                    }
                },
            }
        }
    }
}

/// Whether a watch registered at `watched_at` (never, when `None`) may have expired by
/// `now`: a stream whose client stopped reading for longer than [`live::WATCH_TTL`] let it
/// lapse, and a commit in the gap before it registers again sent no notification. The
/// first wait after such a registration is then the short settle read.
fn watch_lapsed(watched_at: Option<tokio::time::Instant>, now: tokio::time::Instant) -> bool {
    watched_at.is_none_or(|at| now.saturating_duration_since(at) >= live::WATCH_TTL)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or(0)
}

/// The stream's deadline: its maximum lifetime, or the token's expiry if that comes first.
fn deadline(max_lifetime: Duration, token_expires_at: u64) -> (Duration, Deadline) {
    let token_left = Duration::from_secs(token_expires_at.saturating_sub(unix_now()));
    if token_left < max_lifetime {
        (token_left, Deadline::TokenExpired)
    } else {
        (max_lifetime, Deadline::MaxLifetime)
    }
}

/// One Server-Sent Event of the stream, as its fields (the schema of each event, as
/// OpenAPI 3.1 reads the schema of `text/event-stream`).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // documents the wire format; the stream writes it with axum's `Event`
pub struct SseEvent {
    /// The trace event's id (resume after it with `Last-Event-ID`); absent on `stream_closed`.
    id: Option<String>,
    /// The trace event's kind, or `stream_closed`.
    event: String,
    /// The trace event (`id`, `step`, `kind`, `data`, `created_at`) as JSON, or, for
    /// `stream_closed`, `{"reason": ...}`.
    data: String,
}

/// The execution's trace as Server-Sent Events, live until it finishes.
#[utoipa::path(get, path = "/v1/executions/{id}/events", tag = "executions",
    params(("id" = Uuid, Path, description = "The execution's id"), crate::routes::executions::TraceQuery,
           ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event id")),
    responses((status = 200, description = "Server-Sent Events, one per trace event: `id` is the event's id, `event` its kind (`queued`, `model_call`, `tool_call`, ..., `completed`), `data` the trace event as JSON; a last `stream_closed` event says why the stream ended. The schema describes one event.", body = SseEvent, content_type = "text/event-stream")))]
pub async fn stream(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(query): ApiQuery<TraceQuery>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let owned: Option<i32> =
        sqlx::query_scalar("SELECT 1 FROM executions WHERE id = $1 AND org_id = $2")
            .bind(id)
            .bind(caller.org_id)
            .fetch_optional(&state.pool)
            .await?;
    owned.ok_or(ApiError::NotFound("execution"))?;
    let last_event_id = match headers.get("last-event-id") {
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .and_then(|text| text.trim().parse::<i64>().ok())
                .ok_or_else(|| ApiError::invalid("Last-Event-ID must be an event id"))?,
        ),
        None => None,
    };
    let slot = state.live.open(caller.org_id)?;
    let (lifetime, reason) = deadline(
        Duration::from_secs(state.settings.api.event_stream_max_secs),
        caller.expires_at,
    );
    let cursor = LiveCursor {
        pool: state.pool.clone(),
        org_id: caller.org_id,
        execution_id: id,
        after: last_event_id.or(query.after).unwrap_or(0),
        buffer: VecDeque::new(),
        finished: false,
        wakes: state.live.subscribe(),
        closes_at: tokio::time::Instant::now() + lifetime,
        deadline: reason,
        closing: state.live.closing(),
        watched_at: None,
        settling: false,
        _slot: slot,
    };
    let stream = futures::stream::unfold(cursor, |mut cursor| async move {
        let sse = match cursor.next().await? {
            Next::Trace(event) => Event::default()
                .id(event.id.to_string())
                .event(event.kind.clone())
                .data(serde_json::to_string(&event).unwrap_or_default()),
            Next::Closed(deadline) => Event::default()
                .event("stream_closed")
                .data(json!({ "reason": deadline.reason() }).to_string()),
        };
        Some((Ok(sse), cursor))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_or_the_lifetime_ends_a_stream_whichever_comes_first() {
        let hour = Duration::from_secs(3600);
        let (left, reason) = deadline(hour, unix_now() + 60);
        assert!(left <= Duration::from_secs(60));
        assert!(matches!(reason, Deadline::TokenExpired));
        let (left, reason) = deadline(hour, unix_now() + 7200);
        assert_eq!(left, hour);
        assert!(matches!(reason, Deadline::MaxLifetime));
        let (left, _) = deadline(hour, unix_now() - 5);
        assert_eq!(left, Duration::ZERO);
    }

    #[test]
    fn a_first_registration_and_one_after_a_lapsed_watch_settle_a_renewal_does_not() {
        let now = tokio::time::Instant::now() + Duration::from_secs(3600);
        assert!(watch_lapsed(None, now));
        // Renewed on time (every WATCH_RENEW_EVERY): the watch never lapsed.
        assert!(!watch_lapsed(Some(now - live::WATCH_RENEW_EVERY), now));
        assert!(!watch_lapsed(
            Some(now - live::WATCH_TTL + Duration::from_millis(1)),
            now
        ));
        // The client stopped reading for longer than the TTL.
        assert!(watch_lapsed(Some(now - live::WATCH_TTL), now));
        assert!(watch_lapsed(Some(now - 3 * live::WATCH_TTL), now));
    }
}
