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
