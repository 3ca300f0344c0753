# Sourced by the bench scripts (figures.sh, failure-cost.sh): start and stop one corqd on the
# fixed loopback ports $TCP and $HTTP, pinned to core 0, on a fresh data path (a new directory
# under $DATA_ROOT, /tmp by default; DATA_ROOT=/dev/shm takes the disk out of a measurement).

start_corqd() { # CORQD TAG FLAGS...
    local corqd=$1 tag=$2; shift 2
    DATA=$(mktemp -d "${DATA_ROOT:-/tmp}/corq-$tag.XXXXXX")
    "$corqd" --tcp-address "$TCP" --http-address "$HTTP" --data-path "$DATA" --cpu 0 \
        --log-level warn "$@" &
    SERVER=$!
    for _ in $(seq 100); do
        curl -sf "http://$HTTP/ping" >/dev/null 2>&1 && return
        sleep 0.05
    done
    echo "corqd did not start" >&2
    exit 1
}

stop_server() {
    kill -TERM "$SERVER"
    wait "$SERVER" || true
    rm -rf "$DATA"
    # Start the next run on a quiet disk: a fast run leaves gigabytes to write back (and, with
    # the `discard` mount option, to trim), which otherwise lands in the next run's tail.
    sync
}
