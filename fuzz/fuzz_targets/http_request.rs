//! The HTTP request parser (`corq::http::parse_request`), chunked bodies included.
//!
//! Input: one byte choosing the limits (defaults or tight ones), then the bytes a client sends.
//! Asserts: no panic; a request uses 1..=available bytes and its decoded body is within the
//! route's cap; feeding the bytes split in two at any point gives the same requests and the same
//! final error as feeding them whole (`corq_fuzz::check_splits`). Kept thin on purpose: only the
//! public entry point is called, so it survives changes to the parser's internals.
#![no_main]

use corq::http::parse::DEFAULT_MAX_HEAD_BYTES;
use corq::http::routes::body_limit;
use corq::http::{parse_request, HttpLimits};
use corq_fuzz::{check_splits, step, Step};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&which, buf)) = data.split_first() else {
        return;
    };
    let limits = if which & 1 == 0 {
        HttpLimits {
            max_head_bytes: DEFAULT_MAX_HEAD_BYTES,
            max_headers: 64,
            max_msg_size: 1024 * 1024,
            max_body_size: 5 * 1024 * 1024,
        }
    } else {
        HttpLimits {
            max_head_bytes: 256,
            max_headers: 8,
            max_msg_size: 16,
            max_body_size: 64,
        }
    };
    let parse = |b: &[u8]| -> Step {
        let r = parse_request(b, &limits);
        if let Ok(Some((req, _))) = &r {
            let (cap, _) = body_limit(req.method, &req.path, &limits);
            assert!(
                req.body.len() as u64 <= cap,
                "body of {} > cap {cap}",
                req.body.len()
            );
        }
        step(r)
    };
    check_splits(buf, &parse);
});
