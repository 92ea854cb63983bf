#!/bin/sh
# Restore a backup made by backup.sh into a NEW, empty database, then prove
# it: `ledger_verify` recomputes every budget counter from the restored ledger
# and exits 1 on any drift (docs/RUNBOOK.md, "Restore").
#
#   createdb ep_restored    # on the target server
#   DATABASE_URL=postgres://.../ep_restored platform/scripts/restore.sh /backups/ep-2026-12-06.dump
#
# PYTHON: the project's interpreter (default: the checkout's .venv, else python3).
set -eu
if [ $# -ne 1 ] || [ -z "${DATABASE_URL:-}" ]; then
    echo "usage: DATABASE_URL=postgres://.../<new empty database> $0 <dump file>" >&2
    exit 2
fi
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
[ -x "$PYTHON" ] || PYTHON=python3
pg_restore --exit-on-error --no-owner --no-privileges --dbname "$DATABASE_URL" "$1"
cd "$ROOT"
if ! "$PYTHON" manage.py migrate --check >/dev/null; then
    echo "restored; the backup predates this code: run manage.py migrate, then manage.py ledger_verify" >&2
    exit 1
fi
"$PYTHON" manage.py ledger_verify
