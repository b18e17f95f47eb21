//! What every handler can reach.

use std::sync::Arc;

use shared::aws::AwsClients;
use shared::config::Settings;
use shared::embed::Embedder;
use shared::queue::Queue;
use sqlx::PgPool;

use crate::auth::Keys;
use crate::limits::OrgRateLimiter;
use crate::live::LiveEvents;
use crate::routes::health::ReadyCache;

#[derive(Clone)]
pub struct AppState(Arc<Inner>);

pub struct Inner {
    pub pool: PgPool,
    pub aws: AwsClients,
    pub settings: Settings,
    pub file_queue: Queue,
    pub agent_queue: Queue,
    pub keys: Keys,
    /// Every model search can embed a query with; chunks of other models are skipped.
    pub embedders: Vec<Arc<dyn Embedder>>,
    /// Each org's request budget.
    pub rate_limiter: OrgRateLimiter,
    /// Wake-ups and caps of live event streams.
    pub live: Arc<LiveEvents>,
    /// The last readiness check, reused for a second.
    pub ready_cache: ReadyCache,
}

impl AppState {
    pub fn new(inner: Inner) -> Self {
        Self(Arc::new(inner))
    }
}

impl std::ops::Deref for AppState {
    type Target = Inner;

    fn deref(&self) -> &Inner {
        &self.0
    }
}
