"""gnsq (a gevent-based Python client, from PyPI) against corqd: Producer and Consumer."""
import gevent
import gnsq


def test_producer_and_consumer(corqd):
    producer = gnsq.Producer(nsqd_tcp_addresses=[corqd.tcp])
    producer.start()
    producer.publish("g_topic", b"one")
    producer.multipublish("g_topic", [b"two", b"three"])
    producer.close()
    producer.join()

    got = []
    consumer = gnsq.Consumer("g_topic", "ch", nsqd_tcp_addresses=[corqd.tcp], max_in_flight=2)

    @consumer.on_message.connect
    def handler(consumer, message):
        got.append((message.body, message.attempts))
        message.finish()

    consumer.start(block=False)
    with gevent.Timeout(30):
        while len(got) < 3:
            gevent.sleep(0.02)
    consumer.close()
    consumer.join()
    assert sorted(got) == [(b"one", 1), (b"three", 1), (b"two", 1)]


def test_http_client_publish_stats_as_gnsqs_own_test(corqd):
    """The deferred-publish part of gnsq's own `test_nsqd_http::test_publish`."""
    host, port = corqd.http.rsplit(":", 1)
    conn = gnsq.NsqdHTTPClient(host, int(port))
    conn.publish("topic", b"sup")
    assert conn.stats()["topics"][0]["depth"] == 1
    conn.multipublish("topic", [b"sup", b"sup"])
    assert conn.stats()["topics"][0]["depth"] == 3
    conn.empty_topic("topic")
    assert conn.stats()["topics"][0]["depth"] == 0
    conn.create_topic("topic")
    conn.create_channel("topic", "channel")
    conn.publish("topic", b"sup")
    assert conn.stats()["topics"][0]["channels"][0]["depth"] == 1
    conn.empty_channel("topic", "channel")
    assert conn.stats()["topics"][0]["channels"][0]["depth"] == 0
    conn.publish("topic", b"sup", 60 * 1000)
    stats = conn.stats()
    assert stats["topics"][0]["channels"][0]["depth"] == 0
    assert stats["topics"][0]["channels"][0]["deferred_count"] == 1
