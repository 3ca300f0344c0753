#!/usr/bin/env bash
# Reproduces "Operations: peek and rewind" in docs/benchmarks.md: the longest loop turn that
# a peek of 1,000 messages from a ~10 GB backlog, and a rewind over 1 M messages, cause.
# Turns are measured from outside with benches/turns.sh (perf syscall tracepoints on the
# reactor's epoll_wait), so corqd runs unchanged; needs perf (Debian's linux-perf) and root.
#
#   benches/ops-turns.sh            # ~10 GB of disk under /tmp for a few minutes
#   GB=1 benches/ops-turns.sh       # a smaller backlog
set -euo pipefail
cd "$(dirname "$0")/.."

GB=${GB:-10}
TCP=${TCP:-127.0.0.1:4450}
HTTP=${HTTP:-127.0.0.1:4451}
BIN=target/release
SERVER=
DATA=
trap 'kill $SERVER 2>/dev/null; rm -rf "$DATA"' EXIT
cargo build --release --bins >/dev/null 2>&1

# shellcheck source=benches/server.sh
. "$(dirname "$0")/server.sh"

bench() { taskset -c 1 "$BIN/corq" bench --nsqd-tcp-address "$TCP" "$@" >/dev/null; }
post() { curl -sf -X POST "http://$HTTP$1"; }

# window LABEL SECONDS COMMAND...: the loop turns while COMMAND runs (turns.sh records for
# SECONDS; the command starts half a second in, so it is inside the window).
window() {
    local label=$1 secs=$2; shift 2
    taskset -c 1 benches/turns.sh "$SERVER" "$secs" "$label" &
    local tracer=$!
    sleep 0.5
    "$@"
    wait "$tracer"
}

peeks() { # 20 peeks of 1,000, alternating the channel's and the topic's, timed by curl
    # curl runs on core 1 like the generator: on core 0 its start-up would preempt the loop
    # and show as a long turn that is not corqd's work.
    for i in $(seq 10); do
        taskset -c 1 curl -sf -o /dev/null -w "    channel peek: %{time_total}s %{size_download} B\n" \
            "http://$HTTP/channel/peek?topic=big&channel=c&count=1000"
        taskset -c 1 curl -sf -o /dev/null -w "    topic peek:   %{time_total}s %{size_download} B\n" \
            "http://$HTTP/topic/peek?topic=big&count=1000"
    done
}

rewind() {
    taskset -c 1 curl -sf -X POST "http://$HTTP/channel/rewind?topic=rw&channel=c&to=0"
    echo
}

start_corqd "$BIN/corqd" opsturns
# Publish into a channel so the backlog is the channel's: 1 KiB bodies, GB GiB in all.
post "/topic/create?topic=big" >/dev/null
post "/channel/create?topic=big&channel=c" >/dev/null
bench pub --topic big --size 1024 --batch 100 --connections 4 --count $((GB * 1024 * 1024)) --warmup 0s
echo "backlog: $(du -sh "$DATA" | cut -f1) on disk, channel big/c at its start"
sync
window "idle (no requests)" 3 sleep 1
# The channel's start is the oldest data: on a box that has done other work since, it has left
# the page cache. Evict the topic's files from the cache to measure that case (only those: a
# global drop_caches also evicts corqd's own code, and faulting that back in would be counted
# as peek's), then peek again with it warm.
python3 - "$DATA"/topics/big.topic/*.log <<'PY'
import os, sys
for path in sys.argv[1:]:
    fd = os.open(path, os.O_RDONLY)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.close(fd)
PY
window "20 peeks of 1,000 x 1 KiB, the topic evicted from the page cache first" 8 peeks
window "20 peeks of 1,000 x 1 KiB, cached" 8 peeks

# A rewind over 1 M messages: publish, consume all of it, then move the cursor back to the start.
post "/topic/create?topic=rw" >/dev/null
post "/channel/create?topic=rw&channel=c" >/dev/null
bench pub --topic rw --size 200 --batch 200 --connections 4 --count 1000000 --warmup 0s
bench sub --topic rw --channel c --size 200 --rdy 200 --connections 4 --count 1000000
echo "rw/c depth before the rewind: $(curl -sf "http://$HTTP/stats?format=json&topic=rw" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["topics"][0]["channels"][0]["depth"])')"
window "rewind over 1 M messages" 3 rewind
echo "rw/c depth after the rewind: $(curl -sf "http://$HTTP/stats?format=json&topic=rw" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["topics"][0]["channels"][0]["depth"])')"
stop_server
