//! Limits a tenant cannot push past: the per-org rate limit, the concurrency limit and
//! the request timeout, and a bounded load test on loopback: one org's flood of searches
//! does not make another org's requests fail.

use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use serde_json::{Value, json};
use shared::config::{EmbeddingProvider, Settings};
use testkit::scripted::{EmbeddingReply, ScriptedEmbeddings};
use testkit::{TestApp, TestOptions};
use uuid::Uuid;

/// An app whose query embedder is a scripted endpoint answering after `latency`, with
/// `configure` applied on top.
async fn app_with_slow_embedder(
    latency: Duration,
    configure: impl Fn(&mut Settings) + Send + Sync + 'static,
) -> (TestApp, ScriptedEmbeddings) {
    let endpoint = ScriptedEmbeddings::start(vec![EmbeddingReply::Vectors])
        .await
        .unwrap();
    endpoint.set_latency(latency);
    let base_url = endpoint.base_url();
    let app = TestApp::spawn_with(TestOptions {
        configure: Some(Arc::new(move |settings| {
            settings.embedding.provider = EmbeddingProvider::Openai;
            settings.embedding.base_url = base_url.clone();
            settings.embedding.model = "scripted".into();
            settings.embedding.dimensions = Some(8);
            settings.api.scheduler_enabled = false;
            configure(settings);
        })),
        ..TestOptions::default()
    })
    .await
    .unwrap();
    (app, endpoint)
}

/// Status, `Retry-After` and body of a search by `token`.
async fn search(app: &TestApp, token: &str) -> (u16, Option<u64>, Value) {
    let response = app
        .http
        .post(app.url("/v1/search"))
        .bearer_auth(token)
        .json(&json!({ "query": "what is the refund window", "top_k": 3 }))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|value| value.to_str().unwrap().parse().unwrap());
    (
        status,
        retry_after,
        response.json().await.unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn each_org_has_its_own_rate_limit_answered_with_429_and_retry_after() {
    let app = TestApp::spawn_with(TestOptions {
        configure: Some(Arc::new(|settings| {
            settings.api.rate_limit_per_sec = 0.5;
            settings.api.rate_limit_burst = 3;
        })),
        ..TestOptions::default()
    })
    .await
    .unwrap();
    for _ in 0..3 {
        let (status, body) = app.get("/v1/files").await.unwrap();
        assert_eq!(status, 200, "{body}");
    }
    let refused = app
        .http
        .get(app.url("/v1/files"))
        .bearer_auth(&app.token)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status().as_u16(), 429);
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");

    // Another org still has its whole budget.
    let other = app.token_for(Uuid::now_v7());
    let (status, _) = app.get_as("/v1/files", &other).await.unwrap();
    assert_eq!(status, 200);
    // Without a valid token there is no org to charge: the answer stays 401.
    let (status, _) = app.get_as("/v1/files", "not-a-token").await.unwrap();
    assert_eq!(status, 401);
    // Health checks carry no token and are never rate limited.
    for _ in 0..5 {
        let health = app.http.get(app.url("/health")).send().await.unwrap();
        assert_eq!(health.status().as_u16(), 200);
    }
}

/// The load test: fifty concurrent searches from one org, each embedding its query on a
/// slow model, while another org works. The pool is small and waits briefly for a
/// connection, so a search that held a connection while embedding would starve the
/// other org into 503s; the busy org itself is held to its rate limit.
#[tokio::test]
async fn fifty_concurrent_searches_from_one_org_do_not_fail_another_orgs_requests() {
    let (app, endpoint) = app_with_slow_embedder(Duration::from_millis(500), |settings| {
        settings.database.max_connections = 4;
        settings.database.acquire_timeout_secs = 2;
        settings.api.rate_limit_per_sec = 10.0;
        settings.api.rate_limit_burst = 30;
    })
    .await;
    let busy_org = Uuid::now_v7();
    let busy = app.token_for(busy_org);
    let quiet_org = Uuid::now_v7();
    let quiet = app.token_for(quiet_org);
    // Both orgs have a file embedded with the model, so every search embeds its query.
    for org_id in [busy_org, quiet_org] {
        sqlx::query(
            "INSERT INTO files (id, org_id, name, content_type, size_bytes, object_key, status, embedding_model) \
             VALUES ($1, $2, 'indexed.txt', 'text/plain', 1, 'k', 'ready', 'openai:scripted@8')",
        )
        .bind(Uuid::now_v7())
        .bind(org_id)
        .execute(&app.pool)
        .await
        .unwrap();
    }

    let flood = join_all((0..50).map(|_| search(&app, &busy)));
    let other_org_work = async {
        // Let the flood take its connections first.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut answers = Vec::new();
        for round in 0..3 {
            let (status, body) = app.get_as("/v1/files", &quiet).await.unwrap();
            answers.push(("list files", status, body));
            let (status, _, body) = search(&app, &quiet).await;
            answers.push(("search", status, body));
            let (status, body) = app
                .post_as(
                    "/v1/nodes",
                    json!({ "title": format!("quiet {round}"), "instructions": "wait" }),
                    &quiet,
                )
                .await
                .unwrap();
            answers.push(("create node", status, body));
            let (status, body) = app.get_as("/v1/executions", &quiet).await.unwrap();
            answers.push(("list executions", status, body));
        }
        answers
    };
    let (flood, answers) = tokio::join!(flood, other_org_work);

    for (what, status, body) in &answers {
        assert!(
            (200..300).contains(status),
            "the quiet org's {what} failed during the flood: {status} {body}"
        );
    }
    let served = flood.iter().filter(|(status, ..)| *status == 200).count();
    let limited: Vec<_> = flood.iter().filter(|(status, ..)| *status == 429).collect();
    assert_eq!(
        served + limited.len(),
        50,
        "the busy org gets answers or 429s, never errors: {:?}",
        flood
            .iter()
            .filter(|(status, ..)| *status != 200 && *status != 429)
            .collect::<Vec<_>>()
    );
    assert!(served >= 30, "the burst is served: {served}");
    assert!(!limited.is_empty(), "the flood meets the rate limit");
    for (_, retry_after, body) in &limited {
        assert!(retry_after.is_some_and(|seconds| seconds >= 1), "{body}");
        assert_eq!(body["error"]["code"], "rate_limited");
    }
    assert!(
        endpoint.requests() >= served,
        "every served search embedded its query"
    );
}

#[tokio::test]
async fn beyond_the_concurrency_limit_requests_are_shed_with_503() {
    let (app, _endpoint) = app_with_slow_embedder(Duration::from_millis(1500), |settings| {
        settings.api.max_concurrent_requests = 2;
    })
    .await;
    // Six orgs, so no rate limit is involved.
    let tokens: Vec<String> = (0..6).map(|_| app.token_for(Uuid::now_v7())).collect();
    let answers = join_all(tokens.iter().map(|token| search(&app, token))).await;
    let served = answers.iter().filter(|(status, ..)| *status == 200).count();
    let shed: Vec<_> = answers
        .iter()
        .filter(|(status, ..)| *status == 503)
        .collect();
    assert_eq!(served + shed.len(), 6, "{answers:?}");
    assert!(
        (1..=2).contains(&served),
        "at most the limit is served: {answers:?}"
    );
    assert!(shed.len() >= 4, "{answers:?}");
    for (_, retry_after, body) in shed {
        assert_eq!(body["error"]["code"], "overloaded");
        assert_eq!(*retry_after, Some(1));
    }
    // The slots come back once the slow requests are done.
    let (status, _, body) = search(&app, &tokens[0]).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn a_request_that_takes_too_long_is_stopped_with_503_timeout() {
    let (app, _endpoint) = app_with_slow_embedder(Duration::from_secs(4), |settings| {
        settings.api.request_timeout_secs = 1;
    })
    .await;
    let (status, retry_after, body) = search(&app, &app.token).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "timeout");
    assert_eq!(retry_after, Some(1));
    // Quick requests are unaffected.
    let (status, _) = app.get("/v1/files").await.unwrap();
    assert_eq!(status, 200);
}
