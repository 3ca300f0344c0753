//! IDENTIFY's JSON body (`corq::protocol::parse_identify`) and the JSON reply.
//!
//! Input: one byte choosing the server limits (bit 0: defaults or tight ones) and which
//! upgrades the server offers (bits 1-3: TLS, snappy, deflate), then the body.
//! Asserts: no panic; every negotiated value is the default, a documented special value, or
//! within the limits; an upgrade is granted only when both sides asked for it, never snappy and
//! deflate together; the reply built from it is valid JSON.
#![no_main]

use corq::protocol::{identify_response, negotiate, parse_identify, IdentifyLimits, ServerInfo};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    let l = if which & 1 == 0 {
        IdentifyLimits::default()
    } else {
        IdentifyLimits {
            max_heartbeat_interval_ms: 2000,
            max_output_buffer_size: 100,
            min_output_buffer_timeout_ms: 10,
            max_output_buffer_timeout_ms: 20,
            max_msg_timeout_ms: 1500,
            ..IdentifyLimits::default()
        }
    };
    let Ok(id) = parse_identify(body, &l) else {
        return;
    };
    if let Some(hb) = id.heartbeat_interval_ms {
        assert!(
            hb == l.default_heartbeat_interval_ms
                || (1000..=l.max_heartbeat_interval_ms).contains(&hb),
            "heartbeat {hb}"
        );
    }
    let size = id.output_buffer_size;
    assert!(
        size == 1
            || size == l.default_output_buffer_size
            || (64..=l.max_output_buffer_size as usize).contains(&size),
        "output buffer size {size}"
    );
    let t = id.output_buffer_timeout_ms;
    assert!(
        t == 0
            || t == l.default_output_buffer_timeout_ms
            || (l.min_output_buffer_timeout_ms..=l.max_output_buffer_timeout_ms).contains(&t),
        "output buffer timeout {t}"
    );
    assert!(
        size != 1 || t == 0,
        "an unbuffered client has no flush timeout"
    );
    assert!(id.sample_rate <= 99, "sample rate {}", id.sample_rate);
    let mt = id.msg_timeout_ms;
    assert!(
        mt == l.default_msg_timeout_ms || (1000..=l.max_msg_timeout_ms).contains(&mt),
        "msg timeout {mt}"
    );
    let server = ServerInfo {
        max_rdy_count: 2500,
        version: corq::NSQD_VERSION.to_owned(),
        max_msg_timeout_ms: l.max_msg_timeout_ms,
        max_deflate_level: 6,
        auth_required: false,
        tls: which & 2 != 0,
        snappy: which & 4 != 0,
        deflate: which & 8 != 0,
    };
    let Ok(up) = negotiate(&id, &server) else {
        assert!(
            server.snappy && server.deflate && id.snappy && id.deflate,
            "negotiation fails only when both compressions are asked for and offered"
        );
        return;
    };
    assert!(!(up.snappy && up.deflate), "never both compressions");
    assert!(
        !up.tls || (server.tls && id.tls_v1),
        "TLS only when both sides want it"
    );
    assert!(
        !up.snappy || (server.snappy && id.snappy),
        "snappy only when both want it"
    );
    assert!(
        !up.deflate || (server.deflate && id.deflate),
        "deflate only when both want it"
    );
    assert!(
        (1..=server.max_deflate_level).contains(&up.deflate_level),
        "deflate level {}",
        up.deflate_level
    );
    let reply = identify_response(&id, &server, &up);
    let v: serde_json::Value = serde_json::from_slice(&reply).expect("the reply is JSON");
    assert!(v.is_object(), "the reply is a JSON object");
});
