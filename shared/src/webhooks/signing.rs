//! Standard Webhooks signatures, written from the public spec.
//!
//! A secret is `whsec_` followed by the base64 of its key bytes. A message is signed over
//! `{webhook-id}.{webhook-timestamp}.{body}` with HMAC-SHA256 under the key bytes; the
//! `webhook-signature` header is `v1,` and the base64 of the MAC, and may carry several
//! such signatures separated by spaces (during a secret rotation: one per live secret).
//! [`verify`] is what a receiver does (the tests use it; so can a receiver in Rust).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

/// The prefix of every secret.
pub const SECRET_PREFIX: &str = "whsec_";
/// The version tag of an HMAC-SHA256 signature.
const VERSION: &str = "v1";
/// Key bytes in a new secret (the spec allows 24 to 64).
const KEY_BYTES: usize = 32;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SigningError {
    #[error("a webhook secret starts with whsec_ followed by base64")]
    MalformedSecret,
}

/// A new random secret.
pub fn new_secret() -> String {
    let mut key = [0u8; KEY_BYTES];
    rand::thread_rng().fill_bytes(&mut key);
    format!("{SECRET_PREFIX}{}", STANDARD.encode(key))
}

fn key_of(secret: &str) -> Result<Vec<u8>, SigningError> {
    let encoded = secret
        .strip_prefix(SECRET_PREFIX)
        .ok_or(SigningError::MalformedSecret)?;
    let key = STANDARD
        .decode(encoded)
        .map_err(|_| SigningError::MalformedSecret)?;
    if key.is_empty() {
        return Err(SigningError::MalformedSecret);
    }
    Ok(key)
}

fn mac(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// One `v1,<base64>` signature of the message under `secret`.
pub fn sign(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> Result<String, SigningError> {
    let key = key_of(secret)?;
    let digest = mac(&key, id, timestamp, body).finalize().into_bytes();
    Ok(format!("{VERSION},{}", STANDARD.encode(digest)))
}

/// The `webhook-signature` header: one signature per secret, space-separated.
pub fn signature_header(
    secrets: &[&str],
    id: &str,
    timestamp: i64,
    body: &[u8],
) -> Result<String, SigningError> {
    let signatures: Result<Vec<String>, SigningError> = secrets
        .iter()
        .map(|secret| sign(secret, id, timestamp, body))
        .collect();
    Ok(signatures?.join(" "))
}

/// Why a message was not accepted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    #[error(transparent)]
    Secret(#[from] SigningError),
    #[error("the timestamp is too far from now")]
    Stale,
    #[error("no signature matches")]
    NoMatch,
}

/// A receiver's check: the timestamp is within `tolerance_secs` of `now` and one of the
/// header's `v1` signatures is the message's MAC under `secret` (compared in constant time).
pub fn verify(
    secret: &str,
    id: &str,
    timestamp: i64,
    body: &[u8],
    signature_header: &str,
    now: i64,
    tolerance_secs: i64,
) -> Result<(), VerifyError> {
    let key = key_of(secret)?;
    if (now - timestamp).abs() > tolerance_secs {
        return Err(VerifyError::Stale);
    }
    for signature in signature_header.split(' ') {
        let Some((VERSION, encoded)) = signature.split_once(',') else {
            continue;
        };
        let Ok(given) = STANDARD.decode(encoded) else {
            continue;
        };
        if mac(&key, id, timestamp, body).verify_slice(&given).is_ok() {
            return Ok(());
        }
    }
    Err(VerifyError::NoMatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example from the Standard Webhooks spec's reference test vectors.
    #[test]
    fn matches_the_specs_example() {
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let id = "msg_p5jXN8AQM9LWM0D4loKWxJek";
        let timestamp = 1614265330;
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            sign(secret, id, timestamp, body).unwrap(),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn a_receiver_accepts_only_the_signed_message() {
        let secret = new_secret();
        let header = signature_header(&[&secret], "msg_1", 1000, b"{}").unwrap();
        assert_eq!(
            verify(&secret, "msg_1", 1000, b"{}", &header, 1010, 300),
            Ok(())
        );
        assert_eq!(
            verify(&secret, "msg_1", 1000, b"{ }", &header, 1010, 300),
            Err(VerifyError::NoMatch)
        );
        assert_eq!(
            verify(&secret, "msg_2", 1000, b"{}", &header, 1010, 300),
            Err(VerifyError::NoMatch)
        );
        assert_eq!(
            verify(&secret, "msg_1", 1000, b"{}", &header, 2000, 300),
            Err(VerifyError::Stale)
        );
        assert_eq!(
            verify(&new_secret(), "msg_1", 1000, b"{}", &header, 1010, 300),
            Err(VerifyError::NoMatch)
        );
    }

    #[test]
    fn during_a_rotation_either_secret_verifies() {
        let (old, new) = (new_secret(), new_secret());
        let header = signature_header(&[&new, &old], "msg_1", 5, b"body").unwrap();
        assert_eq!(header.split(' ').count(), 2);
        assert_eq!(verify(&old, "msg_1", 5, b"body", &header, 5, 300), Ok(()));
        assert_eq!(verify(&new, "msg_1", 5, b"body", &header, 5, 300), Ok(()));
    }

    #[test]
    fn malformed_secrets_are_refused() {
        assert_eq!(
            sign("plain", "id", 1, b""),
            Err(SigningError::MalformedSecret)
        );
        assert_eq!(
            sign("whsec_!!!", "id", 1, b""),
            Err(SigningError::MalformedSecret)
        );
        assert_eq!(
            sign("whsec_", "id", 1, b""),
            Err(SigningError::MalformedSecret)
        );
    }
}
