#!/bin/sh
# Back the platform's database up (the ledger, budgets, keys, routes: everything)
# into one file in pg_dump's custom format, consistent as of one moment while the
# gateways keep running.
#
#   DATABASE_URL=postgres://... platform/scripts/backup.sh /backups/ep-$(date +%F).dump
#
# Settlements still waiting in a host's ledger spool (EP_SPOOL_DIR) are not in
# the database yet: they are replayed by the gateways, and they are in the next
# backup (docs/RUNBOOK.md).
set -eu
if [ $# -ne 1 ] || [ -z "${DATABASE_URL:-}" ]; then
    echo "usage: DATABASE_URL=postgres://... $0 <dump file>" >&2
    exit 2
fi
pg_dump --format=custom --no-owner --no-privileges --file "$1" "$DATABASE_URL"
echo "backup written to $1"
