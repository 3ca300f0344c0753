"""Fixtures for the compatibility suite: a freshly built corqd on 127.0.0.1:<port chosen by the OS>.

CORQD_BIN names the binary (the CI script builds it); each test gets its own data directory and
its own server, stopped with SIGTERM (and required to exit 0) at the end of the test.
"""
import os
import queue
import re
import signal
import subprocess
import tempfile
import threading

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CORQD = os.environ.get("CORQD_BIN", os.path.join(ROOT, "target", "debug", "corqd"))


class Corqd:
    def __init__(self, data_dir, extra=()):
        self.proc = subprocess.Popen(
            [CORQD, "--tcp-address", "127.0.0.1:0", "--http-address", "127.0.0.1:0",
             "--data-path", data_dir, *extra],
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
        )
        found = queue.Queue()
        self.log = []

        def pump():
            for line in self.proc.stderr:
                self.log.append(line)
                m = re.search(r"(TCP|HTTP): listening on (\S+)", line)
                if m:
                    found.put((m.group(1), m.group(2)))

        threading.Thread(target=pump, daemon=True).start()
        addrs = {}
        try:
            while len(addrs) < 2:
                kind, addr = found.get(timeout=30)
                addrs[kind] = addr
        except queue.Empty:
            self.proc.kill()
            raise RuntimeError("corqd did not start:\n" + "".join(self.log))
        self.tcp = addrs["TCP"]
        self.http = addrs["HTTP"]

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=30)
        assert code == 0, "corqd exited with %s:\n%s" % (code, "".join(self.log))


@pytest.fixture
def corqd():
    with tempfile.TemporaryDirectory(prefix="corq-compat-") as data_dir:
        server = Corqd(data_dir)
        try:
            yield server
        finally:
            if server.proc.poll() is None:
                server.stop()
