#!/usr/bin/env bash
# Soak test (not part of CI): runs a release server on a fresh data dir, measures the
# scenario's peak throughput, then drives it at 70 % of that peak for 10 minutes while
# sampling the server's resident memory. Fails unless the run had zero errors and the
# RSS stayed flat: every sample after the first within 10 % of the first.
#
#   scripts/soak.sh
#   SCENARIO=issue DURATION=10m LOAD=0.7 scripts/soak.sh
set -euo pipefail
cd "$(dirname "$0")/.."

SCENARIO=${SCENARIO:-introspect-hot}
DURATION=${DURATION:-10m}
LOAD=${LOAD:-0.7}
CONCURRENCY=${CONCURRENCY:-64}
GRPC=${GRPC:-127.0.0.1:50151}
HTTP=${HTTP:-127.0.0.1:8181}
METRICS=${METRICS:-127.0.0.1:9565}
SAMPLE_EVERY=${SAMPLE_EVERY:-30}

cargo build --release --quiet --bin tessera --example loadgen

data=$(mktemp -d)
target/release/tessera serve --data-dir "$data" --grpc-addr "$GRPC" --http-addr "$HTTP" \
    --metrics-addr "$METRICS" \
    >"$data/server.log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; rm -rf "$data"' EXIT

# One value from the server's /metrics, over bash's own TCP client.
metric() {
    exec 3<>"/dev/tcp/${METRICS%:*}/${METRICS##*:}"
    printf 'GET /metrics HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n' "$METRICS" >&3
    awk -v name="$1" '$1 == name { print $2 }' <&3
    exec 3<&-
}

for _ in $(seq 100); do
    [[ -s "$data/admin.key" ]] && metric process_resident_memory_bytes >/dev/null 2>&1 && break
    sleep 0.1
done

loadgen=(target/release/examples/loadgen --addr "http://$GRPC" --metrics "http://$METRICS"
    --key-file "$data/admin.key" --scenario "$SCENARIO" --concurrency "$CONCURRENCY")

echo "== measuring peak for $SCENARIO"
peak=$("${loadgen[@]}" --duration 10s | tee /dev/stderr |
    awk '/^RESULT/ { for (i = 1; i <= NF; i++) if ($i ~ /^rps=/) { sub("rps=", "", $i); print $i } }')
rate=$(awk -v p="$peak" -v l="$LOAD" 'BEGIN { printf "%d", p * l }')
echo "== soaking at $rate req/s ($LOAD of $peak) for $DURATION"

"${loadgen[@]}" --duration "$DURATION" --rate "$rate" >"$data/soak.out" 2>&1 &
lg=$!
samples=()
while kill -0 "$lg" 2>/dev/null; do
    sleep "$SAMPLE_EVERY"
    kill -0 "$lg" 2>/dev/null || break
    rss=$(metric process_resident_memory_bytes)
    samples+=("$rss")
    echo "  RSS $((rss / 1024)) KiB"
done
status=0
wait "$lg" || status=$?
cat "$data/soak.out"

errors=$(awk '/^RESULT/ { for (i = 1; i <= NF; i++) if ($i ~ /^errors=/) { sub("errors=", "", $i); print $i } }' "$data/soak.out")
fail=0
if [[ "$status" -ne 0 || "${errors:-x}" != "0" ]]; then
    echo "FAIL: loadgen exited $status with ${errors:-unknown} errors"
    fail=1
fi
if (( ${#samples[@]} < 2 )); then
    echo "FAIL: too few RSS samples (${#samples[@]})"
    fail=1
else
    first=${samples[0]}
    for s in "${samples[@]:1}"; do
        if ! awk -v a="$first" -v b="$s" 'BEGIN { d = (b - a) / a; exit !(d <= 0.10 && d >= -0.10) }'; then
            echo "FAIL: RSS moved from $first to $s bytes (more than 10 %)"
            fail=1
            break
        fi
    done
fi
(( fail == 0 )) && echo "PASS: zero errors, RSS within 10 % over ${#samples[@]} samples"
exit "$fail"
