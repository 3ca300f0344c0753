"""pynsq and gnsq with `auth_secret` against corqd with `--auth-http-address`: a publish and
consume round trip each, through a small auth server (Python http.server) that records every
query and grants `^auth_` topics to the secret "sesame" only."""
import json
import tempfile
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import gevent
import gnsq
import nsq
import pytest

from conftest import Corqd
from test_pynsq import run_until

GRANT = {
    "ttl": 3600,
    "identity": "compat",
    "identity_url": "https://example.invalid/compat",
    "authorizations": [
        {"topic": "^auth_", "channels": [".*"], "permissions": ["subscribe", "publish"]}
    ],
}


class AuthServer:
    """nsqd's auth server protocol: GET /auth?common_name=&remote_ip=&secret=&tls=."""

    def __init__(self):
        self.queries = []
        queries = self.queries

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                url = urllib.parse.urlparse(self.path)
                q = urllib.parse.parse_qs(url.query, keep_blank_values=True)
                queries.append((url.path, q))
                if q.get("secret") == ["sesame"]:
                    body, status = json.dumps(GRANT).encode(), 200
                else:
                    body, status = b'{"message":"FORBIDDEN"}', 403
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.addr = "127.0.0.1:%d" % self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def authed():
    auth = AuthServer()
    with tempfile.TemporaryDirectory(prefix="corq-compat-") as data_dir:
        server = Corqd(data_dir, ["--auth-http-address", auth.addr])
        try:
            yield server, auth
        finally:
            if server.proc.poll() is None:
                server.stop()
            auth.stop()


def test_pynsq_with_auth_secret(authed):
    server, auth = authed
    writer = nsq.Writer([server.tcp], auth_secret="sesame")
    acks = []

    def cb(conn, data):
        acks.append(data)

    run_until(lambda: len(writer.conns) > 0)
    writer.pub("auth_py", b"one", callback=cb)
    writer.mpub("auth_py", [b"two", b"three"], callback=cb)
    run_until(lambda: len(acks) == 2)
    assert acks == [b"OK", b"OK"], acks
    for conn in list(writer.conns.values()):
        conn.close()

    got = []

    def handler(message):
        got.append(message.body)
        return True

    reader = nsq.Reader(
        topic="auth_py", channel="ch", message_handler=handler,
        nsqd_tcp_addresses=[server.tcp], auth_secret="sesame", max_in_flight=5,
    )
    run_until(lambda: len(got) == 3)
    reader.close()
    assert sorted(got) == [b"one", b"three", b"two"]
    secrets = [q["secret"] for _, q in auth.queries]
    assert secrets and all(s == ["sesame"] for s in secrets), auth.queries
    path, q = auth.queries[0]
    assert path == "/auth"
    assert q["remote_ip"] == ["127.0.0.1"] and q["tls"] == ["false"] and q["common_name"] == [""]


def test_gnsq_with_auth_secret(authed):
    server, auth = authed
    producer = gnsq.Producer(nsqd_tcp_addresses=[server.tcp], auth_secret=b"sesame")
    producer.start()
    producer.publish("auth_g", b"one")
    producer.multipublish("auth_g", [b"two", b"three"])
    producer.close()
    producer.join()

    got = []
    consumer = gnsq.Consumer(
        "auth_g", "ch", nsqd_tcp_addresses=[server.tcp], auth_secret=b"sesame", max_in_flight=2
    )

    @consumer.on_message.connect
    def handler(consumer, message):
        got.append(message.body)
        message.finish()

    consumer.start(block=False)
    with gevent.Timeout(30):
        while len(got) < 3:
            gevent.sleep(0.02)
    consumer.close()
    consumer.join()
    assert sorted(got) == [b"one", b"three", b"two"]
    assert all(q["secret"] == ["sesame"] for _, q in auth.queries), auth.queries


def test_gnsq_with_a_wrong_secret_is_refused(authed):
    server, auth = authed
    host, port = server.tcp.rsplit(":", 1)
    conn = gnsq.NsqdTCPClient(host, int(port), auth_secret=b"wrong")
    # gnsq maps the error code to its class and keeps the text.
    with pytest.raises(gnsq.errors.NSQAuthFailed) as err:
        conn.connect()
        conn.identify()
    assert "AUTH failed" in str(err.value)
    conn.close_stream()
    assert auth.queries and auth.queries[0][1]["secret"] == ["wrong"]
    # The server still serves: the right secret works on a new connection.
    producer = gnsq.Producer(nsqd_tcp_addresses=[server.tcp], auth_secret=b"sesame")
    producer.start()
    producer.publish("auth_g2", b"x")
    producer.close()
    producer.join()
