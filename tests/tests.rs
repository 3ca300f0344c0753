//! corq's integration tests: one binary, one module per area.
//!
//! - `protocol`: exact frames for good and hostile input, heartbeats, CLS, limits
//! - `pubsub`: channels, consumers, RDY, FIN/REQ/TOUCH, timeouts, DPUB
//! - `restart`: clean restart, kill -9, DPUB across a restart
//! - `durability`: strict mode (`--sync-every=1`): acks after the sync, reply order
//! - `crash`: kill -9 loops under load, torn tails, bit flips, a full disk
//! - `recovery`: damaged or missing segment files cost only the damaged records, named at warn
//! - `disk`: disk on demand: many small topics on a small disk, a full disk mid-segment
//! - `retention`: a long-REQ'd message does not pin old segments (carrying forward)
//! - `resident`: log pages delivery read are released behind the slowest channel
//! - `abuse`: silent, idle, stuck and slowloris clients
//! - `auth`: AUTH against a fake auth server: grants, ttl re-queries, a stalled or dead server
//! - `lookupd`: `corq lookupd` and corqd's lookupd registration in a small cluster
//! - `http`: the HTTP API, its effects over TCP, hostile HTTP input
//! - `limits`: bounded topics, alerts and their webhook, retention, rewind
//! - `ops`: JSON logs, peek, the dashboard's files (the page itself is tested in a browser by
//!   `tests/compat/test_dashboard.py`)
//! - `client`: the project's own client against the server, and the embedding example
//! - `checkpoint`: the data-path lock and start-up check, the checkpoint checked against the
//!   logs, quarantined topics
//! - `nsqd_flags`: an nsqd command line or config file starts corqd unchanged; statsd
//! - `bench`: `corq bench` against its fake server (the stall test) and a real server, its CLI
mod util;

mod abuse;
mod auth;
mod bench;
mod checkpoint;
mod client;
mod crash;
mod disk;
mod durability;
mod failure;
mod http;
mod limits;
mod lookupd;
mod nsqd_flags;
mod ops;
mod protocol;
mod pubsub;
mod recovery;
mod resident;
mod restart;
mod retention;
mod tools;
mod transport;
