#!/usr/bin/env bash
# Samples the resident memory of one process every 100 ms and prints the peak of each figure.
#
#   benches/rss.sh PID            # until PID exits, or until this script gets SIGINT/SIGTERM
#
# Prints one line when it stops, e.g.
#   peak VmRSS 27.9 MiB  RssAnon 14.1 MiB  RssFile 13.8 MiB  RssShmem 0.0 MiB  (412 samples)
# VmRSS is what a container limit or `ps` sees; RssAnon is the heap (indexes, buffers);
# RssFile is file pages mapped into the process (for corqd: log pages read through the
# segment maps). Each peak is taken on its own, so VmRSS's peak need not equal the sum of the
# others'. Sampling misses spikes shorter than 100 ms (the kernel's own VmHWM does not, but it
# is not split by kind; it is printed too).
set -uo pipefail

PID=${1:?usage: benches/rss.sh PID}
STATUS=/proc/$PID/status
[ -r "$STATUS" ] || { echo "no process $PID" >&2; exit 1; }

rss=0 anon=0 file=0 shmem=0 hwm=0 samples=0

report() {
    mib() { awk -v k="$1" 'BEGIN { printf "%.1f MiB", k / 1024 }'; }
    echo "peak VmRSS $(mib "$rss")  RssAnon $(mib "$anon")  RssFile $(mib "$file")  RssShmem $(mib "$shmem")  VmHWM $(mib "$hwm")  ($samples samples)"
    exit 0
}
trap report INT TERM

while [ -r "$STATUS" ]; do
    # Fields are in kB: "VmRSS:	  123456 kB". Read with builtins: no fork per sample.
    while read -r key value _; do
        case $key in
            VmRSS:) [ "$value" -gt "$rss" ] && rss=$value ;;
            VmHWM:) hwm=$value ;;
            RssAnon:) [ "$value" -gt "$anon" ] && anon=$value ;;
            RssFile:) [ "$value" -gt "$file" ] && file=$value ;;
            RssShmem:) [ "$value" -gt "$shmem" ] && shmem=$value ;;
        esac
    done <"$STATUS" 2>/dev/null
    samples=$((samples + 1))
    sleep 0.1 &
    wait $!   # (a wait, not a plain sleep, so a signal is handled at once)
done
report
