//! The optional outgoing webhook: each alert change POSTed as JSON, signed with
//! HMAC-SHA256 over a timestamp and the body, from a bounded queue in a task of its own.
//! Each change is retried on its own schedule with exponential backoff, so a change the
//! receiver keeps refusing never holds up the ones after it, and an SOS due at the same
//! time as other changes goes first. Sending never waits: when the queue is full the
//! oldest change that is not an SOS is dropped (and logged).

use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::{sync::mpsc, time::Instant};

/// Changes waiting to be sent or retried; beyond it the oldest non-SOS change is dropped.
const QUEUE: usize = 1000;
/// Attempts per change before it is given up.
const ATTEMPTS: u32 = 8;
/// The first wait before a retry; it doubles each time.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// The longest wait between attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// The header carrying the signature.
pub const SIGNATURE_HEADER: &str = "X-Patrol-Signature";
/// The header carrying the time of the attempt (Unix seconds), which the signature covers:
/// a receiver that refuses old timestamps cannot be sent a recorded call again.
pub const TIMESTAMP_HEADER: &str = "X-Patrol-Timestamp";

/// The handle to the webhook task.
#[derive(Clone)]
pub struct Webhook {
    tx: mpsc::Sender<Change>,
}

/// One alert change to deliver.
struct Change {
    body: Vec<u8>,
    sos: bool,
}

/// A change waiting for its next attempt.
#[derive(Debug)]
struct Delivery {
    body: Vec<u8>,
    sos: bool,
    /// Order of arrival.
    seq: u64,
    /// Attempts made so far.
    attempts: u32,
    due: Instant,
}

impl Webhook {
    /// Starts the task that POSTs to `url`, signing with `secret` when given.
    pub fn start(url: String, secret: Option<String>) -> anyhow::Result<Webhook> {
        // No redirects: a 3xx would carry the body and its signature to another address.
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(client, url, secret, rx));
        Ok(Webhook { tx })
    }

    /// Queues a JSON body (`{"action", "alert": {"kind", ...}}`); never waits.
    pub fn send(&self, body: &serde_json::Value) {
        let Ok(bytes) = serde_json::to_vec(body) else {
            return;
        };
        let sos = body["alert"]["kind"] == "sos";
        if self.tx.try_send(Change { body: bytes, sos }).is_err() {
            tracing::warn!("the webhook queue is full; an alert change was not sent");
        }
    }
}

/// The delivery to attempt next among those due at `now`: an SOS before anything else,
/// then the oldest.
fn next_due(pending: &[Delivery], now: Instant) -> Option<usize> {
    pending
        .iter()
        .enumerate()
        .filter(|(_, d)| d.due <= now)
        .min_by_key(|(_, d)| (!d.sos, d.seq))
        .map(|(i, _)| i)
}

/// Adds a change, dropping the oldest change that is not an SOS when the queue is full.
fn admit(pending: &mut Vec<Delivery>, change: Change, seq: u64, now: Instant) {
    if pending.len() >= QUEUE {
        let victim = pending
            .iter()
            .enumerate()
            .filter(|(_, d)| !d.sos)
            .min_by_key(|(_, d)| d.seq)
            .map(|(i, _)| i)
            .unwrap_or(0);
        pending.remove(victim);
        tracing::warn!("the webhook queue is full; the oldest alert change was dropped");
    }
    pending.push(Delivery {
        body: change.body,
        sos: change.sos,
        seq,
        attempts: 0,
        due: now,
    });
}

/// The wait after a change's `attempts`-th failed attempt.
fn backoff(attempts: u32) -> Duration {
    FIRST_BACKOFF
        .saturating_mul(1 << attempts.saturating_sub(1).min(16))
        .min(MAX_BACKOFF)
}

async fn run(
    client: reqwest::Client,
    url: String,
    secret: Option<String>,
    mut rx: mpsc::Receiver<Change>,
) {
    let mut pending: Vec<Delivery> = Vec::new();
    let mut seq = 0u64;
    let mut open = true;
    loop {
        while let Ok(change) = rx.try_recv() {
            seq += 1;
            admit(&mut pending, change, seq, Instant::now());
        }
        let Some(i) = next_due(&pending, Instant::now()) else {
            if !open && pending.is_empty() {
                return;
            }
            let next = pending.iter().map(|d| d.due).min();
            tokio::select! {
                change = rx.recv(), if open => match change {
                    Some(change) => {
                        seq += 1;
                        admit(&mut pending, change, seq, Instant::now());
                    }
                    None => open = false,
                },
                () = async {
                    match next {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                } => {}
            }
            continue;
        };
        let d = &mut pending[i];
        d.attempts += 1;
        let timestamp = chrono::Utc::now().timestamp().to_string();
        let mut req = client
            .post(&url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(TIMESTAMP_HEADER, &timestamp)
            .body(d.body.clone());
        if let Some(secret) = &secret {
            req = req.header(
                SIGNATURE_HEADER,
                signature(secret.as_bytes(), &signed_payload(&timestamp, &d.body)),
            );
        }
        let attempt = d.attempts;
        let delivered = match req.send().await {
            Ok(res) if res.status().is_success() => true,
            Ok(res) => {
                tracing::warn!(status = %res.status(), attempt, "the webhook refused an alert change");
                false
            }
            // Without the URL, which may carry a token.
            Err(e) => {
                tracing::warn!(error = %e.without_url(), attempt, "the webhook could not be reached");
                false
            }
        };
        if delivered {
            pending.remove(i);
        } else if attempt >= ATTEMPTS {
            tracing::error!("an alert change was given up after {ATTEMPTS} attempts");
            pending.remove(i);
        } else {
            pending[i].due = Instant::now() + backoff(attempt);
        }
    }
}

/// What the signature covers: the timestamp header's value, a dot, and the body.
pub fn signed_payload(timestamp: &str, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(timestamp.len() + 1 + body.len());
    out.extend_from_slice(timestamp.as_bytes());
    out.push(b'.');
    out.extend_from_slice(body);
    out
}

/// `sha256=` and the hex HMAC-SHA256 of the body (RFC 2104).
pub fn signature(key: &[u8], body: &[u8]) -> String {
    const BLOCK: usize = 64;
    let mut k = [0u8; BLOCK];
    if key.len() > BLOCK {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| k.map(|b| b ^ byte);
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(body)
        .finalize();
    let outer = Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize();
    format!("sha256={}", hex::encode(outer))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(seq: u64, sos: bool, due: Instant) -> Delivery {
        Delivery {
            body: Vec::new(),
            sos,
            seq,
            attempts: 0,
            due,
        }
    }

    #[test]
    fn an_sos_goes_first_and_a_change_waiting_to_retry_holds_nobody() {
        let now = Instant::now();
        let later = now + Duration::from_secs(60);
        let pending = [
            delivery(1, false, later),
            delivery(2, false, now),
            delivery(3, true, now),
        ];
        assert_eq!(next_due(&pending, now), Some(2), "the SOS first");
        assert_eq!(
            next_due(&pending[..2], now),
            Some(1),
            "past the one waiting"
        );
        assert_eq!(next_due(&pending[..1], now), None);
        assert_eq!(next_due(&pending[..1], later), Some(0));
    }

    #[test]
    fn a_full_queue_drops_the_oldest_change_that_is_not_an_sos() {
        let now = Instant::now();
        let mut pending: Vec<Delivery> = (0..QUEUE as u64)
            .map(|i| delivery(i, i == 0, now))
            .collect();
        admit(
            &mut pending,
            Change {
                body: Vec::new(),
                sos: false,
            },
            QUEUE as u64,
            now,
        );
        assert_eq!(pending.len(), QUEUE);
        let seqs: Vec<u64> = pending.iter().take(2).map(|d| d.seq).collect();
        assert_eq!(seqs, [0, 2], "the SOS kept, the oldest other dropped");
    }

    #[test]
    fn backoff_doubles_to_its_ceiling() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(4), Duration::from_secs(8));
        assert_eq!(backoff(12), MAX_BACKOFF);
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
    }

    #[test]
    fn hmac_matches_rfc_4231() {
        // Test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // Test case 6: a key longer than the block.
        assert_eq!(
            signature(
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            ),
            "sha256=60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }
}
