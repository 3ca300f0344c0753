"""pynsq (the official Python client, from PyPI) against corqd: Writer PUB/MPUB/DPUB, Reader with
max_in_flight > 1, requeue with backoff, and touch."""
import time

import nsq
import tornado.ioloop

TIMEOUT = 30


def run_until(done, timeout=TIMEOUT):
    """Runs the tornado loop until done() is true (checked every 20 ms) or the timeout passes."""
    loop = tornado.ioloop.IOLoop.current()
    deadline = time.monotonic() + timeout

    def check():
        if done() or time.monotonic() > deadline:
            loop.stop()
        else:
            loop.call_later(0.02, check)

    loop.call_later(0.02, check)
    loop.start()
    assert done(), "timed out"


def publish_all(addr, topic, plain, multi, deferred_ms):
    writer = nsq.Writer([addr])
    acks = []

    def cb(conn, data):
        assert not isinstance(data, Exception), data
        acks.append(data)

    def go():
        for body in plain:
            writer.pub(topic, body, callback=cb)
        writer.mpub(topic, multi, callback=cb)
        writer.dpub(topic, deferred_ms, b"deferred", callback=cb)

    # The Writer connects asynchronously: publish once it has a connection.
    run_until(lambda: len(writer.conns) > 0)
    go()
    run_until(lambda: len(acks) == len(plain) + 2)
    assert all(a == b"OK" for a in acks), acks
    for conn in list(writer.conns.values()):
        conn.close()


def test_writer_and_reader_with_max_in_flight(corqd):
    plain = [("p%d" % i).encode() for i in range(20)]
    multi = [("m%d" % i).encode() for i in range(30)]
    start = time.monotonic()
    publish_all(corqd.tcp, "py_topic", plain, multi, 300)
    got = {}

    def handler(message):
        got[message.body] = got.get(message.body, 0) + 1
        if message.body == b"deferred":
            got["deferred_after"] = time.monotonic() - start
        return True

    reader = nsq.Reader(
        topic="py_topic", channel="ch", message_handler=handler,
        nsqd_tcp_addresses=[corqd.tcp], max_in_flight=10, lookupd_poll_interval=1,
    )
    want = set(plain) | set(multi) | {b"deferred"}
    run_until(lambda: want <= set(got))
    reader.close()
    assert all(got[b] == 1 for b in want), "each message delivered once when FIN'd"
    assert got["deferred_after"] >= 0.3


def test_requeue_with_backoff_and_touch(corqd):
    publish_all(corqd.tcp, "py_req", [b"retry-me", b"touch-me"], [b"x"], 0)
    attempts = {}
    finished = []

    def handler(message):
        attempts.setdefault(message.body, []).append(message.attempts)
        if message.body == b"retry-me" and message.attempts == 1:
            return False  # requeue, with backoff
        if message.body == b"touch-me":
            # Hold it past its 1 s msg_timeout, touching it, then finish: it must not come back.
            message.enable_async()
            loop = tornado.ioloop.IOLoop.current()
            for t in (0.4, 0.8, 1.2):
                loop.call_later(t, message.touch)
            loop.call_later(1.6, lambda: (message.finish(), finished.append(message.body)))
            return None
        finished.append(message.body)
        return True

    reader = nsq.Reader(
        topic="py_req", channel="ch", message_handler=handler,
        nsqd_tcp_addresses=[corqd.tcp], max_in_flight=4, lookupd_poll_interval=1,
        requeue_delay=0, max_backoff_duration=1, msg_timeout=1,  # seconds, in pynsq
    )
    run_until(lambda: {b"retry-me", b"touch-me", b"x"} <= set(finished))
    # Give a timed-out touch-me a chance to show up again before we look.
    end = time.monotonic() + 1.2
    run_until(lambda: time.monotonic() > end)
    reader.close()
    assert attempts[b"retry-me"] == [1, 2], attempts
    assert attempts[b"touch-me"] == [1], "touched message was redelivered: %r" % attempts
