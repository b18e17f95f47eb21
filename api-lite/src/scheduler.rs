//! The schedule leader: one api-lite replica fires the Postgres schedules
//! ([`shared::schedules`]).
//!
//! Each replica tries `pg_try_advisory_lock` on a dedicated connection; the one that
//! holds it fires due schedules every tick, the others try again every tick. When the
//! leader dies its connection closes and Postgres frees the lock. Leadership can overlap
//! for a moment (a leader stalled past its connection's death); the schedules' unique
//! (schedule, fire time) key keeps each tick once anyway.

use std::time::Duration;

use chrono::Utc;
use shared::schedules::{ActionContext, fire_due};
use sqlx::{Connection, PgConnection, PgPool};
use tokio_util::sync::CancellationToken;

/// The advisory lock key of the schedule leader ("glassbox" in ASCII, as a number).
const LEADER_LOCK_KEY: i64 = 0x676c_6173_7362_6f78;

/// The leader loop of one replica.
pub struct Scheduler {
    pub pool: PgPool,
    /// Names this replica in `schedule_fires.fired_by`.
    pub instance: String,
    pub tick: Duration,
    pub context: ActionContext,
}

impl Scheduler {
    /// Campaigns for leadership and fires due schedules while leading, until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            match self.lead(&shutdown).await {
                Ok(()) => {}
                Err(error) => {
                    tracing::warn!(%error, "scheduler lost its connection; campaigning again")
                }
            }
            metrics::gauge!(shared::metrics::SCHEDULER_LEADER).set(0.0);
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(self.tick) => {}
            }
        }
    }

    /// Opens the dedicated connection, waits for the lock, then fires each tick. Returns
    /// on shutdown; an error means the connection (and so the lock) is gone.
    async fn lead(&self, shutdown: &CancellationToken) -> sqlx::Result<()> {
        let options = self.pool.connect_options();
        let mut connection = PgConnection::connect_with(&options).await?;
        loop {
            let acquired: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                .bind(LEADER_LOCK_KEY)
                .fetch_one(&mut connection)
                .await?;
            if acquired {
                break;
            }
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                () = tokio::time::sleep(self.tick) => {}
            }
        }
        tracing::info!(instance = %self.instance, "scheduler leading");
        metrics::gauge!(shared::metrics::SCHEDULER_LEADER).set(1.0);
        loop {
            // The lock lives exactly as long as this connection: check it each tick.
            sqlx::query("SELECT 1").execute(&mut connection).await?;
            if let Err(error) =
                fire_due(&self.pool, Utc::now(), &self.instance, &self.context).await
            {
                tracing::warn!(%error, "firing schedules failed; trying again next tick");
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(self.tick) => {}
            }
        }
        // Closing the connection frees the lock for the next leader.
        connection.close().await?;
        tracing::info!(instance = %self.instance, "scheduler stepped down");
        Ok(())
    }
}
