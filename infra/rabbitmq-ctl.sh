#!/usr/bin/env bash
# rabbitmqctl against phrasesweep's node (as infra/rabbitmq-start.sh started it): the chaos suite and
# the reliability tests use it to close connections and restart the node.
set -euo pipefail
exec runuser -u rabbitmq -- env HOME=/var/lib/rabbitmq RABBITMQ_NODENAME=phrasesweep@localhost ERL_EPMD_ADDRESS=127.0.0.1 \
  /usr/lib/rabbitmq/bin/rabbitmqctl "$@"
