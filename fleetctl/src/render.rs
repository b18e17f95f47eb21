//! Text output: tables, key/value views, and duration, time, size and id formatting. Every
//! function returns a `String` without a trailing newline and never fails: a missing field
//! shows as `-`.

use comfy_table::{ContentArrangement, Table, presets};
use serde_json::Value;

use crate::fields::{
    bool_field, count_field, display_value, list_field, number_field, string_field, text_field,
};

/// How many characters of an id tables show.
pub const SHORT_ID_CHARS: usize = 8;
/// How many characters of a trace event's data the trace table shows.
pub const TRACE_DATA_CHARS: usize = 80;

/// A plain table: upper-case headers, columns two spaces apart, no borders, no wrapping
/// (ids stay whole for copy and paste) and no trailing spaces.
pub fn table(headers: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut rendered = Table::new();
    rendered
        .load_style(presets::NOTHING)
        .force_no_tty()
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(headers.to_vec())
        .add_rows(rows);
    let last_column = headers.len().saturating_sub(1);
    for (index, column) in rendered.column_iter_mut().enumerate() {
        let right_padding = if index == last_column { 0 } else { 2 };
        column.set_padding((0, right_padding));
    }
    rendered.trim_fmt()
}

/// Aligned `key  value` lines; a value with several lines has its later lines indented
/// under its first.
pub fn key_values(pairs: &[(String, String)]) -> String {
    let key_width = pairs
        .iter()
        .map(|(key, _)| key.chars().count())
        .max()
        .unwrap_or(0);
    let indent = " ".repeat(key_width + 2);
    pairs
        .iter()
        .map(|(key, value)| {
            let indented_value = value
                .lines()
                .collect::<Vec<_>>()
                .join(&format!("\n{indent}"));
            format!("{key:<key_width$}  {indented_value}")
                .trim_end()
                .to_owned()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every field of a JSON object as key/value lines: the keys of `order` first (shown even
/// when missing, as `-`), then any others the API added, in their order.
pub fn detail(value: &Value, order: &[&str]) -> String {
    let mut pairs: Vec<(String, String)> = order
        .iter()
        .map(|key| ((*key).to_owned(), text_field(value, key)))
        .collect();
    if let Some(object) = value.as_object() {
        for (key, field) in object {
            if !order.contains(&key.as_str()) {
                pairs.push((key.clone(), display_value(field)));
            }
        }
    }
    key_values(&pairs)
}

/// An age in seconds as people read it: `42s`, `3m 5s`, `2h 5m`, `3d 4h`; `-` for none.
pub fn format_age(seconds: Option<f64>) -> String {
    let Some(seconds) = seconds.filter(|seconds| seconds.is_finite()) else {
        return "-".to_owned();
    };
    let whole_seconds = seconds.max(0.0).floor() as u64;
    let (days, hours, minutes, secs) = (
        whole_seconds / 86_400,
        whole_seconds % 86_400 / 3_600,
        whole_seconds % 3_600 / 60,
        whole_seconds % 60,
    );
    if days > 0 {
        format!("{days}d {hours}h")
    } else if hours > 0 {
        format!("{hours}h {minutes}m")
    } else if minutes > 0 {
        format!("{minutes}m {secs}s")
    } else {
        format!("{secs}s")
    }
}

/// An RFC 3339 time as `2026-11-23 10:05:00` (UTC, the API's zone; another offset is kept),
/// without fractional seconds; `-` for none; text in another shape as it is.
pub fn format_time(time: Option<&str>) -> String {
    let Some(time) = time else {
        return "-".to_owned();
    };
    let bytes = time.as_bytes();
    let looks_like_rfc3339 = bytes.len() >= 19
        && time.is_char_boundary(19)
        && bytes[4] == b'-'
        && bytes[10].eq_ignore_ascii_case(&b'T')
        && bytes[13] == b':';
    if !looks_like_rfc3339 {
        return time.to_owned();
    }
    let (date_and_time, rest) = time.split_at(19);
    let offset =
        rest.trim_start_matches(|character: char| character == '.' || character.is_ascii_digit());
    let shown_offset = match offset {
        "" | "Z" | "z" | "+00:00" => String::new(),
        other => format!(" {other}"),
    };
    format!(
        "{} {}{shown_offset}",
        &date_and_time[..10],
        &date_and_time[11..]
    )
}

/// A time field of `value`, formatted.
pub fn time_field(value: &Value, key: &str) -> String {
    format_time(string_field(value, key))
}

/// The first [`SHORT_ID_CHARS`] characters of an id.
pub fn short_id(id: &str) -> String {
    id.chars().take(SHORT_ID_CHARS).collect()
}

/// An id field, shortened; `-` for none.
pub fn short_id_field(value: &Value, key: &str) -> String {
    string_field(value, key)
        .map(short_id)
        .unwrap_or_else(|| "-".to_owned())
}

/// At most `max_chars` characters, the last one `…` when cut.
pub fn truncate(text: &str, max_chars: usize) -> String {
    if text.chars().count() <= max_chars {
        return text.to_owned();
    }
    let kept: String = text.chars().take(max_chars.saturating_sub(1)).collect();
    format!("{kept}…")
}

/// A size in bytes: `512 B`, `1.5 KiB`, `3.2 MiB`; `-` for none.
pub fn format_bytes(bytes: Option<u64>) -> String {
    let Some(bytes) = bytes else {
        return "-".to_owned();
    };
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut size = bytes as f64 / 1024.0;
    let mut unit_index = 0;
    while size >= 1024.0 && unit_index < UNITS.len() - 1 {
        size /= 1024.0;
        unit_index += 1;
    }
    format!("{size:.1} {}", UNITS[unit_index])
}

/// A cost in US dollars with four decimals; `-` for none.
pub fn format_cost(cost_usd: Option<f64>) -> String {
    cost_usd
        .map(|cost| format!("${cost:.4}"))
        .unwrap_or_else(|| "-".to_owned())
}

/// `1 message`, `3 messages`: `count` and a noun made plural with an `s` unless it is 1.
pub fn counted(count: u64, noun: &str) -> String {
    if count == 1 {
        format!("{count} {noun}")
    } else {
        format!("{count} {noun}s")
    }
}

/// A count field of `value` as `counted` text, `- messages` when missing.
pub fn counted_field(value: &Value, key: &str, noun: &str) -> String {
    match count_field(value, key) {
        Some(count) => counted(count, noun),
        None => format!("- {noun}s"),
    }
}

/// A count field, or `-`.
fn count_text(value: &Value, key: &str) -> String {
    count_field(value, key)
        .map(|count| count.to_string())
        .unwrap_or_else(|| "-".to_owned())
}

/// A boolean as `yes` or `no`; `-` for none.
fn yes_no(value: Option<bool>) -> String {
    match value {
        Some(true) => "yes".to_owned(),
        Some(false) => "no".to_owned(),
        None => "-".to_owned(),
    }
}

/// `class/code` of a failure, either alone when the other is missing, `-` for none.
fn error_text(value: &Value) -> String {
    match (
        string_field(value, "error_class"),
        string_field(value, "error_code"),
    ) {
        (Some(class), Some(code)) => format!("{class}/{code}"),
        (Some(only), None) | (None, Some(only)) => only.to_owned(),
        (None, None) => "-".to_owned(),
    }
}

/// `GET /v1/ops/queues`: one row per queue.
pub fn queues_table(response: &Value) -> String {
    let headers = [
        "QUEUE",
        "KIND",
        "VISIBLE",
        "IN FLIGHT",
        "DELAYED",
        "OLDEST AGE",
        "DLQ",
    ];
    list_table(response, "queues", "no queues", &headers, |queue| {
        let dlq_depth = queue
            .get("dlq")
            .filter(|dlq| dlq.is_object())
            .map(|dlq| {
                let depth = count_field(dlq, "visible").unwrap_or(0)
                    + count_field(dlq, "in_flight").unwrap_or(0);
                depth.to_string()
            })
            .unwrap_or_else(|| "-".to_owned());
        vec![
            text_field(queue, "queue"),
            text_field(queue, "kind"),
            count_text(queue, "visible"),
            count_text(queue, "in_flight"),
            count_text(queue, "delayed"),
            format_age(number_field(queue, "oldest_age_secs")),
            dlq_depth,
        ]
    })
}

/// `GET /v1/ops/dlq/{queue}`: one row per peeked message, and a footer when the peek
/// stopped at its limit.
pub fn dlq_messages_table(response: &Value, queue: &str) -> String {
    let messages = list_field(response, "messages");
    let truncated = bool_field(response, "truncated").unwrap_or(false);
    if messages.is_empty() {
        return format!("no messages in {queue}-dlq");
    }
    let rows = messages
        .iter()
        .map(|message| {
            let kind = if bool_field(message, "poison").unwrap_or(false) {
                "(poison)".to_owned()
            } else {
                text_field(message, "kind")
            };
            vec![
                short_id_field(message, "message_id"),
                kind,
                short_id_field(message, "job_id"),
                short_id_field(message, "org_id"),
                text_field(message, "error_class"),
                text_field(message, "error_code"),
                count_text(message, "receive_count"),
                time_field(message, "first_seen"),
                time_field(message, "last_seen"),
            ]
        })
        .collect();
    let rendered = table(
        &[
            "MESSAGE",
            "KIND",
            "JOB",
            "ORG",
            "ERROR CLASS",
            "ERROR CODE",
            "RECEIVES",
            "FIRST SEEN",
            "LAST SEEN",
        ],
        rows,
    );
    if truncated {
        format!(
            "{rendered}\n(showing the first {} messages of {queue}-dlq; there are more, raise --limit)",
            messages.len()
        )
    } else {
        rendered
    }
}

/// `GET /v1/ops/dlq/{queue}/messages/{id}`: every field; a JSON body pretty-printed.
pub fn dlq_message_detail(message: &Value) -> String {
    let mut shown = message.clone();
    if let Some(body) = string_field(message, "body")
        && let Ok(parsed_body) = serde_json::from_str::<Value>(body)
        && let Ok(pretty_body) = serde_json::to_string_pretty(&parsed_body)
    {
        shown["body"] = Value::String(pretty_body);
    }
    detail(
        &shown,
        &[
            "message_id",
            "kind",
            "job_id",
            "org_id",
            "status",
            "poison",
            "error_class",
            "error_code",
            "attempts",
            "receive_count",
            "first_seen",
            "last_seen",
            "last_error",
            "body",
        ],
    )
}

/// A redrive task (`POST …/redrive`, `GET /v1/ops/tasks/{id}`): every field.
pub fn task_detail(task: &Value) -> String {
    detail(
        task,
        &[
            "id",
            "action",
            "queue",
            "status",
            "method",
            "requested_by",
            "selector",
            "total",
            "moved",
            "failed",
            "error",
            "created_at",
            "finished_at",
        ],
    )
}

/// The line a finished redrive ends with:
/// `moved 12 of 12 messages from file-jobs-dlq to file-jobs (move_task)`, then what failed.
pub fn redrive_summary(task: &Value, queue: &str) -> String {
    let moved = count_field(task, "moved").unwrap_or(0);
    let failed = count_field(task, "failed").unwrap_or(0);
    let total = count_field(task, "total").unwrap_or(moved + failed);
    let queue = string_field(task, "queue").unwrap_or(queue);
    let method = string_field(task, "method").unwrap_or("unknown method");
    let mut summary =
        format!("moved {moved} of {total} messages from {queue}-dlq to {queue} ({method})");
    if failed > 0 {
        summary.push_str(&format!(", {failed} failed"));
    }
    if string_field(task, "status") == Some("failed") {
        let reason = string_field(task, "error").unwrap_or("no error given");
        summary.push_str(&format!("\nredrive failed: {reason}"));
    }
    summary
}

/// `GET /v1/files`: one row per file, and how to get the next page.
pub fn files_table(response: &Value) -> String {
    let headers = [
        "ID", "NAME", "STATUS", "STAGE", "ATTEMPTS", "ERROR", "SIZE", "UPDATED",
    ];
    let rendered = list_table(response, "files", "no files", &headers, |file| {
        vec![
            text_field(file, "id"),
            truncate(&text_field(file, "name"), 40),
            text_field(file, "status"),
            text_field(file, "stage"),
            count_text(file, "attempts"),
            error_text(file),
            format_bytes(count_field(file, "size_bytes")),
            time_field(file, "updated_at"),
        ]
    });
    with_next_page_hint(rendered, response, "files list")
}

/// `GET /v1/executions` or `GET /v1/ops/executions`: one row per execution, with an ORG
/// column when the answer carries orgs (the fleet-wide route).
pub fn executions_table(response: &Value) -> String {
    let executions = list_field(response, "executions");
    if executions.is_empty() {
        return "no executions".to_owned();
    }
    let with_org = executions
        .iter()
        .any(|execution| execution.get("org_id").is_some());
    let rows = executions
        .iter()
        .map(|execution| {
            let mut row = vec![text_field(execution, "id")];
            if with_org {
                row.push(short_id_field(execution, "org_id"));
            }
            row.extend([
                text_field(execution, "status"),
                count_text(execution, "step"),
                format!(
                    "{}/{}",
                    count_text(execution, "tokens_in"),
                    count_text(execution, "tokens_out")
                ),
                format_cost(number_field(execution, "cost_usd")),
                short_id_field(execution, "node_id"),
                time_field(execution, "updated_at"),
            ]);
            row
        })
        .collect();
    let mut headers = vec!["ID"];
    if with_org {
        headers.push("ORG");
    }
    headers.extend(["STATUS", "STEP", "TOKENS IN/OUT", "COST", "NODE", "UPDATED"]);
    let rendered = table(&headers, rows);
    with_next_page_hint(rendered, response, "executions list")
}

/// `GET /v1/executions/{id}`: every field.
pub fn execution_detail(execution: &Value) -> String {
    detail(
        execution,
        &[
            "id",
            "node_id",
            "model",
            "status",
            "control",
            "step",
            "tokens_in",
            "tokens_out",
            "cost_usd",
            "attempts",
            "result",
            "error_code",
            "error_message",
            "created_at",
            "updated_at",
            "pending_inputs",
        ],
    )
}

/// The events of `GET /v1/executions/{id}/trace`, every page: data as compact JSON cut to
/// [`TRACE_DATA_CHARS`].
pub fn trace_table(events: &[Value]) -> String {
    if events.is_empty() {
        return "no events".to_owned();
    }
    let rows = events
        .iter()
        .map(|event| {
            let data = event
                .get("data")
                .map(display_value)
                .unwrap_or_else(|| "-".to_owned());
            vec![
                text_field(event, "id"),
                text_field(event, "step"),
                text_field(event, "kind"),
                truncate(&data, TRACE_DATA_CHARS),
                time_field(event, "created_at"),
            ]
        })
        .collect();
    table(&["ID", "STEP", "KIND", "DATA", "TIME"], rows)
}

/// `GET /v1/ops/schedules`: one row per schedule.
pub fn schedules_table(response: &Value) -> String {
    let headers = [
        "ID",
        "NAME",
        "CRON",
        "ACTION",
        "ENABLED",
        "FILTER",
        "NEXT FIRE",
        "LAST FIRE",
    ];
    list_table(
        response,
        "schedules",
        "no schedules",
        &headers,
        |schedule| {
            let last_fire = schedule
                .get("last_fire")
                .filter(|fire| fire.is_object())
                .map(|fire| {
                    format!(
                        "{} ({} affected)",
                        time_field(fire, "fired_at"),
                        count_text(fire, "affected")
                    )
                })
                .unwrap_or_else(|| "-".to_owned());
            vec![
                text_field(schedule, "id"),
                text_field(schedule, "name"),
                text_field(schedule, "cron"),
                text_field(schedule, "action"),
                yes_no(bool_field(schedule, "enabled")),
                text_field(schedule, "filter"),
                time_field(schedule, "next_fire_at"),
                last_fire,
            ]
        },
    )
}

/// A schedule: every field.
pub fn schedule_detail(schedule: &Value) -> String {
    detail(
        schedule,
        &[
            "id",
            "name",
            "cron",
            "action",
            "filter",
            "enabled",
            "created_by",
            "created_at",
            "next_fire_at",
            "last_fire",
        ],
    )
}

/// A fire of `POST /v1/ops/schedules/{id}/run`, as one line.
pub fn fire_line(fire: &Value) -> String {
    format!(
        "fired schedule {} at {} (fire time {}, manual: {}): {} affected",
        text_field(fire, "schedule_id"),
        time_field(fire, "fired_at"),
        time_field(fire, "fire_time"),
        yes_no(bool_field(fire, "manual")),
        counted_field(fire, "affected", "file"),
    )
}

/// `GET /v1/ops/stuck`: one row per job.
pub fn stuck_table(response: &Value) -> String {
    let headers = ["KIND", "ID", "ORG", "STATUS", "REASON", "SINCE", "ATTEMPTS"];
    list_table(response, "jobs", "no stuck jobs", &headers, |job| {
        vec![
            text_field(job, "kind"),
            text_field(job, "id"),
            short_id_field(job, "org_id"),
            text_field(job, "status"),
            text_field(job, "reason"),
            time_field(job, "since"),
            count_text(job, "attempts"),
        ]
    })
}

/// `GET /v1/ops/failures`: one row per group.
pub fn failures_table(response: &Value) -> String {
    let headers = [
        "KIND",
        "ERROR CLASS",
        "ERROR CODE",
        "COUNT",
        "LAST AT",
        "SAMPLE ID",
        "SAMPLE MESSAGE",
    ];
    list_table(response, "groups", "no failures", &headers, |group| {
        vec![
            text_field(group, "kind"),
            text_field(group, "error_class"),
            text_field(group, "error_code"),
            count_text(group, "count"),
            time_field(group, "last_at"),
            text_field(group, "sample_id"),
            truncate(&text_field(group, "sample_message"), 60),
        ]
    })
}

/// `GET /v1/ops/webhooks/deliveries`: one row per delivery.
pub fn webhook_deliveries_table(response: &Value) -> String {
    let headers = [
        "ID",
        "STATUS",
        "EVENT",
        "URL",
        "ATTEMPTS",
        "LAST ERROR",
        "CREATED",
        "ORG",
    ];
    list_table(
        response,
        "deliveries",
        "no deliveries",
        &headers,
        |delivery| {
            vec![
                text_field(delivery, "id"),
                text_field(delivery, "status"),
                text_field(delivery, "event_type"),
                truncate(&text_field(delivery, "url"), 40),
                count_text(delivery, "attempts"),
                truncate(&text_field(delivery, "last_error"), 50),
                time_field(delivery, "created_at"),
                text_field(delivery, "org_id"),
            ]
        },
    )
}

/// `GET /v1/ops/audit`: one row per entry.
pub fn audit_table(response: &Value) -> String {
    let headers = ["ID", "AT", "ACTOR", "ACTION", "TARGET", "COUNT", "DETAILS"];
    list_table(response, "entries", "no audit entries", &headers, |entry| {
        vec![
            text_field(entry, "id"),
            time_field(entry, "at"),
            text_field(entry, "actor"),
            text_field(entry, "action"),
            text_field(entry, "target"),
            count_text(entry, "count"),
            truncate(&text_field(entry, "details"), 60),
        ]
    })
}

/// A table of the array `key` of `response`, one row per item, or `empty` when the
/// array is empty or missing.
fn list_table(
    response: &Value,
    key: &str,
    empty: &str,
    headers: &[&str],
    row: impl Fn(&Value) -> Vec<String>,
) -> String {
    let items = list_field(response, key);
    if items.is_empty() {
        return empty.to_owned();
    }
    table(headers, items.iter().map(row).collect())
}

/// Appends how to fetch the next page when the answer has a `next_cursor`.
fn with_next_page_hint(rendered: String, response: &Value, command: &str) -> String {
    match response
        .get("next_cursor")
        .filter(|cursor| !cursor.is_null())
    {
        Some(cursor) => format!(
            "{rendered}\n(more: fleetctl {command} --cursor {})",
            display_value(cursor)
        ),
        None => rendered,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ages_read_like_people_say_them() {
        assert_eq!(format_age(None), "-");
        assert_eq!(format_age(Some(0.0)), "0s");
        assert_eq!(format_age(Some(42.5)), "42s");
        assert_eq!(format_age(Some(185.0)), "3m 5s");
        assert_eq!(format_age(Some(3_600.0)), "1h 0m");
        assert_eq!(format_age(Some(7_530.0)), "2h 5m");
        assert_eq!(format_age(Some(273_600.0)), "3d 4h");
        assert_eq!(format_age(Some(-3.0)), "0s");
        assert_eq!(format_age(Some(f64::NAN)), "-");
    }

    #[test]
    fn times_drop_fractions_and_utc_offsets() {
        assert_eq!(
            format_time(Some("2026-11-23T10:05:00Z")),
            "2026-11-23 10:05:00"
        );
        assert_eq!(
            format_time(Some("2026-11-23T10:05:00.123456Z")),
            "2026-11-23 10:05:00"
        );
        assert_eq!(
            format_time(Some("2026-11-23T10:05:00+00:00")),
            "2026-11-23 10:05:00"
        );
        assert_eq!(
            format_time(Some("2026-11-23T10:05:00.5+02:00")),
            "2026-11-23 10:05:00 +02:00"
        );
        assert_eq!(format_time(Some("yesterday")), "yesterday");
        assert_eq!(format_time(None), "-");
    }

    #[test]
    fn sizes_ids_costs_and_truncation() {
        assert_eq!(format_bytes(Some(512)), "512 B");
        assert_eq!(format_bytes(Some(1_536)), "1.5 KiB");
        assert_eq!(format_bytes(Some(3 * 1024 * 1024)), "3.0 MiB");
        assert_eq!(format_bytes(None), "-");
        assert_eq!(short_id("0193c1a2-7b4e-7c3d-9f10-2a6b8c9d0e1f"), "0193c1a2");
        assert_eq!(format_cost(Some(0.0012)), "$0.0012");
        assert_eq!(counted(1, "job"), "1 job");
        assert_eq!(counted(0, "job"), "0 jobs");
        assert_eq!(
            counted_field(&json!({"discarded": 3}), "discarded", "message"),
            "3 messages"
        );
        assert_eq!(truncate("abcdef", 4), "abc…");
        assert_eq!(truncate("abc", 4), "abc");
        assert_eq!(truncate("ééééé", 3).chars().count(), 3);
    }

    #[test]
    fn queues_table_shows_every_cell() {
        let response = json!({"queues": [
            {"queue": "file-jobs", "kind": "file.process", "url": "http://sqs/file-jobs",
             "visible": 3, "in_flight": 1, "delayed": 0, "oldest_age_secs": 42.5,
             "max_receive_count": 6,
             "dlq": {"name": "file-jobs-dlq", "url": "http://sqs/file-jobs-dlq", "visible": 2, "in_flight": 1}},
            {"queue": "agent-jobs", "kind": "agent.step", "visible": 0, "in_flight": 0,
             "delayed": 7, "oldest_age_secs": null, "dlq": {"visible": 0, "in_flight": 0},
             "a_field_added_later": true}
        ]});
        let rendered = queues_table(&response);
        let lines: Vec<&str> = rendered.lines().collect();
        assert_eq!(lines.len(), 3, "{rendered}");
        let header: Vec<&str> = lines[0]
            .split("  ")
            .map(str::trim)
            .filter(|cell| !cell.is_empty())
            .collect();
        assert_eq!(
            header,
            [
                "QUEUE",
                "KIND",
                "VISIBLE",
                "IN FLIGHT",
                "DELAYED",
                "OLDEST AGE",
                "DLQ"
            ]
        );
        let file_jobs: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(
            file_jobs,
            ["file-jobs", "file.process", "3", "1", "0", "42s", "3"]
        );
        let agent_jobs: Vec<&str> = lines[2].split_whitespace().collect();
        assert_eq!(
            agent_jobs,
            ["agent-jobs", "agent.step", "0", "0", "7", "-", "0"]
        );
        assert!(lines.iter().all(|line| line == &line.trim_end()));
        assert_eq!(queues_table(&json!({"queues": []})), "no queues");
    }

    #[test]
    fn dlq_table_marks_poison_and_truncation() {
        let response = json!({"queue": "file-jobs", "truncated": true, "messages": [
            {"message_id": "5f0c2d7e-1111-2222-3333-444455556666", "kind": "file.process",
             "job_id": "0193c1a2-7b4e-7c3d-9f10-2a6b8c9d0e1f", "org_id": "0193aaaa-0000-7000-8000-000000000001",
             "receive_count": 6, "first_seen": "2026-11-23T10:00:00Z", "last_seen": "2026-11-23T10:05:00.25Z",
             "status": "dead_lettered", "error_class": "transient", "error_code": "s3_unavailable",
             "last_error": "s3 down", "attempts": 6, "poison": false, "body": "{}"},
            {"message_id": "9a9a9a9a-1111-2222-3333-444455556666", "kind": null, "job_id": null,
             "org_id": null, "receive_count": 2, "first_seen": "2026-11-23T09:00:00Z",
             "last_seen": "2026-11-23T09:01:00Z", "poison": true, "body": "garbage"}
        ]});
        let rendered = dlq_messages_table(&response, "file-jobs");
        let lines: Vec<&str> = rendered.lines().collect();
        assert_eq!(
            lines[1].split_whitespace().collect::<Vec<_>>(),
            [
                "5f0c2d7e",
                "file.process",
                "0193c1a2",
                "0193aaaa",
                "transient",
                "s3_unavailable",
                "6",
                "2026-11-23",
                "10:00:00",
                "2026-11-23",
                "10:05:00"
            ]
        );
        assert!(lines[2].starts_with("9a9a9a9a  (poison)"), "{rendered}");
        assert_eq!(
            lines[3],
            "(showing the first 2 messages of file-jobs-dlq; there are more, raise --limit)"
        );
        assert_eq!(
            dlq_messages_table(&json!({"messages": [], "truncated": false}), "agent-jobs"),
            "no messages in agent-jobs-dlq"
        );
    }

    #[test]
    fn message_detail_pretty_prints_the_body_and_keeps_new_fields() {
        let message = json!({"message_id": "m-1", "kind": "file.process", "last_error": "boom",
            "body": "{\"job_id\":\"j-1\"}", "added_later": 5});
        let rendered = dlq_message_detail(&message);
        assert!(rendered.contains("message_id     m-1"), "{rendered}");
        assert!(rendered.contains("last_error     boom"), "{rendered}");
        assert!(
            rendered.contains(
                "body           {\n                 \"job_id\": \"j-1\"\n               }"
            ),
            "{rendered}"
        );
        assert!(rendered.contains("added_later    5"), "{rendered}");
        assert!(rendered.contains("job_id         -"), "{rendered}");
    }

    #[test]
    fn redrive_summary_reports_moved_total_method_and_failures() {
        let succeeded = json!({"queue": "file-jobs", "status": "succeeded", "method": "move_task",
            "total": 12, "moved": 12, "failed": 0});
        assert_eq!(
            redrive_summary(&succeeded, "file-jobs"),
            "moved 12 of 12 messages from file-jobs-dlq to file-jobs (move_task)"
        );
        let failed = json!({"status": "failed", "method": "receive_send_delete",
            "total": null, "moved": 3, "failed": 2, "error": "sqs send failed"});
        assert_eq!(
            redrive_summary(&failed, "agent-jobs"),
            "moved 3 of 5 messages from agent-jobs-dlq to agent-jobs (receive_send_delete), 2 failed\nredrive failed: sqs send failed"
        );
    }

    #[test]
    fn executions_table_adds_org_column_for_the_fleet_wide_route() {
        let org_scoped = json!({"executions": [{"id": "e-1", "node_id": "0193c1a2-7b4e", "status": "running",
            "step": 3, "tokens_in": 120, "tokens_out": 40, "cost_usd": 0.0012, "updated_at": "2026-11-23T10:00:00Z"}],
            "next_cursor": "e-1"});
        let rendered = executions_table(&org_scoped);
        assert!(!rendered.contains("ORG"), "{rendered}");
        assert!(rendered.contains("120/40"), "{rendered}");
        assert!(rendered.contains("$0.0012"), "{rendered}");
        assert!(
            rendered.ends_with("(more: fleetctl executions list --cursor e-1)"),
            "{rendered}"
        );
        let fleet_wide =
            json!({"executions": [{"id": "e-1", "org_id": "0193aaaa-0000", "status": "running"}]});
        let rendered = executions_table(&fleet_wide);
        assert!(rendered.starts_with("ID   ORG"), "{rendered}");
        assert!(rendered.contains("0193aaaa"), "{rendered}");
    }

    #[test]
    fn trace_table_cuts_long_data() {
        let long_text = "x".repeat(300);
        let events = vec![json!({"id": 1, "step": 0, "kind": "model_call",
            "data": {"prompt": long_text}, "created_at": "2026-11-23T10:00:00Z"})];
        let rendered = trace_table(&events);
        let row = rendered.lines().nth(1).unwrap_or_default();
        assert!(row.contains("model_call"), "{rendered}");
        assert!(row.contains(r#"{"prompt":"xxx"#), "{rendered}");
        assert!(row.contains('…'), "{rendered}");
        assert!(row.chars().count() < 140, "{rendered}");
    }
}
