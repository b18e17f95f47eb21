//! The ops routes against the real stack: queue overview, DLQ browse/redrive/discard with
//! the audit log, stuck jobs, failures, executions, and the metrics they export.

use std::time::Duration;

use serde_json::{Value, json};
use sqlx::PgPool;
use testkit::{TestApp, wait_until};
use uuid::Uuid;

/// Inserts a file row straight into Postgres in the given state.
async fn insert_file(
    pool: &PgPool,
    org_id: Uuid,
    status: &str,
    error: Option<(&str, &str)>,
) -> anyhow::Result<Uuid> {
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO files (id, org_id, name, content_type, size_bytes, object_key, status, error_class, error_code, error_message, attempts, queued_at) \
         VALUES ($1, $2, 'doc.txt', 'text/plain', 10, 'k', $3, $4, $5, $6, 3, now())",
    )
    .bind(id)
    .bind(org_id)
    .bind(status)
    .bind(error.map(|(class, _)| class))
    .bind(error.map(|(_, code)| code))
    .bind(error.map(|(_, code)| format!("the last error was {code}")))
    .execute(pool)
    .await?;
    Ok(id)
}

fn job_body(kind: &str, job_id: Uuid, org_id: Uuid) -> String {
    json!({ "v": 1, "kind": kind, "job_id": job_id, "org_id": org_id }).to_string()
}

async fn send(app: &TestApp, queue_url: &str, body: &str) -> anyhow::Result<String> {
    Ok(app
        .aws
        .sqs
        .send_message()
        .queue_url(queue_url)
        .message_body(body)
        .send()
        .await?
        .message_id
        .unwrap_or_default())
}

/// Waits for a redrive task to finish and returns it.
async fn wait_for_task(app: &TestApp, token: &str, task_id: &str) -> anyhow::Result<Value> {
    let path = format!("/v1/ops/tasks/{task_id}");
    let started = std::time::Instant::now();
    loop {
        let (status, body) = app.get_as(&path, token).await?;
        anyhow::ensure!(status == 200, "task: {status} {body}");
        if body["task"]["status"] != "running" {
            return Ok(body["task"].clone());
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(30),
            "task still running after 30s: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn audit(app: &TestApp, token: &str) -> anyhow::Result<Vec<Value>> {
    let (status, body) = app.get_as("/v1/ops/audit?limit=100", token).await?;
    anyhow::ensure!(status == 200, "audit: {status} {body}");
    Ok(body["entries"].as_array().cloned().unwrap_or_default())
}

#[tokio::test]
async fn ops_routes_need_a_token_with_the_ops_role() -> anyhow::Result<()> {
    let app = TestApp::spawn().await?;
    let anonymous = app.http.get(app.url("/v1/ops/queues")).send().await?;
    assert_eq!(anonymous.status(), 401);
    let (status, body) = app.get_as("/v1/ops/queues", &app.token).await?;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "forbidden");
    let (status, body) = app
        .post_as(
            "/v1/ops/dlq/file-jobs/redrive",
            json!({"all": true}),
            &app.token,
        )
        .await?;
    assert_eq!(status, 403, "{body}");
    let (status, body) = app
        .get_as("/v1/ops/queues", &app.ops_token("alice"))
        .await?;
    assert_eq!(status, 200, "{body}");
    let (status, _) = app
        .get_as("/v1/ops/dlq/no-such-queue", &app.ops_token("alice"))
        .await?;
    assert_eq!(status, 404);
    Ok(())
}

#[tokio::test]
async fn queue_overview_shows_depths_dlq_and_the_oldest_waiting_job() -> anyhow::Result<()> {
    let app = TestApp::spawn().await?;
    let ops = app.ops_token("alice");
    for _ in 0..3 {
        send(
            &app,
            &app.queue.url,
            &job_body("file.process", Uuid::now_v7(), app.org_id),
        )
        .await?;
    }
    send(
        &app,
        &app.queue.dlq_url,
        &job_body("file.process", Uuid::now_v7(), app.org_id),
    )
    .await?;
    let waiting = insert_file(&app.pool, app.org_id, "queued", None).await?;
    sqlx::query("UPDATE files SET queued_at = now() - interval '90 seconds' WHERE id = $1")
        .bind(waiting)
        .execute(&app.pool)
        .await?;

    let (status, body) = app.get_as("/v1/ops/queues", &ops).await?;
    assert_eq!(status, 200, "{body}");
    let queues = body["queues"].as_array().expect("queues");
    assert_eq!(queues.len(), 2, "{body}");
    let files = &queues[0];
    assert_eq!(files["queue"], "file-jobs");
    assert_eq!(files["kind"], "file.process");
    assert_eq!(files["visible"], 3, "{files}");
    assert_eq!(files["in_flight"], 0);
    assert_eq!(files["dlq"]["visible"], 1, "{files}");
    assert_eq!(files["max_receive_count"], 3);
    let oldest = files["oldest_age_secs"].as_f64().expect("an oldest age");
    assert!((90.0..200.0).contains(&oldest), "oldest age {oldest}");
    let agents = &queues[1];
    assert_eq!(agents["queue"], "agent-jobs");
    assert_eq!(agents["visible"], 0);
    assert!(agents["oldest_age_secs"].is_null(), "{agents}");

    // The same numbers reach Prometheus.
    let metrics = app
        .http
        .get(format!("http://{}/metrics", app.metrics_address))
        .send()
        .await?
        .text()
        .await?;
    assert!(
        metrics.contains("glassbox_queue_messages{queue=\"file-jobs\",state=\"visible\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("glassbox_dlq_messages{queue=\"file-jobs\"}"));
    Ok(())
}

#[tokio::test]
async fn dlq_browse_joins_job_rows_and_redrive_by_filter_reopens_them() -> anyhow::Result<()> {
    let app = TestApp::spawn().await?;
    let ops = app.ops_token("alice");
    let throttled = insert_file(
        &app.pool,
        app.org_id,
        "dead_lettered",
        Some(("transient", "s3_unavailable")),
    )
    .await?;
    let other = insert_file(
        &app.pool,
        app.org_id,
        "dead_lettered",
        Some(("transient", "embedding_unavailable")),
    )
    .await?;
    let throttled_id = send(
        &app,
        &app.queue.dlq_url,
        &job_body("file.process", throttled, app.org_id),
    )
    .await?;
    send(
        &app,
        &app.queue.dlq_url,
        &job_body("file.process", other, app.org_id),
    )
    .await?;
    let poison_id = send(&app, &app.queue.dlq_url, "{not a job").await?;

    let (status, body) = app.get_as("/v1/ops/dlq/file-jobs?limit=50", &ops).await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["truncated"], false);
    let messages = body["messages"].as_array().expect("messages");
    assert_eq!(messages.len(), 3, "{body}");
    let entry = messages
        .iter()
        .find(|message| message["message_id"] == throttled_id)
        .expect("the throttled file's message");
    assert_eq!(entry["kind"], "file.process");
    assert_eq!(entry["job_id"], throttled.to_string());
    assert_eq!(entry["org_id"], app.org_id.to_string());
    assert_eq!(entry["status"], "dead_lettered");
    assert_eq!(entry["error_class"], "transient");
    assert_eq!(entry["error_code"], "s3_unavailable");
    assert_eq!(entry["last_error"], "the last error was s3_unavailable");
    assert_eq!(entry["attempts"], 3);
    assert!(entry["receive_count"].as_u64().unwrap() >= 1);
    assert!(
        entry["first_seen"].is_string() && entry["last_seen"].is_string(),
        "{entry}"
    );
    let poison = messages
        .iter()
        .find(|message| message["message_id"] == poison_id)
        .expect("the poison message");
    assert_eq!(poison["poison"], true);
    assert_eq!(poison["error_code"], "poison_message");
    assert!(poison["job_id"].is_null());

    // Browsing gives every message back at once.
    let depth = app.queue.depth().await?;
    assert_eq!(depth.dead_letter_visible, 3, "{depth:?}");

    let (status, shown) = app
        .get_as(
            &format!("/v1/ops/dlq/file-jobs/messages/{throttled_id}"),
            &ops,
        )
        .await?;
    assert_eq!(status, 200, "{shown}");
    assert_eq!(shown["error_code"], "s3_unavailable");
    let (status, _) = app
        .get_as("/v1/ops/dlq/file-jobs/messages/nope", &ops)
        .await?;
    assert_eq!(status, 404);

    // Selectors are validated before anything moves.
    for bad in [
        json!({}),
        json!({"all": true, "message_ids": ["x"]}),
        json!({"filter": {}}),
    ] {
        let (status, body) = app
            .post_as("/v1/ops/dlq/file-jobs/redrive", bad, &ops)
            .await?;
        assert_eq!(status, 422, "{body}");
        assert_eq!(body["error"]["code"], "invalid_selector");
    }

    let (status, body) = app
        .post_as(
            "/v1/ops/dlq/file-jobs/redrive",
            json!({"filter": {"error_code": "s3_unavailable"}}),
            &ops,
        )
        .await?;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["task"]["method"], "receive_send_delete");
    assert_eq!(body["task"]["requested_by"], "alice");
    let task = wait_for_task(&app, &ops, body["task"]["id"].as_str().unwrap()).await?;
    assert_eq!(task["status"], "succeeded", "{task}");
    assert_eq!(task["moved"], 1);
    assert_eq!(task["failed"], 0);

    let depth = app.queue.depth().await?;
    assert_eq!(
        depth.dead_letter_visible, 2,
        "the other two stay: {depth:?}"
    );
    assert_eq!(depth.visible, 1, "{depth:?}");
    let moved = app.queue.receive(10, Duration::from_secs(1)).await?;
    assert_eq!(moved.len(), 1);
    assert_eq!(
        moved[0].body,
        job_body("file.process", throttled, app.org_id),
        "the body moves unchanged"
    );
    let (status,): (String,) = sqlx::query_as("SELECT status FROM files WHERE id = $1")
        .bind(throttled)
        .fetch_one(&app.pool)
        .await?;
    assert_eq!(status, "queued", "the row is reopened with its message");
    let (status,): (String,) = sqlx::query_as("SELECT status FROM files WHERE id = $1")
        .bind(other)
        .fetch_one(&app.pool)
        .await?;
    assert_eq!(status, "dead_lettered", "an unselected row is untouched");

    let entries = audit(&app, &ops).await?;
    let redrive = entries
        .iter()
        .find(|entry| entry["action"] == "dlq.redrive")
        .expect("an audit entry");
    assert_eq!(redrive["actor"], "alice");
    assert_eq!(redrive["target"], "file-jobs");
    assert_eq!(redrive["count"], 1);
    assert_eq!(
        redrive["details"]["selector"]["filter"]["error_code"],
        "s3_unavailable"
    );

    let metrics = app
        .http
        .get(format!("http://{}/metrics", app.metrics_address))
        .send()
        .await?
        .text()
        .await?;
    assert!(metrics.contains("glassbox_dlq_redriven_total"), "{metrics}");
    Ok(())
}

#[tokio::test]
async fn discard_needs_confirmation_and_deletes_only_the_selection() -> anyhow::Result<()> {
    let app = TestApp::spawn().await?;
    let ops = app.ops_token("bob");
    let file = insert_file(
        &app.pool,
        app.org_id,
        "dead_lettered",
        Some(("transient", "s3_unavailable")),
    )
    .await?;
    send(
        &app,
        &app.queue.dlq_url,
        &job_body("file.process", file, app.org_id),
    )
    .await?;
    send(&app, &app.queue.dlq_url, "garbage").await?;

    let (status, body) = app
        .post_as(
            "/v1/ops/dlq/file-jobs/discard",
            json!({"filter": {"error_code": "poison_message"}}),
            &ops,
        )
        .await?;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "confirmation_required");
    assert_eq!(app.queue.depth().await?.dead_letter_visible, 2);

    let (status, body) = app
        .post_as(
            "/v1/ops/dlq/file-jobs/discard",
            json!({"filter": {"error_code": "poison_message"}, "confirm": true}),
            &ops,
        )
        .await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["discarded"], 1);
    let depth = app.queue.depth().await?;
    assert_eq!(
        depth.dead_letter_visible, 1,
        "the job message stays: {depth:?}"
    );
    assert_eq!(depth.visible, 0, "discard never moves anything");

    let entries = audit(&app, &ops).await?;
    assert_eq!(entries[0]["action"], "dlq.discard");
    assert_eq!(entries[0]["actor"], "bob");
    assert_eq!(entries[0]["count"], 1);
    Ok(())
}

#[tokio::test]
async fn a_redrive_that_cannot_send_loses_nothing() -> anyhow::Result<()> {
    let app = TestApp::spawn().await?;
    let ops = app.ops_token("carol");
    let file = insert_file(
        &app.pool,
        app.org_id,
        "dead_lettered",
        Some(("transient", "s3_unavailable")),
    )
    .await?;
    let message_id = send(
        &app,
        &app.queue.dlq_url,
        &job_body("file.process", file, app.org_id),
    )
    .await?;
    // The source queue disappears (a botched deploy): every send fails.
    app.aws
        .sqs
        .delete_queue()
        .queue_url(&app.queue.url)
        .send()
        .await?;

    let (status, body) = app
        .post_as(
            "/v1/ops/dlq/file-jobs/redrive",
            json!({"message_ids": [message_id]}),
            &ops,
        )
        .await?;
    assert_eq!(status, 202, "{body}");
    let task = wait_for_task(&app, &ops, body["task"]["id"].as_str().unwrap()).await?;
    assert_eq!(task["status"], "failed", "{task}");
    assert_eq!(task["moved"], 0);
    assert_eq!(task["failed"], 1);

    // The message is still on the DLQ, visible again at once for the next attempt.
    let (status, body) = app.get_as("/v1/ops/dlq/file-jobs", &ops).await?;
    assert_eq!(status, 200, "{body}");
    let messages = body["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 1, "{body}");
    assert_eq!(messages[0]["message_id"], message_id);
    Ok(())
}

#[tokio::test]
async fn redrive_of_named_messages_reports_the_ones_that_are_missing() -> anyhow::Result<()> {
    let app = TestApp::spawn().await?;
    let ops = app.ops_token("alice");
    let job = Uuid::now_v7();
    let present = send(
        &app,
        &app.queue.dlq_url,
        &job_body("file.process", job, app.org_id),
    )
    .await?;
    let (status, body) = app
        .post_as(
            "/v1/ops/dlq/file-jobs/redrive",
            json!({"message_ids": [present, "no-such-message"], "rate_per_sec": 20}),
            &ops,
        )
        .await?;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["task"]["total"], 2);
    let task = wait_for_task(&app, &ops, body["task"]["id"].as_str().unwrap()).await?;
    assert_eq!(task["moved"], 1, "{task}");
    assert_eq!(task["status"], "failed");
    assert!(
        task["error"]
            .as_str()
            .unwrap()
            .contains("1 of the named messages"),
        "{task}"
    );
    assert_eq!(app.queue.depth().await?.visible, 1);
    Ok(())
}

#[tokio::test]
async fn agent_job_redrive_reopens_the_dead_lettered_execution() -> anyhow::Result<()> {
    let app = TestApp::spawn().await?;
    let ops = app.ops_token("alice");
    let node = app.create_node("Summarise", "Say hi", json!({})).await?;
    let execution_id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO executions (id, org_id, node_id, model, status, error_class, error_code, error_message, finished_at) \
         VALUES ($1, $2, $3, 'scripted', 'failed', 'transient', 'llm_unavailable', 'HTTP 503', now())",
    )
    .bind(execution_id)
    .bind(app.org_id)
    .bind(node)
    .execute(&app.pool)
    .await?;
    let agent_queue = app.agent_queue().await?;
    send(
        &app,
        &agent_queue.dlq_url,
        &job_body("agent.run", execution_id, app.org_id),
    )
    .await?;

    let (status, body) = app
        .post_as("/v1/ops/dlq/agent-jobs/redrive", json!({"all": true}), &ops)
        .await?;
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        body["task"]["method"], "receive_send_delete",
        "executions are reopened row by row"
    );
    let task = wait_for_task(&app, &ops, body["task"]["id"].as_str().unwrap()).await?;
    assert_eq!(task["status"], "succeeded", "{task}");
    assert_eq!(task["moved"], 1);
    let (status, error_code): (String, Option<String>) =
        sqlx::query_as("SELECT status, error_code FROM executions WHERE id = $1")
            .bind(execution_id)
            .fetch_one(&app.pool)
            .await?;
    assert_eq!(status, "queued");
    assert_eq!(error_code, None);
    let trace = app.trace(execution_id).await?;
    assert!(
        trace
            .iter()
            .any(|event| event["kind"] == "redriven" && event["data"]["by"] == "alice"),
        "{trace:?}"
    );
    assert_eq!(agent_queue.depth().await?.visible, 1);
    Ok(())
}

#[tokio::test]
async fn stuck_jobs_are_listed_with_a_reason_and_requeued() -> anyhow::Result<()> {
    let app = TestApp::spawn().await?;
    let ops = app.ops_token("dave");
    let expired = insert_file(&app.pool, app.org_id, "processing", None).await?;
    sqlx::query("UPDATE files SET lease_token = gen_random_uuid(), lease_expires_at = now() - interval '1 minute' WHERE id = $1")
        .bind(expired)
        .execute(&app.pool)
        .await?;
    let old_queued = insert_file(&app.pool, app.org_id, "queued", None).await?;
    sqlx::query("UPDATE files SET queued_at = now() - interval '1 hour' WHERE id = $1")
        .bind(old_queued)
        .execute(&app.pool)
        .await?;
    let fresh = insert_file(&app.pool, app.org_id, "queued", None).await?;
    let healthy = insert_file(&app.pool, app.org_id, "processing", None).await?;
    sqlx::query("UPDATE files SET lease_token = gen_random_uuid(), lease_expires_at = now() + interval '1 minute' WHERE id = $1")
        .bind(healthy)
        .execute(&app.pool)
        .await?;

    let (status, body) = app
        .get_as("/v1/ops/stuck?queued_for_secs=300", &ops)
        .await?;
    assert_eq!(status, 200, "{body}");
    let jobs = body["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 2, "{body}");
    let reason_of = |id: Uuid| {
        jobs.iter()
            .find(|job| job["id"] == id.to_string())
            .map(|job| job["reason"].as_str().unwrap().to_string())
    };
    assert_eq!(reason_of(expired).as_deref(), Some("lease_expired"));
    assert_eq!(reason_of(old_queued).as_deref(), Some("queued_too_long"));
    assert_eq!(reason_of(fresh), None);
    assert_eq!(reason_of(healthy), None);

    let (status, body) = app
        .post_as(
            "/v1/ops/stuck/requeue",
            json!({"jobs": [], "all": false}),
            &ops,
        )
        .await?;
    assert_eq!(status, 422, "{body}");
    let (status, body) = app
        .post_as(
            "/v1/ops/stuck/requeue",
            json!({"all": true, "queued_for_secs": 300}),
            &ops,
        )
        .await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["requeued"], 2);
    // The outbox relay sends both to SQS.
    wait_until(Duration::from_secs(15), || async {
        app.queue
            .depth()
            .await
            .is_ok_and(|depth| depth.visible == 2)
    })
    .await?;
    let (status, body) = app
        .get_as("/v1/ops/stuck?queued_for_secs=300", &ops)
        .await?;
    assert_eq!(status, 200);
    assert_eq!(
        body["jobs"].as_array().unwrap().len(),
        0,
        "requeued jobs are no longer stuck: {body}"
    );
    let entries = audit(&app, &ops).await?;
    assert_eq!(entries[0]["action"], "stuck.requeue");
    assert_eq!(entries[0]["count"], 2);
    Ok(())
}

#[tokio::test]
async fn failures_are_grouped_by_class_and_executions_listed_across_orgs() -> anyhow::Result<()> {
    let app = TestApp::spawn().await?;
    let ops = app.ops_token("erin");
    let other_org = Uuid::now_v7();
    for org in [app.org_id, other_org] {
        insert_file(
            &app.pool,
            org,
            "failed",
            Some(("permanent", "pdf_encrypted")),
        )
        .await?;
    }
    insert_file(
        &app.pool,
        app.org_id,
        "dead_lettered",
        Some(("transient", "s3_unavailable")),
    )
    .await?;
    insert_file(&app.pool, app.org_id, "ready", None).await?;
    // A window outside 1 s to 90 days is refused, not run (schemathesis found one of
    // 1.2e19 s answered 200).
    for bad in ["0", "7776001", "11755846418177986560"] {
        let (status, body) = app
            .get_as(&format!("/v1/ops/failures?since_secs={bad}"), &ops)
            .await?;
        assert_eq!(status, 422, "since_secs={bad}: {body}");
        assert_eq!(body["error"]["code"], "invalid_request", "{body}");
    }
    let (status, body) = app.get_as("/v1/ops/failures?since_secs=3600", &ops).await?;
    assert_eq!(status, 200, "{body}");
    let groups = body["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 2, "{body}");
    assert_eq!(groups[0]["error_code"], "pdf_encrypted");
    assert_eq!(groups[0]["error_class"], "permanent");
    assert_eq!(groups[0]["count"], 2);
    assert_eq!(
        groups[0]["sample_message"],
        "the last error was pdf_encrypted"
    );
    assert_eq!(groups[1]["error_code"], "s3_unavailable");
    assert_eq!(groups[1]["count"], 1);

    let node = app.create_node("Task", "Do it", json!({})).await?;
    for status in ["running", "awaiting_input", "completed"] {
        sqlx::query(
            "INSERT INTO executions (id, org_id, node_id, model, status) VALUES ($1, $2, $3, 'scripted', $4)",
        )
        .bind(Uuid::now_v7())
        .bind(app.org_id)
        .bind(node)
        .bind(status)
        .execute(&app.pool)
        .await?;
    }
    let (status, body) = app.get_as("/v1/ops/executions", &ops).await?;
    assert_eq!(status, 200, "{body}");
    let mut statuses: Vec<&str> = body["executions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|execution| execution["status"].as_str().unwrap())
        .collect();
    statuses.sort();
    assert_eq!(statuses, ["awaiting_input", "running"]);

    // The org-scoped list the CLI uses.
    let (status, body) = app.get("/v1/executions?status=completed").await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["executions"].as_array().unwrap().len(), 1);
    let (status, _) = app.get("/v1/executions?status=bogus").await?;
    assert_eq!(status, 422);
    Ok(())
}

#[tokio::test]
async fn redrive_all_stops_at_the_count_taken_when_it_started() -> anyhow::Result<()> {
    let app = TestApp::spawn().await?;
    let ops = app.ops_token("frank");
    send(&app, &app.queue.dlq_url, "not a job message").await?;
    // What a worker does with a poison message: straight back to the DLQ, at once.
    let bouncer_queue = app.queue.clone();
    let bouncer = tokio::spawn(async move {
        loop {
            if let Ok(deliveries) = bouncer_queue.receive(10, Duration::from_secs(1)).await {
                for delivery in deliveries {
                    let _ = bouncer_queue.dead_letter(&delivery, "poison").await;
                }
            }
        }
    });

    let (status, body) = app
        .post_as(
            "/v1/ops/dlq/file-jobs/redrive",
            json!({"all": true, "rate_per_sec": 1000}),
            &ops,
        )
        .await?;
    assert_eq!(status, 202, "{body}");
    let task = wait_for_task(&app, &ops, body["task"]["id"].as_str().unwrap()).await;
    bouncer.abort();
    let task = task?;
    assert_eq!(task["moved"], 1, "{task}");
    Ok(())
}
