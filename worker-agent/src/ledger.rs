//! The tool ledger (`tool_calls`): one row per tool call, so a tool's effect happens once
//! however often its step is redone.
//!
//! A call's key is its execution, step and position *and* a hash of its tool and
//! arguments: a different call can never be handed another call's recorded result.
//! (The step loop also reuses the model's recorded answer when it redoes a step, so the
//! same calls come back anyway.)
//!
//! - A read-only (idempotent) tool keeps no ledger row: it has no effect to keep once,
//!   and its result is in the step's checkpoint delta when the step commits. A step
//!   redone after a crash just reads again.
//! - A call that finished returns its recorded outcome (a replay) instead of running.
//! - A call left `started` by a crash has an unknown outcome: it runs again only if the
//!   tool is idempotent (reads) or its effect commits with its ledger entry
//!   (`write_output`: the node's output and the entry change in one fenced
//!   transaction, so `started` proves the effect never happened). Any other tool answers
//!   the model that its outcome is unknown. MCP tools are never atomic with the ledger:
//!   one not declared idempotent is not run again.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use shared::error::JobError;
use shared::executions::step::Run;
use shared::lease::{self, LeasedTable};
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::failpoint;
use crate::handler::lease_lost;
use crate::tools::{AnyTool, ToolArgs, ToolContext, ToolOutcome};

/// Runs tool calls of one run under the ledger.
pub struct Ledger<'a> {
    pub pool: &'a PgPool,
    pub tools: &'a ToolContext,
    pub run: Run,
    /// Test hook (see [`failpoint`]).
    pub failpoint: Option<&'a str>,
    /// The process's shutdown: a failpoint waits on it.
    pub shutdown: &'a CancellationToken,
}

/// The ledger key of a call: where it sits in the run, and what it is.
pub fn call_key(
    execution_id: Uuid,
    step: i32,
    call_index: i32,
    tool_name: &str,
    arguments: &Value,
) -> String {
    let mut content = Sha256::new();
    content.update(tool_name.as_bytes());
    content.update([0]);
    // serde_json's maps are sorted: equal arguments always hash alike.
    content.update(arguments.to_string().as_bytes());
    let digest = hex::encode(content.finalize());
    format!("{execution_id}:{step}:{call_index}:{}", &digest[..16])
}

impl Ledger<'_> {
    /// Runs one call (or replays its recorded outcome); returns the outcome and whether it
    /// was a replay.
    pub async fn run_call(
        &self,
        step: i32,
        call_index: i32,
        tool: &AnyTool,
        args: &ToolArgs,
        arguments: &Value,
    ) -> Result<(ToolOutcome, bool), JobError> {
        if tool.is_idempotent() {
            return Ok((self.run_body(tool, args).await?, false));
        }
        let key = call_key(
            self.run.execution_id,
            step,
            call_index,
            tool.name(),
            arguments,
        );
        let recorded: Option<(String, Option<Value>)> =
            sqlx::query_as("SELECT status, result FROM tool_calls WHERE idempotency_key = $1")
                .bind(&key)
                .fetch_optional(self.pool)
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
                self.record(&key, &outcome).await?;
                return Ok((outcome, true));
            }
            Some(_) => self.count_rerun(&key).await?,
            None => self.start(&key, step, call_index, tool, arguments).await?,
        }
        failpoint::hit(
            self.failpoint,
            failpoint::BEFORE_TOOL_EFFECT,
            step,
            self.shutdown,
        )
        .await;
        let outcome = match args {
            ToolArgs::WriteOutput {
                key: output_key,
                value,
            } => self.write_output(&key, output_key, value).await?,
            other => {
                let outcome = self.run_body(tool, other).await?;
                failpoint::hit(
                    self.failpoint,
                    failpoint::AFTER_TOOL_EFFECT,
                    step,
                    self.shutdown,
                )
                .await;
                self.record(&key, &outcome).await?;
                outcome
            }
        };
        Ok((outcome, false))
    }

    /// Runs a tool body other than `write_output`'s. An MCP server that cannot be reached
    /// is a transient error: the step is redone, and the call's ledger row (if any) says
    /// its outcome is unknown.
    async fn run_body(&self, tool: &AnyTool, args: &ToolArgs) -> Result<ToolOutcome, JobError> {
        match (tool, args) {
            (AnyTool::Mcp(tool), ToolArgs::Mcp { arguments }) => tool
                .call(arguments)
                .await
                .map_err(|error| JobError::transient("mcp_unavailable", error.to_string())),
            (_, args) => Ok(self
                .tools
                .run_read(self.run.org_id, self.run.node_id, args)
                .await?),
        }
    }

    /// Writes the ledger row as `started`, fenced by the lease.
    async fn start(
        &self,
        key: &str,
        step: i32,
        call_index: i32,
        tool: &AnyTool,
        arguments: &Value,
    ) -> Result<(), JobError> {
        let inserted = sqlx::query(
            "INSERT INTO tool_calls (idempotency_key, execution_id, step, call_index, tool, arguments, status) \
             SELECT $1, $2, $4, $5, $6, $7, 'started' WHERE EXISTS (SELECT 1 FROM executions WHERE id = $2 AND lease_token = $3) \
             ON CONFLICT (idempotency_key) DO NOTHING",
        )
        .bind(key)
        .bind(self.run.execution_id)
        .bind(self.run.lease)
        .bind(step)
        .bind(call_index)
        .bind(tool.name())
        .bind(arguments)
        .execute(self.pool)
        .await?;
        if inserted.rows_affected() == 0 {
            return Err(lease_lost());
        }
        Ok(())
    }

    /// Counts another run of a call left `started`, fenced by the lease.
    async fn count_rerun(&self, key: &str) -> Result<(), JobError> {
        let updated = sqlx::query(
            "UPDATE tool_calls SET runs = runs + 1 WHERE idempotency_key = $1 \
             AND EXISTS (SELECT 1 FROM executions WHERE id = $2 AND lease_token = $3)",
        )
        .bind(key)
        .bind(self.run.execution_id)
        .bind(self.run.lease)
        .execute(self.pool)
        .await?;
        if updated.rows_affected() == 0 {
            return Err(lease_lost());
        }
        Ok(())
    }

    /// `write_output`'s effect and its ledger entry, in one fenced transaction: exactly once.
    async fn write_output(
        &self,
        key: &str,
        output_key: &str,
        value: &Value,
    ) -> Result<ToolOutcome, JobError> {
        let mut transaction = self.fenced().await?;
        sqlx::query("UPDATE nodes SET outputs = outputs || jsonb_build_object($3::text, $4::jsonb), updated_at = now() WHERE id = $1 AND org_id = $2")
            .bind(self.run.node_id)
            .bind(self.run.org_id)
            .bind(output_key)
            .bind(value)
            .execute(&mut *transaction)
            .await?;
        let outcome: ToolOutcome = Ok(json!({ "written": output_key }));
        record_in(&mut transaction, key, &outcome).await?;
        transaction.commit().await?;
        Ok(outcome)
    }

    async fn record(&self, key: &str, outcome: &ToolOutcome) -> Result<(), JobError> {
        let mut transaction = self.fenced().await?;
        record_in(&mut transaction, key, outcome).await?;
        transaction.commit().await?;
        Ok(())
    }

    async fn fenced(&self) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, JobError> {
        let mut transaction = self.pool.begin().await?;
        if !lease::fence(
            &mut transaction,
            LeasedTable::Executions,
            self.run.execution_id,
            self.run.lease,
        )
        .await?
        {
            return Err(lease_lost());
        }
        Ok(transaction)
    }
}

async fn record_in(
    connection: &mut PgConnection,
    key: &str,
    outcome: &ToolOutcome,
) -> Result<(), JobError> {
    let (status, result) = outcome_to_ledger(outcome);
    sqlx::query("UPDATE tool_calls SET status = $2, result = $3, finished_at = now() WHERE idempotency_key = $1")
        .bind(key)
        .bind(status)
        .bind(result)
        .execute(connection)
        .await?;
    Ok(())
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

/// The tool message the model sees for a call's outcome.
pub fn tool_message(call_id: &str, outcome: &ToolOutcome) -> Value {
    let content = match outcome {
        Ok(value) => value.to_string(),
        Err(message) => json!({ "error": message }).to_string(),
    };
    json!({ "role": "tool", "tool_call_id": call_id, "content": content })
}

/// The `tool_result` trace event of a call's outcome.
pub fn result_event(call_id: &str, tool: &str, outcome: &ToolOutcome, replayed: bool) -> Value {
    match outcome {
        Ok(_) => json!({ "tool_call_id": call_id, "tool": tool, "ok": true, "replayed": replayed }),
        Err(message) => {
            json!({ "tool_call_id": call_id, "tool": tool, "ok": false, "error": message, "replayed": replayed })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_round_trip_through_the_ledger() {
        let ok: ToolOutcome = Ok(json!({ "a": 1 }));
        let (status, recorded) = outcome_to_ledger(&ok);
        assert_eq!(status, "succeeded");
        assert_eq!(outcome_from_ledger(&recorded), ok);
        let failed: ToolOutcome = Err("nope".into());
        assert_eq!(outcome_from_ledger(&outcome_to_ledger(&failed).1), failed);
    }

    #[test]
    fn keys_tell_calls_apart_by_content_not_only_position() {
        let execution = Uuid::nil();
        let write_a = json!({ "key": "a", "value": 1 });
        let key = call_key(execution, 0, 0, "write_output", &write_a);
        assert_eq!(key, call_key(execution, 0, 0, "write_output", &write_a));
        assert_ne!(
            key,
            call_key(
                execution,
                0,
                0,
                "write_output",
                &json!({ "key": "b", "value": 1 })
            )
        );
        assert_ne!(key, call_key(execution, 0, 1, "write_output", &write_a));
        assert_ne!(key, call_key(execution, 0, 0, "search_files", &write_a));
        let reordered: Value = serde_json::from_str(r#"{"value":1,"key":"a"}"#).unwrap();
        assert_eq!(key, call_key(execution, 0, 0, "write_output", &reordered));
    }
}
