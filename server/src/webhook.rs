//! The optional outgoing webhook: each alert change POSTed as JSON, signed with
//! HMAC-SHA256, from a bounded queue in a task of its own, retried with exponential
//! backoff. Sending never waits: when the queue is full the change is dropped (and logged).

use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

/// Changes waiting to be sent; more are dropped.
const QUEUE: usize = 1000;
/// Attempts per change before it is given up.
const ATTEMPTS: u32 = 8;
/// The first wait before a retry; it doubles each time.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// The longest wait between attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// The header carrying the signature.
pub const SIGNATURE_HEADER: &str = "X-Patrol-Signature";

/// The handle to the webhook task.
#[derive(Clone)]
pub struct Webhook {
    tx: mpsc::Sender<Vec<u8>>,
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

    /// Queues a JSON body; never waits.
    pub fn send(&self, body: &serde_json::Value) {
        let Ok(bytes) = serde_json::to_vec(body) else {
            return;
        };
        if self.tx.try_send(bytes).is_err() {
            tracing::warn!("the webhook queue is full; an alert change was not sent");
        }
    }
}

async fn run(
    client: reqwest::Client,
    url: String,
    secret: Option<String>,
    mut rx: mpsc::Receiver<Vec<u8>>,
) {
    while let Some(body) = rx.recv().await {
        let mut backoff = FIRST_BACKOFF;
        for attempt in 1..=ATTEMPTS {
            let mut req = client
                .post(&url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.clone());
            if let Some(secret) = &secret {
                req = req.header(SIGNATURE_HEADER, signature(secret.as_bytes(), &body));
            }
            match req.send().await {
                Ok(res) if res.status().is_success() => break,
                Ok(res) => {
                    tracing::warn!(status = %res.status(), attempt, "the webhook refused an alert change")
                }
                // Without the URL, which may carry a token.
                Err(e) => {
                    tracing::warn!(error = %e.without_url(), attempt, "the webhook could not be reached")
                }
            }
            if attempt == ATTEMPTS {
                tracing::error!("an alert change was given up after {ATTEMPTS} attempts");
                break;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
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
