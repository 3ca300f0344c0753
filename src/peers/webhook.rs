//! The alert webhook (`--alert-webhook-url`): one JSON document per alert firing or resolved,
//! POSTed from a helper thread so a dead or slow receiver never touches the reactor.
//!
//! Bounded everywhere: the queue holds at most [`QUEUE`] documents (a full queue drops the new
//! one and counts it), each POST has a 1 s connect and 2 s overall timeout
//! ([`crate::auth::http::round_trip`], the auth client's), and is tried at most [`TRIES`]
//! times with a short backoff. Any `2xx` answer is success. The thread ends when the broker
//! drops its [`Webhook`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Duration;

use log::warn;

use crate::auth::http::{round_trip, Timeouts};
use crate::auth::Endpoint;

/// Documents waiting to be sent, at most.
pub const QUEUE: usize = 64;
/// POST attempts per document.
pub const TRIES: u32 = 3;
/// Reply bytes read from the receiver, at most.
const MAX_REPLY: usize = 4096;

/// The sender's handle, owned by the broker.
#[derive(Debug)]
pub struct Webhook {
    tx: SyncSender<Vec<u8>>,
    /// Documents dropped because the queue was full.
    dropped: Arc<AtomicU64>,
    /// Documents the receiver never accepted after every try.
    failed: Arc<AtomicU64>,
}

impl Webhook {
    /// Parses `url` and starts the sender thread.
    ///
    /// # Errors
    /// The URL is not an `http://` URL, or the thread could not start.
    pub fn start(url: &str) -> Result<Webhook, String> {
        let ep = Endpoint::parse(url).map_err(|e| format!("--alert-webhook-url {url}: {e}"))?;
        let (tx, rx) = sync_channel(QUEUE);
        let failed = Arc::new(AtomicU64::new(0));
        let f = Arc::clone(&failed);
        crate::cpu::spawn_helper("corq-webhook", move || run(&ep, &rx, &f))
            .map_err(|e| format!("webhook thread: {e}"))?;
        Ok(Webhook {
            tx,
            dropped: Arc::new(AtomicU64::new(0)),
            failed,
        })
    }

    /// Queues one JSON document; drops (and counts) it when the queue is full. Never blocks.
    pub fn send(&self, body: Vec<u8>) {
        match self.tx.try_send(body) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Documents dropped (queue full) plus those never accepted after every try.
    pub fn lost(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed) + self.failed.load(Ordering::Relaxed)
    }
}

/// One alert document: `{"alert","state","topic","channel","value","threshold","time"}`
/// (`channel` null for a topic alert; `time` RFC 3339 UTC).
pub fn document(
    alert: &str,
    firing: bool,
    topic: &str,
    channel: Option<&str>,
    (value, threshold): (f64, f64),
    wall_ns: i64,
) -> Vec<u8> {
    let time = std::time::UNIX_EPOCH + Duration::from_nanos(u64::try_from(wall_ns).unwrap_or(0));
    serde_json::json!({
        "alert": alert,
        "state": if firing { "firing" } else { "resolved" },
        "topic": topic,
        "channel": channel,
        "value": value,
        "threshold": threshold,
        "time": crate::logging::rfc3339(time),
    })
    .to_string()
    .into_bytes()
}

fn run(ep: &Endpoint, rx: &Receiver<Vec<u8>>, failed: &AtomicU64) {
    let t = Timeouts {
        connect: Duration::from_secs(1),
        request: Duration::from_secs(2),
    };
    while let Ok(body) = rx.recv() {
        let mut req = format!(
            "POST {} HTTP/1.0\r\nHost: {}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n",
            ep.target,
            ep.authority,
            body.len()
        )
        .into_bytes();
        req.extend_from_slice(&body);
        let mut last = String::new();
        let ok = (0..TRIES).any(|attempt| {
            if attempt > 0 {
                std::thread::sleep(Duration::from_millis(200 << attempt));
            }
            match round_trip(ep, &req, t, MAX_REPLY) {
                Ok(_) => true,
                Err(e) if e.starts_with("got response 2") => true,
                Err(e) => {
                    last = e;
                    false
                }
            }
        });
        if !ok {
            failed.fetch_add(1, Ordering::Relaxed);
            warn!(
                "alert webhook {}: gave up after {TRIES} tries: {last}",
                ep.authority
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_have_the_documented_fields() {
        let d = document("topic_fill", true, "t", None, (0.8, 0.8), 1_000_000_000);
        let v: serde_json::Value = serde_json::from_slice(&d).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"alert":"topic_fill","state":"firing","topic":"t","channel":null,
                "value":0.8,"threshold":0.8,"time":"1970-01-01T00:00:01.000000Z"})
        );
        let d = document("channel_latency", false, "t", Some("c"), (0.1, 0.5), 0);
        let v: serde_json::Value = serde_json::from_slice(&d).unwrap();
        assert_eq!(
            (v["state"].as_str(), v["channel"].as_str()),
            (Some("resolved"), Some("c"))
        );
    }

    #[test]
    fn a_full_queue_drops_and_counts_without_blocking() {
        // A receiver that accepts and never answers: the thread is stuck on its first POST.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let w = Webhook::start(&format!("http://{}/h", l.local_addr().unwrap())).unwrap();
        for _ in 0..QUEUE + 10 {
            w.send(b"{}".to_vec());
        }
        assert!(w.lost() >= 9, "lost {}", w.lost());
    }
}
