#!/bin/sh
# Installs Debian's HAProxy for the multi-instance tests (tests/config/test_scale_out.py)
# and for hosts that run platform/haproxy.cfg, only when it is missing. Idempotent and
# quiet. Debian's package also installs a haproxy.service that starts its own
# /etc/haproxy/haproxy.cfg; the tests run the binary with the project's config only.
set -eu
if [ -x /usr/sbin/haproxy ]; then
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends haproxy >/dev/null
test -x /usr/sbin/haproxy
