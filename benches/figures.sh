#!/usr/bin/env bash
# Reproduces the end-to-end figures in docs/benchmarks.md.
#
# Every run starts a fresh corqd (release build, pinned to core 0 with --cpu 0, its own data
# directory) and runs `corq bench` pinned to core 1, three times per case; the median of the
# three is printed next to the command, and every run's JSON is kept in $OUT.
#
#   benches/figures.sh              # all cases (~25 minutes)
#   benches/figures.sh pub sub      # only the named groups: pub sub fanout e2e durable http recovery rss
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-target/figures}
RUNS=${RUNS:-3}
TCP=127.0.0.1:4150
HTTP=127.0.0.1:4151
mkdir -p "$OUT"
cargo build --release --bins >/dev/null 2>&1
BIN=target/release
SERVER=
DATA=

# Steal time of this VM's vCPUs so far, in clock ticks (/proc/stat, 8th field of "cpu").
steal_ticks() { awk '/^cpu /{print $9}' /proc/stat; }

# settle: waits (at most 90 s) until the host has stopped stealing time from this VM for 3 s.
# Measured here: after a run that wrote gigabytes, the host keeps pausing the VM's vCPUs for
# 20-30 ms at a time while it works off those writes (~80 ms stolen over the next 8 s, none
# 30 s later); an e2e run taken then measures the host (p99.9 10.7 ms against 0.84 ms).
settle() {
    local last now quiet=0
    last=$(steal_ticks)
    for _ in $(seq 90); do
        sleep 1
        now=$(steal_ticks)
        if [ "$now" = "$last" ]; then quiet=$((quiet + 1)); else quiet=0; fi
        last=$now
        [ "$quiet" -ge 3 ] && return
    done
}

# shellcheck source=benches/server.sh
. "$(dirname "$0")/server.sh"

start_server() {
    settle
    start_corqd "$BIN/corqd" figures "$@"
}

trap 'kill $SERVER 2>/dev/null || true; rm -rf "$DATA"' EXIT

bench() { taskset -c 1 "$BIN/corq" bench --nsqd-tcp-address "$TCP" "$@" >/dev/null; }

# median NAME FIELD...: the median over runs of a JSON field path, e.g. published.msgs_per_sec
median() {
    python3 - "$OUT/$1" "${@:2}" <<'EOF'
import json, statistics, sys, glob
prefix, fields = sys.argv[1], sys.argv[2:]
runs = [json.load(open(f)) for f in sorted(glob.glob(prefix + "-*.json"))]
out = []
for field in fields:
    vals = []
    for r in runs:
        v = r
        for k in field.split("."):
            v = v[k]
        vals.append(v)
    out.append("%s=%s (runs %s)" % (field, round(statistics.median(vals), 1), ", ".join(str(round(v, 1)) for v in vals)))
print("  " + "\n  ".join(out))
EOF
}

# case NAME SERVER_FLAGS -- BENCH_ARGS: RUNS fresh-server runs of one bench command.
case_runs() {
    local name=$1; shift
    local server_flags=()
    while [ "$1" != "--" ]; do server_flags+=("$1"); shift; done
    shift
    for i in $(seq "$RUNS"); do
        start_server "${server_flags[@]}"
        local s0
        s0=$(steal_ticks)
        bench "$@" --json "$OUT/$name-$i.json"
        echo "  run $i: $(($(steal_ticks) - s0)) steal ticks"
        stop_server
    done
    echo "$name: corq bench $*  [corqd ${server_flags[*]}]"
}

want() { [ -z "$WANT" ] || [[ " $WANT " == *" $1 "* ]]; }
WANT="$*"

if want pub; then
    case_runs pub200 -- pub --size 200 --batch 200 --connections 4
    median pub200 published.msgs_per_sec
    case_runs pub100 -- pub --size 100 --batch 200 --connections 4
    median pub100 published.msgs_per_sec
    case_runs pub200x64 -- pub --size 200 --batch 1 --pipeline 64 --connections 4
    median pub200x64 published.msgs_per_sec ack_latency.p99_us
fi

if want sub; then
    for i in $(seq "$RUNS"); do
        start_server
        bench pub --topic sub5m --size 200 --batch 200 --connections 4 --count 5000000 --warmup 0s
        bench sub --topic sub5m --size 200 --rdy 200 --connections 4 --json "$OUT/sub5m-$i.json"
        stop_server
    done
    echo "sub5m: corq bench sub --topic sub5m --size 200 --rdy 200 --connections 4 (after a 5 M MPUB backlog)"
    median sub5m consumed.msgs_per_sec
fi

if want fanout; then
    for ch in 1 10; do
        case_runs "fanout$ch" -- pubsub --size 200 --batch 200 --connections 4 --channels "$ch" --consumers 1
        median "fanout$ch" published.msgs_per_sec consumed.msgs_per_sec
    done
fi

if want e2e; then
    for rate in 50000 100000 200000; do
        case_runs "e2e$rate" -- e2e --size 200 --rate "$rate" --connections 1 --consumers 4 \
            --hgrm "$OUT/e2e$rate.hgrm" --plot "$OUT/e2e$rate.svg"
        median "e2e$rate" e2e_latency.p50_us e2e_latency.p99_us e2e_latency.p99_9_us e2e_latency.max_us generator_cpu_percent
    done
fi

if want durable; then
    for p in 1 4 16; do
        case_runs "default-pub$p" -- pub --size 200 --batch 1 --connections "$p"
        median "default-pub$p" published.msgs_per_sec ack_latency.p50_us ack_latency.p99_us
        case_runs "strict-pub$p" --sync-every 1 -- pub --size 200 --batch 1 --connections "$p"
        median "strict-pub$p" published.msgs_per_sec ack_latency.p50_us ack_latency.p99_us
    done
    case_runs strict-mpub --sync-every 1 -- pub --size 200 --batch 200 --connections 4
    median strict-mpub published.msgs_per_sec ack_latency.p99_us
fi

if want http; then
    start_server
    echo "http /pub: wrk -t1 -c4 -d10s -s benches/wrk-pub.lua (3 runs)"
    for i in $(seq "$RUNS"); do
        taskset -c 1 wrk -t1 -c4 -d10s -s benches/wrk-pub.lua "http://$HTTP/pub?topic=wrk" | grep -E "Requests/sec|Latency"
    done
    stop_server
    # Small segments: 1,000 topics of 100 MiB first segments would need 100 GB of disk.
    start_server --max-bytes-per-file 4194304
    for t in $(seq 1000); do
        for c in $(seq 10); do echo "url = \"http://$HTTP/channel/create?topic=t$t&channel=c$c\""; done
    done >"$OUT/channels.curl"
    for t in $(seq 1000); do echo "url = \"http://$HTTP/topic/create?topic=t$t\""; done >"$OUT/topics.curl"
    curl -s -X POST -K "$OUT/topics.curl" >/dev/null
    curl -s -X POST -K "$OUT/channels.curl" >/dev/null
    echo "/stats with 1,000 topics x 10 channels (10 calls each):"
    for fmt in json text; do
        q=$([ $fmt = json ] && echo "?format=json" || echo "")
        taskset -c 1 curl -s -o /dev/null -w "  $fmt: %{time_total}s, %{size_download} bytes\n" "http://$HTTP/stats$q"
        python3 - "$HTTP" "$q" <<'EOF'
import sys, time, urllib.request
url = "http://%s/stats%s" % (sys.argv[1], sys.argv[2])
times = []
for _ in range(10):
    t = time.perf_counter(); urllib.request.urlopen(url).read(); times.append(time.perf_counter() - t)
times.sort()
print("    median %.1f ms (min %.1f, max %.1f)" % (times[5] * 1e3, times[0] * 1e3, times[-1] * 1e3))
EOF
    done
    stop_server
fi

if want rss; then
    # Peak resident memory of corqd (benches/rss.sh samples /proc/PID/status every 100 ms),
    # with the throughput of the same run next to it: the PUB 200 B case (10 s), and the SUB
    # case's fill and drain of a 5 M backlog (peaks over both phases, then the drain alone).
    for i in $(seq "$RUNS"); do
        start_server
        benches/rss.sh "$SERVER" >"$OUT/rss-pub-$i.txt" & SAMPLER=$!
        bench pub --size 200 --batch 200 --connections 4 --json "$OUT/rsspub-$i.json"
        kill -TERM "$SAMPLER"; wait "$SAMPLER" || true
        echo "  pub run $i: $(cat "$OUT/rss-pub-$i.txt")"
        stop_server
    done
    echo "rss pub: corq bench pub --size 200 --batch 200 --connections 4 (10 s)"
    median rsspub published.msgs_per_sec
    for i in $(seq "$RUNS"); do
        start_server
        benches/rss.sh "$SERVER" >"$OUT/rss-sub-$i.txt" & SAMPLER=$!
        bench pub --topic sub5m --size 200 --batch 200 --connections 4 --count 5000000 --warmup 0s
        benches/rss.sh "$SERVER" >"$OUT/rss-drain-$i.txt" & DRAIN=$!
        bench sub --topic sub5m --size 200 --rdy 200 --connections 4 --json "$OUT/rsssub-$i.json"
        kill -TERM "$SAMPLER" "$DRAIN"; wait "$SAMPLER" "$DRAIN" || true
        echo "  sub run $i, fill + drain: $(cat "$OUT/rss-sub-$i.txt")"
        echo "  sub run $i, drain only:   $(cat "$OUT/rss-drain-$i.txt")"
        stop_server
    done
    echo "rss sub: fill pub --topic sub5m ... --count 5000000, then sub --topic sub5m --size 200 --rdy 200 --connections 4"
    median rsssub consumed.msgs_per_sec
fi

if want recovery; then
    start_server --max-bytes-per-file 419430400
    bench pub --topic big --size 1024 --batch 200 --connections 4 --count 1050000 --warmup 0s
    KEEP=$DATA
    kill -KILL "$SERVER"; wait "$SERVER" || true
    du -sh "$KEEP/topics"
    sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
    for cache in cold warm; do
        t0=$(date +%s.%N)
        "$BIN/corqd" --tcp-address "$TCP" --http-address "$HTTP" --data-path "$KEEP" --log-level warn &
        SERVER=$!
        until curl -sf "http://$HTTP/ping" >/dev/null 2>&1; do sleep 0.01; done
        t1=$(date +%s.%N)
        echo "restart after kill -9 over a 1 GiB log ($cache cache): $(python3 -c "print(round($t1-$t0, 3))") s to serving"
        kill -TERM "$SERVER"; wait "$SERVER" || true
    done
    rm -rf "$KEEP"
fi

echo done
