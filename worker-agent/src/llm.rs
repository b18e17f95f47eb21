//! The model behind the agent: a [`ChatModel`] trait (so tests and benchmarks can swap
//! it) and [`OpenAiChat`], any OpenAI-compatible `POST {base_url}/chat/completions`
//! endpoint with tool calling, plus the cost of a call from the price table.
//!
//! The HTTP call and its retries are `shared::openai_http`, shared with the embedder (it
//! says why not async-openai). Every call carries `max_tokens`, so one answer cannot
//! spend past the run's budget. Messages stay in the OpenAI JSON shape end to end: that
//! is also what the checkpoint stores.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::{Value, json};
use shared::config::ModelPrice;
use shared::openai_http::{CallError, HttpOptions, OpenAiHttp};

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
    /// One completion of `conversation` by `model`, offering `tools`, writing at most
    /// `max_tokens` tokens.
    async fn complete(
        &self,
        model: &str,
        conversation: &Conversation,
        tools: &ToolSchemas,
        max_tokens: u32,
    ) -> Result<Completion, LlmError>;
}

/// The conversation as the model receives it: each message written as JSON once, when
/// it joins. The conversation grows with every step and each request carries all of it;
/// writing it out in full at every step made a step's cost grow with the run.
#[derive(Debug, Clone, Default)]
pub struct Conversation {
    /// The messages' JSON, comma-separated, without the brackets.
    json: Vec<u8>,
    len: usize,
}

impl Conversation {
    pub fn new<'a>(messages: impl IntoIterator<Item = &'a Value>) -> Self {
        let mut conversation = Self::default();
        conversation.extend(messages);
        conversation
    }

    pub fn push(&mut self, message: &Value) {
        if self.len > 0 {
            self.json.push(b',');
        }
        // A `Value` always serializes (its keys are strings), and a Vec takes every write.
        serde_json::to_writer(&mut self.json, message).expect("a JSON value serializes into a Vec");
        self.len += 1;
    }

    pub fn extend<'a>(&mut self, messages: impl IntoIterator<Item = &'a Value>) {
        for message in messages {
            self.push(message);
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The messages as a JSON array (the tests' view of what was written).
    #[cfg(test)]
    pub fn to_value(&self) -> Value {
        let mut array = Vec::with_capacity(self.json.len() + 2);
        array.push(b'[');
        array.extend_from_slice(&self.json);
        array.push(b']');
        serde_json::from_slice(&array).expect("the conversation holds JSON it wrote itself")
    }
}

/// The tools a run may call, as a request's `tools` array: written once per run.
#[derive(Debug, Clone)]
pub struct ToolSchemas {
    json: Vec<u8>,
}

impl ToolSchemas {
    pub fn new(schemas: &[Value]) -> Self {
        Self {
            json: serde_json::to_vec(schemas).expect("JSON values serialize into a Vec"),
        }
    }

    /// No tools: the array written is `[]`.
    pub fn is_empty(&self) -> bool {
        self.json == b"[]"
    }
}

/// The body of a chat completion request, from the parts written ahead:
/// `{"model", "max_tokens", "tools", "tool_choice", "messages"}`.
pub fn request_body(
    model: &str,
    conversation: &Conversation,
    tools: &ToolSchemas,
    max_tokens: u32,
) -> Vec<u8> {
    let mut body =
        Vec::with_capacity(conversation.json.len() + tools.json.len() + model.len() + 96);
    body.extend_from_slice(b"{\"model\":");
    serde_json::to_writer(&mut body, model).expect("a string serializes into a Vec");
    body.extend_from_slice(format!(",\"max_tokens\":{max_tokens}").as_bytes());
    if !tools.is_empty() {
        body.extend_from_slice(b",\"tools\":");
        body.extend_from_slice(&tools.json);
        body.extend_from_slice(b",\"tool_choice\":\"auto\"");
    }
    body.extend_from_slice(b",\"messages\":[");
    body.extend_from_slice(&conversation.json);
    body.extend_from_slice(b"]}");
    body
}

/// An OpenAI-compatible chat endpoint.
pub struct OpenAiChat {
    http: OpenAiHttp,
}

impl OpenAiChat {
    pub fn new(options: HttpOptions) -> Result<Self, LlmError> {
        let http = OpenAiHttp::new(options).map_err(|message| LlmError::Permanent {
            code: "model_config_invalid",
            message,
        })?;
        Ok(Self { http })
    }
}

#[async_trait]
impl ChatModel for OpenAiChat {
    async fn complete(
        &self,
        model: &str,
        conversation: &Conversation,
        tools: &ToolSchemas,
        max_tokens: u32,
    ) -> Result<Completion, LlmError> {
        let body = request_body(model, conversation, tools, max_tokens);
        let started = Instant::now();
        let answer = self
            .http
            .post_json_bytes("chat/completions", body.into(), model)
            .await
            .map_err(|error| match error {
                CallError::Unavailable {
                    message,
                    retry_after,
                    attempts,
                } => LlmError::Transient {
                    message: format!("after {attempts} attempts: {message}"),
                    retry_after,
                },
                CallError::Rejected { message, .. } => LlmError::Permanent {
                    code: "model_request_rejected",
                    message,
                },
            })?;
        let parsed: Value =
            serde_json::from_slice(&answer.body).map_err(|error| LlmError::Permanent {
                code: "model_answer_unreadable",
                message: error.to_string(),
            })?;
        parse_completion(&parsed, answer.attempts, started.elapsed())
    }
}

/// Reads an OpenAI chat completion into a [`Completion`].
pub fn parse_completion(
    answer: &Value,
    attempts: u32,
    latency: Duration,
) -> Result<Completion, LlmError> {
    let message = answer["choices"]
        .get(0)
        .map(|choice| &choice["message"])
        .filter(|message| message.is_object())
        .ok_or_else(|| unreadable("choices[0].message"))?;
    let mut completion = Completion::from_message(message)?;
    completion.tokens_in = answer["usage"]["prompt_tokens"].as_u64().unwrap_or(0);
    completion.tokens_out = answer["usage"]["completion_tokens"].as_u64().unwrap_or(0);
    completion.attempts = attempts;
    completion.latency = latency;
    Ok(completion)
}

fn unreadable(what: &str) -> LlmError {
    LlmError::Permanent {
        code: "model_answer_unreadable",
        message: format!("the model's answer has no {what}"),
    }
}

impl Completion {
    /// The completion an assistant message holds (tokens, attempts and latency zero):
    /// also how a step redone after a crash reads back its recorded answer.
    pub fn from_message(message: &Value) -> Result<Self, LlmError> {
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
        Ok(Self {
            message: assistant,
            tool_calls,
            text,
            tokens_in: 0,
            tokens_out: 0,
            attempts: 0,
            latency: Duration::ZERO,
        })
    }
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
        let replayed = Completion::from_message(&completion.message).unwrap();
        assert_eq!(replayed.tool_calls, completion.tool_calls);
        assert_eq!(replayed.message, completion.message);
    }

    #[test]
    fn the_request_body_is_the_conversation_and_tools_as_written_once() {
        let system = json!({ "role": "system", "content": "Be brief \"always\"\n" });
        let user = json!({ "role": "user", "content": "Ünïcode and \\ slashes" });
        let answer = json!({ "role": "assistant", "content": null, "tool_calls": [
            { "id": "c1", "type": "function", "function": { "name": "get_node_context", "arguments": "{}" } }
        ] });
        let mut conversation = Conversation::new([&system, &user]);
        conversation.push(&answer);
        assert_eq!(conversation.len(), 3);
        assert_eq!(conversation.to_value(), json!([system, user, answer]));

        let tool = json!({ "type": "function", "function": { "name": "get_node_context", "parameters": {} } });
        let body: Value = serde_json::from_slice(&request_body(
            "gpt-\"quoted\"",
            &conversation,
            &ToolSchemas::new(std::slice::from_ref(&tool)),
            256,
        ))
        .unwrap();
        assert_eq!(
            body,
            json!({
                "model": "gpt-\"quoted\"",
                "max_tokens": 256,
                "tools": [tool],
                "tool_choice": "auto",
                "messages": [system, user, answer],
            })
        );

        // No tools: neither `tools` nor `tool_choice`; an empty conversation is `[]`.
        let body: Value = serde_json::from_slice(&request_body(
            "m",
            &Conversation::default(),
            &ToolSchemas::new(&[]),
            1,
        ))
        .unwrap();
        assert_eq!(
            body,
            json!({ "model": "m", "max_tokens": 1, "messages": [] })
        );
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
