#!/usr/bin/env bash
# Starts an S3-compatible server (moto, from PyPI) on 127.0.0.1:${PHRASESWEEP_S3_PORT:-9000} with signature
# checking on, creates the bucket `phrasesweep`, and writes working credentials to $state/s3.env.
# Idempotent: a server that already answers is left alone.
set -euo pipefail
port="${PHRASESWEEP_S3_PORT:-9000}"
state="${PHRASESWEEP_STATE:-$HOME/.cache/phrasesweep/services}"
here="$(cd "$(dirname "$0")" && pwd)"
mkdir -p "$state"

py="$here/python.sh"
# moto 5.2.5: earlier 5.x reject signed listings whose prefix holds a '/' (SignatureDoesNotMatch).
if ! "$py" -c 'import moto, flask, boto3; assert moto.__version__ == "5.2.5"' >/dev/null 2>&1; then
  echo "installing moto[server] 5.2.5 with pip" >&2
  "$py" -m pip install -q 'moto[server]==5.2.5'
fi

if [ -f "$state/s3.env" ] && [ -f "$state/moto.pid" ] && kill -0 "$(cat "$state/moto.pid")" 2>/dev/null; then
  echo "s3: already running on 127.0.0.1:$port (credentials in $state/s3.env)"
  exit 0
fi
if "$py" -c "import socket; socket.create_connection(('127.0.0.1', $port), 1)" 2>/dev/null; then
  echo "error: port $port on 127.0.0.1 is taken by another process ($(ss -ltnpH "sport = :$port" 2>/dev/null | grep -o 'users:.*' || echo 'unknown'))," >&2
  echo "       not by phrasesweep's S3 server: stop it, or start ours on another port with PHRASESWEEP_S3_PORT" >&2
  exit 1
fi

# The first three requests (create the IAM user, its key and its policy) pass unauthenticated; every later
# request must carry a valid signature, so wrong credentials are refused as on a real S3.
INITIAL_NO_AUTH_ACTION_COUNT=3 setsid "$py" -m moto.server -H 127.0.0.1 -p "$port" >"$state/moto.log" 2>&1 &
echo $! > "$state/moto.pid"
for _ in $(seq 1 60); do
  "$py" -c "import socket; socket.create_connection(('127.0.0.1', $port), 1)" 2>/dev/null && break
  sleep 0.5
done
"$py" "$here/s3_bootstrap.py" "http://127.0.0.1:$port" > "$state/s3.env.tmp"
mv "$state/s3.env.tmp" "$state/s3.env"
echo "s3: started moto on 127.0.0.1:$port, bucket 'phrasesweep' (credentials in $state/s3.env)"
