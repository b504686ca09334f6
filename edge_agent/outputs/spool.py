"""Durable, bounded on-disk queue for outgoing MQTT messages (SQLite in WAL mode).

Every QoS 1 message is written here first and deleted only when the broker acknowledges it
(PUBACK).  Broker down, network gone, daemon killed with SIGKILL, power cut: what was committed
here is delivered later, in order (rows leave by ascending id).  The queue is bounded; when it is
full, periodic telemetry is evicted before events, the oldest first, and every eviction is
counted and reported in stats.

With end-to-end receipts, a PUBACK does not delete the row: it records when the broker took it
(``sent``) and the row waits, out of the publishing order, for the sink's receipt of its ``key``;
``requeue`` puts rows whose receipt is overdue back in line.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    kind    TEXT    NOT NULL,   -- 'event' or 'telemetry'
    topic   TEXT    NOT NULL,
    payload BLOB    NOT NULL,
    created REAL    NOT NULL,
    key     TEXT,               -- the sink's idempotency key (receipts)
    sent    REAL                -- broker PUBACK time, while awaiting the sink's receipt
);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""
EVICTION_ORDER = ("telemetry", "event")


@dataclass(frozen=True, slots=True)
class Row:
    id: int
    kind: str
    topic: str
    payload: bytes


class SpoolError(RuntimeError):
    pass


class Spool:
    """Thread-safe; one connection guarded by a lock (SQLite serialises writers anyway)."""

    def __init__(self, path: Path, max_rows: int = 100_000, max_bytes: int = 256 * 1024 * 1024) -> None:
        self.path = path
        self.max_rows = max_rows
        self.max_bytes = max_bytes
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL: a commit survives a process crash; a power cut may lose the last
            # transactions but never corrupts the file.
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            cols = {r[1] for r in self._db.execute("PRAGMA table_info(outbox)")}
            for col, decl in (("key", "TEXT"), ("sent", "REAL")):  # spools written by 0.1.0
                if col not in cols:
                    self._db.execute(f"ALTER TABLE outbox ADD COLUMN {col} {decl}")
            self._db.execute("CREATE INDEX IF NOT EXISTS outbox_key ON outbox(key)")
        except sqlite3.DatabaseError as err:
            raise SpoolError(f"spool {path}: {err}") from None
        self._lock = threading.Lock()
        self._rows, self._bytes = self._db.execute(
            "SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) FROM outbox"
        ).fetchone()

    def put_many(
        self, items: Sequence[tuple[str, str, bytes] | tuple[str, str, bytes, str | None]]
    ) -> list[int]:
        """Append ``(kind, topic, payload[, key])`` rows in one transaction; evict to stay in
        bounds."""
        ids = []
        now = time.time()
        with self._lock:
            # Counted locally and published at COMMIT: depth() reads without the lock, and must
            # never see a half-done batch (rows in, evictions not yet made).
            rows, size = self._rows, self._bytes
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for item in items:
                    kind, topic, payload = item[0], item[1], item[2]
                    key = item[3] if len(item) > 3 else None
                    cur = self._db.execute(
                        "INSERT INTO outbox (kind, topic, payload, created, key) VALUES (?, ?, ?, ?, ?)",
                        (kind, topic, payload, now, key),
                    )
                    ids.append(int(cur.lastrowid or 0))
                    rows += 1
                    size += len(payload)
                rows, size = self._evict(rows, size)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                self._rows, self._bytes = self._db.execute(
                    "SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) FROM outbox"
                ).fetchone()
                raise
            self._rows, self._bytes = rows, size
        return ids

    def put(self, kind: str, topic: str, payload: bytes) -> int:
        return self.put_many([(kind, topic, payload)])[0]

    def _evict(self, rows: int, size: int) -> tuple[int, int]:
        """Delete the oldest rows, telemetry first, until ``rows``/``size`` are in bounds;
        returns them after the deletions (inside the caller's transaction)."""
        for kind in EVICTION_ORDER:
            while rows > self.max_rows or size > self.max_bytes:
                row = self._db.execute(
                    "SELECT id, LENGTH(payload) FROM outbox WHERE kind = ? ORDER BY id LIMIT 1", (kind,)
                ).fetchone()
                if row is None:
                    break
                self._db.execute("DELETE FROM outbox WHERE id = ?", (row[0],))
                rows -= 1
                size -= int(row[1])
                self._db.execute(
                    "INSERT INTO counters (name, value) VALUES (?, 1) "
                    "ON CONFLICT(name) DO UPDATE SET value = value + 1",
                    (f"evicted_{kind}",),
                )
        return rows, size

    def peek(self, limit: int, after_id: int = 0) -> list[Row]:
        """The oldest rows with id > ``after_id`` not awaiting a receipt, in order."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, kind, topic, payload FROM outbox "
                "WHERE id > ? AND sent IS NULL ORDER BY id LIMIT ?",
                (after_id, limit),
            ).fetchall()
        return [Row(int(r[0]), str(r[1]), str(r[2]), bytes(r[3])) for r in rows]

    def ack(self, row_id: int) -> None:
        """The broker has it: delete the row."""
        with self._lock:
            cur = self._db.execute("DELETE FROM outbox WHERE id = ? RETURNING LENGTH(payload)", (row_id,))
            got = cur.fetchone()
            if got is not None:
                self._rows -= 1
                self._bytes -= int(got[0])

    def mark_sent(self, row_id: int) -> bool:
        """The broker has it, the sink may not yet: keep the row until its receipt.  False if
        the row has no key (nothing will ever receipt it): the caller acks it instead."""
        with self._lock:
            cur = self._db.execute(
                "UPDATE outbox SET sent = ? WHERE id = ? AND key IS NOT NULL", (time.time(), row_id)
            )
        return cur.rowcount > 0

    def receipt(self, keys: list[str]) -> int:
        """The sink has committed these: delete their rows.  Returns how many were deleted."""
        n = 0
        with self._lock:
            for i in range(0, len(keys), 500):
                part = keys[i : i + 500]
                marks = ",".join("?" * len(part))
                for (size,) in self._db.execute(
                    f"DELETE FROM outbox WHERE key IN ({marks}) RETURNING LENGTH(payload)", part
                ).fetchall():
                    n += 1
                    self._rows -= 1
                    self._bytes -= int(size)
        return n

    def requeue(self, older_than_s: float) -> int:
        """Rows the broker took more than ``older_than_s`` ago with no receipt since: back in
        line to be sent again (the sink stores idempotently).  Returns how many."""
        with self._lock:
            cur = self._db.execute(
                "UPDATE outbox SET sent = NULL WHERE sent IS NOT NULL AND sent < ?",
                (time.time() - older_than_s,),
            )
        return int(cur.rowcount)

    def awaiting_receipt(self) -> int:
        with self._lock:
            (n,) = self._db.execute("SELECT COUNT(*) FROM outbox WHERE sent IS NOT NULL").fetchone()
        return int(n)

    def depth(self) -> int:
        return int(self._rows)

    def evicted(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT name, value FROM counters WHERE name LIKE 'evicted_%'").fetchall()
        out = {k: 0 for k in EVICTION_ORDER}
        out.update({str(n).removeprefix("evicted_"): int(v) for n, v in rows})
        return out

    def next_seq(self, name: str = "session_seq") -> int:
        """A persistent counter (the status birth/death sequence number)."""
        with self._lock:
            self._db.execute(
                "INSERT INTO counters (name, value) VALUES (?, 1) "
                "ON CONFLICT(name) DO UPDATE SET value = value + 1",
                (name,),
            )
            (value,) = self._db.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()
        return int(value)

    def close(self) -> None:
        with self._lock:
            self._db.close()
