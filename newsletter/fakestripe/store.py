"""The fake's state: Stripe objects as JSON blobs in one SQLite table, with nested transactions under one lock."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS objects (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    seq INTEGER NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS objects_kind_seq ON objects (kind, seq);
CREATE TABLE IF NOT EXISTS idempotency (
    key TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    status INTEGER NOT NULL,
    body TEXT NOT NULL,
    request_id TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS deliveries (
    n INTEGER PRIMARY KEY AUTOINCREMENT,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
"""


class Store:
    """Objects keyed by Stripe id; every read and write happens under ``lock`` so threads never interleave."""

    def __init__(self, path: str) -> None:
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        # One connection shared by all threads: the only way ":memory:" keeps its data, and the
        # RLock below serialises every use of it.
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        if path != ":memory:":
            self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.executescript(_SCHEMA)
        self.lock = threading.RLock()
        self._depth = 0
        self._after_commit: list[Callable[[], None]] = []
        # When the latest transaction committed (monotonic clock): after-commit work can treat
        # everything one transaction did as happening at the same instant.
        self.committed_at = time.monotonic()

    def close(self) -> None:
        """Close the database connection."""
        with self.lock:
            self._conn.close()

    @contextmanager
    def tx(self) -> Iterator[None]:
        """Run a block atomically; nested blocks are savepoints that roll back on their own."""
        with self.lock:
            depth = self._depth
            pending_callbacks = len(self._after_commit)
            if depth == 0:
                self._conn.execute("BEGIN IMMEDIATE")
            else:
                self._conn.execute(f"SAVEPOINT sp{depth}")
            self._depth += 1
            try:
                yield
            except BaseException:
                self._depth -= 1
                if depth == 0:
                    self._conn.execute("ROLLBACK")
                else:
                    self._conn.execute(f"ROLLBACK TO sp{depth}")
                    self._conn.execute(f"RELEASE sp{depth}")
                del self._after_commit[pending_callbacks:]
                raise
            self._depth -= 1
            if depth > 0:
                self._conn.execute(f"RELEASE sp{depth}")
                return
            self._conn.execute("COMMIT")
            self.committed_at = time.monotonic()
            callbacks, self._after_commit = self._after_commit, []
            for callback in callbacks:
                callback()

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once the outermost transaction commits; drop it if it rolls back."""
        with self.lock:
            if self._depth == 0:
                self.committed_at = time.monotonic()
                callback()
            else:
                self._after_commit.append(callback)

    def get(self, object_id: str, kind: str | None = None) -> dict[str, Any] | None:
        """Return the object with this id (of this kind, if given), or None."""
        with self.lock:
            row = self._conn.execute("SELECT kind, body FROM objects WHERE id = ?", (object_id,)).fetchone()
        if row is None or (kind is not None and row[0] != kind):
            return None
        return json.loads(row[1])

    def put(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Insert or replace an object; new objects get the next position for list ordering."""
        body = json.dumps(obj)
        with self.tx():
            updated = self._conn.execute(
                "UPDATE objects SET body = ? WHERE id = ?", (body, obj["id"])
            ).rowcount
            if not updated:
                self._conn.execute(
                    "INSERT INTO objects (id, kind, seq, body) VALUES (?, ?, ?, ?)",
                    (obj["id"], obj["object"], self.next_counter("objects"), body),
                )
        return obj

    def all(self, kind: str) -> list[dict[str, Any]]:
        """Return every object of a kind, newest first (Stripe's list order)."""
        with self.lock:
            rows = self._conn.execute(
                "SELECT body FROM objects WHERE kind = ? ORDER BY seq DESC", (kind,)
            ).fetchall()
        return [json.loads(r[0]) for r in rows]

    def next_counter(self, name: str) -> int:
        """Return the next value of a named counter, starting at 1."""
        with self.tx():
            self._conn.execute(
                "INSERT INTO counters (name, value) VALUES (?, 1) "
                "ON CONFLICT (name) DO UPDATE SET value = value + 1",
                (name,),
            )
            return int(self._conn.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()[0])

    def idempotent_response(self, key: str) -> tuple[str, int, str, str] | None:
        """Return (fingerprint, status, body, request id) stored for an idempotency key."""
        with self.lock:
            row = self._conn.execute(
                "SELECT fingerprint, status, body, request_id FROM idempotency WHERE key = ?", (key,)
            ).fetchone()
        return None if row is None else (row[0], int(row[1]), row[2], row[3])

    def save_idempotent_response(self, key: str, fingerprint: str, status: int, body: str, request_id: str) -> None:
        """Remember the response to replay for a key."""
        with self.tx():
            self._conn.execute(
                "INSERT OR REPLACE INTO idempotency (key, fingerprint, status, body, request_id) "
                "VALUES (?, ?, ?, ?, ?)",
                (key, fingerprint, status, body, request_id),
            )

    def record_delivery(self, record: dict[str, Any]) -> None:
        """Append one webhook delivery attempt to the log."""
        with self.tx():
            self._conn.execute("INSERT INTO deliveries (body) VALUES (?)", (json.dumps(record),))

    def deliveries(self) -> list[dict[str, Any]]:
        """Return the webhook delivery log, oldest first."""
        with self.lock:
            rows = self._conn.execute("SELECT body FROM deliveries ORDER BY n").fetchall()
        return [json.loads(r[0]) for r in rows]

    def reset(self) -> None:
        """Forget every object, key, delivery and counter."""
        with self.tx():
            for statement in (
                "DELETE FROM objects",
                "DELETE FROM idempotency",
                "DELETE FROM deliveries",
                "DELETE FROM counters",
            ):
                self._conn.execute(statement)
