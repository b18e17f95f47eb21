//! The model behind the agent: a [`ChatModel`] trait (so tests and benchmarks can swap
//! it) and [`OpenAiChat`], any OpenAI-compatible `POST {base_url}/chat/completions`
//! endpoint with tool calling, plus the cost of a call from the price table.
//!
//! This talks to the endpoint with reqwest and the OpenAI JSON shape rather than through
//! async-openai, for the reasons `shared::embed::openai` gives: async-openai 0.28 hides
//! the HTTP status and `Retry-After`, and retries 429 and 5xx itself for minutes with the
//! unmaintained `backoff` crate; we need the status to tell permanent from transient
//! failures, one retry policy (backon) that we control, and a request future we can drop
//! the instant a cancel arrives. Messages stay in the OpenAI JSON shape end to end: that
//! is also what the checkpoint stores.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use backon::{ExponentialBuilder, Retryable};
use reqwest::StatusCode;
use reqwest::header::RETRY_AFTER;
use serde_json::{Value, json};
use shared::config::ModelPrice;

/// One tool call the model asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    /// The raw JSON text the model wrote; it may be malformed.
    pub arguments: String,
}

/// A finished model call.
#[derive(Debug, Clone)]
pub struct Completion {
    /// The assistant message as it goes into the conversation.
    pub message: Value,
    pub tool_calls: Vec<ToolCall>,
    pub text: Option<String>,
    pub tokens_in: u64,
    pub tokens_out: u64,
    /// Requests made, retries included.
    pub attempts: u32,
    pub latency: Duration,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum LlmError {
    /// Retries ran out on 429, 5xx or timeouts: the queue tries again later.
    #[error("model unavailable: {message}")]
    Transient {
        message: String,
        retry_after: Option<Duration>,
    },
    /// The request itself is wrong (bad model name, bad key, unreadable answer).
    #[error("{code}: {message}")]
    Permanent { code: &'static str, message: String },
}

#[async_trait]
pub trait ChatModel: Send + Sync + 'static {
    async fn complete(
        &self,
        model: &str,
        messages: &[Value],
        tools: &[Value],
    ) -> Result<Completion, LlmError>;
}

#[derive(Clone)]
pub struct OpenAiChatOptions {
    /// API root without `/chat/completions`.
    pub base_url: String,
    pub api_key: Option<String>,
    pub request_timeout: Duration,
    pub max_retries: usize,
    pub initial_backoff: Duration,
    /// A `Retry-After` longer than this ends the retries; the queue waits instead.
    pub max_backoff: Duration,
}

pub struct OpenAiChat {
    http: reqwest::Client,
    endpoint: String,
    options: OpenAiChatOptions,
}

impl OpenAiChat {
    pub fn new(options: OpenAiChatOptions) -> Result<Self, LlmError> {
        let http = reqwest::Client::builder()
            .timeout(options.request_timeout)
            .build()
            .map_err(|error| LlmError::Permanent {
                code: "model_config_invalid",
                message: format!("cannot build the http client: {error}"),
            })?;
        let endpoint = format!(
            "{}/chat/completions",
            options.base_url.trim_end_matches('/')
        );
        Ok(Self {
            http,
            endpoint,
            options,
        })
    }

    async fn send_once(&self, body: &Value) -> Result<Value, AttemptError> {
        let mut request = self.http.post(&self.endpoint).json(body);
        if let Some(api_key) = &self.options.api_key {
            request = request.bearer_auth(api_key);
        }
        let response = request.send().await.map_err(|error| {
            if error.is_timeout() || error.is_connect() || error.is_request() {
                AttemptError::Retryable {
                    message: format!("request failed: {error}"),
                    retry_after: None,
                }
            } else {
                AttemptError::Fatal(LlmError::Permanent {
                    code: "model_request_failed",
                    message: error.to_string(),
                })
            }
        })?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.trim().parse::<f64>().ok())
            .filter(|seconds| seconds.is_finite() && *seconds >= 0.0)
            .map(Duration::from_secs_f64);
        if status == StatusCode::TOO_MANY_REQUESTS
            || status == StatusCode::REQUEST_TIMEOUT
            || status.is_server_error()
        {
            let text = response.text().await.unwrap_or_default();
            return Err(AttemptError::Retryable {
                message: format!("status {status}: {}", truncate(&text, 300)),
                retry_after,
            });
        }
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            return Err(AttemptError::Fatal(LlmError::Permanent {
                code: "model_request_rejected",
                message: format!("status {status}: {}", truncate(&text, 300)),
            }));
        }
        response.json::<Value>().await.map_err(|error| {
            if error.is_timeout() {
                AttemptError::Retryable {
                    message: format!("reading the answer timed out: {error}"),
                    retry_after: None,
                }
            } else {
                AttemptError::Fatal(LlmError::Permanent {
                    code: "model_answer_unreadable",
                    message: error.to_string(),
                })
            }
        })
    }
}

enum AttemptError {
    Retryable {
        message: String,
        retry_after: Option<Duration>,
    },
    Fatal(LlmError),
}

fn truncate(text: &str, limit: usize) -> &str {
    match text.char_indices().nth(limit) {
        Some((end, _)) => &text[..end],
        None => text,
    }
}

#[async_trait]
impl ChatModel for OpenAiChat {
    async fn complete(
        &self,
        model: &str,
        messages: &[Value],
        tools: &[Value],
    ) -> Result<Completion, LlmError> {
        let mut body = json!({ "model": model, "messages": messages });
        if !tools.is_empty() {
            body["tools"] = Value::Array(tools.to_vec());
            body["tool_choice"] = json!("auto");
        }
        let backoff = ExponentialBuilder::default()
            .with_min_delay(self.options.initial_backoff)
            .with_max_delay(self.options.max_backoff)
            .with_max_times(self.options.max_retries)
            .with_jitter();
        let max_backoff = self.options.max_backoff;
        let started = Instant::now();
        let mut attempts = 0u32;
        let answer = (|| {
            attempts += 1;
            self.send_once(&body)
        })
        .retry(backoff)
        .when(|error: &AttemptError| matches!(error, AttemptError::Retryable { .. }))
        .adjust(|error, next_delay| {
            let next_delay = next_delay?;
            match error {
                AttemptError::Retryable {
                    retry_after: Some(retry_after),
                    ..
                } if *retry_after > max_backoff => None,
                AttemptError::Retryable {
                    retry_after: Some(retry_after),
                    ..
                } => Some((*retry_after).max(next_delay)),
                _ => Some(next_delay),
            }
        })
        .notify(|error, delay| {
            if let AttemptError::Retryable { message, .. } = error {
                tracing::warn!(delay_ms = delay.as_millis() as u64, error = %message, "model request failed, retrying");
            }
        })
        .await
        .map_err(|error| match error {
            AttemptError::Fatal(error) => error,
            AttemptError::Retryable {
                message,
                retry_after,
            } => LlmError::Transient {
                message: format!("after {attempts} attempts: {message}"),
                retry_after,
            },
        })?;
        parse_completion(&answer, attempts, started.elapsed())
    }
}

/// Reads an OpenAI chat completion into a [`Completion`].
pub fn parse_completion(
    answer: &Value,
    attempts: u32,
    latency: Duration,
) -> Result<Completion, LlmError> {
    let unreadable = |what: &str| LlmError::Permanent {
        code: "model_answer_unreadable",
        message: format!("the model's answer has no {what}"),
    };
    let message = answer["choices"]
        .get(0)
        .map(|choice| &choice["message"])
        .filter(|message| message.is_object())
        .ok_or_else(|| unreadable("choices[0].message"))?;
    let text = message["content"].as_str().map(str::to_string);
    let mut tool_calls = Vec::new();
    if let Some(calls) = message["tool_calls"].as_array() {
        for call in calls {
            let id = call["id"]
                .as_str()
                .ok_or_else(|| unreadable("tool call id"))?;
            let name = call["function"]["name"]
                .as_str()
                .ok_or_else(|| unreadable("tool call name"))?;
            let arguments = match &call["function"]["arguments"] {
                Value::String(text) => text.clone(),
                Value::Null => String::new(),
                other => other.to_string(),
            };
            tool_calls.push(ToolCall {
                id: id.to_string(),
                name: name.to_string(),
                arguments,
            });
        }
    }
    // Only the fields the conversation needs, in a stable shape.
    let mut assistant = json!({ "role": "assistant", "content": text });
    if !tool_calls.is_empty() {
        assistant["tool_calls"] = Value::Array(
            tool_calls
                .iter()
                .map(|call| json!({ "id": call.id, "type": "function", "function": { "name": call.name, "arguments": call.arguments } }))
                .collect(),
        );
    }
    Ok(Completion {
        message: assistant,
        tool_calls,
        text,
        tokens_in: answer["usage"]["prompt_tokens"].as_u64().unwrap_or(0),
        tokens_out: answer["usage"]["completion_tokens"].as_u64().unwrap_or(0),
        attempts,
        latency,
    })
}

/// The cost of a call in US dollars; `None` when the model has no price.
pub fn cost_usd(price: Option<&ModelPrice>, tokens_in: u64, tokens_out: u64) -> Option<f64> {
    price.map(|price| {
        (tokens_in as f64 * price.input_per_million_usd
            + tokens_out as f64 * price.output_per_million_usd)
            / 1_000_000.0
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completions_with_tool_calls_parse() {
        let answer = json!({
            "choices": [{ "message": { "role": "assistant", "content": null, "tool_calls": [
                { "id": "c1", "type": "function", "function": { "name": "ask_human", "arguments": "{\"question\":\"why?\"}" } }
            ] } }],
            "usage": { "prompt_tokens": 12, "completion_tokens": 3 }
        });
        let completion = parse_completion(&answer, 1, Duration::ZERO).unwrap();
        assert_eq!(completion.tool_calls.len(), 1);
        assert_eq!(completion.tool_calls[0].name, "ask_human");
        assert_eq!(completion.tokens_in, 12);
        assert_eq!(completion.message["tool_calls"][0]["id"], "c1");
        assert!(parse_completion(&json!({ "choices": [] }), 1, Duration::ZERO).is_err());
    }

    #[test]
    fn cost_follows_the_price_table() {
        let price = ModelPrice {
            input_per_million_usd: 1.0,
            output_per_million_usd: 2.0,
        };
        assert_eq!(cost_usd(Some(&price), 1_000_000, 500_000), Some(2.0));
        assert_eq!(cost_usd(None, 10, 10), None);
    }
}
