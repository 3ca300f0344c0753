//! Codec micro-benchmark: `cargo bench --bench codec`.
//!
//! ns per operation for the server's command decoder ([`corq::protocol::decode`]) on the
//! commands a busy server sees most (PUB, MPUB, FIN, RDY, NOP), and for the message-frame
//! encoder ([`corq::protocol::encode_message`]) at NSQ's usual sizes. Each figure is the median
//! of 5 rounds. Reported, never asserted.

use std::hint::black_box;
use std::time::Instant;

use corq::bench::wire::PublishTemplate;
use corq::protocol::{
    decode, encode_message, encode_response, message_id_from_offset, ConnState, DecodeCtx, Limits,
};

/// Rounds per figure; the median is printed.
const ROUNDS: usize = 5;
/// Roughly how long one round runs.
const ROUND_NS: u128 = 200_000_000;

/// Runs `op` in a loop for about [`ROUND_NS`], [`ROUNDS`] times; the median ns per call.
fn ns_per_op(mut op: impl FnMut()) -> f64 {
    // Calibrate the iteration count so each round lasts about ROUND_NS.
    let mut iters = 1u64;
    loop {
        let t = Instant::now();
        for _ in 0..iters {
            op();
        }
        if t.elapsed().as_nanos() > ROUND_NS / 10 {
            break;
        }
        iters *= 2;
    }
    iters *= 10;
    let mut rounds: Vec<f64> = (0..ROUNDS)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..iters {
                op();
            }
            t.elapsed().as_nanos() as f64 / iters as f64
        })
        .collect();
    rounds.sort_by(f64::total_cmp);
    rounds[ROUNDS / 2]
}

fn decode_bench(name: &str, bytes: &[u8], state: ConnState, per: usize) {
    let ctx = DecodeCtx {
        state,
        heartbeats_disabled: false,
        mpub_auth: false,
    };
    let limits = Limits::default();
    // A sanity check of the input, once, outside the timed loop: the whole buffer must be
    // one valid command, or the figure would time an error path.
    match decode(bytes, &ctx, &limits) {
        Ok(Some((_, n))) if n == bytes.len() => {}
        other => panic!("{name}: not one whole command: {other:?}"),
    }
    let ns = ns_per_op(|| {
        black_box(&decode(black_box(bytes), &ctx, &limits));
    });
    let per_msg = if per > 1 {
        format!("  ({:.1} ns/message)", ns / per as f64)
    } else {
        String::new()
    };
    println!("decode {name:<24} {ns:>9.1} ns/op{per_msg}");
}

fn main() {
    println!("corq codec benchmark (median of {ROUNDS} rounds)\n");
    for size in [100, 200, 1024, 16 * 1024] {
        let mut pub_cmd = Vec::new();
        PublishTemplate::new("bench", size, 1, false).append(&mut pub_cmd, 0, 0);
        decode_bench(&format!("PUB {size} B"), &pub_cmd, ConnState::Init, 1);
    }
    for (size, batch) in [(100, 200), (200, 200)] {
        let mut mpub = Vec::new();
        PublishTemplate::new("bench", size, batch, false).append(&mut mpub, 0, 0);
        decode_bench(
            &format!("MPUB {batch}×{size} B"),
            &mpub,
            ConnState::Init,
            batch,
        );
    }
    let fin = b"FIN 00000000000a1b2c\n";
    decode_bench("FIN", fin, ConnState::Subscribed, 1);
    decode_bench("RDY 200", b"RDY 200\n", ConnState::Subscribed, 1);
    decode_bench("NOP", b"NOP\n", ConnState::Init, 1);
    println!();
    for size in [100, 200, 1024, 16 * 1024] {
        let body = vec![b'x'; size];
        let id = message_id_from_offset(123_456);
        let mut out = Vec::with_capacity(size + 64);
        let ns = ns_per_op(|| {
            out.clear();
            encode_message(
                &mut out,
                black_box(1_700_000_000_000_000_000),
                1,
                &id,
                &body,
            );
            black_box(&out);
        });
        println!("encode message {size:>6} B        {ns:>9.1} ns/op");
    }
    let mut out = Vec::with_capacity(64);
    let ns = ns_per_op(|| {
        out.clear();
        encode_response(&mut out, black_box(b"OK"));
        black_box(&out);
    });
    println!("encode response OK              {ns:>9.1} ns/op");
    let ns = ns_per_op(|| {
        black_box(message_id_from_offset(black_box(987_654_321)));
    });
    println!("message id from offset          {ns:>9.1} ns/op");
}
