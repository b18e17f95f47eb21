//! Bearer JWT auth (HS256). The claims carry the org and the subject; every query is
//! scoped by that org, so another org's ids simply are not found.
//!
//! A token must carry the configured `iss` and `aud` and an `exp`. Roles add powers:
//! `ops` opens the fleet-wide ops routes, `approver` may decide tool calls held for
//! approval. When a separate ops key is configured, ops tokens are signed with it (and
//! say so with `kid: ops`), and an ops token signed with the tenants' key is refused. An
//! ops token may not live longer than `ops_token_max_ttl_secs`.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::request::Parts;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use shared::config::{AuthSettings, ConfigError};
use uuid::Uuid;

use crate::error::ApiError;
use crate::state::AppState;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub org: Uuid,
    pub iss: String,
    pub aud: String,
    pub iat: u64,
    pub exp: u64,
    /// Extra powers: [`OPS_ROLE`], [`APPROVER_ROLE`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
}

impl Claims {
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|held| held == role)
    }
}

/// The role the fleet-wide ops routes need.
pub const OPS_ROLE: &str = "ops";
/// The role that may approve or reject a tool call held for approval.
pub const APPROVER_ROLE: &str = "approver";
/// How far past `exp` a token is still honoured, for clocks that disagree a little.
const CLOCK_SKEW_LEEWAY_SECS: u64 = 5;
/// The `kid` header of tokens signed with the separate ops key.
const OPS_KEY_ID: &str = "ops";

/// Who is calling: the org every query is scoped by, and the subject for audit.
#[derive(Debug, Clone)]
pub struct Caller {
    pub org_id: Uuid,
    pub subject: String,
    pub roles: Vec<String>,
    /// When the token expires (Unix seconds); a live event stream closes then.
    pub expires_at: u64,
}

impl Caller {
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|held| held == role)
    }
}

/// A caller with the `ops` role: queues, dead-letter queues, stuck jobs, schedules and the
/// audit log are fleet-wide, so they are not scoped by org but need this role.
#[derive(Debug, Clone)]
pub struct Operator {
    /// Who acts, for the audit log.
    pub subject: String,
}

/// Verifies tokens.
pub struct Keys {
    tenant: DecodingKey,
    ops: Option<DecodingKey>,
    validation: Validation,
    ops_token_max_ttl_secs: u64,
}

impl Keys {
    pub fn new(auth: &AuthSettings) -> Result<Self, ConfigError> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub", "iss", "aud"]);
        validation.set_issuer(&[auth.issuer.as_str()]);
        validation.set_audience(&[auth.audience.as_str()]);
        validation.leeway = CLOCK_SKEW_LEEWAY_SECS;
        Ok(Self {
            tenant: DecodingKey::from_secret(auth.secret()?.expose_secret().as_bytes()),
            ops: auth
                .ops_secret()?
                .map(|secret| DecodingKey::from_secret(secret.expose_secret().as_bytes())),
            validation,
            ops_token_max_ttl_secs: auth.ops_token_max_ttl_secs,
        })
    }

    /// The token's claims, or `None` for any token that must not be honoured.
    pub fn verify(&self, token: &str) -> Option<Claims> {
        let header = jsonwebtoken::decode_header(token).ok()?;
        let signed_with_ops_key = header.kid.as_deref() == Some(OPS_KEY_ID);
        let key = match (&self.ops, signed_with_ops_key) {
            (Some(ops), true) => ops,
            // A token claiming the ops key when none is configured is not ours.
            (None, true) => return None,
            (_, false) => &self.tenant,
        };
        let claims = jsonwebtoken::decode::<Claims>(token, key, &self.validation)
            .ok()?
            .claims;
        if claims.has_role(OPS_ROLE) {
            if self.ops.is_some() && !signed_with_ops_key {
                return None;
            }
            if claims.exp.saturating_sub(claims.iat) > self.ops_token_max_ttl_secs {
                return None;
            }
        }
        Some(claims)
    }
}

/// Mints a token for `org` (the `api-lite token` command, tests, the demo). Tokens with
/// the ops role are signed with the ops key when one is configured.
pub fn mint_token(
    auth: &AuthSettings,
    org: Uuid,
    subject: &str,
    ttl_secs: u64,
    roles: &[&str],
) -> Result<String, ConfigError> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or(0);
    let claims = Claims {
        sub: subject.to_string(),
        org,
        iss: auth.issuer.clone(),
        aud: auth.audience.clone(),
        iat: now,
        exp: now + ttl_secs,
        roles: roles.iter().map(|role| role.to_string()).collect(),
    };
    let mut header = Header::new(Algorithm::HS256);
    let ops_key = match auth.ops_secret()? {
        Some(ops_secret) if roles.contains(&OPS_ROLE) => {
            header.kid = Some(OPS_KEY_ID.to_string());
            Some(ops_secret)
        }
        _ => None,
    };
    let secret = match ops_key {
        Some(ops_secret) => ops_secret,
        None => auth.secret()?,
    };
    Ok(jsonwebtoken::encode(
        &header,
        &claims,
        &EncodingKey::from_secret(secret.expose_secret().as_bytes()),
    )
    .expect("HS256 encoding of plain claims cannot fail"))
}

/// The bearer token of a request, if it has one.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let header = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    header
        .strip_prefix("Bearer ")
        .or_else(|| header.strip_prefix("bearer "))
        .map(str::trim)
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        // The org limits middleware has usually verified the token already.
        let claims = match parts.extensions.get::<Claims>() {
            Some(claims) => claims.clone(),
            None => {
                let token = bearer_token(&parts.headers).ok_or(ApiError::Unauthorized)?;
                state.keys.verify(token).ok_or(ApiError::Unauthorized)?
            }
        };
        tracing::Span::current().record("org_id", tracing::field::display(claims.org));
        Ok(Caller {
            org_id: claims.org,
            subject: claims.sub,
            roles: claims.roles,
            expires_at: claims.exp,
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
        if !caller.has_role(OPS_ROLE) {
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

    const SECRET: &str = "0123456789abcdef0123456789abcdef-tenants";
    const OPS_SECRET: &str = "0123456789abcdef0123456789abcdef-operators";

    fn settings(ops_secret: Option<&str>) -> AuthSettings {
        AuthSettings {
            jwt_secret: Some(SECRET.into()),
            ops_jwt_secret: ops_secret.map(Into::into),
            ..AuthSettings::default()
        }
    }

    fn now() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    /// Signs arbitrary claims with `secret`, as a forger or a misconfigured minter would.
    fn sign(claims: &Claims, secret: &str, kid: Option<&str>) -> String {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = kid.map(String::from);
        jsonwebtoken::encode(
            &header,
            claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    fn claims(roles: &[&str]) -> Claims {
        let auth = AuthSettings::default();
        Claims {
            sub: "a".into(),
            org: Uuid::now_v7(),
            iss: auth.issuer,
            aud: auth.audience,
            iat: now(),
            exp: now() + 600,
            roles: roles.iter().map(|role| role.to_string()).collect(),
        }
    }

    #[test]
    fn minted_tokens_verify_and_others_do_not() {
        let auth = settings(None);
        let org = Uuid::now_v7();
        let keys = Keys::new(&auth).unwrap();
        let token = mint_token(&auth, org, "ops@example", 60, &[OPS_ROLE]).unwrap();
        let claims = keys.verify(&token).expect("valid token");
        assert_eq!(claims.org, org);
        assert_eq!(claims.sub, "ops@example");
        assert_eq!(claims.roles, [OPS_ROLE]);
        let other = mint_token(
            &AuthSettings {
                jwt_secret: Some("another-secret-of-length-0123456789".into()),
                ..AuthSettings::default()
            },
            org,
            "x",
            60,
            &[],
        )
        .unwrap();
        assert!(keys.verify(&other).is_none());
        assert!(keys.verify("garbage").is_none());
    }

    #[test]
    fn short_secrets_cannot_build_keys_or_mint() {
        let auth = AuthSettings {
            jwt_secret: Some("sixteen-chars-ok".into()),
            ..AuthSettings::default()
        };
        assert!(Keys::new(&auth).is_err());
        assert!(mint_token(&auth, Uuid::now_v7(), "a", 60, &[]).is_err());
    }

    #[test]
    fn expired_tokens_are_refused() {
        let keys = Keys::new(&settings(None)).unwrap();
        let mut expired = claims(&[]);
        expired.iat = now() - 7200;
        expired.exp = now() - 3600;
        assert!(keys.verify(&sign(&expired, SECRET, None)).is_none());
        assert!(keys.verify(&sign(&claims(&[]), SECRET, None)).is_some());
    }

    #[test]
    fn issuer_and_audience_are_checked() {
        let keys = Keys::new(&settings(None)).unwrap();
        let mut foreign_issuer = claims(&[]);
        foreign_issuer.iss = "someone-else".into();
        assert!(keys.verify(&sign(&foreign_issuer, SECRET, None)).is_none());
        let mut foreign_audience = claims(&[]);
        foreign_audience.aud = "another-api".into();
        assert!(
            keys.verify(&sign(&foreign_audience, SECRET, None))
                .is_none()
        );
        // A token without iss and aud at all (as minted before they were required).
        #[derive(Serialize)]
        struct Bare {
            sub: String,
            org: Uuid,
            iat: u64,
            exp: u64,
        }
        let bare = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &Bare {
                sub: "a".into(),
                org: Uuid::now_v7(),
                iat: now(),
                exp: now() + 600,
            },
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap();
        assert!(keys.verify(&bare).is_none());
    }

    #[test]
    fn a_separate_ops_key_signs_ops_tokens_and_the_tenant_key_cannot() {
        let auth = settings(Some(OPS_SECRET));
        let keys = Keys::new(&auth).unwrap();
        let ops = mint_token(&auth, Uuid::now_v7(), "alice", 600, &[OPS_ROLE]).unwrap();
        assert_eq!(
            jsonwebtoken::decode_header(&ops).unwrap().kid.as_deref(),
            Some("ops")
        );
        assert!(keys.verify(&ops).unwrap().has_role(OPS_ROLE));
        // Forged with the tenants' key, with or without the ops kid.
        let forged = sign(&claims(&[OPS_ROLE]), SECRET, None);
        assert!(keys.verify(&forged).is_none());
        let forged_with_kid = sign(&claims(&[OPS_ROLE]), SECRET, Some("ops"));
        assert!(keys.verify(&forged_with_kid).is_none());
        // Tenant tokens keep working with the tenants' key.
        let tenant = mint_token(&auth, Uuid::now_v7(), "bob", 600, &[APPROVER_ROLE]).unwrap();
        assert!(keys.verify(&tenant).unwrap().has_role(APPROVER_ROLE));
        // Without an ops key configured, a token naming it is not ours.
        let plain_keys = Keys::new(&settings(None)).unwrap();
        assert!(plain_keys.verify(&ops).is_none());
    }

    #[test]
    fn long_lived_ops_tokens_are_refused() {
        let auth = settings(None);
        let keys = Keys::new(&auth).unwrap();
        let short = mint_token(&auth, Uuid::now_v7(), "alice", 3600, &[OPS_ROLE]).unwrap();
        assert!(keys.verify(&short).is_some());
        let long = mint_token(
            &auth,
            Uuid::now_v7(),
            "alice",
            auth.ops_token_max_ttl_secs + 1,
            &[OPS_ROLE],
        )
        .unwrap();
        assert!(keys.verify(&long).is_none());
        // The same lifetime is fine for a tenant token.
        let tenant = mint_token(
            &auth,
            Uuid::now_v7(),
            "bob",
            auth.ops_token_max_ttl_secs + 1,
            &[],
        )
        .unwrap();
        assert!(keys.verify(&tenant).is_some());
    }
}
