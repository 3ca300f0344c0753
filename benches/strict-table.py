#!/usr/bin/env python3
"""Prints the strict-mode table of `benches/figures.sh strict` from the files it kept in OUT.

Usage: strict-table.py OUT RUNS. Medians over the rounds; see figures.sh for the runs.
"""
import json
import os
import statistics
import sys

out, runs = sys.argv[1], int(sys.argv[2])
med = statistics.median


def load(path):
    with open(path) as f:
        return json.load(f)


def metrics(path):
    """name -> value of the lines `name{labels} value` (and `wall_secs value`)."""
    values = {}
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 2:
                values[parts[0].split("{")[0]] = float(parts[-1])
    return values


probes = [load("%s/probe-%d.json" % (out, i)) for i in range(1, runs + 1)]
p50 = med(p["p50_us"] for p in probes)
print("  disk probe, pwrite+fdatasync of one record (1 thread): p50 %.0f us, p99 %.0f us, mean %.0f us"
      % (p50, med(p["p99_us"] for p in probes), med(p["mean_us"] for p in probes)))
# The same probe with 16 threads syncing at once: what this disk does for 16 publishers that
# each wait for their own sync (rounds from before figures.sh ran it have no such file).
paths16 = ["%s/probe16-%d.json" % (out, i) for i in range(1, runs + 1)]
probes16 = [load(f) for f in paths16 if os.path.exists(f)]
disk16 = med(p["syncs_per_sec"] for p in probes16) if probes16 else None
if disk16:
    print("  disk probe, 16 threads at once: p50 %.0f us, %.0f pairs/s (all threads)"
          % (med(p["p50_us"] for p in probes16), disk16))
head = ("C", "ceiling", "+rtt", "default", "strict", "/ceil", "/+rtt", "/default", "syncs/s",
        "group", "ack p50", "ack p99")
print("  %4s %9s %9s %9s %9s %7s %7s %8s %8s %7s %9s %9s" % head)
for c in (1, 16, 256):
    rows = []
    for i in range(1, runs + 1):
        d = load("%s/default-c%d-%d.json" % (out, c, i))
        s = load("%s/strict-c%d-%d.json" % (out, c, i))
        m = metrics("%s/strict-c%d-%d.metrics" % (out, c, i))
        syncs = m.get("corq_topic_log_syncs_total", 0.0)
        recs = m.get("corq_topic_log_synced_records_total", 0.0)
        wall = m.get("wall_secs", 1.0)
        d_rate, s_rate = d["published"]["msgs_per_sec"], s["published"]["msgs_per_sec"]
        rows.append((d_rate, s_rate, s_rate / d_rate, syncs / wall, recs / max(syncs, 1.0),
                     s["ack_latency"]["p50_us"], s["ack_latency"]["p99_us"],
                     c * 1e6 / d_rate))
    col = lambda k: med(r[k] for r in rows)
    ceiling = c * 1e6 / p50
    with_rtt = c * 1e6 / (p50 + col(7))
    print("  %4d %9.0f %9.0f %9.0f %9.0f %6.0f%% %6.0f%% %7.0f%% %8.0f %7.1f %7.0fus %7.0fus"
          % (c, ceiling, with_rtt, col(0), col(1), 100 * col(1) / ceiling,
             100 * col(1) / with_rtt, 100 * col(2), col(3), col(4), col(5), col(6)))
    if c == 16 and disk16:
        print("  %4s strict / the 16-thread probe's pairs/s: %.0f%%" % ("", 100 * col(1) / disk16))
print("  ceiling = C / probe p50 (the goal: strict >= 80% of it where it is below the default rate);")
print("  +rtt = C / (probe p50 + the default run's own PUB->OK round trip, C / default rate): what a")
print("  closed-loop publisher can reach at best, since it also waits for the round trip;")
print("  /default: median of the per-round ratios (C = 256: >= 30%); syncs/s and group (records per")
print("  sync): the strict server's /metrics over its whole run, warm-up included.")
