#!/usr/bin/env bash
# Install a headless Chromium for the report's browser test (tests marked `browser`).
# Debian's `chromium` package via apt-get, only when no Chromium is on PATH yet. Never fails the
# caller: without root, apt-get or a reachable mirror it says why and exits 0, and the browser test
# is then skipped with its reason.
set -u

for name in chromium chromium-browser google-chrome google-chrome-stable; do
    if command -v "$name" >/dev/null 2>&1; then
        exit 0
    fi
done

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-browser: no apt-get here; install Chromium yourself to run the browser tests" >&2
    exit 0
fi

SUDO=""
if [ "$(id -u)" != "0" ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true >/dev/null 2>&1; then
        SUDO="sudo -n"
    else
        echo "install-browser: not root and no password-less sudo; browser tests will be skipped" >&2
        exit 0
    fi
fi

echo "install-browser: installing chromium with apt-get (once)" >&2
export DEBIAN_FRONTEND=noninteractive
if ! $SUDO apt-get update -qq >/dev/null 2>&1; then
    echo "install-browser: apt-get update failed; browser tests will be skipped" >&2
    exit 0
fi
if ! $SUDO apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null 2>&1; then
    echo "install-browser: apt-get install chromium failed; browser tests will be skipped" >&2
    exit 0
fi
echo "install-browser: chromium installed" >&2
exit 0
