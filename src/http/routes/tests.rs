use super::*;
use crate::http::query::parse_query;

#[test]
fn every_endpoint_routes() {
    let table: &[(&str, &str, Route)] = &[
        ("GET", "/ping", Route::Ping),
        ("GET", "/info", Route::Info),
        ("POST", "/pub", Route::Pub),
        ("POST", "/mpub", Route::Mpub),
        ("GET", "/stats", Route::Stats),
        ("POST", "/topic/create", Route::TopicCreate),
        ("POST", "/topic/delete", Route::TopicDelete),
        ("POST", "/topic/empty", Route::TopicEmpty),
        ("POST", "/topic/pause", Route::TopicPause),
        ("POST", "/topic/unpause", Route::TopicUnpause),
        ("POST", "/channel/create", Route::ChannelCreate),
        ("POST", "/channel/delete", Route::ChannelDelete),
        ("POST", "/channel/empty", Route::ChannelEmpty),
        ("POST", "/channel/pause", Route::ChannelPause),
        ("POST", "/channel/unpause", Route::ChannelUnpause),
        (
            "GET",
            "/config/log_level",
            Route::ConfigGet("log_level".into()),
        ),
        (
            "PUT",
            "/config/log_level",
            Route::ConfigPut("log_level".into()),
        ),
        ("GET", "/metrics", Route::Metrics),
    ];
    for (m, p, want) in table {
        assert_eq!(route(m, p).as_ref(), Ok(want), "{m} {p}");
    }
}

fn not_allowed(allow: &str) -> Result<Route, RouteError> {
    Err(RouteError::MethodNotAllowed {
        allow: allow.into(),
    })
}

#[test]
fn wrong_methods_are_405_with_allow() {
    assert_eq!(route("GET", "/pub"), not_allowed("OPTIONS, POST"));
    assert_eq!(route("PUT", "/mpub"), not_allowed("OPTIONS, POST"));
    assert_eq!(route("POST", "/ping"), not_allowed("GET, OPTIONS"));
    assert_eq!(route("HEAD", "/stats"), not_allowed("GET, OPTIONS"));
    assert_eq!(
        route("DELETE", "/config/x"),
        not_allowed("GET, OPTIONS, PUT")
    );
    assert_eq!(route("POST", "/config/x"), not_allowed("GET, OPTIONS, PUT"));
    assert_eq!(route("GET", "/topic/create"), not_allowed("OPTIONS, POST"));
}

#[test]
fn options_lists_methods() {
    let opts = |allow: &str| {
        Ok(Route::Options {
            allow: allow.into(),
        })
    };
    assert_eq!(route("OPTIONS", "/pub"), opts("OPTIONS, POST"));
    assert_eq!(route("OPTIONS", "/config/x"), opts("GET, OPTIONS, PUT"));
    assert_eq!(route("OPTIONS", "*"), opts("GET, OPTIONS, POST, PUT"));
    assert_eq!(route("OPTIONS", "/nope"), Err(RouteError::NotFound));
}

#[test]
fn unknown_and_removed_paths_are_404() {
    for p in [
        "/nope",
        "/put",
        "/mput",
        "/create_topic",
        "/delete_topic",
        "/empty_topic",
        "/pause_topic",
        "/unpause_topic",
        "/create_channel",
        "/delete_channel",
        "/empty_channel",
        "/pause_channel",
        "/unpause_channel",
        "/config",
        "/config/",
        "/config/a/b",
        "/topic",
        "/debug/pprof/",
    ] {
        for m in ["GET", "POST"] {
            assert_eq!(route(m, p), Err(RouteError::NotFound), "{m} {p}");
        }
    }
    assert_eq!(route("BREW", "/ping"), not_allowed("GET, OPTIONS"));
    // httprouter treats `*` as server-wide: every method tree is allowed, the request's too.
    assert_eq!(route("GET", "*"), not_allowed("GET, OPTIONS, POST, PUT"));
}

#[test]
fn httprouter_path_repair() {
    let redirect = |status: u16, path: &str| {
        Err(RouteError::Redirect {
            status,
            path: path.into(),
        })
    };
    assert_eq!(route("GET", "/ping/"), redirect(301, "/ping"));
    assert_eq!(route("POST", "/pub/"), redirect(307, "/pub"));
    assert_eq!(route("GET", "/PING"), redirect(301, "/ping"));
    assert_eq!(route("GET", "/Stats/"), redirect(301, "/stats"));
    assert_eq!(
        route("POST", "/Topic/Create"),
        redirect(307, "/topic/create")
    );
    assert_eq!(route("GET", "//ping"), redirect(301, "/ping"));
    assert_eq!(route("GET", "/a/../ping"), redirect(301, "/ping"));
    assert_eq!(
        route("GET", "/CONFIG/Log_Level"),
        redirect(301, "/config/Log_Level")
    );
    assert_eq!(route("PUT", "/config/x/"), redirect(307, "/config/x"));
    // Repair only looks in the request method's tree.
    assert_eq!(route("POST", "/PING"), Err(RouteError::NotFound));
    assert_eq!(route("DELETE", "/PING"), Err(RouteError::NotFound));
}

#[test]
fn clean_path_like_httprouter() {
    for (p, want) in [
        ("", "/"),
        ("/", "/"),
        ("a", "/a"),
        ("//a//b/", "/a/b/"),
        ("/a/./b/..", "/a/"),
        ("/../a", "/a"),
        ("/a/b/.", "/a/b/"),
    ] {
        assert_eq!(clean_path(p), want, "{p:?}");
    }
}

fn q(s: &str) -> Query {
    parse_query(s).unwrap()
}

#[test]
fn topic_args() {
    assert_eq!(topic_arg(&q("topic=t")), Ok("t"));
    assert_eq!(topic_arg(&q("")), Err(MISSING_ARG_TOPIC));
    assert_eq!(topic_arg(&q("topic=")), Err(INVALID_TOPIC));
    assert_eq!(topic_arg(&q("topic")), Err(INVALID_TOPIC));
    assert_eq!(topic_arg(&q("topic=a!b")), Err(INVALID_TOPIC));
    assert_eq!(topic_arg(&q("topic=ok&topic=bad!")), Ok("ok"));
    assert_eq!(
        existing_topic_arg(&q("topic=bad!")),
        Ok("bad!"),
        "not validated"
    );
    assert_eq!(existing_topic_arg(&q("channel=c")), Err(MISSING_ARG_TOPIC));
}

#[test]
fn topic_channel_args_in_order() {
    assert_eq!(topic_channel_args(&q("topic=t&channel=c")), Ok(("t", "c")));
    assert_eq!(topic_channel_args(&q("channel=!")), Err(MISSING_ARG_TOPIC));
    assert_eq!(topic_channel_args(&q("topic=!")), Err(INVALID_ARG_TOPIC));
    assert_eq!(topic_channel_args(&q("topic=t")), Err(MISSING_ARG_CHANNEL));
    assert_eq!(
        topic_channel_args(&q("topic=t&channel=")),
        Err(INVALID_ARG_CHANNEL)
    );
    assert_eq!(
        topic_channel_args(&q("topic=t&channel=c%23ephemeral")),
        Ok(("t", "c#ephemeral"))
    );
}

#[test]
fn defer_values() {
    let hour = 3_600_000;
    assert_eq!(defer_arg(&q(""), hour), Ok(None));
    assert_eq!(defer_arg(&q("defer=0"), hour), Ok(Some(0)));
    assert_eq!(defer_arg(&q("defer=1500"), hour), Ok(Some(1500)));
    assert_eq!(
        defer_arg(&q("defer=%2B10"), hour),
        Ok(Some(10)),
        "Go allows a + sign"
    );
    assert_eq!(defer_arg(&q("defer=3600000"), hour), Ok(Some(hour)));
    for bad in [
        "defer=",
        "defer",
        "defer=-1",
        "defer=3600001",
        "defer=1.5",
        "defer=1e3",
        "defer=+",
        "defer=%201",
        "defer=99999999999999999999",
        "defer=abc",
    ] {
        assert_eq!(defer_arg(&q(bad), hour), Err(INVALID_DEFER), "{bad}");
    }
    // Go multiplies in wrapping int64 nanoseconds: this value wraps to 448384 ns.
    assert_eq!(defer_arg(&q("defer=18446744073710"), hour), Ok(Some(0)));
}

#[test]
fn mpub_binary_param() {
    assert!(!mpub_binary(&q("")));
    assert!(mpub_binary(&q("binary=true")));
    assert!(mpub_binary(&q("binary=1")));
    assert!(!mpub_binary(&q("binary=false")));
    assert!(!mpub_binary(&q("binary=0")));
    assert!(mpub_binary(&q("binary=yes")), "unknown values mean binary");
    assert!(mpub_binary(&q("binary")), "an empty value means binary");
}

#[test]
fn body_limits_per_route() {
    let l = HttpLimits {
        max_head_bytes: 1024,
        max_headers: 8,
        max_msg_size: 10,
        max_body_size: 50,
    };
    assert_eq!(body_limit("POST", "/pub", &l), (10, MSG_TOO_BIG));
    assert_eq!(body_limit("POST", "/mpub", &l), (50, BODY_TOO_BIG));
    assert_eq!(body_limit("PUT", "/config/x", &l), (10, INVALID_VALUE_SIZE));
    assert_eq!(body_limit("GET", "/config/x", &l), (50, BODY_TOO_BIG));
    assert_eq!(body_limit("POST", "/nope", &l), (50, BODY_TOO_BIG));
}

#[test]
fn dashboard_and_peek_routes() {
    assert_eq!(route("GET", "/"), Ok(Route::Dashboard("index.html")));
    assert_eq!(route("GET", "/ui"), Ok(Route::Dashboard("index.html")));
    assert_eq!(route("GET", "/ui/app.js"), Ok(Route::Dashboard("app.js")));
    assert_eq!(
        route("GET", "/ui/style.css"),
        Ok(Route::Dashboard("style.css"))
    );
    assert_eq!(route("GET", "/ui/nope.js"), Err(RouteError::NotFound));
    assert_eq!(route("POST", "/"), not_allowed("GET, OPTIONS"));
    assert_eq!(route("GET", "/channel/peek"), Ok(Route::ChannelPeek));
    assert_eq!(route("GET", "/topic/peek"), Ok(Route::TopicPeek));
    assert_eq!(route("POST", "/topic/peek"), not_allowed("GET, OPTIONS"));
}
