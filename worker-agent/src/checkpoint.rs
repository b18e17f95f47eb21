//! Where a run stands when a worker takes it: the execution row under the worker's lease
//! (model, budget, spend so far, a model answer recorded for the step in progress), its
//! node, and the conversation rebuilt from the checkpoint: the opening messages, then
//! every committed step's delta in step order. Storage grows by each step's new
//! messages only.
//!
//! Also the step head: what a step starts from (the control request, whether a question
//! or approval is pending, the answered ones), in one read.

use serde::Deserialize;
use serde_json::{Value, json};
use shared::error::JobError;
use shared::executions::budget::Spent;
use shared::queue::JobMessage;
use sqlx::PgPool;
use uuid::Uuid;

use crate::handler::lease_lost;

/// The execution as the worker reads it at the start of a run.
#[derive(Debug, sqlx::FromRow)]
pub struct ExecutionRow {
    pub org_id: Uuid,
    pub node_id: Uuid,
    pub model: String,
    pub budget: Value,
    pub step: i32,
    pub tokens_in: i64,
    pub tokens_out: i64,
    pub cost_usd: f64,
    pub active_ms: i64,
    /// `{"step", "message"}`: the model's answer for a step that did not commit.
    pub pending_completion: Option<Value>,
}

impl ExecutionRow {
    pub fn spent(&self) -> Spent {
        Spent {
            steps: self.step,
            tokens_in: self.tokens_in,
            tokens_out: self.tokens_out,
            cost_usd: self.cost_usd,
            active_ms: self.active_ms,
        }
    }

    /// The recorded model answer for the step the run is at, if the step was
    /// interrupted after the model call.
    pub fn recorded_answer(&self) -> Option<Value> {
        let pending = self.pending_completion.as_ref()?;
        (pending["step"].as_i64() == Some(i64::from(self.step)))
            .then(|| pending["message"].clone())
            .filter(Value::is_object)
    }
}

/// An answered question or a decided approval, waiting to be turned into a tool result.
#[derive(Debug, Clone, Deserialize)]
pub struct ResolvedInput {
    pub id: Uuid,
    pub step: i32,
    pub call_index: i32,
    pub tool_call_id: String,
    pub kind: String,
    pub tool: String,
    pub arguments: Value,
    pub status: String,
    pub answer: Option<String>,
}

/// What a step starts from.
#[derive(Debug, Clone, Default)]
pub struct Head {
    /// `pause` or `cancel` when asked for.
    pub control: Option<String>,
    /// A question or approval still waits for a person: the run parks.
    pub pending_input: bool,
    /// Answered questions and decided approvals, in the order of their calls.
    pub resolved: Vec<ResolvedInput>,
}

/// The step head of the run under `lease`, in ONE statement. A lost lease is an error.
pub async fn read_head(pool: &PgPool, execution_id: Uuid, lease: Uuid) -> Result<Head, JobError> {
    let row: Option<(Option<String>, bool, Value)> = sqlx::query_as(
        "SELECT e.control, \
                EXISTS (SELECT 1 FROM execution_inputs i WHERE i.execution_id = e.id AND i.status = 'pending'), \
                COALESCE((SELECT jsonb_agg(jsonb_build_object('id', i.id, 'step', i.step, 'call_index', i.call_index, \
                                 'tool_call_id', i.tool_call_id, 'kind', i.kind, 'tool', i.tool, 'arguments', i.arguments, \
                                 'status', i.status, 'answer', i.answer) ORDER BY i.step, i.call_index) \
                          FROM execution_inputs i WHERE i.execution_id = e.id AND i.status IN ('answered', 'approved', 'rejected')), '[]'::jsonb) \
         FROM executions e WHERE e.id = $1 AND e.lease_token = $2",
    )
    .bind(execution_id)
    .bind(lease)
    .fetch_optional(pool)
    .await?;
    let (control, pending_input, resolved) = row.ok_or_else(lease_lost)?;
    let resolved = serde_json::from_value(resolved).map_err(|error| {
        JobError::permanent(
            "bad_input_row",
            format!("an input row does not read back: {error}"),
        )
    })?;
    Ok(Head {
        control,
        pending_input,
        resolved,
    })
}

/// The task node the run works on.
#[derive(Debug, sqlx::FromRow)]
pub struct NodeRow {
    pub title: String,
    pub instructions: String,
    pub inputs: Value,
}

/// The execution under `lease` and its node.
pub async fn load(
    pool: &PgPool,
    job: &JobMessage,
    lease: Uuid,
) -> Result<(ExecutionRow, NodeRow), JobError> {
    let execution: ExecutionRow = sqlx::query_as(
        "SELECT org_id, node_id, model, budget, step, tokens_in, tokens_out, cost_usd, active_ms, pending_completion \
         FROM executions WHERE id = $1 AND lease_token = $2",
    )
    .bind(job.job_id)
    .bind(lease)
    .fetch_optional(pool)
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
    .fetch_optional(pool)
    .await?
    .ok_or_else(|| JobError::permanent("node_missing", "the execution's node is gone"))?;
    Ok((execution, node))
}

const SYSTEM_PROMPT: &str = "You are an agent working on one task node. Use the tools to look things up, \
ask a person when you cannot go on without an answer, and record results with write_output. \
When the task is done, reply with a short final message and no tool calls.";

fn opening_messages(node: &NodeRow) -> Vec<Value> {
    vec![
        json!({ "role": "system", "content": SYSTEM_PROMPT }),
        json!({ "role": "user", "content": format!(
            "Task: {}\n\nInstructions:\n{}\n\nInputs (JSON):\n{}",
            node.title, node.instructions, node.inputs
        ) }),
    ]
}

/// The conversation so far: the opening messages, then every committed step's delta.
pub async fn conversation(
    pool: &PgPool,
    execution_id: Uuid,
    node: &NodeRow,
) -> Result<Vec<Value>, JobError> {
    let deltas: Vec<(Value,)> = sqlx::query_as(
        "SELECT messages FROM execution_steps WHERE execution_id = $1 ORDER BY step",
    )
    .bind(execution_id)
    .fetch_all(pool)
    .await?;
    let mut messages = opening_messages(node);
    for (delta,) in deltas {
        if let Value::Array(step_messages) = delta {
            messages.extend(step_messages);
        }
    }
    Ok(messages)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(step: i32, pending: Option<Value>) -> ExecutionRow {
        ExecutionRow {
            org_id: Uuid::nil(),
            node_id: Uuid::nil(),
            model: "m".into(),
            budget: json!({}),
            step,
            tokens_in: 0,
            tokens_out: 0,
            cost_usd: 0.0,
            active_ms: 0,
            pending_completion: pending,
        }
    }

    #[test]
    fn only_the_current_steps_answer_is_reused() {
        let message = json!({ "role": "assistant", "content": "hi" });
        let pending = json!({ "step": 3, "message": message });
        assert_eq!(
            row(3, Some(pending.clone())).recorded_answer(),
            Some(message)
        );
        assert_eq!(row(4, Some(pending)).recorded_answer(), None);
        assert_eq!(row(3, None).recorded_answer(), None);
    }
}
