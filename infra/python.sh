#!/usr/bin/env bash
# The Python of phrasesweep's scripts: a virtualenv under the cache folder, made on first use. Debian's
# system Python refuses `pip install` (PEP 668), so nothing is installed into it; the virtualenv still
# sees the system's packages. Usage: infra/python.sh [python args...]
set -euo pipefail
venv="${PHRASESWEEP_CACHE:-$HOME/.cache/phrasesweep}/venv"
if [ ! -x "$venv/bin/python3" ] || ! "$venv/bin/python3" -m pip --version >/dev/null 2>&1; then
  rm -rf "$venv"
  if ! python3 -m venv --system-site-packages "$venv" >/dev/null 2>&1; then
    echo "python: installing python3-venv with apt-get" >&2
    sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq python3-venv >/dev/null || {
      $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq python3-venv >/dev/null; }
    rm -rf "$venv"
    python3 -m venv --system-site-packages "$venv"
  fi
fi
exec "$venv/bin/python3" "$@"
