//! `bench-agent`: the orchestration overhead of an agent step, with a model that answers
//! instantly.
//!
//! The bench starts api-lite in process on a fresh database, queue and bucket of the
//! local stack (testkit's `TestApp`), a zero-latency OpenAI-compatible chat server in
//! process, and real `worker-agent` processes. Each phase queues its first runs (two per
//! worker slot beyond the running ones, `--backlog`) with no worker running, waits until
//! the outbox has relayed them, then starts the workers, creates the rest through the API
//! as runs finish, and waits until every run completed. A run of N steps is N-1 steps
//! that call the `get_node_context` tool, then a final text answer.
//!
//! The peer, LangGraph with PostgresSaver (`langgraph/steps.py`), runs the same phase
//! right after, in the same database: as many Python processes as workers, each with the
//! same number of runs at once, the same zero-latency model answers and a
//! `get_node_context` tool that reads the node from Postgres. It is installed into a
//! bench-only venv under ~/.cache/glassbox/bench-peers/langgraph by `bench/peers.sh`
//! only when asked (`BENCH_PEERS=1`); without it the report shows the reference in bench-agent/README.md.
//!
//! It reports, per phase (workers × steps per run):
//! - steps/s: committed steps over the window between the first and the last step commit;
//! - the mean time of one step inside a run;
//! - p50 and p99 of the fenced step-commit transaction, from the `commit_us` field of
//!   every `step committed` log line of the workers (JSON logs);
//! - bytes stored per step: checkpoint rows, trace events and tool ledger rows
//!   (`pg_column_size`), the new messages' JSON text, and the growth of the three
//!   tables with their indexes (`pg_total_relation_size` deltas).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use clap::Parser;
use futures::StreamExt;
use serde_json::{Value, json};
use testkit::{TestApp, TestOptions};
use tokio::process::{Child, Command};
use uuid::Uuid;

/// The targets (bench-agent/README.md), and the LangGraph + PostgresSaver figures measured on this kind of
/// machine, shown when the peer is not installed.
const TARGET_STEPS_PER_SEC: f64 = 2_500.0;
const TARGET_COMMIT_P50_MS: f64 = 0.5;
const TARGET_COMMIT_P99_MS: f64 = 5.0;
const TARGET_OVERHEAD_BYTES: f64 = 2_048.0;
const LANGGRAPH_STEPS_PER_SEC: f64 = 247.0;
const LANGGRAPH_MS_PER_STEP: f64 = 4.0;
const LANGGRAPH_BYTES_PER_STEP: [(usize, f64); 2] = [(10, 8_700.0), (50, 15_000.0)];

#[derive(Parser, Debug)]
#[command(about = "Agent orchestration benchmark with a zero-latency scripted model")]
struct Args {
    /// Worker process counts to run, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    workers: Vec<usize>,
    /// Steps per run, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "10,50")]
    steps: Vec<usize>,
    /// Steps per phase in total (runs = this / steps per run, at least one).
    #[arg(long, default_value_t = 3200)]
    steps_per_phase: usize,
    /// Executions one worker process runs at once.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// The worker-agent binary; by default the one next to this binary.
    #[arg(long)]
    worker_bin: Option<PathBuf>,
    /// Give up on a phase after this long.
    #[arg(long, default_value_t = 120)]
    phase_timeout_secs: u64,
    /// Print one JSON object per phase on stdout (and progress on stderr) instead of the
    /// tables.
    #[arg(long)]
    json: bool,
    /// The LangGraph peer's Python; by default the bench-only venv's, when installed.
    #[arg(long)]
    peer_python: Option<PathBuf>,
    /// Skip the LangGraph peer even when it is installed.
    #[arg(long)]
    no_peer: bool,
    /// Runs kept queued per worker slot beyond the running ones: the phase's runs are
    /// created as earlier ones finish, not all at once, so the SQS backlog stays at about
    /// this × workers × concurrency. (moto scans its whole queue for every message it
    /// hands out; a phase queued up front made the local SQS, not the fleet, the limit.)
    #[arg(long, default_value_t = 2)]
    backlog: usize,
    /// Messages the outbox relay is timed on after the phases (0 skips it).
    #[arg(long, default_value_t = 2000)]
    relay_messages: usize,
}

/// How fast api-lite's outbox relay moves committed messages to SQS.
#[derive(Debug, Clone)]
struct RelayFigures {
    messages: usize,
    secs: f64,
    usage: testkit::cpu::Usage,
}

impl RelayFigures {
    fn per_sec(&self) -> f64 {
        self.messages as f64 / self.secs.max(1e-9)
    }
}

/// Commits `messages` outbox entries in one transaction (wake-ups for executions that do
/// not exist; no worker is up) and times the relay until the outbox is empty.
async fn measure_relay(app: &TestApp, messages: usize) -> anyhow::Result<RelayFigures> {
    let mut transaction = app.pool.begin().await?;
    for _ in 0..messages {
        shared::outbox::enqueue_job(
            &mut transaction,
            shared::queue::JobKind::AgentRun,
            Uuid::now_v7(),
            app.org_id,
        )
        .await?;
    }
    let before = cpu_snapshot(app, &[]).await?;
    let started = Instant::now();
    transaction.commit().await?;
    app.wait_for_relay(Duration::from_secs(300)).await?;
    let secs = started.elapsed().as_secs_f64();
    let after = cpu_snapshot(app, &[]).await?;
    Ok(RelayFigures {
        messages,
        secs,
        usage: testkit::cpu::Usage::between(&before, &after),
    })
}

/// What the LangGraph peer measured on one phase.
#[derive(Debug, Clone)]
struct PeerPhase {
    steps: i64,
    window_secs: f64,
    ms_per_step_in_run: f64,
    table_growth_bytes: i64,
}

impl PeerPhase {
    fn steps_per_sec(&self) -> f64 {
        if self.window_secs > 0.0 {
            self.steps as f64 / self.window_secs
        } else {
            0.0
        }
    }
}

#[derive(Debug, Default, Clone)]
struct Phase {
    workers: usize,
    steps_per_run: usize,
    runs: usize,
    steps: i64,
    window_secs: f64,
    wall_secs: f64,
    step_ms_in_run: f64,
    commit_us: Vec<u64>,
    checkpoint_bytes: i64,
    message_text_bytes: i64,
    event_bytes: i64,
    ledger_bytes: i64,
    relation_growth: i64,
    /// CPU use of the workers, Postgres, moto and this process while the runs ran.
    usage: testkit::cpu::Usage,
    peer: Option<PeerPhase>,
}

impl Phase {
    fn steps_per_sec(&self) -> f64 {
        if self.window_secs > 0.0 {
            (self.steps - 1).max(0) as f64 / self.window_secs
        } else {
            0.0
        }
    }

    fn per_step(&self, bytes: i64) -> f64 {
        bytes as f64 / self.steps.max(1) as f64
    }

    /// Everything a step stores beyond its new messages' JSON text.
    fn overhead_per_step(&self) -> f64 {
        self.per_step(self.checkpoint_bytes + self.event_bytes + self.ledger_bytes)
            - self.per_step(self.message_text_bytes)
    }
}

/// The zero-latency model: N-1 `get_node_context` calls, then a text answer. The step is
/// the number of assistant messages in the conversation, as in testkit's ScriptedChat,
/// but nothing is recorded per request.
struct ZeroLatencyModel {
    steps_per_run: AtomicUsize,
    requests: AtomicUsize,
}

/// What the zero-latency model reads of a request: the model's name and each message's
/// role. The rest is skipped without being built, so the stand-in's own cost stays small
/// beside the worker's (the LangGraph peer's model runs in its process and parses nothing).
#[derive(serde::Deserialize)]
struct ChatRequestView<'a> {
    #[serde(borrow)]
    model: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    messages: Vec<RoleView<'a>>,
}

#[derive(serde::Deserialize)]
struct RoleView<'a> {
    #[serde(borrow)]
    role: std::borrow::Cow<'a, str>,
}

async fn chat(
    State(model): State<Arc<ZeroLatencyModel>>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, (axum::http::StatusCode, String)> {
    model.requests.fetch_add(1, Ordering::Relaxed);
    let request: ChatRequestView<'_> = serde_json::from_slice(&body)
        .map_err(|error| (axum::http::StatusCode::BAD_REQUEST, error.to_string()))?;
    let step = request
        .messages
        .iter()
        .filter(|message| message.role == "assistant")
        .count();
    let last = model
        .steps_per_run
        .load(Ordering::Relaxed)
        .saturating_sub(1);
    let (message, finish) = if step < last {
        (
            json!({ "role": "assistant", "content": null, "tool_calls": [
                { "id": format!("call_{step}"), "type": "function",
                  "function": { "name": "get_node_context", "arguments": "{}" } }
            ] }),
            "tool_calls",
        )
    } else {
        (json!({ "role": "assistant", "content": "Done." }), "stop")
    };
    Ok(Json(json!({
        "id": format!("chatcmpl-{step}"),
        "object": "chat.completion",
        "model": request.model,
        "choices": [{ "index": 0, "message": message, "finish_reason": finish }],
        "usage": { "prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120 }
    })))
}

async fn start_model() -> anyhow::Result<(String, Arc<ZeroLatencyModel>)> {
    let model = Arc::new(ZeroLatencyModel {
        steps_per_run: AtomicUsize::new(10),
        requests: AtomicUsize::new(0),
    });
    let router = Router::new()
        .route("/v1/chat/completions", post(chat))
        .with_state(model.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    Ok((format!("http://{address}/v1"), model))
}

struct Worker {
    child: Child,
    log: PathBuf,
}

fn spawn_workers(
    app: &TestApp,
    binary: &Path,
    count: usize,
    model_url: &str,
    concurrency: usize,
    logs: &Path,
    phase: &str,
) -> anyhow::Result<Vec<Worker>> {
    let mut workers = Vec::new();
    for index in 0..count {
        let log = logs.join(format!("{phase}-worker{index}.log"));
        let mut command = Command::new(binary);
        command.env_clear();
        command.env("PATH", std::env::var("PATH").unwrap_or_default());
        command.env("RUST_LOG", "info,sqlx=warn,aws=warn");
        for (name, value) in app.worker_env() {
            command.env(name, value);
        }
        command
            .env("GLASSBOX_LLM__BASE_URL", model_url)
            .env("GLASSBOX_TELEMETRY__FORMAT", "json")
            .env("GLASSBOX_METRICS__LISTEN", "127.0.0.1:0")
            .env(
                "GLASSBOX_AGENT_WORKER__CONCURRENCY",
                concurrency.to_string(),
            )
            .env("GLASSBOX_AGENT_WORKER__LEASE_SECS", "30")
            .env("GLASSBOX_AGENT_WORKER__RECEIVE_WAIT_SECS", "1")
            .env(
                "GLASSBOX_DATABASE__MAX_CONNECTIONS",
                (concurrency + 4).to_string(),
            )
            .stdout(Stdio::null())
            .stderr(File::create(&log)?)
            .kill_on_drop(true);
        let child = command
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        workers.push(Worker { child, log });
    }
    Ok(workers)
}

async fn stop_workers(workers: &mut [Worker]) -> anyhow::Result<()> {
    for worker in workers.iter() {
        if let Some(pid) = worker.child.id() {
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await;
        }
    }
    for worker in workers.iter_mut() {
        if tokio::time::timeout(Duration::from_secs(20), worker.child.wait())
            .await
            .is_err()
        {
            worker.child.kill().await?;
        }
    }
    Ok(())
}

/// `commit_us` of every `step committed` line in a worker's JSON log.
fn commit_times(log: &Path) -> anyhow::Result<Vec<u64>> {
    let mut file = File::open(log)?;
    file.seek(SeekFrom::Start(0))?;
    let mut times = Vec::new();
    for line in BufReader::new(file).lines() {
        let line = line?;
        if !line.contains("step committed") {
            continue;
        }
        if let Ok(entry) = serde_json::from_str::<Value>(&line)
            && let Some(micros) = entry["commit_us"].as_u64()
        {
            times.push(micros);
        }
    }
    Ok(times)
}

fn percentile(sorted: &[u64], fraction: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((fraction * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1] as f64
}

async fn relation_sizes(app: &TestApp) -> anyhow::Result<i64> {
    let size: i64 = sqlx::query_scalar(
        "SELECT (pg_total_relation_size('execution_steps') + pg_total_relation_size('execution_events') \
                + pg_total_relation_size('tool_calls'))::bigint",
    )
    .fetch_one(&app.pool)
    .await?;
    Ok(size)
}

/// What every phase shares.
struct Bench<'a> {
    app: &'a TestApp,
    args: &'a Args,
    binary: PathBuf,
    model_url: String,
    model: Arc<ZeroLatencyModel>,
    node: Uuid,
    logs: PathBuf,
}

/// Creates `count` runs of the bench's node through the API (202 each).
async fn create_runs(
    app: &TestApp,
    node: Uuid,
    body: &Value,
    count: usize,
) -> anyhow::Result<Vec<Uuid>> {
    let created: Vec<anyhow::Result<Uuid>> = futures::stream::iter(0..count)
        .map(|_| async move {
            let key = Uuid::new_v4().to_string();
            let (status, execution) = app.execute(node, Some(&key), body.clone()).await?;
            if status != 202 {
                bail!("execute answered {status}: {execution}");
            }
            Ok(execution["id"].as_str().context("execution id")?.parse()?)
        })
        .buffer_unordered(8)
        .collect()
        .await;
    created.into_iter().collect()
}

async fn run_phase(
    bench: &Bench<'_>,
    workers: usize,
    steps_per_run: usize,
) -> anyhow::Result<Phase> {
    let Bench {
        app,
        args,
        binary,
        model_url,
        model,
        node,
        logs,
    } = bench;
    let (app, args, node) = (*app, *args, *node);
    let runs = (args.steps_per_phase / steps_per_run).max(1);
    model.steps_per_run.store(steps_per_run, Ordering::SeqCst);
    sqlx::query("CHECKPOINT").execute(&app.pool).await.ok();
    let size_before = relation_sizes(app).await?;

    // The runs waiting in SQS are kept to `args.backlog` per worker slot: the first ones
    // are queued and relayed before any worker starts, the rest as runs finish.
    let budget = json!({ "model": "gpt-4o-mini", "budget": { "max_steps": steps_per_run + 5 } });
    let outstanding = workers * args.concurrency * (1 + args.backlog);
    let mut ids = create_runs(app, node, &budget, outstanding.min(runs)).await?;
    app.wait_for_relay(Duration::from_secs(60)).await?;
    let name = format!("w{workers}-s{steps_per_run}");
    let cpu_before = cpu_snapshot(app, &[]).await?;
    let started = Instant::now();
    let mut processes = spawn_workers(
        app,
        binary,
        workers,
        model_url,
        args.concurrency,
        logs,
        &name,
    )?;
    let deadline = started + Duration::from_secs(args.phase_timeout_secs);
    let outcome = loop {
        let (finished, failed): (i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE status IN ('completed', 'failed', 'cancelled')), \
                    count(*) FILTER (WHERE status IN ('failed', 'cancelled')) \
             FROM executions WHERE id = ANY($1)",
        )
        .bind(&ids)
        .fetch_one(&app.pool)
        .await?;
        if failed > 0 {
            let errors: Vec<(Option<String>, Option<String>)> = sqlx::query_as(
                "SELECT error_code, error_message FROM executions WHERE id = ANY($1) AND status <> 'completed' AND error_code IS NOT NULL LIMIT 3",
            )
            .bind(&ids)
            .fetch_all(&app.pool)
            .await?;
            break Err(anyhow::anyhow!("{failed} runs failed: {errors:?}"));
        }
        if finished as usize == runs {
            break Ok(());
        }
        let more = (finished as usize + outstanding)
            .min(runs)
            .saturating_sub(ids.len());
        if more > 0 {
            match create_runs(app, node, &budget, more).await {
                Ok(created) => ids.extend(created),
                Err(error) => break Err(error),
            }
        }
        if Instant::now() > deadline {
            break Err(anyhow::anyhow!(
                "only {finished} of {runs} runs finished within {}s",
                args.phase_timeout_secs
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let wall_secs = started.elapsed().as_secs_f64();
    let worker_pids: Vec<u32> = processes
        .iter()
        .filter_map(|worker| worker.child.id())
        .collect();
    let cpu_after = cpu_snapshot(app, &worker_pids).await?;
    // Workers started after the first snapshot: they count from zero.
    let usage = testkit::cpu::Usage::between(&cpu_before, &cpu_after);
    stop_workers(&mut processes).await?;
    // A long poll the stopped workers left open server-side can still take the next
    // phase's first messages and hide them for a visibility timeout: let it expire.
    tokio::time::sleep(Duration::from_secs(3)).await;
    outcome?;

    let (steps, window_secs, checkpoint_bytes, message_text_bytes): (i64, f64, i64, i64) =
        sqlx::query_as(
            "SELECT count(*), COALESCE(extract(epoch FROM max(created_at) - min(created_at))::float8, 0), \
                    COALESCE(sum(pg_column_size(s.*)), 0)::bigint, COALESCE(sum(octet_length(s.messages::text)), 0)::bigint \
             FROM execution_steps s WHERE execution_id = ANY($1)",
        )
        .bind(&ids)
        .fetch_one(&app.pool)
        .await?;
    let step_ms_in_run: f64 = sqlx::query_scalar(
        "SELECT COALESCE(avg(span / (n - 1)), 0)::float8 * 1000 FROM ( \
             SELECT extract(epoch FROM max(created_at) - min(created_at))::float8 AS span, count(*) AS n \
             FROM execution_steps WHERE execution_id = ANY($1) GROUP BY execution_id HAVING count(*) > 1) per_run",
    )
    .bind(&ids)
    .fetch_one(&app.pool)
    .await?;
    let event_bytes: i64 = sqlx::query_scalar(
        "SELECT COALESCE(sum(pg_column_size(e.*)), 0)::bigint FROM execution_events e WHERE execution_id = ANY($1)",
    )
    .bind(&ids)
    .fetch_one(&app.pool)
    .await?;
    let ledger_bytes: i64 = sqlx::query_scalar(
        "SELECT COALESCE(sum(pg_column_size(t.*)), 0)::bigint FROM tool_calls t WHERE execution_id = ANY($1)",
    )
    .bind(&ids)
    .fetch_one(&app.pool)
    .await?;
    sqlx::query("CHECKPOINT").execute(&app.pool).await.ok();
    let relation_growth = relation_sizes(app).await? - size_before;

    let mut commit_us = Vec::new();
    for worker in &processes {
        commit_us.extend(commit_times(&worker.log)?);
    }
    commit_us.sort_unstable();
    if commit_us.len() as i64 != steps {
        eprintln!(
            "  note: {} commit times in the logs for {steps} committed steps",
            commit_us.len()
        );
    }
    Ok(Phase {
        workers,
        steps_per_run,
        runs,
        steps,
        window_secs,
        wall_secs,
        step_ms_in_run,
        commit_us,
        checkpoint_bytes,
        message_text_bytes,
        event_bytes,
        ledger_bytes,
        relation_growth,
        usage,
        peer: None,
    })
}

/// CPU ticks now of the workers, this database's Postgres backends, the moto server
/// (the SQS endpoint) and this process (api-lite and the model).
async fn cpu_snapshot(
    app: &TestApp,
    worker_pids: &[u32],
) -> anyhow::Result<testkit::cpu::Snapshot> {
    let mut processes: Vec<(String, u32)> = worker_pids
        .iter()
        .map(|pid| ("workers".to_string(), *pid))
        .collect();
    for pid in testkit::cpu::database_backends(&app.pool).await? {
        processes.push(("postgres".into(), pid));
    }
    let moto_port = endpoint_port(&testkit::aws_endpoint());
    if let Some(pid) = moto_port.and_then(testkit::cpu::moto_pid) {
        processes.push(("moto (SQS)".into(), pid));
    }
    processes.push(("bench (api-lite, model)".into(), std::process::id()));
    Ok(testkit::cpu::Snapshot::take(&processes))
}

/// The port of an `http://host:port` endpoint.
fn endpoint_port(endpoint: &str) -> Option<u16> {
    endpoint
        .rsplit(':')
        .next()?
        .trim_end_matches('/')
        .parse()
        .ok()
}

/// The peer venv's Python, when installed.
fn peer_python(args: &Args) -> Option<PathBuf> {
    if args.no_peer {
        return None;
    }
    if let Some(python) = &args.peer_python {
        return Some(python.clone());
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))?;
    let python = cache.join("glassbox/bench-peers/langgraph/bin/python");
    python.exists().then_some(python)
}

fn peer_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("langgraph/steps.py")
}

/// Runs the LangGraph peer on the same phase: `workers` processes, each with its share
/// of the runs and `concurrency` at once.
async fn run_peer(
    python: &Path,
    app: &TestApp,
    node: Uuid,
    workers: usize,
    runs: usize,
    steps_per_run: usize,
    concurrency: usize,
) -> anyhow::Result<PeerPhase> {
    let mut children = Vec::new();
    for index in 0..workers {
        let share = runs / workers + usize::from(index < runs % workers);
        let child = Command::new(python)
            .arg(peer_script())
            .args(["--database-url", &app.database_url])
            .args(["--node-id", &node.to_string()])
            .args(["--runs", &share.to_string()])
            .args(["--steps", &steps_per_run.to_string()])
            .args(["--concurrency", &concurrency.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", python.display()))?;
        children.push(child);
    }
    let mut reports = Vec::new();
    for child in children {
        let output = child.wait_with_output().await?;
        anyhow::ensure!(output.status.success(), "the LangGraph peer failed");
        let report: Value =
            serde_json::from_slice(&output.stdout).context("reading the LangGraph peer's JSON")?;
        reports.push(report);
    }
    let started = reports
        .iter()
        .filter_map(|report| report["window_start"].as_f64())
        .fold(f64::INFINITY, f64::min);
    let finished = reports
        .iter()
        .filter_map(|report| report["window_end"].as_f64())
        .fold(0.0, f64::max);
    let field_sum = |name: &str| -> f64 {
        reports
            .iter()
            .filter_map(|report| report[name].as_f64())
            .sum::<f64>()
    };
    Ok(PeerPhase {
        steps: field_sum("steps") as i64,
        window_secs: finished - started,
        ms_per_step_in_run: field_sum("ms_per_step_in_run") / reports.len().max(1) as f64,
        // Every process sees the same tables grow: the largest growth is the phase's.
        table_growth_bytes: reports
            .iter()
            .filter_map(|report| report["checkpoint_table_growth_bytes"].as_i64())
            .max()
            .unwrap_or(0),
    })
}

/// Creates the peer's checkpoint tables before any phase.
async fn set_up_peer(python: &Path, app: &TestApp, node: Uuid) -> anyhow::Result<()> {
    let status = Command::new(python)
        .arg(peer_script())
        .args(["--database-url", &app.database_url])
        .args(["--node-id", &node.to_string()])
        .args(["--runs", "0", "--steps", "1", "--setup-only"])
        .status()
        .await?;
    anyhow::ensure!(
        status.success(),
        "setting up the LangGraph peer's tables failed"
    );
    Ok(())
}

/// One JSON object for a phase: the figures, the peer's beside them, and the targets.
fn phase_json(phase: &Phase, concurrency: usize) -> Value {
    let p50 = percentile(&phase.commit_us, 0.50) / 1000.0;
    let p99 = percentile(&phase.commit_us, 0.99) / 1000.0;
    let peer = phase.peer.as_ref().map(|peer| {
        json!({
            "name": "langgraph+postgressaver",
            "measured": true,
            "steps": peer.steps,
            "window_secs": peer.window_secs,
            "steps_per_sec": peer.steps_per_sec(),
            "ms_per_step_in_run": peer.ms_per_step_in_run,
            "bytes_per_step": peer.table_growth_bytes as f64 / peer.steps.max(1) as f64,
        })
    });
    let peer_steps_per_sec = phase
        .peer
        .as_ref()
        .map_or(LANGGRAPH_STEPS_PER_SEC, PeerPhase::steps_per_sec);
    json!({
        "phase": format!("w{}-s{}", phase.workers, phase.steps_per_run),
        "workers": phase.workers,
        "concurrency_per_worker": concurrency,
        "steps_per_run": phase.steps_per_run,
        "runs": phase.runs,
        "steps": phase.steps,
        "window_secs": phase.window_secs,
        "wall_secs": phase.wall_secs,
        "steps_per_sec": phase.steps_per_sec(),
        "ms_per_step_in_run": phase.step_ms_in_run,
        "commit_p50_ms": p50,
        "commit_p99_ms": p99,
        "bytes_per_step": {
            "new_messages_json": phase.per_step(phase.message_text_bytes),
            "checkpoint_rows": phase.per_step(phase.checkpoint_bytes),
            "trace_events": phase.per_step(phase.event_bytes),
            "tool_ledger": phase.per_step(phase.ledger_bytes),
            "overhead_beyond_new_messages": phase.overhead_per_step(),
            "table_growth": phase.per_step(phase.relation_growth),
        },
        "peer": peer.unwrap_or_else(|| json!({
            "name": "langgraph+postgressaver",
            "measured": false,
            "steps_per_sec": LANGGRAPH_STEPS_PER_SEC,
            "ms_per_step_in_run": LANGGRAPH_MS_PER_STEP,
        })),
        "vs_peer": phase.steps_per_sec() / peer_steps_per_sec,
        "cpu_cores": phase.usage.cores_by_label.iter().map(|(label, cores)| (label.clone(), json!(cores))).collect::<serde_json::Map<String, Value>>(),
        "machine_busy_cores": phase.usage.machine_busy_cores,
        "binding": phase.usage.binding(&["moto (SQS)"]),
        "targets": {
            "steps_per_sec": TARGET_STEPS_PER_SEC,
            "commit_p50_ms": TARGET_COMMIT_P50_MS,
            "commit_p99_ms": TARGET_COMMIT_P99_MS,
            "overhead_bytes_per_step": TARGET_OVERHEAD_BYTES,
            "met": phase.steps_per_sec() >= TARGET_STEPS_PER_SEC
                && p50 <= TARGET_COMMIT_P50_MS
                && p99 <= TARGET_COMMIT_P99_MS
                && phase.overhead_per_step() <= TARGET_OVERHEAD_BYTES,
        },
    })
}

fn print_report(phases: &[Phase], concurrency: usize) {
    println!();
    println!(
        "Throughput and step-commit latency (zero-latency model, {concurrency} runs at once per worker)"
    );
    println!(
        "| workers | steps/run | runs | steps | window s | steps/s | vs target 2,500 | LangGraph steps/s | vs LangGraph | ms/step in a run | LangGraph ms/step | commit p50 ms | commit p99 ms |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for phase in phases {
        let p50 = percentile(&phase.commit_us, 0.50) / 1000.0;
        let p99 = percentile(&phase.commit_us, 0.99) / 1000.0;
        let (peer_steps_per_sec, peer_ms, marker) = match &phase.peer {
            Some(peer) => (peer.steps_per_sec(), peer.ms_per_step_in_run, ""),
            None => (LANGGRAPH_STEPS_PER_SEC, LANGGRAPH_MS_PER_STEP, " (ref)"),
        };
        println!(
            "| {} | {} | {} | {} | {:.2} | {:.0} | {:.2}× | {:.0}{marker} | {:.1}× | {:.2} | {:.2}{marker} | {:.3} {} | {:.3} {} |",
            phase.workers,
            phase.steps_per_run,
            phase.runs,
            phase.steps,
            phase.window_secs,
            phase.steps_per_sec(),
            phase.steps_per_sec() / TARGET_STEPS_PER_SEC,
            peer_steps_per_sec,
            phase.steps_per_sec() / peer_steps_per_sec,
            phase.step_ms_in_run,
            peer_ms,
            p50,
            verdict(p50 <= TARGET_COMMIT_P50_MS),
            p99,
            verdict(p99 <= TARGET_COMMIT_P99_MS),
        );
    }
    println!();
    println!(
        "Targets (bench-agent/README.md): ≥ {TARGET_STEPS_PER_SEC:.0} steps/s; commit p50 ≤ {TARGET_COMMIT_P50_MS} ms, p99 ≤ {TARGET_COMMIT_P99_MS} ms."
    );
    if phases.iter().all(|phase| phase.peer.is_some()) {
        println!(
            "LangGraph + PostgresSaver: measured in this run, same phases, same database (bench-agent/langgraph/steps.py)."
        );
    } else {
        println!(
            "LangGraph + PostgresSaver marked (ref): not installed (BENCH_PEERS=1 bench/peers.sh), the reference's {LANGGRAPH_STEPS_PER_SEC:.0} steps/s and {LANGGRAPH_MS_PER_STEP} ms per step, not re-measured."
        );
    }

    println!();
    println!(
        "Where the CPU went while the runs ran (cores in use, from /proc; the machine's busy cores include any other work on it)"
    );
    println!(
        "| workers | steps/run | steps/s | workers | postgres (this db) | moto (SQS) | bench (api-lite, model) | machine busy | binding |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    for phase in phases {
        let usage = &phase.usage;
        println!(
            "| {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} of {} | {} |",
            phase.workers,
            phase.steps_per_run,
            phase.steps_per_sec(),
            usage.cores("workers"),
            usage.cores("postgres"),
            usage.cores("moto (SQS)"),
            usage.cores("bench (api-lite, model)"),
            usage.machine_busy_cores,
            usage.machine_cores,
            usage.binding(&["moto (SQS)"]),
        );
    }

    println!();
    println!("Storage per step (bytes; rows by pg_column_size, tables by pg_total_relation_size)");
    println!(
        "| workers | steps/run | new messages (JSON text) | checkpoint rows | trace events | tool ledger | overhead beyond new messages | table growth incl. indexes | LangGraph |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for phase in phases {
        let langgraph = match &phase.peer {
            Some(peer) => format!(
                "{:.0}",
                peer.table_growth_bytes as f64 / peer.steps.max(1) as f64
            ),
            None => LANGGRAPH_BYTES_PER_STEP
                .iter()
                .find(|(steps, _)| *steps == phase.steps_per_run)
                .map_or_else(|| "-".to_string(), |(_, bytes)| format!("{bytes:.0} (ref)")),
        };
        let overhead = phase.overhead_per_step();
        println!(
            "| {} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} {} | {:.0} | {} |",
            phase.workers,
            phase.steps_per_run,
            phase.per_step(phase.message_text_bytes),
            phase.per_step(phase.checkpoint_bytes),
            phase.per_step(phase.event_bytes),
            phase.per_step(phase.ledger_bytes),
            overhead,
            verdict(overhead <= TARGET_OVERHEAD_BYTES),
            phase.per_step(phase.relation_growth),
            langgraph,
        );
    }
    println!();
    println!(
        "Target: constant per step, the new messages plus ≤ 2 KB. LangGraph: growth of its checkpoint tables incl. indexes when measured (compare with table growth), else the reference's 8.7 KB per step at 10 steps, 15 KB at 50."
    );
    let mut by_run_length: BTreeMap<usize, Vec<f64>> = BTreeMap::new();
    for phase in phases {
        by_run_length
            .entry(phase.steps_per_run)
            .or_default()
            .push(phase.per_step(phase.checkpoint_bytes + phase.event_bytes + phase.ledger_bytes));
    }
    let summary: Vec<String> = by_run_length
        .iter()
        .map(|(steps, sizes)| {
            format!(
                "{steps} steps: {:.0} B/step",
                sizes.iter().sum::<f64>() / sizes.len() as f64
            )
        })
        .collect();
    println!("Stored rows per step by run length: {}", summary.join(", "));
}

fn verdict(met: bool) -> &'static str {
    if met { "✓" } else { "✗" }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let binary = match &args.worker_bin {
        Some(path) => path.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("the bench binary has a folder")?
            .join("worker-agent"),
    };
    anyhow::ensure!(
        binary.exists(),
        "{} is missing: build the workspace's binaries first",
        binary.display()
    );
    let app = TestApp::spawn_with(TestOptions {
        max_receive_count: 5,
        visibility_timeout_secs: 60,
        // The bench creates its runs as fast as it can: no per-org rate limit.
        configure: Some(std::sync::Arc::new(
            |settings: &mut shared::config::Settings| {
                settings.api.rate_limit_per_sec = 1e9;
                settings.api.rate_limit_burst = u32::MAX;
            },
        )),
        ..TestOptions::default()
    })
    .await
    .context("starting api-lite on the local stack")?;
    let (model_url, model) = start_model().await?;
    let node = app
        .create_node(
            "Benchmark",
            "Look at the node context until done.",
            json!({ "bench": true }),
        )
        .await?;
    let logs = tempfile::tempdir()?;
    let bench = Bench {
        app: &app,
        args: &args,
        binary: binary.clone(),
        model_url,
        model: model.clone(),
        node,
        logs: logs.path().to_path_buf(),
    };
    let peer = peer_python(&args);
    if let Some(python) = &peer {
        set_up_peer(python, &app, node).await?;
    }
    eprintln!(
        "bench-agent: worker {}, database {}, {} steps per phase, peer {}",
        binary.display(),
        app.database_url.rsplit('/').next().unwrap_or_default(),
        args.steps_per_phase,
        peer.as_ref().map_or_else(
            || "not installed (the reference)".to_string(),
            |python| python.display().to_string()
        )
    );
    let mut phases = Vec::new();
    for &workers in &args.workers {
        for &steps_per_run in &args.steps {
            let mut phase = run_phase(&bench, workers, steps_per_run)
                .await
                .with_context(|| format!("{workers} worker(s), {steps_per_run} steps per run"))?;
            if let Some(python) = &peer {
                let measured = run_peer(
                    python,
                    &app,
                    node,
                    workers,
                    phase.runs,
                    steps_per_run,
                    args.concurrency,
                )
                .await
                .with_context(|| {
                    format!("LangGraph peer, {workers} process(es), {steps_per_run} steps per run")
                })?;
                eprintln!(
                    "  LangGraph: {} steps in {:.2}s, {:.0} steps/s",
                    measured.steps,
                    measured.window_secs,
                    measured.steps_per_sec()
                );
                phase.peer = Some(measured);
            }
            if args.json {
                println!("{}", phase_json(&phase, args.concurrency));
            }
            eprintln!(
                "  {workers} worker(s), {steps_per_run} steps/run: {} runs, {} steps in {:.2}s of commits ({:.2}s wall incl. worker start), {:.0} steps/s",
                phase.runs,
                phase.steps,
                phase.window_secs,
                phase.wall_secs,
                phase.steps_per_sec()
            );
            phases.push(phase);
        }
    }
    if !args.json {
        print_report(&phases, args.concurrency);
    }
    if args.relay_messages > 0 {
        let relay = measure_relay(&app, args.relay_messages).await?;
        let binding = relay.usage.binding(&["moto (SQS)"]);
        if args.json {
            println!(
                "{}",
                json!({
                    "phase": "outbox-relay",
                    "messages": relay.messages,
                    "secs": relay.secs,
                    "messages_per_sec": relay.per_sec(),
                    "cpu_cores": relay.usage.cores_by_label.iter().map(|(label, cores)| (label.clone(), json!(cores))).collect::<serde_json::Map<String, Value>>(),
                    "machine_busy_cores": relay.usage.machine_busy_cores,
                    "binding": binding,
                })
            );
        } else {
            println!();
            println!(
                "Outbox relay (one api-lite, SendMessageBatch of 10): {} messages in {:.2}s, {:.0} messages/s; moto {:.2} cores, postgres {:.2}, bench (api-lite) {:.2}; binding: {binding}",
                relay.messages,
                relay.secs,
                relay.per_sec(),
                relay.usage.cores("moto (SQS)"),
                relay.usage.cores("postgres"),
                relay.usage.cores("bench (api-lite, model)"),
            );
        }
    }
    eprintln!(
        "model requests served: {}",
        model.requests.load(Ordering::Relaxed)
    );
    Ok(())
}
