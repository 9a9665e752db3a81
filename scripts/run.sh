#!/usr/bin/env bash
# Run voicecare on a fresh Debian/Ubuntu machine: prepare everything, enrol a
# small sample city if the database is empty, and serve the operator API on
# the embedded PostgreSQL (or DATABASE_URL when set).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/prepare.sh release
bin=target/release/voicecare
export VOICECARE_DATA_DIR="${VOICECARE_DATA_DIR:-$PWD/.voicecare}"

if [ ! -f "$VOICECARE_DATA_DIR/.sample-enrolled" ]; then
    "$bin" units add "Riverside/North District/Elm Street/Elm Court"
    "$bin" units add "Riverside/North District/Oak Street/Oak Court"
    "$bin" elders import --create-units --skip-invalid tests/data/elders-sample.csv || true
    VOICECARE_OPERATOR_PASSWORD="voicecare-demo" "$bin" operator add \
        --username supervisor --name "Demo Supervisor" --role supervisor --unit Riverside || true
    VOICECARE_OPERATOR_PASSWORD="voicecare-demo" "$bin" operator add \
        --username operator --name "Demo Operator" --role operator --unit "Riverside/North District/Elm Street" || true
    mkdir -p "$VOICECARE_DATA_DIR" && touch "$VOICECARE_DATA_DIR/.sample-enrolled"
fi

echo
echo "  Operator API: http://127.0.0.1:${VOICECARE_PORT:-8080}/api/openapi.json"
echo "  Log in as 'supervisor' or 'operator' with password 'voicecare-demo'."
echo
exec "$bin" serve --listen "127.0.0.1:${VOICECARE_PORT:-8080}"
