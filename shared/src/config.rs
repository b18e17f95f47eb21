//! Typed, layered configuration read from the environment.
//!
//! Every variable starts with `GLASSBOX_`, and `__` separates nesting levels, so
//! `GLASSBOX_DATABASE__URL` sets [`DatabaseSettings::url`]. All binaries read the same
//! [`Settings`]: one fleet, one vocabulary. Unknown keys are rejected, so a typo such as
//! `GLASSBOX_DATABSE__URL` fails at start instead of being silently ignored.

use std::path::PathBuf;
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Serialized};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::embed::{DEFAULT_ONNXRUNTIME_LIBRARY, LocalEngine};

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration: {0}")]
    Read(#[from] Box<figment::Error>),
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// The whole fleet's settings; each binary validates the parts it uses.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    pub database: DatabaseSettings,
    pub aws: AwsSettings,
    pub storage: StorageSettings,
    pub queues: QueueSettings,
    pub retry: RetrySettings,
    pub auth: AuthSettings,
    pub api: ApiSettings,
    pub embedding: EmbeddingSettings,
    pub chunking: ChunkingSettings,
    pub files_worker: FilesWorkerSettings,
    pub llm: LlmSettings,
    pub agent_worker: AgentWorkerSettings,
    pub metrics: MetricsSettings,
    pub telemetry: TelemetrySettings,
    pub webhooks: WebhookSettings,
}

impl Settings {
    /// Defaults, overridden by `GLASSBOX_*` environment variables.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_figment(
            Figment::from(Serialized::defaults(Settings::default()))
                .merge(Env::prefixed("GLASSBOX_").split("__")),
        )
    }

    pub fn from_figment(figment: Figment) -> Result<Self, ConfigError> {
        figment
            .extract()
            .map_err(|error| ConfigError::Read(Box::new(error)))
    }
}

/// Where Postgres is: a full URL, or its parts (as Secrets Manager hands them to ECS).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseSettings {
    #[serde(serialize_with = "serialize_optional_secret")]
    pub url: Option<SecretString>,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub user: Option<String>,
    #[serde(serialize_with = "serialize_optional_secret")]
    pub password: Option<SecretString>,
    pub name: Option<String>,
    pub max_connections: u32,
    /// How long a request waits for a pooled connection before it fails as transient.
    pub acquire_timeout_secs: u64,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self {
            url: None,
            host: None,
            port: None,
            user: None,
            password: None,
            name: None,
            max_connections: 10,
            acquire_timeout_secs: 10,
        }
    }
}

impl DatabaseSettings {
    /// The connection URL, built from the parts when no URL is given.
    pub fn connection_url(&self) -> Result<SecretString, ConfigError> {
        if let Some(url) = &self.url {
            return Ok(url.clone());
        }
        let (Some(host), Some(user)) = (&self.host, &self.user) else {
            return Err(ConfigError::Invalid(
                "set GLASSBOX_DATABASE__URL, or GLASSBOX_DATABASE__HOST and GLASSBOX_DATABASE__USER (with __PASSWORD, __PORT, __NAME)".into(),
            ));
        };
        let password = self
            .password
            .as_ref()
            .map(|secret| encode_url_part(secret.expose_secret()))
            .unwrap_or_default();
        let credentials = if password.is_empty() {
            encode_url_part(user)
        } else {
            format!("{}:{password}", encode_url_part(user))
        };
        let port = self.port.unwrap_or(5432);
        let name = self.name.as_deref().unwrap_or("glassbox");
        Ok(SecretString::from(format!(
            "postgres://{credentials}@{host}:{port}/{name}"
        )))
    }
}

fn encode_url_part(raw: &str) -> String {
    raw.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (byte as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

/// How to reach AWS; `endpoint_url` points the SDKs at moto (or LocalStack) instead.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AwsSettings {
    pub region: String,
    pub endpoint_url: Option<String>,
}

impl Default for AwsSettings {
    fn default() -> Self {
        Self {
            region: "us-east-1".into(),
            endpoint_url: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageSettings {
    pub bucket: String,
    /// Presigned upload URLs stay valid this long.
    pub presign_expiry_secs: u64,
    /// Presigned download URLs (`GET /v1/files/{id}`) stay valid this long.
    pub download_expiry_secs: u64,
    /// Create the bucket at start when it is missing (local stacks only; CDK owns it on AWS).
    pub create_bucket: bool,
}

impl Default for StorageSettings {
    fn default() -> Self {
        Self {
            bucket: "glassbox-files".into(),
            presign_expiry_secs: 900,
            download_expiry_secs: 300,
            create_bucket: false,
        }
    }
}

/// Queue names or URLs. A name is resolved with GetQueueUrl.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueSettings {
    pub file_jobs: String,
    pub agent_jobs: String,
    /// Create the queues and their DLQs at start when missing (local stacks only).
    pub create: bool,
    /// Used only when `create` is set; on AWS the queue's RedrivePolicy is read instead.
    pub max_receive_count: u32,
    /// SQS visibility timeout for new queues and for each heartbeat extension.
    pub visibility_timeout_secs: u32,
}

impl Default for QueueSettings {
    fn default() -> Self {
        Self {
            file_jobs: "glassbox-file-jobs".into(),
            agent_jobs: "glassbox-agent-jobs".into(),
            create: false,
            max_receive_count: 5,
            visibility_timeout_secs: 120,
        }
    }
}

/// The backoff schedule for transient failures, designed together with the queues'
/// `maxReceiveCount`: with the defaults a job waits about 10, 20, 40 and 80 s (with
/// full jitter) before its fifth and last attempt.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetrySettings {
    pub base_delay_secs: f64,
    pub max_delay_secs: f64,
}

impl Default for RetrySettings {
    fn default() -> Self {
        Self {
            base_delay_secs: 10.0,
            max_delay_secs: 300.0,
        }
    }
}

/// The shortest HMAC key accepted for tokens: HS256 keys shorter than its 32-byte
/// output only weaken it.
pub const MIN_JWT_SECRET_BYTES: usize = 32;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSettings {
    /// HS256 key of bearer tokens, at least [`MIN_JWT_SECRET_BYTES`] bytes.
    #[serde(serialize_with = "serialize_optional_secret")]
    pub jwt_secret: Option<SecretString>,
    /// A separate HS256 key for tokens with the ops role. When set, an ops token signed
    /// with `jwt_secret` is refused, so the key tenants' tokens come from cannot mint
    /// fleet-wide powers.
    #[serde(serialize_with = "serialize_optional_secret")]
    pub ops_jwt_secret: Option<SecretString>,
    /// The `iss` claim every token must carry.
    pub issuer: String,
    /// The `aud` claim every token must carry.
    pub audience: String,
    /// Lifetime of tokens minted by `api-lite token`.
    pub token_ttl_secs: u64,
    /// Lifetime of ops tokens minted by `api-lite token --ops`: short, as they reach
    /// every org's queues.
    pub ops_token_ttl_secs: u64,
    /// Ops tokens that live longer than this (`exp - iat`) are refused.
    pub ops_token_max_ttl_secs: u64,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            jwt_secret: None,
            ops_jwt_secret: None,
            issuer: "glassbox-fleet".into(),
            audience: "glassbox-api".into(),
            token_ttl_secs: 24 * 3600,
            ops_token_ttl_secs: 3600,
            ops_token_max_ttl_secs: 8 * 3600,
        }
    }
}

impl AuthSettings {
    pub fn secret(&self) -> Result<&SecretString, ConfigError> {
        match &self.jwt_secret {
            Some(secret) => check_secret_length("GLASSBOX_AUTH__JWT_SECRET", secret),
            None => Err(ConfigError::Invalid(
                "GLASSBOX_AUTH__JWT_SECRET is not set".into(),
            )),
        }
    }

    /// The ops key, when one is set; it must be long enough and differ from the main key.
    pub fn ops_secret(&self) -> Result<Option<&SecretString>, ConfigError> {
        let Some(ops_secret) = &self.ops_jwt_secret else {
            return Ok(None);
        };
        check_secret_length("GLASSBOX_AUTH__OPS_JWT_SECRET", ops_secret)?;
        if ops_secret.expose_secret() == self.secret()?.expose_secret() {
            return Err(ConfigError::Invalid(
                "GLASSBOX_AUTH__OPS_JWT_SECRET must differ from GLASSBOX_AUTH__JWT_SECRET".into(),
            ));
        }
        Ok(Some(ops_secret))
    }
}

fn check_secret_length<'a>(
    name: &str,
    secret: &'a SecretString,
) -> Result<&'a SecretString, ConfigError> {
    if secret.expose_secret().len() < MIN_JWT_SECRET_BYTES {
        return Err(ConfigError::Invalid(format!(
            "{name} must be at least {MIN_JWT_SECRET_BYTES} bytes"
        )));
    }
    Ok(secret)
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiSettings {
    pub listen: String,
    /// Largest upload accepted by `POST /v1/files`.
    pub max_file_bytes: u64,
    pub allowed_content_types: Vec<String>,
    /// How often the outbox relay polls when nothing wakes it.
    pub outbox_poll_ms: u64,
    /// Files queued for longer than this without a worker starting them are re-enqueued.
    pub sweeper_requeue_after_secs: u64,
    pub sweeper_interval_secs: u64,
    /// Run the schedule leader election and fire schedules on this replica.
    pub scheduler_enabled: bool,
    /// How often the leader looks for due schedules (and a follower for the lock).
    pub scheduler_tick_ms: u64,
    /// DLQ redrives move at most this many messages a second (receive/send/delete).
    pub redrive_rate_per_sec: u32,
    /// Hand "redrive all" of file-jobs to SQS StartMessageMoveTask where the endpoint
    /// supports it; the receive/send/delete move is the fallback.
    pub redrive_use_move_task: bool,
    /// How often the queue depth gauges are refreshed.
    pub queue_metrics_interval_secs: u64,
    /// A job queued for longer than this counts as stuck (ops views).
    pub stuck_queued_for_secs: u64,
    /// A request that has not answered after this long gets 503 `timeout` (a live event
    /// stream counts only until its headers are sent).
    pub request_timeout_secs: u64,
    /// Requests served at once by this replica; beyond it they get 503 `overloaded`.
    pub max_concurrent_requests: usize,
    /// Requests per second each org may make (a token bucket refilled at this rate);
    /// beyond it they get 429 with `Retry-After`.
    pub rate_limit_per_sec: f64,
    /// The bucket's size: how many requests an org may make at once after a quiet spell.
    pub rate_limit_burst: u32,
    /// Live event streams (SSE) open at once on this replica, and per org.
    pub max_event_streams: usize,
    pub max_event_streams_per_org: usize,
    /// A live event stream closes after this long (or when its token expires, if sooner);
    /// the client reconnects with `Last-Event-ID`.
    pub event_stream_max_secs: u64,
    /// Uploads never confirmed are deleted (row and object) this long after their
    /// presigned URL expired.
    pub abandoned_upload_grace_secs: u64,
}

impl Default for ApiSettings {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:8080".into(),
            max_file_bytes: 100 * 1024 * 1024,
            allowed_content_types: [
                "application/pdf",
                "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
                "text/plain",
                "text/markdown",
                "text/html",
                "application/vnd.openxmlformats-officedocument.presentationml.presentation",
                "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
                "text/csv",
                "application/epub+zip",
                "image/png",
                "image/jpeg",
                "image/tiff",
                "application/octet-stream",
            ]
            .into_iter()
            .map(String::from)
            .collect(),
            outbox_poll_ms: 500,
            sweeper_requeue_after_secs: 600,
            sweeper_interval_secs: 60,
            scheduler_enabled: true,
            scheduler_tick_ms: 1000,
            redrive_rate_per_sec: 50,
            redrive_use_move_task: true,
            queue_metrics_interval_secs: 15,
            stuck_queued_for_secs: 300,
            request_timeout_secs: 30,
            max_concurrent_requests: 512,
            rate_limit_per_sec: 20.0,
            rate_limit_burst: 40,
            max_event_streams: 1000,
            max_event_streams_per_org: 20,
            event_stream_max_secs: 3600,
            abandoned_upload_grace_secs: 600,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EmbeddingProvider {
    /// all-MiniLM-L6-v2 on the CPU with candle; needs no key.
    Local,
    /// Any OpenAI-compatible `/embeddings` endpoint.
    Openai,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmbeddingSettings {
    pub provider: EmbeddingProvider,
    /// Folder with model.safetensors, config.json and tokenizer.json (local provider,
    /// and the tokenizer used for chunking with any provider).
    pub model_dir: PathBuf,
    /// Most texts per forward pass (local) or per request (remote, see below).
    pub batch_size: usize,
    /// Local provider: most padded tokens per forward pass (texts times the longest),
    /// which bounds the worker's memory for long chunks.
    pub max_batch_tokens: usize,
    /// Local provider: `auto` (ONNX Runtime when its library loads, else candle),
    /// `onnxruntime` or `candle`.
    pub engine: LocalEngine,
    /// Local provider: `libonnxruntime.so`, a path or a name the dynamic loader finds
    /// (`scripts/stack.sh` and the images install it as a system library).
    pub onnxruntime_library: PathBuf,
    /// Local provider: cores one batch is spread over; 0 means all this process may use.
    pub threads: usize,
    pub base_url: String,
    pub model: String,
    pub dimensions: Option<usize>,
    #[serde(serialize_with = "serialize_optional_secret")]
    pub api_key: Option<SecretString>,
    pub max_inputs_per_request: usize,
    pub max_tokens_per_request: usize,
    pub max_retries: usize,
    pub request_timeout_secs: u64,
    /// The model the fleet used before this one, kept for search while a `reembed`
    /// schedule moves files over (api-lite only; workers embed with the current model).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous: Option<Box<EmbeddingSettings>>,
}

impl Default for EmbeddingSettings {
    fn default() -> Self {
        Self {
            provider: EmbeddingProvider::Local,
            model_dir: PathBuf::from(".stack/models/all-MiniLM-L6-v2"),
            batch_size: 32,
            max_batch_tokens: 512,
            engine: LocalEngine::Auto,
            onnxruntime_library: PathBuf::from(DEFAULT_ONNXRUNTIME_LIBRARY),
            threads: 0,
            base_url: "https://api.openai.com/v1".into(),
            model: "text-embedding-3-small".into(),
            dimensions: None,
            api_key: None,
            max_inputs_per_request: 256,
            max_tokens_per_request: 100_000,
            max_retries: 5,
            request_timeout_secs: 60,
            previous: None,
        }
    }
}

/// Token-aware chunking with the embedding model's tokenizer.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChunkingSettings {
    /// Most tokens per chunk; all-MiniLM-L6-v2 reads at most 256.
    pub max_tokens: usize,
    pub overlap_tokens: usize,
}

impl Default for ChunkingSettings {
    fn default() -> Self {
        Self {
            max_tokens: 200,
            overlap_tokens: 20,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct FilesWorkerSettings {
    /// Files processed at once by one worker.
    pub concurrency: usize,
    /// Largest file the worker downloads; bigger ones fail as `too_large`.
    pub max_file_bytes: u64,
    /// The lease on a file lasts this long and is renewed at half of it.
    pub lease_secs: u64,
    /// On SIGTERM, in-flight files get this long to finish before they are released.
    pub shutdown_deadline_secs: u64,
    /// Long-poll wait of each ReceiveMessage call.
    pub receive_wait_secs: u32,
    /// Where downloads are spooled; the system temp folder when unset.
    pub spool_dir: Option<PathBuf>,
    /// The program run for sandboxed extraction; the worker binary itself when unset.
    pub extractor_program: Option<PathBuf>,
    /// Extraction children running at once. 0 (the default) picks: 1 with the local
    /// embedding model (its engine already spreads each batch over every core, and
    /// extraction is about 1 % of a file's time, so more children only add memory),
    /// otherwise one per core the worker may use.
    pub extract_concurrency: usize,
    pub extract_timeout_secs: u64,
    pub extract_memory_mb: u64,
    pub extract_max_pages: u32,
    /// Which engine reads PDFs: `auto` (pdfium when libpdfium loads, else pdf-extract),
    /// `pdfium` (refuse to start without it) or `pdf-extract`.
    pub pdf_engine: PdfEngineChoice,
    /// libpdfium.so (or the folder holding it). Unset: next to the worker binary, then
    /// /usr/local/lib, /usr/lib and /opt/pdfium/lib.
    pub pdfium_library: Option<PathBuf>,
    /// Test hook: the worker stops dead at this named point (see `failpoint`).
    pub failpoint: Option<String>,
}

impl Default for FilesWorkerSettings {
    fn default() -> Self {
        Self {
            concurrency: 4,
            max_file_bytes: 100 * 1024 * 1024,
            lease_secs: 120,
            shutdown_deadline_secs: 100,
            receive_wait_secs: 20,
            spool_dir: None,
            extractor_program: None,
            extract_concurrency: 0,
            extract_timeout_secs: 120,
            extract_memory_mb: 2048,
            extract_max_pages: 5000,
            pdf_engine: PdfEngineChoice::Auto,
            pdfium_library: None,
            failpoint: None,
        }
    }
}

impl FilesWorkerSettings {
    pub fn lease(&self) -> Duration {
        Duration::from_secs(self.lease_secs)
    }
}

/// The PDF engine a files worker is configured with (`GLASSBOX_FILES_WORKER__PDF_ENGINE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PdfEngineChoice {
    /// pdfium when libpdfium loads, otherwise pdf-extract (logged at start).
    Auto,
    /// pdfium, or the worker does not start.
    Pdfium,
    /// pdf-extract, pure Rust.
    PdfExtract,
}

/// The OpenAI-compatible chat endpoint agents run on.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LlmSettings {
    pub base_url: Option<String>,
    #[serde(serialize_with = "serialize_optional_secret")]
    pub api_key: Option<SecretString>,
    pub model: String,
}

impl Default for LlmSettings {
    fn default() -> Self {
        Self {
            base_url: None,
            api_key: None,
            model: "gpt-4o-mini".into(),
        }
    }
}

/// Whether a tool runs, is refused, or waits for a person's approval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolPolicy {
    Allow,
    Deny,
    RequireApproval,
}

/// What a model costs, in US dollars per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ModelPrice {
    pub input_per_million_usd: f64,
    pub output_per_million_usd: f64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentWorkerSettings {
    /// Executions run at once by one worker.
    pub concurrency: usize,
    /// The lease on an execution lasts this long and is renewed at half of it.
    pub lease_secs: u64,
    /// On SIGTERM, in-flight steps get this long to finish before they are abandoned.
    pub shutdown_deadline_secs: u64,
    /// Long-poll wait of each ReceiveMessage call.
    pub receive_wait_secs: u32,
    /// Time limit of one model request; a timeout is retried like a 5xx.
    pub request_timeout_secs: u64,
    /// Retries of one model request after 429, 5xx or a timeout.
    pub max_retries: usize,
    /// First retry delay; doubles each time, with jitter.
    pub retry_base_ms: u64,
    /// Budgets used when the execution does not set its own.
    pub default_max_steps: u32,
    pub default_max_tokens: u64,
    pub default_max_cost_usd: f64,
    pub default_max_wall_secs: u64,
    /// Per-tool policy overrides, e.g. `write_output = "allow"`; unlisted tools keep
    /// their built-in policy (write_output needs approval, the others are allowed).
    pub tool_policy: std::collections::BTreeMap<String, ToolPolicy>,
    /// The highest limits a run may have, whatever its caller asks for.
    pub budget_ceiling: BudgetCeiling,
    /// `max_tokens` of one model call; lowered to what is left of the run's token budget.
    pub max_output_tokens: u32,
    /// The models a run may use. Each needs a price too: an unpriced model is refused,
    /// by the API and by the worker, as its spend could not count against a budget.
    pub allowed_models: Vec<String>,
    /// Prices per model (names without dots: `__` and `.` both nest in the
    /// environment).
    pub prices: std::collections::BTreeMap<String, ModelPrice>,
    /// Checkpoints (step deltas) of executions finished longer ago than this are deleted.
    pub checkpoint_retention_days: u32,
    /// MCP servers whose tools agents may call, by server name (lowercase letters,
    /// digits, `-`; the model sees their tools as `<server>__<tool>`). See
    /// docs/mcp.md.
    pub mcp_servers: std::collections::BTreeMap<String, McpServerSettings>,
    /// Test hook: the worker stops dead at this named point (see `failpoint`).
    pub failpoint: Option<String>,
}

/// How an MCP server is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum McpTransport {
    /// A child process of the worker speaking JSON-RPC on its stdin and stdout.
    Stdio,
    /// The streamable HTTP transport: JSON-RPC POSTed to one URL.
    Http,
}

/// One MCP server and who may use it.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct McpServerSettings {
    pub transport: McpTransport,
    /// Stdio: the program and its arguments.
    pub command: Option<String>,
    pub args: Vec<String>,
    /// Http: the MCP endpoint.
    pub url: Option<String>,
    /// The orgs whose agents see this server's tools; no other org does.
    pub orgs: Vec<uuid::Uuid>,
    /// Tools safe to run again when a crash left their outcome unknown (reads). Any
    /// other tool is treated as having an effect: its answer is recorded before it runs,
    /// and after a crash with an unknown outcome it is not run again.
    pub idempotent_tools: Vec<String>,
    /// Per-tool policy by the server's own tool name. Unlisted tools: `allow` when
    /// idempotent, `require_approval` otherwise.
    pub tool_policy: std::collections::BTreeMap<String, ToolPolicy>,
    /// Time limit of one request to the server.
    pub timeout_secs: u64,
}

impl Default for McpServerSettings {
    fn default() -> Self {
        Self {
            transport: McpTransport::Http,
            command: None,
            args: Vec::new(),
            url: None,
            orgs: Vec::new(),
            idempotent_tools: Vec::new(),
            tool_policy: std::collections::BTreeMap::new(),
            timeout_secs: 30,
        }
    }
}

impl Default for AgentWorkerSettings {
    fn default() -> Self {
        let prices = [("gpt-4o-mini", 0.15, 0.60), ("gpt-4o", 2.50, 10.00)]
            .into_iter()
            .map(|(model, input, output)| {
                (
                    model.to_string(),
                    ModelPrice {
                        input_per_million_usd: input,
                        output_per_million_usd: output,
                    },
                )
            })
            .collect();
        Self {
            concurrency: 8,
            lease_secs: 60,
            shutdown_deadline_secs: 100,
            receive_wait_secs: 20,
            request_timeout_secs: 120,
            max_retries: 4,
            retry_base_ms: 500,
            default_max_steps: 30,
            default_max_tokens: 200_000,
            default_max_cost_usd: 1.0,
            default_max_wall_secs: 1800,
            tool_policy: std::collections::BTreeMap::new(),
            budget_ceiling: BudgetCeiling::default(),
            max_output_tokens: 4096,
            allowed_models: vec!["gpt-4o-mini".into(), "gpt-4o".into()],
            prices,
            checkpoint_retention_days: 30,
            mcp_servers: std::collections::BTreeMap::new(),
            failpoint: None,
        }
    }
}

impl AgentWorkerSettings {
    pub fn lease(&self) -> Duration {
        Duration::from_secs(self.lease_secs)
    }

    /// Defaults within the ceiling, a positive per-call token cap.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let ceiling = &self.budget_ceiling;
        let within = self.default_max_steps <= ceiling.max_steps
            && self.default_max_tokens <= ceiling.max_tokens
            && self.default_max_cost_usd <= ceiling.max_cost_usd
            && self.default_max_wall_secs <= ceiling.max_wall_secs;
        if !within {
            return Err(ConfigError::Invalid(
                "the agent worker's default budget must stay within GLASSBOX_AGENT_WORKER__BUDGET_CEILING__*".into(),
            ));
        }
        if self.max_output_tokens == 0 {
            return Err(ConfigError::Invalid(
                "GLASSBOX_AGENT_WORKER__MAX_OUTPUT_TOKENS must be positive".into(),
            ));
        }
        for (name, server) in &self.mcp_servers {
            let well_named = !name.is_empty()
                && name.chars().all(|character| {
                    character.is_ascii_lowercase() || character.is_ascii_digit() || character == '-'
                });
            if !well_named {
                return Err(ConfigError::Invalid(format!(
                    "MCP server name {name:?} must be lowercase letters, digits and '-'"
                )));
            }
            let reachable = match server.transport {
                McpTransport::Stdio => server.command.is_some(),
                McpTransport::Http => server.url.is_some(),
            };
            if !reachable {
                return Err(ConfigError::Invalid(format!(
                    "MCP server {name}: a stdio server needs GLASSBOX_AGENT_WORKER__MCP_SERVERS__{upper}__COMMAND, an http one __URL",
                    upper = name.to_ascii_uppercase()
                )));
            }
        }
        Ok(())
    }
}

/// The highest budget a run may have: a caller's larger limits are lowered to these.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BudgetCeiling {
    pub max_steps: u32,
    pub max_tokens: u64,
    pub max_cost_usd: f64,
    pub max_wall_secs: u64,
}

impl Default for BudgetCeiling {
    fn default() -> Self {
        Self {
            max_steps: 200,
            max_tokens: 2_000_000,
            max_cost_usd: 20.0,
            max_wall_secs: 6 * 3600,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSettings {
    /// Where every binary serves `/metrics` and `/health`: api-lite too, on this listener
    /// rather than its public one, so Prometheus text never reaches the internet.
    pub listen: String,
}

impl Default for MetricsSettings {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:9100".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Pretty,
    Json,
}

/// Webhook deliveries (`GLASSBOX_WEBHOOKS__*`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookSettings {
    /// Deliver to loopback addresses (127.0.0.0/8, ::1): development and tests only.
    pub allow_loopback: bool,
    /// Deliver to private, link-local, shared (CGNAT) and other non-public addresses.
    pub allow_private_networks: bool,
    /// How long one delivery attempt may take, connect to last byte.
    pub timeout_ms: u64,
    /// How long a delivery is retried before it is marked failed (about a day).
    pub retry_window_secs: u64,
    /// The first retry's delay; each next one doubles, up to `max_retry_delay_secs`,
    /// with jitter (each delay is drawn between half and all of it).
    pub first_retry_ms: u64,
    pub max_retry_delay_secs: u64,
    /// The most of a receiver's answer read (for the delivery's `last_error`).
    pub max_response_bytes: usize,
    /// How often the dispatcher looks for due deliveries when nothing wakes it.
    pub poll_ms: u64,
    /// Deliveries attempted at once by one replica.
    pub concurrency: usize,
    /// How long a rotated-out secret still signs (a second signature).
    pub secret_rotation_grace_secs: u64,
    pub max_endpoints_per_org: i64,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        Self {
            allow_loopback: false,
            allow_private_networks: false,
            timeout_ms: 10_000,
            retry_window_secs: 24 * 3600,
            first_retry_ms: 5_000,
            max_retry_delay_secs: 3600,
            max_response_bytes: 16 * 1024,
            poll_ms: 1_000,
            concurrency: 16,
            secret_rotation_grace_secs: 24 * 3600,
            max_endpoints_per_org: 25,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetrySettings {
    pub format: LogFormat,
}

fn serialize_optional_secret<S: serde::Serializer>(
    value: &Option<SecretString>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    // Secrets only ever serialise as a marker, so a dump of the settings never leaks them.
    match value {
        Some(_) => serializer.serialize_some("[redacted]"),
        None => serializer.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads the settings from exactly these environment variables, in a jail.
    #[allow(clippy::result_large_err)] // figment's own Jail signature
    fn with_env(pairs: &[(&str, &str)]) -> Result<Settings, String> {
        let mut outcome = Err(String::new());
        figment::Jail::expect_with(|jail| {
            jail.clear_env();
            for (key, value) in pairs {
                jail.set_env(key, value);
            }
            outcome = Settings::from_env().map_err(|error| error.to_string());
            Ok(())
        });
        outcome
    }

    #[test]
    fn mcp_servers_are_read_from_the_environment_and_checked() {
        let org = "0191a5a3-7c2e-7a00-8000-000000000001";
        let orgs = format!("[{org}]");
        let settings = with_env(&[
            (
                "GLASSBOX_AGENT_WORKER__MCP_SERVERS__DOCS__TRANSPORT",
                "stdio",
            ),
            (
                "GLASSBOX_AGENT_WORKER__MCP_SERVERS__DOCS__COMMAND",
                "/bin/docs-mcp",
            ),
            (
                "GLASSBOX_AGENT_WORKER__MCP_SERVERS__DOCS__ARGS",
                "[\"/tmp/calls log\", --quiet]",
            ),
            (
                "GLASSBOX_AGENT_WORKER__MCP_SERVERS__DOCS__ORGS",
                orgs.as_str(),
            ),
            (
                "GLASSBOX_AGENT_WORKER__MCP_SERVERS__DOCS__IDEMPOTENT_TOOLS",
                "[lookup]",
            ),
            (
                "GLASSBOX_AGENT_WORKER__MCP_SERVERS__DOCS__TOOL_POLICY__PURGE",
                "deny",
            ),
            (
                "GLASSBOX_AGENT_WORKER__MCP_SERVERS__WIKI__URL",
                "http://127.0.0.1:9/mcp",
            ),
        ])
        .unwrap();
        let docs = &settings.agent_worker.mcp_servers["docs"];
        assert_eq!(docs.transport, McpTransport::Stdio);
        assert_eq!(docs.command.as_deref(), Some("/bin/docs-mcp"));
        assert_eq!(docs.args, ["/tmp/calls log", "--quiet"]);
        assert_eq!(docs.orgs, [org.parse::<uuid::Uuid>().unwrap()]);
        assert_eq!(docs.idempotent_tools, ["lookup"]);
        assert_eq!(docs.tool_policy["purge"], ToolPolicy::Deny);
        let wiki = &settings.agent_worker.mcp_servers["wiki"];
        assert_eq!(wiki.transport, McpTransport::Http);
        assert!(settings.agent_worker.validate().is_ok());

        let unreachable = with_env(&[(
            "GLASSBOX_AGENT_WORKER__MCP_SERVERS__DOCS__TRANSPORT",
            "stdio",
        )])
        .unwrap();
        let refused = unreachable.agent_worker.validate().unwrap_err().to_string();
        assert!(refused.contains("MCP_SERVERS__DOCS__COMMAND"), "{refused}");
    }

    #[test]
    fn nested_values_override_defaults() {
        let settings = with_env(&[
            ("GLASSBOX_FILES_WORKER__CONCURRENCY", "7"),
            ("GLASSBOX_AWS__ENDPOINT_URL", "http://127.0.0.1:1"),
        ])
        .unwrap();
        assert_eq!(settings.files_worker.concurrency, 7);
        assert_eq!(
            settings.aws.endpoint_url.as_deref(),
            Some("http://127.0.0.1:1")
        );
        assert_eq!(settings.queues.max_receive_count, 5);
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let error = with_env(&[("GLASSBOX_DATABSE__URL", "x")]).unwrap_err();
        assert!(error.contains("databse"), "{error}");
    }

    #[test]
    fn pdf_engine_is_validated_at_start() {
        let settings = with_env(&[("GLASSBOX_FILES_WORKER__PDF_ENGINE", "pdf-extract")]).unwrap();
        assert_eq!(
            settings.files_worker.pdf_engine,
            PdfEngineChoice::PdfExtract
        );
        assert_eq!(
            with_env(&[]).unwrap().files_worker.pdf_engine,
            PdfEngineChoice::Auto
        );
        let error = with_env(&[("GLASSBOX_FILES_WORKER__PDF_ENGINE", "poppler")]).unwrap_err();
        assert!(error.contains("pdf-extract"), "{error}");
    }

    #[test]
    fn database_url_is_built_from_parts_with_escaping() {
        let settings = with_env(&[
            ("GLASSBOX_DATABASE__HOST", "db"),
            ("GLASSBOX_DATABASE__USER", "app"),
            ("GLASSBOX_DATABASE__PASSWORD", "p@ss/w"),
        ])
        .unwrap();
        let url = settings.database.connection_url().unwrap();
        assert_eq!(
            url.expose_secret(),
            "postgres://app:p%40ss%2Fw@db:5432/glassbox"
        );
    }

    #[test]
    fn secrets_never_serialise() {
        let settings =
            with_env(&[("GLASSBOX_AUTH__JWT_SECRET", "super-secret-value-123")]).unwrap();
        let dumped = serde_json::to_string(&settings).unwrap();
        assert!(!dumped.contains("super-secret"), "{dumped}");
        assert!(
            format!("{settings:?}").contains("jwt_secret")
                && !format!("{settings:?}").contains("super-secret")
        );
    }

    #[test]
    fn agent_tool_policies_and_prices_come_from_the_environment() {
        let settings = with_env(&[
            ("GLASSBOX_AGENT_WORKER__TOOL_POLICY__WRITE_OUTPUT", "allow"),
            ("GLASSBOX_AGENT_WORKER__TOOL_POLICY__SEARCH_FILES", "deny"),
            (
                "GLASSBOX_AGENT_WORKER__PRICES__MY-MODEL__INPUT_PER_MILLION_USD",
                "1.5",
            ),
            (
                "GLASSBOX_AGENT_WORKER__PRICES__MY-MODEL__OUTPUT_PER_MILLION_USD",
                "3",
            ),
        ])
        .unwrap();
        let agent = &settings.agent_worker;
        assert_eq!(agent.tool_policy["write_output"], ToolPolicy::Allow);
        assert_eq!(agent.tool_policy["search_files"], ToolPolicy::Deny);
        assert_eq!(agent.prices["my-model"].output_per_million_usd, 3.0);
        assert!(
            agent.prices.contains_key("gpt-4o-mini"),
            "defaults stay next to overrides"
        );
        assert!(
            with_env(&[("GLASSBOX_AGENT_WORKER__TOOL_POLICY__WRITE_OUTPUT", "maybe")]).is_err()
        );
    }

    #[test]
    fn jwt_secrets_need_32_bytes_and_the_ops_key_must_differ() {
        let short = with_env(&[(
            "GLASSBOX_AUTH__JWT_SECRET",
            "0123456789abcdef0123456789abcde",
        )])
        .unwrap();
        let error = short.auth.secret().unwrap_err().to_string();
        assert!(error.contains("at least 32 bytes"), "{error}");
        let main = "0123456789abcdef0123456789abcdef";
        let long = with_env(&[("GLASSBOX_AUTH__JWT_SECRET", main)]).unwrap();
        assert!(long.auth.secret().is_ok());
        assert!(long.auth.ops_secret().unwrap().is_none());
        let same = with_env(&[
            ("GLASSBOX_AUTH__JWT_SECRET", main),
            ("GLASSBOX_AUTH__OPS_JWT_SECRET", main),
        ])
        .unwrap();
        assert!(same.auth.ops_secret().is_err());
        let short_ops = with_env(&[
            ("GLASSBOX_AUTH__JWT_SECRET", main),
            ("GLASSBOX_AUTH__OPS_JWT_SECRET", "too-short"),
        ])
        .unwrap();
        assert!(short_ops.auth.ops_secret().is_err());
        let separate = with_env(&[
            ("GLASSBOX_AUTH__JWT_SECRET", main),
            (
                "GLASSBOX_AUTH__OPS_JWT_SECRET",
                "another-key-for-ops-0123456789abcdef",
            ),
        ])
        .unwrap();
        assert!(separate.auth.ops_secret().unwrap().is_some());
    }
}
