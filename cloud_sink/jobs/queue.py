"""The jobs table as a queue every engine shares: submit, claim, heartbeat, progress, finish.

A claim is one conditional UPDATE (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, where workers on
several machines race for the same row), and it returns the attempt number it made: a finish or
a progress record is accepted only from the claim that is current, so a worker that was given up
for lost (its heartbeat went stale and the job was queued again) cannot overwrite the work of the
one that took over.  Progress rows are the server-sent events of ``GET /jobs/{id}/events``.

Every transaction that adds a job's event first locks the job's row (an UPDATE, or ``SELECT ...
FOR UPDATE``): on PostgreSQL two transactions could otherwise take event ids 10 and 11 and commit
11 first, and a client reading the stream at that moment would move past 10 for good.  With the
lock, a job's events commit in the order of their ids.  Heartbeats and the staleness test use the
database's clock on PostgreSQL, so workers on machines whose clocks disagree with the sink's are
neither given up early nor kept late.
"""

from __future__ import annotations

import json
import os
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import structlog
from sqlalchemy import DateTime, and_, func, insert, select, update

from ..schema import job_events, jobs
from ..store import Store, now_utc, one_line

log = structlog.get_logger(__name__)

KINDS = ("retrain",)
MODELS = ("temporal", "eye-state")
State = Literal["queued", "running", "succeeded", "failed", "cancelled"]
FINAL: tuple[State, ...] = ("succeeded", "failed", "cancelled")


PARAMS = {"steps", "epochs", "seed", "since", "labels", "fleet_only", "held_out_share"}


def check_params(model: str, params: dict[str, Any]) -> dict[str, Any]:
    """The job's parameters, checked before it is queued (a ValueError names the bad one)."""
    unknown = sorted(set(params) - PARAMS)
    if unknown:
        raise ValueError(f"unknown parameter {', '.join(unknown)} (known: {', '.join(sorted(PARAMS))})")
    for key in ("steps", "epochs", "seed"):
        v = params.get(key)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or not 0 < v <= 100_000):
            raise ValueError(f"{key} must be an integer in 1..100000")
    if "epochs" in params and model != "eye-state":
        raise ValueError("epochs is for the eye-state model; the temporal model takes steps")
    if "steps" in params and model != "temporal":
        raise ValueError("steps is for the temporal model; the eye-state model takes epochs")
    labels = params.get("labels")
    if labels is not None:
        from ..labels import EVENT_LABELS

        if not isinstance(labels, list) or not labels or any(x not in EVENT_LABELS for x in labels):
            raise ValueError(f"labels must be a list of {', '.join(EVENT_LABELS)}")
    if params.get("since") is not None:
        from datetime import datetime

        try:
            datetime.fromisoformat(str(params["since"]))
        except ValueError:
            raise ValueError("since must be an ISO 8601 time") from None
    share = params.get("held_out_share")
    if share is not None and (
        isinstance(share, bool) or not isinstance(share, int | float) or not 0 <= share <= 1
    ):
        raise ValueError("held_out_share must be a number in 0..1")
    if not isinstance(params.get("fleet_only", False), bool):
        raise ValueError("fleet_only must be true or false")
    return params


def worker_name(pid: int | None = None) -> str:
    """How a worker names itself in the jobs it claims: host and process id."""
    return f"{socket.gethostname()}:{os.getpid() if pid is None else pid}"[:64]


class UnknownJob(LookupError):
    """No job with this id."""


class LostClaim(RuntimeError):
    """This worker's claim on the job is no longer the current one (it was given up for lost,
    cancelled, or finished by another)."""


@dataclass(frozen=True, slots=True)
class Claim:
    job_id: str
    attempt: int
    worker: str
    model: str
    params: dict[str, Any]


def _iso(dt: datetime | None) -> str | None:
    return None if dt is None else dt.isoformat() + "Z"


def _job_out(r: Any) -> dict[str, Any]:
    return {
        "id": r.id,
        "kind": r.kind,
        "model": r.model,
        "params": json.loads(r.params),
        "state": r.state,
        "attempts": r.attempts,
        "cancel_requested": bool(r.cancel_requested),
        "requested_by": r.requested_by,
        "worker": r.worker,
        "created_at": _iso(r.created_at),
        "started_at": _iso(r.started_at),
        "heartbeat_at": _iso(r.heartbeat_at),
        "finished_at": _iso(r.finished_at),
        "result": json.loads(r.result) if r.result else None,
        "error": r.error,
    }


def _clock(engine: Any) -> Any:
    """Now, in UTC without a zone as the columns hold it: the database's clock on PostgreSQL
    (shared by every machine), this machine's with SQLite (which only one machine opens)."""
    if engine.dialect.name == "postgresql":
        return func.timezone("UTC", func.clock_timestamp(), type_=DateTime)
    return now_utc()


class JobQueue:
    """``dispatch``: called with the id of every job that becomes queued (submitted, or queued
    again), after its row is committed: the procrastinate engine defers it (jobs/dispatch.py)."""

    def __init__(self, store: Store, dispatch: Callable[[str], None] | None = None) -> None:
        self.store = store
        self.engine = store.engine
        self.dispatch = dispatch

    def _dispatch(self, job_id: str) -> None:
        if self.dispatch is None:
            return
        try:
            self.dispatch(job_id)
        except Exception as err:  # noqa: BLE001 - the row is queued; a polling worker still finds it
            log.error("job_dispatch_failed", job=job_id, error=one_line(err))

    # ------------------------------------------------------------------ the API's side
    def submit(self, kind: str, model: str, params: dict[str, Any], requested_by: str) -> dict[str, Any]:
        if kind not in KINDS:
            raise ValueError(f"unknown job kind {kind!r} (known: {', '.join(KINDS)})")
        if model not in MODELS:
            raise ValueError(f"unknown model {model!r} (known: {', '.join(MODELS)})")
        params = check_params(model, params)
        job_id = str(uuid.uuid4())
        now = now_utc()
        with self.engine.begin() as conn:
            conn.execute(
                insert(jobs).values(
                    id=job_id,
                    kind=kind,
                    model=model,
                    params=json.dumps(params, sort_keys=True),
                    state="queued",
                    attempts=0,
                    cancel_requested=False,
                    requested_by=requested_by[:64],
                    created_at=now,
                )
            )
            self._event(conn, job_id, "state", {"state": "queued"}, now)
        log.info("job_submitted", job=job_id, kind=kind, model=model)
        self._dispatch(job_id)
        return self.get(job_id)

    def get(self, job_id: str) -> dict[str, Any]:
        with self.engine.connect() as conn:
            r = conn.execute(select(jobs).where(jobs.c.id == job_id)).first()
        if r is None:
            raise UnknownJob(job_id)
        return _job_out(r)

    def recent(self, limit: int = 50, state: str | None = None) -> list[dict[str, Any]]:
        q = select(jobs).order_by(jobs.c.created_at.desc()).limit(limit)
        if state:
            q = q.where(jobs.c.state == state)
        with self.engine.connect() as conn:
            return [_job_out(r) for r in conn.execute(q)]

    def cancel(self, job_id: str) -> dict[str, Any]:
        """A queued job is cancelled at once; a running one at its worker's next heartbeat.  The
        row is locked while it is decided, so a worker claiming the job at the same moment
        either gets it (and then sees the cancel) or finds it cancelled."""
        now = now_utc()
        with self.engine.begin() as conn:
            r = conn.execute(select(jobs.c.state).where(jobs.c.id == job_id).with_for_update()).first()
            if r is None:
                raise UnknownJob(job_id)
            if r.state == "queued":
                n = conn.execute(
                    update(jobs)
                    .where(and_(jobs.c.id == job_id, jobs.c.state == "queued"))
                    .values(state="cancelled", cancel_requested=True, finished_at=now)
                ).rowcount
                if n:
                    self._event(conn, job_id, "state", {"state": "cancelled"}, now)
            elif r.state == "running":
                n = conn.execute(
                    update(jobs)
                    .where(and_(jobs.c.id == job_id, jobs.c.state == "running"))
                    .values(cancel_requested=True)
                ).rowcount
                if n:
                    self._event(conn, job_id, "log", {"message": "cancel requested"}, now)
        return self.get(job_id)

    def latest(self, job_id: str, kind: str) -> dict[str, Any] | None:
        """The job's newest event of this kind (its progress now, its stage), however long it ran."""
        q = (
            select(job_events.c.data)
            .where(and_(job_events.c.job_id == job_id, job_events.c.kind == kind))
            .order_by(job_events.c.id.desc())
            .limit(1)
        )
        with self.engine.connect() as conn:
            r = conn.execute(q).first()
        return None if r is None else dict(json.loads(r.data))

    def events(self, job_id: str, after: int = 0, limit: int = 500) -> list[dict[str, Any]]:
        q = (
            select(job_events)
            .where(and_(job_events.c.job_id == job_id, job_events.c.id > after))
            .order_by(job_events.c.id)
            .limit(limit)
        )
        with self.engine.connect() as conn:
            return [
                {
                    "id": r.id,
                    "job_id": job_id,
                    "time": _iso(r.time),
                    "kind": r.kind,
                    "data": json.loads(r.data),
                }
                for r in conn.execute(q)
            ]

    # ------------------------------------------------------------------ the worker's side
    def claim(self, worker: str) -> Claim | None:
        """Take the oldest queued job, or None."""
        pick = (
            select(jobs.c.id)
            .where(jobs.c.state == "queued")
            .order_by(jobs.c.created_at)
            .limit(1)
            .with_for_update(skip_locked=True)
            .scalar_subquery()
        )
        return self._claim(worker, pick)

    def claim_id(self, job_id: str, worker: str) -> Claim | None:
        """Take this job if it is still queued (not cancelled, not taken by another attempt)."""
        return self._claim(worker, job_id)

    def _claim(self, worker: str, pick: Any) -> Claim | None:
        now = now_utc()
        with self.engine.begin() as conn:
            r = conn.execute(
                update(jobs)
                .where(and_(jobs.c.id == pick, jobs.c.state == "queued"))
                .values(
                    state="running",
                    attempts=jobs.c.attempts + 1,
                    worker=worker[:64],
                    started_at=now,
                    heartbeat_at=_clock(self.engine),
                )
                .returning(jobs.c.id, jobs.c.attempts, jobs.c.model, jobs.c.params)
            ).first()
            if r is None:
                return None
            self._event(
                conn, r.id, "state", {"state": "running", "attempt": r.attempts, "worker": worker}, now
            )
        log.info("job_claimed", job=r.id, attempt=r.attempts, worker=worker)
        return Claim(r.id, r.attempts, worker, r.model, json.loads(r.params))

    def _current(self, claim: Claim) -> Any:
        return and_(jobs.c.id == claim.job_id, jobs.c.attempts == claim.attempt, jobs.c.state == "running")

    def heartbeat(self, claim: Claim) -> bool:
        """Keep the claim alive; True when the job has been asked to stop (cancelled), and
        LostClaim when the claim is no longer current."""
        with self.engine.begin() as conn:
            r = conn.execute(
                update(jobs)
                .where(self._current(claim))
                .values(heartbeat_at=_clock(self.engine))
                .returning(jobs.c.cancel_requested)
            ).first()
        if r is None:
            raise LostClaim(f"job {claim.job_id}: attempt {claim.attempt} is no longer current")
        return bool(r.cancel_requested)

    def progress(self, claim: Claim, kind: str, data: dict[str, Any]) -> None:
        with self.engine.begin() as conn:
            alive = conn.execute(select(jobs.c.id).where(self._current(claim)).with_for_update()).first()
            if alive is None:
                raise LostClaim(f"job {claim.job_id}: attempt {claim.attempt} is no longer current")
            self._event(conn, claim.job_id, kind, data, now_utc())

    def finish(
        self, claim: Claim, state: State, *, result: dict[str, Any] | None = None, error: str | None = None
    ) -> bool:
        """End the claimed job; False (and nothing written) when the claim is no longer current."""
        now = now_utc()
        with self.engine.begin() as conn:
            done = conn.execute(
                update(jobs)
                .where(self._current(claim))
                .values(
                    state=state,
                    finished_at=now,
                    result=None if result is None else json.dumps(result, sort_keys=True),
                    error=None if error is None else error[:2000],
                )
            ).rowcount
            if done:
                data: dict[str, Any] = {"state": state}
                if error:
                    data["error"] = error[:2000]
                self._event(conn, claim.job_id, "state", data, now)
        log.info("job_finished", job=claim.job_id, state=state, accepted=bool(done), error=error)
        return bool(done)

    def release(self, claim: Claim, reason: str) -> None:
        """Give the job back to the queue without counting the attempt (the worker is stopping);
        a job whose cancel was asked for meanwhile ends cancelled instead."""
        now = now_utc()
        with self.engine.begin() as conn:
            r = conn.execute(
                select(jobs.c.cancel_requested).where(self._current(claim)).with_for_update()
            ).first()
            if r is None:
                return
            if r.cancel_requested:
                conn.execute(
                    update(jobs).where(self._current(claim)).values(state="cancelled", finished_at=now)
                )
                self._event(conn, claim.job_id, "state", {"state": "cancelled"}, now)
                return
            conn.execute(
                update(jobs)
                .where(self._current(claim))
                .values(state="queued", attempts=jobs.c.attempts - 1, worker=None, heartbeat_at=None)
            )
            self._event(conn, claim.job_id, "state", {"state": "queued", "reason": reason}, now)
        self._dispatch(claim.job_id)

    def redispatch_queued(self, older_than_s: float) -> list[str]:
        """Defer again the jobs queued for longer than ``older_than_s``: a job whose defer failed
        (procrastinate's database blipped at submit) would otherwise wait for ever.  The engine
        refuses a second copy of a job it still holds (dispatch.py's queueing lock)."""
        if self.dispatch is None:
            return []
        limit = now_utc() - timedelta(seconds=older_than_s)
        with self.engine.connect() as conn:
            ids = [
                r.id
                for r in conn.execute(
                    select(jobs.c.id)
                    .where(and_(jobs.c.state == "queued", jobs.c.created_at < limit))
                    .order_by(jobs.c.created_at)
                    .limit(100)
                )
            ]
        for job_id in ids:
            self._dispatch(job_id)
        return ids

    def recover_stale(self, stale_after_s: float, max_attempts: int) -> list[str]:
        """Running jobs whose worker has not been heard of in ``stale_after_s``: queued again while
        they have attempts left, else failed.  Returns the ids it touched."""
        stale = jobs.c.heartbeat_at < _clock(self.engine) - timedelta(seconds=stale_after_s)
        # The staleness is tested again in the UPDATE: a heartbeat that landed since keeps the job.
        return self._give_up(stale, f"no heartbeat for {stale_after_s:g} s", max_attempts)

    def lost_worker(self, worker: str, reason: str, max_attempts: int) -> list[str]:
        """The jobs of a worker known to be gone (the sink saw its embedded worker die, or had
        to kill it at stop), given up at once instead of when their heartbeat goes stale; the
        attempt counts, so a job that kills its worker every time ends failed."""
        return self._give_up(jobs.c.worker == worker[:64], reason, max_attempts)

    def _give_up(self, condition: Any, reason: str, max_attempts: int) -> list[str]:
        now = now_utc()
        touched, again = [], []
        with self.engine.begin() as conn:
            rows = conn.execute(
                select(jobs.c.id, jobs.c.attempts, jobs.c.worker, jobs.c.cancel_requested)
                .where(and_(jobs.c.state == "running", condition))
                .order_by(jobs.c.created_at)
                .with_for_update(skip_locked=True)
            ).all()
            for r in rows:
                why = f"worker {r.worker} lost: {reason} (attempt {r.attempts})"
                if r.cancel_requested:
                    state: State = "cancelled"
                elif r.attempts < max_attempts:
                    state = "queued"
                else:
                    state = "failed"
                values: dict[str, Any] = {"state": state, "worker": None}
                if state != "queued":
                    values.update(finished_at=now, error=why)
                n = conn.execute(
                    update(jobs)
                    .where(
                        and_(
                            jobs.c.id == r.id,
                            jobs.c.attempts == r.attempts,
                            jobs.c.state == "running",
                            condition,
                        )
                    )
                    .values(**values)
                ).rowcount
                if n:
                    self._event(conn, r.id, "state", {"state": state, "reason": why}, now)
                    touched.append(r.id)
                    log.warning("job_worker_lost", job=r.id, attempt=r.attempts, now=state)
                    if state == "queued":
                        again.append(r.id)
        for job_id in again:
            self._dispatch(job_id)
        return touched

    def counts(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            return {
                r.state: r.n
                for r in conn.execute(select(jobs.c.state, func.count().label("n")).group_by(jobs.c.state))
            }

    @staticmethod
    def _event(conn: Any, job_id: str, kind: str, data: dict[str, Any], now: datetime) -> None:
        conn.execute(insert(job_events).values(job_id=job_id, time=now, kind=kind, data=json.dumps(data)))
