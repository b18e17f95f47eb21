//! Control wake-ups: a pause or cancel asked for while a run is in a step reaches its
//! worker by LISTEN/NOTIFY, not by polling.
//!
//! The design is the live trace streams' (api-lite's `live` module, migration 0007):
//! migration 0010's trigger notifies `glassbox_execution_control` at the commit that
//! changes an execution's `control`, with the execution id as payload; one LISTEN
//! connection per worker process receives every notification and wakes only the run it
//! names. When that connection is (re)established, notifications may have been missed,
//! so every run is woken to read its control again.
//!
//! A woken run reads its control request once ([`crate::checkpoint::read_head`]); a run
//! that is not woken reads nothing between steps: its step commit returns the control
//! request as the commit found it, and any later change is notified.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// The channel migration 0010's trigger notifies, with the execution id as payload.
pub const CHANNEL: &str = "glassbox_execution_control";

/// One run's wake-up: set by the listener, taken by the step loop.
#[derive(Default)]
pub struct RunWake {
    woken: AtomicBool,
    notify: Notify,
}

impl RunWake {
    fn wake(&self) {
        self.woken.store(true, Ordering::SeqCst);
        self.notify.notify_one();
    }

    /// Whether a wake-up came since the last time one was taken (and takes it).
    pub fn take(&self) -> bool {
        self.woken.swap(false, Ordering::SeqCst)
    }

    /// Returns at the next wake-up, or at once for one not yet taken (and takes it).
    pub async fn woken(&self) {
        loop {
            if self.take() {
                return;
            }
            self.notify.notified().await;
        }
    }
}

/// The worker process's registry of runs to wake.
#[derive(Default)]
pub struct ControlWakes {
    runs: Mutex<HashMap<Uuid, Vec<Arc<RunWake>>>>,
}

/// A run's place in the registry; leaves it on drop.
pub struct Registration {
    wakes: Arc<ControlWakes>,
    execution_id: Uuid,
    wake: Arc<RunWake>,
}

impl std::ops::Deref for Registration {
    type Target = RunWake;

    fn deref(&self) -> &RunWake {
        &self.wake
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut runs = self
            .wakes
            .runs
            .lock()
            .expect("the run registry is never poisoned");
        if let Some(registered) = runs.get_mut(&self.execution_id) {
            registered.retain(|wake| !Arc::ptr_eq(wake, &self.wake));
            if registered.is_empty() {
                runs.remove(&self.execution_id);
            }
        }
    }
}

impl ControlWakes {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Registers a run: from now on a change of its control wakes it.
    pub fn register(self: &Arc<Self>, execution_id: Uuid) -> Registration {
        let wake = Arc::new(RunWake::default());
        self.runs
            .lock()
            .expect("the run registry is never poisoned")
            .entry(execution_id)
            .or_default()
            .push(wake.clone());
        Registration {
            wakes: self.clone(),
            execution_id,
            wake,
        }
    }

    /// Wakes the runs of one execution.
    pub fn wake(&self, execution_id: Uuid) {
        let runs = self
            .runs
            .lock()
            .expect("the run registry is never poisoned");
        for wake in runs.get(&execution_id).into_iter().flatten() {
            wake.wake();
        }
    }

    /// Wakes every run: notifications may have been missed.
    pub fn wake_everyone(&self) {
        let runs = self
            .runs
            .lock()
            .expect("the run registry is never poisoned");
        for wake in runs.values().flatten() {
            wake.wake();
        }
    }

    /// Listens for notifications until `shutdown`, reconnecting after a lost connection
    /// and waking every run each time it is back.
    pub async fn listen(self: Arc<Self>, pool: PgPool, shutdown: CancellationToken) {
        while !shutdown.is_cancelled() {
            match self.listen_once(&pool, &shutdown).await {
                Ok(()) => return,
                Err(error) => {
                    tracing::warn!(%error, "control listener lost postgres; reconnecting")
                }
            }
            self.wake_everyone();
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
        // Runs that started before the LISTEN read their control before it: read again.
        self.wake_everyone();
        loop {
            let received = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                received = listener.try_recv() => received?,
            };
            match received {
                Some(notification) => match notification.payload().parse::<Uuid>() {
                    Ok(execution_id) => self.wake(execution_id),
                    Err(_) => {
                        tracing::debug!(payload = notification.payload(), "ignoring a notification")
                    }
                },
                // The connection was lost and is back (sqlx listens again by itself).
                None => {
                    tracing::warn!("control listener reconnected; waking every run");
                    self.wake_everyone();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_wake_reaches_only_its_run_and_is_kept_until_taken() {
        let wakes = ControlWakes::new();
        let first = Uuid::now_v7();
        let second = Uuid::now_v7();
        let first_run = wakes.register(first);
        let second_run = wakes.register(second);
        wakes.wake(first);
        assert!(!second_run.take());
        // Woken before anyone waited: the wake is not lost.
        tokio::time::timeout(Duration::from_secs(1), first_run.woken())
            .await
            .expect("the wake was kept");
        assert!(!first_run.take(), "a wake is taken once");
        wakes.wake_everyone();
        assert!(first_run.take() && second_run.take());
    }

    #[test]
    fn a_dropped_registration_leaves_the_registry() {
        let wakes = ControlWakes::new();
        let id = Uuid::now_v7();
        let run = wakes.register(id);
        let again = wakes.register(id);
        drop(run);
        wakes.wake(id);
        assert!(again.take());
        drop(again);
        assert!(wakes.runs.lock().unwrap().is_empty());
    }
}
