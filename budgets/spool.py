"""The ledger's spool: settlements the database could not take, kept on local
disk until it can.

When the ledger writer cannot commit a request's settlement (the database is
down), the provider has already been paid and the client is about to get its
answer: the Usage row must not be lost. The writer appends it here instead,
and the caller resumes only after the line is on disk (written, then fsynced),
exactly as it would have after the database's commit. `budgets/recovery.py`
replays the spool into the ledger when the database is back.

Layout: one append-only file per process in EP_SPOOL_DIR,
`ledger-<pid>-<token>.spool`, one JSON line per settlement (the Usage row's
fields and the ids of the budgets it settles). One file per process rather
than one shared file: a process spooling every request while the database is
down never waits for another process's lock or fsync, and a line torn by a
crash mid-write can only be the last line of the dead process's own file
(replay sets such a line aside and logs it).

Replay claims a file by renaming it (`.replaying`) under its lock, so the
owner's next append starts a new file, and holds that lock while replaying,
so two replayers never take the same file; a replayer that dies leaves the
file to the next one. Replaying twice is harmless: a request id already in
the ledger is skipped (recovery.py).

Bound: EP_SPOOL_MAX_ROWS rows across the directory. While the spool holds that
many, the gateway admits no new request (503 `ledger_unavailable`, nothing it
could record is started), and further refusals' rows (nothing was spent) are
dropped with an error log. Settlements of requests that reached a provider are
still appended past the bound: they were paid for, and there are at most as
many as requests were in flight when it filled.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path

from django.conf import settings

from budgets.models import Usage

log = logging.getLogger("budgets.spool")

PENDING, REPLAYING, REJECTED = ".spool", ".replaying", ".rejected"
FORMAT = 1


class SpoolFull(Exception):
    """The spool holds EP_SPOOL_MAX_ROWS rows: this row was not kept."""


@dataclass(frozen=True, slots=True)
class Entry:
    """One spooled settlement: the row to insert and the budgets it settles."""

    row: Usage
    budget_ids: tuple[int, ...]
    line: bytes  # as stored, for setting it aside if it cannot be replayed


# -- the lines ------------------------------------------------------------------------


def _fields() -> list:
    return [f for f in Usage._meta.concrete_fields if not f.primary_key]


def _plain(value):
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def encode(row: Usage, budget_ids: list[int]) -> bytes:
    fields = {f.attname: _plain(getattr(row, f.attname)) for f in _fields()}
    return json.dumps({"v": FORMAT, "row": fields, "budgets": budget_ids}, separators=(",", ":")).encode() + b"\n"


def decode(line: bytes) -> Entry:
    """The entry of one line; raises ValueError for a line that is not one (torn, foreign)."""
    data = json.loads(line)
    if not isinstance(data, dict) or data.get("v") != FORMAT or not isinstance(data.get("row"), dict):
        raise ValueError("not a spooled settlement")
    stored = data["row"]
    values = {f.attname: f.to_python(stored[f.attname]) for f in _fields() if f.attname in stored}
    return Entry(Usage(**values), tuple(int(i) for i in data.get("budgets") or ()), line)


# -- where -------------------------------------------------------------------------------


def directory() -> Path:
    return Path(settings.EP_SPOOL_DIR)


def _fsync_directory() -> None:
    # A new or renamed file survives a crash only once its directory entry is on disk.
    fd = os.open(directory(), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _inode(path: Path) -> int | None:
    try:
        return path.stat().st_ino
    except FileNotFoundError:
        return None


# -- appending (the ledger writer's thread) ------------------------------------------------


class _ProcessFile:
    """This process's spool file, opened on first use (again after a fork, or
    after a replayer claimed it)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._path: Path | None = None
        self._pid = 0

    def _open(self) -> int:
        if self._fd is not None and self._pid == os.getpid() and self._path.parent == directory():
            return self._fd
        self._close()
        directory().mkdir(parents=True, exist_ok=True)
        self._pid = os.getpid()
        self._path = directory() / f"ledger-{self._pid}-{secrets.token_hex(4)}{PENDING}"
        self._fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        _fsync_directory()
        return self._fd

    def _close(self) -> None:
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)
        self._fd = None

    def append(self, data: bytes) -> None:
        """Write `data` (whole lines) durably, or raise OSError.

        Never waits for a lock: the file's lock is only ever held by a replayer
        claiming it (or replaying it, after the rename), which waits for the
        ledger writer, this caller's thread. A locked or renamed file is no
        longer ours: the lines go to a new one."""
        with self._lock:
            for _ in range(5):
                fd = self._open()
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    self._close()
                    continue
                try:
                    if os.fstat(fd).st_ino == _inode(self._path):  # still ours, not claimed by a replayer
                        view = memoryview(data)
                        while view:
                            view = view[os.write(fd, view):]
                        os.fsync(fd)
                        return
                finally:
                    fcntl.flock(fd, fcntl.LOCK_UN)
                self._close()  # claimed: the next append starts a new file
            raise OSError("the spool file kept being claimed while appending")


_file = _ProcessFile()


def append(entries: list[tuple[Usage, list[int]]]) -> list[Usage]:
    """Keep these settlements on disk; returns the rows kept. Past the bound,
    rows of requests that never reached a provider are dropped (module docstring)."""
    depth = depth_rows()
    kept = []
    for row, budget_ids in entries:
        if depth + len(kept) >= settings.EP_SPOOL_MAX_ROWS and not row.attempts:
            log.error("ledger spool full (%d rows): refusal row %s not recorded", depth + len(kept), row.request_id)
            continue
        kept.append((row, budget_ids))
    if kept:
        _file.append(b"".join(encode(row, ids) for row, ids in kept))
        _counted.full = depth + len(kept) >= settings.EP_SPOOL_MAX_ROWS
    return [row for row, _ in kept]


# -- depth ---------------------------------------------------------------------------------


class _Counted:
    """Rows in the spool across every process's files, counted incrementally: a
    file's bytes are read once (appends only grow a file; a claimed file is a
    new name), so /health, /metrics and admission can ask often."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # name -> (inode, bytes read, rows, when its first row was made)
        self._seen: dict[str, tuple[int, int, int, float | None]] = {}
        self.full = False  # admission reads this flag: no file system on the request path

    def scan(self) -> dict:
        with self._lock:
            seen, pending, rejected, oldest = {}, 0, 0, None
            for path in _spool_files((PENDING, REPLAYING, REJECTED)):
                try:
                    stat = path.stat()
                    inode, read, rows, first = self._seen.get(path.name, (stat.st_ino, 0, 0, None))
                    if inode != stat.st_ino or stat.st_size < read:
                        read, rows, first = 0, 0, None
                    if stat.st_size > read:
                        with path.open("rb") as handle:
                            handle.seek(read)
                            chunk = handle.read(stat.st_size - read)
                        first = first if read else _made_at(chunk)
                        rows += chunk.count(b"\n")
                        read += len(chunk)
                except FileNotFoundError:
                    continue  # claimed or finished while we looked
                seen[path.name] = (stat.st_ino, read, rows, first)
                if path.suffix == REJECTED:
                    rejected += rows
                elif rows:
                    pending += rows
                    made = first or stat.st_mtime
                    oldest = made if oldest is None else min(oldest, made)
            self._seen = seen
            self.full = pending >= settings.EP_SPOOL_MAX_ROWS
            return {"rows": pending, "rejected_rows": rejected, "max_rows": settings.EP_SPOOL_MAX_ROWS,
                    "full": self.full, "oldest_age_seconds": round(time.time() - oldest, 1) if oldest else 0.0}


def _made_at(chunk: bytes) -> float | None:
    """When the first row of a file was made (its created_at), for the spool's age."""
    try:
        return decode(chunk.split(b"\n", 1)[0]).row.created_at.timestamp()
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


_counted = _Counted()


def _spool_files(suffixes: tuple[str, ...]) -> list[Path]:
    try:
        return sorted(p for p in directory().iterdir() if p.suffix in suffixes and p.name.startswith("ledger-"))
    except FileNotFoundError:
        return []


def stats() -> dict:
    """rows waiting, rows set aside (rejected), the bound, whether it is reached,
    and the age of the oldest waiting row: for /health and /metrics."""
    return _counted.scan()


def depth_rows() -> int:
    return _counted.scan()["rows"]


def is_full() -> bool:
    """Whether the spool held EP_SPOOL_MAX_ROWS rows when last counted (an
    append or a sweep): cheap, for admission."""
    return _counted.full


# -- claiming and replaying (recovery.py) --------------------------------------------------------


def claimed() -> list[Path]:
    """Files already claimed and not finished: by a replay that met the database
    still down, or by a replayer that died (`replaying` skips those in use)."""
    return _spool_files((REPLAYING,))


def claim() -> list[Path]:
    """Take the waiting files for replay: each non-empty `.spool` is renamed
    `.replaying` under its lock, so its owner's next append opens a new file."""
    taken = []
    for path in _spool_files((PENDING,)):
        with _locked(path) as fd:
            if fd is None or os.fstat(fd).st_size == 0:
                continue
            target = path.with_name(f"{path.stem}.{os.getpid()}-{secrets.token_hex(2)}{REPLAYING}")
            os.rename(path, target)
            _fsync_directory()
            taken.append(target)
    return taken


@contextlib.contextmanager
def _locked(path: Path, *, wait: bool = False) -> Iterator[int | None]:
    """An exclusive lock on `path`, or None if another process holds it (or it moved)."""
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        yield None
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield None
            return
        yield fd if os.fstat(fd).st_ino == _inode(path) else None
    finally:
        os.close(fd)  # releases the lock


@contextlib.contextmanager
def replaying(path: Path) -> Iterator[list[bytes] | None]:
    """The lines of a claimed file, held for this replayer (None if another has it)."""
    with _locked(path) as fd:
        if fd is None:
            yield None
            return
        with open(fd, "rb", closefd=False) as handle:
            yield handle.read().splitlines()


def finish(path: Path) -> None:
    """A claimed file fully replayed: gone."""
    path.unlink(missing_ok=True)
    _fsync_directory()


def reject(lines: list[bytes], reason: str) -> None:
    """Set lines aside that cannot be replayed (torn, or refused by the database):
    kept for an operator, out of the depth, never retried."""
    if not lines:
        return
    directory().mkdir(parents=True, exist_ok=True)
    path = directory() / f"ledger-{os.getpid()}{REJECTED}"
    with open(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600), "ab") as handle:
        handle.write(b"".join(line.rstrip(b"\n") + b"\n" for line in lines))
        handle.flush()
        os.fsync(handle.fileno())
    log.error("ledger spool: %d line(s) set aside in %s (%s)", len(lines), path.name, reason)
