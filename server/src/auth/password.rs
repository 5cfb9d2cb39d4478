//! Password hashing with argon2id, off the async threads and bounded: each hash holds
//! Argon2's memory for its whole run, so a flood of logins must wait in a short queue or be
//! turned away, never pile up on the blocking pool.

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use argon2::{
    Argon2, PasswordHash, PasswordHasher, PasswordVerifier,
    password_hash::{SaltString, rand_core::OsRng},
};
use prometheus_client::metrics::counter::Counter;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::ApiError;

/// Seconds a client turned away by a full queue is asked to wait.
pub const BUSY_RETRY_S: u64 = 1;

/// Why a hash or a check did not happen.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    /// As many hashes as the machine runs at once are running, and the queue is full.
    #[error("the server is busy checking other passwords; try again shortly")]
    Busy,
    /// The hash failed (a malformed stored hash, a failed thread).
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}

impl From<PasswordError> for ApiError {
    fn from(err: PasswordError) -> Self {
        match err {
            PasswordError::Busy => ApiError::busy(err.to_string(), BUSY_RETRY_S),
            PasswordError::Failed(e) => ApiError::from(e),
        }
    }
}

/// The hashing of passwords and PINs: at most `running` at once, at most `waiting` more in
/// line, and any further one refused at once with [`PasswordError::Busy`].
pub struct Passwords {
    running: Arc<Semaphore>,
    admitted: Arc<AtomicUsize>,
    most: usize,
    hashes: Counter,
}

impl Passwords {
    /// A gate for `running` hashes at once and `waiting` more in line; `hashes` counts
    /// those computed.
    pub fn new(running: usize, waiting: usize, hashes: Counter) -> Passwords {
        let running = running.max(1);
        Passwords {
            running: Arc::new(Semaphore::new(running)),
            admitted: Arc::default(),
            most: running + waiting,
            hashes,
        }
    }

    /// One hash at a time per core, and twice as many in line: a queued one then waits
    /// for two hashes at most.
    pub fn for_this_machine(hashes: Counter) -> Passwords {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Passwords::new(cores, 2 * cores, hashes)
    }

    /// A place in line, or [`PasswordError::Busy`] when the line is full. Decided now,
    /// so that a refusal costs nothing.
    pub fn admit(&self) -> Result<Admission, PasswordError> {
        let admitted = Admitted(self.admitted.clone());
        if self.admitted.fetch_add(1, Ordering::AcqRel) >= self.most {
            return Err(PasswordError::Busy);
        }
        Ok(Admission {
            admitted,
            running: self.running.clone(),
            hashes: self.hashes.clone(),
        })
    }

    /// Hashes a password with argon2id and a fresh salt (PHC string).
    pub async fn hash(&self, password: String) -> Result<String, PasswordError> {
        let turn = self.admit()?.turn().await;
        run(turn, move || {
            let salt = SaltString::generate(&mut OsRng);
            Argon2::default()
                .hash_password(password.as_bytes(), &salt)
                .map(|h| h.to_string())
                .map_err(|e| anyhow::anyhow!("hashing a password: {e}"))
        })
        .await
    }

    /// Checks a password against a stored hash. With no stored hash (unknown user) it
    /// checks against a fixed dummy hash, so that both cases cost the same time.
    pub async fn verify(
        &self,
        stored: Option<String>,
        password: String,
    ) -> Result<bool, PasswordError> {
        let turn = self.admit()?.turn().await;
        run(turn, move || {
            let dummy = dummy_hash();
            let (hash, real) = match &stored {
                Some(h) => (h.as_str(), true),
                None => (dummy.as_str(), false),
            };
            let parsed =
                PasswordHash::new(hash).map_err(|e| anyhow::anyhow!("stored hash: {e}"))?;
            let ok = Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok();
            Ok(ok && real)
        })
        .await
    }
}

/// Runs one hash on the blocking pool. The turn moves into the thread: a client that
/// goes away does not stop the hash, so its place is freed only when the hash ends.
async fn run<T: Send + 'static>(
    turn: Turn,
    work: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> Result<T, PasswordError> {
    tokio::task::spawn_blocking(move || {
        turn.hashes.inc();
        let out = work();
        drop(turn);
        out
    })
    .await
    .map_err(anyhow::Error::from)?
    .map_err(PasswordError::from)
}

/// A place in line for a hash.
pub struct Admission {
    admitted: Admitted,
    running: Arc<Semaphore>,
    hashes: Counter,
}

impl Admission {
    /// Waits for a free hasher.
    pub async fn turn(self) -> Turn {
        let permit = self
            .running
            .acquire_owned()
            .await
            .expect("the hashing semaphore is never closed");
        Turn {
            _permit: permit,
            _admitted: self.admitted,
            hashes: self.hashes,
        }
    }
}

/// The right to run one hash now.
pub struct Turn {
    _permit: OwnedSemaphorePermit,
    _admitted: Admitted,
    hashes: Counter,
}

/// Counts one admitted hash until dropped, also when its client goes away while waiting.
struct Admitted(Arc<AtomicUsize>);

impl Drop for Admitted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
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
    use super::*;

    fn gate(running: usize, waiting: usize) -> Passwords {
        Passwords::new(running, waiting, Counter::default())
    }

    #[tokio::test]
    async fn round_trip_and_unknown_user() {
        let p = gate(1, 0);
        let h = p.hash("correct horse".into()).await.unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(
            p.verify(Some(h.clone()), "correct horse".into())
                .await
                .unwrap()
        );
        assert!(!p.verify(Some(h), "wrong".into()).await.unwrap());
        assert!(
            !p.verify(None, "no user has this password".into())
                .await
                .unwrap()
        );
        assert_eq!(p.hashes.get(), 4);
    }

    #[tokio::test]
    async fn beyond_the_running_and_the_waiting_a_hash_is_refused_at_once() {
        let p = gate(1, 1);
        let first = p.admit().unwrap().turn().await;
        // The second waits in line for the first…
        let second = p.admit().unwrap();
        let mut waiting = Box::pin(second.turn());
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(20), &mut waiting)
                .await
                .is_err()
        );
        // …and a third is refused, not queued, also through the hashing calls.
        assert!(matches!(p.admit(), Err(PasswordError::Busy)));
        assert!(matches!(
            p.verify(None, "x".into()).await,
            Err(PasswordError::Busy)
        ));
        let refused = ApiError::from(PasswordError::Busy);
        assert_eq!(refused.status().as_u16(), 503);
        assert_eq!(refused.code(), "busy");
        assert_eq!(p.hashes.get(), 0);
        // The first done, the second runs and a place in line is free again.
        drop(first);
        let second = waiting.await;
        let third = p.admit().unwrap();
        drop(second);
        drop(third.turn().await);
        // A client that gave up while waiting gives its place back.
        let held = p.admit().unwrap().turn().await;
        let gone = p.admit().unwrap();
        drop(gone);
        assert!(p.admit().is_ok());
        drop(held);
    }
}
