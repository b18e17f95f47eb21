//! A fresh, migrated database on the local stack's server for each section, dropped at
//! the end, like testkit does for tests.

use anyhow::Context;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use uuid::Uuid;

pub struct FreshDatabase {
    pub name: String,
    pub pool: PgPool,
}

impl FreshDatabase {
    pub async fn create(label: &str, max_connections: u32) -> anyhow::Result<Self> {
        let (name, url) = Self::create_empty(label).await?;
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .connect(&url)
            .await?;
        shared::db::migrate(&pool).await?;
        Ok(Self { name, pool })
    }

    /// An empty database (no migrations), for the peer that creates its own table.
    pub async fn create_empty(label: &str) -> anyhow::Result<(String, String)> {
        let name = format!(
            "bench_{label}_{}",
            &Uuid::new_v4().simple().to_string()[..10]
        );
        let admin = admin_pool().await?;
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&admin)
            .await?;
        admin.close().await;
        let url = testkit::database_url_for(&name);
        Ok((name, url))
    }

    /// Drops the database, unless `BENCH_KEEP_DATABASE=1` asks to keep it for a look at
    /// the plans (its name is printed).
    pub async fn drop_now(self) -> anyhow::Result<()> {
        self.pool.close().await;
        if std::env::var("BENCH_KEEP_DATABASE").as_deref() == Ok("1") {
            println!("database kept (BENCH_KEEP_DATABASE=1): {}", self.name);
            return Ok(());
        }
        drop_database(&self.name).await
    }
}

/// Settings for an app that one bench client drives: the per-org rate limit (20/s by
/// default) is lifted, because the client measures the pipeline, not a tenant to hold
/// back, and its bursts would otherwise get 429s.
pub fn unthrottled() -> testkit::Configure {
    std::sync::Arc::new(|settings| {
        settings.api.rate_limit_per_sec = 100_000.0;
        settings.api.rate_limit_burst = 100_000;
    })
}

pub async fn drop_database(name: &str) -> anyhow::Result<()> {
    testkit::drop_database(&testkit::admin_database_url(), name)
        .await
        .context("is `make stack` up, .stack/env sourced?")
}

async fn admin_pool() -> anyhow::Result<PgPool> {
    PgPoolOptions::new()
        .max_connections(1)
        .connect(&testkit::admin_database_url())
        .await
        .context("connecting to the stack's postgres (is `make stack` up, .stack/env sourced?)")
}

/// Inserts a `files` row the chunks can point at (they reference it).
pub async fn insert_file_row(
    pool: &PgPool,
    file_id: Uuid,
    org_id: Uuid,
    name: &str,
    content_type: &str,
    size_bytes: i64,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO files (id, org_id, name, content_type, size_bytes, object_key, status, started_at) \
         VALUES ($1, $2, $3, $4, $5, $6, 'processing', now())",
    )
    .bind(file_id)
    .bind(org_id)
    .bind(name)
    .bind(content_type)
    .bind(size_bytes)
    .bind(format!("bench/{file_id}"))
    .execute(pool)
    .await?;
    Ok(())
}
