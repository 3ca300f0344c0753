//! corq's integration tests: one binary, one module per area.
//!
//! - `protocol`: exact frames for good and hostile input, heartbeats, CLS, limits
//! - `pubsub`: channels, consumers, RDY, FIN/REQ/TOUCH, timeouts, DPUB
//! - `restart`: clean restart, kill -9, DPUB across a restart
//! - `client`: the project's own client against the server, and the embedding example
//! - `bench`: `corq bench` against its fake server (the stall test) and a real server, its CLI
mod util;

mod bench;
mod client;
mod protocol;
mod pubsub;
mod restart;
