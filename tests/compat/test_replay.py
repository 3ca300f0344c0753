"""Bounded topics and replay seen through an unmodified NSQ client: a pynsq consumer gets a rewound channel's
messages again (fresh attempts), and a pynsq producer sees a bounded topic's E_PUB_FAILED."""
import tempfile
import time

import nsq

from conftest import Corqd
from test_failure import http
from test_pynsq import run_until


def test_pynsq_consumer_gets_rewound_messages_again():
    with tempfile.TemporaryDirectory(prefix="corq-compat-") as data_dir:
        server = Corqd(data_dir, ["--retention-time", "1h"])
        try:
            assert http(server, "POST", "/topic/create?topic=replay")[0] == 200
            assert http(server, "POST", "/channel/create?topic=replay&channel=ch")[0] == 200
            for i in range(20):
                assert http(server, "POST", "/pub?topic=replay", b"m%02d" % i)[0] == 200
            seen = []

            def handler(message):
                seen.append((message.body.decode(), message.attempts))
                return True

            reader = nsq.Reader(
                topic="replay", channel="ch", message_handler=handler,
                nsqd_tcp_addresses=[server.tcp], max_in_flight=5, lookupd_poll_interval=1,
            )
            run_until(lambda: len(seen) >= 20)
            status, r = http(server, "POST", "/channel/rewind?topic=replay&channel=ch&to=earliest")
            assert status == 200, r
            assert r["queued"] == 20 and r["clamped"] is True, r
            run_until(lambda: len(seen) >= 40)
            end = time.monotonic() + 0.5
            run_until(lambda: time.monotonic() > end)
            reader.close()
            first = [b for b, _ in seen[:20]]
            again = seen[20:]
            assert [b for b, _ in again] == first == ["m%02d" % i for i in range(20)], seen
            assert all(a == 1 for _, a in again), again
        finally:
            server.stop()


def test_pynsq_producer_sees_a_full_topic():
    with tempfile.TemporaryDirectory(prefix="corq-compat-") as data_dir:
        server = Corqd(data_dir, ["--max-topic-depth", "2"])
        try:
            writer = nsq.Writer([server.tcp])
            results = []

            def cb(conn, data):
                results.append(data)

            def failed(r):
                return isinstance(r, Exception) and "E_PUB_FAILED" in str(r)

            # The Writer connects asynchronously: publish once it has a connection.
            run_until(lambda: bool(writer.conns))
            # One at a time, so each answer is read before the next PUB goes out.
            for i in range(2):
                writer.pub("full", b"m%d" % i, callback=cb)
                run_until(lambda: len(results) > i)
            assert results == [b"OK", b"OK"], results
            writer.pub("full", b"m2", callback=cb)
            # E_PUB_FAILED is fatal, so the server closes the connection after the error frame,
            # as nsqd does. pynsq may run its close handler (a ConnectionClosedError to every
            # waiting callback) before it reads the buffered error frame, so wait for the
            # error itself rather than for the first answer.
            run_until(lambda: any(failed(r) for r in results))
            errors = [r for r in results[2:] if failed(r)]
            assert "is full" in str(errors[0]), errors
            assert all(isinstance(r, Exception) for r in results[2:]), results
        finally:
            server.stop()
