//! Every transition of `shared::executions`, and every illegal one, against Postgres: the
//! row it leaves, its trace event, and its outbox entry (or their absence).

use std::time::Duration;

use serde_json::{Value, json};
use shared::error::JobError;
use shared::executions::control::{self, ControlError, Outcome};
use shared::executions::step::{self, ModelCall, NewInput, Park, Run, StepCommit, StepOutcome};
use shared::executions::{self, ExecutionStatus, NewExecution};
use shared::lease::{Claim, LAST_ATTEMPT_LOST, Receipt, Stalled};
use shared::worker::Disposition;
use sqlx::PgPool;
use uuid::Uuid;

const LEASE: Duration = Duration::from_secs(60);

/// A first receive of message `message_id` (`last`: its last allowed one).
fn message(message_id: &str, last: bool) -> Receipt<'_> {
    Receipt {
        message_id,
        last_receive: last,
    }
}

async fn database() -> testkit::FreshDatabase {
    testkit::fresh_database().await.expect("a fresh database")
}

/// A queued execution of a fresh org and node.
async fn new_execution(pool: &PgPool) -> (Uuid, Uuid) {
    let (org_id, node_id) = (Uuid::now_v7(), Uuid::now_v7());
    sqlx::query("INSERT INTO nodes (id, org_id, title, instructions) VALUES ($1, $2, 't', 'i')")
        .bind(node_id)
        .bind(org_id)
        .execute(pool)
        .await
        .unwrap();
    let mut connection = pool.acquire().await.unwrap();
    let id = executions::create(
        &mut connection,
        &NewExecution {
            id: Uuid::now_v7(),
            org_id,
            node_id,
            idempotency_key: None,
            model: "gpt-4o-mini",
            budget: &json!({}),
            by: "test",
        },
    )
    .await
    .unwrap()
    .expect("created");
    (id, org_id)
}

/// An execution moved straight to `status` (test setup only).
async fn execution_in(pool: &PgPool, status: &str, error_class: Option<&str>) -> (Uuid, Uuid) {
    let (id, org_id) = new_execution(pool).await;
    sqlx::query("UPDATE executions SET status = $2, error_class = $3 WHERE id = $1")
        .bind(id)
        .bind(status)
        .bind(error_class)
        .execute(pool)
        .await
        .unwrap();
    (id, org_id)
}

async fn status(pool: &PgPool, id: Uuid) -> String {
    sqlx::query_scalar("SELECT status FROM executions WHERE id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn events(pool: &PgPool, id: Uuid) -> Vec<String> {
    sqlx::query_scalar("SELECT kind FROM execution_events WHERE execution_id = $1 ORDER BY id")
        .bind(id)
        .fetch_all(pool)
        .await
        .unwrap()
}

async fn messages(pool: &PgPool, id: Uuid) -> usize {
    let count: i64 =
        sqlx::query_scalar("SELECT count(*) FROM outbox WHERE body LIKE '%' || $1 || '%'")
            .bind(id.to_string())
            .fetch_one(pool)
            .await
            .unwrap();
    count as usize
}

async fn expire_lease(pool: &PgPool, id: Uuid) {
    sqlx::query(
        "UPDATE executions SET lease_expires_at = now() - interval '1 second' WHERE id = $1",
    )
    .bind(id)
    .execute(pool)
    .await
    .unwrap();
}

async fn run_of(pool: &PgPool, id: Uuid, org_id: Uuid, last_receive: bool) -> Run {
    let lease = match executions::claim(pool, id, org_id, LEASE, message("m-1", last_receive))
        .await
        .unwrap()
    {
        Claim::Acquired { lease, .. } => lease,
        other => panic!("expected a lease, got {other:?}"),
    };
    let node_id = sqlx::query_scalar("SELECT node_id FROM executions WHERE id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap();
    Run {
        execution_id: id,
        org_id,
        node_id,
        lease,
    }
}

fn commit(outcome: StepOutcome) -> StepCommit {
    StepCommit {
        delta: vec![json!({ "role": "assistant", "content": "x" })],
        events: vec![("tool_call".into(), json!({}))],
        new_inputs: Vec::new(),
        consumed_inputs: Vec::new(),
        active_ms: 5,
        tokens_in: 0,
        tokens_out: 0,
        cost_usd: 0.0,
        outcome,
    }
}

#[tokio::test]
async fn the_status_enum_mirrors_the_check_list() {
    let database = database().await;
    let pool = database.pool.clone();
    let definition: String = sqlx::query_scalar(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = 'executions'::regclass AND conname = 'executions_status_check'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let mut in_check: Vec<&str> = definition.split('\'').skip(1).step_by(2).collect();
    in_check.sort_unstable();
    let mut in_enum = ExecutionStatus::names();
    in_enum.sort_unstable();
    assert_eq!(in_check, in_enum, "{definition}");
}

#[tokio::test]
async fn create_enqueues_once_per_idempotency_key() {
    let database = database().await;
    let pool = database.pool.clone();
    let (id, org_id) = new_execution(&pool).await;
    assert_eq!(status(&pool, id).await, "queued");
    assert_eq!(events(&pool, id).await, ["queued"]);
    let queue: String = sqlx::query_scalar("SELECT queue FROM outbox")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(queue, "agent-jobs", "the kind picks the queue");
    let node_id: Uuid = sqlx::query_scalar("SELECT node_id FROM executions WHERE id = $1")
        .bind(id)
        .fetch_one(&pool)
        .await
        .unwrap();
    let mut connection = pool.acquire().await.unwrap();
    let again = |id| NewExecution {
        id,
        org_id,
        node_id,
        idempotency_key: Some("key-1"),
        model: "gpt-4o-mini",
        budget: &Value::Null,
        by: "test",
    };
    let first = Uuid::now_v7();
    assert_eq!(
        executions::create(&mut connection, &again(first))
            .await
            .unwrap(),
        Some(first)
    );
    assert_eq!(
        executions::create(&mut connection, &again(Uuid::now_v7()))
            .await
            .unwrap(),
        None,
        "the same key creates nothing"
    );
    assert_eq!(messages(&pool, first).await, 1);
}

#[tokio::test]
async fn claims_take_queued_expired_and_dead_lettered_runs_only() {
    let database = database().await;
    let pool = database.pool.clone();
    let (id, org_id) = new_execution(&pool).await;
    let run = run_of(&pool, id, org_id, false).await;
    assert_eq!(status(&pool, id).await, "running");
    assert_eq!(
        executions::claim(&pool, id, org_id, LEASE, message("m-2", false))
            .await
            .unwrap(),
        Claim::Duplicate
    );
    assert!(matches!(
        executions::claim(&pool, id, org_id, LEASE, message("m-1", false))
            .await
            .unwrap(),
        Claim::Busy { .. }
    ));
    expire_lease(&pool, id).await;
    let taken_over = run_of(&pool, id, org_id, true).await;
    assert_ne!(taken_over.lease, run.lease);
    assert_eq!(events(&pool, id).await, ["queued", "claimed", "claimed"]);

    let (dead, org_id) = execution_in(&pool, "failed", Some("transient")).await;
    run_of(&pool, dead, org_id, false).await;
    let (error_class, finished): (Option<String>, bool) =
        sqlx::query_as("SELECT error_class, finished_at IS NOT NULL FROM executions WHERE id = $1")
            .bind(dead)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((error_class, finished), (None, false), "reopened");
    assert_eq!(events(&pool, dead).await, ["queued", "redriven", "claimed"]);

    for (settled, class) in [
        ("failed", Some("permanent")),
        ("completed", None),
        ("cancelled", None),
        ("paused", None),
        ("awaiting_input", None),
    ] {
        let (id, org_id) = execution_in(&pool, settled, class).await;
        assert_eq!(
            executions::claim(&pool, id, org_id, LEASE, message("m-1", false))
                .await
                .unwrap(),
            Claim::Finished,
            "{settled} cannot be claimed"
        );
        assert_eq!(status(&pool, id).await, settled);
    }
    let (id, _) = new_execution(&pool).await;
    assert_eq!(
        executions::claim(&pool, id, Uuid::now_v7(), LEASE, message("m-1", false))
            .await
            .unwrap(),
        Claim::Finished,
        "another org's message claims nothing"
    );
}

#[tokio::test]
async fn a_model_answer_is_paid_for_before_its_step_commits() {
    let database = database().await;
    let pool = database.pool.clone();
    let (id, org_id) = new_execution(&pool).await;
    let run = run_of(&pool, id, org_id, false).await;
    let message = json!({ "role": "assistant", "content": null, "tool_calls": [] });
    let call = ModelCall {
        message: &message,
        tokens_in: 100,
        tokens_out: 20,
        cost_usd: 0.5,
    };
    let model_event = [("model_call".to_string(), json!({ "tokens_in": 100 }))];
    let stale = Run {
        lease: Uuid::new_v4(),
        ..run
    };
    assert!(
        !step::record_model_call(&pool, stale, 0, &call, &model_event)
            .await
            .unwrap()
    );
    assert!(
        !step::record_model_call(&pool, run, 1, &call, &model_event)
            .await
            .unwrap(),
        "only the step the run is at"
    );
    assert!(
        step::record_model_call(&pool, run, 0, &call, &model_event)
            .await
            .unwrap()
    );
    let (tokens_in, cost, pending): (i64, f64, Option<Value>) = sqlx::query_as(
        "SELECT tokens_in, cost_usd, pending_completion FROM executions WHERE id = $1",
    )
    .bind(id)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((tokens_in, cost), (100, 0.5));
    assert_eq!(pending.unwrap(), json!({ "step": 0, "message": message }));
    assert_eq!(events(&pool, id).await, ["queued", "claimed", "model_call"]);

    assert!(
        step::commit_step(&pool, stale, 0, &commit(StepOutcome::Continue))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        step::commit_step(&pool, run, 1, &commit(StepOutcome::Continue))
            .await
            .unwrap()
            .is_none(),
        "a step number that moved on is refused"
    );
    assert!(
        step::commit_step(&pool, run, 0, &commit(StepOutcome::Continue))
            .await
            .unwrap()
            .is_some()
    );
    let (step_now, status_now, pending, tokens_in): (i32, String, Option<Value>, i64) =
        sqlx::query_as(
            "SELECT step, status, pending_completion, tokens_in FROM executions WHERE id = $1",
        )
        .bind(id)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        (step_now, status_now.as_str(), pending, tokens_in),
        (1, "running", None, 100)
    );
    assert!(
        step::commit_step(&pool, run, 0, &commit(StepOutcome::Continue))
            .await
            .unwrap()
            .is_none(),
        "a step commits once"
    );
}

#[tokio::test]
async fn steps_end_in_completion_or_a_wait_for_input() {
    let database = database().await;
    let pool = database.pool.clone();
    let (done, org_id) = new_execution(&pool).await;
    let run = run_of(&pool, done, org_id, false).await;
    let completed = StepOutcome::Completed {
        result: Some("the answer".into()),
    };
    assert!(
        step::commit_step(&pool, run, 0, &commit(completed))
            .await
            .unwrap()
            .is_some()
    );
    let (status_now, result, token, finished): (String, Option<String>, Option<Uuid>, bool) = sqlx::query_as(
        "SELECT status, result, lease_token, finished_at IS NOT NULL FROM executions WHERE id = $1",
    )
    .bind(done)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        (status_now.as_str(), result.as_deref(), token, finished),
        ("completed", Some("the answer"), None, true)
    );
    assert_eq!(
        events(&pool, done).await,
        ["queued", "claimed", "tool_call", "completed"]
    );
    assert!(
        step::commit_step(&pool, run, 1, &commit(StepOutcome::Continue))
            .await
            .unwrap()
            .is_none(),
        "completed → running is refused"
    );

    let (waiting, org_id) = new_execution(&pool).await;
    let run = run_of(&pool, waiting, org_id, false).await;
    let mut asking = commit(StepOutcome::AwaitingInput);
    asking.new_inputs.push(NewInput {
        tool_call_id: "call_0_0".into(),
        call_index: 0,
        kind: "question",
        tool: "ask_human".into(),
        arguments: json!({ "question": "why?" }),
        question: Some("why?".into()),
    });
    assert!(
        step::commit_step(&pool, run, 0, &asking)
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(status(&pool, waiting).await, "awaiting_input");
    assert!(
        messages(&pool, waiting).await == 1,
        "only the creation's message"
    );
}

#[tokio::test]
async fn parking_cancelling_and_releasing_need_the_lease() {
    let database = database().await;
    let pool = database.pool.clone();
    let cases: [(&str, &str, usize); 4] = [
        ("paused", "paused", 0),
        ("awaiting_input", "awaiting_input", 0),
        ("cancelled", "cancelled", 0),
        ("released", "queued", 1),
    ];
    for (action, expected, new_messages) in cases {
        let (id, org_id) = new_execution(&pool).await;
        let run = run_of(&pool, id, org_id, false).await;
        let stale = Run {
            lease: Uuid::new_v4(),
            ..run
        };
        let act = async |run: Run| match action {
            "paused" => step::park(&pool, run, 0, Park::Paused).await.unwrap(),
            "awaiting_input" => step::park(&pool, run, 0, Park::AwaitingInput)
                .await
                .unwrap(),
            "cancelled" => step::finish_cancelled(&pool, run, 0, true).await.unwrap(),
            _ => step::release_at_boundary(&pool, run, 0).await.unwrap(),
        };
        assert!(!act(stale).await, "{action} without the lease");
        assert_eq!(status(&pool, id).await, "running");
        assert!(act(run).await, "{action}");
        assert_eq!(status(&pool, id).await, expected);
        assert_eq!(events(&pool, id).await.last().unwrap(), action);
        assert_eq!(messages(&pool, id).await, 1 + new_messages);
        assert!(!act(run).await, "{action} twice");
    }
    let (id, org_id) = new_execution(&pool).await;
    let run = run_of(&pool, id, org_id, false).await;
    assert!(
        !executions::release(&pool, id, Uuid::new_v4())
            .await
            .unwrap()
    );
    assert!(executions::release(&pool, id, run.lease).await.unwrap());
    assert_eq!(status(&pool, id).await, "queued");
    assert_eq!(
        messages(&pool, id).await,
        1,
        "its own message is made visible instead"
    );
}

#[tokio::test]
async fn failures_record_their_disposition_and_backoffs_keep_the_sweeper_away() {
    let database = database().await;
    let pool = database.pool.clone();
    let error = JobError::transient("model_unavailable", "503");
    for (disposition, expected) in [
        (Disposition::Failed, "failed"),
        (
            Disposition::Retrying {
                delay: Duration::from_secs(30),
            },
            "retrying",
        ),
        (Disposition::DeadLettered, "dead_lettered"),
    ] {
        let (id, org_id) = new_execution(&pool).await;
        let run = run_of(&pool, id, org_id, false).await;
        assert!(
            !executions::record_failure(&pool, id, Uuid::new_v4(), &error, disposition)
                .await
                .unwrap()
        );
        assert!(
            executions::record_failure(&pool, id, run.lease, &error, disposition)
                .await
                .unwrap()
        );
        assert_eq!(events(&pool, id).await.last().unwrap(), expected);
        let status_now = status(&pool, id).await;
        assert_eq!(
            status_now,
            if expected == "retrying" {
                "queued"
            } else {
                "failed"
            }
        );
        assert!(
            !executions::record_failure(&pool, id, run.lease, &error, disposition)
                .await
                .unwrap()
        );
        let mut transaction = pool.begin().await.unwrap();
        let stalled = executions::lock_stalled(&mut transaction, Duration::ZERO, 100)
            .await
            .unwrap();
        assert!(
            !stalled.contains(&id),
            "{expected}: nothing for the sweeper while the message is on its way back"
        );
    }
}

#[tokio::test]
async fn stalled_runs_are_requeued_or_dead_lettered_and_parked_ones_left_alone() {
    let database = database().await;
    let pool = database.pool.clone();
    let (queued, _) = new_execution(&pool).await;
    let (crashed, org_id) = new_execution(&pool).await;
    run_of(&pool, crashed, org_id, false).await;
    expire_lease(&pool, crashed).await;
    let (crashed_on_last, org_id) = new_execution(&pool).await;
    run_of(&pool, crashed_on_last, org_id, true).await;
    expire_lease(&pool, crashed_on_last).await;
    let (healthy, org_id) = new_execution(&pool).await;
    run_of(&pool, healthy, org_id, true).await;
    let (paused, _) = execution_in(&pool, "paused", None).await;

    let mut connection = pool.acquire().await.unwrap();
    for (id, expected) in [
        (queued, Stalled::Requeued),
        (crashed, Stalled::Requeued),
        (crashed_on_last, Stalled::DeadLettered),
        (healthy, Stalled::NotStalled),
        (paused, Stalled::NotStalled),
    ] {
        assert_eq!(
            executions::requeue_stalled(&mut connection, id, "test")
                .await
                .unwrap(),
            expected
        );
    }
    assert_eq!(messages(&pool, queued).await, 2);
    assert_eq!(status(&pool, crashed).await, "queued");
    assert_eq!(messages(&pool, crashed).await, 2);
    let (status_now, class, code): (String, Option<String>, Option<String>) =
        sqlx::query_as("SELECT status, error_class, error_code FROM executions WHERE id = $1")
            .bind(crashed_on_last)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(
        (status_now.as_str(), class.as_deref(), code.as_deref()),
        ("failed", Some("transient"), Some(LAST_ATTEMPT_LOST))
    );
    assert_eq!(messages(&pool, crashed_on_last).await, 1);
    assert_eq!(status(&pool, healthy).await, "running");
    assert_eq!(status(&pool, paused).await, "paused");

    assert!(
        executions::reopen_dead_lettered(&mut connection, crashed_on_last, "alice")
            .await
            .unwrap()
    );
    assert_eq!(status(&pool, crashed_on_last).await, "queued");
    assert_eq!(
        events(&pool, crashed_on_last).await.last().unwrap(),
        "redriven"
    );
    let (failed_for_good, _) = execution_in(&pool, "failed", Some("permanent")).await;
    assert!(
        !executions::reopen_dead_lettered(&mut connection, failed_for_good, "alice")
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn pause_resume_and_cancel_follow_the_run_state() {
    let database = database().await;
    let pool = database.pool.clone();
    let mut connection = pool.acquire().await.unwrap();
    let (id, org_id) = new_execution(&pool).await;
    assert!(matches!(
        control::pause(&mut connection, id, Uuid::now_v7(), "bob").await,
        Err(ControlError::NotFound)
    ));
    control::pause(&mut connection, id, org_id, "bob")
        .await
        .unwrap();
    assert_eq!(status(&pool, id).await, "paused");
    control::resume(&mut connection, id, org_id, "bob")
        .await
        .unwrap();
    assert_eq!(status(&pool, id).await, "queued");
    assert_eq!(messages(&pool, id).await, 2, "resumed runs are enqueued");
    assert!(matches!(
        control::resume(&mut connection, id, org_id, "bob").await,
        Err(ControlError::Conflict {
            code: "not_paused",
            ..
        })
    ));

    let run = run_of(&pool, id, org_id, false).await;
    control::pause(&mut connection, id, org_id, "bob")
        .await
        .unwrap();
    let control_now: Option<String> =
        sqlx::query_scalar("SELECT control FROM executions WHERE id = $1")
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(
        control_now.as_deref(),
        Some("pause"),
        "a running run is asked"
    );
    control::resume(&mut connection, id, org_id, "bob")
        .await
        .unwrap();
    assert_eq!(status(&pool, id).await, "running", "the pause is withdrawn");
    assert_eq!(
        control::cancel(&mut connection, id, org_id, "bob")
            .await
            .unwrap(),
        Outcome::Changed
    );
    assert_eq!(
        status(&pool, id).await,
        "running",
        "its worker is asked to stop"
    );
    step::finish_cancelled(&pool, run, 0, false).await.unwrap();
    assert_eq!(
        control::cancel(&mut connection, id, org_id, "bob")
            .await
            .unwrap(),
        Outcome::Unchanged
    );
    assert!(matches!(
        control::pause(&mut connection, id, org_id, "bob").await,
        Err(ControlError::Conflict {
            code: "not_pausable",
            ..
        })
    ));

    let (queued, org_id) = new_execution(&pool).await;
    control::cancel(&mut connection, queued, org_id, "bob")
        .await
        .unwrap();
    assert_eq!(
        status(&pool, queued).await,
        "cancelled",
        "nobody runs it: cancelled at once"
    );
    let (completed, org_id) = execution_in(&pool, "completed", None).await;
    assert!(matches!(
        control::cancel(&mut connection, completed, org_id, "bob").await,
        Err(ControlError::Conflict {
            code: "not_cancellable",
            ..
        })
    ));
}

#[tokio::test]
async fn answers_requeue_a_waiting_run_only_when_nothing_is_pending() {
    let database = database().await;
    let pool = database.pool.clone();
    let (id, org_id) = new_execution(&pool).await;
    let run = run_of(&pool, id, org_id, false).await;
    let mut asking = commit(StepOutcome::AwaitingInput);
    for (index, kind) in [(0, "question"), (1, "approval")] {
        asking.new_inputs.push(NewInput {
            tool_call_id: format!("call_0_{index}"),
            call_index: index,
            kind,
            tool: if kind == "question" {
                "ask_human"
            } else {
                "write_output"
            }
            .into(),
            arguments: json!({}),
            question: (kind == "question").then(|| "why?".to_string()),
        });
    }
    step::commit_step(&pool, run, 0, &asking).await.unwrap();
    let approval: Uuid = sqlx::query_scalar(
        "SELECT id FROM execution_inputs WHERE execution_id = $1 AND kind = 'approval'",
    )
    .bind(id)
    .fetch_one(&pool)
    .await
    .unwrap();
    let mut connection = pool.acquire().await.unwrap();
    assert!(matches!(
        control::decide(&mut connection, id, org_id, Uuid::now_v7(), true, "ann").await,
        Err(ControlError::InputNotFound)
    ));
    control::answer(&mut connection, id, org_id, None, "because", "ann")
        .await
        .unwrap();
    assert_eq!(
        status(&pool, id).await,
        "awaiting_input",
        "the approval is still pending"
    );
    assert_eq!(messages(&pool, id).await, 1);
    assert!(matches!(
        control::answer(&mut connection, id, org_id, None, "again", "ann").await,
        Err(ControlError::Conflict {
            code: "nothing_pending",
            ..
        })
    ));
    control::decide(&mut connection, id, org_id, approval, false, "ann")
        .await
        .unwrap();
    assert_eq!(status(&pool, id).await, "queued");
    assert_eq!(
        messages(&pool, id).await,
        2,
        "requeued once, with one message"
    );
    assert!(matches!(
        control::decide(&mut connection, id, org_id, approval, true, "ann").await,
        Err(ControlError::Conflict {
            code: "already_answered",
            ..
        })
    ));
    let trace = events(&pool, id).await;
    assert_eq!(
        &trace[trace.len() - 3..],
        ["awaiting_input", "human_input", "rejected"]
    );

    let (done, org_id) = execution_in(&pool, "completed", None).await;
    assert!(matches!(
        control::answer(&mut connection, done, org_id, None, "late", "ann").await,
        Err(ControlError::Conflict {
            code: "nothing_pending",
            ..
        })
    ));
}
