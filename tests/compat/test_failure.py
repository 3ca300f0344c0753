"""Failure handling seen through unmodified NSQ clients: pynsq and gnsq consumers
with their own backoff off, against corqd's max attempts / dead-letter topics, server-side
backoff, dedup window and message TTL; and the settings endpoints' bad values."""
import base64
import json
import tempfile
import time
import urllib.error
import urllib.request

import gevent
import gnsq
import nsq
import tornado.ioloop

from conftest import Corqd
from test_pynsq import run_until


def http(server, method, path, body=b""):
    """(status, parsed JSON or text) of one request to corqd's HTTP API."""
    data = body if method == "POST" else None
    req = urllib.request.Request("http://%s%s" % (server.http, path), method=method, data=data)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            status, body = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, body = e.code, e.read()
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body.decode()


def started(data_dir, *flags):
    return Corqd(data_dir, list(flags))


def fail(message):
    """pynsq's REQ with its own backoff off: `REQ <id> 0`, no RDY pause (the server's
    settings are what is tested)."""
    message.enable_async()
    message.requeue(backoff=False, delay=0)


def gnsq_publish(server, topic, bodies):
    producer = gnsq.Producer(nsqd_tcp_addresses=[server.tcp])
    producer.start()
    for body in bodies:
        producer.publish(topic, body)
    producer.close()
    producer.join()


def gnsq_collect(server, topic, want, settle=0.5):
    """Bodies a gnsq consumer receives (FIN'ing each) until `want` arrived and `settle` s pass
    with nothing new."""
    got = []
    consumer = gnsq.Consumer(topic, "ch", nsqd_tcp_addresses=[server.tcp], max_in_flight=10)

    @consumer.on_message.connect
    def handler(consumer, message):
        got.append(message.body)
        message.finish()

    consumer.start(block=False)
    with gevent.Timeout(30):
        while len(got) < want:
            gevent.sleep(0.02)
    gevent.sleep(settle)
    consumer.close()
    consumer.join()
    return got


def test_pynsq_max_attempts_then_dead_letter_with_body_id_and_reason():
    with tempfile.TemporaryDirectory(prefix="corq-compat-") as d:
        server = started(d, "--max-attempts", "3")
        try:
            writer_done = []
            writer = nsq.Writer([server.tcp])
            run_until(lambda: len(writer.conns) > 0)
            writer.pub("orders", b"order \x00 42", callback=lambda c, data: writer_done.append(data))
            run_until(lambda: writer_done)
            assert writer_done == [b"OK"]
            seen = []

            def handler(message):
                seen.append((message.id, message.attempts))
                fail(message)  # always fails

            # Client-side give-up (max_tries) off: the server decides.
            reader = nsq.Reader(
                topic="orders", channel="billing", message_handler=handler,
                nsqd_tcp_addresses=[server.tcp], max_in_flight=1, lookupd_poll_interval=1,
                max_tries=0,
            )
            run_until(lambda: len(seen) >= 3)
            end = time.monotonic() + 1.0
            run_until(lambda: time.monotonic() > end)
            reader.close()
            assert [a for _, a in seen] == [1, 2, 3], seen
            status, dead = http(server, "GET", "/topic/dead?topic=orders")
            assert status == 200, dead
            assert dead["dead_letter_topic"] == "orders.dead"
            [m] = dead["messages"]
            ident = seen[0][0]
            ident = ident.decode() if isinstance(ident, bytes) else ident
            assert m["original_id"] == ident
            assert m["reason"] == "req" and m["attempts"] == 3
            assert (m["topic"], m["channel"]) == ("orders", "billing")
            assert base64.b64decode(m["body_base64"]) == b"order \x00 42"
            # The dead-letter topic is an ordinary topic: a consumer gets the body back.
            assert gnsq_collect(server, "orders.dead", 1) == [b"order \x00 42"]
        finally:
            server.stop()


def test_pynsq_server_backoff_doubles_between_deliveries():
    with tempfile.TemporaryDirectory(prefix="corq-compat-") as d:
        server = started(d, "--requeue-backoff", "300ms")
        try:
            gnsq_publish(server, "backoff", [b"slow"])
            times = []

            def handler(message):
                times.append(time.monotonic())
                if message.attempts >= 3:
                    return True
                fail(message)

            reader = nsq.Reader(
                topic="backoff", channel="ch", message_handler=handler,
                nsqd_tcp_addresses=[server.tcp], max_in_flight=1, lookupd_poll_interval=1,
                max_tries=0,
            )
            run_until(lambda: len(times) >= 3)
            reader.close()
            gaps = [b - a for a, b in zip(times, times[1:])]
            # Lower bounds are the guarantee; the upper ones only rule out "no backoff at all
            # with a huge stall" and are loose for a loaded machine.
            assert gaps[0] >= 0.3 and gaps[1] >= 0.6, gaps
            assert gaps[0] < 10 and gaps[1] < 10, gaps
        finally:
            server.stop()


def test_gnsq_duplicates_before_and_after_restart_and_crash_delivered_once():
    with tempfile.TemporaryDirectory(prefix="corq-compat-") as d:
        flags = ("--dedup-window", "1h", "--sync-every", "1")
        server = started(d, *flags)
        gnsq_publish(server, "dd", [b"a", b"a", b"b"])
        server.stop()
        server = started(d, *flags)
        gnsq_publish(server, "dd", [b"a"])
        server.proc.kill()  # SIGKILL: no clean shutdown
        server.proc.wait()
        server = started(d, *flags)
        try:
            gnsq_publish(server, "dd", [b"b", b"c"])
            assert gnsq_collect(server, "dd", 3) == [b"a", b"b", b"c"]
        finally:
            server.stop()


def test_gnsq_expired_messages_are_never_delivered_and_counted():
    with tempfile.TemporaryDirectory(prefix="corq-compat-") as d:
        server = started(d, "--message-ttl", "300ms")
        try:
            assert http(server, "POST", "/topic/create?topic=ttl")[0] == 200
            assert http(server, "POST", "/channel/create?topic=ttl&channel=ch")[0] == 200
            gnsq_publish(server, "ttl", [b"stale"])
            time.sleep(0.5)  # older than the TTL, whatever the load: it only needs to be late
            gnsq_publish(server, "ttl", [b"fresh"])
            assert gnsq_collect(server, "ttl", 1) == [b"fresh"]
            _, stats = http(server, "GET", "/stats?format=json&topic=ttl")
            [ch] = stats["topics"][0]["channels"]
            assert ch["expired_count"] == 1, ch
        finally:
            server.stop()


def test_settings_bad_values_are_400_and_change_nothing_and_overrides_survive_restart():
    with tempfile.TemporaryDirectory(prefix="corq-compat-") as d:
        server = started(d)
        assert http(server, "POST", "/topic/create?topic=cfg")[0] == 200
        status, ok = http(server, "POST", "/topic/config?topic=cfg&max_attempts=4&message_ttl=1m")
        assert status == 200, ok
        long_topic = "z" * 60
        assert http(server, "POST", "/topic/create?topic=" + long_topic)[0] == 200
        for path in [
            "/topic/config?topic=cfg&max_attempts=-1",
            "/topic/config?topic=cfg&max_attempts=many",
            "/topic/config?topic=cfg&message_ttl=-5s",
            "/topic/config?topic=cfg&requeue_backoff=1",
            "/topic/config?topic=cfg&dedup_window=forever",
            "/topic/config?topic=cfg&bogus=1",
            "/topic/config?topic=cfg&max_attempts=2&message_ttl=bad",
            "/topic/config?topic=%s&max_attempts=1" % long_topic,
            "/topic/dead?topic=cfg&count=-1",
        ]:
            status, err = http(server, "POST" if "config" in path else "GET", path)
            assert status == 400 and err.get("message"), (path, status, err)
        status, err = http(server, "POST", "/pub?topic=cfg&dedup_id=", b"body")
        assert (status, err) == (400, {"message": "INVALID_DEDUP_ID"})
        _, stats = http(server, "GET", "/stats?format=json&topic=cfg")
        assert stats["topics"][0]["message_count"] == 0
        _, now = http(server, "GET", "/topic/config?topic=cfg")
        assert now == ok, "a refused request changed something"
        server.stop()
        server = started(d)
        try:
            _, after = http(server, "GET", "/topic/config?topic=cfg")
            assert after == ok
            assert after["settings"]["max_attempts"]["override"] == 4
            assert after["settings"]["message_ttl"]["value"] == "1m0s"
        finally:
            server.stop()
