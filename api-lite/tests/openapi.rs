//! The OpenAPI document is the contract: it names every route the router serves (and no
//! other), every operation's errors in the one error shape, and `docs/openapi.json` is
//! exactly what the code generates. `/openapi.json` and `/docs` are served, the page
//! with no external asset.

use std::collections::BTreeSet;

use serde_json::Value;
use testkit::{TestApp, TestOptions};

const METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];

fn document() -> Value {
    serde_json::from_str(api_lite::openapi::document_json()).unwrap()
}

#[test]
fn the_committed_document_is_what_the_code_generates() {
    let path = testkit::workspace_root().join("docs/openapi.json");
    let generated = api_lite::openapi::document_json();
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, generated).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "docs/openapi.json differs from the code's document; run \
         `cargo run -p api-lite -- openapi > docs/openapi.json` (or this test with UPDATE_OPENAPI=1) and commit it"
    );
}

#[test]
fn the_document_is_openapi_3_1_and_every_api_operation_has_auth_and_the_error_shape() {
    let document = document();
    assert_eq!(document["openapi"], "3.1.0");
    let error = &document["components"]["schemas"]["ErrorBody"];
    assert_eq!(error["required"], serde_json::json!(["error"]), "{error}");
    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let responses = operation["responses"].as_object().unwrap();
            assert!(
                responses.keys().any(|status| status.starts_with('2')),
                "{method} {path} documents no success"
            );
            assert!(
                responses.contains_key("500") && responses.contains_key("503"),
                "{method} {path}"
            );
            if path.starts_with("/v1/") {
                assert_eq!(
                    operation["security"],
                    serde_json::json!([{ "bearer": [] }]),
                    "{method} {path} has no bearer auth"
                );
                for status in ["401", "422", "429"] {
                    assert!(
                        responses.contains_key(status),
                        "{method} {path} lacks {status}"
                    );
                }
                if path.contains('{') {
                    assert!(responses.contains_key("404"), "{method} {path} lacks 404");
                }
                if path.starts_with("/v1/ops/") {
                    assert!(responses.contains_key("403"), "{method} {path} lacks 403");
                }
            }
            // Every error answer is the one shape.
            for (status, response) in responses {
                if !status.starts_with('4') && status != "500" && status != "503" {
                    continue;
                }
                let schema = match response.get("$ref") {
                    Some(reference) => {
                        let name = reference.as_str().unwrap().rsplit('/').next().unwrap();
                        document["components"]["responses"][name]["content"]["application/json"]["schema"].clone()
                    }
                    None => response["content"]["application/json"]["schema"].clone(),
                };
                if path == "/ready" && status == "503" {
                    continue;
                }
                assert_eq!(
                    schema["$ref"], "#/components/schemas/ErrorBody",
                    "{method} {path} {status} is not the error shape"
                );
            }
        }
    }
}

/// A value for a path parameter, so the route matches.
fn fill(path: &str) -> String {
    path.replace("{queue}", "file-jobs")
        .replace("{message_id}", "m-1")
        .replace("{decision}", "approve")
        .replace("{input_id}", "00000000-0000-0000-0000-000000000000")
        .replace(
            "/v1/ops/webhooks/deliveries/{id}",
            "/v1/ops/webhooks/deliveries/1",
        )
        .replace("{id}", "00000000-0000-0000-0000-000000000000")
}

#[tokio::test]
async fn the_router_serves_exactly_the_documented_operations() {
    let app = TestApp::spawn_with(TestOptions {
        // Some 250 requests in a burst: a 429 would hide whether a route exists.
        configure: Some(std::sync::Arc::new(|settings| {
            settings.api.rate_limit_per_sec = 0.0;
            settings.api.scheduler_enabled = false;
        })),
        ..TestOptions::default()
    })
    .await
    .unwrap();
    let token = app.mint(
        app.org_id,
        "contract",
        600,
        &[api_lite::auth::OPS_ROLE, api_lite::auth::APPROVER_ROLE],
    );
    let mut routed = BTreeSet::new();
    for (path, _) in api_lite::routes::table() {
        for method in METHODS {
            // No body: every route with a JSON body refuses it (422) before doing
            // anything, and every id is the nil uuid, which names nothing.
            let response = app
                .http
                .request(method.parse().unwrap(), app.url(&fill(path)))
                .bearer_auth(&token)
                .timeout(std::time::Duration::from_secs(10))
                .send()
                .await
                .unwrap();
            if response.status() != 405 {
                routed.insert(format!("{method} {path}"));
            }
        }
    }
    let document = document();
    let documented: BTreeSet<String> = document["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .map(move |method| format!("{} {path}", method.to_uppercase()))
        })
        .collect();
    let undocumented: Vec<_> = routed.difference(&documented).collect();
    let unrouted: Vec<_> = documented.difference(&routed).collect();
    assert!(
        undocumented.is_empty(),
        "routes missing from the document: {undocumented:?}"
    );
    assert!(
        unrouted.is_empty(),
        "documented but not routed: {unrouted:?}"
    );
    assert!(routed.len() > 40, "only {} operations found", routed.len());
}

#[tokio::test]
async fn the_document_and_a_self_contained_reference_page_are_served() {
    let app = TestApp::spawn().await.unwrap();
    let served: Value = app
        .http
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(served, document());
    let page = app.http.get(app.url("/docs")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(
        page.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let html = page.text().await.unwrap();
    assert!(html.contains("fetch(\"/openapi.json\")"));
    assert!(
        html.contains("Authorization"),
        "the page cannot send a token"
    );
    for external in [
        "http://",
        "https://",
        "src=",
        "<link rel=\"stylesheet\"",
        "@import",
        "//cdn",
    ] {
        assert!(
            !html.contains(external),
            "the page loads something from elsewhere: {external}"
        );
    }
}

#[test]
fn every_link_names_an_operation_of_the_document_by_its_operation_id() {
    let document = document();
    let mut operation_ids = BTreeSet::new();
    for item in document["paths"].as_object().unwrap().values() {
        for operation in item.as_object().unwrap().values() {
            if let Some(id) = operation["operationId"].as_str() {
                assert!(operation_ids.insert(id.to_string()), "{id} twice");
            }
        }
    }
    let mut links = 0;
    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            for (status, response) in operation["responses"].as_object().unwrap() {
                let Some(response_links) = response.get("links") else {
                    continue;
                };
                for (name, link) in response_links.as_object().unwrap() {
                    links += 1;
                    // The specification's spelling: tools ignore `operation_id`.
                    let target = link["operationId"].as_str().unwrap_or_else(|| {
                        panic!("{method} {path} {status} link {name} has no operationId: {link}")
                    });
                    assert!(
                        operation_ids.contains(target),
                        "{method} {path} {status} link {name} opens {target}, which is no operation"
                    );
                    assert!(link.get("operation_id").is_none(), "{link}");
                }
            }
        }
    }
    assert!(links >= 20, "only {links} links");
}
