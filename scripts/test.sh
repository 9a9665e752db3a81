#!/usr/bin/env bash
# Run the whole voicecare test suite on a fresh Debian/Ubuntu machine.
#
# Prepares what it needs (system packages, build, speech model), then runs
# every test of every crate against a real PostgreSQL: the server named by
# DATABASE_URL if set, otherwise a private throwaway cluster per test binary.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/prepare.sh debug
cargo test --locked --workspace --no-fail-fast "$@"
