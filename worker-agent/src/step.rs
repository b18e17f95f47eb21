//! The step loop: runs a claimed execution one durable step at a time until it
//! completes, parks (paused, awaiting_input), is cancelled or fails.
//!
//! One step is: control check → budget check → resolve answered questions and decided
//! approvals → the model's answer (asked for, raced against a cancel wake-up, the
//! wall-time budget and the worker's own cancel; or, for a step redone after a crash, the
//! answer recorded before) → tool calls → ONE statement, fenced by the lease and the step
//! number, committing the checkpoint delta, the trace events, the spend, new questions
//! and the run's next status. Every write is a transition of `shared::executions`.
//!
//! # Round trips
//! A step costs at most three: one read of its head (control request, pending input,
//! answered input), the model call, and the commit. Most steps need no read at all: the
//! commit returns the control request as it found it, which is all the next step needs
//! (a step that opens an input parks the run), and a change after it wakes the run by
//! LISTEN/NOTIFY ([`crate::wakes`]); only the first step of a run and a woken one read.
//! Tools add their own work: a read-only tool its query, a tool with an effect its
//! ledger entries and, before it runs, the model's answer recorded with its spend, so a
//! step redone after a crash asks the same calls (see [`crate::ledger`]). Without such a
//! tool the spend commits with the step: a crash before the commit redoes the step and
//! counts only the call that committed.

use std::time::Instant;

use serde_json::{Value, json};
use shared::error::JobError;
use shared::executions::budget::{self, Budget};
use shared::executions::step::{
    self as steps, ModelCall, NewInput, Park, Run, StepCommit, StepOutcome,
};
use shared::queue::JobMessage;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use crate::checkpoint::{self, Head, ResolvedInput};
use crate::failpoint;
use crate::handler::{AgentHandler, interrupted, lease_lost};
use crate::ledger::{Ledger, result_event, tool_message};
use crate::llm::{self, Completion, Conversation, LlmError, ToolCall, ToolSchemas};
use crate::mcp::McpTool;
use crate::tools::{AnyTool, Plan, ToolArgs};

/// Metric: agent steps committed.
pub const STEPS_COMMITTED: &str = "glassbox_agent_steps_total";

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

/// What a step gathered before its commit.
#[derive(Default)]
struct Gathered {
    delta: Vec<Value>,
    events: Vec<(String, Value)>,
    consumed_inputs: Vec<Uuid>,
    new_inputs: Vec<NewInput>,
}

impl Gathered {
    fn tool_result(
        &mut self,
        call_id: &str,
        tool: &str,
        outcome: &crate::tools::ToolOutcome,
        replayed: bool,
    ) {
        self.events.push((
            "tool_result".into(),
            result_event(call_id, tool, outcome, replayed),
        ));
        self.delta.push(tool_message(call_id, outcome));
    }
}

impl AgentHandler {
    /// Runs the execution under `lease` until it completes, parks or fails.
    pub(crate) async fn drive(
        &self,
        job: &JobMessage,
        lease: Uuid,
        cancel: &CancellationToken,
    ) -> Result<(), JobError> {
        let (execution, node) = checkpoint::load(&self.pool, job, lease).await?;
        let price = budget::check_model(&execution.model, &self.settings)?;
        let run = Run {
            execution_id: job.job_id,
            org_id: execution.org_id,
            node_id: execution.node_id,
            lease,
        };
        let budget = Budget::resolve(&execution.budget, &self.settings);
        let mcp_tools = self.mcp.tools_for(run.org_id).await;
        let schemas = ToolSchemas::new(&self.registry.schemas_with(&mcp_tools));
        let mut messages = Conversation::new(
            &checkpoint::conversation(&self.pool, run.execution_id, &node).await?,
        );
        let mut spent = execution.spent();
        let mut recorded_answer = execution.recorded_answer();
        let failpoint = self.settings.failpoint.as_deref();
        let ledger = Ledger {
            pool: &self.pool,
            tools: &self.tools,
            run,
            failpoint,
            shutdown: &self.shutdown,
        };
        // Registered before the first head read: a change of control after it wakes us.
        let wake = self.wakes.register(run.execution_id);
        let mut head: Option<Head> = None;
        loop {
            let step = spent.steps;
            let step_started = Instant::now();
            // The step's span (in the job's trace): the model call and tool calls are its
            // children. It ends when the iteration does.
            let step_span = tracing::info_span!("step", step);
            // A wake-up since the last commit means the control may have changed: read.
            let woken = wake.take();
            let current = match head.take() {
                Some(known) if !woken => known,
                _ => checkpoint::read_head(&self.pool, run.execution_id, run.lease).await?,
            };
            match current.control.as_deref() {
                Some("cancel") => return self.finish_cancelled(run, step, false).await,
                Some("pause") => return self.park(run, step, Park::Paused).await,
                _ => {}
            }
            if cancel.is_cancelled() {
                return Err(interrupted());
            }
            if self.shutdown.is_cancelled() {
                if !steps::release_at_boundary(&self.pool, run, step).await? {
                    return Err(lease_lost());
                }
                tracing::info!(step, "shutdown: execution released at a step boundary");
                return Ok(());
            }
            // A recorded answer was paid for under the budget: its step still finishes.
            if recorded_answer.is_none()
                && let Some(error) = budget.exceeded(&spent)
            {
                return Err(error);
            }
            if current.pending_input {
                return self.park(run, step, Park::AwaitingInput).await;
            }

            let mut gathered = Gathered::default();
            self.resolve_inputs(&ledger, &mcp_tools, current.resolved, &mut gathered)
                .await?;
            messages.extend(&gathered.delta);

            // The spend the commit adds: none when the answer was recorded ahead.
            let mut unrecorded_spend = (0_i64, 0_i64, 0.0_f64);
            let completion = match recorded_answer.take() {
                Some(message) => {
                    // Its events, and those gathered before it, were recorded with it.
                    gathered.events.clear();
                    tracing::info!(step, "redoing the step with the model's recorded answer");
                    Completion::from_message(&message).map_err(llm_error)?
                }
                None => {
                    let max_tokens =
                        budget.max_output_tokens(&spent, self.settings.max_output_tokens);
                    let model_call = self
                        .model
                        .complete(&execution.model, &messages, &schemas, max_tokens)
                        .instrument(tracing::info_span!(parent: &step_span, "model_call", model = %execution.model));
                    tokio::pin!(model_call);
                    let wall_time = tokio::time::sleep(budget.wall_left(&spent));
                    tokio::pin!(wall_time);
                    let completion = loop {
                        tokio::select! {
                            completion = &mut model_call => break completion.map_err(llm_error)?,
                            () = wake.woken() => {
                                // A pause waits for the step's end: the commit returns it.
                                let fresh = checkpoint::read_head(&self.pool, run.execution_id, run.lease).await?;
                                if fresh.control.as_deref() == Some("cancel") {
                                    return self.finish_cancelled(run, step, true).await;
                                }
                            }
                            () = &mut wall_time => return Err(budget.wall_time_exceeded()),
                            () = cancel.cancelled() => return Err(interrupted()),
                        }
                    };
                    let cost =
                        llm::cost_usd(Some(&price), completion.tokens_in, completion.tokens_out)
                            .unwrap_or(0.0);
                    self.model_call_event(&execution.model, &completion, cost, &mut gathered);
                    let has_effects = completion
                        .tool_calls
                        .iter()
                        .any(|call| self.registry.has_effect(call, &mcp_tools));
                    if has_effects {
                        self.record_answer(run, step, &completion, cost, &mut gathered)
                            .await?;
                    } else {
                        unrecorded_spend = (
                            completion.tokens_in as i64,
                            completion.tokens_out as i64,
                            cost,
                        );
                    }
                    spent.tokens_in += completion.tokens_in as i64;
                    spent.tokens_out += completion.tokens_out as i64;
                    spent.cost_usd += cost;
                    completion
                }
            };
            gathered.delta.push(completion.message.clone());
            let answered_at = gathered.delta.len();
            for (index, call) in completion.tool_calls.iter().enumerate() {
                self.plan_and_run(&ledger, &mcp_tools, step, index as i32, call, &mut gathered)
                    .instrument(
                        tracing::info_span!(parent: &step_span, "tool_call", tool = %call.name),
                    )
                    .await?;
            }
            messages.extend(&gathered.delta[answered_at - 1..]);
            failpoint::hit(failpoint, failpoint::AFTER_TOOL_CALLS, step, cancel).await;
            if cancel.is_cancelled() {
                return Err(interrupted());
            }

            let outcome = if !gathered.new_inputs.is_empty() {
                StepOutcome::AwaitingInput
            } else if completion.tool_calls.is_empty() {
                StepOutcome::Completed {
                    result: completion.text.clone(),
                }
            } else {
                StepOutcome::Continue
            };
            let (tokens_in, tokens_out, cost_usd) = unrecorded_spend;
            let commit = StepCommit {
                delta: gathered.delta,
                events: gathered.events,
                new_inputs: gathered.new_inputs,
                consumed_inputs: gathered.consumed_inputs,
                active_ms: step_started.elapsed().as_millis() as i64,
                tokens_in,
                tokens_out,
                cost_usd,
                outcome: outcome.clone(),
            };
            let commit_started = Instant::now();
            let Some(committed) = steps::commit_step(&self.pool, run, step, &commit).await? else {
                return Err(lease_lost());
            };
            let commit_time = commit_started.elapsed();
            metrics::histogram!(shared::metrics::STAGE_SECONDS, "kind" => "agent.run", "stage" => "commit").record(commit_time.as_secs_f64());
            metrics::counter!(STEPS_COMMITTED).increment(1);
            spent.steps += 1;
            spent.active_ms += commit.active_ms;
            tracing::info!(
                step,
                outcome = ?outcome,
                tokens_in = completion.tokens_in,
                tokens_out = completion.tokens_out,
                // The fenced commit statement, sent to answered; bench-agent reads it.
                commit_us = commit_time.as_micros() as u64,
                "step committed"
            );
            failpoint::hit(failpoint, failpoint::AFTER_STEP_COMMIT, step, cancel).await;
            if outcome != StepOutcome::Continue {
                return Ok(());
            }
            head = Some(Head {
                control: committed.control,
                ..Head::default()
            });
        }
    }

    /// Adds the `model_call` event to the step's events, and counts the call.
    fn model_call_event(
        &self,
        model: &str,
        completion: &Completion,
        cost: f64,
        gathered: &mut Gathered,
    ) {
        metrics::histogram!(shared::metrics::STAGE_SECONDS, "kind" => "agent.run", "stage" => "model").record(completion.latency.as_secs_f64());
        metrics::counter!(shared::metrics::LLM_TOKENS, "model" => model.to_string(), "direction" => "in").increment(completion.tokens_in);
        metrics::counter!(shared::metrics::LLM_TOKENS, "model" => model.to_string(), "direction" => "out").increment(completion.tokens_out);
        // Counters are integers: count micro-dollars.
        metrics::counter!(shared::metrics::LLM_COST_MICRODOLLARS, "model" => model.to_string())
            .increment((cost * 1e6).round() as u64);
        gathered.events.push((
            "model_call".into(),
            json!({
                "model": model,
                "tokens_in": completion.tokens_in,
                "tokens_out": completion.tokens_out,
                "latency_ms": completion.latency.as_millis() as u64,
                "cost_usd": cost,
                "price_known": true,
                "attempts": completion.attempts,
                "tool_calls": completion.tool_calls.len(),
            }),
        ));
    }

    /// Records the model's answer and its spend before a tool with an effect runs, with
    /// the events the step gathered so far (the `model_call` event last).
    async fn record_answer(
        &self,
        run: Run,
        step: i32,
        completion: &Completion,
        cost: f64,
        gathered: &mut Gathered,
    ) -> Result<(), JobError> {
        let call = ModelCall {
            message: &completion.message,
            tokens_in: completion.tokens_in as i64,
            tokens_out: completion.tokens_out as i64,
            cost_usd: cost,
        };
        if !steps::record_model_call(&self.pool, run, step, &call, &gathered.events).await? {
            return Err(lease_lost());
        }
        gathered.events.clear();
        Ok(())
    }

    /// Plans one tool call and runs it, asks, holds or refuses it.
    async fn plan_and_run(
        &self,
        ledger: &Ledger<'_>,
        mcp_tools: &[McpTool],
        step: i32,
        call_index: i32,
        call: &ToolCall,
        gathered: &mut Gathered,
    ) -> Result<(), JobError> {
        gathered.events.push((
            "tool_call".into(),
            json!({ "tool_call_id": call.id, "tool": call.name, "arguments": call.arguments, "index": call_index }),
        ));
        match self.registry.plan_with(call, mcp_tools) {
            Plan::Refuse { reason, message } => {
                let outcome: crate::tools::ToolOutcome = Err(message);
                let mut event = result_event(&call.id, &call.name, &outcome, false);
                event["reason"] = json!(reason);
                gathered.events.push(("tool_result".into(), event));
                gathered.delta.push(tool_message(&call.id, &outcome));
            }
            Plan::Ask { question } => {
                gathered.events.push((
                    "question".into(),
                    json!({ "tool_call_id": call.id, "question": question }),
                ));
                gathered
                    .new_inputs
                    .push(new_input(call, call_index, "question", Some(question)));
            }
            Plan::HoldForApproval { .. } => {
                gathered.events.push(("approval_requested".into(), json!({ "tool_call_id": call.id, "tool": call.name, "arguments": call.arguments })));
                gathered
                    .new_inputs
                    .push(new_input(call, call_index, "approval", None));
            }
            Plan::Run { tool, args } => {
                let arguments: Value = serde_json::from_str(&call.arguments).unwrap_or(Value::Null);
                let (outcome, replayed) = ledger
                    .run_call(step, call_index, &tool, &args, &arguments)
                    .await?;
                gathered.tool_result(&call.id, &call.name, &outcome, replayed);
            }
        }
        Ok(())
    }

    /// Turns answered questions and decided approvals into tool results for this step.
    async fn resolve_inputs(
        &self,
        ledger: &Ledger<'_>,
        mcp_tools: &[McpTool],
        resolved: Vec<ResolvedInput>,
        gathered: &mut Gathered,
    ) -> Result<(), JobError> {
        for input in resolved {
            let (outcome, replayed) = match (input.kind.as_str(), input.status.as_str()) {
                ("question", _) => (
                    Ok(json!({ "answer": input.answer.clone().unwrap_or_default() })),
                    false,
                ),
                ("approval", "approved") => {
                    let tool = self.registry.lookup(&input.tool, mcp_tools);
                    let args = match &tool {
                        Some(AnyTool::Builtin(builtin)) => {
                            crate::tools::parse_arguments(*builtin, &input.arguments.to_string())
                                .ok()
                        }
                        Some(AnyTool::Mcp(_)) => Some(ToolArgs::Mcp {
                            arguments: input.arguments.clone(),
                        }),
                        None => None,
                    };
                    match (tool, args) {
                        (Some(tool), Some(args)) => {
                            ledger
                                .run_call(
                                    input.step,
                                    input.call_index,
                                    &tool,
                                    &args,
                                    &input.arguments,
                                )
                                .instrument(tracing::info_span!("tool_call", tool = %input.tool))
                                .await?
                        }
                        _ => (
                            Err(format!(
                                "the approved call to {} can no longer run",
                                input.tool
                            )),
                            false,
                        ),
                    }
                }
                _ => (
                    Err(format!("a person rejected this call to {}", input.tool)),
                    false,
                ),
            };
            gathered.tool_result(&input.tool_call_id, &input.tool, &outcome, replayed);
            gathered.consumed_inputs.push(input.id);
        }
        Ok(())
    }

    async fn finish_cancelled(
        &self,
        run: Run,
        step: i32,
        interrupted: bool,
    ) -> Result<(), JobError> {
        if !steps::finish_cancelled(&self.pool, run, step, interrupted).await? {
            return Err(lease_lost());
        }
        tracing::info!(step, interrupted, "execution cancelled");
        Ok(())
    }

    async fn park(&self, run: Run, step: i32, park: Park) -> Result<(), JobError> {
        if !steps::park(&self.pool, run, step, park).await? {
            return Err(lease_lost());
        }
        tracing::info!(step, ?park, "execution parked");
        Ok(())
    }
}

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
