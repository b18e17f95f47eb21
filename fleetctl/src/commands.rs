//! One function per command: call the API, then write either the answer as pretty JSON
//! (`--json`) or a table or key/value view to `out`. Progress bars and prompts go to
//! stderr through [`Environment`], so `out` holds only the result.

use std::io::Write;

use serde_json::{Map, Value, json};
use uuid::Uuid;

use crate::Outcome;
use crate::cli::{
    Command, DlqCommand, ExecutionsCommand, FilesCommand, JobRef, ScheduleAction, SchedulesCommand,
    Selector, StuckArgs, StuckCommand, TasksCommand,
};
use crate::client::Client;
use crate::error::FleetError;
use crate::fields::{count_field, id_field, list_field, string_field, text_field};
use crate::render;
use crate::terminal::{Environment, set_bar_length};

/// Where command output goes: stdout in `main`, a buffer in tests.
pub type Output<'a> = dyn Write + Send + 'a;

/// What every command works with.
#[derive(Debug, Clone, Copy)]
pub struct Session<'a> {
    pub client: &'a Client,
    pub environment: &'a Environment,
    /// Print JSON answers instead of text.
    pub json: bool,
}

impl Session<'_> {
    /// Writes `value` as pretty JSON with `--json`, else what `render` makes of it.
    fn respond(
        &self,
        out: &mut Output<'_>,
        value: &Value,
        render: impl FnOnce(&Value) -> String,
    ) -> Result<(), FleetError> {
        if self.json {
            write_json(out, value)
        } else {
            write_text(out, &render(value))
        }
    }
}

/// Runs one parsed command.
pub async fn dispatch(
    session: &Session<'_>,
    command: Command,
    out: &mut Output<'_>,
) -> Result<Outcome, FleetError> {
    match command {
        Command::Queues => queues(session, out).await,
        Command::Dlq(DlqCommand::List { queue, limit }) => {
            dlq_list(session, queue.logical_name(), limit, out).await
        }
        Command::Dlq(DlqCommand::Show { queue, message_id }) => {
            dlq_show(session, queue.logical_name(), &message_id, out).await
        }
        Command::Dlq(DlqCommand::Redrive {
            queue,
            selector,
            rate_per_sec,
            no_wait,
        }) => {
            dlq_redrive(
                session,
                queue.logical_name(),
                &selector,
                rate_per_sec,
                no_wait,
                out,
            )
            .await
        }
        Command::Dlq(DlqCommand::Discard {
            queue,
            selector,
            yes,
        }) => dlq_discard(session, queue.logical_name(), &selector, yes, out).await,
        Command::Stuck(StuckArgs {
            action: None,
            queued_for_secs,
        }) => stuck(session, queued_for_secs, out).await,
        Command::Stuck(StuckArgs {
            action:
                Some(StuckCommand::Requeue {
                    all,
                    jobs,
                    queued_for_secs,
                }),
            ..
        }) => stuck_requeue(session, all, &jobs, queued_for_secs, out).await,
        Command::Failures { since_secs } => failures(session, since_secs, out).await,
        Command::Files(FilesCommand::List {
            status,
            limit,
            cursor,
        }) => files_list(session, status, limit, cursor, out).await,
        Command::Files(FilesCommand::Reprocess { ids }) => {
            files_reprocess(session, &ids, out).await
        }
        Command::Executions(ExecutionsCommand::List {
            status,
            limit,
            cursor,
            all_orgs,
        }) => executions_list(session, status, limit, cursor, all_orgs, out).await,
        Command::Executions(ExecutionsCommand::Show { id }) => {
            executions_show(session, id, out).await
        }
        Command::Executions(ExecutionsCommand::Trace { id }) => {
            executions_trace(session, id, out).await
        }
        Command::Executions(ExecutionsCommand::Cancel { id }) => {
            executions_cancel(session, id, out).await
        }
        Command::Schedules(SchedulesCommand::List) => schedules_list(session, out).await,
        Command::Schedules(SchedulesCommand::Add {
            name,
            cron,
            action,
            org,
            limit,
            engine,
            extractor_version,
            disabled,
        }) => {
            let new_schedule = NewSchedule {
                name,
                cron,
                action,
                org,
                limit,
                engine,
                extractor_version,
                enabled: !disabled,
            };
            schedules_add(session, &new_schedule, out).await
        }
        Command::Schedules(SchedulesCommand::Remove { id }) => {
            schedules_remove(session, &id, out).await
        }
        Command::Schedules(SchedulesCommand::RunNow { id }) => {
            schedules_run_now(session, &id, out).await
        }
        Command::Tasks(TasksCommand::Show { id, wait }) => {
            tasks_show(session, &id, wait, out).await
        }
        Command::Audit { limit } => audit(session, limit, out).await,
    }
}

/// `fleetctl queues`: `GET /v1/ops/queues`.
pub async fn queues(session: &Session<'_>, out: &mut Output<'_>) -> Result<Outcome, FleetError> {
    let response = session.client.get(&["v1", "ops", "queues"], &[]).await?;
    session.respond(out, &response, render::queues_table)?;
    Ok(Outcome::Success)
}

/// `fleetctl dlq list`: peeks `GET /v1/ops/dlq/{queue}`.
pub async fn dlq_list(
    session: &Session<'_>,
    queue: &str,
    limit: Option<u32>,
    out: &mut Output<'_>,
) -> Result<Outcome, FleetError> {
    let query = optional_query(&[("limit", limit.map(|limit| limit.to_string()))]);
    let response = session
        .client
        .get(&["v1", "ops", "dlq", queue], &query)
        .await?;
    session.respond(out, &response, |response| {
        render::dlq_messages_table(response, queue)
    })?;
    Ok(Outcome::Success)
}

/// `fleetctl dlq show`: `GET /v1/ops/dlq/{queue}/messages/{id}`, the id possibly a prefix.
pub async fn dlq_show(
    session: &Session<'_>,
    queue: &str,
    message_id: &str,
    out: &mut Output<'_>,
) -> Result<Outcome, FleetError> {
    let full_ids = resolve_message_ids(session.client, queue, &[message_id.to_owned()]).await?;
    let full_id = full_ids.first().map(String::as_str).unwrap_or(message_id);
    let message = session
        .client
        .get(&["v1", "ops", "dlq", queue, "messages", full_id], &[])
        .await?;
    session.respond(out, &message, render::dlq_message_detail)?;
    Ok(Outcome::Success)
}

/// `fleetctl dlq redrive`: `POST /v1/ops/dlq/{queue}/redrive`, then follows the task.
pub async fn dlq_redrive(
    session: &Session<'_>,
    queue: &str,
    selector: &Selector,
    rate_per_sec: Option<u32>,
    no_wait: bool,
    out: &mut Output<'_>,
) -> Result<Outcome, FleetError> {
    let message_ids = resolve_message_ids(session.client, queue, &selector.message_ids).await?;
    let mut body = selector_body(selector, message_ids);
    if let Some(rate_per_sec) = rate_per_sec {
        body["rate_per_sec"] = json!(rate_per_sec);
    }
    let response = session
        .client
        .post(&["v1", "ops", "dlq", queue, "redrive"], &body)
        .await?;
    let task = task_of(response);
    if no_wait {
        if session.json {
            write_json(out, &task)?;
        } else {
            write_text(out, &render::task_detail(&task))?;
            if let Some(task_id) = id_field(&task, "id") {
                write_text(
                    out,
                    &format!("(follow it with: fleetctl tasks show {task_id} --wait)"),
                )?;
            }
        }
        return Ok(Outcome::Success);
    }
    finish_following(session, task, queue, out).await
}

/// `fleetctl tasks show`: `GET /v1/ops/tasks/{id}`, followed to its end with `--wait`.
pub async fn tasks_show(
    session: &Session<'_>,
    task_id: &str,
    wait: bool,
    out: &mut Output<'_>,
) -> Result<Outcome, FleetError> {
    let task = task_of(
        session
            .client
            .get(&["v1", "ops", "tasks", task_id], &[])
            .await?,
    );
    if !wait {
        session.respond(out, &task, render::task_detail)?;
        return Ok(Outcome::Success);
    }
    let queue = string_field(&task, "queue").unwrap_or("?").to_owned();
    finish_following(session, task, &queue, out).await
}

/// Follows `task` to its end, then writes it (`--json`) or the summary line; fails when
/// the task failed or failed to move any message.
async fn finish_following(
    session: &Session<'_>,
    task: Value,
    queue: &str,
    out: &mut Output<'_>,
) -> Result<Outcome, FleetError> {
    let finished_task = follow_task(session, task, queue).await?;
    if session.json {
        write_json(out, &finished_task)?;
    } else {
        write_text(out, &render::redrive_summary(&finished_task, queue))?;
    }
    let succeeded = string_field(&finished_task, "status") == Some("succeeded");
    let failed_count = count_field(&finished_task, "failed").unwrap_or(0);
    Ok(if succeeded && failed_count == 0 {
        Outcome::Success
    } else {
        Outcome::Failure
    })
}

/// Polls `GET /v1/ops/tasks/{id}` every poll interval until the task has succeeded or
/// failed, showing `moved` against `total` on a progress bar (a spinner while `total` is
/// unknown; nothing with `--json`). Returns the last task.
pub async fn follow_task(
    session: &Session<'_>,
    task: Value,
    queue: &str,
) -> Result<Value, FleetError> {
    let task_id = id_field(&task, "id").ok_or_else(|| FleetError::InvalidResponse {
        status: 202,
        detail: format!("a task without an id: {task}"),
    })?;
    let bar = if session.json {
        indicatif::ProgressBar::hidden()
    } else {
        session
            .environment
            .progress_bar(format!("redrive {queue}-dlq → {queue}"))
    };
    let mut current_task = task;
    loop {
        if let Some(total) = count_field(&current_task, "total") {
            set_bar_length(&bar, total);
        }
        bar.set_position(count_field(&current_task, "moved").unwrap_or(0));
        let failed_count = count_field(&current_task, "failed").unwrap_or(0);
        if failed_count > 0 {
            bar.set_message(format!("({failed_count} failed)"));
        }
        if matches!(
            string_field(&current_task, "status"),
            Some("succeeded" | "failed")
        ) {
            break;
        }
        tokio::time::sleep(session.environment.poll_interval).await;
        current_task = match session
            .client
            .get(&["v1", "ops", "tasks", &task_id], &[])
            .await
        {
            Ok(response) => task_of(response),
            Err(error) => {
                bar.abandon();
                return Err(error);
            }
        };
    }
    bar.finish_and_clear();
    Ok(current_task)
}

/// `fleetctl dlq discard`: asks, then `POST /v1/ops/dlq/{queue}/discard` with
/// `"confirm": true`.
pub async fn dlq_discard(
    session: &Session<'_>,
    queue: &str,
    selector: &Selector,
    yes: bool,
    out: &mut Output<'_>,
) -> Result<Outcome, FleetError> {
    if !yes && !session.environment.can_confirm() {
        return Err(FleetError::Refused(format!(
            "refusing to discard from {queue}-dlq without confirmation: stdin is not a terminal; \
             pass --yes to discard anyway"
        )));
    }
    let message_ids = resolve_message_ids(session.client, queue, &selector.message_ids).await?;
    if !yes {
        let question = discard_question(session.client, queue, selector, &message_ids).await?;
        if !session.environment.confirm(&question)? {
            if !session.json {
                write_text(out, "aborted: nothing discarded")?;
            }
            return Ok(Outcome::Failure);
        }
    }
    let mut body = selector_body(selector, message_ids);
    body["confirm"] = json!(true);
    let response = session
        .client
        .post(&["v1", "ops", "dlq", queue, "discard"], &body)
        .await?;
    session.respond(out, &response, |response| {
        format!(
            "discarded {} from {queue}-dlq",
            render::counted_field(response, "discarded", "message")
        )
    })?;
    Ok(Outcome::Success)
}

/// The question a discard asks: `Discard 2 messages from file-jobs-dlq? [y/N]`.
pub async fn discard_question(
    client: &Client,
    queue: &str,
    selector: &Selector,
    message_ids: &[String],
) -> Result<String, FleetError> {
    let how_many = discard_count(client, queue, selector, message_ids).await?;
    Ok(format!("Discard {how_many} from {queue}-dlq? [y/N]"))
}

/// How many messages a discard would delete (`2 messages`, `all 5 messages`, `at least 3
/// messages`): the ids given, the DLQ's depth for `--all`, or the matches among one peek
/// for a filter.
async fn discard_count(
    client: &Client,
    queue: &str,
    selector: &Selector,
    message_ids: &[String],
) -> Result<String, FleetError> {
    if !message_ids.is_empty() {
        return Ok(render::counted(message_ids.len() as u64, "message"));
    }
    if selector.all {
        let response = client.get(&["v1", "ops", "queues"], &[]).await?;
        let depth = list_field(&response, "queues")
            .iter()
            .find(|entry| string_field(entry, "queue") == Some(queue))
            .and_then(|entry| entry.get("dlq"))
            .map(|dlq| {
                count_field(dlq, "visible").unwrap_or(0)
                    + count_field(dlq, "in_flight").unwrap_or(0)
            });
        return Ok(match depth {
            Some(depth) => format!("all {}", render::counted(depth, "message")),
            None => "all messages".to_owned(),
        });
    }
    let response = client.get(&["v1", "ops", "dlq", queue], &[]).await?;
    let filter = filter_object(selector);
    let matching = list_field(&response, "messages")
        .iter()
        .filter(|message| {
            filter
                .iter()
                .all(|(key, wanted)| message.get(key) == Some(wanted))
        })
        .count();
    let truncated = response
        .get("truncated")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let matching_messages = render::counted(matching as u64, "message");
    Ok(if truncated {
        format!("at least {matching_messages}")
    } else {
        matching_messages
    })
}

/// Full message ids for what was typed: a full id (a UUID) as it is, anything shorter
/// matched as a prefix against one peek of the DLQ.
async fn resolve_message_ids(
    client: &Client,
    queue: &str,
    typed_ids: &[String],
) -> Result<Vec<String>, FleetError> {
    let mut peeked_ids: Option<Vec<String>> = None;
    let mut full_ids = Vec::with_capacity(typed_ids.len());
    for typed_id in typed_ids {
        if Uuid::parse_str(typed_id).is_ok() {
            full_ids.push(typed_id.clone());
            continue;
        }
        if peeked_ids.is_none() {
            let response = client.get(&["v1", "ops", "dlq", queue], &[]).await?;
            peeked_ids = Some(
                list_field(&response, "messages")
                    .iter()
                    .filter_map(|message| string_field(message, "message_id").map(str::to_owned))
                    .collect(),
            );
        }
        let candidates = peeked_ids.as_deref().unwrap_or_default();
        if candidates.contains(typed_id) {
            full_ids.push(typed_id.clone());
            continue;
        }
        let matches: Vec<&String> = candidates
            .iter()
            .filter(|candidate| candidate.starts_with(typed_id.as_str()))
            .collect();
        match matches.as_slice() {
            [only] => full_ids.push((*only).clone()),
            [] => {
                return Err(FleetError::Lookup(format!(
                    "no message in {queue}-dlq has an id starting with {typed_id:?} \
                     (among the {} messages peeked; pass the full id from `dlq list --json`)",
                    candidates.len()
                )));
            }
            several => {
                return Err(FleetError::Lookup(format!(
                    "{typed_id:?} matches {} messages in {queue}-dlq; type more of the id",
                    several.len()
                )));
            }
        }
    }
    Ok(full_ids)
}

/// The selector of a redrive or discard body.
fn selector_body(selector: &Selector, message_ids: Vec<String>) -> Value {
    if selector.all {
        return json!({"all": true});
    }
    if !message_ids.is_empty() {
        return json!({"message_ids": message_ids});
    }
    json!({"filter": Value::Object(filter_object(selector))})
}

/// `{"kind", "error_code", "org_id"}`, with only the fields given.
fn filter_object(selector: &Selector) -> Map<String, Value> {
    let mut filter = Map::new();
    if let Some(kind) = &selector.kind {
        filter.insert("kind".to_owned(), json!(kind));
    }
    if let Some(error_code) = &selector.error_code {
        filter.insert("error_code".to_owned(), json!(error_code));
    }
    if let Some(org) = selector.org {
        filter.insert("org_id".to_owned(), json!(org.to_string()));
    }
    filter
}

/// The task inside `{"task": …}`, or the answer itself when it is the bare task.
fn task_of(response: Value) -> Value {
    match response {
        Value::Object(mut object) if object.get("task").is_some_and(Value::is_object) => {
            object.remove("task").unwrap_or(Value::Null)
        }
        other => other,
    }
}

/// `fleetctl stuck`: `GET /v1/ops/stuck`.
pub async fn stuck(
    session: &Session<'_>,
    queued_for_secs: Option<u64>,
    out: &mut Output<'_>,
) -> Result<Outcome, FleetError> {
    let query = optional_query(&[(
        "queued_for_secs",
        queued_for_secs.map(|secs| secs.to_string()),
    )]);
    let response = session.client.get(&["v1", "ops", "stuck"], &query).await?;
    session.respond(out, &response, render::stuck_table)?;
    Ok(Outcome::Success)
}

/// `fleetctl stuck requeue`: `POST /v1/ops/stuck/requeue`.
pub async fn stuck_requeue(
    session: &Session<'_>,
    all: bool,
    jobs: &[JobRef],
    queued_for_secs: Option<u64>,
    out: &mut Output<'_>,
) -> Result<Outcome, FleetError> {
    let body = if all {
        let mut body = json!({"all": true});
        if let Some(queued_for_secs) = queued_for_secs {
            body["queued_for_secs"] = json!(queued_for_secs);
        }
        body
    } else {
        let jobs: Vec<Value> = jobs
            .iter()
            .map(|job| json!({"kind": job.kind, "id": job.id.to_string()}))
            .collect();
        json!({"jobs": jobs})
    };
    let response = session
        .client
        .post(&["v1", "ops", "stuck", "requeue"], &body)
        .await?;
    session.respond(out, &response, |response| {
        let requeued = format!(
            "requeued {}",
            render::counted_field(response, "requeued", "job")
        );
        // Jobs whose worker died on their last allowed receive: SQS has their message.
        match response["dead_lettered"].as_u64() {
            Some(dead) if dead > 0 => format!(
                "{requeued}; {} dead-lettered (last attempt lost; redrive them from the DLQ)",
                render::counted_field(response, "dead_lettered", "job")
            ),
            _ => requeued,
        }
    })?;
    Ok(Outcome::Success)
}

/// `fleetctl failures`: `GET /v1/ops/failures`.
pub async fn failures(
    session: &Session<'_>,
    since_secs: Option<u64>,
    out: &mut Output<'_>,
) -> Result<Outcome, FleetError> {
    let query = optional_query(&[("since_secs", since_secs.map(|secs| secs.to_string()))]);
    let response = session
        .client
        .get(&["v1", "ops", "failures"], &query)
        .await?;
    session.respond(out, &response, render::failures_table)?;
    Ok(Outcome::Success)
}

/// `fleetctl files list`: `GET /v1/files` (the token's org).
pub async fn files_list(
    session: &Session<'_>,
    status: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
    out: &mut Output<'_>,
) -> Result<Outcome, FleetError> {
    let query = optional_query(&[
        ("status", status),
        ("limit", limit.map(|limit| limit.to_string())),
        ("cursor", cursor),
    ]);
    let response = session.client.get(&["v1", "files"], &query).await?;
    session.respond(out, &response, render::files_table)?;
    Ok(Outcome::Success)
}

/// `fleetctl files reprocess`: `POST /v1/files/{id}/reprocess` for each id. A file the API
/// refuses (409 `not_reprocessable`, 404) does not stop the others; the command then fails.
pub async fn files_reprocess(
    session: &Session<'_>,
    ids: &[Uuid],
    out: &mut Output<'_>,
) -> Result<Outcome, FleetError> {
    let mut results = Vec::with_capacity(ids.len());
    let mut rows = Vec::with_capacity(ids.len());
    let mut any_refused = false;
    for id in ids {
        let file_id = id.to_string();
        match session
            .client
            .post_empty(&["v1", "files", &file_id, "reprocess"])
            .await
        {
            Ok(file) => {
                rows.push(vec![
                    file_id.clone(),
                    text_field(&file, "name"),
                    format!("reprocessing (status {})", text_field(&file, "status")),
                ]);
                results.push(json!({"id": file_id, "file": file}));
            }
            Err(FleetError::Api(api_error)) => {
                any_refused = true;
                rows.push(vec![file_id.clone(), "-".to_owned(), api_error.to_string()]);
                results.push(json!({"id": file_id, "error": {
                    "status": api_error.status, "code": api_error.code, "message": api_error.message,
                }}));
            }
            Err(other) => return Err(other),
        }
    }
    if session.json {
        write_json(out, &Value::Array(results))?;
    } else {
        write_text(out, &render::table(&["FILE", "NAME", "RESULT"], rows))?;
    }
    Ok(if any_refused {
        Outcome::Failure
    } else {
        Outcome::Success
    })
}

/// `fleetctl executions list`: `GET /v1/executions`, or `GET /v1/ops/executions` for every org.
pub async fn executions_list(
    session: &Session<'_>,
    status: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
    all_orgs: bool,
    out: &mut Output<'_>,
) -> Result<Outcome, FleetError> {
    let query = optional_query(&[
        ("status", status),
        ("limit", limit.map(|limit| limit.to_string())),
        ("cursor", cursor),
    ]);
    let path: &[&str] = if all_orgs {
        &["v1", "ops", "executions"]
    } else {
        &["v1", "executions"]
    };
    let response = session.client.get(path, &query).await?;
    session.respond(out, &response, render::executions_table)?;
    Ok(Outcome::Success)
}

/// `fleetctl executions show`: `GET /v1/executions/{id}`.
pub async fn executions_show(
    session: &Session<'_>,
    id: Uuid,
    out: &mut Output<'_>,
) -> Result<Outcome, FleetError> {
    let execution = session
        .client
        .get(&["v1", "executions", &id.to_string()], &[])
        .await?;
    session.respond(out, &execution, render::execution_detail)?;
    Ok(Outcome::Success)
}

/// `fleetctl executions trace`: every page of `GET /v1/executions/{id}/trace`, following
/// `next_cursor`. With `--json` the pages are joined into one
/// `{"events": [...], "next_cursor": null}`.
pub async fn executions_trace(
    session: &Session<'_>,
    id: Uuid,
    out: &mut Output<'_>,
) -> Result<Outcome, FleetError> {
    let execution_id = id.to_string();
    let mut events: Vec<Value> = Vec::new();
    let mut after: Option<i64> = None;
    loop {
        let query = optional_query(&[("after", after.map(|cursor| cursor.to_string()))]);
        let page = session
            .client
            .get(&["v1", "executions", &execution_id, "trace"], &query)
            .await?;
        events.extend(list_field(&page, "events").iter().cloned());
        let next_cursor = page.get("next_cursor").and_then(Value::as_i64);
        match next_cursor {
            // A cursor that does not move forward would loop for ever: stop there.
            Some(cursor) if after.is_none_or(|previous| cursor > previous) => after = Some(cursor),
            _ => break,
        }
    }
    if session.json {
        write_json(out, &json!({"events": events, "next_cursor": null}))?;
    } else {
        write_text(out, &render::trace_table(&events))?;
    }
    Ok(Outcome::Success)
}

/// `fleetctl executions cancel`: `POST /v1/executions/{id}/cancel`.
pub async fn executions_cancel(
    session: &Session<'_>,
    id: Uuid,
    out: &mut Output<'_>,
) -> Result<Outcome, FleetError> {
    let execution = session
        .client
        .post_empty(&["v1", "executions", &id.to_string(), "cancel"])
        .await?;
    session.respond(out, &execution, |execution| {
        format!(
            "cancel requested for execution {id}: status {}, control {}",
            text_field(execution, "status"),
            text_field(execution, "control")
        )
    })?;
    Ok(Outcome::Success)
}

/// `fleetctl schedules list`: `GET /v1/ops/schedules`.
pub async fn schedules_list(
    session: &Session<'_>,
    out: &mut Output<'_>,
) -> Result<Outcome, FleetError> {
    let response = session.client.get(&["v1", "ops", "schedules"], &[]).await?;
    session.respond(out, &response, render::schedules_table)?;
    Ok(Outcome::Success)
}

/// The fields of `fleetctl schedules add`.
#[derive(Debug, Clone)]
pub struct NewSchedule {
    pub name: String,
    pub cron: String,
    pub action: ScheduleAction,
    pub org: Option<Uuid>,
    pub limit: Option<u32>,
    /// `reextract` only.
    pub engine: Option<String>,
    /// `reextract` only.
    pub extractor_version: Option<u32>,
    pub enabled: bool,
}

/// `fleetctl schedules add`: `POST /v1/ops/schedules`.
pub async fn schedules_add(
    session: &Session<'_>,
    new_schedule: &NewSchedule,
    out: &mut Output<'_>,
) -> Result<Outcome, FleetError> {
    let narrows_extraction =
        new_schedule.engine.is_some() || new_schedule.extractor_version.is_some();
    if narrows_extraction && new_schedule.action != ScheduleAction::Reextract {
        return Err(FleetError::Usage(
            "--engine and --extractor-version only apply to --action reextract".to_owned(),
        ));
    }
    let mut filter = Map::new();
    if let Some(org) = new_schedule.org {
        filter.insert("org_id".to_owned(), json!(org.to_string()));
    }
    if let Some(limit) = new_schedule.limit {
        filter.insert("limit".to_owned(), json!(limit));
    }
    if let Some(engine) = &new_schedule.engine {
        filter.insert("engine".to_owned(), json!(engine));
    }
    if let Some(version) = new_schedule.extractor_version {
        filter.insert("extractor_version".to_owned(), json!(version));
    }
    let body = json!({
        "name": new_schedule.name,
        "cron": new_schedule.cron,
        "action": new_schedule.action.api_name(),
        "filter": Value::Object(filter),
        "enabled": new_schedule.enabled,
    });
    let schedule = session
        .client
        .post(&["v1", "ops", "schedules"], &body)
        .await?;
    session.respond(out, &schedule, render::schedule_detail)?;
    Ok(Outcome::Success)
}

/// `fleetctl schedules remove`: `DELETE /v1/ops/schedules/{id}` (`--json` prints nothing:
/// the answer is a 204).
pub async fn schedules_remove(
    session: &Session<'_>,
    id: &str,
    out: &mut Output<'_>,
) -> Result<Outcome, FleetError> {
    let response = session
        .client
        .delete(&["v1", "ops", "schedules", id])
        .await?;
    if session.json {
        if !response.is_null() {
            write_json(out, &response)?;
        }
    } else {
        write_text(out, &format!("removed schedule {id}"))?;
    }
    Ok(Outcome::Success)
}

/// `fleetctl schedules run-now`: `POST /v1/ops/schedules/{id}/run`.
pub async fn schedules_run_now(
    session: &Session<'_>,
    id: &str,
    out: &mut Output<'_>,
) -> Result<Outcome, FleetError> {
    let response = session
        .client
        .post_empty(&["v1", "ops", "schedules", id, "run"])
        .await?;
    session.respond(out, &response, |response| {
        render::fire_line(response.get("fire").unwrap_or(response))
    })?;
    Ok(Outcome::Success)
}

/// `fleetctl audit`: `GET /v1/ops/audit`.
pub async fn audit(
    session: &Session<'_>,
    limit: Option<u32>,
    out: &mut Output<'_>,
) -> Result<Outcome, FleetError> {
    let query = optional_query(&[("limit", limit.map(|limit| limit.to_string()))]);
    let response = session.client.get(&["v1", "ops", "audit"], &query).await?;
    session.respond(out, &response, render::audit_table)?;
    Ok(Outcome::Success)
}

/// Query pairs for the values that are set (the API rejects unknown or empty parameters).
fn optional_query<'a>(pairs: &[(&'a str, Option<String>)]) -> Vec<(&'a str, String)> {
    pairs
        .iter()
        .filter_map(|(key, value)| value.clone().map(|value| (*key, value)))
        .collect()
}

fn write_json(out: &mut Output<'_>, value: &Value) -> Result<(), FleetError> {
    let pretty = serde_json::to_string_pretty(value).map_err(std::io::Error::other)?;
    writeln!(out, "{pretty}")?;
    Ok(())
}

fn write_text(out: &mut Output<'_>, text: &str) -> Result<(), FleetError> {
    writeln!(out, "{text}")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn selector(all: bool, message_ids: &[&str], kind: Option<&str>) -> Selector {
        Selector {
            all,
            message_ids: message_ids.iter().map(|id| (*id).to_owned()).collect(),
            kind: kind.map(str::to_owned),
            error_code: None,
            org: None,
        }
    }

    #[test]
    fn selector_bodies_follow_the_contract() {
        assert_eq!(
            selector_body(&selector(true, &[], None), vec![]),
            json!({"all": true})
        );
        assert_eq!(
            selector_body(&selector(false, &["a"], None), vec!["a-full".to_owned()]),
            json!({"message_ids": ["a-full"]})
        );
        let mut filtered = selector(false, &[], Some("file.process"));
        filtered.error_code = Some("s3_unavailable".to_owned());
        filtered.org = Some(Uuid::nil());
        assert_eq!(
            selector_body(&filtered, vec![]),
            json!({"filter": {"kind": "file.process", "error_code": "s3_unavailable",
                "org_id": "00000000-0000-0000-0000-000000000000"}})
        );
    }

    #[test]
    fn task_is_unwrapped_from_either_shape() {
        assert_eq!(task_of(json!({"task": {"id": "t"}})), json!({"id": "t"}));
        assert_eq!(
            task_of(json!({"id": "t", "status": "running"})),
            json!({"id": "t", "status": "running"})
        );
    }

    #[test]
    fn only_set_query_values_are_sent() {
        let query = optional_query(&[("status", None), ("limit", Some("5".to_owned()))]);
        assert_eq!(query, vec![("limit", "5".to_owned())]);
    }
}
