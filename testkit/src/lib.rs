//! Test and benchmark helpers, in one place for every crate's integration tests.
//!
//! # Layout
//! - [`fresh_database`]: a fresh, migrated database and nothing else.
//! - [`TestApp`]: a fresh database, queue (with DLQ) and bucket on the local stack, an
//!   in-process api-lite on port 0, and an org with a token; helpers to upload files
//!   and wait for them.
//! - [`WorkerProcess`]: a real worker binary started against that app, killable with
//!   SIGTERM or SIGKILL.
//! - [`cpu`]: CPU time of workers, Postgres backends and moto, for scale-out benchmarks.
//! - [`mcp`]: a small MCP server (stdio and streamable HTTP) for agent tests.
//! - [`pg_counter`]: a Postgres proxy that counts round trips, for tests that bound them.
//! - [`scripted`]: scripted OpenAI-compatible servers (embeddings, chat with tool calls).
//! - [`fixtures`]: generated documents, good and hostile.
//! - [`webhook_receiver`]: a webhook receiver on loopback that records and answers by script.
//! - [`otlp`]: an OTLP/HTTP trace receiver on loopback that keeps the spans it is sent.
//! - [`private_stack`]: a Postgres cluster and a moto server of the test's own, for tests
//!   that restart them (fault tests); [`TestOptions::stack`] points an app at them.
//!
//! Set `TEST_LOG=1` to see the app's logs.

/// CPU use per process from `/proc`.
pub mod cpu;
/// Generated document fixtures.
pub mod fixtures;
/// An MCP server for tests.
pub mod mcp;
/// A tiny OTLP/HTTP (JSON) trace receiver on loopback.
pub mod otlp;
/// Counts Postgres round trips through a loopback proxy.
pub mod pg_counter;
/// A private Postgres cluster and moto server that a test may restart.
pub mod private_stack;
/// The processes below a process, from `/proc`.
pub mod processes;
/// Scripted OpenAI-compatible HTTP servers.
pub mod scripted;
/// A webhook receiver on loopback that records requests and answers by a script.
pub mod webhook_receiver;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};
use shared::config::Settings;
use shared::queue::Queue;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub const JWT_SECRET: &str = "test-secret-0123456789abcdef-0123456789";

/// The workspace root (for the model folder and binaries).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("testkit lives in the workspace")
        .to_path_buf()
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

/// Where the local stack is: `.stack/env` as exported by the Makefile, or its defaults.
pub fn admin_database_url() -> String {
    database_url_for("postgres")
}

/// The stack's server URL with another database name.
pub fn database_url_for(database: &str) -> String {
    format!("{}/{database}", stack_server_url())
}

/// The shared stack's Postgres server, without a database name.
fn stack_server_url() -> String {
    let url = env_or(
        "GLASSBOX_DATABASE__URL",
        "postgres://postgres@127.0.0.1:55432/glassbox",
    );
    url.rsplit_once('/')
        .map(|(server, _)| server.to_string())
        .unwrap_or(url)
}

pub fn aws_endpoint() -> String {
    env_or("GLASSBOX_AWS__ENDPOINT_URL", "http://127.0.0.1:55000")
}

pub fn model_dir() -> PathBuf {
    std::env::var_os("GLASSBOX_EMBEDDING__MODEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".stack/models/all-MiniLM-L6-v2"))
}

/// [`pdfium_library`] when it is installed.
pub fn pdfium_library_if_installed() -> Option<PathBuf> {
    let library = std::env::var_os("GLASSBOX_FILES_WORKER__PDFIUM_LIBRARY")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".stack/pdfium/libpdfium.so"));
    library.is_file().then_some(library)
}

/// libpdfium as `scripts/stack.sh` installs it (`GLASSBOX_FILES_WORKER__PDFIUM_LIBRARY` from
/// `.stack/env`, else `.stack/pdfium/libpdfium.so`). Panics when it is missing: `make test` installs it.
pub fn pdfium_library() -> PathBuf {
    let library = std::env::var_os("GLASSBOX_FILES_WORKER__PDFIUM_LIBRARY")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".stack/pdfium/libpdfium.so"));
    assert!(
        library.is_file(),
        "{} is missing: run scripts/stack.sh deps (make test does)",
        library.display()
    );
    library
}

/// Changes a test makes to the app's settings before it starts.
pub type Configure = std::sync::Arc<dyn Fn(&mut Settings) + Send + Sync>;

/// Where an app's Postgres server and AWS endpoint are, when not the shared stack's.
#[derive(Debug, Clone)]
pub struct StackEndpoints {
    /// A Postgres server URL without a database name, e.g. `postgres://postgres@127.0.0.1:5999`.
    pub postgres_server_url: String,
    pub aws_endpoint: String,
}

/// Knobs a test may turn before the app starts.
#[derive(Clone)]
pub struct TestOptions {
    pub max_receive_count: u32,
    pub visibility_timeout_secs: u32,
    /// Runs last on the settings api-lite (and `worker_env`) will use.
    pub configure: Option<Configure>,
    /// A private stack (see [`private_stack`]); the shared one when unset.
    pub stack: Option<StackEndpoints>,
}

impl Default for TestOptions {
    fn default() -> Self {
        Self {
            max_receive_count: 3,
            visibility_timeout_secs: 6,
            configure: None,
            stack: None,
        }
    }
}

pub struct TestApp {
    pub address: SocketAddr,
    /// Where this app serves `/metrics` and `/health` (not on its public listener).
    pub metrics_address: SocketAddr,
    pub base_url: String,
    pub settings: Settings,
    pub database_url: String,
    pub pool: PgPool,
    pub org_id: Uuid,
    pub token: String,
    pub http: reqwest::Client,
    pub aws: shared::aws::AwsClients,
    pub queue: Queue,
    shutdown: CancellationToken,
    /// Dropped after the app's tasks are told to stop (`Drop` below), with the app.
    _database: OwnedDatabase,
}

/// A fresh database on the local stack with every migration applied, for tests that
/// need Postgres and nothing else (the lifecycle modules' unit tests). It is dropped with
/// the returned value unless the test is failing, like a [`TestApp`]'s.
pub async fn fresh_database() -> anyhow::Result<FreshDatabase> {
    shared::telemetry::init_for_tests();
    let database = OwnedDatabase::create(&stack_server_url()).await?;
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .connect(&database.url())
        .await?;
    shared::db::migrate(&pool).await?;
    Ok(FreshDatabase {
        pool,
        _database: database,
    })
}

/// What [`fresh_database`] made: its pool, and the database's drop when it goes.
pub struct FreshDatabase {
    pub pool: PgPool,
    _database: OwnedDatabase,
}

/// A database a test created for itself. A passing test's goes when this drops: some 380
/// of them, about 10 MB each, filled the disk of a CI machine. A failing test's stays for
/// inspection, and `make clean-test-dbs` drops it two hours later.
struct OwnedDatabase {
    server_url: String,
    name: String,
}

impl OwnedDatabase {
    /// Creates a database with a [`unique_database_name`] on `server_url` (no database
    /// name in it).
    async fn create(server_url: &str) -> anyhow::Result<Self> {
        let database = Self {
            server_url: server_url.to_string(),
            name: unique_database_name(),
        };
        let admin = PgPoolOptions::new()
            .max_connections(1)
            .connect(&database.admin_url())
            .await
            .context("connecting to the stack's postgres (is `make stack` up?)")?;
        sqlx::query(&format!("CREATE DATABASE {}", database.name))
            .execute(&admin)
            .await?;
        admin.close().await;
        Ok(database)
    }

    fn url(&self) -> String {
        format!("{}/{}", self.server_url, self.name)
    }

    /// The server's `postgres` database, from which this one is created and dropped.
    fn admin_url(&self) -> String {
        format!("{}/postgres", self.server_url)
    }
}

impl Drop for OwnedDatabase {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            drop_database_now(&self.admin_url(), &self.name);
        }
    }
}

/// `t_<unix time>_<random>`: the creation time in the name lets `make clean-test-dbs`
/// drop only databases old enough that no run still uses them, so test runs in other
/// checkouts on the same stack are never pulled from under their feet.
fn unique_database_name() -> String {
    let unique = Uuid::new_v4().simple().to_string()[..12].to_string();
    let created_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or_default();
    format!("t_{created_unix}_{unique}")
}

impl TestApp {
    pub async fn spawn() -> anyhow::Result<Self> {
        Self::spawn_with(TestOptions::default()).await
    }

    pub async fn spawn_with(options: TestOptions) -> anyhow::Result<Self> {
        shared::telemetry::init_for_tests();
        let unique = Uuid::new_v4().simple().to_string()[..12].to_string();
        let (server_url, endpoint_url) = match &options.stack {
            Some(stack) => (
                stack.postgres_server_url.clone(),
                stack.aws_endpoint.clone(),
            ),
            None => (stack_server_url(), aws_endpoint()),
        };
        let database = OwnedDatabase::create(&server_url).await?;
        let database_url = database.url();

        let mut settings = Settings::default();
        settings.database.url = Some(database_url.clone().into());
        settings.database.max_connections = 8;
        settings.aws.endpoint_url = Some(endpoint_url);
        settings.storage.bucket = format!("t-{unique}");
        settings.storage.create_bucket = true;
        settings.queues.file_jobs = format!("t-{unique}-file-jobs");
        settings.queues.agent_jobs = format!("t-{unique}-agent-jobs");
        settings.queues.create = true;
        settings.queues.max_receive_count = options.max_receive_count;
        settings.queues.visibility_timeout_secs = options.visibility_timeout_secs;
        settings.retry.base_delay_secs = 0.5;
        settings.retry.max_delay_secs = 1.0;
        settings.auth.jwt_secret = Some(JWT_SECRET.into());
        settings.api.listen = "127.0.0.1:0".into();
        settings.api.outbox_poll_ms = 200;
        settings.api.max_file_bytes = 64 * 1024 * 1024;
        settings.embedding.model_dir = model_dir();
        // Workers read PDFs with pdfium, as in production, whenever the stack installed it.
        settings.files_worker.pdfium_library = pdfium_library_if_installed();
        settings.metrics.listen = "127.0.0.1:0".into();
        settings.files_worker.lease_secs = 4;
        settings.files_worker.receive_wait_secs = 1;
        settings.files_worker.shutdown_deadline_secs = 10;
        settings.files_worker.extract_timeout_secs = 20;
        settings.files_worker.max_file_bytes = 8 * 1024 * 1024;
        settings.agent_worker.lease_secs = 3;
        settings.agent_worker.receive_wait_secs = 1;
        settings.agent_worker.shutdown_deadline_secs = 10;
        settings.agent_worker.request_timeout_secs = 60;
        settings.agent_worker.retry_base_ms = 50;
        settings.api.scheduler_tick_ms = 200;
        if let Some(configure) = &options.configure {
            configure(&mut settings);
        }

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let metrics_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let metrics_address = metrics_listener.local_addr()?;
        let shutdown = CancellationToken::new();
        let app_settings = settings.clone();
        let app_shutdown = shutdown.clone();
        let server = tokio::spawn(async move {
            api_lite::run_with_metrics(listener, metrics_listener, app_settings, app_shutdown).await
        });
        let base_url = format!("http://{address}");
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()?;
        let started = Instant::now();
        while !http
            .get(format!("{base_url}/health"))
            .send()
            .await
            .is_ok_and(|response| response.status().is_success())
        {
            if server.is_finished() {
                let outcome = server.await?;
                bail!("api-lite stopped during start: {:?}", outcome.err());
            }
            if started.elapsed() > Duration::from_secs(60) {
                bail!("api-lite did not come up within 60s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .connect(&database_url)
            .await?;
        let aws = shared::aws::AwsClients::new(&settings.aws).await;
        let queue = Queue::open(&aws.sqs, &settings.queues.file_jobs).await?;
        let org_id = Uuid::now_v7();
        let token = api_lite::auth::mint_token(&settings.auth, org_id, "test", 3600, &[])?;
        Ok(Self {
            address,
            metrics_address,
            base_url,
            settings,
            database_url,
            pool,
            org_id,
            token,
            http,
            aws,
            queue,
            shutdown,
            _database: database,
        })
    }

    pub fn token_for(&self, org_id: Uuid) -> String {
        self.mint(org_id, "test", 3600, &[])
    }

    /// A token with the ops role (fleet-wide `/v1/ops` routes), acting as `subject`.
    pub fn ops_token(&self, subject: &str) -> String {
        self.mint(self.org_id, subject, 3600, &[api_lite::auth::OPS_ROLE])
    }

    /// A token of this app's org with the approver role (may decide held tool calls).
    pub fn approver_token(&self, subject: &str) -> String {
        self.mint(self.org_id, subject, 3600, &[api_lite::auth::APPROVER_ROLE])
    }

    /// A token signed with this app's keys.
    pub fn mint(&self, org_id: Uuid, subject: &str, ttl_secs: u64, roles: &[&str]) -> String {
        api_lite::auth::mint_token(&self.settings.auth, org_id, subject, ttl_secs, roles)
            .expect("the test app's auth settings are valid")
    }

    /// `GLASSBOX_*` variables that point a worker process at this app's stack.
    pub fn worker_env(&self) -> Vec<(String, String)> {
        let mut variables = Vec::new();
        flatten_settings(
            "GLASSBOX",
            &serde_json::to_value(&self.settings).expect("settings serialise"),
            &mut variables,
        );
        variables.retain(|(name, _)| {
            !name.starts_with("GLASSBOX_API__") && !name.starts_with("GLASSBOX_AUTH__")
        });
        for (name, value) in &mut variables {
            if name == "GLASSBOX_DATABASE__URL" {
                *value = self.database_url.clone();
            }
            if name == "GLASSBOX_QUEUES__CREATE" {
                *value = "false".into();
            }
        }
        variables.push((
            "AWS_ACCESS_KEY_ID".into(),
            env_or("AWS_ACCESS_KEY_ID", "test"),
        ));
        variables.push((
            "AWS_SECRET_ACCESS_KEY".into(),
            env_or("AWS_SECRET_ACCESS_KEY", "test"),
        ));
        variables
    }

    /// Starts a worker-agent binary that talks to `chat`, plus `overrides`.
    pub fn spawn_agent(
        &self,
        binary: &str,
        chat: &scripted::ScriptedChat,
        overrides: &[(&str, &str)],
    ) -> anyhow::Result<WorkerProcess> {
        let base_url = chat.base_url();
        let mut all_overrides = vec![("GLASSBOX_LLM__BASE_URL", base_url.as_str())];
        all_overrides.extend_from_slice(overrides);
        self.spawn_worker(binary, &all_overrides)
    }

    /// Starts a worker binary with this app's settings plus `overrides`.
    pub fn spawn_worker(
        &self,
        binary: &str,
        overrides: &[(&str, &str)],
    ) -> anyhow::Result<WorkerProcess> {
        let mut command = Command::new(binary);
        command.env_clear();
        command.env("PATH", env_or("PATH", "/usr/bin:/bin"));
        command.env("RUST_LOG", env_or("RUST_LOG", "info,sqlx=warn,aws=warn"));
        for (name, value) in self.worker_env() {
            command.env(name, value);
        }
        // A known metrics port, so tests can scrape the worker.
        let metrics_address = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        command.env("GLASSBOX_METRICS__LISTEN", metrics_address.to_string());
        for (name, value) in overrides {
            command.env(name, value);
        }
        if std::env::var_os("TEST_LOG").is_none() {
            command.stdout(Stdio::null()).stderr(Stdio::null());
        }
        command.kill_on_drop(true);
        let child = command
            .spawn()
            .with_context(|| format!("starting {binary}"))?;
        Ok(WorkerProcess {
            child,
            metrics_address,
            http: self.http.clone(),
        })
    }

    /// Starts api-lite as a process of its own on this app's stack, with `overrides`
    /// (tests of what only a real process shows: its exported spans), and waits for its
    /// `/health`. Returns the process and its base URL.
    pub async fn spawn_api_process(
        &self,
        overrides: &[(&str, &str)],
    ) -> anyhow::Result<(WorkerProcess, String)> {
        let listen = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .to_string();
        let outbox_poll = self.settings.api.outbox_poll_ms.to_string();
        let mut all_overrides = vec![
            ("GLASSBOX_API__LISTEN", listen.as_str()),
            ("GLASSBOX_AUTH__JWT_SECRET", JWT_SECRET),
            ("GLASSBOX_API__OUTBOX_POLL_MS", outbox_poll.as_str()),
        ];
        all_overrides.extend_from_slice(overrides);
        let binary = workspace_binary("api-lite");
        let process = self.spawn_worker(
            binary.to_str().context("the api-lite path is UTF-8")?,
            &all_overrides,
        )?;
        let base_url = format!("http://{listen}");
        wait_until(Duration::from_secs(60), || async {
            self.http
                .get(format!("{base_url}/health"))
                .send()
                .await
                .is_ok_and(|response| response.status().is_success())
        })
        .await
        .context("the api-lite process did not come up")?;
        Ok((process, base_url))
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<(u16, Value)> {
        self.get_as(path, &self.token).await
    }

    pub async fn get_as(&self, path: &str, token: &str) -> anyhow::Result<(u16, Value)> {
        let response = self
            .http
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await?;
        read_json(response).await
    }

    pub async fn post(&self, path: &str, body: Value) -> anyhow::Result<(u16, Value)> {
        self.post_as(path, body, &self.token).await
    }

    pub async fn post_as(
        &self,
        path: &str,
        body: Value,
        token: &str,
    ) -> anyhow::Result<(u16, Value)> {
        self.post_with_headers(path, body, token, &[]).await
    }

    /// `POST` as the app's org, carrying the client's W3C `traceparent` header.
    pub async fn post_traced(
        &self,
        path: &str,
        body: Value,
        traceparent: &str,
    ) -> anyhow::Result<(u16, Value)> {
        self.post_with_headers(path, body, &self.token, &[("traceparent", traceparent)])
            .await
    }

    async fn post_with_headers(
        &self,
        path: &str,
        body: Value,
        token: &str,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<(u16, Value)> {
        let mut request = self.http.post(self.url(path)).bearer_auth(token);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        read_json(request.json(&body).send().await?).await
    }

    /// Creates a file, PUTs the bytes to the presigned URL, and confirms it.
    pub async fn upload(
        &self,
        name: &str,
        content_type: &str,
        bytes: Vec<u8>,
    ) -> anyhow::Result<Uuid> {
        self.upload_with_metadata(name, content_type, bytes, json!({}))
            .await
    }

    /// [`TestApp::upload`] with the file's user metadata.
    pub async fn upload_with_metadata(
        &self,
        name: &str,
        content_type: &str,
        bytes: Vec<u8>,
        metadata: Value,
    ) -> anyhow::Result<Uuid> {
        let (status, created) = self
            .post(
                "/v1/files",
                json!({ "name": name, "content_type": content_type, "size": bytes.len(), "metadata": metadata }),
            )
            .await?;
        if status != 201 {
            bail!("create file answered {status}: {created}");
        }
        let id: Uuid = created["id"].as_str().context("id")?.parse()?;
        let url = created["upload"]["url"].as_str().context("upload url")?;
        let put = self
            .http
            .put(url)
            .header("content-type", content_type)
            .body(bytes)
            .send()
            .await?;
        if !put.status().is_success() {
            bail!("presigned PUT answered {}", put.status());
        }
        let (status, confirmed) = self
            .post(&format!("/v1/files/{id}/confirm"), json!({}))
            .await?;
        if status != 202 {
            bail!("confirm answered {status}: {confirmed}");
        }
        Ok(id)
    }

    /// Waits until api-lite's outbox relay has sent every committed message to SQS
    /// (polling every 10 ms); an error after `limit`.
    pub async fn wait_for_relay(&self, limit: Duration) -> anyhow::Result<()> {
        let deadline = std::time::Instant::now() + limit;
        loop {
            let pending: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
                .fetch_one(&self.pool)
                .await?;
            if pending == 0 {
                return Ok(());
            }
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "the outbox still holds {pending} messages after {} s",
                limit.as_secs()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Polls the file until its status is one of `statuses`; returns the file.
    pub async fn wait_for_file(
        &self,
        id: Uuid,
        statuses: &[&str],
        timeout: Duration,
    ) -> anyhow::Result<Value> {
        self.wait_for_status(
            &format!("/v1/files/{id}"),
            statuses,
            timeout,
            Duration::from_millis(150),
        )
        .await
    }

    /// Polls a resource until its `status` is one of `statuses`; returns it.
    async fn wait_for_status(
        &self,
        path: &str,
        statuses: &[&str],
        timeout: Duration,
        poll: Duration,
    ) -> anyhow::Result<Value> {
        let started = Instant::now();
        loop {
            let (_, resource) = self.get(path).await?;
            if statuses.contains(&resource["status"].as_str().unwrap_or_default()) {
                return Ok(resource);
            }
            if started.elapsed() > timeout {
                bail!(
                    "{path} did not reach {statuses:?} within {timeout:?}; last seen: {resource}"
                );
            }
            tokio::time::sleep(poll).await;
        }
    }

    /// Messages waiting in the DLQ (received and made visible again at once).
    pub async fn dead_letters(&self) -> anyhow::Result<Vec<String>> {
        let output = self
            .aws
            .sqs
            .receive_message()
            .queue_url(&self.queue.dlq_url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .visibility_timeout(0)
            .send()
            .await?;
        Ok(output
            .messages
            .unwrap_or_default()
            .into_iter()
            .filter_map(|message| message.body)
            .collect())
    }
}

impl TestApp {
    /// Collects DLQ messages until at least `count` distinct bodies arrived.
    pub async fn wait_for_dead_letters(
        &self,
        count: usize,
        timeout: Duration,
    ) -> anyhow::Result<Vec<String>> {
        let started = Instant::now();
        let mut bodies: Vec<String> = Vec::new();
        loop {
            for body in self.dead_letters().await? {
                if !bodies.contains(&body) {
                    bodies.push(body);
                }
            }
            if bodies.len() >= count {
                return Ok(bodies);
            }
            if started.elapsed() > timeout {
                bail!(
                    "only {} of {count} messages reached the DLQ within {timeout:?}: {bodies:?}",
                    bodies.len()
                );
            }
        }
    }
}

/// Agent executions: nodes, starting runs, waiting for a status.
impl TestApp {
    /// Creates a node and returns its id.
    pub async fn create_node(
        &self,
        title: &str,
        instructions: &str,
        inputs: Value,
    ) -> anyhow::Result<Uuid> {
        let (status, node) = self
            .post(
                "/v1/nodes",
                json!({ "title": title, "instructions": instructions, "inputs": inputs }),
            )
            .await?;
        if status != 201 {
            bail!("create node answered {status}: {node}");
        }
        Ok(node["id"].as_str().context("node id")?.parse()?)
    }

    /// `POST /v1/nodes/{id}/execute` with an optional Idempotency-Key; returns the status
    /// code and the execution.
    pub async fn execute(
        &self,
        node_id: Uuid,
        idempotency_key: Option<&str>,
        body: Value,
    ) -> anyhow::Result<(u16, Value)> {
        let mut request = self
            .http
            .post(self.url(&format!("/v1/nodes/{node_id}/execute")))
            .bearer_auth(&self.token)
            .json(&body);
        if let Some(key) = idempotency_key {
            request = request.header("Idempotency-Key", key);
        }
        read_json(request.send().await?).await
    }

    /// Polls the execution until its status is one of `statuses`; returns it.
    pub async fn wait_for_execution(
        &self,
        id: Uuid,
        statuses: &[&str],
        timeout: Duration,
    ) -> anyhow::Result<Value> {
        self.wait_for_status(
            &format!("/v1/executions/{id}"),
            statuses,
            timeout,
            Duration::from_millis(50),
        )
        .await
    }

    /// Every trace event of the execution, following the pages.
    pub async fn trace(&self, id: Uuid) -> anyhow::Result<Vec<Value>> {
        let mut events = Vec::new();
        let mut after = 0i64;
        loop {
            let (status, page) = self
                .get(&format!(
                    "/v1/executions/{id}/trace?after={after}&limit=100"
                ))
                .await?;
            if status != 200 {
                bail!("trace answered {status}: {page}");
            }
            events.extend(page["events"].as_array().cloned().unwrap_or_default());
            match page["next_cursor"].as_i64() {
                Some(cursor) => after = cursor,
                None => return Ok(events),
            }
        }
    }

    /// The agent queue of this app.
    pub async fn agent_queue(&self) -> anyhow::Result<Queue> {
        Ok(Queue::open(&self.aws.sqs, &self.settings.queues.agent_jobs).await?)
    }
}

/// One Server-Sent Event: its id, event name and data.
#[derive(Debug, Clone, PartialEq)]
pub struct SseEvent {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: String,
}

/// Reads Server-Sent Events from a streaming response.
pub struct SseReader {
    response: reqwest::Response,
    buffer: String,
}

impl SseReader {
    /// Opens `path` as an event stream, optionally resuming after `last_event_id`.
    pub async fn open(
        app: &TestApp,
        path: &str,
        last_event_id: Option<&str>,
    ) -> anyhow::Result<Self> {
        match Self::open_as(app, path, last_event_id, &app.token).await? {
            Ok(reader) => Ok(reader),
            Err((status, body)) => bail!("event stream answered {status}: {body}"),
        }
    }

    /// Opens `path` with `token`; a refusal comes back as its status and JSON body.
    pub async fn open_as(
        app: &TestApp,
        path: &str,
        last_event_id: Option<&str>,
        token: &str,
    ) -> anyhow::Result<Result<Self, (u16, Value)>> {
        let mut request = app
            .http
            .get(app.url(path))
            .bearer_auth(token)
            .timeout(Duration::from_secs(120));
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id);
        }
        let response = request.send().await?;
        if !response.status().is_success() {
            return Ok(Err(read_json(response).await?));
        }
        Ok(Ok(Self {
            response,
            buffer: String::new(),
        }))
    }

    /// The next event (keep-alive comments skipped); `None` once the server closed.
    pub async fn next(&mut self, timeout: Duration) -> anyhow::Result<Option<SseEvent>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut event = SseEvent {
                    id: None,
                    event: None,
                    data: String::new(),
                };
                let mut has_field = false;
                for line in block.lines() {
                    if let Some(value) = line.strip_prefix("id:") {
                        event.id = Some(value.trim().to_string());
                        has_field = true;
                    } else if let Some(value) = line.strip_prefix("event:") {
                        event.event = Some(value.trim().to_string());
                        has_field = true;
                    } else if let Some(value) = line.strip_prefix("data:") {
                        event.data.push_str(value.trim_start());
                        has_field = true;
                    }
                }
                if has_field {
                    return Ok(Some(event));
                }
                continue;
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            let chunk = tokio::time::timeout(remaining, self.response.chunk())
                .await
                .context("no event within the timeout")??;
            match chunk {
                Some(bytes) => self.buffer.push_str(&String::from_utf8_lossy(&bytes)),
                None => return Ok(None),
            }
        }
    }

    /// Every event until the server closes the stream.
    pub async fn collect(mut self, timeout: Duration) -> anyhow::Result<Vec<SseEvent>> {
        let mut events = Vec::new();
        while let Some(event) = self.next(timeout).await? {
            events.push(event);
        }
        Ok(events)
    }
}

/// A binary of another workspace crate, built next to the test binary (nextest and
/// `cargo build --workspace` build every binary); `CARGO_BIN_EXE_*` only covers the
/// test's own crate.
pub fn workspace_binary(name: &str) -> PathBuf {
    let test_binary = std::env::current_exe().expect("the test binary has a path");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    test_binary
        .parent()
        .and_then(Path::parent)
        .map(|profile| profile.join(name))
        .expect("test binaries live in target/<profile>/deps")
}

impl Drop for TestApp {
    fn drop(&mut self) {
        // The app's tasks stop; its database goes with the `_database` field.
        self.shutdown.cancel();
    }
}

/// Drops `database_name` on the server whose `postgres` database `admin_url` names,
/// ending its connections (`WITH (FORCE)`).
pub async fn drop_database(admin_url: &str, database_name: &str) -> anyhow::Result<()> {
    let admin = PgPoolOptions::new()
        .max_connections(1)
        .connect(admin_url)
        .await
        .context("connecting to postgres to drop a database")?;
    let dropped = sqlx::query(&format!(
        "DROP DATABASE IF EXISTS {database_name} WITH (FORCE)"
    ))
    .execute(&admin)
    .await;
    admin.close().await;
    dropped.with_context(|| format!("dropping database {database_name}"))?;
    Ok(())
}

/// [`drop_database`] from a thread of its own, so it works from a `Drop` in any runtime
/// (or none), giving up after 3 s (a test may have stopped its server). Errors are
/// ignored: the sweep in `make clean-test-dbs` catches what is left.
fn drop_database_now(admin_url: &str, database_name: &str) {
    let admin_url = admin_url.to_string();
    let database_name = database_name.to_string();
    let dropper = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ok()?;
        runtime.block_on(async {
            tokio::time::timeout(
                Duration::from_secs(3),
                drop_database(&admin_url, &database_name),
            )
            .await
            .ok()?
            .ok()
        })
    });
    let _ = dropper.join();
}

fn flatten_settings(prefix: &str, value: &Value, out: &mut Vec<(String, String)>) {
    match value {
        Value::Object(map) => {
            for (key, nested) in map {
                let separator = if prefix == "GLASSBOX" { "_" } else { "__" };
                flatten_settings(
                    &format!("{prefix}{separator}{}", key.to_ascii_uppercase()),
                    nested,
                    out,
                );
            }
        }
        Value::Null | Value::Array(_) => {}
        Value::String(text) => out.push((prefix.to_string(), text.clone())),
        other => out.push((prefix.to_string(), other.to_string())),
    }
}

async fn read_json(response: reqwest::Response) -> anyhow::Result<(u16, Value)> {
    let status = response.status().as_u16();
    let text = response.text().await?;
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    Ok((status, body))
}

/// Serves `router` on `listener` in a task until the returned token is cancelled (the
/// scripted servers and receivers of the tests; dropping the handle does not stop it).
pub fn serve_until_stopped(
    listener: tokio::net::TcpListener,
    router: axum::Router,
) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let stop = CancellationToken::new();
    let stopped = stop.clone();
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, router)
            .with_graceful_shutdown(stopped.cancelled_owned())
            .await;
    });
    (stop, task)
}

/// Polls `condition` every 100 ms until it holds or `timeout` passes.
pub async fn wait_until<F, Fut>(timeout: Duration, mut condition: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    while started.elapsed() < timeout {
        if condition().await {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("condition not met within {timeout:?}")
}

/// A worker process; killed when dropped.
pub struct WorkerProcess {
    child: Child,
    metrics_address: SocketAddr,
    http: reqwest::Client,
}

impl WorkerProcess {
    pub fn pid(&self) -> u32 {
        self.child.id().unwrap_or_default()
    }

    /// The worker's Prometheus text.
    pub async fn metrics(&self) -> anyhow::Result<String> {
        Ok(self
            .http
            .get(format!("http://{}/metrics", self.metrics_address))
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?)
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub async fn kill(&mut self) -> anyhow::Result<()> {
        self.child.kill().await?;
        Ok(())
    }

    /// Sends SIGTERM and waits for the exit, up to `timeout`.
    pub async fn terminate(
        &mut self,
        timeout: Duration,
    ) -> anyhow::Result<std::process::ExitStatus> {
        let pid = self.pid().to_string();
        let status = Command::new("kill").args(["-TERM", &pid]).status().await?;
        if !status.success() {
            bail!("kill -TERM {pid} failed");
        }
        Ok(tokio::time::timeout(timeout, self.child.wait())
            .await
            .context("the worker did not exit in time")??)
    }
}
