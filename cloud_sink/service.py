"""`sleepsafe-sink run`: ingest + HTTP API in one process, stopped cleanly by SIGTERM/SIGINT.

On a signal the API stops accepting requests, the ingest commits and acknowledges what it has
received and disconnects; anything not yet acknowledged stays queued on the broker for this
sink's persistent session.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

import structlog

from edge_agent.sdnotify import Notifier

from .config import SinkConfig
from .ingest import Ingest
from .store import Store

log = structlog.get_logger(__name__)


def serve(cfg: SinkConfig, store: Store, *, on_ready: Any = None) -> int:
    stop = threading.Event()
    notify = Notifier()
    ingest = Ingest(cfg, store)
    server: Any = None
    if cfg.api.enabled:
        import uvicorn

        from .api import create_app

        app = create_app(cfg, store, ingest)

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

    ingest.start()
    ticker = threading.Thread(target=_stats_loop, args=(cfg, ingest, stop), name="sink-stats", daemon=True)
    ticker.start()
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
                return 71  # EX_OSERR: the port could not be bound (logged by uvicorn)
        else:
            notify.ready("ingest running")
            if on_ready:
                on_ready(None)
            stop.wait()
    finally:
        notify.stopping()
        ingest.stop()
        store.close()
        log.info("sink_stopped", committed=ingest.committed, totals=dict(ingest.totals))
    return 0


def _stats_loop(cfg: SinkConfig, ingest: Ingest, stop: threading.Event) -> None:
    while not stop.wait(cfg.stats_interval_s):
        log.info(
            "sink_stats",
            connected=ingest.connected.is_set(),
            committed=ingest.committed,
            queue=ingest.queue_depth,
            totals=dict(ingest.totals),
        )
