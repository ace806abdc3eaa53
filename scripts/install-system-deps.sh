#!/usr/bin/env bash
# Install the system packages the test suite needs (idempotent; skips what is already present).
#   espeak-ng: synthesises the speech used by the voice-activity tests (tests/test_vad.py) and the
#              server's text-to-speech.
#   chromium:  the headless browser of the web-client test (tests/test_browser.py, driven by Playwright
#              with this executable; Playwright's own browser download is never used).
set -euo pipefail

missing=()
command -v espeak-ng >/dev/null 2>&1 || missing+=(espeak-ng)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)

if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-system-deps: please install ${missing[*]} with your package manager" >&2
    exit 1
fi

sudo=()
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        sudo=(sudo)
    else
        echo "install-system-deps: need root (or sudo) to install ${missing[*]}" >&2
        exit 1
    fi
fi

echo "install-system-deps: installing ${missing[*]}" >&2
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
