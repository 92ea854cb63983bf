"""CSV exports of the ledger that are safe to open in a spreadsheet.

Run ids, model names, persona, key and team names are chosen by callers or
operators, and a cell that starts with `=`, `+`, `-` or `@` (or a tab or a
carriage return, which some spreadsheets skip before reading a formula) is
run as a formula when the file is opened: `=HYPERLINK(...)` can send the
sheet's data elsewhere, DDE formulas can start programs. Every CSV this
service writes goes through `csv_writer`, which neutralises such a cell as
OWASP describes (https://owasp.org/www-community/attacks/CSV_Injection):
a single quote before it, so the spreadsheet shows the text as text. The
csv module quotes cells holding separators or quotes.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from typing import Any, Protocol

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


class _Writable(Protocol):
    def write(self, text: str, /) -> Any: ...


def csv_cell(value: Any) -> Any:
    """`value`, with a leading single quote if a spreadsheet would read it as a formula."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


class SafeCsvWriter:
    """csv.writer whose every text cell has been through `csv_cell`."""

    def __init__(self, out: _Writable) -> None:
        self._writer = csv.writer(out)

    def writerow(self, row: Iterable[Any]) -> Any:
        """Writes the row; returns what `out.write` returned (a streamed
        response's generator yields that: see `Lines`)."""
        return self._writer.writerow([csv_cell(value) for value in row])


class Lines:
    """An `out` whose write hands the line back instead of keeping it: a CSV
    written row by row into a StreamingHttpResponse."""

    def write(self, text: str) -> str:
        return text


def csv_writer(out: _Writable) -> SafeCsvWriter:
    return SafeCsvWriter(out)
