"""The built-in tools, one module per theme; importing this package registers
them all with tools.servers.builtin. Each is safe by default: read-only, or
scoped to the caller's team and run, or off until an operator turns it on (exec)."""

from tools.builtin import (  # noqa: F401 - imported to register
    arithmetic,
    commands,
    documents,
    ledger,
    notes,
    personas,
    text,
    web,
)
