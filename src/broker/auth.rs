//! AUTH and the permission gate on SUB, PUB, MPUB and DPUB (nsqd `protocol_v2.go` `AUTH` and
//! `CheckAuth`, `client_v2.go` `QueryAuthd`/`IsAuthorized`; reference §1.7.2, §1.14).
//!
//! With `--auth-http-address` set, a session must AUTH before it may SUB or publish. AUTH
//! queues a query for the `corq-auth` helpers (`crate::auth::pool`) and the session *waits*:
//! its later commands stay unread in its buffer, as a strict-mode publisher's do while it waits
//! for a durable ack, and every other connection keeps going. The answer comes back through
//! [`Broker::auth_step`], which replies and lets the session's input run again.
//!
//! The grant is cached on the session until its `ttl` passes; then the next SUB or publish
//! asks the auth server again before it runs. That command is *not consumed* while the query
//! runs (`Applied::Retry`): its bytes stay in the buffer and it is decoded and checked again
//! when the answer is in, so nothing is copied and replies keep command order.

use log::{debug, warn};

use crate::auth::{AuthJob, AuthParams, AuthPool, Grant, Method, PoolConfig};
use crate::protocol::{self, go_quote};

use super::client::ClientKey;
use super::{fatal, Broker, Now};

/// What a command's auth check decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Gate {
    /// Run the command.
    Pass,
    /// An error was queued (fatal); do not run it.
    Failed,
    /// The grant expired and is being refreshed: keep the command for later.
    Wait,
}

/// Whether a decoded command was used up, or must be decoded again later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Done (successfully or not): consume its bytes.
    Done,
    /// Leave its bytes in the buffer: the session waits for the auth server, and the command
    /// runs when it has answered.
    Retry,
}

/// Why a query is outstanding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Asked {
    /// The AUTH command: answer it.
    Auth,
    /// An expired grant: replace it, then the waiting command runs again.
    Refresh,
}

/// A session's auth state (nsqd's `AuthSecret` + `AuthState`).
#[derive(Debug, Default)]
pub struct ClientAuth {
    /// The AUTH body, kept for refreshes.
    secret: Option<Vec<u8>>,
    /// The last grant.
    grant: Option<Grant>,
    /// Monotonic ms after which the grant must be refreshed.
    expires_ms: u64,
    /// Set when a refresh just landed: the retried command uses the new grant without checking
    /// its expiry again (nsqd checks `IsAllowed` right after the refresh).
    fresh: bool,
    /// The outstanding query's serial, and why it was made.
    pending: Option<(u64, Asked)>,
    /// The MPUB being read passed its check (made after its line, before its body, as nsqd).
    pub mpub_checked: bool,
}

impl ClientAuth {
    /// Whether a query for this session is outstanding (its input waits).
    pub fn is_pending(&self) -> bool {
        self.pending.is_some()
    }

    /// nsqd's `HasAuthorizations`.
    pub fn has_authorizations(&self) -> bool {
        self.grant
            .as_ref()
            .is_some_and(|g| !g.authorizations.is_empty())
    }

    /// For /stats: (identity, identity URL) of the last grant.
    pub fn identity(&self) -> Option<(&str, &str)> {
        self.grant
            .as_ref()
            .map(|g| (g.identity.as_str(), g.identity_url.as_str()))
    }
}

/// The helper pool's settings from the configuration; `None` when auth is off.
pub(super) fn pool_config(cfg: &crate::config::Options) -> Option<PoolConfig> {
    if cfg.auth_http_address.is_empty() {
        return None;
    }
    let endpoints = cfg
        .auth_http_address
        .iter()
        // Validation already parsed every address.
        .filter_map(|a| crate::auth::Endpoint::parse(a.trim()).ok())
        .collect();
    Some(PoolConfig {
        endpoints,
        method: Method::from_flag(&cfg.auth_http_request_method),
        timeouts: crate::auth::http::Timeouts {
            connect: std::time::Duration::from_millis(cfg.http_client_connect_timeout),
            request: std::time::Duration::from_millis(cfg.http_client_request_timeout),
        },
        max_body: cfg.max_body_size as usize,
    })
}

impl Broker {
    /// Whether AUTH is required (`--auth-http-address` given).
    pub fn auth_enabled(&self) -> bool {
        !self.cfg.auth_http_address.is_empty()
    }

    /// Starts the auth helpers when auth is on; `notify` wakes the reactor (its `mio::Waker`).
    ///
    /// # Errors
    /// If no helper thread could be started.
    pub fn start_auth(&mut self, notify: crate::auth::pool::Notify) -> std::io::Result<()> {
        if let Some(cfg) = pool_config(&self.cfg) {
            self.auth = Some(AuthPool::spawn(cfg, notify)?);
        }
        Ok(())
    }

    /// `AUTH <secret>` (state and body already checked by the decoder).
    pub(super) fn auth_command(&mut self, ck: ClientKey, secret: &[u8]) {
        let enabled = self.auth_enabled();
        let Some(c) = self.clients.get_mut(ck) else {
            return;
        };
        if c.auth.has_authorizations() {
            return self.fail(ck, &fatal(protocol::E_INVALID, "AUTH already set"));
        }
        if !enabled {
            return self.fail(ck, &fatal(protocol::E_AUTH_DISABLED, "AUTH disabled"));
        }
        c.auth.secret = Some(secret.to_vec());
        self.ask(ck, Asked::Auth);
    }

    /// nsqd's `CheckAuth` for `verb` on `topic` (`channel` empty for a publish), auth being
    /// on: judges the client's grant, asking the auth server first if it expired.
    pub(super) fn check_auth(
        &mut self,
        ck: ClientKey,
        verb: &str,
        topic: &str,
        channel: &str,
        now: Now,
    ) -> Gate {
        let Some(c) = self.clients.get_mut(ck) else {
            return Gate::Failed;
        };
        if std::mem::take(&mut c.auth.fresh) {
            // Just refreshed for this very command: judge it by the new grant.
        } else if !c.auth.has_authorizations() {
            let err = fatal(
                protocol::E_AUTH_FIRST,
                &format!("AUTH required before {verb}"),
            );
            self.fail(ck, &err);
            return Gate::Failed;
        } else if now.mono_ms >= c.auth.expires_ms {
            return if self.ask(ck, Asked::Refresh) {
                Gate::Wait
            } else {
                Gate::Failed
            };
        }
        if c.auth
            .grant
            .as_ref()
            .is_some_and(|g| g.is_allowed(topic, channel))
        {
            return Gate::Pass;
        }
        let desc = format!(
            "AUTH failed for {verb} on {} {}",
            go_quote(topic.as_bytes()),
            go_quote(channel.as_bytes())
        );
        self.fail(ck, &fatal(protocol::E_UNAUTHORIZED, &desc));
        Gate::Failed
    }

    /// Queues a query for a session; false (with `E_AUTH_FAILED` sent) if it cannot be.
    fn ask(&mut self, ck: ClientKey, why: Asked) -> bool {
        self.auth_serial += 1;
        let serial = self.auth_serial;
        let Some(c) = self.clients.get_mut(ck) else {
            return false;
        };
        let (tls, common_name) = c.tls_state();
        let job = AuthJob {
            client: ck,
            serial,
            params: AuthParams {
                // Go prints an IPv4 client of a dual-stack listener as IPv4, not ::ffff:a.b.c.d.
                remote_ip: c.remote.ip().to_canonical().to_string(),
                tls,
                common_name: common_name.unwrap_or_default(),
                secret: c.auth.secret.clone().unwrap_or_default(),
            },
        };
        let queued = match &self.auth {
            Some(pool) => pool.submit(job).is_ok(),
            None => false,
        };
        if queued {
            c.auth.pending = Some((serial, why));
            return true;
        }
        warn!("client {ck}: AUTH failed: the auth query queue is full or its helpers are gone");
        self.fail(ck, &fatal(protocol::E_AUTH_FAILED, "AUTH failed"));
        false
    }

    /// Applies the auth servers' answers that arrived: replies to AUTH, installs refreshed
    /// grants, and lets each answered session's input run again.
    pub fn auth_step(&mut self, now: Now) {
        while let Some(done) = self.auth.as_ref().and_then(AuthPool::try_recv) {
            let ck = done.client;
            let Some(c) = self.clients.get_mut(ck) else {
                continue;
            };
            let Some((serial, why)) = c.auth.pending else {
                continue;
            };
            if serial != done.serial {
                continue;
            }
            c.auth.pending = None;
            // Reading resumes now: the read deadline counts from here, as nsqd's next read does.
            c.last_read_ms = now.mono_ms;
            self.unblocked.push(c.token);
            let grant = match done.result {
                Ok(g) => g,
                Err(e) => {
                    // As nsqd: the reason is logged, never shown to the client.
                    warn!("client {ck}: AUTH failed {e}");
                    self.fail(ck, &fatal(protocol::E_AUTH_FAILED, "AUTH failed"));
                    continue;
                }
            };
            let ttl_ms = grant.ttl_secs.saturating_mul(1000);
            c.auth.expires_ms = now.mono_ms.saturating_add(ttl_ms);
            let empty = grant.authorizations.is_empty();
            let reply = (why == Asked::Auth).then(|| grant.reply_json());
            debug!(
                "client {ck}: auth grant for {:?}, ttl {}s",
                grant.identity, grant.ttl_secs
            );
            c.auth.grant = Some(grant);
            match reply {
                None => c.auth.fresh = true,
                Some(_) if empty => {
                    let err = fatal(protocol::E_UNAUTHORIZED, "AUTH no authorizations found");
                    self.fail(ck, &err);
                }
                Some(json) => self.respond(ck, &json),
            }
        }
    }
}
