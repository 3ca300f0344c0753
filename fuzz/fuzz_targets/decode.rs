//! The V2 command decoder (`corq::protocol::decode`) over arbitrary bytes.
//!
//! Input: one settings byte (connection state, heartbeats flag, size limits), then the bytes a
//! client sends after the magic. Asserts: no panic; every command used 1..=available bytes and
//! stays within the limits; and feeding the bytes split in two at any point gives the same
//! commands and the same final error as feeding them whole (`corq_fuzz::check_splits`).
#![no_main]

use corq::protocol::{decode, Command, ConnState, DecodeCtx, DecodeError, Limits};
use corq_fuzz::{check_splits, step_text, Step};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&settings, buf)) = data.split_first() else {
        return;
    };
    let state = match settings & 3 {
        0 | 3 => ConnState::Init,
        1 => ConnState::Subscribed,
        _ => ConnState::Closing,
    };
    let ctx = DecodeCtx {
        state,
        heartbeats_disabled: settings & 4 != 0,
        // With AUTH pending, an MPUB line decodes to `MpubAuth` and consumes nothing until the
        // broker clears the flag: a state the reactor drives, not the byte stream.
        mpub_auth: false,
    };
    // Small limits half the time, so size checks and the MPUB count cap are reachable.
    let limits = if settings & 8 != 0 {
        Limits {
            max_msg_size: 16,
            max_body_size: 64,
            max_rdy_count: 5,
            max_req_timeout_ms: 1000,
        }
    } else {
        Limits::default()
    };
    let parse = |b: &[u8]| -> Step {
        let r = decode(b, &ctx, &limits);
        if let Ok(Some((cmd, _))) = &r {
            check_limits(cmd, &limits);
        }
        // The error's text by hand: `Debug` escaping dominated the run time.
        step_text(r.map_err(|e| match e {
            DecodeError::Proto(p) => format!("{} {} {}", p.code, p.desc, p.fatal),
            DecodeError::CloseSilently => "close silently".to_owned(),
        }))
    };
    check_splits(buf, &parse);
});

/// Every decoded value is within what the decoder promises.
fn check_limits(cmd: &Command<'_>, l: &Limits) {
    let msg = l.max_msg_size as usize;
    match cmd {
        Command::Pub { body, .. } | Command::Dpub { body, .. } => {
            assert!(
                !body.is_empty() && body.len() <= msg,
                "body of {}",
                body.len()
            );
        }
        Command::Mpub { bodies, .. } => {
            assert!(!bodies.is_empty());
            let n = bodies.len();
            let got: Vec<&[u8]> = bodies.clone().collect();
            assert_eq!(got.len(), n, "MPUB yields as many bodies as it says");
            for b in got {
                assert!(!b.is_empty() && b.len() <= msg, "MPUB body of {}", b.len());
            }
        }
        Command::Identify { body } => {
            assert!(!body.is_empty() && body.len() <= l.max_body_size as usize)
        }
        Command::Auth { secret } => {
            assert!(!secret.is_empty() && secret.len() <= l.max_body_size as usize)
        }
        Command::Rdy { count } => assert!(*count <= l.max_rdy_count),
        Command::Req { timeout_ms, .. } => assert!(*timeout_ms <= l.max_req_timeout_ms),
        _ => {}
    }
    if let Command::Dpub { defer_ms, .. } = cmd {
        assert!(*defer_ms <= l.max_req_timeout_ms);
    }
}
