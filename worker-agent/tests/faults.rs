//! Faults survived. While files ingest (worker-files) and agent runs step (worker-agent),
//! Postgres is restarted, moto (SQS and S3) is restarted, or the embedding endpoint is
//! down for 30 s. Afterwards every job reaches a terminal state, and the right one: every
//! file is ready with exactly one chunk set, every run completed with each step committed
//! once and its write done once; and neither worker ever exited.
//!
//! Each test runs on a private Postgres cluster and a private moto server
//! (`testkit::private_stack`), never the shared stack: restarting those would pull it
//! from under everyone else's tests. moto forgets every SQS message when it restarts (its
//! queues and objects are put back, as AWS keeps them): the fleet must recover lost
//! messages from Postgres, the truth, on its own.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use shared::config::EmbeddingProvider;
use testkit::private_stack::PrivateStack;
use testkit::scripted::{ChatReply, EmbeddingReply, ScriptedChat, ScriptedEmbeddings};
use testkit::{TestApp, TestOptions, WorkerProcess, wait_until};
use uuid::Uuid;

const AGENT_WORKER: &str = env!("CARGO_BIN_EXE_worker-agent");
/// How long everything may take to settle after a fault.
const SETTLE: Duration = Duration::from_secs(120);
const FILES: usize = 8;
const RUNS: usize = 4;
/// Model calls (and so committed steps) in every run.
const STEPS: i64 = 6;

/// A private stack, an app on it, both workers, a scripted model and embedding endpoint.
struct Rig {
    // Dropped last: the workers and the app go before the servers they talk to.
    workers: Vec<WorkerProcess>,
    app: TestApp,
    embeddings: ScriptedEmbeddings,
    _chat: ScriptedChat,
    stack: PrivateStack,
}

/// A text of several chunks, different per file so no embedding is reused across files.
fn document(index: usize) -> Vec<u8> {
    (0..40)
        .map(|sentence| {
            format!(
                "Keeper log {index}, entry {sentence}: the lamp of tower {index} was trimmed, \
                 the fog bell rang {sentence} times and the supply boat number {} arrived late.\n",
                index * 100 + sentence
            )
        })
        .collect::<String>()
        .into_bytes()
}

impl Rig {
    async fn start() -> Self {
        let stack = PrivateStack::start().await.unwrap();
        let embeddings = ScriptedEmbeddings::start(vec![EmbeddingReply::Vectors])
            .await
            .unwrap();
        // Slow enough that files are still embedding when the fault comes.
        embeddings.set_latency(Duration::from_millis(800));
        let slow = |reply: ChatReply| ChatReply::slow(Duration::from_millis(600), reply);
        let chat = ScriptedChat::start(vec![
            slow(ChatReply::tool("get_node_context", json!({}))),
            slow(ChatReply::tool(
                "search_files",
                json!({ "query": "fog bell" }),
            )),
            slow(ChatReply::tool(
                "write_output",
                json!({ "key": "summary", "value": "the fog bell rang" }),
            )),
            slow(ChatReply::tool("get_node_context", json!({}))),
            slow(ChatReply::tool(
                "search_files",
                json!({ "query": "supply boat" }),
            )),
            slow(ChatReply::text("done")),
        ])
        .await
        .unwrap();
        let embedding_url = embeddings.base_url();
        let app = TestApp::spawn_with(TestOptions {
            // Room for the receives a fault costs (a busy duplicate, a failed attempt).
            max_receive_count: 8,
            visibility_timeout_secs: 6,
            stack: Some(stack.endpoints()),
            configure: Some(Arc::new(move |settings| {
                settings.embedding.provider = EmbeddingProvider::Openai;
                settings.embedding.base_url = embedding_url.clone();
                settings.embedding.model = "scripted".into();
                settings.embedding.dimensions = Some(8);
                settings.embedding.request_timeout_secs = 10;
                settings.retry.base_delay_secs = 1.0;
                settings.retry.max_delay_secs = 4.0;
                // Lost messages are found again from Postgres within seconds.
                settings.api.sweeper_requeue_after_secs = 5;
                settings.api.sweeper_interval_secs = 1;
                settings.api.scheduler_enabled = false;
            })),
        })
        .await
        .unwrap();
        let files_worker = app
            .spawn_worker(
                testkit::workspace_binary("worker-files").to_str().unwrap(),
                &[],
            )
            .unwrap();
        let agent_worker = app
            .spawn_agent(
                AGENT_WORKER,
                &chat,
                &[("GLASSBOX_AGENT_WORKER__TOOL_POLICY__WRITE_OUTPUT", "allow")],
            )
            .unwrap();
        Self {
            workers: vec![files_worker, agent_worker],
            app,
            embeddings,
            _chat: chat,
            stack,
        }
    }

    /// Uploads the files and starts the runs; returns their ids.
    async fn start_work(&self) -> (Vec<Uuid>, Vec<Uuid>) {
        let mut files = Vec::new();
        for index in 0..FILES {
            files.push(
                self.app
                    .upload(&format!("log-{index}.txt"), "text/plain", document(index))
                    .await
                    .unwrap(),
            );
        }
        let mut executions = Vec::new();
        for run in 0..RUNS {
            let node = self
                .app
                .create_node(&format!("tower {run}"), "Summarise the logs.", json!({}))
                .await
                .unwrap();
            let (status, execution) = self.app.execute(node, None, json!({})).await.unwrap();
            assert_eq!(status, 202, "{execution}");
            executions.push(execution["id"].as_str().unwrap().parse().unwrap());
        }
        (files, executions)
    }

    /// Waits until a file is embedding and a run has committed a step but not finished.
    async fn wait_until_mid_flight(&self) {
        wait_until(Duration::from_secs(60), || async {
            let embedding: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM files WHERE status = 'processing' AND stage = 'embed'",
            )
            .fetch_one(&self.app.pool)
            .await
            .unwrap_or(0);
            let stepping: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM executions WHERE status = 'running' AND step >= 1",
            )
            .fetch_one(&self.app.pool)
            .await
            .unwrap_or(0);
            embedding > 0 && stepping > 0
        })
        .await
        .expect("files embedding and runs stepping at the same time");
    }

    /// Waits for every job to settle, then checks nothing was lost or done twice.
    async fn assert_all_done_once(&mut self, files: &[Uuid], executions: &[Uuid]) {
        let started = Instant::now();
        for id in files {
            let left = SETTLE.saturating_sub(started.elapsed());
            let file = self
                .app
                .wait_for_file(*id, &["ready", "failed", "dead_lettered"], left)
                .await
                .unwrap();
            assert_eq!(file["status"], "ready", "no file is lost: {file}");
            let (chunks, distinct): (i64, i64) = sqlx::query_as(
                "SELECT count(*), count(DISTINCT (model_id, chunk_index)) FROM chunks WHERE file_id = $1",
            )
            .bind(id)
            .fetch_one(&self.app.pool)
            .await
            .unwrap();
            assert!(chunks > 1, "{file}");
            assert_eq!(chunks, distinct, "one chunk set per file");
            assert_eq!(
                Some(chunks),
                file["chunk_count"].as_i64(),
                "the stored set is the counted one: {file}"
            );
        }
        for id in executions {
            let left = SETTLE.saturating_sub(started.elapsed());
            let execution = self
                .app
                .wait_for_execution(*id, &["completed", "failed", "cancelled"], left)
                .await
                .unwrap();
            assert_eq!(
                execution["status"], "completed",
                "no run is lost: {execution}"
            );
            assert_eq!(execution["step"], STEPS, "{execution}");
            assert_eq!(execution["result"], "done");
            let steps: Vec<i32> = sqlx::query_scalar(
                "SELECT step FROM execution_steps WHERE execution_id = $1 ORDER BY step",
            )
            .bind(id)
            .fetch_all(&self.app.pool)
            .await
            .unwrap();
            assert_eq!(steps, (0..STEPS as i32).collect::<Vec<_>>());
            let model_calls_per_step: Vec<(i32, i64)> = sqlx::query_as(
                "SELECT step, count(*) FROM execution_events WHERE execution_id = $1 AND kind = 'model_call' GROUP BY step ORDER BY step",
            )
            .bind(id)
            .fetch_all(&self.app.pool)
            .await
            .unwrap();
            assert_eq!(
                model_calls_per_step,
                (0..STEPS as i32).map(|step| (step, 1)).collect::<Vec<_>>(),
                "every step is traced once"
            );
            let writes: Vec<(String, i32)> = sqlx::query_as(
                "SELECT status, runs FROM tool_calls WHERE execution_id = $1 AND tool = 'write_output'",
            )
            .bind(id)
            .fetch_all(&self.app.pool)
            .await
            .unwrap();
            assert_eq!(writes, [("succeeded".to_string(), 1)], "the write ran once");
            let (_, node) = self
                .app
                .get(&format!(
                    "/v1/nodes/{}",
                    execution["node_id"].as_str().unwrap()
                ))
                .await
                .unwrap();
            assert_eq!(node["outputs"], json!({ "summary": "the fog bell rang" }));
        }
        for worker in &mut self.workers {
            assert!(worker.is_running(), "a worker exited");
        }
        for worker in &mut self.workers {
            let status = worker.terminate(Duration::from_secs(30)).await.unwrap();
            assert!(status.success(), "a worker did not stop cleanly: {status}");
        }
    }
}

#[tokio::test]
async fn a_postgres_restart_loses_and_repeats_nothing() {
    let mut rig = Rig::start().await;
    let (files, executions) = rig.start_work().await;
    rig.wait_until_mid_flight().await;
    rig.stack.postgres.restart().await.unwrap();
    rig.assert_all_done_once(&files, &executions).await;
}

#[tokio::test]
async fn a_moto_restart_loses_and_repeats_nothing() {
    let mut rig = Rig::start().await;
    let (files, executions) = rig.start_work().await;
    rig.wait_until_mid_flight().await;
    rig.stack
        .moto
        .restart_after(Duration::from_secs(2))
        .await
        .unwrap();
    rig.assert_all_done_once(&files, &executions).await;
}

#[tokio::test]
async fn thirty_seconds_without_the_embedding_endpoint_lose_and_repeat_nothing() {
    let mut rig = Rig::start().await;
    let (files, executions) = rig.start_work().await;
    rig.wait_until_mid_flight().await;
    rig.embeddings.go_down().await;
    tokio::time::sleep(Duration::from_secs(30)).await;
    let failed_meanwhile: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM files WHERE status IN ('failed', 'dead_lettered')",
    )
    .fetch_one(&rig.app.pool)
    .await
    .unwrap();
    assert_eq!(failed_meanwhile, 0, "an outage is transient, not a failure");
    rig.embeddings.come_back().await.unwrap();
    rig.assert_all_done_once(&files, &executions).await;
}
