#!/usr/bin/env bash
# `make bench-farm`: the demo sweep (configs/demo.toml) embedded on local disk, then on the farm
# (RabbitMQ + the S3 server of `make services`, three worker processes), on this machine. Prints the wall
# time of each and of their retrieve stages (scan + retrieve jobs), and the ratio farm / embedded.
set -euo pipefail
cd "$(dirname "$0")/.."
state="${PHRASESWEEP_STATE:-$HOME/.cache/phrasesweep/services}"
set -a; . "$state/s3.env"; set +a
amqp="${PHRASESWEEP_TEST_AMQP:-amqp://guest:guest@127.0.0.1:5672/%2f}"
cargo build -q --bin phrasesweep
bin="${CARGO_TARGET_DIR:-target}/debug/phrasesweep"
work="$(mktemp -d)"
tag="bench-farm-$(date +%s)"
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; rm -rf "$work"' EXIT
mkdir -p "$work/configs"
shared="$(cd ../shared && pwd)"
# The demo config, its relative paths made absolute, with another store (and broker), without its reader
# (from `[train]` to `[embedded]`): the farm's retrieval is what is compared.
noread='/^\[train\]/,/^\[embedded\]/{/^\[embedded\]/!d}'
sed -e "$noread" -e "s|^uri = .*|uri = \"$work/embedded\"|" -e "s|\"../../shared|\"$shared|" configs/demo.toml > "$work/configs/embedded.toml"
sed -e "$noread" -e "s|^uri = .*|uri = \"s3://phrasesweep/$tag\"|" -e "s|\"../../shared|\"$shared|" configs/demo.toml > "$work/configs/farm.toml"
printf '\n[broker]\nurl = "%s"\nqueue = "%s.jobs"\n' "$amqp" "$tag" >> "$work/configs/farm.toml"

# Seconds from the first "planned stage stage=scan" to "committed stage stage=retrieve" of a log.
retrieve_seconds() {
  python3 - "$1" <<'PY'
import re, sys
from datetime import datetime
t = lambda l: datetime.fromisoformat(re.match(r"\S+", l).group(0).replace("Z", "+00:00")).timestamp()
lines = [re.sub(r"\x1b\[[0-9;]*m", "", l) for l in open(sys.argv[1])]
start = next(t(l) for l in lines if "planned stage" in l and "stage=scan" in l)
end = next(t(l) for l in lines if "committed stage" in l and "stage=retrieve" in l)
print(f"{end - start:.1f}")
PY
}

start=$(date +%s.%N)
"$bin" run "$work/configs/embedded.toml" > "$work/embedded.out" 2> "$work/embedded.log" || { tail -20 "$work/embedded.log"; exit 1; }
embedded=$(python3 -c "print($(date +%s.%N) - $start)")
for w in 1 2 3; do
  "$bin" worker --broker "$amqp" --queue "$tag.jobs" --name "bench-w$w" --serves cpu,gpu > "$work/w$w.log" 2>&1 &
  pids+=($!)
done
start=$(date +%s.%N)
"$bin" coordinator "$work/configs/farm.toml" > "$work/farm.out" 2> "$work/farm.log" || { tail -20 "$work/farm.log"; exit 1; }
farm=$(python3 -c "print($(date +%s.%N) - $start)")
er=$(retrieve_seconds "$work/embedded.log")
fr=$(retrieve_seconds "$work/farm.log")
printf '\n%-34s %10s %10s %8s\n' "demo sweep (configs/demo.toml)" embedded farm ratio
printf '%-34s %10.1f %10.1f %8.2f\n' "whole sweep, s" "$embedded" "$farm" "$(python3 -c "print($farm / $embedded)")"
printf '%-34s %10.1f %10.1f %8.2f\n' "scan + retrieve stages, s" "$er" "$fr" "$(python3 -c "print($fr / $er)")"
echo "(farm: RabbitMQ + S3 on 127.0.0.1, 3 workers; embedded: local disk, $(grep -A1 '^\[embedded\]' configs/demo.toml | tail -1))"
# BENCH_FARM_LOGS=DIR keeps the coordinators' and workers' logs, to see where the farm's time goes.
if [ -n "${BENCH_FARM_LOGS:-}" ]; then mkdir -p "$BENCH_FARM_LOGS"; cp "$work"/*.log "$BENCH_FARM_LOGS"/; fi
