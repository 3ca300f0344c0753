#!/usr/bin/env bash
# Measures corqd's loop turns from outside: the time its reactor thread spends between leaving
# epoll_wait and entering it again is one turn. Uses the kernel's syscall tracepoints (perf),
# so corqd runs unchanged and at full speed.
#
#   benches/turns.sh PID SECONDS [LABEL]
#
# Prints the number of turns, their p50/p99/p99.9 and the longest, with when it started (the
# perf clock, CLOCK_MONOTONIC). The reactor is corqd's main thread (its helpers are named
# corq-storage, corq-storage-bg, corq-checkpoint, ...), so PID is also its thread id.
set -euo pipefail
pid=$1 secs=$2 label=${3:-turns}
out=$(mktemp /tmp/corq-turns.XXXXXX)
trap 'rm -f "$out" "$out.txt"' EXIT
perf record -q -k CLOCK_MONOTONIC -e syscalls:sys_enter_epoll_wait -e syscalls:sys_exit_epoll_wait \
    -t "$pid" -o "$out" -- sleep "$secs" 2>/dev/null
perf script -i "$out" -F time,event 2>/dev/null >"$out.txt"
python3 - "$out.txt" "$label" <<'PY'
import sys
left, turns = None, []  # left: when the thread last returned from epoll_wait
for line in open(sys.argv[1]):
    parts = line.split()
    if len(parts) < 2:
        continue
    t = float(parts[0].rstrip(':'))
    if 'sys_exit_epoll_wait' in parts[1]:
        left = t
    elif 'sys_enter_epoll_wait' in parts[1] and left is not None:
        turns.append((t - left, left))
        left = None
if not turns:
    sys.exit(f"{sys.argv[2]}: no turns seen (is PID the reactor thread?)")
turns.sort()
n = len(turns)
pick = lambda q: turns[min(n - 1, int(q * n))][0] * 1e3
longest, at = turns[-1]
print(f"{sys.argv[2]}: {n} turns, p50 {pick(0.5):.3f} ms, p99 {pick(0.99):.3f} ms, "
      f"p99.9 {pick(0.999):.3f} ms, longest {longest * 1e3:.3f} ms (at {at:.6f})")
PY
