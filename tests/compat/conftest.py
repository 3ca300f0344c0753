"""Fixtures for the compatibility suite: a freshly built corqd on 127.0.0.1:<port chosen by the OS>.

CORQD_BIN names the binary (the CI script builds it; CORQ_BIN names `corq`, for `corq lookupd`); each test gets its own data directory and
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
CORQ = os.environ.get("CORQ_BIN", os.path.join(ROOT, "target", "debug", "corq"))


def start_server(cmd, what):
    """Starts a corq server process and waits for its "TCP/HTTP: listening on" log lines.
    Returns (proc, log lines, {"TCP": addr, "HTTP": addr})."""
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    found = queue.Queue()
    log = []

    def pump():
        for line in proc.stderr:
            log.append(line)
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
        proc.kill()
        raise RuntimeError("%s did not start:\n%s" % (what, "".join(log)))
    return proc, log, addrs


class Corqd:
    def __init__(self, data_dir, extra=()):
        self.proc, self.log, addrs = start_server(
            [CORQD, "--tcp-address", "127.0.0.1:0", "--http-address", "127.0.0.1:0",
             "--data-path", data_dir, *extra],
            "corqd",
        )
        self.tcp = addrs["TCP"]
        self.http = addrs["HTTP"]

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=30)
        assert code == 0, "corqd exited with %s:\n%s" % (code, "".join(self.log))


class Lookupd:
    """`corq lookupd` (CORQ_BIN) on loopback ports the OS picks, broadcasting 127.0.0.1."""

    def __init__(self):
        self.proc, self.log, addrs = start_server(
            [CORQ, "lookupd", "--tcp-address", "127.0.0.1:0", "--http-address", "127.0.0.1:0",
             "--broadcast-address", "127.0.0.1"],
            "corq lookupd",
        )
        self.tcp = addrs["TCP"]
        self.http = addrs["HTTP"]

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=30)
        assert code == 0, "corq lookupd exited with %s:\n%s" % (code, "".join(self.log))


@pytest.fixture
def corqd():
    with tempfile.TemporaryDirectory(prefix="corq-compat-") as data_dir:
        server = Corqd(data_dir)
        try:
            yield server
        finally:
            if server.proc.poll() is None:
                server.stop()


@pytest.fixture
def cluster():
    """One `corq lookupd` and three corqd registered with it (each in its own data directory)."""
    lookupd = Lookupd()
    dirs = [tempfile.TemporaryDirectory(prefix="corq-compat-") for _ in range(3)]
    nodes = []
    try:
        for d in dirs:
            nodes.append(Corqd(d.name, ["--lookupd-tcp-address", lookupd.tcp,
                                        "--broadcast-address", "127.0.0.1"]))
        yield lookupd, nodes
    finally:
        for n in nodes:
            if n.proc.poll() is None:
                n.stop()
        if lookupd.proc.poll() is None:
            lookupd.stop()
        for d in dirs:
            d.cleanup()
