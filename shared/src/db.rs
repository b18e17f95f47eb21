//! The Postgres pool and the embedded migrations.

use std::time::Duration;

use secrecy::ExposeSecret;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

use crate::config::{ConfigError, DatabaseSettings};

/// The migrations in `migrations/`, compiled into every binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot connect to postgres: {0}")]
    Connect(#[source] sqlx::Error),
    #[error("cannot apply migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

pub async fn connect(settings: &DatabaseSettings) -> Result<PgPool, DbError> {
    let url = settings.connection_url()?;
    PgPoolOptions::new()
        .max_connections(settings.max_connections)
        // No ping before every checkout: it is a round trip per statement (an agent step
        // would pay it on its commit). A connection the server dropped fails its next
        // statement instead, which every caller treats as a transient error and retries.
        .test_before_acquire(false)
        .acquire_timeout(Duration::from_secs(settings.acquire_timeout_secs))
        .connect(url.expose_secret())
        .await
        .map_err(DbError::Connect)
}

pub async fn migrate(pool: &PgPool) -> Result<(), DbError> {
    MIGRATOR.run(pool).await?;
    Ok(())
}
