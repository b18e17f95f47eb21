//! `recorded-llm FILE [LISTEN]`: an OpenAI-compatible `/v1/chat/completions` endpoint that
//! replays recorded completions from a JSON file (see `testkit/recordings/`). `make demo`
//! uses it when no live model is configured; it is labelled as recorded in the output.
//!
//! The reply is chosen by the agent step: the number of assistant messages already in the
//! request's conversation, so a redone step gets the same reply. Past the end of the
//! recording the last reply repeats. `{{answer}}` in tool-call arguments becomes the
//! latest answer a person gave through `ask_human`.

use std::sync::Arc;

use anyhow::Context;
use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

struct Recording {
    model: String,
    steps: Vec<Value>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let file = args.next().context("usage: recorded-llm FILE [LISTEN]")?;
    let listen = args.next().unwrap_or_else(|| "127.0.0.1:0".into());
    let text = std::fs::read_to_string(&file).with_context(|| format!("reading {file}"))?;
    let recorded: Value = serde_json::from_str(&text).with_context(|| format!("parsing {file}"))?;
    let steps = recorded["steps"]
        .as_array()
        .filter(|steps| !steps.is_empty())
        .cloned()
        .with_context(|| format!("{file} has no steps"))?;
    let recording = Arc::new(Recording {
        model: recorded["model"].as_str().unwrap_or("recorded").to_string(),
        steps,
    });
    let router = Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/health", get(|| async { "ok" }))
        .with_state(recording);
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    println!(
        "recorded-llm: replaying {file} at http://{}/v1 (recorded responses, not a live model)",
        listener.local_addr()?
    );
    axum::serve(listener, router).await?;
    Ok(())
}

/// The latest `{"answer": …}` tool result in the conversation.
fn latest_answer(messages: &[Value]) -> Option<String> {
    messages.iter().rev().find_map(|message| {
        if message["role"] != "tool" {
            return None;
        }
        let content: Value = serde_json::from_str(message["content"].as_str()?).ok()?;
        content["answer"].as_str().map(str::to_string)
    })
}

async fn chat(State(recording): State<Arc<Recording>>, Json(request): Json<Value>) -> Json<Value> {
    let messages = request["messages"].as_array().cloned().unwrap_or_default();
    let step = messages
        .iter()
        .filter(|message| message["role"] == "assistant")
        .count();
    let entry = &recording.steps[step.min(recording.steps.len() - 1)];
    let mut message = entry["message"].clone();
    if let (Some(answer), Some(calls)) = (
        latest_answer(&messages),
        message["tool_calls"].as_array_mut(),
    ) {
        // The answer goes into a JSON string inside a JSON string: escape it as such.
        let quoted = serde_json::to_string(&answer).unwrap_or_else(|_| "\"\"".into());
        let escaped = &quoted[1..quoted.len() - 1];
        for call in calls {
            if let Some(arguments) = call["function"]["arguments"].as_str() {
                call["function"]["arguments"] = json!(arguments.replace("{{answer}}", escaped));
            }
        }
    }
    let finish_reason = if message["tool_calls"].is_array() {
        "tool_calls"
    } else {
        "stop"
    };
    let prompt_tokens = entry["usage"]["prompt_tokens"].as_u64().unwrap_or(0);
    let completion_tokens = entry["usage"]["completion_tokens"].as_u64().unwrap_or(0);
    Json(json!({
        "id": format!("chatcmpl-recorded-{step}"),
        "object": "chat.completion",
        "model": request["model"].as_str().unwrap_or(&recording.model),
        "choices": [{ "index": 0, "message": message, "finish_reason": finish_reason }],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens
        }
    }))
}
