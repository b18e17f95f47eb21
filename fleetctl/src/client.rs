//! The HTTP client: bearer auth, one timeout, URLs built from path segments (each one
//! percent-encoded, so a queue name or id can never change the route), JSON in and out,
//! and error answers read into [`ApiError`].

use std::time::Duration;

use reqwest::{Method, Url};
use serde_json::Value;

use crate::error::{ApiError, FleetError};

/// The timeout of [`Client::new`], as `--timeout-secs`' default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// A client of api-lite acting with one token.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base_url: Url,
    token: String,
    timeout: Duration,
}

impl Client {
    /// A client of the API at `base_url` (`http://127.0.0.1:8080`, possibly with a path
    /// prefix) sending `token` as its bearer token, with [`DEFAULT_TIMEOUT`].
    pub fn new(base_url: &str, token: &str) -> Result<Self, FleetError> {
        Self::with_timeout(base_url, token, DEFAULT_TIMEOUT)
    }

    /// As [`Client::new`], with each request bounded by `timeout`.
    pub fn with_timeout(
        base_url: &str,
        token: &str,
        timeout: Duration,
    ) -> Result<Self, FleetError> {
        let parsed_url = Url::parse(base_url.trim()).map_err(|error| {
            FleetError::Usage(format!("invalid --api-url {base_url:?}: {error}"))
        })?;
        if !matches!(parsed_url.scheme(), "http" | "https") || parsed_url.cannot_be_a_base() {
            return Err(FleetError::Usage(format!(
                "invalid --api-url {base_url:?}: expected an http:// or https:// URL"
            )));
        }
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .user_agent(concat!("fleetctl/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|error| FleetError::Usage(format!("cannot build the HTTP client: {error}")))?;
        Ok(Self {
            http,
            base_url: parsed_url,
            token: token.trim().to_owned(),
            timeout,
        })
    }

    /// The base URL requests go to.
    pub fn base_url(&self) -> &str {
        self.base_url.as_str()
    }

    /// `GET` the route made of `path` segments (`&["v1", "ops", "dlq", queue]`) with query
    /// parameters.
    pub async fn get(&self, path: &[&str], query: &[(&str, String)]) -> Result<Value, FleetError> {
        self.send(Method::GET, path, query, None).await
    }

    /// `POST` a JSON body.
    pub async fn post(&self, path: &[&str], body: &Value) -> Result<Value, FleetError> {
        self.send(Method::POST, path, &[], Some(body)).await
    }

    /// `POST` without a body (actions such as `/reprocess`, `/cancel`, `/run`).
    pub async fn post_empty(&self, path: &[&str]) -> Result<Value, FleetError> {
        self.send(Method::POST, path, &[], None).await
    }

    /// `DELETE`; a `204` answer reads as `Value::Null`.
    pub async fn delete(&self, path: &[&str]) -> Result<Value, FleetError> {
        self.send(Method::DELETE, path, &[], None).await
    }

    /// The full URL of a route.
    pub fn url(&self, path: &[&str], query: &[(&str, String)]) -> Url {
        let mut url = self.base_url.clone();
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.pop_if_empty().extend(path);
        }
        if !query.is_empty() {
            url.query_pairs_mut()
                .extend_pairs(query.iter().map(|(key, value)| (*key, value.as_str())));
        }
        url
    }

    async fn send(
        &self,
        method: Method,
        path: &[&str],
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<Value, FleetError> {
        let url = self.url(path, query);
        let mut request = self
            .http
            .request(method, url.clone())
            .bearer_auth(&self.token)
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(body) = body {
            request = request.json(body);
        }
        let transport_error = |error: reqwest::Error| {
            FleetError::from_transport(url.as_str(), self.timeout.as_secs(), &error)
        };
        let response = request.send().await.map_err(transport_error)?;
        let status = response.status().as_u16();
        let text = response.text().await.map_err(transport_error)?;
        if !(200..300).contains(&status) {
            return Err(ApiError::from_body(status, &text).into());
        }
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text).map_err(|error| FleetError::InvalidResponse {
            status,
            detail: format!("{error}: {}", crate::error::snippet(&text)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_encode_segments_and_keep_a_path_prefix() {
        let client = Client::new("http://127.0.0.1:8080", "t").expect("client");
        assert_eq!(
            client
                .url(&["v1", "ops", "dlq", "file jobs/../x", "redrive"], &[])
                .as_str(),
            "http://127.0.0.1:8080/v1/ops/dlq/file%20jobs%2F..%2Fx/redrive"
        );
        let prefixed = Client::new("https://ops.example/api/", "t").expect("client");
        assert_eq!(
            prefixed
                .url(
                    &["v1", "ops", "stuck"],
                    &[("queued_for_secs", "300".to_owned())]
                )
                .as_str(),
            "https://ops.example/api/v1/ops/stuck?queued_for_secs=300"
        );
    }

    #[test]
    fn rejects_urls_that_are_not_http() {
        assert!(matches!(
            Client::new("127.0.0.1:8080", "t"),
            Err(FleetError::Usage(_))
        ));
        assert!(matches!(
            Client::new("ftp://host", "t"),
            Err(FleetError::Usage(_))
        ));
        assert!(matches!(
            Client::new("not a url", "t"),
            Err(FleetError::Usage(_))
        ));
    }
}
