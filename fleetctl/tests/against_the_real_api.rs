//! The fleetctl binary against a real api-lite (Postgres, moto): what an operator types.

use std::process::Output;

use serde_json::{Value, json};
use testkit::TestApp;
use uuid::Uuid;

const FLEETCTL: &str = env!("CARGO_BIN_EXE_fleetctl");

async fn fleetctl(app: &TestApp, token: &str, args: &[&str]) -> anyhow::Result<Output> {
    Ok(tokio::process::Command::new(FLEETCTL)
        .env_clear()
        .env("FLEETCTL_API_URL", &app.base_url)
        .env("FLEETCTL_TOKEN", token)
        .args(args)
        .output()
        .await?)
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test]
async fn an_operator_sees_queues_redrives_a_dead_file_and_schedules_a_retry() -> anyhow::Result<()>
{
    let app = TestApp::spawn().await?;
    let ops = app.ops_token("oncall");
    let file_id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO files (id, org_id, name, content_type, size_bytes, object_key, status, error_class, error_code, error_message) \
         VALUES ($1, $2, 'report.pdf', 'application/pdf', 10, 'k', 'dead_lettered', 'transient', 's3_unavailable', 'S3 answered 503 six times')",
    )
    .bind(file_id)
    .bind(app.org_id)
    .execute(&app.pool)
    .await?;
    app.aws
        .sqs
        .send_message()
        .queue_url(&app.queue.dlq_url)
        .message_body(
            json!({"v": 1, "kind": "file.process", "job_id": file_id, "org_id": app.org_id})
                .to_string(),
        )
        .send()
        .await?;

    let queues = fleetctl(&app, &ops, &["--json", "queues"]).await?;
    assert!(queues.status.success(), "{}", stderr(&queues));
    let parsed: Value = serde_json::from_slice(&queues.stdout)?;
    assert_eq!(parsed["queues"][0]["queue"], "file-jobs");
    assert_eq!(parsed["queues"][0]["dlq"]["visible"], 1);
    let table = fleetctl(&app, &ops, &["queues"]).await?;
    assert!(table.status.success());
    assert!(stdout(&table).contains("file-jobs"), "{}", stdout(&table));

    let listed = fleetctl(&app, &ops, &["dlq", "list", "file-jobs"]).await?;
    assert!(listed.status.success(), "{}", stderr(&listed));
    assert!(
        stdout(&listed).contains("s3_unavailable"),
        "{}",
        stdout(&listed)
    );

    let redriven = fleetctl(&app, &ops, &["dlq", "redrive", "file-jobs", "--all"]).await?;
    assert!(
        redriven.status.success(),
        "{}{}",
        stdout(&redriven),
        stderr(&redriven)
    );
    assert!(
        stdout(&redriven).contains("moved 1 of 1"),
        "{}",
        stdout(&redriven)
    );
    let depth = app.queue.depth().await?;
    assert_eq!(
        (depth.dead_letter_visible, depth.visible),
        (0, 1),
        "{depth:?}"
    );
    let status: String = sqlx::query_scalar("SELECT status FROM files WHERE id = $1")
        .bind(file_id)
        .fetch_one(&app.pool)
        .await?;
    assert_eq!(status, "queued");

    let added = fleetctl(
        &app,
        &ops,
        &[
            "--json",
            "schedules",
            "add",
            "--name",
            "nightly-retry",
            "--cron",
            "0 3 * * *",
            "--action",
            "retry_transient",
        ],
    )
    .await?;
    assert!(added.status.success(), "{}", stderr(&added));
    let schedule: Value = serde_json::from_slice(&added.stdout)?;
    let schedule_id = schedule["id"].as_str().expect("schedule id").to_string();
    let bad = fleetctl(
        &app,
        &ops,
        &[
            "schedules",
            "add",
            "--name",
            "broken",
            "--cron",
            "every night",
            "--action",
            "retry_transient",
        ],
    )
    .await?;
    assert_eq!(bad.status.code(), Some(1));
    assert!(stderr(&bad).contains("invalid_cron"), "{}", stderr(&bad));
    let by_engine = fleetctl(
        &app,
        &ops,
        &[
            "--json",
            "schedules",
            "add",
            "--name",
            "move-off-pdf-extract",
            "--cron",
            "0 4 * * *",
            "--action",
            "reextract",
            "--engine",
            "pdf-extract",
            "--extractor-version",
            "1",
            "--disabled",
        ],
    )
    .await?;
    assert!(by_engine.status.success(), "{}", stderr(&by_engine));
    let by_engine: Value = serde_json::from_slice(&by_engine.stdout)?;
    assert_eq!(by_engine["filter"]["engine"], "pdf-extract", "{by_engine}");
    assert_eq!(by_engine["filter"]["extractor_version"], 1, "{by_engine}");
    let unknown_engine = fleetctl(
        &app,
        &ops,
        &[
            "schedules",
            "add",
            "--name",
            "poppler",
            "--cron",
            "0 4 * * *",
            "--action",
            "reextract",
            "--engine",
            "poppler",
        ],
    )
    .await?;
    assert_eq!(unknown_engine.status.code(), Some(1));
    assert!(
        stderr(&unknown_engine).contains("poppler"),
        "{}",
        stderr(&unknown_engine)
    );
    let engine_without_reextract = fleetctl(
        &app,
        &ops,
        &[
            "schedules",
            "add",
            "--name",
            "wrong-action",
            "--cron",
            "0 4 * * *",
            "--action",
            "retry_transient",
            "--engine",
            "pdfium",
        ],
    )
    .await?;
    assert_eq!(engine_without_reextract.status.code(), Some(2));
    assert!(
        stderr(&engine_without_reextract).contains("--action reextract"),
        "{}",
        stderr(&engine_without_reextract)
    );
    let run = fleetctl(
        &app,
        &ops,
        &["--json", "schedules", "run-now", &schedule_id],
    )
    .await?;
    assert!(run.status.success(), "{}", stderr(&run));
    let fire: Value = serde_json::from_slice(&run.stdout)?;
    assert_eq!(fire["fire"]["manual"], true, "{fire}");

    let audit = fleetctl(&app, &ops, &["--json", "audit"]).await?;
    assert!(audit.status.success(), "{}", stderr(&audit));
    let entries: Value = serde_json::from_slice(&audit.stdout)?;
    let actions: Vec<&str> = entries["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["action"].as_str().unwrap())
        .collect();
    // Newest first: the fire, the reextract schedule, the nightly one, the redrive.
    assert_eq!(
        actions,
        [
            "schedule.fire",
            "schedule.create",
            "schedule.create",
            "dlq.redrive"
        ]
    );
    assert_eq!(entries["entries"][3]["actor"], "oncall");

    // An org token is not enough for fleet-wide views.
    let refused = fleetctl(&app, &app.token, &["queues"]).await?;
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        stderr(&refused).contains("forbidden"),
        "{}",
        stderr(&refused)
    );
    Ok(())
}
