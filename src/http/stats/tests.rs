use super::*;
use crate::http::query::parse_query;

fn e2e() -> E2eLatency {
    E2eLatency {
        count: 1,
        percentiles: Some(vec![
            Percentile {
                quantile: 1.0,
                value: 3805021.0,
            },
            Percentile {
                quantile: 0.99,
                value: 3805021.0,
            },
        ]),
    }
}

fn client(id: &str, host: &str, addr: &str) -> ClientStats {
    ClientStats {
        client_id: id.into(),
        hostname: host.into(),
        version: "V2".into(),
        remote_address: addr.into(),
        connect_ts: 1795567364,
        user_agent: "probe/1.0".into(),
        ..ClientStats::default()
    }
}

/// The snapshot behind the reference's captured `/stats?format=json` (§2.4).
pub(crate) fn sample() -> Stats {
    let consumer = ClientStats {
        state: 3,
        in_flight_count: 1,
        message_count: 3,
        finish_count: 1,
        requeue_count: 1,
        ..client("cons1", "conshost", "127.0.0.1:35594")
    };
    let producer = ClientStats {
        pub_counts: vec![PubCount {
            topic: "sx".into(),
            count: 3,
        }],
        ..client("prod1", "prodhost", "127.0.0.1:35578")
    };
    let channel = ChannelStats {
        channel_name: "cx".into(),
        in_flight_count: 1,
        deferred_count: 1,
        message_count: 3,
        requeue_count: 1,
        client_count: 1,
        clients: Some(vec![consumer]),
        e2e_processing_latency: e2e(),
        ..ChannelStats::default()
    };
    Stats {
        version: "1.3.0".into(),
        health: "OK".into(),
        start_time: 1795567278,
        topics: Some(vec![TopicStats {
            topic_name: "sx".into(),
            channels: vec![channel],
            message_count: 3,
            message_bytes: 6,
            e2e_processing_latency: e2e(),
            ..TopicStats::default()
        }]),
        memory: Some(MemStats {
            heap_objects: 3351,
            heap_idle_bytes: 4628480,
            heap_in_use_bytes: 3137536,
            heap_released_bytes: 4562944,
            gc_pause_usec_100: 59,
            gc_pause_usec_99: 59,
            gc_pause_usec_95: 59,
            next_gc_bytes: 4194304,
            gc_total_runs: 2,
        }),
        producers: vec![producer],
    }
}

/// The reference's captured JSON, whitespace removed.
const CAPTURED: &str = concat!(
    r#"{"version":"1.3.0","health":"OK","start_time":1795567278,"#,
    r#""topics":[{"topic_name":"sx","#,
    r#""channels":[{"channel_name":"cx","depth":0,"backend_depth":0,"in_flight_count":1,"deferred_count":1,"#,
    r#""message_count":3,"requeue_count":1,"timeout_count":0,"client_count":1,"#,
    r#""clients":[{"client_id":"cons1","hostname":"conshost","version":"V2","remote_address":"127.0.0.1:35594","#,
    r#""state":3,"ready_count":0,"in_flight_count":1,"message_count":3,"finish_count":1,"requeue_count":1,"#,
    r#""connect_ts":1795567364,"sample_rate":0,"deflate":false,"snappy":false,"user_agent":"probe/1.0","#,
    r#""tls":false,"tls_cipher_suite":"","tls_version":"","tls_negotiated_protocol":"","#,
    r#""tls_negotiated_protocol_is_mutual":false}],"#,
    r#""paused":false,"#,
    r#""e2e_processing_latency":{"count":1,"percentiles":[{"quantile":1,"value":3805021},{"quantile":0.99,"value":3805021}]}}],"#,
    r#""depth":0,"backend_depth":0,"message_count":3,"message_bytes":6,"paused":false,"#,
    r#""e2e_processing_latency":{"count":1,"percentiles":[{"quantile":1,"value":3805021},{"quantile":0.99,"value":3805021}]}}],"#,
    r#""memory":{"heap_objects":3351,"heap_idle_bytes":4628480,"heap_in_use_bytes":3137536,"heap_released_bytes":4562944,"#,
    r#""gc_pause_usec_100":59,"gc_pause_usec_99":59,"gc_pause_usec_95":59,"next_gc_bytes":4194304,"gc_total_runs":2},"#,
    r#""producers":[{"client_id":"prod1","hostname":"prodhost","version":"V2","remote_address":"127.0.0.1:35578","state":0,"#,
    r#""ready_count":0,"in_flight_count":0,"message_count":0,"finish_count":0,"requeue_count":0,"connect_ts":1795567364,"#,
    r#""sample_rate":0,"deflate":false,"snappy":false,"user_agent":"probe/1.0","pub_counts":[{"topic":"sx","count":3}],"#,
    r#""tls":false,"tls_cipher_suite":"","tls_version":"","tls_negotiated_protocol":"","tls_negotiated_protocol_is_mutual":false}]}"#,
);

fn query(s: &str) -> StatsQuery {
    StatsQuery::from_query(&parse_query(s).unwrap())
}

fn json(stats: &Stats) -> String {
    String::from_utf8(render_json(stats)).unwrap()
}

#[test]
fn json_is_byte_exact_against_the_capture() {
    let mut s = sample();
    apply_query(&mut s, &query("format=json"));
    assert_eq!(json(&s), CAPTURED);
}

#[test]
fn omitempty_fields_appear_when_set() {
    let c = ClientStats {
        authed: true,
        auth_identity: "me".into(),
        auth_identity_url: "http://x".into(),
        ..client("a", "b", "c:1")
    };
    let j = serde_json::to_string(&c).unwrap();
    assert!(j.contains(r#""user_agent":"probe/1.0","authed":true,"auth_identity":"me","auth_identity_url":"http://x","tls":false"#), "{j}");
}

#[test]
fn e2e_without_percentiles_is_null() {
    let j = serde_json::to_string(&E2eLatency::default()).unwrap();
    assert_eq!(j, r#"{"count":0,"percentiles":null}"#);
    let p = Percentile {
        quantile: 0.5,
        value: 1234.5,
    };
    assert_eq!(
        serde_json::to_string(&p).unwrap(),
        r#"{"quantile":0.5,"value":1234.5}"#
    );
}

#[test]
fn query_params() {
    let q = query("format=json&topic=t&channel=c&include_clients=false&include_mem=0");
    assert_eq!(
        q,
        StatsQuery {
            json: true,
            topic: "t".into(),
            channel: "c".into(),
            include_clients: false,
            include_mem: false,
        }
    );
    let d = query("format=JSON&include_clients=no");
    assert!(!d.json, "only the exact `json` selects JSON");
    assert!(d.include_clients && d.include_mem);
}

fn two_topics() -> Stats {
    let mut s = sample();
    let topics = s.topics.as_mut().unwrap();
    let mut b = topics[0].clone();
    b.topic_name = "a".into();
    b.channels[0].channel_name = "other".into();
    let mut ca2 = b.channels[0].clone();
    ca2.channel_name = "cx".into();
    ca2.clients = Some(vec![]);
    b.channels.insert(0, ca2);
    topics.push(b);
    s.producers[0].pub_counts.insert(
        0,
        PubCount {
            topic: "a".into(),
            count: 9,
        },
    );
    s
}

fn names(s: &Stats) -> Vec<(String, Vec<String>)> {
    s.topics
        .as_deref()
        .unwrap_or_default()
        .iter()
        .map(|t| {
            let cs = t.channels.iter().map(|c| c.channel_name.clone()).collect();
            (t.topic_name.clone(), cs)
        })
        .collect()
}

#[test]
fn sorting_and_topic_filter() {
    let mut s = two_topics();
    apply_query(&mut s, &query(""));
    assert_eq!(
        names(&s),
        [
            ("a".to_owned(), vec!["cx".to_owned(), "other".to_owned()]),
            ("sx".to_owned(), vec!["cx".to_owned()])
        ]
    );
    assert_eq!(
        s.producers[0].pub_counts.len(),
        1,
        "nsqd's break: one count at most"
    );

    let mut s = two_topics();
    apply_query(&mut s, &query("topic=sx"));
    assert_eq!(names(&s), [("sx".to_owned(), vec!["cx".to_owned()])]);
    assert_eq!(
        s.producers[0].pub_counts,
        [PubCount {
            topic: "sx".into(),
            count: 3
        }]
    );

    let mut s = two_topics();
    apply_query(&mut s, &query("topic=missing&format=json"));
    assert_eq!(s.topics, None);
    let j = json(&s);
    assert!(j.contains(r#""topics":null"#), "{j}");
    assert!(j.ends_with(r#""producers":null}"#), "{j}");
}

#[test]
fn channel_filter() {
    let mut s = two_topics();
    apply_query(&mut s, &query("channel=other"));
    assert_eq!(names(&s), [("a".to_owned(), vec!["other".to_owned()])]);

    let mut s = two_topics();
    apply_query(&mut s, &query("topic=sx&channel=nope"));
    assert_eq!(s.topics, Some(vec![]));
    assert!(json(&s).contains(r#""topics":[]"#));
}

#[test]
fn include_flags() {
    let mut s = sample();
    apply_query(&mut s, &query("include_clients=false&include_mem=false"));
    let j = json(&s);
    assert!(j.contains(r#""client_count":1,"clients":null,"#), "{j}");
    assert!(!j.contains("memory"), "{j}");
    assert!(j.ends_with(r#""producers":null}"#), "{j}");

    let mut s = sample();
    s.topics.as_mut().unwrap()[0].channels[0].clients = None;
    apply_query(&mut s, &query(""));
    assert!(
        json(&s).contains(r#""clients":[]"#),
        "with clients, none is []"
    );
}

#[test]
fn go_floats() {
    let f = |v: f64| {
        serde_json::to_string(&Percentile {
            quantile: v,
            value: v,
        })
        .unwrap()
    };
    assert_eq!(f(1.0), r#"{"quantile":1,"value":1}"#);
    assert_eq!(f(0.0), r#"{"quantile":0,"value":0}"#);
    assert_eq!(f(0.999), r#"{"quantile":0.999,"value":0.999}"#);
    assert_eq!(
        f(1e15),
        r#"{"quantile":1000000000000000,"value":1000000000000000}"#
    );
}
