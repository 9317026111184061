#!/usr/bin/env bash
# Starts a RabbitMQ node for phrasesweep on 127.0.0.1:${PHRASESWEEP_AMQP_PORT:-5672} (loopback only).
# Idempotent: a node that already answers is left alone. Installs Debian's rabbitmq-server if absent.
set -euo pipefail
port="${PHRASESWEEP_AMQP_PORT:-5672}"
node="phrasesweep@localhost"
base=/var/lib/rabbitmq/phrasesweep
here="$(cd "$(dirname "$0")" && pwd)"

if ! command -v rabbitmq-server >/dev/null 2>&1; then
  echo "rabbitmq-server is not installed: installing Debian's package with apt-get" >&2
  if [ "$(id -u)" != 0 ]; then
    echo "error: installing rabbitmq-server needs root (run: sudo apt-get install rabbitmq-server)" >&2
    exit 1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rabbitmq-server >/dev/null || {
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rabbitmq-server >/dev/null; }
fi

ctl() {
  runuser -u rabbitmq -- env HOME=/var/lib/rabbitmq RABBITMQ_NODENAME="$node" ERL_EPMD_ADDRESS=127.0.0.1 \
    /usr/lib/rabbitmq/bin/rabbitmqctl "$@"
}

if ctl -q status >/dev/null 2>&1; then
  echo "rabbitmq: already running as $node on 127.0.0.1:$port"
  exit 0
fi

# Something else on the port (another RabbitMQ, any server) would make the node fail to start after a
# long wait: say so at once.
if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
  echo "error: port $port on 127.0.0.1 is taken by another process ($(ss -ltnpH "sport = :$port" 2>/dev/null | grep -o 'users:.*' || echo 'unknown')," >&2
  echo "       not by phrasesweep's RabbitMQ node: stop it, or start ours on another port with PHRASESWEEP_AMQP_PORT" >&2
  exit 1
fi

install -d -o rabbitmq -g rabbitmq "$base" "$base/log"
sed "s/@PORT@/$port/" "$here/rabbitmq/rabbitmq.conf" > "$base/rabbitmq.conf"
chown rabbitmq:rabbitmq "$base/rabbitmq.conf"

# From a folder that outlives the caller: a node started from a test's folder, since removed, cannot
# run shell commands (rabbitmqctl status then fails with `enoent`).
cd "$base"
runuser -u rabbitmq -- env HOME=/var/lib/rabbitmq \
  RABBITMQ_NODENAME="$node" \
  RABBITMQ_CONFIG_FILE="$base/rabbitmq.conf" \
  RABBITMQ_MNESIA_BASE="$base/mnesia" \
  RABBITMQ_LOG_BASE="$base/log" \
  RABBITMQ_ENABLED_PLUGINS_FILE="$base/enabled_plugins" \
  RABBITMQ_ENABLED_PLUGINS="" \
  ERL_EPMD_ADDRESS=127.0.0.1 \
  RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}" \
  /usr/lib/rabbitmq/bin/rabbitmq-server -detached

# `await_startup` fails at once while the node has not yet registered with epmd, so poll it.
deadline=$((SECONDS + 120))
until ctl -q await_startup >/dev/null 2>&1; do
  if [ "$SECONDS" -ge "$deadline" ]; then
    echo "error: RabbitMQ did not start within 120 s; see $base/log" >&2
    exit 1
  fi
  sleep 1
done
echo "rabbitmq: started $node on 127.0.0.1:$port (logs in $base/log)"
