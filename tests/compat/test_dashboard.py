"""The built-in dashboard in a real browser: headless Chromium driven over the DevTools protocol.

The test publishes to a topic, waits for the page to show it with the right depth, presses the
topic's Pause button with a real (synthesised) mouse click and checks /stats says paused, then
opens the peek view and sees the message bodies. With CORQ_DASHBOARD_SCREENSHOT=<path> it also
runs a livelier scene (a few topics, a consumer, a publisher for some seconds, so the rates and
sparklines move) and saves a screenshot there (that is how docs/dashboard.png is made).
"""
import base64
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import tempfile
import threading
import time
import urllib.request

import pytest
import websocket

from conftest import Corqd

DEADLINE = 60  # seconds any one condition may take on a loaded machine


def chromium_binary():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.fail("no chromium on PATH (.ci/run installs Debian's chromium)")


def http(server, method, path, body=b""):
    req = urllib.request.Request("http://%s%s" % (server.http, path), data=body if method == "POST" else None,
                                 method=method)
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.read()


def stats_topic(server, name):
    s = json.loads(http(server, "GET", "/stats?format=json"))
    return next((t for t in s["topics"] if t["topic_name"] == name), None)


def wait_for(what, fn):
    end = time.time() + DEADLINE
    while True:
        value = fn()
        if value:
            return value
        if time.time() > end:
            raise AssertionError("timed out waiting for " + what)
        time.sleep(0.1)


class Browser:
    """One headless Chromium with one page, spoken to over its DevTools websocket."""

    def __init__(self, url):
        self.profile = tempfile.mkdtemp(prefix="corq-chromium-")
        self.proc = subprocess.Popen(
            [chromium_binary(), "--headless", "--no-sandbox", "--disable-gpu",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--no-first-run", "--user-data-dir=" + self.profile, "--remote-debugging-port=0",
             "--remote-allow-origins=*", "--window-size=1280,800", url],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        port = None
        end = time.time() + DEADLINE
        for line in self.proc.stderr:
            m = re.search(r"DevTools listening on ws://127\.0\.0\.1:(\d+)/", line)
            if m:
                port = m.group(1)
                break
            if time.time() > end:
                break
        if port is None:
            self.close()
            raise RuntimeError("chromium did not start its DevTools endpoint")
        # Keep reading stderr so the browser never blocks on a full pipe.
        threading.Thread(target=lambda: [None for _ in self.proc.stderr], daemon=True).start()
        targets = wait_for("the page target", lambda: [
            t for t in json.loads(urllib.request.urlopen("http://127.0.0.1:%s/json/list" % port,
                                                         timeout=10).read())
            if t["type"] == "page"])
        self.ws = websocket.create_connection(targets[0]["webSocketDebuggerUrl"], timeout=30,
                                              suppress_origin=True)
        self.next_id = 0

    def call(self, method, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError("%s: %s" % (method, msg["error"]))
                return msg["result"]

    def eval(self, expr):
        r = self.call("Runtime.evaluate", expression=expr, returnByValue=True)
        if "exceptionDetails" in r:
            raise RuntimeError("%s: %s" % (expr, r["exceptionDetails"]))
        return r["result"].get("value")

    def click(self, selector):
        """A real mouse press and release at the middle of the element."""
        box = self.eval("(() => { const r = document.querySelector(%s).getBoundingClientRect();"
                        " return [r.x + r.width / 2, r.y + r.height / 2]; })()" % json.dumps(selector))
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", type=kind, x=box[0], y=box[1], button="left",
                      clickCount=1)

    def screenshot(self, path):
        png = self.call("Page.captureScreenshot", format="png")["data"]
        with open(path, "wb") as f:
            f.write(base64.b64decode(png))

    def close(self):
        try:
            self.ws.close()
        except Exception:
            pass
        self.proc.kill()
        self.proc.wait()
        shutil.rmtree(self.profile, ignore_errors=True)


def text_of(browser, selector):
    return browser.eval("(() => { const e = document.querySelector(%s); return e && e.textContent; })()"
                        % json.dumps(selector))


def raw_consumer(server, topic, channel, stop):
    """A minimal NSQ consumer over the TCP protocol: FINs all but its first 4 messages."""
    host, port = server.tcp.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.sendall(b"  V2SUB %s %s\nRDY 20\n" % (topic.encode(), channel.encode()))
    buf = b""
    n = 0
    while not stop.is_set():
        try:
            buf += sock.recv(65536)
        except socket.timeout:
            continue
        while len(buf) >= 8:
            size, ftype = struct.unpack(">II", buf[:8])
            if len(buf) < 4 + size:
                break
            frame, buf = buf[8:4 + size], buf[4 + size:]
            if ftype == 0 and frame == b"_heartbeat_":
                sock.sendall(b"NOP\n")
            elif ftype == 2:
                n += 1
                if n > 4:
                    sock.sendall(b"FIN " + frame[10:26] + b"\n")
    sock.close()


def lively_scene(server, stop):
    """Background traffic for the screenshot: a steady publisher and a consumer on 'orders'."""
    http(server, "POST", "/topic/create?topic=orders")
    http(server, "POST", "/channel/create?topic=orders&channel=billing")
    threading.Thread(target=raw_consumer, args=(server, "orders", "billing", stop), daemon=True).start()
    i = 0
    while not stop.is_set():
        i += 1
        http(server, "POST", "/pub?topic=orders", b'{"order":%d}' % i)
        if i % 3 == 0:
            http(server, "POST", "/pub?topic=audit", b"audit %d" % i)
        time.sleep(0.02 + 0.03 * ((i // 60) % 2))


def test_dashboard_shows_depth_pauses_and_peeks():
    with tempfile.TemporaryDirectory(prefix="corq-dash-") as data_dir:
        server = Corqd(data_dir, ["--e2e-processing-latency-percentile=0.5,0.99"])
        browser = None
        stop = threading.Event()
        try:
            for i in range(3):
                http(server, "POST", "/pub?topic=dash", b"hello %d" % i)
            shot = os.environ.get("CORQ_DASHBOARD_SCREENSHOT")
            if shot:
                threading.Thread(target=lively_scene, args=(server, stop), daemon=True).start()

            browser = Browser("http://%s/ui" % server.http)
            card = '[data-topic="dash"]'
            wait_for("the topic's depth on the page",
                     lambda: text_of(browser, card + ' .topic-head [data-field="depth"]') == "3")
            # A channel takes the topic's backlog (the first channel starts at the oldest).
            http(server, "POST", "/channel/create?topic=dash&channel=watch")
            wait_for("the channel's depth on the page", lambda: text_of(
                browser, card + ' tr[data-channel="watch"] [data-field="depth"]') == "3")

            browser.click(card + ' button[data-action="pause"]')
            wait_for("the topic paused in /stats", lambda: stats_topic(server, "dash")["paused"])
            wait_for("the paused badge",
                     lambda: text_of(browser, card + ' [data-field="paused"]') == "paused")

            browser.click(card + ' tr[data-channel="watch"] button[data-action="peek-open"]')
            wait_for("the peeked bodies", lambda: browser.eval(
                "Array.from(document.querySelectorAll('#peek-table td.body'), e => e.textContent)")
                == ["hello 0", "hello 1", "hello 2"])
            # Peeking delivered nothing.
            assert stats_topic(server, "dash")["channels"][0]["in_flight_count"] == 0

            if shot:
                time.sleep(12)  # a dozen seconds of rates for the sparklines
                browser.call("Emulation.setDeviceMetricsOverride", width=1280, height=800,
                             deviceScaleFactor=1, mobile=False)
                browser.screenshot(shot)
        finally:
            stop.set()
            if browser:
                browser.close()
            server.stop()
