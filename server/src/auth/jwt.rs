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

/// Most verified tokens remembered (about 300 bytes each).
const MAX_VERIFIED: usize = 100_000;

/// The signing key and the previous one (still accepted during a rotation).
pub struct JwtKeys {
    current: Key,
    previous: Option<Key>,
    ttl: Duration,
    /// Tokens that passed every check, with their claims. A phone sends the same token
    /// with every fix, and decoding and checking it again was about 8 % of the server's
    /// work on a single-fix POST. A remembered token is taken only while its `exp` and
    /// `nbf` still pass (with the leeway), so it stops being accepted exactly when a
    /// checked one would; the keys never change in a process, so its signature stays good.
    /// Only tokens that verified are kept.
    verified: std::sync::Mutex<std::collections::HashMap<Box<str>, Claims>>,
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
            verified: std::sync::Mutex::default(),
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
        self.sign(&claims)
    }

    /// Signs claims with the current key, its `kid` in the header.
    fn sign(&self, claims: &Claims) -> anyhow::Result<String> {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(self.current.kid.clone());
        Ok(encode(&header, claims, &self.current.encoding)?)
    }

    /// Verifies a token: the pinned algorithm, a known `kid`, signature, `exp`, `nbf`,
    /// `iss`, `aud` and `sub`.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let now = chrono::Utc::now().timestamp();
        if let Ok(verified) = self.verified.lock()
            && let Some(claims) = verified.get(token)
            && in_time(claims, now)
        {
            return Ok(claims.clone());
        }
        let claims = self.check(token)?;
        if let Ok(mut verified) = self.verified.lock() {
            if verified.len() >= MAX_VERIFIED {
                verified.retain(|_, c| in_time(c, now));
                if verified.len() >= MAX_VERIFIED {
                    verified.clear();
                }
            }
            verified.insert(token.into(), claims.clone());
        }
        Ok(claims)
    }

    /// Decodes a token and checks everything [`JwtKeys::verify`] promises.
    fn check(&self, token: &str) -> Result<Claims, TokenError> {
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

/// Whether the time claims of a verified token still pass at `now` (Unix seconds), as
/// `jsonwebtoken` checks them: expired when `exp` is more than the leeway in the past, not
/// yet valid when `nbf` is more than the leeway ahead.
fn in_time(claims: &Claims, now: i64) -> bool {
    let leeway = LEEWAY_S as i64;
    claims.exp >= now - leeway && claims.nbf <= now + leeway
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

    fn signed(keys: &JwtKeys, exp_in: i64, nbf_in: i64, now: i64) -> (String, Claims) {
        let claims = Claims {
            sub: Uuid::now_v7(),
            role: "officer".into(),
            unit: None,
            sid: Uuid::now_v7(),
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            exp: now + exp_in,
            nbf: now + nbf_in,
            iat: now,
            jti: Uuid::now_v7(),
        };
        (keys.sign(&claims).unwrap(), claims)
    }

    #[test]
    fn a_remembered_token_is_only_the_one_that_verified() {
        let keys = JwtKeys::new("a-signing-secret", None, Duration::from_secs(60)).unwrap();
        let token = keys
            .issue(Uuid::now_v7(), "officer", None, Uuid::now_v7())
            .unwrap();
        let first = keys.verify(&token).unwrap();
        assert_eq!(keys.verify(&token).unwrap(), first);
        assert_eq!(keys.verified.lock().unwrap().len(), 1);
        // The same claims with another signature: not the remembered token, and refused.
        let (head, _) = token.rsplit_once('.').unwrap();
        let forged = format!("{head}.{}", "A".repeat(43));
        assert!(keys.verify(&forged).is_err());
        assert!(keys.verify("not.a.token").is_err());
        assert_eq!(keys.verified.lock().unwrap().len(), 1);
        // A remembered token whose time has passed is checked again (and here refused).
        let now = chrono::Utc::now().timestamp();
        let (old, claims) = signed(&keys, -120, -200, now);
        keys.verified
            .lock()
            .unwrap()
            .insert(old.as_str().into(), claims);
        assert!(keys.verify(&old).is_err());
    }

    proptest::proptest! {
        /// The time check of a remembered token agrees with `jsonwebtoken`'s own.
        #[test]
        fn the_time_check_of_a_remembered_token_is_jsonwebtokens(exp_in in -100i64..100, nbf_in in -100i64..100) {
            let leeway = LEEWAY_S as i64;
            // A second may pass between the two checks: stay off the edges.
            proptest::prop_assume!((exp_in + leeway).abs() > 1 && (nbf_in - leeway).abs() > 1);
            let keys = JwtKeys::new("a-signing-secret", None, Duration::from_secs(60)).unwrap();
            let now = chrono::Utc::now().timestamp();
            let (token, claims) = signed(&keys, exp_in, nbf_in, now);
            proptest::prop_assert_eq!(keys.check(&token).is_ok(), in_time(&claims, now));
        }
    }
}
