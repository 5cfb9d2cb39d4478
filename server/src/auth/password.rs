//! Password hashing with argon2id, off the async threads.

use argon2::{
    Argon2, PasswordHash, PasswordHasher, PasswordVerifier,
    password_hash::{SaltString, rand_core::OsRng},
};

/// Hashes a password with argon2id and a fresh salt (PHC string).
pub async fn hash(password: String) -> anyhow::Result<String> {
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| anyhow::anyhow!("hashing a password: {e}"))
    })
    .await?
}

/// Checks a password against a stored hash. With no stored hash (unknown user) it checks
/// against a fixed dummy hash, so that both cases cost the same time.
pub async fn verify(stored: Option<String>, password: String) -> anyhow::Result<bool> {
    tokio::task::spawn_blocking(move || {
        let dummy = dummy_hash();
        let (hash, real) = match &stored {
            Some(h) => (h.as_str(), true),
            None => (dummy.as_str(), false),
        };
        let parsed = PasswordHash::new(hash).map_err(|e| anyhow::anyhow!("stored hash: {e}"))?;
        let ok = Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok();
        Ok(ok && real)
    })
    .await?
}

fn dummy_hash() -> &'static String {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(b"no user has this password", &salt)
            .expect("hashing a constant")
            .to_string()
    })
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn round_trip_and_unknown_user() {
        let h = super::hash("correct horse".into()).await.unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(
            super::verify(Some(h.clone()), "correct horse".into())
                .await
                .unwrap()
        );
        assert!(!super::verify(Some(h), "wrong".into()).await.unwrap());
        assert!(
            !super::verify(None, "no user has this password".into())
                .await
                .unwrap()
        );
    }
}
