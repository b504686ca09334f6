"""`sleepsafe-sink run`: ingest + HTTP API in one process, stopped cleanly by SIGTERM/SIGINT.

On a signal the API stops accepting requests, the ingest commits and acknowledges what it has
received and disconnects; anything not yet acknowledged stays queued on the broker for this
sink's persistent session.
"""

from __future__ import annotations

import contextlib
import gc
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import structlog

from sleepsafe.exitcodes import Exit
from sleepsafe.sdnotify import Notifier

from .config import SinkConfig
from .ingest import Ingest
from .store import Store, one_line

log = structlog.get_logger(__name__)

# Every event allocates hundreds of containers (its window's columns, the model, the row), so
# the cyclic collector's default (a young collection every 700 allocations, a full one every
# 100 of those) spent about a tenth of ingest re-scanning the long-lived heap the imports built.
# That heap is frozen once at start (never scanned again) and young collections run less often;
# a batch's garbage has no cycles and is freed by reference counting anyway.
GC_THRESHOLDS = (20_000, 50, 100)


def _tune_gc() -> None:
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def serve(cfg: SinkConfig, store: Store, *, on_ready: Any = None) -> int:
    stop = threading.Event()
    notify = Notifier()
    ingest = Ingest(cfg, store)
    worker = None
    if cfg.jobs.worker:
        from .jobs.embedded import EmbeddedWorker

        worker = EmbeddedWorker(cfg, store)
    server: Any = None
    if cfg.api.enabled:
        import uvicorn

        from .api import create_app

        app = create_app(cfg, store, ingest, worker=worker)

        class _Server(uvicorn.Server):
            # Signals are ours: the ingest must flush before the process ends.
            @contextlib.contextmanager
            def capture_signals(self) -> Iterator[None]:
                yield

        server = _Server(
            uvicorn.Config(app, host=cfg.api.host, port=cfg.api.port, log_config=None, access_log=False)
        )

    def _on_signal(signum: int, _frame: Any) -> None:
        log.info("sink_stopping", signal=signal.Signals(signum).name)
        stop.set()
        if server is not None:
            server.should_exit = True

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _on_signal)

    fatal: list[str] = []

    def _on_fatal(reason: str) -> None:
        # The writer died: stop everything and exit non-zero, so systemd restarts the sink.
        fatal.append(reason)
        stop.set()
        if server is not None:
            server.should_exit = True

    ingest.on_fatal = _on_fatal
    _tune_gc()
    ingest.start()
    if notify.watchdog_s:
        threading.Thread(
            target=_watchdog_loop, args=(ingest, notify, stop), name="sink-watchdog", daemon=True
        ).start()
    ticker = threading.Thread(target=_stats_loop, args=(cfg, ingest, stop), name="sink-stats", daemon=True)
    ticker.start()
    pruner = start_pruner(cfg, store, stop)
    if worker is not None:
        worker.start()
    try:
        if server is not None:
            import asyncio

            async def _main() -> None:
                task = asyncio.create_task(server.serve())
                while not server.started and not task.done():
                    await asyncio.sleep(0.05)
                if server.started:
                    port = server.servers[0].sockets[0].getsockname()[1]
                    log.info("sink_api_listening", host=cfg.api.host, port=port)
                    notify.ready(f"api on {cfg.api.host}:{port}")
                    if on_ready:
                        on_ready(port)
                await task

            asyncio.run(_main())
            if not stop.is_set() and not server.started:
                return Exit.OSERR  # the port could not be bound (logged by uvicorn)
        else:
            notify.ready("ingest running")
            if on_ready:
                on_ready(None)
            stop.wait()
    finally:
        notify.stopping()
        stop.set()  # also when the API ended on its own: the background threads end too
        if pruner is not None:
            pruner.join(timeout=30)  # at most the batch it is in: prune checks stop between batches
        if worker is not None:
            worker.stop(timeout=15)  # its running job goes back to the queue, for the next start
        ingest.stop()
        store.close()
        log.info("sink_stopped", committed=ingest.committed, totals=dict(ingest.totals))
    if fatal:
        log.critical("sink_exiting", reason=fatal[0], exit_code=70)
        return Exit.SOFTWARE
    return 0


def _watchdog_loop(ingest: Ingest, notify: Notifier, stop: threading.Event) -> None:
    """WATCHDOG=1 only while the writer loop turns (it wakes every second, idle or not): a dead
    or stuck writer stops the pings and systemd restarts the sink. A database that is down does
    not: the writer is then retrying, which a restart would not help."""
    interval = (notify.watchdog_s or 2.0) / 2
    while not stop.wait(interval):
        if ingest.writer_turning():
            notify.watchdog()


def _stats_loop(cfg: SinkConfig, ingest: Ingest, stop: threading.Event) -> None:
    while not stop.wait(cfg.stats_interval_s):
        log.info(
            "sink_stats",
            connected=ingest.connected.is_set(),
            committed=ingest.committed,
            queue=ingest.queue_depth,
            totals=dict(ingest.totals),
        )


def start_pruner(cfg: SinkConfig, store: Store, stop: threading.Event) -> threading.Thread | None:
    """The retention thread (daemon): prunes at start and then every store.prune_interval_s
    until ``stop``.  None when every table is kept forever, so there is nothing to run."""
    if not any(cfg.store.retain_days.model_dump().values()):
        log.info("sink_pruner_off", reason="store.retain_days keeps every table forever")
        return None

    def _loop() -> None:
        # At start too: a sink restarted more often than the interval would otherwise never prune.
        while not stop.is_set():
            prune_once(cfg, store, stop)
            if stop.wait(cfg.store.prune_interval_s):
                break

    t = threading.Thread(target=_loop, name="sink-pruner", daemon=True)
    t.start()
    return t


def prune_once(cfg: SinkConfig, store: Store, stop: threading.Event | None = None) -> dict[str, int] | None:
    """One retention run, logged as one line.  A failure (database down, locked too long) is
    logged as one line and returns None: retention is housekeeping and must never stop the
    sink from storing what arrives; the next run catches up."""
    started = time.monotonic()
    try:
        deleted = store.prune(retain=cfg.store.retain_days, batch=cfg.store.prune_batch, stop=stop)
    except Exception as err:  # noqa: BLE001 - housekeeping must never stop the sink
        log.error("sink_prune_failed", error=one_line(err))
        return None
    log.info(
        "sink_pruned",
        deleted=deleted,
        total=sum(deleted.values()),
        seconds=round(time.monotonic() - started, 3),
    )
    return deleted
