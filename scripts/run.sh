#!/usr/bin/env bash
# Run voicecare on a fresh Debian/Ubuntu machine: prepare everything, then run
# the demo: a cohort of simulated elders is called by the real engine on a
# fresh embedded PostgreSQL under .voicecare/demo (or DATABASE_URL when set),
# with a summary and a report in .voicecare/demo-report/; the operator API and
# console keep serving afterwards so you can look around (Ctrl-C to stop).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/prepare.sh release
bin=target/release/voicecare
# Progress lines and the summary, not every call's log (set RUST_LOG=info for those).
export RUST_LOG="${RUST_LOG:-warn,rtc=error,rtc_ice=error,rtc_dtls=error}"

exec "$bin" demo --keep-running \
    --listen "127.0.0.1:${VOICECARE_PORT:-8080}" \
    --report .voicecare/demo-report \
    "$@"
