//! Timers: the hashed timing wheel that drives every deadline in corq, and the clocks that feed it.
//!
//! DPUB deferrals, REQ delays, in-flight timeouts (msg_timeout, TOUCH), heartbeats and output
//! buffer flushes all live in one [`Wheel`]. The wheel never reads time; the reactor reads a
//! [`Clock`] and passes `now` in (house rule 10). See `wheel.rs` for the structure.

mod clock;
mod wheel;

pub use clock::{Clock, ManualClock, MonotonicClock};
pub use wheel::{TimerId, Wheel};
