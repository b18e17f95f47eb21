//! The agent job: claim the execution's fenced lease, load the checkpoint, then run steps
//! until the run completes, parks (awaiting_input, paused), is cancelled or fails.
//!
//! One step is: control check → budget check → resolve answered questions and decided
//! approvals → model call (raced against a cancel poll, the wall-time budget and the
//! worker's own cancel) → tool calls (under the ledger) → ONE transaction, fenced by the
//! lease, committing the step's checkpoint delta, its trace events, new questions and the
//! token and cost counters. A step that did not commit is redone from the checkpoint;
//! its tool calls keep their idempotency keys, so their effects are not repeated.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::{Value, json};
use shared::config::AgentWorkerSettings;
use shared::error::JobError;
use shared::lease::{self, LeasedTable};
use shared::outbox;
use shared::queue::{JobKind, JobMessage};
use shared::worker::{Claim, Disposition, JobHandler};
use sqlx::{PgConnection, PgPool};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::failpoint;
use crate::llm::{self, ChatModel, LlmError, ToolCall};
use crate::tools::{Plan, Registry, Tool, ToolArgs, ToolContext, ToolOutcome};

pub struct AgentHandler {
    pub pool: PgPool,
    pub model: Arc<dyn ChatModel>,
    pub registry: Registry,
    pub tools: ToolContext,
    pub settings: AgentWorkerSettings,
    /// The process's shutdown: a run stops at its next step boundary and is re-enqueued.
    pub shutdown: CancellationToken,
}

#[derive(Debug, sqlx::FromRow)]
struct ExecutionRow {
    org_id: Uuid,
    node_id: Uuid,
    model: String,
    budget: Value,
    step: i32,
    tokens_in: i64,
    tokens_out: i64,
    cost_usd: f64,
    active_ms: i64,
}

#[derive(Debug, sqlx::FromRow)]
struct NodeRow {
    title: String,
    instructions: String,
    inputs: Value,
}

#[derive(Debug, sqlx::FromRow)]
struct ResolvedInput {
    id: Uuid,
    step: i32,
    call_index: i32,
    tool_call_id: String,
    kind: String,
    tool: String,
    arguments: Value,
    status: String,
    answer: Option<String>,
}

/// The limits of one execution, the caller's where set, the worker's defaults elsewhere.
#[derive(Debug, Clone, Copy)]
struct Budget {
    max_steps: u32,
    max_tokens: u64,
    max_cost_usd: f64,
    max_wall: Duration,
}

impl Budget {
    fn resolve(requested: &Value, defaults: &AgentWorkerSettings) -> Self {
        Self {
            max_steps: requested["max_steps"]
                .as_u64()
                .map(|steps| steps.min(u64::from(u32::MAX)) as u32)
                .unwrap_or(defaults.default_max_steps),
            max_tokens: requested["max_tokens"]
                .as_u64()
                .unwrap_or(defaults.default_max_tokens),
            max_cost_usd: requested["max_cost_usd"]
                .as_f64()
                .unwrap_or(defaults.default_max_cost_usd),
            max_wall: Duration::from_secs(
                requested["max_wall_secs"]
                    .as_u64()
                    .unwrap_or(defaults.default_max_wall_secs),
            ),
        }
    }

    /// The first limit the committed counters reach, as an error code and message.
    fn exceeded(&self, counters: &Counters) -> Option<JobError> {
        let tokens = counters.tokens_in + counters.tokens_out;
        if counters.step as u64 >= u64::from(self.max_steps) {
            return Some(JobError::permanent(
                "budget_steps_exceeded",
                format!("the run used its {} steps", self.max_steps),
            ));
        }
        if tokens as u64 >= self.max_tokens {
            return Some(JobError::permanent(
                "budget_tokens_exceeded",
                format!("{tokens} tokens used of a budget of {}", self.max_tokens),
            ));
        }
        if counters.cost_usd >= self.max_cost_usd {
            return Some(JobError::permanent(
                "budget_cost_exceeded",
                format!(
                    "${:.6} spent of a budget of ${:.6}",
                    counters.cost_usd, self.max_cost_usd
                ),
            ));
        }
        if Duration::from_millis(counters.active_ms as u64) >= self.max_wall {
            return Some(wall_time_exceeded(self.max_wall));
        }
        None
    }
}

fn wall_time_exceeded(limit: Duration) -> JobError {
    JobError::permanent(
        "budget_wall_time_exceeded",
        format!("the run took longer than {}s", limit.as_secs()),
    )
}

#[derive(Debug, Clone, Copy)]
struct Counters {
    step: i32,
    tokens_in: i64,
    tokens_out: i64,
    cost_usd: f64,
    active_ms: i64,
}

/// A question or approval request a step opens.
struct NewInput {
    tool_call_id: String,
    call_index: i32,
    kind: &'static str,
    tool: String,
    arguments: Value,
    question: Option<String>,
}

/// Everything one step commits, in one transaction.
struct StepCommit {
    delta: Vec<Value>,
    events: Vec<(String, Value)>,
    new_inputs: Vec<NewInput>,
    consumed_inputs: Vec<Uuid>,
    tokens_in: i64,
    tokens_out: i64,
    cost_usd: f64,
    active_ms: i64,
    status: &'static str,
    result: Option<String>,
}

/// Identifies the run a step belongs to.
#[derive(Clone, Copy)]
struct Run {
    execution_id: Uuid,
    org_id: Uuid,
    node_id: Uuid,
    lease: Uuid,
}

fn lease_lost() -> JobError {
    JobError::LeaseLost {
        message: "another worker owns this execution now, or it was cancelled or deleted".into(),
    }
}

fn interrupted() -> JobError {
    JobError::transient(
        "interrupted",
        "stopped mid-step (shutdown deadline or lost lease); the step is redone",
    )
}

fn llm_error(error: LlmError) -> JobError {
    match error {
        LlmError::Transient {
            message,
            retry_after,
        } => JobError::Transient {
            code: "model_unavailable".into(),
            message,
            retry_after,
        },
        LlmError::Permanent { code, message } => JobError::permanent(code, message),
    }
}

const SYSTEM_PROMPT: &str = "You are an agent working on one task node. Use the tools to look things up, \
ask a person when you cannot go on without an answer, and record results with write_output. \
When the task is done, reply with a short final message and no tool calls.";

fn initial_messages(node: &NodeRow) -> Vec<Value> {
    vec![
        json!({ "role": "system", "content": SYSTEM_PROMPT }),
        json!({ "role": "user", "content": format!(
            "Task: {}\n\nInstructions:\n{}\n\nInputs (JSON):\n{}",
            node.title, node.instructions, node.inputs
        ) }),
    ]
}

fn tool_message(call_id: &str, outcome: &ToolOutcome) -> Value {
    let content = match outcome {
        Ok(value) => value.to_string(),
        Err(message) => json!({ "error": message }).to_string(),
    };
    json!({ "role": "tool", "tool_call_id": call_id, "content": content })
}

fn outcome_to_ledger(outcome: &ToolOutcome) -> (&'static str, Value) {
    match outcome {
        Ok(value) => ("succeeded", json!({ "ok": value })),
        Err(message) => ("failed", json!({ "error": message })),
    }
}

fn outcome_from_ledger(recorded: &Value) -> ToolOutcome {
    match recorded.get("ok") {
        Some(value) => Ok(value.clone()),
        None => Err(recorded["error"]
            .as_str()
            .unwrap_or("the tool failed")
            .to_string()),
    }
}

fn result_event(call_id: &str, tool: &str, outcome: &ToolOutcome, replayed: bool) -> Value {
    match outcome {
        Ok(_) => json!({ "tool_call_id": call_id, "tool": tool, "ok": true, "replayed": replayed }),
        Err(message) => {
            json!({ "tool_call_id": call_id, "tool": tool, "ok": false, "error": message, "replayed": replayed })
        }
    }
}

impl AgentHandler {
    async fn load(
        &self,
        job: &JobMessage,
        lease: Uuid,
    ) -> Result<(ExecutionRow, NodeRow), JobError> {
        let execution: ExecutionRow = sqlx::query_as(
            "SELECT org_id, node_id, model, budget, step, tokens_in, tokens_out, cost_usd, active_ms \
             FROM executions WHERE id = $1 AND lease_token = $2",
        )
        .bind(job.job_id)
        .bind(lease)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(lease_lost)?;
        if execution.org_id != job.org_id {
            return Err(JobError::permanent(
                "org_mismatch",
                "the message's org does not own this execution",
            ));
        }
        let node: NodeRow = sqlx::query_as(
            "SELECT title, instructions, inputs FROM nodes WHERE id = $1 AND org_id = $2",
        )
        .bind(execution.node_id)
        .bind(execution.org_id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| JobError::permanent("node_missing", "the execution's node is gone"))?;
        Ok((execution, node))
    }

    /// The conversation so far: the opening messages, then every committed step's delta.
    async fn load_checkpoint(
        &self,
        execution_id: Uuid,
        node: &NodeRow,
    ) -> Result<Vec<Value>, JobError> {
        let deltas: Vec<(Value,)> = sqlx::query_as(
            "SELECT messages FROM execution_steps WHERE execution_id = $1 ORDER BY step",
        )
        .bind(execution_id)
        .fetch_all(&self.pool)
        .await?;
        let mut messages = initial_messages(node);
        for (delta,) in deltas {
            if let Value::Array(step_messages) = delta {
                messages.extend(step_messages);
            }
        }
        Ok(messages)
    }

    async fn control(&self, run: Run) -> Result<Option<String>, JobError> {
        let row: Option<(Option<String>,)> =
            sqlx::query_as("SELECT control FROM executions WHERE id = $1 AND lease_token = $2")
                .bind(run.execution_id)
                .bind(run.lease)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.ok_or_else(lease_lost)?.0)
    }

    /// Returns once a cancel has been asked for; polls every `control_poll_ms`.
    async fn cancel_requested(&self, execution_id: Uuid) {
        let period = Duration::from_millis(self.settings.control_poll_ms.max(10));
        loop {
            tokio::time::sleep(period).await;
            let control: Result<Option<(Option<String>,)>, _> =
                sqlx::query_as("SELECT control FROM executions WHERE id = $1")
                    .bind(execution_id)
                    .fetch_optional(&self.pool)
                    .await;
            match control {
                Ok(Some((Some(control),))) if control == "cancel" => return,
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "control poll failed"),
            }
        }
    }

    async fn fenced_transaction(
        &self,
        run: Run,
    ) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, JobError> {
        let mut transaction = self.pool.begin().await?;
        if !lease::fence(
            &mut transaction,
            LeasedTable::Executions,
            run.execution_id,
            run.lease,
        )
        .await?
        {
            return Err(lease_lost());
        }
        Ok(transaction)
    }

    /// Ends the run as cancelled; `interrupted` says a model call was cut short.
    async fn finish_cancelled(
        &self,
        run: Run,
        step: i32,
        interrupted: bool,
    ) -> Result<(), JobError> {
        let mut transaction = self.fenced_transaction(run).await?;
        sqlx::query(
            "UPDATE executions SET status = 'cancelled', control = NULL, error_code = 'cancelled', error_message = 'cancelled by request', \
             lease_token = NULL, lease_expires_at = NULL, finished_at = now(), updated_at = now() WHERE id = $1",
        )
        .bind(run.execution_id)
        .execute(&mut *transaction)
        .await?;
        sqlx::query("UPDATE execution_inputs SET status = 'cancelled' WHERE execution_id = $1 AND status IN ('pending', 'answered', 'approved', 'rejected')")
            .bind(run.execution_id)
            .execute(&mut *transaction)
            .await?;
        insert_events(
            &mut transaction,
            run,
            step,
            &[(
                "cancelled".into(),
                json!({ "interrupted_model_call": interrupted }),
            )],
        )
        .await?;
        transaction.commit().await?;
        tracing::info!(step, interrupted, "execution cancelled");
        Ok(())
    }

    async fn park(&self, run: Run, step: i32, status: &'static str) -> Result<(), JobError> {
        let mut transaction = self.fenced_transaction(run).await?;
        sqlx::query(
            "UPDATE executions SET status = $2, control = CASE WHEN $2 = 'paused' THEN NULL ELSE control END, \
             lease_token = NULL, lease_expires_at = NULL, updated_at = now() WHERE id = $1",
        )
        .bind(run.execution_id)
        .bind(status)
        .execute(&mut *transaction)
        .await?;
        insert_events(
            &mut transaction,
            run,
            step,
            &[(status.to_string(), json!({}))],
        )
        .await?;
        transaction.commit().await?;
        tracing::info!(step, status, "execution parked");
        Ok(())
    }

    /// Shutdown at a step boundary: give the run back and enqueue it again.
    async fn requeue_for_shutdown(&self, run: Run, step: i32) -> Result<(), JobError> {
        let mut transaction = self.fenced_transaction(run).await?;
        sqlx::query("UPDATE executions SET status = 'queued', lease_token = NULL, lease_expires_at = NULL, queued_at = now(), updated_at = now() WHERE id = $1")
            .bind(run.execution_id)
            .execute(&mut *transaction)
            .await?;
        insert_events(
            &mut transaction,
            run,
            step,
            &[("released".into(), json!({ "reason": "worker shutdown" }))],
        )
        .await?;
        outbox::enqueue(
            &mut transaction,
            outbox::AGENT_JOBS,
            &JobMessage::new(JobKind::AgentRun, run.execution_id, run.org_id),
        )
        .await?;
        transaction.commit().await?;
        tracing::info!(step, "shutdown: execution released at a step boundary");
        Ok(())
    }

    /// Runs one tool call under the ledger; returns the outcome and whether it was a
    /// replay of a recorded outcome.
    async fn run_tool(
        &self,
        run: Run,
        step: i32,
        call_index: i32,
        tool: Tool,
        args: &ToolArgs,
        raw_arguments: &str,
    ) -> Result<(ToolOutcome, bool), JobError> {
        let key = format!("{}:{step}:{call_index}", run.execution_id);
        let recorded: Option<(String, Option<Value>)> =
            sqlx::query_as("SELECT status, result FROM tool_calls WHERE idempotency_key = $1")
                .bind(&key)
                .fetch_optional(&self.pool)
                .await?;
        match recorded {
            Some((status, Some(result))) if status != "started" => {
                return Ok((outcome_from_ledger(&result), true));
            }
            Some(_) if !tool.is_idempotent() && !tool.effect_commits_with_ledger() => {
                let outcome: ToolOutcome = Err(format!(
                    "the outcome of this {} call is unknown after an interruption; it was not run again",
                    tool.name()
                ));
                let (status, result) = outcome_to_ledger(&outcome);
                self.record_tool(run, &key, status, &result).await?;
                return Ok((outcome, true));
            }
            Some(_) => {
                let updated = sqlx::query(
                    "UPDATE tool_calls SET runs = runs + 1 WHERE idempotency_key = $1 \
                     AND EXISTS (SELECT 1 FROM executions WHERE id = $2 AND lease_token = $3)",
                )
                .bind(&key)
                .bind(run.execution_id)
                .bind(run.lease)
                .execute(&self.pool)
                .await?;
                if updated.rows_affected() == 0 {
                    return Err(lease_lost());
                }
            }
            None => {
                let raw: Value = serde_json::from_str(raw_arguments).unwrap_or(Value::Null);
                let inserted = sqlx::query(
                    "INSERT INTO tool_calls (idempotency_key, execution_id, step, call_index, tool, arguments, status) \
                     SELECT $1, $2, $4, $5, $6, $7, 'started' WHERE EXISTS (SELECT 1 FROM executions WHERE id = $2 AND lease_token = $3) \
                     ON CONFLICT (idempotency_key) DO NOTHING",
                )
                .bind(&key)
                .bind(run.execution_id)
                .bind(run.lease)
                .bind(step)
                .bind(call_index)
                .bind(tool.name())
                .bind(raw)
                .execute(&self.pool)
                .await?;
                if inserted.rows_affected() == 0 {
                    return Err(lease_lost());
                }
            }
        }
        failpoint::hit(
            self.settings.failpoint.as_deref(),
            failpoint::BEFORE_TOOL_EFFECT,
            step,
            &self.shutdown,
        )
        .await;
        let outcome = match args {
            ToolArgs::WriteOutput {
                key: output_key,
                value,
            } => {
                // The effect and its ledger entry commit together: exactly once.
                let mut transaction = self.fenced_transaction(run).await?;
                sqlx::query("UPDATE nodes SET outputs = outputs || jsonb_build_object($3::text, $4::jsonb), updated_at = now() WHERE id = $1 AND org_id = $2")
                    .bind(run.node_id)
                    .bind(run.org_id)
                    .bind(output_key)
                    .bind(value)
                    .execute(&mut *transaction)
                    .await?;
                let outcome: ToolOutcome = Ok(json!({ "written": output_key }));
                let (status, result) = outcome_to_ledger(&outcome);
                record_tool_in(&mut transaction, &key, status, &result).await?;
                transaction.commit().await?;
                return Ok((outcome, false));
            }
            read => self.tools.run_read(run.org_id, run.node_id, read).await?,
        };
        let (status, result) = outcome_to_ledger(&outcome);
        self.record_tool(run, &key, status, &result).await?;
        Ok((outcome, false))
    }

    async fn record_tool(
        &self,
        run: Run,
        key: &str,
        status: &str,
        result: &Value,
    ) -> Result<(), JobError> {
        let mut transaction = self.fenced_transaction(run).await?;
        record_tool_in(&mut transaction, key, status, result).await?;
        transaction.commit().await?;
        Ok(())
    }

    /// Turns answered questions and decided approvals into tool results for this step.
    async fn resolve_inputs(
        &self,
        run: Run,
        delta: &mut Vec<Value>,
        events: &mut Vec<(String, Value)>,
        consumed: &mut Vec<Uuid>,
    ) -> Result<(), JobError> {
        let resolved: Vec<ResolvedInput> = sqlx::query_as(
            "SELECT id, step, call_index, tool_call_id, kind, tool, arguments, status, answer FROM execution_inputs \
             WHERE execution_id = $1 AND status IN ('answered', 'approved', 'rejected') ORDER BY step, call_index",
        )
        .bind(run.execution_id)
        .fetch_all(&self.pool)
        .await?;
        for input in resolved {
            let outcome: ToolOutcome = match (input.kind.as_str(), input.status.as_str()) {
                ("question", _) => {
                    Ok(json!({ "answer": input.answer.clone().unwrap_or_default() }))
                }
                ("approval", "approved") => {
                    let tool = Tool::from_name(&input.tool);
                    let args = tool.and_then(|tool| {
                        crate::tools::parse_arguments(tool, &input.arguments.to_string()).ok()
                    });
                    match (tool, args) {
                        (Some(tool), Some(args)) => {
                            let (outcome, replayed) = self
                                .run_tool(
                                    run,
                                    input.step,
                                    input.call_index,
                                    tool,
                                    &args,
                                    &input.arguments.to_string(),
                                )
                                .await?;
                            events.push((
                                "tool_result".into(),
                                result_event(&input.tool_call_id, &input.tool, &outcome, replayed),
                            ));
                            delta.push(tool_message(&input.tool_call_id, &outcome));
                            consumed.push(input.id);
                            continue;
                        }
                        _ => Err(format!(
                            "the approved call to {} can no longer run",
                            input.tool
                        )),
                    }
                }
                _ => Err(format!("a person rejected this call to {}", input.tool)),
            };
            events.push((
                "tool_result".into(),
                result_event(&input.tool_call_id, &input.tool, &outcome, false),
            ));
            delta.push(tool_message(&input.tool_call_id, &outcome));
            consumed.push(input.id);
        }
        Ok(())
    }

    async fn drive(
        &self,
        job: &JobMessage,
        lease: Uuid,
        cancel: &CancellationToken,
    ) -> Result<(), JobError> {
        let (execution, node) = self.load(job, lease).await?;
        let run = Run {
            execution_id: job.job_id,
            org_id: execution.org_id,
            node_id: execution.node_id,
            lease,
        };
        let budget = Budget::resolve(&execution.budget, &self.settings);
        let price = self.settings.prices.get(&execution.model).copied();
        let schemas = self.registry.schemas();
        let mut messages = self.load_checkpoint(run.execution_id, &node).await?;
        let mut counters = Counters {
            step: execution.step,
            tokens_in: execution.tokens_in,
            tokens_out: execution.tokens_out,
            cost_usd: execution.cost_usd,
            active_ms: execution.active_ms,
        };
        let failpoint = self.settings.failpoint.as_deref();
        loop {
            let step = counters.step;
            let step_started = Instant::now();
            match self.control(run).await?.as_deref() {
                Some("cancel") => return self.finish_cancelled(run, step, false).await,
                Some("pause") => return self.park(run, step, "paused").await,
                _ => {}
            }
            if cancel.is_cancelled() {
                return Err(interrupted());
            }
            if self.shutdown.is_cancelled() {
                return self.requeue_for_shutdown(run, step).await;
            }
            if let Some(error) = budget.exceeded(&counters) {
                return Err(error);
            }
            let pending: i64 = sqlx::query_scalar("SELECT count(*) FROM execution_inputs WHERE execution_id = $1 AND status = 'pending'")
                .bind(run.execution_id)
                .fetch_one(&self.pool)
                .await?;
            if pending > 0 {
                return self.park(run, step, "awaiting_input").await;
            }

            let mut delta = Vec::new();
            let mut events = Vec::new();
            let mut consumed_inputs = Vec::new();
            self.resolve_inputs(run, &mut delta, &mut events, &mut consumed_inputs)
                .await?;
            messages.extend(delta.iter().cloned());

            let remaining_wall = budget
                .max_wall
                .saturating_sub(Duration::from_millis(counters.active_ms as u64));
            let completion = tokio::select! {
                completion = self.model.complete(&execution.model, &messages, &schemas) => completion.map_err(llm_error)?,
                () = self.cancel_requested(run.execution_id) => return self.finish_cancelled(run, step, true).await,
                () = tokio::time::sleep(remaining_wall) => return Err(wall_time_exceeded(budget.max_wall)),
                () = cancel.cancelled() => return Err(interrupted()),
            };
            let cost = llm::cost_usd(price.as_ref(), completion.tokens_in, completion.tokens_out);
            metrics::histogram!(shared::metrics::STAGE_SECONDS, "kind" => "agent.run", "stage" => "model").record(completion.latency.as_secs_f64());
            metrics::counter!(shared::metrics::LLM_TOKENS, "model" => execution.model.clone(), "direction" => "in").increment(completion.tokens_in);
            metrics::counter!(shared::metrics::LLM_TOKENS, "model" => execution.model.clone(), "direction" => "out").increment(completion.tokens_out);
            if let Some(cost) = cost {
                // Counters are integers: count micro-dollars.
                metrics::counter!(shared::metrics::LLM_COST_MICRODOLLARS, "model" => execution.model.clone()).increment((cost * 1e6).round() as u64);
            }
            events.push((
                "model_call".into(),
                json!({
                    "model": execution.model,
                    "tokens_in": completion.tokens_in,
                    "tokens_out": completion.tokens_out,
                    "latency_ms": completion.latency.as_millis() as u64,
                    "cost_usd": cost.unwrap_or(0.0),
                    "price_known": cost.is_some(),
                    "attempts": completion.attempts,
                    "tool_calls": completion.tool_calls.len(),
                }),
            ));
            delta.push(completion.message.clone());
            messages.push(completion.message.clone());

            let mut new_inputs = Vec::new();
            for (index, call) in completion.tool_calls.iter().enumerate() {
                let call_index = index as i32;
                events.push((
                    "tool_call".into(),
                    json!({ "tool_call_id": call.id, "tool": call.name, "arguments": call.arguments, "index": call_index }),
                ));
                match self.registry.plan(call) {
                    Plan::Refuse { reason, message } => {
                        let outcome: ToolOutcome = Err(message);
                        let mut event = result_event(&call.id, &call.name, &outcome, false);
                        event["reason"] = json!(reason);
                        events.push(("tool_result".into(), event));
                        let message = tool_message(&call.id, &outcome);
                        delta.push(message.clone());
                        messages.push(message);
                    }
                    Plan::Ask { question } => {
                        events.push((
                            "question".into(),
                            json!({ "tool_call_id": call.id, "question": question }),
                        ));
                        new_inputs.push(new_input(call, call_index, "question", Some(question)));
                    }
                    Plan::HoldForApproval { .. } => {
                        events.push(("approval_requested".into(), json!({ "tool_call_id": call.id, "tool": call.name, "arguments": call.arguments })));
                        new_inputs.push(new_input(call, call_index, "approval", None));
                    }
                    Plan::Run { args } => {
                        let tool = Tool::from_name(&call.name).expect("planned tools exist");
                        let (outcome, replayed) = self
                            .run_tool(run, step, call_index, tool, &args, &call.arguments)
                            .await?;
                        events.push((
                            "tool_result".into(),
                            result_event(&call.id, &call.name, &outcome, replayed),
                        ));
                        let message = tool_message(&call.id, &outcome);
                        delta.push(message.clone());
                        messages.push(message);
                    }
                }
            }
            failpoint::hit(failpoint, failpoint::AFTER_TOOL_CALLS, step, cancel).await;
            if cancel.is_cancelled() {
                return Err(interrupted());
            }

            let status = if !new_inputs.is_empty() {
                "awaiting_input"
            } else if completion.tool_calls.is_empty() {
                "completed"
            } else {
                "running"
            };
            if status != "running" {
                events.push((status.into(), json!({})));
            }
            let commit = StepCommit {
                delta,
                events,
                new_inputs,
                consumed_inputs,
                tokens_in: completion.tokens_in as i64,
                tokens_out: completion.tokens_out as i64,
                cost_usd: cost.unwrap_or(0.0),
                active_ms: step_started.elapsed().as_millis() as i64,
                status,
                result: if status == "completed" {
                    completion.text.clone()
                } else {
                    None
                },
            };
            let commit_started = Instant::now();
            self.commit_step(run, step, &commit).await?;
            let commit_time = commit_started.elapsed();
            metrics::histogram!(shared::metrics::STAGE_SECONDS, "kind" => "agent.run", "stage" => "commit").record(commit_time.as_secs_f64());
            metrics::counter!(STEPS_COMMITTED).increment(1);
            counters.step += 1;
            counters.tokens_in += commit.tokens_in;
            counters.tokens_out += commit.tokens_out;
            counters.cost_usd += commit.cost_usd;
            counters.active_ms += commit.active_ms;
            tracing::info!(
                step,
                status,
                tokens_in = commit.tokens_in,
                tokens_out = commit.tokens_out,
                // The fenced commit transaction, begin to commit; bench-agent reads it.
                commit_us = commit_time.as_micros() as u64,
                "step committed"
            );
            failpoint::hit(failpoint, failpoint::AFTER_STEP_COMMIT, step, cancel).await;
            if status != "running" {
                return Ok(());
            }
        }
    }

    /// The step's one transaction, fenced by the lease and by the step number.
    async fn commit_step(&self, run: Run, step: i32, commit: &StepCommit) -> Result<(), JobError> {
        let mut transaction = self.fenced_transaction(run).await?;
        let parked = commit.status != "running";
        let advanced = sqlx::query(
            "UPDATE executions SET step = step + 1, tokens_in = tokens_in + $3, tokens_out = tokens_out + $4, cost_usd = cost_usd + $5, \
                    active_ms = active_ms + $6, status = $7, result = COALESCE($8, result), \
                    control = CASE WHEN $7 = 'completed' THEN NULL ELSE control END, \
                    lease_token = CASE WHEN $9 THEN NULL ELSE lease_token END, lease_expires_at = CASE WHEN $9 THEN NULL ELSE lease_expires_at END, \
                    finished_at = CASE WHEN $7 = 'completed' THEN now() ELSE finished_at END, updated_at = now() \
             WHERE id = $1 AND step = $2",
        )
        .bind(run.execution_id)
        .bind(step)
        .bind(commit.tokens_in)
        .bind(commit.tokens_out)
        .bind(commit.cost_usd)
        .bind(commit.active_ms)
        .bind(commit.status)
        .bind(&commit.result)
        .bind(parked)
        .execute(&mut *transaction)
        .await?;
        if advanced.rows_affected() == 0 {
            return Err(lease_lost());
        }
        sqlx::query(
            "INSERT INTO execution_steps (execution_id, step, messages) VALUES ($1, $2, $3)",
        )
        .bind(run.execution_id)
        .bind(step)
        .bind(Value::Array(commit.delta.clone()))
        .execute(&mut *transaction)
        .await?;
        insert_events(&mut transaction, run, step, &commit.events).await?;
        for input in &commit.new_inputs {
            sqlx::query(
                "INSERT INTO execution_inputs (id, execution_id, org_id, step, tool_call_id, call_index, kind, tool, arguments, question) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            )
            .bind(Uuid::now_v7())
            .bind(run.execution_id)
            .bind(run.org_id)
            .bind(step)
            .bind(&input.tool_call_id)
            .bind(input.call_index)
            .bind(input.kind)
            .bind(&input.tool)
            .bind(&input.arguments)
            .bind(&input.question)
            .execute(&mut *transaction)
            .await?;
        }
        if !commit.consumed_inputs.is_empty() {
            sqlx::query("UPDATE execution_inputs SET status = 'consumed' WHERE id = ANY($1)")
                .bind(&commit.consumed_inputs)
                .execute(&mut *transaction)
                .await?;
        }
        transaction.commit().await?;
        Ok(())
    }
}

/// Metric: agent steps committed.
pub const STEPS_COMMITTED: &str = "glassbox_agent_steps_total";

fn new_input(
    call: &ToolCall,
    call_index: i32,
    kind: &'static str,
    question: Option<String>,
) -> NewInput {
    NewInput {
        tool_call_id: call.id.clone(),
        call_index,
        kind,
        tool: call.name.clone(),
        arguments: serde_json::from_str(&call.arguments).unwrap_or(Value::Null),
        question,
    }
}

async fn record_tool_in(
    connection: &mut PgConnection,
    key: &str,
    status: &str,
    result: &Value,
) -> Result<(), JobError> {
    sqlx::query("UPDATE tool_calls SET status = $2, result = $3, finished_at = now() WHERE idempotency_key = $1")
        .bind(key)
        .bind(status)
        .bind(result)
        .execute(connection)
        .await?;
    Ok(())
}

async fn insert_events(
    connection: &mut PgConnection,
    run: Run,
    step: i32,
    events: &[(String, Value)],
) -> Result<(), JobError> {
    if events.is_empty() {
        return Ok(());
    }
    let kinds: Vec<&str> = events.iter().map(|(kind, _)| kind.as_str()).collect();
    let data: Vec<Value> = events.iter().map(|(_, data)| data.clone()).collect();
    sqlx::query(
        "INSERT INTO execution_events (execution_id, org_id, step, kind, data) \
         SELECT $1, $2, $3, event.kind, event.data FROM UNNEST($4::text[], $5::jsonb[]) WITH ORDINALITY AS event(kind, data, position) ORDER BY event.position",
    )
    .bind(run.execution_id)
    .bind(run.org_id)
    .bind(step)
    .bind(&kinds)
    .bind(&data)
    .execute(connection)
    .await?;
    Ok(())
}

#[async_trait]
impl JobHandler for AgentHandler {
    fn kind(&self) -> JobKind {
        JobKind::AgentRun
    }

    async fn claim(&self, job: &JobMessage) -> Result<Claim, JobError> {
        let lease = Uuid::new_v4();
        let claimed: Option<(i32,)> = sqlx::query_as(
            "UPDATE executions SET status = 'running', lease_token = $3, lease_expires_at = now() + make_interval(secs => $4), \
                    attempts = attempts + 1, started_at = COALESCE(started_at, now()), updated_at = now() \
             WHERE id = $1 AND org_id = $2 \
               AND (status = 'queued' OR (status = 'running' AND (lease_expires_at IS NULL OR lease_expires_at < now()))) \
             RETURNING attempts",
        )
        .bind(job.job_id)
        .bind(job.org_id)
        .bind(lease)
        .bind(self.settings.lease().as_secs_f64())
        .fetch_optional(&self.pool)
        .await?;
        if let Some((attempt,)) = claimed {
            return Ok(Claim::Acquired {
                lease,
                attempt: attempt as u32,
            });
        }
        Ok(
            lease::claim_not_taken(&self.pool, LeasedTable::Executions, job.job_id, job.org_id)
                .await?,
        )
    }

    async fn run(
        &self,
        job: &JobMessage,
        lease: Uuid,
        attempt: u32,
        cancel: CancellationToken,
    ) -> Result<(), JobError> {
        tracing::debug!(attempt, execution_id = %job.job_id, "running execution");
        self.drive(job, lease, &cancel).await
    }

    async fn renew(&self, job: &JobMessage, lease: Uuid) -> Result<bool, JobError> {
        Ok(lease::renew(
            &self.pool,
            LeasedTable::Executions,
            job.job_id,
            lease,
            self.settings.lease(),
        )
        .await?)
    }

    async fn record_failure(
        &self,
        job: &JobMessage,
        lease: Uuid,
        error: &JobError,
        disposition: Disposition,
    ) -> Result<(), JobError> {
        let (status, event) = match disposition {
            Disposition::Failed => ("failed", "failed"),
            Disposition::Retrying { .. } => ("queued", "retrying"),
            Disposition::DeadLettered => ("failed", "dead_lettered"),
        };
        let mut transaction = self.pool.begin().await?;
        let updated: Option<(i32, Uuid)> = sqlx::query_as(
            "UPDATE executions SET status = $3, error_class = $4, error_code = $5, error_message = $6, lease_token = NULL, lease_expires_at = NULL, \
             finished_at = CASE WHEN $3 = 'failed' THEN now() ELSE NULL END, updated_at = now() \
             WHERE id = $1 AND lease_token = $2 RETURNING step, org_id",
        )
        .bind(job.job_id)
        .bind(lease)
        .bind(status)
        .bind(error.class())
        .bind(error.code())
        .bind(error.message())
        .fetch_optional(&mut *transaction)
        .await?;
        if let Some((step, org_id)) = updated {
            let run = Run {
                execution_id: job.job_id,
                org_id,
                node_id: Uuid::nil(),
                lease,
            };
            insert_events(
                &mut transaction,
                run,
                step,
                &[(event.into(), json!({ "error_class": error.class(), "error_code": error.code(), "message": error.message() }))],
            )
            .await?;
        }
        transaction.commit().await?;
        Ok(())
    }

    async fn release(&self, job: &JobMessage, lease: Uuid) -> Result<(), JobError> {
        sqlx::query("UPDATE executions SET status = 'queued', lease_token = NULL, lease_expires_at = NULL, updated_at = now() WHERE id = $1 AND lease_token = $2")
            .bind(job.job_id)
            .bind(lease)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_take_defaults_and_report_the_first_limit_reached() {
        let defaults = AgentWorkerSettings::default();
        let budget = Budget::resolve(&json!({ "max_steps": 2 }), &defaults);
        assert_eq!(budget.max_steps, 2);
        assert_eq!(budget.max_tokens, defaults.default_max_tokens);
        let mut counters = Counters {
            step: 1,
            tokens_in: 0,
            tokens_out: 0,
            cost_usd: 0.0,
            active_ms: 0,
        };
        assert!(budget.exceeded(&counters).is_none());
        counters.step = 2;
        assert_eq!(
            budget.exceeded(&counters).unwrap().code(),
            "budget_steps_exceeded"
        );
        let tokens = Budget::resolve(&json!({ "max_tokens": 100 }), &defaults);
        counters = Counters {
            step: 0,
            tokens_in: 80,
            tokens_out: 20,
            cost_usd: 0.0,
            active_ms: 0,
        };
        assert_eq!(
            tokens.exceeded(&counters).unwrap().code(),
            "budget_tokens_exceeded"
        );
    }

    #[test]
    fn ledger_outcomes_round_trip() {
        let ok: ToolOutcome = Ok(json!({ "a": 1 }));
        let (status, recorded) = outcome_to_ledger(&ok);
        assert_eq!(status, "succeeded");
        assert_eq!(outcome_from_ledger(&recorded), ok);
        let failed: ToolOutcome = Err("nope".into());
        assert_eq!(outcome_from_ledger(&outcome_to_ledger(&failed).1), failed);
    }
}
