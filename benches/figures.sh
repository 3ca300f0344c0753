#!/usr/bin/env bash
# Reproduces the end-to-end figures in docs/benchmarks.md.
#
# Every run starts a fresh corqd (release build, pinned to core 0 with --cpu 0, its own data
# directory) and runs `corq bench` pinned to core 1, three times per case; the median of the
# three is printed next to the command, and every run's JSON is kept in $OUT.
#
#   benches/figures.sh              # all cases (~25 minutes, plus strict, transport ~15 and plainpath ~10)
#   benches/figures.sh pub sub      # only the named groups: pub sub fanout e2e durable strict http
#                                   # recovery rss transport plainpath regress floor
#   BEFORE=/tmp/before/target/release benches/figures.sh plainpath
#                                   # this build's plain path against another build's binaries
#
# TCP, HTTP and HTTPS (the addresses corqd listens on and corq bench dials) can be overridden
# from the environment, e.g. TCP=127.0.0.1:14150 HTTP=127.0.0.1:14151 when 4150 is taken.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-target/figures}
RUNS=${RUNS:-3}
TCP=${TCP:-127.0.0.1:4150}
HTTP=${HTTP:-127.0.0.1:4151}
HTTPS=${HTTPS:-127.0.0.1:4152}
mkdir -p "$OUT"
cargo build --release --bins >/dev/null 2>&1
BIN=target/release
SERVER=
DATA=

# Steal time of this VM's vCPUs so far, in clock ticks (/proc/stat, 8th field of "cpu").
steal_ticks() { awk '/^cpu /{print $9}' /proc/stat; }

# Idle ticks of core $1 so far (/proc/stat): the reactor's core is 0 (start_corqd pins it).
core_idle_ticks() { awk -v cpu="cpu$1" '$1 == cpu {print $5}' /proc/stat; }

# CPU ticks the running corqd has used so far, as "REACTOR HELPERS": the reactor is the main
# thread (its task id is the process id), every other thread is a helper (storage lanes, ...).
server_ticks() {
    local task ticks reactor=0 helpers=0
    for task in /proc/"$SERVER"/task/*; do
        ticks=$(awk '{print $14 + $15}' "$task/stat")
        if [ "${task##*/}" = "$SERVER" ]; then
            reactor=$((reactor + ticks))
        else
            helpers=$((helpers + ticks))
        fi
    done
    echo "$reactor $helpers"
}

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

# start_server FLAGS...: a fresh corqd once the host is quiet; $CORQD, when set, names another
# build's binary (the regress group), otherwise this build's.
start_server() {
    settle
    start_corqd "${CORQD:-$BIN/corqd}" figures "$@"
}

# sub5m_case JSON: a 5 M MPUB backlog, then its drain by 4 consumers (the SUB row).
sub5m_case() {
    bench pub --topic sub5m --size 200 --batch 200 --connections 4 --count 5000000 --warmup 0s
    bench sub --topic sub5m --size 200 --rdy 200 --connections 4 --json "$1"
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

# case_run NAME I SERVER_FLAGS -- BENCH_ARGS: run I of one bench command, on a fresh server.
case_run() {
    local name=$1 i=$2; shift 2
    local server_flags=() s0
    while [ "$1" != "--" ]; do server_flags+=("$1"); shift; done
    shift
    start_server "${server_flags[@]}"
    s0=$(steal_ticks)
    bench "$@" --json "$OUT/$name-$i.json"
    echo "  $name run $i: $(($(steal_ticks) - s0)) steal ticks"
    stop_server
}

# case_runs NAME SERVER_FLAGS -- BENCH_ARGS: RUNS fresh-server runs of one bench command.
case_runs() {
    local name=$1; shift
    for i in $(seq "$RUNS"); do
        case_run "$name" "$i" "$@"
    done
    local server_flags=()
    while [ "$1" != "--" ]; do server_flags+=("$1"); shift; done
    echo "$name: corq bench ${*:2}  [corqd ${server_flags[*]}]"
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
        sub5m_case "$OUT/sub5m-$i.json"
        stop_server
    done
    echo "sub5m: corq bench sub --topic sub5m --size 200 --rdy 200 --connections 4 (after a 5 M MPUB backlog)"
    median sub5m consumed.msgs_per_sec
fi

# fanout: one channel and ten, interleaved per run (1, 10, 1, 10, ...) so that a slow stretch of
# the host lands on both sides rather than on whichever ran in it.
if want fanout; then
    for i in $(seq "$RUNS"); do
        for ch in 1 10; do
            case_run "fanout$ch" "$i" -- pubsub --size 200 --batch 200 --connections 4 \
                --channels "$ch" --consumers 1
        done
    done
    for ch in 1 10; do
        echo "fanout$ch: corq bench pubsub --size 200 --batch 200 --connections 4 --channels $ch --consumers 1"
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

# strict: strict mode (--sync-every 1) against the disk's sync limit.
# Per round: the disk probe (1 and 16 threads), then for C = 1 16 256 closed-loop PUB
# publishers a default-mode and a strict-mode run back to back (interleaved, a fresh server
# each); the strict server's /metrics give the syncs and the group size. The table: medians
# over the rounds.
if want strict; then
    for i in $(seq "$RUNS"); do
        settle
        s0=$(steal_ticks)
        taskset -c 0 "$BIN/corq" disk-probe --data-path /tmp --count 1000 \
            --json "$OUT/probe-$i.json" >/dev/null
        # 16 threads syncing at once: what the disk gives 16 publishers that each sync alone.
        "$BIN/corq" disk-probe --data-path /tmp --count 1000 --threads 16 \
            --json "$OUT/probe16-$i.json" >/dev/null
        for c in 1 16 256; do
            start_server
            bench pub --size 200 --batch 1 --connections "$c" --json "$OUT/default-c$c-$i.json"
            stop_server
            start_server --sync-every 1
            t0=$(date +%s.%N)
            bench pub --size 200 --batch 1 --connections "$c" --json "$OUT/strict-c$c-$i.json"
            { curl -s "http://$HTTP/metrics" | grep -E '^corq_topic_log_sync'
              echo "wall_secs $(python3 -c "print($(date +%s.%N) - $t0)")"; } >"$OUT/strict-c$c-$i.metrics"
            stop_server
        done
        echo "  round $i: $(($(steal_ticks) - s0)) steal ticks"
    done
    echo "strict: corq bench pub --size 200 --batch 1 --connections C; corqd default vs --sync-every 1 ($RUNS interleaved rounds)"
    python3 benches/strict-table.py "$OUT" "$RUNS"
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

# transport: PUB rate, SUB rate and e2e at 50k msg/s over plain, TLS, snappy and deflate
# Every corqd has the same TLS certificate (a test CA made here with openssl), so
# only the client's IDENTIFY differs; the layers are interleaved inside each run (plain, tls,
# snappy, deflate, then the next run), so a ratio to plain compares neighbours in time.
# The SUB backlog is published in plain; only the consumers use the layer.
LAYERS=${LAYERS:-plain tls snappy deflate}
SUB_BACKLOG=${SUB_BACKLOG:-2000000}
DURATION=${DURATION:-10s} # of the PUB and e2e runs (after corq bench's 2 s warm-up)

make_certs() { # DIR: a CA and a server certificate for 127.0.0.1/localhost, made once
    local d=$1
    mkdir -p "$d"
    [ -f "$d/server.pem" ] && return
    local ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
    openssl req -x509 "${ec[@]}" -keyout "$d/ca.key" -out "$d/ca.pem" -days 30 \
        -subj /CN=corq-bench-ca 2>/dev/null
    openssl req "${ec[@]}" -keyout "$d/server.key" -out "$d/server.csr" \
        -subj /CN=localhost 2>/dev/null
    printf 'basicConstraints=CA:FALSE\nsubjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' \
        >"$d/srv.ext"
    openssl x509 -req -in "$d/server.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" -CAcreateserial \
        -days 30 -extfile "$d/srv.ext" -out "$d/server.pem" 2>/dev/null
}

layer_flags() { # LAYER: corq bench's flags for it, one a line
    case $1 in
    plain) ;;
    tls) printf '%s\n' --tls --tls-root-ca-file "$OUT/certs/ca.pem" ;;
    snappy) echo --snappy ;;
    deflate) echo --deflate ;;
    tls+snappy) printf '%s\n' --tls --tls-root-ca-file "$OUT/certs/ca.pem" --snappy ;;
    *) echo "unknown layer $1" >&2; exit 1 ;;
    esac
}

# three_cases PREFIX SERVER_FLAGS... -- CLIENT_FLAGS...: one run each of PUB, SUB (of a plain
# backlog) and e2e at 50k msg/s, each on a fresh corqd, into $OUT/PREFIX-{pub,sub,e2e}.json.
three_cases() {
    local prefix=$1; shift
    local server_flags=()
    while [ "$1" != "--" ]; do server_flags+=("$1"); shift; done
    shift
    start_server "${server_flags[@]}"
    bench pub --size 200 --batch 200 --connections 4 --duration "$DURATION" "$@" \
        --json "$OUT/$prefix-pub.json"
    stop_server
    start_server "${server_flags[@]}"
    bench pub --topic backlog --size 200 --batch 200 --connections 4 --count "$SUB_BACKLOG" \
        --warmup 0s
    bench sub --topic backlog --size 200 --rdy 200 --connections 4 --count "$SUB_BACKLOG" "$@" \
        --json "$OUT/$prefix-sub.json"
    stop_server
    start_server "${server_flags[@]}"
    bench e2e --size 200 --rate 50000 --connections 1 --consumers 4 --duration "$DURATION" "$@" \
        --json "$OUT/$prefix-e2e.json"
    stop_server
}

# side_by_side GROUP NAMES...: a markdown table of the medians over runs of
# $OUT/GROUP-NAME-RUN-CASE.json, with each NAME's ratio to the first NAME taken run by run
# (neighbours in time) and then the median of those ratios. The columns are three_cases' unless
# SIDE_COLS gives others as "case:json.field:label;...".
side_by_side() {
    SIDE_COLS=${SIDE_COLS:-} python3 - "$OUT" "$RUNS" "$@" <<'EOF'
import json, os, statistics, sys
out, runs, group, names = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:]
cols = [("pub", "published.msgs_per_sec", "PUB msg/s"),
        ("sub", "consumed.msgs_per_sec", "SUB msg/s"),
        ("e2e", "e2e_latency.p50_us", "e2e 50k p50 µs"),
        ("e2e", "e2e_latency.p99_us", "e2e 50k p99 µs")]
if os.environ["SIDE_COLS"]:
    cols = [tuple(c.split(":", 2)) for c in os.environ["SIDE_COLS"].split(";")]
def get(name, run, case, field):
    v = json.load(open("%s/%s-%s-%d-%s.json" % (out, group, name, run, case)))
    for k in field.split("."):
        v = v[k]
    return v
print("| %s | %s |" % (group, " | ".join(c[2] for c in cols)))
print("|---|%s" % ("---:|" * len(cols)))
for name in names:
    cells = []
    for case, field, _ in cols:
        vals = [get(name, r, case, field) for r in range(1, runs + 1)]
        cell = "%.0f" % statistics.median(vals)
        if name != names[0]:
            ratios = [v / get(names[0], r, case, field) for r, v in enumerate(vals, 1)]
            cell += " (×%.2f, runs %s)" % (statistics.median(ratios),
                                           " ".join("%.2f" % x for x in ratios))
        cells.append(cell)
    print("| %s | %s |" % (name, " | ".join(cells)))
print("medians of %d runs; ×: the median of the per-run ratios to %s" % (runs, names[0]))
EOF
}

if want transport; then
    make_certs "$OUT/certs"
    tls_server=(--tls-cert "$OUT/certs/server.pem" --tls-key "$OUT/certs/server.key"
        --https-address "$HTTPS")
    for i in $(seq "$RUNS"); do
        for layer in $LAYERS; do
            echo "transport run $i: $layer"
            mapfile -t flags < <(layer_flags "$layer")
            three_cases "transport-$layer-$i" "${tls_server[@]}" -- "${flags[@]}"
        done
    done
    echo "transport: corq bench pub|sub|e2e --rate 50000 [--tls|--snappy|--deflate]" \
        "[corqd --tls-cert --tls-key]"
    # shellcheck disable=SC2086 # LAYERS is a word list
    side_by_side transport $LAYERS
fi

# plainpath: this build's plain path against the binaries in $BEFORE (corqd and corq built
# from an earlier commit), each build's corq against its own corqd, interleaved per run.
# "TLS must not cost the plain path anything": every ratio should be 1 within the run-to-run
# spread printed next to it.
if want plainpath; then
    if [ -z "${BEFORE:-}" ]; then
        echo "plainpath: skipped (set BEFORE=<dir with an earlier build's corqd and corq>)"
    else
        AFTER=$BIN
        for i in $(seq "$RUNS"); do
            for build in before after; do
                echo "plainpath run $i: $build"
                if [ $build = before ]; then BIN=$BEFORE; else BIN=$AFTER; fi
                three_cases "plainpath-$build-$i" --
            done
        done
        BIN=$AFTER
        echo "plainpath: corq bench pub|sub|e2e --rate 50000, plain; before = $BEFORE"
        side_by_side plainpath before after
    fi
fi

# regress: the throughput rows of docs/benchmarks.md (MPUB 200, plain PUB x 64, SUB of a 5 M
# backlog) for this build's corqd against $BEFORE's corqd, interleaved per run, both driven by
# this build's corq bench so that only the server differs.
if want regress; then
    if [ -z "${BEFORE:-}" ]; then
        echo "regress: skipped (set BEFORE=<dir with an earlier build's corqd>)"
    else
        regress_cases() { # PREFIX CORQD
            # CORQD is local here, and start_server (called from here) starts that binary.
            local prefix=$1 CORQD=$2 s0 idle0 ticks
            start_server
            s0=$(steal_ticks)
            idle0=$(core_idle_ticks 0)
            bench pub --size 200 --batch 200 --connections 4 --json "$OUT/$prefix-mpub.json"
            # Which side of the two cores MPUB waits for: the reactor's core idle (it waits for
            # the generator, whose core also runs the helpers) or busy (the generator waits).
            read -r -a ticks <<<"$(server_ticks)"
            echo "  $prefix mpub: core 0 idle $(($(core_idle_ticks 0) - idle0)) ticks;" \
                "server CPU: reactor ${ticks[0]}, helpers ${ticks[1]} ticks"
            stop_server
            start_server
            bench pub --size 200 --batch 1 --pipeline 64 --connections 4 \
                --json "$OUT/$prefix-pub64.json"
            stop_server
            start_server
            sub5m_case "$OUT/$prefix-sub.json"
            stop_server
            echo "  $prefix: $(($(steal_ticks) - s0)) steal ticks"
        }
        for i in $(seq "$RUNS"); do
            regress_cases "regress-before-$i" "$BEFORE/corqd"
            regress_cases "regress-after-$i" "$BIN/corqd"
        done
        echo "regress: corq bench pub --batch 200 | pub --batch 1 --pipeline 64 | sub of 5 M" \
            "(all --size 200 --connections 4); before = $BEFORE"
        SIDE_COLS="mpub:published.msgs_per_sec:MPUB 200 msg/s;pub64:published.msgs_per_sec:PUB x 64 msg/s;pub64:ack_latency.p99_us:PUB x 64 OK p99 µs;sub:consumed.msgs_per_sec:SUB 5 M msg/s" \
            side_by_side regress before after
    fi
fi

# floor: first benches/echo.rs (a TCP echo across the two cores, blocking and spinning: the
# machine's own round-trip tail, no server at all); then the e2e and fan-out commands against
# benches/relay.rs (one thread that routes PUBs to subscribers through memory and does nothing
# else: what this machine allows any server) and against corqd, interleaved per run. What the
# relay cannot reach is the machine's; what corqd falls short of the relay by is corq's own cost.
if want floor; then
    cargo build --release --bench relay --bench echo >/dev/null 2>&1
    RELAY=$(ls -t target/release/deps/relay-* | grep -v '\.d$' | head -1)
    ECHO=$(ls -t target/release/deps/echo-* | grep -v '\.d$' | head -1)
    for i in $(seq "$RUNS"); do
        for rate in 50000 200000; do
            for spin in "" --spin; do
                settle
                # shellcheck disable=SC2086 # $spin is empty or one flag
                "$ECHO" "$rate" 10 $spin
            done
        done
    done
    start_relay() {
        settle
        DATA=
        taskset -c 0 "$RELAY" "$TCP" 2>/dev/null &
        SERVER=$!
        for _ in $(seq 100); do
            (exec 3<>"/dev/tcp/${TCP%:*}/${TCP#*:}") 2>/dev/null && return
            sleep 0.05
        done
        echo "relay did not start" >&2
        exit 1
    }
    floor_case() { # NAME BENCH_ARGS...: RUNS interleaved relay and corqd runs
        local name=$1 s0 who; shift
        for i in $(seq "$RUNS"); do
            for who in relay corqd; do
                if [ $who = relay ]; then start_relay; else start_server; fi
                s0=$(steal_ticks)
                bench "$@" --json "$OUT/$who-$name-$i.json"
                echo "  run $i $who: $(($(steal_ticks) - s0)) steal ticks"
                stop_server
            done
        done
        echo "$name: corq bench $*"
    }
    for rate in 50000 200000; do
        floor_case "floor-e2e$rate" e2e --size 200 --rate "$rate" --connections 2 --consumers 4
        for who in relay corqd; do
            echo " $who"
            median "$who-floor-e2e$rate" e2e_latency.p50_us e2e_latency.p99_us \
                e2e_latency.p99_9_us e2e_latency.p99_99_us
        done
    done
    for ch in 1 10; do
        floor_case "floor-fanout$ch" pubsub --size 200 --batch 200 --connections 4 \
            --channels "$ch" --consumers 1
        for who in relay corqd; do
            echo " $who"
            median "$who-floor-fanout$ch" published.msgs_per_sec consumed.msgs_per_sec
        done
    done
fi

echo done
