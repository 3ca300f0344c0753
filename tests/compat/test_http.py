"""The HTTP API against the tools' expectations: /metrics parsed by the official Prometheus
client's parser, and /stats?format=json checked field by field (names, order, types) against
nsqd v1.3.0's schema (nsq-reference.md §2.4), which nsqadmin and nsq_stat parse."""
import json
import socket
import struct
import urllib.request

from prometheus_client.parser import text_string_to_metric_families


def http(server, method, path, body=None):
    req = urllib.request.Request("http://%s%s" % (server.http, path), data=body, method=method)
    with urllib.request.urlopen(req, timeout=10) as resp:
        return resp.status, resp.read()


def nsq_consumer(server, topic, channel, rdy):
    """A raw protocol V2 consumer holding `rdy` messages in flight; returns the socket."""
    host, port = server.tcp.rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=10)
    ident = json.dumps({"client_id": "c1", "hostname": "h1", "user_agent": "compat/1"}).encode()
    s.sendall(b"  V2IDENTIFY\n" + struct.pack(">I", len(ident)) + ident)
    read_frame(s)
    s.sendall(("SUB %s %s\nRDY %d\n" % (topic, channel, rdy)).encode())
    assert read_frame(s) == (0, b"OK")
    return s


def read_frame(s):
    head = recv_exact(s, 8)
    size, ftype = struct.unpack(">Ii", head)
    return ftype, recv_exact(s, size - 4)


def recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        assert chunk, "connection closed"
        buf += chunk
    return buf


def test_metrics_parse_with_the_prometheus_client(corqd):
    assert http(corqd, "POST", "/pub?topic=prom", b"hello")[0] == 200
    c = nsq_consumer(corqd, "prom", "ch", 1)
    assert read_frame(c)[0] == 2
    status, body = http(corqd, "GET", "/metrics")
    assert status == 200
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    expected = {
        "corq_topic_depth": "gauge",
        "corq_topic_messages": "counter",
        "corq_topic_message_bytes": "counter",
        "corq_channel_depth": "gauge",
        "corq_channel_in_flight": "gauge",
        "corq_channel_deferred": "gauge",
        "corq_channel_messages": "counter",
        "corq_channel_requeued": "counter",
        "corq_channel_timed_out": "counter",
        "corq_channel_clients": "gauge",
        "corq_topic_log_bytes": "gauge",
        "corq_process_resident_memory_bytes": "gauge",
    }
    for name, kind in expected.items():
        assert name in families, "missing family %s in:\n%s" % (name, body.decode())
        assert families[name].type == kind, (name, families[name].type)
    in_flight = [s for s in families["corq_channel_in_flight"].samples if s.labels == {"topic": "prom", "channel": "ch"}]
    assert [s.value for s in in_flight] == [1.0]
    msgs = [s for s in families["corq_topic_messages"].samples if s.labels.get("topic") == "prom"]
    assert msgs and msgs[0].value == 1.0
    c.close()


TOPIC_KEYS = ["topic_name", "channels", "depth", "backend_depth", "message_count", "message_bytes", "paused",
              "e2e_processing_latency"]
CHANNEL_KEYS = ["channel_name", "depth", "backend_depth", "in_flight_count", "deferred_count", "message_count",
                "requeue_count", "timeout_count", "client_count", "clients", "paused", "e2e_processing_latency"]
CLIENT_KEYS = ["client_id", "hostname", "version", "remote_address", "state", "ready_count", "in_flight_count",
               "message_count", "finish_count", "requeue_count", "connect_ts", "sample_rate", "deflate", "snappy",
               "user_agent", "tls", "tls_cipher_suite", "tls_version", "tls_negotiated_protocol",
               "tls_negotiated_protocol_is_mutual"]
PRODUCER_KEYS = CLIENT_KEYS[:15] + ["pub_counts"] + CLIENT_KEYS[15:]
TYPES = {"topic_name": str, "channel_name": str, "client_id": str, "hostname": str, "version": str,
         "remote_address": str, "user_agent": str, "tls_cipher_suite": str, "tls_version": str,
         "tls_negotiated_protocol": str, "paused": bool, "deflate": bool, "snappy": bool, "tls": bool,
         "tls_negotiated_protocol_is_mutual": bool}


def ordered(body):
    return json.loads(body, object_pairs_hook=lambda pairs: pairs)


# corq-only fields, allowed after nsqd's (failure handling: settings and their counters; limits
# and alerts: fill ratio, oldest message age; strict mode: syncs and the records they covered;
# `ordered` turns objects into lists of pairs).
CORQ_EXTRA = {"settings": list, "dedup_count": int, "dedup_entries": int, "dead_letter_count": int,
              "expired_count": int, "fill_ratio": (int, float), "oldest_message_age_ms": int,
              "log_syncs": int, "log_synced_records": int}


def check(obj, keys, where):
    names = [k for k, _ in obj]
    assert names[:len(keys)] == keys, "%s keys %r != nsqd's %r" % (where, names, keys)
    extra = obj[len(keys):]
    assert all(k in CORQ_EXTRA and isinstance(v, CORQ_EXTRA[k]) for k, v in extra), (where, extra)
    for k, v in obj[:len(keys)]:
        want = TYPES.get(k, int)
        if k in ("channels", "clients", "pub_counts"):
            assert isinstance(v, list), (where, k, v)
        elif k == "e2e_processing_latency":
            assert [n for n, _ in v] == ["count", "percentiles"], (where, v)
        else:
            assert isinstance(v, want) and not (want is int and isinstance(v, bool)), (where, k, v)


def test_stats_json_matches_nsqds_schema_field_by_field(corqd):
    assert http(corqd, "POST", "/pub?topic=schema", b"a")[0] == 200
    assert http(corqd, "POST", "/pub?topic=schema", b"b")[0] == 200
    c = nsq_consumer(corqd, "schema", "ch", 1)
    assert read_frame(c)[0] == 2
    # A TCP producer, so `producers` has an entry with pub_counts.
    host, port = corqd.tcp.rsplit(":", 1)
    p = socket.create_connection((host, int(port)), timeout=10)
    p.sendall(b"  V2PUB schema\n" + struct.pack(">I", 1) + b"c")
    assert read_frame(p) == (0, b"OK")

    status, body = http(corqd, "GET", "/stats?format=json")
    assert status == 200
    top = ordered(body)
    assert [k for k, _ in top][:4] == ["version", "health", "start_time", "topics"]
    d = dict(top)
    assert isinstance(d["version"], str) and d["health"] == "OK" and isinstance(d["start_time"], int)
    assert "producers" in d
    topics = [dict(t) for t in d["topics"]]
    topic = next(t for t in d["topics"] if dict(t)["topic_name"] == "schema")
    check(topic, TOPIC_KEYS, "topic")
    channel = dict(topic)["channels"][0]
    check(channel, CHANNEL_KEYS, "channel")
    cd = dict(channel)
    # message_count: the 3 messages that reached the channel (nsqd), not the 1 delivery.
    assert (cd["depth"], cd["in_flight_count"], cd["message_count"], cd["client_count"]) == (2, 1, 3, 1)
    assert dict(cd["e2e_processing_latency"]) == {"count": 0, "percentiles": None}
    client = cd["clients"][0]
    check(client, CLIENT_KEYS, "client")
    cl = dict(client)
    assert (cl["client_id"], cl["state"], cl["version"], cl["in_flight_count"]) == ("c1", 3, "V2", 1)
    producer = d["producers"][0]
    check(producer, PRODUCER_KEYS, "producer")
    assert [dict(x) for x in dict(producer)["pub_counts"]] == [{"topic": "schema", "count": 1}]
    assert len(topics) >= 1
    # Filters as nsq_stat uses them.
    _, body = http(corqd, "GET", "/stats?format=json&topic=schema&channel=ch&include_clients=false")
    filtered = json.loads(body)
    assert [t["topic_name"] for t in filtered["topics"]] == ["schema"]
    assert filtered["topics"][0]["channels"][0]["clients"] is None
    c.close()
    p.close()
