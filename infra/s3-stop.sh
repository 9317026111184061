#!/usr/bin/env bash
# Stops the S3 server that s3-start.sh started. Idempotent.
set -uo pipefail
state="${PHRASESWEEP_STATE:-$HOME/.cache/phrasesweep/services}"
if [ -f "$state/moto.pid" ] && kill "$(cat "$state/moto.pid")" 2>/dev/null; then
  echo "s3: stopped"
else
  echo "s3: not running"
fi
rm -f "$state/moto.pid" "$state/s3.env"
