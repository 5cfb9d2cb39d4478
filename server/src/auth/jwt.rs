//! Access tokens: HS256 JWTs with a `kid`, verified against the current and the previous key.

use std::time::Duration;

use jsonwebtoken::{
    Algorithm, DecodingKey, EncodingKey, Header, Validation, decode, decode_header, encode,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// Issuer of every token.
pub const ISSUER: &str = "patrol";
/// Audience of access tokens.
pub const AUDIENCE: &str = "patrol-api";
/// Clock leeway when checking `exp` and `nbf`, in seconds.
pub const LEEWAY_S: u64 = 30;

/// The claims of an access token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Claims {
    /// Member id.
    pub sub: Uuid,
    /// Member role at issue time (the server re-reads the role on each request).
    pub role: String,
    /// Member unit at issue time.
    pub unit: Option<Uuid>,
    /// The login session the token belongs to.
    pub sid: Uuid,
    /// Issuer.
    pub iss: String,
    /// Audience.
    pub aud: String,
    /// Expiry, Unix seconds.
    pub exp: i64,
    /// Not before, Unix seconds.
    pub nbf: i64,
    /// Issued at, Unix seconds.
    pub iat: i64,
    /// Token id.
    pub jti: Uuid,
}

struct Key {
    kid: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl Key {
    fn new(secret: &str) -> anyhow::Result<Key> {
        let digest = Sha256::digest(secret.as_bytes());
        Ok(Key {
            kid: hex::encode(&digest[..8]),
            encoding: EncodingKey::from_secret(secret.as_bytes())?,
            decoding: DecodingKey::from_secret(secret.as_bytes())?,
        })
    }
}

/// The signing key and the previous one (still accepted during a rotation).
pub struct JwtKeys {
    current: Key,
    previous: Option<Key>,
    ttl: Duration,
}

/// Why a token was refused (never shown to clients in more detail than "invalid token").
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The header has no `kid` or one we do not know.
    #[error("unknown or missing key id")]
    UnknownKey,
    /// Signature, algorithm, claims or time checks failed.
    #[error("invalid token: {0}")]
    Invalid(#[from] jsonwebtoken::errors::Error),
}

impl JwtKeys {
    /// Keys from the current secret and optionally the previous one.
    pub fn new(current: &str, previous: Option<&str>, ttl: Duration) -> anyhow::Result<JwtKeys> {
        Ok(JwtKeys {
            current: Key::new(current)?,
            previous: previous.map(Key::new).transpose()?,
            ttl,
        })
    }

    /// Access token lifetime.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Signs an access token for a member's session.
    pub fn issue(
        &self,
        member: Uuid,
        role: &str,
        unit: Option<Uuid>,
        session: Uuid,
    ) -> anyhow::Result<String> {
        let now = chrono::Utc::now().timestamp();
        let claims = Claims {
            sub: member,
            role: role.to_owned(),
            unit,
            sid: session,
            iss: ISSUER.to_owned(),
            aud: AUDIENCE.to_owned(),
            exp: now + self.ttl.as_secs() as i64,
            nbf: now,
            iat: now,
            jti: Uuid::now_v7(),
        };
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(self.current.kid.clone());
        Ok(encode(&header, &claims, &self.current.encoding)?)
    }

    /// Verifies a token: the pinned algorithm, a known `kid`, signature, `exp`, `nbf`,
    /// `iss`, `aud` and `sub`.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let header = decode_header(token)?;
        let kid = header.kid.ok_or(TokenError::UnknownKey)?;
        let key = std::iter::once(&self.current)
            .chain(self.previous.as_ref())
            .find(|k| k.kid == kid)
            .ok_or(TokenError::UnknownKey)?;
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = vec![Algorithm::HS256];
        validation.leeway = LEEWAY_S;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        Ok(decode::<Claims>(token, &key.decoding, &validation)?.claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issues_and_verifies_with_current_and_previous_key() {
        let old = JwtKeys::new("the-old-signing-secret", None, Duration::from_secs(60)).unwrap();
        let token = old
            .issue(Uuid::now_v7(), "admin", None, Uuid::now_v7())
            .unwrap();
        let rotated = JwtKeys::new(
            "the-new-signing-secret",
            Some("the-old-signing-secret"),
            Duration::from_secs(60),
        )
        .unwrap();
        assert!(rotated.verify(&token).is_ok());
        let forgotten =
            JwtKeys::new("the-new-signing-secret", None, Duration::from_secs(60)).unwrap();
        assert!(matches!(
            forgotten.verify(&token),
            Err(TokenError::UnknownKey)
        ));
    }
}
