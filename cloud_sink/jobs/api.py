"""The HTTP side of jobs, the registry and scoring: /jobs (with server-sent progress), /models,
/predict, /mlflow/runs and /metrics/model.  Added to the sink's app by ``create_app``; the same
token check and rate limit apply.

MLflow is opened on first use, not at start-up: a sink whose MLflow is down still ingests and
serves everything else, and these endpoints answer 503 with the reason.
"""

# No `from __future__ import annotations`: FastAPI reads the endpoint annotations.

import asyncio
import contextlib
import math
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Header, HTTPException, Query
from fastapi import Path as FPath
from fastapi.concurrency import run_in_threadpool
from fastapi.sse import EventSourceResponse, ServerSentEvent
from pydantic import BaseModel, ConfigDict, Field

from ..config import SinkConfig
from ..registry import INPUT_SPEC, KIND_OF, Registry, RegistryUnavailable, UnknownModel, mask_secrets
from ..store import Store
from .queue import FINAL, JobQueue, UnknownJob

# How long a failure to open MLflow is answered from memory before it is tried again.
RETRY_S = 5.0
JobId = Annotated[str, FPath(pattern=r"^[0-9a-f-]{36}$", description="The job's id.")]
Finite = Annotated[float, Field(allow_inf_nan=False)]
# The names MLflow accepts for metrics and params.
MlflowKey = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_\-. /]+$")]


class JobIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["retrain"] = Field(description="What to do; retrain is the one kind.")
    model: Literal["temporal", "eye-state"] = Field(description="Which model to retrain.")
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="steps (temporal) or epochs (eye-state), seed, since (ISO 8601), labels, fleet_only.",
    )


class PredictIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    windows: (
        list[
            Annotated[
                list[Annotated[list[Finite], Field(min_length=7, max_length=7)]],
                Field(min_length=1, max_length=3600),
            ]
        ]
        | None
    ) = Field(None, max_length=64, description="Temporal model: feature windows, 7 features a frame.")
    crops: (
        list[
            Annotated[
                list[
                    Annotated[
                        list[Annotated[list[Finite], Field(min_length=48, max_length=48)]],
                        Field(min_length=24, max_length=24),
                    ]
                ],
                Field(min_length=2, max_length=2),
            ]
        ]
        | None
    ) = Field(None, max_length=512, description="Eye-state model: inputs of 2 x 24 x 48 (model_input).")


class MetricsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=100, description="The evaluation's name (the run's name).")
    model: str | None = Field(None, max_length=80, description="NAME@ALIAS or NAME/VERSION it evaluated.")
    metrics: dict[MlflowKey, Finite] = Field(max_length=200)
    params: dict[MlflowKey, Annotated[str, Field(max_length=500)]] = Field(
        default_factory=dict, max_length=100
    )


class Scorer:
    """onnxruntime sessions of registered versions, loaded once each (CUDA when there is one)."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._models: dict[tuple[str, str], Any] = {}
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self._guard = threading.Lock()

    def _lock(self, key: tuple[str, str]) -> threading.Lock:
        # One lock per version: a version being fetched from a slow artifact store holds up
        # requests for that version only.
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())

    def _session(self, v: Any, kind: str) -> Any:
        from sleepsafe.onnxmodels import EyeStateSession, ModelError, Options, TemporalModel

        key = (v.model, v.version)
        if key not in self._models:
            path = self.registry.model_file(v)
            cls = TemporalModel if kind == "temporal" else EyeStateSession
            try:
                self._models[key] = cls(path, Options(("cuda", "cpu")), self.registry.cfg.state_dir)
            except (ModelError, OSError) as err:
                raise RegistryUnavailable(f"{v.model}/{v.version}: {err}") from None
        return self._models[key]

    def score(self, ref: str, body: PredictIn) -> dict[str, Any]:
        import numpy as np

        v = self.registry.resolve(ref)
        kind = KIND_OF[v.model]
        want = "windows" if kind == "temporal" else "crops"
        got = body.windows if kind == "temporal" else body.crops
        if got is None or (body.windows is not None and body.crops is not None):
            raise ValueError(f"{v.model} takes {want} (and nothing else): {INPUT_SPEC[kind][want]}")
        # The temporal session carries state from frame to frame: one request at a time each.
        with self._lock((v.model, v.version)):
            model = self._session(v, kind)
            outputs: list[dict[str, Any]] = []
            if kind == "temporal":
                for window in got:
                    model.reset()
                    steps = [model.step(row) for row in window]
                    outputs.append({"closed": [s[0] for s in steps], "drowsy": [s[1] for s in steps]})
                model.reset()
            else:
                p = model.predict(np.asarray(got, dtype=np.float32))
                outputs = [{"closed": float(x)} for x in p]
        return {
            "model": v.model,
            "version": v.version,
            "aliases": list(v.aliases),
            "providers": list(model.providers),
            "outputs": outputs,
        }


@contextlib.contextmanager
def registry_errors() -> Iterator[None]:
    """The registry's refusals as HTTP answers: no such model, alias or version 404; a request it
    cannot take 422; MLflow unreachable 503 (each with its one-line reason)."""
    try:
        yield
    except UnknownModel as err:
        raise HTTPException(404, str(err)) from None
    except ValueError as err:
        raise HTTPException(422, str(err)) from None
    except RegistryUnavailable as err:
        raise HTTPException(503, str(err)) from None


def job_health(store: Store, worker: Any) -> dict[str, Any]:
    """Jobs by state and the embedded worker's; a problem when jobs wait for a worker that this
    sink should run and cannot (the training packages are missing, or it keeps dying)."""
    counts = JobQueue(store).counts()
    out: dict[str, Any] = {"queued": counts.get("queued", 0), "running": counts.get("running", 0)}
    if worker is None:
        out["worker"] = "external"
        return out
    broken = worker.unavailable or getattr(worker, "last_error", None)
    if worker.unavailable:
        out["worker"] = f"unavailable: {worker.unavailable}"
    else:
        out["worker"] = "alive" if worker.alive else "restarting"
        out["worker_restarts"] = worker.restarts
        if broken:
            out["worker_error"] = broken
    if out["queued"] and broken and not worker.alive:
        out["problem"] = f"{out['queued']} jobs queued and no worker: {broken}"
    return out


def add_job_routes(app: FastAPI, cfg: SinkConfig, store: Store, Auth: Any) -> None:
    from .dispatch import open_queue

    queue = open_queue(cfg, store)
    state: dict[str, Any] = {}
    lock = threading.Lock()

    def registry() -> Registry:
        """MLflow, opened on first use.  While it is down, requests are answered 503 at once
        with the last reason for RETRY_S, rather than each waiting on MLflow's timeout in
        turn behind one lock (which would tie up every API thread)."""
        if "registry" in state:
            return state["registry"]  # type: ignore[no-any-return]
        failed = state.get("failed")
        if failed and time.monotonic() - failed[0] < RETRY_S:
            raise HTTPException(503, failed[1], headers={"Retry-After": str(int(RETRY_S))})
        if not lock.acquire(timeout=cfg.mlflow.timeout_s):
            raise HTTPException(503, f"MLflow at {mask_secrets(cfg.mlflow_uri())} is being opened; try again")
        try:
            if "registry" not in state:
                try:
                    reg = Registry(cfg)
                    reg.ensure_shipped(store=store)
                except RegistryUnavailable as err:
                    state["failed"] = (time.monotonic(), str(err))
                    raise HTTPException(503, str(err)) from None
                state["scorer"] = Scorer(reg)
                state["registry"] = reg
                state.pop("failed", None)
        finally:
            lock.release()
        return state["registry"]  # type: ignore[no-any-return]

    def job_or_404(job_id: str) -> dict[str, Any]:
        try:
            return queue.get(job_id)
        except UnknownJob:
            raise HTTPException(404, f"no job {job_id}") from None

    def existing(job_id: JobId) -> dict[str, Any]:
        """A dependency: an SSE stream cannot answer 404 once it has started."""
        return job_or_404(job_id)

    @app.post("/jobs", tags=["jobs"], summary="Queue a job (retrain a model)", status_code=201)
    def submit(key: Auth, body: JobIn) -> dict[str, Any]:
        try:
            return queue.submit(body.kind, body.model, body.params, f"token:{key}")
        except ValueError as err:
            raise HTTPException(422, str(err)) from None

    @app.get("/jobs", tags=["jobs"], summary="Jobs, newest first")
    def jobs(
        _: Auth,
        state: Annotated[
            Literal["queued", "running", "succeeded", "failed", "cancelled"] | None,
            Query(description="Only these."),
        ] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
    ) -> list[dict[str, Any]]:
        return queue.recent(limit, state)

    @app.get("/jobs/{job_id}", tags=["jobs"], summary="One job: state, progress so far, result")
    def job(_: Auth, job_id: JobId) -> dict[str, Any]:
        out = job_or_404(job_id)
        out["progress"] = queue.latest(job_id, "progress")
        stage = queue.latest(job_id, "stage")
        out["stage"] = stage["stage"] if stage else None
        return out

    @app.delete("/jobs/{job_id}", tags=["jobs"], summary="Cancel a job (within a training step)")
    def cancel(_: Auth, job_id: JobId) -> dict[str, Any]:
        try:
            return queue.cancel(job_id)
        except UnknownJob:
            raise HTTPException(404, f"no job {job_id}") from None

    @app.get(
        "/jobs/{job_id}/events",
        tags=["jobs"],
        summary="The job's progress as server-sent events; reconnect with Last-Event-ID to resume",
        response_class=EventSourceResponse,
    )
    async def job_events(
        _: Auth,
        job_id: JobId,
        _exists: Annotated[dict[str, Any], Depends(existing)],
        last_event_id: Annotated[
            int | None, Header(ge=0, description="The id of the last event received.")
        ] = None,
        after: Annotated[
            int | None, Query(ge=0, description="Same as Last-Event-ID, for clients that cannot set it.")
        ] = None,
    ) -> AsyncIterator[ServerSentEvent]:
        cursor = max(last_event_id or 0, after or 0)
        while True:
            batch = await run_in_threadpool(queue.events, job_id, cursor)
            for ev in batch:
                cursor = ev["id"]
                yield ServerSentEvent(id=str(ev["id"]), event=ev["kind"], data=ev)
            if not batch:
                current = await run_in_threadpool(queue.get, job_id)
                if current["state"] in FINAL:
                    tail = await run_in_threadpool(queue.events, job_id, cursor)
                    if not tail:
                        return
                    continue
                await asyncio.sleep(0.25)

    @app.get(
        "/models", tags=["models"], summary="Registered models: versions, aliases, metrics, input spec, gate"
    )
    def models(_: Auth) -> list[dict[str, Any]]:
        reg = registry()
        with registry_errors():
            return reg.describe(store)

    @app.post(
        "/predict", tags=["models"], summary="Score a batch on a registered version (GPU when there is one)"
    )
    def predict(
        _: Auth,
        body: PredictIn,
        model: Annotated[
            str,
            Query(max_length=80, description="NAME@ALIAS or NAME/VERSION, e.g. sleepsafe-temporal@champion"),
        ],
    ) -> dict[str, Any]:
        registry()
        with registry_errors():
            out: dict[str, Any] = state["scorer"].score(model, body)
        return out

    @app.get("/mlflow/runs", tags=["models"], summary="The retraining experiment's MLflow runs, newest first")
    def runs(_: Auth, limit: Annotated[int, Query(ge=1, le=500)] = 50) -> list[dict[str, Any]]:
        with registry_errors():
            return registry().runs(limit)

    @app.post(
        "/metrics/model",
        tags=["models"],
        summary="Log an evaluation's figures as an MLflow run",
        status_code=201,
    )
    def log_metrics(key: Auth, body: MetricsIn) -> dict[str, Any]:
        reg = registry()
        tags = {"sleepsafe.source": "api", "sleepsafe.token": key}
        with registry_errors():
            if body.model:
                v = reg.resolve(body.model)
                tags.update({"sleepsafe.model": v.model, "sleepsafe.version": v.version})
            run_id = reg.start_run(body.name, tags)
            try:
                if body.params:
                    reg.log_params(run_id, dict(body.params))
                reg.log_metrics(run_id, {k: v for k, v in body.metrics.items() if math.isfinite(v)})
            except (RegistryUnavailable, ValueError):
                # Not left RUNNING for ever: the run is closed as failed, then the reason answered.
                with contextlib.suppress(RegistryUnavailable, ValueError, UnknownModel):
                    reg.end_run(run_id, "FAILED")
                raise
            reg.end_run(run_id)

        return {"run_id": run_id, "name": body.name, "tags": tags}
