#!/usr/bin/env bash
# Stops the RabbitMQ node that rabbitmq-start.sh started. Idempotent.
set -uo pipefail
node="phrasesweep@localhost"
if ! command -v rabbitmqctl >/dev/null 2>&1; then exit 0; fi
if runuser -u rabbitmq -- env HOME=/var/lib/rabbitmq RABBITMQ_NODENAME="$node" ERL_EPMD_ADDRESS=127.0.0.1 \
     /usr/lib/rabbitmq/bin/rabbitmqctl -q stop >/dev/null 2>&1; then
  echo "rabbitmq: stopped $node"
else
  echo "rabbitmq: not running"
fi
