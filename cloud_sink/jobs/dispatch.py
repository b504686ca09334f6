"""Scale-out through procrastinate (``jobs.engine = "procrastinate"``): each queued job is also
deferred as a procrastinate job on the sink's PostgreSQL, so workers on other machines (a GPU
box) are woken by procrastinate's LISTEN/NOTIFY and fetch through its queue, instead of polling
the jobs table.

The sink's ``jobs`` table stays the truth (state, attempts, heartbeats, progress, the SSE
stream); the procrastinate job only carries the id.  A worker takes the job with the same
conditional claim as every engine (so a job cancelled meanwhile, or taken by another attempt, is
skipped), and when a job is queued again (its worker lost, or handed back by a stopping one) it
is deferred again.  procrastinate has no visibility timeout: a long training is never handed to
a second worker while the first is alive.
"""

from __future__ import annotations

from typing import Any

import structlog

from ..config import SinkConfig
from ..store import Store
from .queue import JobQueue

log = structlog.get_logger(__name__)

TASK = "sleepsafe.run_job"
QUEUE = "sleepsafe-jobs"


def conninfo(database_url: str) -> str:
    """The libpq connection string of a SQLAlchemy PostgreSQL URL."""
    from sqlalchemy.engine import make_url

    url = make_url(database_url)
    if url.get_backend_name() != "postgresql":
        raise ValueError(f"jobs.engine procrastinate needs PostgreSQL, not {url.get_backend_name()}")
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def procrastinate_app(cfg: SinkConfig) -> Any:
    import procrastinate

    return procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=conninfo(cfg.database_url())))


class Dispatcher:
    """Defers a procrastinate job for each job id queued in the sink's table."""

    def __init__(self, cfg: SinkConfig) -> None:
        self.app = procrastinate_app(cfg)
        self.app.open()
        ensure_schema(self.app)

    def __call__(self, job_id: str) -> None:
        from procrastinate.exceptions import AlreadyEnqueued

        # The job's id as procrastinate's queueing lock: deferring a job that procrastinate still
        # holds unfetched (the worker's recovery re-defers jobs that look forgotten) is refused,
        # not queued twice.
        try:
            self.app.configure_task(name=TASK, queue=QUEUE, queueing_lock=job_id).defer(job_id=job_id)
        except AlreadyEnqueued:
            log.debug("job_already_dispatched", job=job_id)
            return
        log.info("job_dispatched", job=job_id, engine="procrastinate")

    def close(self) -> None:
        self.app.close()


def ensure_schema(app: Any) -> None:
    """procrastinate's tables, once (its schema script is not re-runnable)."""
    sync = app.connector.get_sync_connector()
    found = sync.execute_query_one("SELECT to_regclass('procrastinate_jobs') IS NOT NULL AS present")
    if not found["present"]:
        app.schema_manager.apply_schema()
        log.info("procrastinate_schema_applied")


def open_queue(cfg: SinkConfig, store: Store) -> JobQueue:
    """The job queue as the configured engine needs it: with procrastinate, every queued job is
    deferred there too."""
    if cfg.jobs.engine == "procrastinate":
        return JobQueue(store, dispatch=Dispatcher(cfg))
    return JobQueue(store)
