//! Bearer JWT auth (HS256). The claims carry the org and the subject; every query is
//! scoped by that org, so another org's ids simply are not found.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::ApiError;
use crate::state::AppState;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub org: Uuid,
    pub iat: u64,
    pub exp: u64,
    /// Extra powers; `ops` opens the fleet-wide `/v1/ops` routes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
}

/// The role the fleet-wide ops routes need.
pub const OPS_ROLE: &str = "ops";

/// Who is calling: the org every query is scoped by, and the subject for audit.
#[derive(Debug, Clone)]
pub struct Caller {
    pub org_id: Uuid,
    pub subject: String,
    pub roles: Vec<String>,
}

/// A caller with the `ops` role: queues, dead-letter queues, stuck jobs, schedules and the
/// audit log are fleet-wide, so they are not scoped by org but need this role.
#[derive(Debug, Clone)]
pub struct Operator {
    /// Who acts, for the audit log.
    pub subject: String,
}

pub struct Keys {
    decoding: DecodingKey,
    validation: Validation,
}

impl Keys {
    pub fn new(secret: &SecretString) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub"]);
        Self {
            decoding: DecodingKey::from_secret(secret.expose_secret().as_bytes()),
            validation,
        }
    }

    pub fn verify(&self, token: &str) -> Option<Claims> {
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .ok()
            .map(|data| data.claims)
    }
}

/// Mints a token for `org` (the `api-lite token` command, tests, the demo).
pub fn mint_token(
    secret: &SecretString,
    org: Uuid,
    subject: &str,
    ttl_secs: u64,
    roles: &[&str],
) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or(0);
    let claims = Claims {
        sub: subject.to_string(),
        org,
        iat: now,
        exp: now + ttl_secs,
        roles: roles.iter().map(|role| role.to_string()).collect(),
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.expose_secret().as_bytes()),
    )
    .expect("HS256 encoding of plain claims cannot fail")
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .ok_or(ApiError::Unauthorized)?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .ok_or(ApiError::Unauthorized)?;
        let claims = state
            .keys
            .verify(token.trim())
            .ok_or(ApiError::Unauthorized)?;
        tracing::Span::current().record("org_id", tracing::field::display(claims.org));
        Ok(Caller {
            org_id: claims.org,
            subject: claims.sub,
            roles: claims.roles,
        })
    }
}

impl FromRequestParts<AppState> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let caller = Caller::from_request_parts(parts, state).await?;
        if !caller.roles.iter().any(|role| role == OPS_ROLE) {
            return Err(ApiError::Forbidden(
                "this route needs a token with the ops role",
            ));
        }
        Ok(Operator {
            subject: caller.subject,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_tokens_verify_and_others_do_not() {
        let secret = SecretString::from("0123456789abcdef0123");
        let org = Uuid::now_v7();
        let keys = Keys::new(&secret);
        let token = mint_token(&secret, org, "ops@example", 60, &[OPS_ROLE]);
        let claims = keys.verify(&token).expect("valid token");
        assert_eq!(claims.org, org);
        assert_eq!(claims.sub, "ops@example");
        assert_eq!(claims.roles, [OPS_ROLE]);
        let other = mint_token(
            &SecretString::from("another-secret-of-length"),
            org,
            "x",
            60,
            &[],
        );
        assert!(keys.verify(&other).is_none());
        assert!(keys.verify("garbage").is_none());
    }

    #[test]
    fn expired_tokens_are_refused() {
        let secret = SecretString::from("0123456789abcdef0123");
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let claims = Claims {
            sub: "a".into(),
            org: Uuid::now_v7(),
            iat: now - 7200,
            exp: now - 3600,
            roles: Vec::new(),
        };
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(b"0123456789abcdef0123"),
        )
        .unwrap();
        assert!(Keys::new(&secret).verify(&token).is_none());
    }
}
