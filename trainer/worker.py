"""`sleepsafe-worker`: claims queued jobs from the sink's database and runs them.

The sink starts one as a child process (``jobs.worker``, the default), so nothing else needs
starting; more run on other machines (a GPU box) against the same PostgreSQL.  While a job runs,
a heartbeat thread keeps its claim fresh and picks up a cancel; the job's code calls
:meth:`JobContext.check` between steps, so a cancel or a stopping worker takes effect within a
training step.  A worker that is stopped (SIGTERM) hands its job back to the queue unstarted
(``release``), so a restarted sink resumes it; one that dies is found by its stale heartbeat and
its job is queued once more, then failed (``jobs.max_attempts``).  No queue timeout ever takes
a long job away from a live worker: only a missing heartbeat does.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import structlog

from cloud_sink.config import SinkConfig
from cloud_sink.jobs.queue import Claim, JobQueue, LostClaim, worker_name
from cloud_sink.store import Store, one_line

log = structlog.get_logger(__name__)

# Progress rows at most this often (a training step may take milliseconds).
PROGRESS_EVERY_S = 0.5


class JobCancelled(Exception):
    """The job was cancelled (DELETE /jobs/{id})."""


class WorkerStopping(Exception):
    """The worker is stopping: the job goes back to the queue."""


class JobFailed(Exception):
    """The job cannot be done, for a reason its message gives in one line."""


class JobContext:
    """What a running job sees: its claim, progress reporting, and the stop checks."""

    def __init__(self, queue: JobQueue, claim: Claim, cfg: SinkConfig, stopping: threading.Event) -> None:
        self.queue = queue
        self.claim = claim
        self.cfg = cfg
        self.stopping = stopping
        self.cancelled = threading.Event()
        self.lost = threading.Event()
        self._last_progress = 0.0
        self._done = threading.Event()
        self._beat = threading.Thread(target=self._heartbeat, name="job-heartbeat", daemon=True)
        self._beat.start()

    @property
    def job_id(self) -> str:
        return self.claim.job_id

    def _heartbeat(self) -> None:
        while not self._done.wait(self.cfg.jobs.heartbeat_s):
            try:
                if self.queue.heartbeat(self.claim):
                    self.cancelled.set()
            except LostClaim:
                self.lost.set()
                return
            except Exception as err:  # noqa: BLE001 - a database blip: the next beat tries again
                log.warning("job_heartbeat_failed", job=self.job_id, error=one_line(err))

    def check(self) -> None:
        """Raise if the job must stop now: cancelled, claim lost, or the worker stopping."""
        if self.cancelled.is_set():
            raise JobCancelled(f"job {self.job_id} cancelled")
        if self.lost.is_set():
            raise LostClaim(f"job {self.job_id}: this worker's claim was given up")
        if self.stopping.is_set():
            raise WorkerStopping(f"job {self.job_id}: worker stopping")

    def confirm(self) -> None:
        """Like check, but asking the database now rather than trusting the last heartbeat:
        before a step that others see (registering a version, moving an alias), so a worker
        given up for lost a moment ago does not publish what its successor will publish too."""
        self.check()
        if self.queue.heartbeat(self.claim):  # LostClaim when the claim is no longer current
            self.cancelled.set()
            raise JobCancelled(f"job {self.job_id} cancelled")

    def stage(self, name: str, **data: Any) -> None:
        self.check()
        self.queue.progress(self.claim, "stage", {"stage": name, **data})
        log.info("job_stage", job=self.job_id, stage=name)

    def progress(self, stage: str, done: int, total: int, **data: Any) -> None:
        """Throttled: at most every PROGRESS_EVERY_S, and always the last step."""
        self.check()
        now = time.monotonic()
        if done < total and now - self._last_progress < PROGRESS_EVERY_S:
            return
        self._last_progress = now
        self.queue.progress(
            self.claim,
            "progress",
            {"stage": stage, "done": done, "total": total, "fraction": round(done / total, 4), **data},
        )

    def event(self, kind: str, **data: Any) -> None:
        self.queue.progress(self.claim, kind, data)

    def close(self) -> None:
        self._done.set()
        self._beat.join(timeout=5)


Runner = Callable[[JobContext, SinkConfig, Store], dict[str, Any]]


def runners() -> dict[str, Runner]:
    from .retrain import run_retrain

    return {"retrain": run_retrain}


def execute(queue: JobQueue, claim: Claim, cfg: SinkConfig, store: Store, stopping: threading.Event) -> str:
    """Run one claimed job to its end; returns the state it ended in."""
    ctx = JobContext(queue, claim, cfg, stopping)
    try:
        kind = queue.get(claim.job_id)["kind"]
        result = runners()[kind](ctx, cfg, store)
        return "succeeded" if queue.finish(claim, "succeeded", result=result) else "lost"
    except JobCancelled:
        return "cancelled" if _ended(lambda: queue.finish(claim, "cancelled"), claim) else "lost"
    except WorkerStopping:
        ok = _ended(
            lambda: queue.release(claim, "worker stopped; the job starts again on the next worker"), claim
        )
        return "released" if ok else "lost"
    except LostClaim as err:
        log.warning("job_claim_lost", job=claim.job_id, error=str(err))
        return "lost"
    except Exception as err:  # noqa: BLE001 - whatever a job does, it ends failed with the reason
        reason = str(err) if isinstance(err, JobFailed) else f"{type(err).__name__}: {one_line(err)}"
        log.error("job_failed", job=claim.job_id, error=reason)
        return "failed" if _ended(lambda: queue.finish(claim, "failed", error=reason), claim) else "lost"
    finally:
        ctx.close()


def _ended(write: Callable[[], object], claim: Claim) -> bool:
    """Record how a job ended; False when the database cannot take it (the job's heartbeat then
    goes stale and recovery decides, as for a worker that died)."""
    try:
        return write() is not False  # finish says False when the claim was no longer current
    except Exception as err:  # noqa: BLE001 - whatever the database says, the worker goes on
        log.error("job_finish_failed", job=claim.job_id, error=one_line(err))
        return False


def run_worker(cfg: SinkConfig, store: Store, stopping: threading.Event, *, once: bool = False) -> int:
    """Claim and run jobs until ``stopping`` is set (``once``: until the queue is empty)."""
    queue = JobQueue(store)
    name = worker_name()
    log.info("worker_started", worker=name, database=store.safe_url)
    while not stopping.is_set():
        try:
            queue.recover_stale(cfg.jobs.stale_after_s, cfg.jobs.max_attempts)
            claim = queue.claim(name)
        except Exception as err:  # noqa: BLE001 - the database is down: wait and try again
            log.warning("worker_poll_failed", error=one_line(err))
            stopping.wait(cfg.jobs.poll_s * 5)
            continue
        if claim is None:
            if once:
                break
            stopping.wait(cfg.jobs.poll_s)
            continue
        try:
            execute(queue, claim, cfg, store, stopping)
        except Exception as err:  # noqa: BLE001 - one job's end must not stop the worker
            log.error("worker_job_crashed", job=claim.job_id, error=one_line(err))
    log.info("worker_stopped", worker=name)
    return 0


def _watch_parent(parent_pid: int, stopping: threading.Event) -> None:
    """An embedded worker outlives no sink: when its parent is gone (killed, even with SIGKILL,
    which sends no signal on), it stops as if told to, handing its job back."""
    while not stopping.wait(1.0):
        if os.getppid() != parent_pid:
            log.warning("worker_parent_gone", parent=parent_pid)
            stopping.set()


def worker_main(cfg: SinkConfig, *, once: bool = False, parent_pid: int | None = None) -> int:
    """The worker process: SIGTERM/SIGINT stop it after handing its job back."""
    stopping = threading.Event()
    if parent_pid is not None:
        threading.Thread(
            target=_watch_parent, args=(parent_pid, stopping), name="parent", daemon=True
        ).start()

    def _stop(signum: int, _frame: Any) -> None:
        log.info("worker_stopping", signal=signal.Signals(signum).name)
        stopping.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _stop)
    store = Store(cfg.database_url())
    try:
        if cfg.jobs.engine == "procrastinate":
            return run_procrastinate_worker(cfg, store, stopping, once=once)
        return run_worker(cfg, store, stopping, once=once)
    finally:
        store.close()


def run_procrastinate_worker(
    cfg: SinkConfig, store: Store, stopping: threading.Event, *, once: bool = False
) -> int:
    """The same jobs, found through procrastinate: its worker is woken by LISTEN/NOTIFY when a job
    is deferred and runs our task, which claims the job in the sink's table and executes it as
    the polling worker would.  Lost workers' jobs are still found by their stale heartbeats (a
    thread here) and deferred again.  ``once``: until procrastinate's queue is empty."""
    import asyncio

    from procrastinate.worker import Worker

    from cloud_sink.jobs.dispatch import QUEUE, TASK, Dispatcher

    dispatcher = Dispatcher(cfg)
    queue = JobQueue(store, dispatch=dispatcher)
    name = worker_name()
    app = dispatcher.app

    @app.task(name=TASK, queue=QUEUE)  # type: ignore[untyped-decorator]
    def run_job(job_id: str) -> None:
        claim = queue.claim_id(job_id, name)
        if claim is None:
            log.info(
                "job_skipped", job=job_id, why="no longer queued (cancelled, or taken by another attempt)"
            )
            return
        execute(queue, claim, cfg, store, stopping)

    def recover() -> None:
        while not stopping.wait(cfg.jobs.poll_s * 5):
            try:
                queue.recover_stale(cfg.jobs.stale_after_s, cfg.jobs.max_attempts)
                queue.redispatch_queued(cfg.jobs.stale_after_s)
            except Exception as err:  # noqa: BLE001 - the database is down: the next round retries
                log.warning("worker_recover_failed", error=one_line(err))

    threading.Thread(target=recover, name="recover", daemon=True).start()
    queue.recover_stale(cfg.jobs.stale_after_s, cfg.jobs.max_attempts)

    async def main() -> None:
        async with app.open_async():
            worker = Worker(
                app=app,
                queues=[QUEUE],
                name=name,
                concurrency=1,
                wait=not once,
                install_signal_handlers=False,
            )
            run = asyncio.create_task(worker.run())  # type: ignore[no-untyped-call]
            while not run.done():
                if stopping.is_set():
                    worker.stop()  # type: ignore[no-untyped-call]  # the running job hands itself back
                await asyncio.wait({run}, timeout=0.2)
            await run

    log.info("worker_started", worker=name, database=store.safe_url, engine="procrastinate")
    try:
        asyncio.run(main())
    finally:
        stopping.set()
        dispatcher.close()
    log.info("worker_stopped", worker=name)
    return 0
