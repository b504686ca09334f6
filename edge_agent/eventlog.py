"""Append-only JSONL journal of events in the state directory.

Written by its own thread so a slow SD card never stalls the frame loop; every line is
flushed as it is written and fsynced in batches and on close, so a power cut loses at most
the last batch.  Unbounded on purpose: events are small, and losing one is worse than disk.
"""

from __future__ import annotations

import os
import queue
import threading
from pathlib import Path

import structlog

from .alerts import event_json
from .protocol import Event

log = structlog.get_logger(__name__)


class EventLog:
    def __init__(self, path: Path, fsync_every: int = 16) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = path.open("a", encoding="utf-8")
        self._q: queue.Queue[Event | None] = queue.Queue()
        self._fsync_every = fsync_every
        self.written = 0
        self.failed = 0
        self._thread = threading.Thread(target=self._run, name="eventlog", daemon=True)
        self._thread.start()

    def append(self, event: Event) -> None:
        self._q.put(event)

    def _run(self) -> None:
        pending = 0
        while True:
            event = self._q.get()
            if event is None:
                break
            try:
                self._fh.write(event_json(event) + "\n")
                self._fh.flush()
                self.written += 1
                pending += 1
                if pending >= self._fsync_every or self._q.empty():
                    os.fsync(self._fh.fileno())
                    pending = 0
            except OSError as err:
                self.failed += 1
                log.error("eventlog_write_failed", path=str(self.path), error=str(err))
        try:
            self._fh.flush()
            os.fsync(self._fh.fileno())
        finally:
            self._fh.close()

    def close(self, timeout: float = 10.0) -> None:
        """Write everything queued, fsync and close."""
        self._q.put(None)
        self._thread.join(timeout=timeout)
