#!/bin/sh
# Wait for Kafka Connect, then create or update the orders connector (idempotent PUT).
# Usage: CONNECT_URL=http://connect:8083 infra/debezium/register.sh [connector.json]
set -eu
CONNECT_URL="${CONNECT_URL:-http://localhost:8083}"
FILE="${1:-$(dirname "$0")/orders-connector.json}"
NAME=$(sed -n 's/^ *"name": *"\([^"]*\)".*/\1/p' "$FILE" | head -n 1)
# PUT /connectors/<name>/config takes the "config" object alone.
CONFIG=$(python3 -c 'import json,sys; print(json.dumps(json.load(open(sys.argv[1]))["config"]))' "$FILE")

tries=0
until curl -fsS "$CONNECT_URL/connectors" >/dev/null 2>&1; do
  tries=$((tries + 1))
  if [ "$tries" -ge 120 ]; then
    echo "register: Kafka Connect at $CONNECT_URL did not answer in 240 s" >&2
    exit 1
  fi
  sleep 2
done

curl -fsS -X PUT -H 'Content-Type: application/json' \
  --data "$CONFIG" "$CONNECT_URL/connectors/$NAME/config" >/dev/null
echo "register: connector $NAME configured at $CONNECT_URL"
curl -fsS "$CONNECT_URL/connectors/$NAME/status" || true
echo
