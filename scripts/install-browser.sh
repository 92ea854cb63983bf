#!/bin/sh
# Installs Debian's chromium for the dashboard's browser tests, only when it
# is missing. Playwright drives it through executable_path; nothing else is
# downloaded (never `playwright install`). Idempotent and quiet.
set -eu
if [ -x /usr/bin/chromium ]; then
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null
test -x /usr/bin/chromium
