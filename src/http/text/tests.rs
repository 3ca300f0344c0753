use super::*;
use crate::http::stats::{apply_query, Percentile, StatsQuery};

fn sample() -> Stats {
    crate::http::stats::tests::sample()
}

fn ctx() -> TextCtx<'static> {
    TextCtx {
        build: "built w/go1.19.8",
        // Half a second after the clients connected.
        now_unix_ns: 1_795_567_364_500_000_000,
        uptime_ns: 85_526_619_492,
    }
}

fn all() -> StatsQuery {
    StatsQuery {
        json: false,
        topic: String::new(),
        channel: String::new(),
        include_clients: true,
        include_mem: true,
    }
}

/// The reference's captured text (§2.5), with its memory rows spelled out from the JSON
/// capture's figures.
const CAPTURED: &str = "nsqd v1.3.0 (built w/go1.19.8)
start_time 2026-11-25T00:41:18Z
uptime 1m25.526619492s

Health: OK

Memory:
   heap_objects             \t3351
   heap_idle_bytes          \t4628480
   heap_in_use_bytes        \t3137536
   heap_released_bytes      \t4562944
   gc_pause_usec_100        \t59
   gc_pause_usec_99         \t59
   gc_pause_usec_95         \t59
   next_gc_bytes            \t4194304
   gc_total_runs            \t2

Topics:
   [sx             ] depth: 0     be-depth: 0     msgs: 3        e2e%: 3.8ms, 3.8ms
      [cx                       ] depth: 0     be-depth: 0     inflt: 1    def: 1    re-q: 1     timeout: 0     msgs: 3        e2e%: 3.8ms, 3.8ms
        [V2 conshost:35594 probe/1.0] state: 3 inflt: 1    rdy: 0    fin: 1        re-q: 1        msgs: 3        connected: 0s

Producers:
   [V2 prodhost:35578 probe/1.0] msgs: 3        topics: sx=3 connected: 0s
";

#[test]
fn text_is_byte_exact_against_the_capture() {
    let mut s = sample();
    apply_query(&mut s, &all());
    let mut out = String::new();
    render_text(&s, &ctx(), &mut out);
    assert_eq!(out, CAPTURED);
}

#[test]
fn empty_lists_paused_and_no_memory() {
    let mut s = sample();
    s.memory = None;
    s.topics = Some(vec![]);
    s.producers.clear();
    let mut out = String::new();
    render_text(&s, &ctx(), &mut out);
    assert!(
        out.ends_with("\nHealth: OK\n\nTopics: None\n\nProducers: None\n"),
        "{out}"
    );

    let mut s = sample();
    s.memory = None;
    let t = &mut s.topics.as_mut().unwrap()[0];
    t.paused = true;
    t.channels[0].paused = true;
    t.channels[0].clients = None;
    t.e2e_processing_latency.percentiles = None;
    t.channels[0].e2e_processing_latency.percentiles = Some(vec![Percentile::default(); 2]);
    let mut out = String::new();
    render_text(&s, &ctx(), &mut out);
    assert!(
        out.contains("\n*P [sx             ] depth: 0     be-depth: 0     msgs: 3        e2e%: \n"),
        "{out}"
    );
    assert!(
        out.contains("\n   *P [cx                       ] depth: 0 "),
        "{out}"
    );
    assert!(out.contains("e2e%: 0.0ns, 0.0ns\n\nProducers:"), "{out}");
}

#[test]
fn client_lines() {
    let mut c = sample().producers[0].clone();
    c.pub_counts.clear();
    c.remote_address = "[::1]:4000".into();
    c.hostname = "h".into();
    c.user_agent = "ua".into();
    c.connect_ts = 1_795_567_364 - 3723;
    let mut out = String::new();
    write_client(&c, &ctx(), &mut out);
    assert_eq!(
        out,
        "[V2 h:4000 ua            ] state: 0 inflt: 0    rdy: 0    fin: 0        re-q: 0        msgs: 0        connected: 1h2m3s"
    );
    assert_eq!(port_of("1.2.3.4:5"), "5");
    assert_eq!(port_of("[::1]:5"), "5");
    assert_eq!(port_of("::1"), "");
    assert_eq!(port_of("nohost"), "");
}

#[test]
fn nanos_to_human_units() {
    for (v, want) in [
        (0.0, "0.0ns"),
        (1000.0, "1000.0ns"),
        (1001.0, "1.0us"),
        (1_000_000.0, "1000.0us"),
        (3_805_021.0, "3.8ms"),
        (1_000_000_001.0, "1.0s"),
        (62_500_000_000.0, "62.5s"),
    ] {
        assert_eq!(nanos_to_human(v), want, "{v}");
    }
}

#[test]
fn go_durations() {
    for (ns, want) in [
        (0, "0s"),
        (12, "12ns"),
        (1_500, "1.5µs"),
        (3_805_021, "3.805021ms"),
        (1_000_000_000, "1s"),
        (85_526_619_492, "1m25.526619492s"),
        (7_200_000_000_000, "2h0m0s"),
        (3_723_000_000_000, "1h2m3s"),
        (-1_500_000_000, "-1.5s"),
        (i64::MIN, "-2562047h47m16.854775808s"),
    ] {
        assert_eq!(go_duration(ns), want, "{ns}");
    }
}

#[test]
fn civil_dates() {
    assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    assert_eq!(rfc3339(1795567278), "2026-11-25T00:41:18Z");
    assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    assert_eq!(rfc3339(-1), "1969-12-31T23:59:59Z");
}

#[test]
fn failure_handling_lines_only_when_something_is_on() {
    use crate::broker::settings::{Settings, DEDUP_WINDOW, MAX_ATTEMPTS, MESSAGE_TTL};
    let mut s = sample();
    let mut text = String::new();
    {
        let t = &mut s.topics.as_mut().unwrap()[0];
        t.settings = Some(Settings::default());
        t.channels[0].settings = Some(Settings::default());
        t.channels[0].dead_letter_count = Some(0);
    }
    render_text(&s, &ctx(), &mut text);
    assert!(
        !text.contains("max_attempts") && !text.contains("dedup_window"),
        "{text}"
    );

    let mut on = Settings::<u64>::default();
    on.values[MAX_ATTEMPTS] = 3;
    on.values[MESSAGE_TTL] = 90_000;
    on.values[DEDUP_WINDOW] = 1500;
    {
        let t = &mut s.topics.as_mut().unwrap()[0];
        t.settings = Some(on);
        t.dedup_count = Some(4);
        t.channels[0].settings = Some(on);
        t.channels[0].dead_letter_count = Some(2);
    }
    text.clear();
    render_text(&s, &ctx(), &mut text);
    assert!(
        text.contains("    dedup_window: 1.5s deduplicated: 4\n"),
        "{text}"
    );
    assert!(
        text.contains(
            "        max_attempts: 3 requeue_backoff: 0s message_ttl: 1m30s dead-lettered: 2 expired: 0\n"
        ),
        "{text}"
    );
}
