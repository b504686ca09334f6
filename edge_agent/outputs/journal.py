"""Append-only JSONL journal of events in the state directory, rotated by size and age.

Written by its own thread so a slow SD card never stalls the frame loop; every line is
flushed as it is written and fsynced in batches and on close, so a power cut loses at most
the last batch.

Bounded, because a unit in a car runs for years on a small card: before a record would take
``events.jsonl`` past ``max_bytes`` the file is fsynced and renamed ``events.jsonl.1`` (older
rotations shift up: ``.1`` is always the newest, ``.keep`` the oldest kept), and a fresh file,
created beforehand as ``events.jsonl.new``, takes its name.  Rotation happens only between
records, so a JSON line is never split across files; a record larger than ``max_bytes`` on its
own goes whole into a fresh file.  Rotated files beyond ``keep``, or not written for
``max_age_days``, are deleted (at start, at each rotation and hourly).  A rename keeps a file's
mtime, so its age is the age of its newest record.

A rotation that fails (a read-only directory, a full disk) is logged once, as one line, and the
journal goes on appending to the file it has; it is tried again after ``rotate_retry_s``.  An
unbounded file is better than a lost event or a dead writer thread.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
import time
from pathlib import Path

import structlog

from edge_agent.config import JournalConfig
from edge_agent.outputs.alerts import event_json
from sleepsafe.protocol import Event

log = structlog.get_logger(__name__)


class _Flush:
    """A marker in the queue: set once every record queued before it is written and fsynced."""

    def __init__(self) -> None:
        self.done = threading.Event()


class EventLog:
    def __init__(
        self,
        path: Path,
        config: JournalConfig | None = None,
        fsync_every: int = 16,
        rotate_retry_s: float = 60.0,
        prune_interval_s: float = 3600.0,
    ) -> None:
        """``rotate_retry_s``: after a failed rotation, how long to append to the current file before
        trying again (a permanent failure must not cost a rename per record); ``prune_interval_s``:
        how often old rotated files are looked for while no rotation happens."""
        self.path = path
        self.config = config or JournalConfig()  # type: ignore[call-arg]
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = path.open("ab")
        self._size = os.fstat(self._fh.fileno()).st_size
        self._q: queue.Queue[Event | _Flush | None] = queue.Queue()
        self._fsync_every = fsync_every
        self._rotate_retry_s = rotate_retry_s
        self._prune_interval_s = prune_interval_s
        self._retry_at = 0.0  # monotonic time before which no rotation is tried again
        self._rotate_failing = False  # a failure was logged and no rotation has worked since
        self.written = 0
        self.failed = 0
        self.rotations = 0
        self.rotate_failures = 0
        self._prune()
        self._thread = threading.Thread(target=self._run, name="eventlog", daemon=True)
        self._thread.start()

    def append(self, event: Event) -> None:
        self._q.put(event)

    def rotated(self) -> list[Path]:
        """The rotated files that exist, newest first (``events.jsonl.1``, ``.2``, ...)."""
        found = []
        for p in self.path.parent.glob(self.path.name + ".*"):
            suffix = p.name[len(self.path.name) + 1 :]
            if suffix.isdigit() and int(suffix) >= 1:
                found.append((int(suffix), p))
        return [p for _, p in sorted(found)]

    def _rotated_path(self, n: int) -> Path:
        return self.path.with_name(f"{self.path.name}.{n}")

    def _run(self) -> None:
        pending = 0  # records written since the last fsync
        next_prune = time.monotonic() + self._prune_interval_s
        while True:
            now = time.monotonic()
            if now >= next_prune:
                self._prune()
                next_prune = now + self._prune_interval_s
            try:
                item = self._q.get(timeout=next_prune - now)
            except queue.Empty:
                continue
            if item is None:
                break
            try:
                if isinstance(item, _Flush):
                    self._fh.flush()
                    os.fsync(self._fh.fileno())
                    pending = 0
                    continue
                line = (event_json(item) + "\n").encode("utf-8")
                if (
                    self._size
                    and self._size + len(line) > self.config.max_bytes
                    and time.monotonic() >= self._retry_at
                ):
                    # fsync first: whatever happens to the rename, the records are on disk.
                    self._fh.flush()
                    os.fsync(self._fh.fileno())
                    pending = 0
                    self._rotate()
                self._fh.write(line)
                self._fh.flush()
                self._size += len(line)
                self.written += 1
                pending += 1
                if pending >= self._fsync_every or self._q.empty():
                    os.fsync(self._fh.fileno())
                    pending = 0
            except OSError as err:
                self.failed += 1
                log.error("eventlog_write_failed", path=str(self.path), error=str(err))
            finally:
                if isinstance(item, _Flush):
                    item.done.set()
        try:
            self._fh.flush()
            os.fsync(self._fh.fileno())
        finally:
            self._fh.close()

    def _rotate(self) -> None:
        """Shift the rotated files up, rename the current one to ``.1`` and put a fresh file in its
        place.  The fresh file is created first, so a failure to create it changes nothing; any
        failure leaves the current file open for appending: never raises."""
        fresh_path = self.path.with_name(self.path.name + ".new")  # not a rotation: no number
        try:
            if not self._at_its_name():
                # Our file is no longer events.jsonl (moved by an outside tool, or a rotation that
                # failed half-way): it already holds its records safely; just start a fresh one.
                fresh = self.path.open("ab")
            else:
                fresh = fresh_path.open("wb")  # a leftover from a crash is always empty
                try:
                    for p in reversed(self.rotated()):  # oldest first: no rename overwrites a file
                        n = int(p.name.rsplit(".", 1)[1])
                        if n >= self.config.keep:  # it would fall off the end (or keep was lowered)
                            p.unlink()
                        else:
                            os.replace(p, self._rotated_path(n + 1))
                    os.replace(self.path, self._rotated_path(1))
                    try:
                        os.replace(fresh_path, self.path)
                    except OSError:
                        # Put the current file back; if even that fails, it is found at .1 by the
                        # next attempt (see above) and nothing is lost.
                        os.replace(self._rotated_path(1), self.path)
                        raise
                except OSError:
                    fresh.close()
                    with contextlib.suppress(OSError):
                        fresh_path.unlink()
                    raise
        except OSError as err:
            self.rotate_failures += 1
            self._retry_at = time.monotonic() + self._rotate_retry_s
            if not self._rotate_failing:
                self._rotate_failing = True
                log.warning(
                    "eventlog_rotate_failed",
                    path=str(self.path),
                    error=str(err),
                    action="journaling continues in the current file; rotation retried later",
                )
            return
        self._fh.close()  # fsynced by the caller before the rotation
        self._fh = fresh
        self._size = 0
        self.rotations += 1
        self._fsync_dir()
        if self._rotate_failing:
            self._rotate_failing = False
            log.info("eventlog_rotate_recovered", path=str(self.path))
        self._prune()

    def _at_its_name(self) -> bool:
        """Whether ``events.jsonl`` is still the file this journal has open."""
        try:
            named = os.stat(self.path)
        except FileNotFoundError:
            return False
        held = os.fstat(self._fh.fileno())
        return (named.st_dev, named.st_ino) == (held.st_dev, held.st_ino)

    def _prune(self) -> None:
        """Delete rotated files beyond ``keep`` or older than ``max_age_days``; a file that cannot
        be deleted is logged and left (it is only disk)."""
        cutoff = time.time() - self.config.max_age_days * 86400
        for p in self.rotated():
            try:
                n = int(p.name.rsplit(".", 1)[1])
                if n > self.config.keep or p.stat().st_mtime < cutoff:
                    p.unlink()
                    log.info("eventlog_rotated_deleted", path=str(p))
            except FileNotFoundError:
                continue
            except OSError as err:
                log.warning("eventlog_prune_failed", path=str(p), error=str(err))

    def _fsync_dir(self) -> None:
        """Make the renames durable, so a power cut cannot bring back a file's old name; best
        effort (the records themselves are already fsynced)."""
        try:
            fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as err:
            log.warning("eventlog_dir_fsync_failed", path=str(self.path.parent), error=str(err))

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every record appended so far is written and fsynced; False on timeout."""
        marker = _Flush()
        self._q.put(marker)
        return marker.done.wait(timeout)

    def close(self, timeout: float = 10.0) -> None:
        """Write everything queued, fsync and close."""
        self._q.put(None)
        self._thread.join(timeout=timeout)
