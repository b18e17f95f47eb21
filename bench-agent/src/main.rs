//! `bench-agent`: the orchestration overhead of an agent step, with a model that answers
//! instantly.
//!
//! The bench starts api-lite in process on a fresh database, queue and bucket of the
//! local stack (testkit's `TestApp`), a zero-latency OpenAI-compatible chat server in
//! process, and real `worker-agent` processes. Each phase creates its runs with no worker
//! running, waits until the outbox has relayed every message, then starts the workers
//! and waits until every run completed. A run of N steps is N-1 steps that call the
//! `get_node_context` tool, then a final text answer.
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

/// DESIGN.md targets and the LangGraph + PostgresSaver figures measured on this kind of
/// machine (the peer is not installed here; these are the reference numbers).
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

async fn chat(
    State(model): State<Arc<ZeroLatencyModel>>,
    Json(request): Json<Value>,
) -> Json<Value> {
    model.requests.fetch_add(1, Ordering::Relaxed);
    let step = request["messages"].as_array().map_or(0, |messages| {
        messages
            .iter()
            .filter(|message| message["role"] == "assistant")
            .count()
    });
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
    Json(json!({
        "id": format!("chatcmpl-{step}"),
        "object": "chat.completion",
        "model": request["model"],
        "choices": [{ "index": 0, "message": message, "finish_reason": finish }],
        "usage": { "prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120 }
    }))
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

    // Every run queued and relayed before any worker starts.
    let budget = json!({ "model": "gpt-4o-mini", "budget": { "max_steps": steps_per_run + 5 } });
    let created: Vec<anyhow::Result<Uuid>> = futures::stream::iter(0..runs)
        .map(|_| {
            let body = budget.clone();
            async move {
                let key = Uuid::new_v4().to_string();
                let (status, execution) = app.execute(node, Some(&key), body).await?;
                if status != 202 {
                    bail!("execute answered {status}: {execution}");
                }
                Ok(execution["id"].as_str().context("execution id")?.parse()?)
            }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    let ids: Vec<Uuid> = created.into_iter().collect::<anyhow::Result<_>>()?;
    let relay_deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let pending: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
            .fetch_one(&app.pool)
            .await?;
        if pending == 0 {
            break;
        }
        if Instant::now() > relay_deadline {
            bail!("the outbox still holds {pending} messages after 60s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let name = format!("w{workers}-s{steps_per_run}");
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
        if finished as usize == ids.len() {
            break Ok(());
        }
        if Instant::now() > deadline {
            break Err(anyhow::anyhow!(
                "only {finished} of {} runs finished within {}s",
                ids.len(),
                args.phase_timeout_secs
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let wall_secs = started.elapsed().as_secs_f64();
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
    })
}

fn print_report(phases: &[Phase], concurrency: usize) {
    println!();
    println!(
        "Throughput and step-commit latency (zero-latency model, {concurrency} runs at once per worker)"
    );
    println!(
        "| workers | steps/run | runs | steps | window s | steps/s | vs target 2,500 | vs LangGraph 247 | ms/step in a run | commit p50 ms | commit p99 ms |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for phase in phases {
        let p50 = percentile(&phase.commit_us, 0.50) / 1000.0;
        let p99 = percentile(&phase.commit_us, 0.99) / 1000.0;
        println!(
            "| {} | {} | {} | {} | {:.2} | {:.0} | {:.2}× | {:.1}× | {:.2} | {:.3} {} | {:.3} {} |",
            phase.workers,
            phase.steps_per_run,
            phase.runs,
            phase.steps,
            phase.window_secs,
            phase.steps_per_sec(),
            phase.steps_per_sec() / TARGET_STEPS_PER_SEC,
            phase.steps_per_sec() / LANGGRAPH_STEPS_PER_SEC,
            phase.step_ms_in_run,
            p50,
            verdict(p50 <= TARGET_COMMIT_P50_MS),
            p99,
            verdict(p99 <= TARGET_COMMIT_P99_MS),
        );
    }
    println!();
    println!(
        "Targets (DESIGN.md): ≥ {TARGET_STEPS_PER_SEC:.0} steps/s; commit p50 ≤ {TARGET_COMMIT_P50_MS} ms, p99 ≤ {TARGET_COMMIT_P99_MS} ms."
    );
    println!(
        "LangGraph + PostgresSaver reference: {LANGGRAPH_STEPS_PER_SEC:.0} steps/s, {LANGGRAPH_MS_PER_STEP} ms per step (not installed here: the DESIGN.md figures, not re-measured)."
    );

    println!();
    println!("Storage per step (bytes; rows by pg_column_size, tables by pg_total_relation_size)");
    println!(
        "| workers | steps/run | new messages (JSON text) | checkpoint rows | trace events | tool ledger | overhead beyond new messages | table growth incl. indexes | LangGraph |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for phase in phases {
        let langgraph = LANGGRAPH_BYTES_PER_STEP
            .iter()
            .find(|(steps, _)| *steps == phase.steps_per_run)
            .map_or_else(|| "-".to_string(), |(_, bytes)| format!("{bytes:.0}"));
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
        "Target (DESIGN.md): constant per step, the new messages plus ≤ 2 KB; LangGraph: 8.7 KB per step at 10 steps, 15 KB at 50."
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
    println!(
        "bench-agent: worker {}, database {}, {} steps per phase",
        binary.display(),
        app.database_url.rsplit('/').next().unwrap_or_default(),
        args.steps_per_phase
    );
    let mut phases = Vec::new();
    for &workers in &args.workers {
        for &steps_per_run in &args.steps {
            let phase = run_phase(&bench, workers, steps_per_run)
                .await
                .with_context(|| format!("{workers} worker(s), {steps_per_run} steps per run"))?;
            println!(
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
    print_report(&phases, args.concurrency);
    println!(
        "\nmodel requests served: {}",
        model.requests.load(Ordering::Relaxed)
    );
    Ok(())
}
