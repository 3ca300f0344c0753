#!/usr/bin/env bash
# Reproduces "Failure handling: cost" in docs/benchmarks.md: each comparison is run as
# interleaved pairs A B, B A, A B, ..., every run on a fresh corqd (release, --cpu 0, its own
# --data-path) with `corq bench` on core 1; per-run JSON goes to $OUT, and results.tsv lists
# one line per run (case, side, pair, metric, steal ticks during the run, load average).
#
#   benches/failure-cost.sh               # all five comparisons
#   benches/failure-cost.sh a b           # only some: a (all off vs on, nothing failing),
#                                         # b (dedup), c (max attempts with 10 % REQ), d (durable FIN),
#                                         # e (limits, alerts and JSON logs off vs on)
#   PREFIN_CORQD=path/to/corqd benches/failure-cost.sh d   # the build before durable FIN
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-target/failure-cost}
PAIRS=${PAIRS:-3}
DURATION=${DURATION:-5s}
TCP=127.0.0.1:4350
HTTP=127.0.0.1:4351
BIN=target/release
PREFIN_CORQD=${PREFIN_CORQD:-}
mkdir -p "$OUT"
SERVER=
DATA=
trap 'kill $SERVER 2>/dev/null; rm -rf "$DATA"' EXIT

steal_ticks() { awk '/^cpu /{print $9}' /proc/stat; }

# shellcheck source=benches/server.sh
. "$(dirname "$0")/server.sh"

start_server() { # CORQD FLAGS...
    local corqd=$1; shift
    start_corqd "$corqd" fcost "$@"
}

# run CASE SIDE PAIR METRIC CORQD [SERVER FLAGS] -- BENCH ARGS
run() {
    local case=$1 side=$2 pair=$3 metric=$4 corqd=$5; shift 5
    local flags=()
    while [ "$1" != "--" ]; do flags+=("$1"); shift; done
    shift
    start_server "$corqd" "${flags[@]}"
    local s0 json="$OUT/$case-$side-$pair.json"
    s0=$(steal_ticks)
    taskset -c 1 "$BIN/corq" bench --nsqd-tcp-address "$TCP" --duration "$DURATION" "$@" \
        --json "$json" >"$OUT/$case-$side-$pair.txt"
    local steal=$(($(steal_ticks) - s0))
    stop_server
    local value
    value=$(python3 -c "import json,sys; r=json.load(open(sys.argv[1])); v=r
for k in sys.argv[2].split('.'): v=v[k]
print(round(v, 1))" "$json" "$metric")
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$case" "$side" "$pair" "$metric" "$value" "$steal" \
        "$(cut -d' ' -f1 /proc/loadavg)" | tee -a "$OUT/results.tsv"
}

# pairs CASE METRIC "A corqd+flags" "B corqd+flags" -- BENCH ARGS
pairs() {
    local case=$1 metric=$2 a=$3 b=$4; shift 5
    for p in $(seq "$PAIRS"); do
        # Odd pairs run A first, even ones B first (A B B A ...): a drift over the session
        # (page cache, the host's load) then favours neither side.
        if ((p % 2)); then
            # shellcheck disable=SC2086 # the sides are word lists on purpose
            run "$case" A "$p" "$metric" $a -- "$@"
            # shellcheck disable=SC2086
            run "$case" B "$p" "$metric" $b -- "$@"
        else
            # shellcheck disable=SC2086
            run "$case" B "$p" "$metric" $b -- "$@"
            # shellcheck disable=SC2086
            run "$case" A "$p" "$metric" $a -- "$@"
        fi
    done
}

ON="--max-attempts 5 --requeue-backoff 1s --message-ttl 1h --dedup-window 0"
# Alerts are on by default (--alert-latency 500ms): "off" turns them off too.
OPS_OFF="--alert-latency 0"
OPS_ON="--max-topic-bytes 1099511627776 --max-topic-depth 1000000000 --alert-latency 500ms
  --alert-webhook-url http://127.0.0.1:9/alerts --log-format json"
for group in "${@:-a b c d e}"; do
    for g in $group; do
        case $g in
        a)
            pairs a-pubsub consumed.msgs_per_sec "$BIN/corqd" "$BIN/corqd $ON" -- pubsub
            pairs a-e2e e2e_latency.p99_us "$BIN/corqd" "$BIN/corqd $ON" \
                -- e2e --rate 50000 --connections 1 --consumers 4
            ;;
        b)
            pairs b-pub published.msgs_per_sec "$BIN/corqd" "$BIN/corqd --dedup-window 10s" \
                -- pub --unique-bodies
            ;;
        c)
            pairs c-pubsub consumed.msgs_per_sec "$BIN/corqd" "$BIN/corqd --max-attempts 3" \
                -- pubsub --req-ratio 0.1
            ;;
        e)
            # Operations (limits, alerts, JSON logs) off against on, nothing near a limit.
            pairs e-pub published.msgs_per_sec "$BIN/corqd $OPS_OFF" "$BIN/corqd $OPS_ON" -- pub
            pairs e-pubsub consumed.msgs_per_sec "$BIN/corqd $OPS_OFF" "$BIN/corqd $OPS_ON" \
                -- pubsub
            ;;
        d)
            pairs d-pubsub consumed.msgs_per_sec "$PREFIN_CORQD --sync-every=1" \
                "$BIN/corqd --sync-every=1" -- pubsub
            ;;
        esac
    done
done
