//! What can go wrong, how it reads on stderr and which exit code it maps to.

/// How much of a body that is not the API's error shape an error message quotes.
const SNIPPET_CHARS: usize = 200;

/// An answer in the API's one error shape: `{"error": {"code": "...", "message": "..."}}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message} (HTTP {status})")]
pub struct ApiError {
    pub status: u16,
    pub code: String,
    pub message: String,
}

impl ApiError {
    /// Reads an error answer. A body in another shape (a proxy's HTML page, an empty body)
    /// becomes code `unexpected_response` quoting the start of the body.
    pub fn from_body(status: u16, body: &str) -> Self {
        let parsed: Option<serde_json::Value> = serde_json::from_str(body).ok();
        let error_object = parsed.as_ref().and_then(|value| value.get("error"));
        let code = error_object
            .and_then(|error| error.get("code"))
            .and_then(|code| code.as_str());
        let message = error_object
            .and_then(|error| error.get("message"))
            .and_then(|message| message.as_str());
        match (code, message) {
            (Some(code), message) => Self {
                status,
                code: code.to_owned(),
                message: message.unwrap_or("").to_owned(),
            },
            (None, _) => Self {
                status,
                code: "unexpected_response".to_owned(),
                message: if body.trim().is_empty() {
                    "empty body".to_owned()
                } else {
                    snippet(body)
                },
            },
        }
    }
}

/// Everything a command can fail with.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// The API answered with an error.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// Nothing answered at the API's address.
    #[error("cannot connect to api-lite at {url}: {cause}")]
    Connect { url: String, cause: String },
    /// The API did not answer within `--timeout-secs`.
    #[error("api-lite at {url} did not answer within {timeout_secs}s")]
    Timeout { url: String, timeout_secs: u64 },
    /// Any other transport failure.
    #[error("request to {url} failed: {cause}")]
    Transport { url: String, cause: String },
    /// A success answer that is not the JSON the contract promises.
    #[error("unexpected answer from api-lite (HTTP {status}): {detail}")]
    InvalidResponse { status: u16, detail: String },
    /// A command line clap accepts but that cannot work (a bad URL, no token).
    #[error("{0}")]
    Usage(String),
    /// A destructive action was not confirmed and cannot be.
    #[error("{0}")]
    Refused(String),
    /// A short message id that matches no message, or several.
    #[error("{0}")]
    Lookup(String),
    /// Writing the output or reading the answer to a prompt failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

impl FleetError {
    /// Classifies a reqwest failure for the request to `url`.
    pub fn from_transport(url: &str, timeout_secs: u64, error: &reqwest::Error) -> Self {
        if error.is_timeout() {
            return Self::Timeout {
                url: url.to_owned(),
                timeout_secs,
            };
        }
        let cause = root_cause(error);
        if error.is_connect() {
            return Self::Connect {
                url: url.to_owned(),
                cause,
            };
        }
        Self::Transport {
            url: url.to_owned(),
            cause,
        }
    }

    /// What to try next, printed after the error.
    pub fn hint(&self) -> Option<String> {
        match self {
            Self::Connect { .. } | Self::Timeout { .. } => Some(
                "is api-lite running at that address? Start it, or point --api-url \
                 (FLEETCTL_API_URL) at it"
                    .to_owned(),
            ),
            Self::Api(api_error) if api_error.status == 401 => Some(
                "check --token (FLEETCTL_TOKEN); mint one with `api-lite token --org <id> --ops`"
                    .to_owned(),
            ),
            Self::Api(api_error) if api_error.status == 403 => Some(
                "ops routes need a token with the ops role: `api-lite token --org <id> --ops`"
                    .to_owned(),
            ),
            _ => None,
        }
    }

    /// 2 for a command line that cannot work (as clap's usage errors), 1 for the rest.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Usage(_) | Self::Refused(_) => 2,
            _ => 1,
        }
    }

    /// Whether this is stdout closing early (`fleetctl queues | head -1`), not worth a word.
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, Self::Io(io_error) if io_error.kind() == std::io::ErrorKind::BrokenPipe)
    }

    /// The text for stderr: `fleetctl: <error>`, then a `hint:` line when there is one.
    pub fn report(&self) -> String {
        match self.hint() {
            Some(hint) => format!("fleetctl: {self}\nhint: {hint}"),
            None => format!("fleetctl: {self}"),
        }
    }
}

/// The innermost cause of an error ("Connection refused (os error 111)"), which says more
/// than reqwest's "error sending request for url".
fn root_cause(error: &reqwest::Error) -> String {
    let mut innermost: &dyn std::error::Error = error;
    while let Some(source) = innermost.source() {
        innermost = source;
    }
    innermost.to_string()
}

/// The start of a body, on one line.
pub(crate) fn snippet(body: &str) -> String {
    let one_line: String = body.split_whitespace().collect::<Vec<_>>().join(" ");
    crate::render::truncate(&one_line, SNIPPET_CHARS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_error_body_renders_code_message_and_status() {
        let body = r#"{"error":{"code":"forbidden","message":"this route needs a token with the ops role"}}"#;
        let api_error = ApiError::from_body(403, body);
        assert_eq!(api_error.code, "forbidden");
        assert_eq!(api_error.status, 403);
        let error = FleetError::from(api_error);
        assert_eq!(
            error.to_string(),
            "forbidden: this route needs a token with the ops role (HTTP 403)"
        );
        let report = error.report();
        assert!(
            report.starts_with("fleetctl: forbidden: this route needs"),
            "{report}"
        );
        assert!(report.contains("hint: ops routes need a token"), "{report}");
        assert_eq!(error.exit_code(), 1);
    }

    #[test]
    fn body_in_another_shape_is_quoted() {
        let api_error = ApiError::from_body(502, "<html>\n<body>Bad Gateway</body>\n</html>");
        assert_eq!(api_error.code, "unexpected_response");
        assert_eq!(api_error.message, "<html> <body>Bad Gateway</body> </html>");
        assert_eq!(ApiError::from_body(500, "").message, "empty body");
        let long_body = "x".repeat(500);
        assert!(ApiError::from_body(500, &long_body).message.chars().count() <= SNIPPET_CHARS);
    }

    #[test]
    fn usage_and_refusal_exit_2() {
        assert_eq!(FleetError::Usage("no token".into()).exit_code(), 2);
        assert_eq!(FleetError::Refused("no tty".into()).exit_code(), 2);
        assert_eq!(FleetError::Lookup("none".into()).exit_code(), 1);
        let connect = FleetError::Connect {
            url: "http://127.0.0.1:1".into(),
            cause: "Connection refused".into(),
        };
        assert!(connect.report().contains("hint: is api-lite running"));
    }
}
