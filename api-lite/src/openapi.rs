//! The OpenAPI 3.1 document of the API, generated from the handlers' `#[utoipa::path]`
//! annotations and the request and response types, served at `/openapi.json`; and the
//! reference page at `/docs`, which renders it and sends calls with a token.
//!
//! [`Conventions`] adds what every operation shares instead of repeating it on each
//! handler: bearer auth on `/v1`, and the error answers any route can give (401, 422,
//! 429, 500, 503; 404 on a path with an id; 403 on ops routes), all in the one
//! [`ErrorBody`] shape.
//!
//! `docs/openapi.json` is this document, committed; a test fails when they differ
//! (`api-lite openapi > docs/openapi.json` writes it again).

use std::sync::OnceLock;

use axum::http::header;
use axum::response::IntoResponse;
use utoipa::openapi::link::LinkBuilder;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Response, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use crate::error::{ErrorBody, ErrorDetail};
use crate::{ops, routes};

/// The reference page: no external asset, it reads `/openapi.json` from the same origin.
const DOCS_PAGE: &str = include_str!("docs_page.html");

/// The name of the bearer security scheme.
const BEARER: &str = "bearer";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "GlassBox Fleet API",
        description = "Files in, searchable chunks out; agent executions with a trace, human input and approvals; \
                       fleet-wide ops. Every `/v1` call takes `Authorization: Bearer <token>`; every error answers \
                       `{\"error\": {\"code\", \"message\"}}` with the request's `x-request-id` header.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    paths(
        routes::health::health,
        routes::health::ready,
        document_route,
        docs_page,
        routes::files::create,
        routes::files::list,
        routes::files::show,
        routes::files::update,
        routes::files::delete,
        routes::files::confirm,
        routes::files::reprocess,
        routes::search::search,
        routes::nodes::create,
        routes::nodes::show,
        routes::nodes::update,
        routes::nodes::executions,
        routes::nodes::execute,
        routes::executions::list,
        routes::executions::show,
        routes::executions::trace,
        routes::events::stream,
        routes::executions::pause,
        routes::executions::resume,
        routes::executions::cancel,
        routes::executions::input,
        routes::executions::decide,
        routes::webhooks::create,
        routes::webhooks::list,
        routes::webhooks::show,
        routes::webhooks::delete,
        routes::webhooks::rotate_secret,
        routes::webhooks::deliveries,
        ops::page,
        ops::queues::overview,
        ops::dlq::list,
        ops::dlq::show,
        ops::dlq::redrive,
        ops::dlq::discard,
        ops::dlq::task,
        ops::stuck::list,
        ops::stuck::requeue,
        ops::views::failures,
        ops::views::executions,
        ops::audit::list,
        ops::schedules::list,
        ops::schedules::create,
        ops::schedules::remove,
        ops::schedules::run_now,
        ops::webhooks::list,
        ops::webhooks::redeliver,
    ),
    components(schemas(ErrorBody, ErrorDetail)),
    modifiers(&Conventions),
    tags(
        (name = "files", description = "Upload (presigned PUT), confirm, inspect, list, delete, reprocess"),
        (name = "search", description = "Semantic search over the caller's chunks"),
        (name = "nodes", description = "Tasks for agents, and starting executions of them"),
        (name = "executions", description = "Agent runs: status, trace, live events, control, input, approvals"),
        (name = "webhooks", description = "Per-org webhook endpoints (Standard Webhooks signatures) and their deliveries"),
        (name = "ops", description = "Fleet-wide operations (ops role)"),
        (name = "health", description = "Liveness, readiness and this document"),
    )
)]
pub struct ApiDoc;

/// The error answers every operation shares: (status, component name, description).
const SHARED_ERRORS: [(&str, &str, &str); 8] = [
    (
        "401",
        "Unauthorized",
        "`unauthorized`: missing, expired or invalid bearer token",
    ),
    (
        "403",
        "Forbidden",
        "`forbidden`: the token lacks the role this route needs",
    ),
    (
        "404",
        "NotFound",
        "`not_found`: no such resource in the caller's org (a malformed id included)",
    ),
    (
        "422",
        "InvalidRequest",
        "`invalid_request` or a more precise code: the request breaks a rule the message names",
    ),
    (
        "429",
        "TooManyRequests",
        "`rate_limited` or `too_many_streams`: wait `Retry-After` seconds",
    ),
    (
        "500",
        "Internal",
        "`internal`: quote the `x-request-id` header",
    ),
    (
        "503",
        "Unavailable",
        "`unavailable` (a dependency), `overloaded` or `timeout`: retry after `Retry-After` seconds",
    ),
    ("413", "TooLarge", "`too_large`: over a size limit"),
];

/// Adds the bearer scheme and the shared error answers to every operation.
struct Conventions;

impl Modify for Conventions {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
        for (_, name, description) in SHARED_ERRORS {
            components
                .responses
                .insert(name.to_string(), RefOr::T(error_response(description)));
        }
        for (path, item) in openapi.paths.paths.iter_mut() {
            let operations = [
                ("get", &mut item.get),
                ("post", &mut item.post),
                ("put", &mut item.put),
                ("patch", &mut item.patch),
                ("delete", &mut item.delete),
            ];
            for (method, operation) in operations {
                if let Some(operation) = operation {
                    operation.operation_id = Some(operation_id(method, path));
                    add_shared(path, operation);
                }
            }
        }
        add_links(openapi);
    }
}

/// A unique operation id from the method and path: `get_v1_files_id`.
fn operation_id(method: &str, path: &str) -> String {
    let path: String = path
        .trim_matches('/')
        .chars()
        .filter(|character| !matches!(character, '{' | '}'))
        .map(|character| {
            if character.is_ascii_alphanumeric() {
                character
            } else {
                '_'
            }
        })
        .collect();
    format!("{method}_{path}")
}

/// OpenAPI links: what a created resource's id opens next, so tools (schemathesis'
/// stateful phase) can chain calls.
/// One OpenAPI link: from a response of one operation to another operation.
struct LinkSpec {
    /// Method, path and status of the response the link is on.
    from: (&'static str, &'static str, &'static str),
    name: &'static str,
    /// Method and path of the operation it opens.
    to: (&'static str, &'static str),
    /// The parameter it fills, and where the value comes from.
    parameter: (&'static str, &'static str),
}

const LINKS: [LinkSpec; 20] = [
    LinkSpec {
        from: ("post", "/v1/files", "201"),
        name: "GetFile",
        to: ("get", "/v1/files/{id}"),
        parameter: ("id", "$response.body#/id"),
    },
    LinkSpec {
        from: ("post", "/v1/files", "201"),
        name: "ConfirmFile",
        to: ("post", "/v1/files/{id}/confirm"),
        parameter: ("id", "$response.body#/id"),
    },
    LinkSpec {
        from: ("post", "/v1/files", "201"),
        name: "DeleteFile",
        to: ("delete", "/v1/files/{id}"),
        parameter: ("id", "$response.body#/id"),
    },
    LinkSpec {
        from: ("post", "/v1/nodes", "201"),
        name: "GetNode",
        to: ("get", "/v1/nodes/{id}"),
        parameter: ("id", "$response.body#/id"),
    },
    LinkSpec {
        from: ("post", "/v1/nodes", "201"),
        name: "UpdateNode",
        to: ("patch", "/v1/nodes/{id}"),
        parameter: ("id", "$response.body#/id"),
    },
    LinkSpec {
        from: ("post", "/v1/nodes", "201"),
        name: "ExecuteNode",
        to: ("post", "/v1/nodes/{id}/execute"),
        parameter: ("id", "$response.body#/id"),
    },
    LinkSpec {
        from: ("post", "/v1/nodes", "201"),
        name: "NodeExecutions",
        to: ("get", "/v1/nodes/{id}/executions"),
        parameter: ("id", "$response.body#/id"),
    },
    LinkSpec {
        from: ("post", "/v1/nodes/{id}/execute", "202"),
        name: "GetExecution",
        to: ("get", "/v1/executions/{id}"),
        parameter: ("id", "$response.body#/id"),
    },
    LinkSpec {
        from: ("post", "/v1/nodes/{id}/execute", "202"),
        name: "GetTrace",
        to: ("get", "/v1/executions/{id}/trace"),
        parameter: ("id", "$response.body#/id"),
    },
    LinkSpec {
        from: ("post", "/v1/nodes/{id}/execute", "202"),
        name: "PauseExecution",
        to: ("post", "/v1/executions/{id}/pause"),
        parameter: ("id", "$response.body#/id"),
    },
    LinkSpec {
        from: ("post", "/v1/nodes/{id}/execute", "202"),
        name: "CancelExecution",
        to: ("post", "/v1/executions/{id}/cancel"),
        parameter: ("id", "$response.body#/id"),
    },
    LinkSpec {
        from: ("post", "/v1/nodes/{id}/execute", "202"),
        name: "AnswerExecution",
        to: ("post", "/v1/executions/{id}/input"),
        parameter: ("id", "$response.body#/id"),
    },
    LinkSpec {
        from: ("post", "/v1/webhooks", "201"),
        name: "GetWebhook",
        to: ("get", "/v1/webhooks/{id}"),
        parameter: ("id", "$response.body#/id"),
    },
    LinkSpec {
        from: ("post", "/v1/webhooks", "201"),
        name: "RotateSecret",
        to: ("post", "/v1/webhooks/{id}/rotate-secret"),
        parameter: ("id", "$response.body#/id"),
    },
    LinkSpec {
        from: ("post", "/v1/webhooks", "201"),
        name: "Deliveries",
        to: ("get", "/v1/webhooks/{id}/deliveries"),
        parameter: ("id", "$response.body#/id"),
    },
    LinkSpec {
        from: ("post", "/v1/webhooks", "201"),
        name: "DeleteWebhook",
        to: ("delete", "/v1/webhooks/{id}"),
        parameter: ("id", "$response.body#/id"),
    },
    LinkSpec {
        from: ("post", "/v1/ops/schedules", "201"),
        name: "RunSchedule",
        to: ("post", "/v1/ops/schedules/{id}/run"),
        parameter: ("id", "$response.body#/id"),
    },
    LinkSpec {
        from: ("post", "/v1/ops/schedules", "201"),
        name: "DeleteSchedule",
        to: ("delete", "/v1/ops/schedules/{id}"),
        parameter: ("id", "$response.body#/id"),
    },
    LinkSpec {
        from: ("post", "/v1/ops/dlq/{queue}/redrive", "202"),
        name: "GetTask",
        to: ("get", "/v1/ops/tasks/{id}"),
        parameter: ("id", "$response.body#/task/id"),
    },
    LinkSpec {
        from: ("post", "/v1/executions/{id}/resume", "202"),
        name: "GetResumed",
        to: ("get", "/v1/executions/{id}"),
        parameter: ("id", "$response.body#/id"),
    },
];

fn add_links(openapi: &mut utoipa::openapi::OpenApi) {
    for LinkSpec {
        from: (method, path, status),
        name,
        to: (target_method, target_path),
        parameter: (parameter, value),
    } in LINKS
    {
        let Some(item) = openapi.paths.paths.get_mut(path) else {
            continue;
        };
        let operation = match method {
            "get" => item.get.as_mut(),
            "post" => item.post.as_mut(),
            _ => None,
        };
        let Some(RefOr::T(response)) =
            operation.and_then(|operation| operation.responses.responses.get_mut(status))
        else {
            continue;
        };
        response.links.insert(
            name.to_string(),
            RefOr::T(
                LinkBuilder::new()
                    .operation_id(operation_id(target_method, target_path))
                    .parameter(parameter, value)
                    .build(),
            ),
        );
    }
}

fn add_shared(path: &str, operation: &mut Operation) {
    let api = path.starts_with("/v1/");
    if api && operation.security.is_none() {
        operation.security = Some(vec![SecurityRequirement::new(BEARER, Vec::<String>::new())]);
    }
    for (status, name, _) in SHARED_ERRORS {
        let applies = match status {
            "401" | "422" | "429" => api,
            "403" => path.starts_with("/v1/ops/"),
            "404" => api && path.contains('{'),
            "413" => false,
            _ => true,
        };
        if applies {
            operation
                .responses
                .responses
                .entry(status.to_string())
                .or_insert_with(|| RefOr::Ref(Ref::new(format!("#/components/responses/{name}"))));
        }
    }
}

fn error_response(description: &str) -> Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build(),
        )
        .build()
}

/// utoipa 5 writes a Link Object's fields in snake case (`operation_id`), which no tool
/// reads: the specification's names are camel case (`operationId`). Renames them in every
/// response's links.
fn spell_link_fields(document: &mut serde_json::Value) {
    const RENAMES: [(&str, &str); 3] = [
        ("operation_id", "operationId"),
        ("operation_ref", "operationRef"),
        ("request_body", "requestBody"),
    ];
    let Some(paths) = document["paths"].as_object_mut() else {
        return;
    };
    let links = paths
        .values_mut()
        .filter_map(serde_json::Value::as_object_mut)
        .flat_map(|item| item.values_mut())
        .filter_map(|operation| operation["responses"].as_object_mut())
        .flat_map(|responses| responses.values_mut())
        .filter_map(|response| response.get_mut("links")?.as_object_mut())
        .flat_map(|links| links.values_mut())
        .filter_map(serde_json::Value::as_object_mut);
    for link in links {
        for (from, to) in RENAMES {
            if let Some(value) = link.remove(from) {
                link.insert(to.to_string(), value);
            }
        }
    }
}

/// The document as served and committed: pretty JSON with a final newline.
pub fn document_json() -> &'static str {
    static DOCUMENT: OnceLock<String> = OnceLock::new();
    DOCUMENT.get_or_init(|| {
        let mut document =
            serde_json::to_value(ApiDoc::openapi()).expect("the OpenAPI document serializes");
        spell_link_fields(&mut document);
        let mut json =
            serde_json::to_string_pretty(&document).expect("the OpenAPI document serializes");
        json.push('\n');
        json
    })
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "health", security(()),
    responses((status = 200, description = "The OpenAPI 3.1 document", body = serde_json::Value)))]
pub async fn document_route() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        document_json(),
    )
}

/// The API reference: every operation, with a form to send it with a token.
#[utoipa::path(get, path = "/docs", tag = "health", security(()),
    responses((status = 200, description = "The reference page", body = String, content_type = "text/html")))]
pub async fn docs_page() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        DOCS_PAGE,
    )
}
