//! What the worker writes while it runs an execution, each write fenced by its lease
//! (and the step commit by the step number too): the model's answer with its spend, the
//! step commit, parking, a cancel it honours, and a release at a step boundary.
//!
//! The model's answer is recorded, with its tokens and cost, before the step's tools
//! run: spend is counted even when the step never commits, and a step redone after a
//! crash reuses the recorded answer instead of asking the model again. Its tool calls
//! are then exactly the ones whose results the ledger holds.

use serde_json::{Value, json};
use sqlx::PgPool;
use sqlx::types::Json;
use uuid::Uuid;

use super::{ExecutionStatus, Moved, Transition, record};

/// The run a worker holds: the execution, its org and node, and the lease.
#[derive(Debug, Clone, Copy)]
pub struct Run {
    pub execution_id: Uuid,
    pub org_id: Uuid,
    pub node_id: Uuid,
    pub lease: Uuid,
}

impl Run {
    fn at(self, step: i32) -> Moved {
        Moved {
            id: self.execution_id,
            org_id: self.org_id,
            step,
        }
    }
}

/// The model's answer for one step and what it cost.
#[derive(Debug, Clone)]
pub struct ModelCall<'a> {
    /// The assistant message as it goes into the conversation.
    pub message: &'a Value,
    pub tokens_in: i64,
    pub tokens_out: i64,
    pub cost_usd: f64,
}

/// Records the model's answer for `step` as the run's pending completion, adds its spend
/// to the counters, and appends `events` (the step's events so far, the model call's
/// last), in one statement. False when the lease or the step moved on.
pub async fn record_model_call(
    pool: &PgPool,
    run: Run,
    step: i32,
    call: &ModelCall<'_>,
    events: &[(String, Value)],
) -> sqlx::Result<bool> {
    let kinds: Vec<&str> = events.iter().map(|(kind, _)| kind.as_str()).collect();
    let data: Vec<Json<&Value>> = events.iter().map(|(_, data)| Json(data)).collect();
    let appended = sqlx::query(
        "WITH moved AS ( \
             UPDATE executions SET tokens_in = tokens_in + $4, tokens_out = tokens_out + $5, cost_usd = cost_usd + $6, \
                    pending_completion = jsonb_build_object('step', $3::int, 'message', $7::jsonb), updated_at = now() \
             WHERE id = $1 AND lease_token = $2 AND step = $3 RETURNING id, org_id, step) \
         INSERT INTO execution_events (execution_id, org_id, step, kind, data) \
         SELECT moved.id, moved.org_id, moved.step, event.kind, event.data \
         FROM moved, UNNEST($8::text[], $9::jsonb[]) WITH ORDINALITY AS event(kind, data, position) ORDER BY event.position",
    )
    .bind(run.execution_id)
    .bind(run.lease)
    .bind(step)
    .bind(call.tokens_in)
    .bind(call.tokens_out)
    .bind(call.cost_usd)
    .bind(call.message)
    .bind(&kinds)
    .bind(&data)
    .execute(pool)
    .await?;
    Ok(appended.rows_affected() > 0)
}

/// A question or approval request a step opens.
#[derive(Debug, Clone)]
pub struct NewInput {
    pub tool_call_id: String,
    /// The call's position in its step.
    pub call_index: i32,
    /// `question` or `approval`.
    pub kind: &'static str,
    pub tool: String,
    pub arguments: Value,
    pub question: Option<String>,
}

/// Where the run goes after a step.
#[derive(Debug, Clone, PartialEq)]
pub enum StepOutcome {
    /// On to the next step.
    Continue,
    /// The step opened questions or approvals: park until a person acts.
    AwaitingInput,
    /// The model answered without tool calls: the run is done.
    Completed { result: Option<String> },
}

/// Everything one step commits, in one statement.
#[derive(Debug, Clone)]
pub struct StepCommit {
    /// The messages the step added to the conversation: the checkpoint delta.
    pub delta: Vec<Value>,
    /// The step's trace events not yet recorded (the model call's, when its answer was
    /// not recorded ahead, then tool calls and results, questions).
    pub events: Vec<(String, Value)>,
    pub new_inputs: Vec<NewInput>,
    /// Answered questions and decided approvals whose results the step used.
    pub consumed_inputs: Vec<Uuid>,
    /// Time the step ran, for the wall-time budget.
    pub active_ms: i64,
    /// The model call's spend when it was not recorded ahead with its answer
    /// ([`record_model_call`]); zero when it was.
    pub tokens_in: i64,
    pub tokens_out: i64,
    pub cost_usd: f64,
    pub outcome: StepOutcome,
}

/// What a committed step tells the next one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    /// The run's control request as the commit found it (a pause or cancel asked for
    /// while the step ran): the next step's control check, without a read of its own.
    pub control: Option<String>,
}

/// The step commit statement, `$1`–`$14`, with `$inputs` (the CTEs that open and consume
/// questions and approvals) spliced in when the step has any. Most steps have none, and
/// each CTE is a table modification Postgres sets up at every execution even when it
/// touches no row: the statement without them is the one nearly every step runs.
macro_rules! commit_step_statement {
    ($($inputs:literal)?) => {
        concat!(
            "WITH advanced AS ( \
                 UPDATE executions SET step = step + 1, active_ms = active_ms + $4, status = $5, result = COALESCE($6, result), \
                        tokens_in = tokens_in + $9, tokens_out = tokens_out + $10, cost_usd = cost_usd + $11, \
                        pending_completion = NULL, \
                        control = CASE WHEN $5 = $7 THEN NULL ELSE control END, \
                        lease_token = CASE WHEN $5 = $8 THEN lease_token ELSE NULL END, \
                        lease_expires_at = CASE WHEN $5 = $8 THEN lease_expires_at ELSE NULL END, \
                        finished_at = CASE WHEN $5 = $7 THEN now() ELSE finished_at END, updated_at = now() \
                 WHERE id = $1 AND lease_token = $2 AND step = $3 RETURNING id, org_id, control), \
             checkpoint AS ( \
                 INSERT INTO execution_steps (execution_id, step, messages) SELECT id, $3, $12 FROM advanced), \
             events AS ( \
                 INSERT INTO execution_events (execution_id, org_id, step, kind, data) \
                 SELECT advanced.id, advanced.org_id, $3, event.kind, event.data \
                 FROM advanced, UNNEST($13::text[], $14::jsonb[]) WITH ORDINALITY AS event(kind, data, position) ORDER BY event.position)",
            $($inputs,)?
            " SELECT control FROM advanced"
        )
    };
}

const COMMIT_STEP: &str = commit_step_statement!();

const COMMIT_STEP_WITH_INPUTS: &str = commit_step_statement!(
    ", inputs AS ( \
         INSERT INTO execution_inputs (id, execution_id, org_id, step, tool_call_id, call_index, kind, tool, arguments, question) \
         SELECT input.id, advanced.id, advanced.org_id, $3, input.tool_call_id, input.call_index, input.kind, input.tool, input.arguments, input.question \
         FROM advanced, UNNEST($15::uuid[], $16::text[], $17::int[], $18::text[], $19::text[], $20::jsonb[], $21::text[]) \
              AS input(id, tool_call_id, call_index, kind, tool, arguments, question)), \
     consumed AS ( \
         UPDATE execution_inputs SET status = 'consumed' WHERE id = ANY($22) AND execution_id IN (SELECT id FROM advanced))"
);

/// Commits `step` in ONE statement (one round trip, one implicit transaction): advances
/// the run, adds the step's spend, stores the checkpoint delta, its events (the
/// transition's last, when the run parks or completes), new questions and approvals,
/// consumes the inputs it used, clears the pending completion, and moves the run to its
/// next status. None when the lease or the step moved on.
///
/// A `Continue` commit leaves no pending or answered input behind (a step that opens one
/// parks the run), so the control request it returns is all the next step needs to
/// know; a change of it after the commit is notified (migration 0010).
pub async fn commit_step(
    pool: &PgPool,
    run: Run,
    step: i32,
    commit: &StepCommit,
) -> sqlx::Result<Option<Committed>> {
    let (status, transition) = match &commit.outcome {
        StepOutcome::Continue => (ExecutionStatus::Running, None),
        StepOutcome::AwaitingInput => (
            ExecutionStatus::AwaitingInput,
            Some(Transition::AwaitingInput),
        ),
        StepOutcome::Completed { .. } => (ExecutionStatus::Completed, Some(Transition::Completed)),
    };
    let result = match &commit.outcome {
        StepOutcome::Completed { result } => result.as_deref(),
        _ => None,
    };
    let mut kinds: Vec<&str> = commit
        .events
        .iter()
        .map(|(kind, _)| kind.as_str())
        .collect();
    // Borrowed: sqlx writes each event's JSON straight from the step's values.
    let mut data: Vec<Json<&Value>> = commit.events.iter().map(|(_, data)| Json(data)).collect();
    let no_data = json!({});
    if let Some(transition) = transition {
        // The transition's event row goes with the others; neither transition enqueues,
        // so `record` would write nothing else.
        debug_assert!(!transition.enqueues());
        kinds.push(transition.as_str());
        data.push(Json(&no_data));
    }
    let with_inputs = !commit.new_inputs.is_empty() || !commit.consumed_inputs.is_empty();
    let query = sqlx::query_as(if with_inputs {
        COMMIT_STEP_WITH_INPUTS
    } else {
        COMMIT_STEP
    })
    .bind(run.execution_id)
    .bind(run.lease)
    .bind(step)
    .bind(commit.active_ms)
    .bind(status.as_str())
    .bind(result)
    .bind(ExecutionStatus::Completed.as_str())
    .bind(ExecutionStatus::Running.as_str())
    .bind(commit.tokens_in)
    .bind(commit.tokens_out)
    .bind(commit.cost_usd)
    .bind(Json(&commit.delta))
    .bind(&kinds)
    .bind(&data);
    let committed: Option<(Option<String>,)> = if with_inputs {
        let inputs = &commit.new_inputs;
        let ids: Vec<Uuid> = inputs.iter().map(|_| Uuid::now_v7()).collect();
        let call_ids: Vec<&str> = inputs
            .iter()
            .map(|input| input.tool_call_id.as_str())
            .collect();
        let indexes: Vec<i32> = inputs.iter().map(|input| input.call_index).collect();
        let kinds: Vec<&str> = inputs.iter().map(|input| input.kind).collect();
        let tools: Vec<&str> = inputs.iter().map(|input| input.tool.as_str()).collect();
        let arguments: Vec<Json<&Value>> =
            inputs.iter().map(|input| Json(&input.arguments)).collect();
        let questions: Vec<Option<&str>> = inputs
            .iter()
            .map(|input| input.question.as_deref())
            .collect();
        query
            .bind(&ids)
            .bind(&call_ids)
            .bind(&indexes)
            .bind(&kinds)
            .bind(&tools)
            .bind(&arguments)
            .bind(&questions)
            .bind(&commit.consumed_inputs)
            .fetch_optional(pool)
            .await?
    } else {
        query.fetch_optional(pool).await?
    };
    Ok(committed.map(|(control,)| Committed { control }))
}

/// Why a run parks between steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Park {
    /// A pause was asked for (the request is cleared).
    Paused,
    /// Questions or approvals are still pending.
    AwaitingInput,
}

/// `running → paused | awaiting_input` at a step boundary, giving up the lease. False
/// when the lease is no longer this worker's.
pub async fn park(pool: &PgPool, run: Run, step: i32, park: Park) -> sqlx::Result<bool> {
    let (status, transition) = match park {
        Park::Paused => (ExecutionStatus::Paused, Transition::Paused),
        Park::AwaitingInput => (ExecutionStatus::AwaitingInput, Transition::AwaitingInput),
    };
    let mut transaction = pool.begin().await?;
    let parked = sqlx::query(
        "UPDATE executions SET status = $3, control = CASE WHEN $3 = $4 THEN NULL ELSE control END, \
         lease_token = NULL, lease_expires_at = NULL, updated_at = now() WHERE id = $1 AND lease_token = $2",
    )
    .bind(run.execution_id)
    .bind(run.lease)
    .bind(status.as_str())
    .bind(ExecutionStatus::Paused.as_str())
    .execute(&mut *transaction)
    .await?;
    if parked.rows_affected() == 0 {
        return Ok(false);
    }
    record(&mut transaction, run.at(step), transition, json!({})).await?;
    transaction.commit().await?;
    Ok(true)
}

/// The input statuses a cancel closes.
pub(super) const OPEN_INPUTS: [&str; 4] = ["pending", "answered", "approved", "rejected"];

/// `running → cancelled`, honouring a cancel request; `interrupted` says a model call
/// was cut short. Open questions and approvals are closed. False when the lease is no
/// longer this worker's.
pub async fn finish_cancelled(
    pool: &PgPool,
    run: Run,
    step: i32,
    interrupted: bool,
) -> sqlx::Result<bool> {
    let mut transaction = pool.begin().await?;
    let cancelled = sqlx::query(
        "UPDATE executions SET status = $3, control = NULL, error_code = 'cancelled', error_message = 'cancelled by request', \
         lease_token = NULL, lease_expires_at = NULL, finished_at = now(), updated_at = now() WHERE id = $1 AND lease_token = $2",
    )
    .bind(run.execution_id)
    .bind(run.lease)
    .bind(ExecutionStatus::Cancelled.as_str())
    .execute(&mut *transaction)
    .await?;
    if cancelled.rows_affected() == 0 {
        return Ok(false);
    }
    sqlx::query(
        "UPDATE execution_inputs SET status = 'cancelled' WHERE execution_id = $1 AND status = ANY($2)",
    )
    .bind(run.execution_id)
    .bind(&OPEN_INPUTS[..])
    .execute(&mut *transaction)
    .await?;
    record(
        &mut transaction,
        run.at(step),
        Transition::Cancelled,
        json!({ "interrupted_model_call": interrupted }),
    )
    .await?;
    transaction.commit().await?;
    Ok(true)
}

/// `running → queued` at a step boundary during shutdown, with a fresh message for
/// another worker. False when the lease is no longer this worker's.
pub async fn release_at_boundary(pool: &PgPool, run: Run, step: i32) -> sqlx::Result<bool> {
    let mut transaction = pool.begin().await?;
    let released = sqlx::query(
        "UPDATE executions SET status = $3, lease_token = NULL, lease_expires_at = NULL, queued_at = now(), updated_at = now() \
         WHERE id = $1 AND lease_token = $2",
    )
    .bind(run.execution_id)
    .bind(run.lease)
    .bind(ExecutionStatus::Queued.as_str())
    .execute(&mut *transaction)
    .await?;
    if released.rows_affected() == 0 {
        return Ok(false);
    }
    record(
        &mut transaction,
        run.at(step),
        Transition::Released { enqueue: true },
        json!({ "reason": "worker shutdown" }),
    )
    .await?;
    transaction.commit().await?;
    Ok(true)
}
