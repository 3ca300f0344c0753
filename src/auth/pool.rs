//! The `corq-auth` helper threads: the reactor queues an AUTH query (never blocking: a full
//! queue is a failed AUTH), a helper runs it against the auth servers, parses and compiles the
//! reply, and hands the result back over a channel, then wakes the reactor through the same
//! `mio::Waker` the storage worker and the lookupd helpers use.
//!
//! A few threads share the queue, so one stalled auth server (each attempt bounded by
//! `--http-client-request-timeout`) does not hold up every other connection's AUTH.
//!
//! nsqd's choice among several auth servers (`QueryAnyAuthd`): start at a random one, try each
//! in turn until one answers with a valid reply; the last failure is the error.

use std::sync::mpsc::{self, Receiver, Sender, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

use log::warn;

use super::endpoint::{AuthParams, Endpoint, Method};
use super::http::{round_trip, Timeouts};
use super::{parse_grant, Grant};

/// Helper threads.
const THREADS: usize = 4;
/// Queries waiting for a helper; past this an AUTH fails at once (logged).
const QUEUE: usize = 1024;

/// A query for one connection.
#[derive(Debug)]
pub struct AuthJob {
    /// The broker's client key.
    pub client: usize,
    /// Tags the answer: a stale one (the client left, its key was reused) is dropped.
    pub serial: u64,
    /// What the auth server is told.
    pub params: AuthParams,
}

/// A query's answer.
#[derive(Debug)]
pub struct AuthDone {
    /// The client key the job named.
    pub client: usize,
    /// The job's serial.
    pub serial: u64,
    /// The grant, or why there is none (for the log; the client sees nsqd's fixed text).
    pub result: Result<Grant, String>,
}

/// Everything a helper needs to run a query.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// The auth servers, parsed.
    pub endpoints: Vec<Endpoint>,
    /// GET or POST.
    pub method: Method,
    /// Connect and request timeouts.
    pub timeouts: Timeouts,
    /// The largest reply body accepted (`--max-body-size`).
    pub max_body: usize,
}

/// Wakes the reactor.
pub type Notify = Arc<dyn Fn() + Send + Sync>;

/// The queue into the helpers and the channel back.
pub struct AuthPool {
    jobs: SyncSender<AuthJob>,
    done: Receiver<AuthDone>,
}

impl std::fmt::Debug for AuthPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthPool").finish_non_exhaustive()
    }
}

impl AuthPool {
    /// Starts the helper threads; they end when the pool is dropped.
    ///
    /// # Errors
    /// If no thread could be started.
    pub fn spawn(cfg: PoolConfig, notify: Notify) -> std::io::Result<AuthPool> {
        let (jobs, rx) = mpsc::sync_channel::<AuthJob>(QUEUE);
        let (done_tx, done) = mpsc::channel();
        let rx = Arc::new(Mutex::new(rx));
        let cfg = Arc::new(cfg);
        for i in 0..THREADS {
            let (rx, tx, cfg, notify) = (rx.clone(), done_tx.clone(), cfg.clone(), notify.clone());
            let spawned =
                crate::cpu::spawn_helper("corq-auth", move || helper(&rx, &tx, &cfg, &*notify));
            if let Err(e) = spawned {
                if i == 0 {
                    return Err(e);
                }
                warn!("auth: started only {i} helper threads: {e}");
                break;
            }
        }
        Ok(AuthPool { jobs, done })
    }

    /// Queues a job without blocking; gives it back if the queue is full.
    ///
    /// # Errors
    /// The job, when the queue is full or the helpers are gone.
    pub fn submit(&self, job: AuthJob) -> Result<(), AuthJob> {
        match self.jobs.try_send(job) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(j) | TrySendError::Disconnected(j)) => Err(j),
        }
    }

    /// An answer, if one arrived.
    pub fn try_recv(&self) -> Option<AuthDone> {
        self.done.try_recv().ok()
    }
}

fn helper(
    rx: &Mutex<Receiver<AuthJob>>,
    tx: &Sender<AuthDone>,
    cfg: &PoolConfig,
    notify: &(dyn Fn() + Send + Sync),
) {
    loop {
        // The lock is held only while waiting for the next job, never while running one.
        let job = match rx.lock() {
            Ok(guard) => guard.recv(),
            Err(poisoned) => poisoned.into_inner().recv(),
        };
        let Ok(job) = job else { return };
        let result = query_any(cfg, &job.params, random_start());
        let done = AuthDone {
            client: job.client,
            serial: job.serial,
            result,
        };
        if tx.send(done).is_err() {
            return;
        }
        notify();
    }
}

/// nsqd's `QueryAnyAuthd`: each server in turn from `start`, the first valid grant wins.
fn query_any(cfg: &PoolConfig, params: &AuthParams, start: usize) -> Result<Grant, String> {
    let n = cfg.endpoints.len();
    let mut last = "no auth server configured".to_owned();
    for i in 0..n {
        let Some(ep) = cfg.endpoints.get((start.wrapping_add(i)) % n) else {
            continue;
        };
        let request = ep.request(cfg.method, params);
        match round_trip(ep, &request, cfg.timeouts, cfg.max_body).and_then(|b| parse_grant(&b)) {
            Ok(grant) => return Ok(grant),
            Err(e) => {
                let e = clip(e);
                warn!(
                    "auth: failed auth against {}:{}{} {e}",
                    ep.host, ep.port, ep.target
                );
                last = e;
            }
        }
    }
    Err(last)
}

/// Error texts can quote the reply; keep log lines short whatever the auth server sent.
fn clip(mut s: String) -> String {
    const MAX: usize = 300;
    if s.len() > MAX {
        let mut cut = MAX;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str("...");
    }
    s
}

/// A random starting index (std's per-process random hash keys, mixed with a counter).
fn random_start() -> usize {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicUsize, Ordering};
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_usize(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.finish() as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_texts_are_clipped_on_a_char_boundary() {
        assert_eq!(clip("short".into()), "short");
        let long = "é".repeat(400);
        let c = clip(long);
        assert!(c.len() <= 303 && c.ends_with("..."), "{}", c.len());
    }

    #[test]
    fn every_server_is_tried_from_the_start_index() {
        // Two closed ports: both are tried (each logs), the last error is returned.
        let dead = |_| {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().to_string()
        };
        let endpoints: Vec<Endpoint> = (0..2)
            .map(dead)
            .map(|a| Endpoint::parse(&a).unwrap())
            .collect();
        let cfg = PoolConfig {
            endpoints: endpoints.clone(),
            method: Method::Get,
            timeouts: Timeouts {
                connect: std::time::Duration::from_secs(5),
                request: std::time::Duration::from_secs(5),
            },
            max_body: 1024,
        };
        let params = AuthParams {
            remote_ip: "127.0.0.1".into(),
            tls: false,
            common_name: String::new(),
            secret: b"s".to_vec(),
        };
        let err = query_any(&cfg, &params, 1).unwrap_err();
        // Started at index 1, so index 0 was tried last.
        let port = endpoints[0].port.to_string();
        assert!(err.contains(&port), "{err}");
    }
}
