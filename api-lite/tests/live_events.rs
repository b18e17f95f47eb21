//! Live event streams (SSE): woken by LISTEN/NOTIFY for the executions they watch, capped
//! per org and in total, closed at their maximum lifetime and when the caller's token
//! expires.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use testkit::{SseReader, TestApp, TestOptions};
use uuid::Uuid;

/// Creates a node and a queued execution (no worker runs it) as `token`'s org.
async fn queued_execution(app: &TestApp, token: &str) -> String {
    let (status, node) = app
        .post_as(
            "/v1/nodes",
            json!({ "title": "watch me", "instructions": "nothing" }),
            token,
        )
        .await
        .unwrap();
    assert_eq!(status, 201, "{node}");
    let node_id = node["id"].as_str().unwrap();
    let (status, execution) = app
        .post_as(&format!("/v1/nodes/{node_id}/execute"), json!({}), token)
        .await
        .unwrap();
    assert_eq!(status, 202, "{execution}");
    execution["id"].as_str().unwrap().to_string()
}

fn events_path(execution_id: &str) -> String {
    format!("/v1/executions/{execution_id}/events")
}

/// Opens a stream that must be refused; returns the status and body.
async fn refused(app: &TestApp, execution_id: &str, token: &str) -> (u16, Value) {
    match SseReader::open_as(app, &events_path(execution_id), None, token)
        .await
        .unwrap()
    {
        Ok(_) => panic!("the stream was opened"),
        Err(refusal) => refusal,
    }
}

#[tokio::test]
async fn an_event_committed_by_anyone_wakes_the_stream_without_polling() {
    let app = TestApp::spawn().await.unwrap();
    let execution_id = queued_execution(&app, &app.token).await;
    let mut live = SseReader::open(&app, &events_path(&execution_id), None)
        .await
        .unwrap();
    let queued = live.next(Duration::from_secs(5)).await.unwrap().unwrap();
    assert_eq!(queued.event.as_deref(), Some("queued"));
    // Written straight to Postgres, as a worker does: only the trigger's NOTIFY can wake
    // the stream before its 10 s fallback read.
    for round in 0..3 {
        sqlx::query(
            "INSERT INTO execution_events (execution_id, org_id, step, kind, data) \
             SELECT id, org_id, step, 'note', jsonb_build_object('round', $2::int) FROM executions WHERE id = $1",
        )
        .bind(execution_id.parse::<Uuid>().unwrap())
        .bind(round)
        .execute(&app.pool)
        .await
        .unwrap();
        let note = live.next(Duration::from_secs(4)).await.unwrap().unwrap();
        assert_eq!(note.event.as_deref(), Some("note"));
        let data: Value = serde_json::from_str(&note.data).unwrap();
        assert_eq!(data["data"]["round"], round);
    }
}

/// Adds one `note` trace event to the execution, as a worker's step commit does.
async fn add_note(app: &TestApp, execution_id: Uuid) {
    sqlx::query(
        "INSERT INTO execution_events (execution_id, org_id, step, kind, data) \
         SELECT id, org_id, step, 'note', '{}'::jsonb FROM executions WHERE id = $1",
    )
    .bind(execution_id)
    .execute(&app.pool)
    .await
    .unwrap();
}

/// The next notification on the trace channel within `wait`, if any.
async fn notified(listener: &mut sqlx::postgres::PgListener, wait: Duration) -> Option<String> {
    tokio::time::timeout(wait, listener.recv())
        .await
        .ok()
        .map(|received| received.unwrap().payload().to_string())
}

#[tokio::test]
async fn only_watched_executions_send_notifications_and_expired_watches_are_swept() {
    let app = TestApp::spawn().await.unwrap();
    let execution_id: Uuid = queued_execution(&app, &app.token).await.parse().unwrap();
    let mut listener = sqlx::postgres::PgListener::connect_with(&app.pool)
        .await
        .unwrap();
    listener.listen(api_lite::live::CHANNEL).await.unwrap();

    // Nobody watches: a step's events commit without a NOTIFY (which would serialise
    // every step commit of the fleet behind one lock).
    add_note(&app, execution_id).await;
    assert_eq!(notified(&mut listener, Duration::from_secs(1)).await, None);

    // A stream registers its watch before its first read: from then on, each statement
    // that adds events notifies, and the stream is woken.
    let mut live = SseReader::open(&app, &events_path(&execution_id.to_string()), None)
        .await
        .unwrap();
    for expected in ["queued", "note"] {
        let event = live.next(Duration::from_secs(5)).await.unwrap().unwrap();
        assert_eq!(event.event.as_deref(), Some(expected));
    }
    add_note(&app, execution_id).await;
    assert_eq!(
        notified(&mut listener, Duration::from_secs(5)).await,
        Some(execution_id.to_string())
    );
    let note = live.next(Duration::from_secs(5)).await.unwrap().unwrap();
    assert_eq!(note.event.as_deref(), Some("note"));
    drop(live);

    // A lapsed watch (its stream gone for longer than the TTL) notifies nobody, and the
    // sweeper's pass removes it.
    sqlx::query("UPDATE execution_watches SET until = now() - interval '1 second'")
        .execute(&app.pool)
        .await
        .unwrap();
    add_note(&app, execution_id).await;
    assert_eq!(notified(&mut listener, Duration::from_secs(1)).await, None);
    assert_eq!(
        api_lite::live::forget_expired_watches(&app.pool)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        api_lite::live::forget_expired_watches(&app.pool)
            .await
            .unwrap(),
        0
    );
}

#[tokio::test]
async fn streams_are_capped_per_org_and_in_total() {
    let app = TestApp::spawn_with(TestOptions {
        configure: Some(Arc::new(|settings| {
            settings.api.max_event_streams = 3;
            settings.api.max_event_streams_per_org = 2;
        })),
        ..TestOptions::default()
    })
    .await
    .unwrap();
    let first_execution = queued_execution(&app, &app.token).await;
    let first_stream = SseReader::open(&app, &events_path(&first_execution), None)
        .await
        .unwrap();
    let _second_stream = SseReader::open(&app, &events_path(&first_execution), None)
        .await
        .unwrap();
    let (status, body) = refused(&app, &first_execution, &app.token).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "too_many_streams");

    let other_org = app.token_for(Uuid::now_v7());
    let other_execution = queued_execution(&app, &other_org).await;
    let _third_stream = SseReader::open_as(&app, &events_path(&other_execution), None, &other_org)
        .await
        .unwrap()
        .unwrap();
    let third_org = app.token_for(Uuid::now_v7());
    let third_execution = queued_execution(&app, &third_org).await;
    let (status, body) = refused(&app, &third_execution, &third_org).await;
    assert_eq!(status, 503, "the replica is at its total: {body}");
    assert_eq!(body["error"]["code"], "too_many_streams");

    // A run that ends closes its streams, and their places come back.
    let (status, _) = app
        .post(
            &format!("/v1/executions/{first_execution}/cancel"),
            json!({}),
        )
        .await
        .unwrap();
    assert_eq!(status, 202);
    let rest = first_stream.collect(Duration::from_secs(10)).await.unwrap();
    assert_eq!(rest.last().unwrap().event.as_deref(), Some("cancelled"));
    testkit::wait_until(Duration::from_secs(10), || async {
        SseReader::open_as(&app, &events_path(&third_execution), None, &third_org)
            .await
            .unwrap()
            .is_ok()
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_stream_closes_at_its_maximum_lifetime() {
    let app = TestApp::spawn_with(TestOptions {
        configure: Some(Arc::new(|settings| {
            settings.api.event_stream_max_secs = 2;
        })),
        ..TestOptions::default()
    })
    .await
    .unwrap();
    let execution_id = queued_execution(&app, &app.token).await;
    let events = SseReader::open(&app, &events_path(&execution_id), None)
        .await
        .unwrap()
        .collect(Duration::from_secs(10))
        .await
        .unwrap();
    let names: Vec<_> = events
        .iter()
        .filter_map(|event| event.event.clone())
        .collect();
    assert_eq!(names, ["queued", "stream_closed"]);
    let closed: Value = serde_json::from_str(&events[1].data).unwrap();
    assert_eq!(closed, json!({ "reason": "max_lifetime" }));
    assert_eq!(
        events[1].id, None,
        "Last-Event-ID still points at the last trace event"
    );
}

#[tokio::test]
async fn a_stream_closes_when_its_token_expires() {
    let app = TestApp::spawn().await.unwrap();
    let execution_id = queued_execution(&app, &app.token).await;
    let short_lived = app.mint(app.org_id, "viewer", 2, &[]);
    let events = SseReader::open_as(&app, &events_path(&execution_id), None, &short_lived)
        .await
        .unwrap()
        .unwrap()
        .collect(Duration::from_secs(10))
        .await
        .unwrap();
    let names: Vec<_> = events
        .iter()
        .filter_map(|event| event.event.clone())
        .collect();
    assert_eq!(names, ["queued", "stream_closed"]);
    let closed: Value = serde_json::from_str(&events[1].data).unwrap();
    assert_eq!(closed, json!({ "reason": "token_expired" }));
    // Past the token's expiry (and the verifier's few seconds of leeway) it opens nothing.
    tokio::time::sleep(Duration::from_secs(7)).await;
    let (status, _) = refused(&app, &execution_id, &short_lived).await;
    assert_eq!(status, 401);
}
