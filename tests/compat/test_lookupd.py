"""Real NSQ consumers discover corqd nodes through `corq lookupd`: a pynsq Reader and a gnsq
Consumer, each configured with lookupd_http_addresses only, receive every message published
to three nodes exactly once per channel. The channels are created on one node only; the other
two get them through nsqd's pre-creation rule (lookupd's /channels on topic creation)."""
import json
import time
import urllib.request

import gevent
import gnsq
import nsq

from test_pynsq import run_until

PER_NODE = 30


def http(method, addr, path, body=b""):
    req = urllib.request.Request("http://%s%s" % (addr, path), data=body or None, method=method)
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.status, r.read()


def wait_for(what, cond, timeout=60):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out waiting for " + what
        time.sleep(0.05)


def producers(lookupd, topic):
    try:
        _, body = http("GET", lookupd.http, "/lookup?topic=" + topic)
    except urllib.error.HTTPError as e:
        assert e.code == 404
        return []
    return sorted(p["tcp_port"] for p in json.loads(body)["producers"])


def seed(lookupd, nodes, topic, channels):
    """Creates the topic and channels on node 0, publishes PER_NODE messages to every node,
    and waits until lookupd lists all three. Returns the set of bodies."""
    http("POST", nodes[0].http, "/topic/create?topic=" + topic)
    for c in channels:
        http("POST", nodes[0].http, "/channel/create?topic=%s&channel=%s" % (topic, c))
    wait_for("channels in lookupd", lambda: sorted(json.loads(
        http("GET", lookupd.http, "/channels?topic=" + topic)[1])["channels"]) == sorted(channels))
    bodies = set()
    for i, n in enumerate(nodes):
        for j in range(PER_NODE):
            body = ("n%d-%d" % (i, j)).encode()
            assert http("POST", n.http, "/pub?topic=" + topic, body) == (200, b"OK")
            bodies.add(body)
    ports = sorted(int(n.tcp.rsplit(":", 1)[1]) for n in nodes)
    wait_for("three producers in /lookup", lambda: producers(lookupd, topic) == ports)
    return bodies


def test_pynsq_reader_finds_every_node_through_lookupd(cluster):
    lookupd, nodes = cluster
    channels = ["c1", "c2"]
    bodies = seed(lookupd, nodes, "lk_topic", channels)
    got = {c: {} for c in channels}
    readers = []
    for c in channels:
        def handler(message, c=c):
            got[c][message.body] = got[c].get(message.body, 0) + 1
            return True

        readers.append(nsq.Reader(
            topic="lk_topic", channel=c, message_handler=handler,
            lookupd_http_addresses=["http://" + lookupd.http], lookupd_poll_interval=1,
            max_in_flight=30,
        ))
    run_until(lambda: all(set(got[c]) >= bodies for c in channels), timeout=60)
    for r in readers:
        r.close()
    for c in channels:
        assert set(got[c]) == bodies
        assert all(v == 1 for v in got[c].values()), "each message once per channel"


def test_gnsq_consumer_finds_every_node_through_lookupd(cluster):
    lookupd, nodes = cluster
    bodies = seed(lookupd, nodes, "lk_gnsq", ["gc"])
    got = {}
    consumer = gnsq.Consumer("lk_gnsq", "gc", lookupd_http_addresses=["http://" + lookupd.http],
                             lookupd_poll_interval=1, max_in_flight=30)

    @consumer.on_message.connect
    def handler(consumer, message):
        got[message.body] = got.get(message.body, 0) + 1
        message.finish()

    consumer.start(block=False)
    with gevent.Timeout(60):
        while set(got) < bodies:
            gevent.sleep(0.05)
    consumer.close()
    consumer.join()
    assert set(got) == bodies
    assert all(v == 1 for v in got.values()), "each message once"
