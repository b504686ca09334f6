"""HTTP API and dashboard (FastAPI).

Everything but ``/health``, the static dashboard page (which holds no data: it asks the API
with the token the user gives it) and the OpenAPI docs needs ``Authorization: Bearer <token>``.
Requests are rate-limited per token (moving window, ``limits``), so one runaway dashboard or
script cannot starve the ingest of database time.
"""

# No `from __future__ import annotations`: FastAPI reads the endpoint annotations, which refer
# to names local to create_app (the token check, the configured page size).

import hashlib
import hmac
import json
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import structlog
from fastapi import Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi import Path as FPath
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from limits import parse as parse_limit
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from pydantic import BaseModel, ConfigDict, Field

from sleepsafe import __version__
from sleepsafe.protocol import EventType, topic

from .config import SinkConfig
from .ingest import Ingest, Metrics
from .jobs.api import add_job_routes, job_health
from .labels import LABELLER_PATTERN, EventLabel
from .store import Store, UnknownEvent, WriteResult, one_line
from .validate import DEVICE_RE, ClockWindow, Rejected, Valid, validate

log = structlog.get_logger(__name__)
STATIC = Path(__file__).resolve().parent / "static"
DEVICE_PATTERN = DEVICE_RE.pattern


class _StoreCollector(Collector):
    """Row counts and devices online, read at scrape time."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def collect(self) -> Any:
        try:
            counts = self.store.counts()
            devices = self.store.devices()
        except Exception as err:  # noqa: BLE001 - a scrape must not fail because the DB is down
            log.warning("metrics_store_unavailable", error=str(err)[:200])
            return
        rows = GaugeMetricFamily("sleepsafe_sink_rows", "Rows stored, per table", labels=["table"])
        for name, n in counts.items():
            rows.add_metric([name], n)
        yield rows
        online = GaugeMetricFamily("sleepsafe_sink_devices", "Known vehicles by status", labels=["status"])
        by: dict[str, int] = {}
        for d in devices:
            by[d["status"] or "unknown"] = by.get(d["status"] or "unknown", 0) + 1
        for status, n in sorted(by.items()):
            online.add_metric([status], n)
        yield online
        spool = GaugeMetricFamily(
            "sleepsafe_device_spool_depth", "Spool depth reported by each vehicle", labels=["device"]
        )
        fps = GaugeMetricFamily(
            "sleepsafe_device_fps", "Frame rate reported by each vehicle", labels=["device"]
        )
        for d in devices:
            if d["spool_depth"] is not None:
                spool.add_metric([d["device_id"]], d["spool_depth"])
            if d["fps"] is not None:
                fps.add_metric([d["device_id"]], d["fps"])
        yield spool
        yield fps


class LabelIn(BaseModel):
    """A person's verdict on an alert."""

    model_config = ConfigDict(extra="forbid")
    label: EventLabel = Field(
        description="confirmed: a real alert; false_alarm: nothing was wrong; unsure: cannot tell."
    )
    labeller: str = Field(pattern=LABELLER_PATTERN, description="Who says so (a name or an e-mail).")
    note: str = Field("", max_length=500, pattern=r"^[^\x00]*$", description="Why, in a few words.")


@dataclass(frozen=True, slots=True)
class Principal:
    key: str  # a short digest of the token, for rate limits and logs
    device: str | None  # the one vehicle a device token writes for; None: an operator


def _plotly_js() -> Path:
    return Path(str(resources.files("plotly") / "package_data" / "plotly.min.js"))


def create_app(
    cfg: SinkConfig,
    store: Store,
    ingest: Ingest | None = None,
    metrics: Metrics | None = None,
    worker: Any = None,
) -> FastAPI:
    """``worker``: the embedded jobs worker (cloud_sink.jobs.embedded), for /health."""
    tokens = cfg.api_tokens()
    if not tokens:
        raise ValueError(
            "api: no bearer token configured: set api.tokens or put one per line in "
            f"$CREDENTIALS_DIRECTORY/{cfg.api.token_credential} (or api.enabled=false)"
        )
    digests = [hashlib.sha256(t.encode()).digest() for t in tokens]
    # Device tokens write (HTTP ingest) for their one vehicle and read nothing.
    device_digests = [(hashlib.sha256(t.encode()).digest(), d) for t, d in cfg.device_tokens().items()]
    limiter = MovingWindowRateLimiter(MemoryStorage())
    limit = parse_limit(cfg.api.rate_limit)
    metrics = metrics or (ingest.metrics if ingest else Metrics())
    metrics.registry.register(_StoreCollector(store))
    bearer = HTTPBearer(auto_error=False)

    app = FastAPI(
        title="SleepSafe fleet sink",
        version=__version__,
        description="Events, telemetry and health of the SleepSafe Edge fleet. "
        "Authenticate with `Authorization: Bearer <token>`; requests are rate-limited per token.",
    )

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # Without the input echoed back: a NaN in the body (refused) cannot be written as JSON,
        # and a large body is not worth sending back.
        errors = [{k: e[k] for k in ("loc", "msg", "type") if k in e} for e in exc.errors()]
        return JSONResponse({"detail": errors}, status_code=422)

    def principal(cred: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> Principal:
        """Who is asking: an operator (any token of api.tokens) or one vehicle (its device token)."""
        if cred is None or cred.scheme.lower() != "bearer":
            raise HTTPException(401, "missing bearer token", headers={"WWW-Authenticate": "Bearer"})
        got = hashlib.sha256(cred.credentials.encode()).digest()
        device: str | None = None
        if not any(hmac.compare_digest(got, d) for d in digests):
            device = next((dev for d, dev in device_digests if hmac.compare_digest(got, d)), None)
            if device is None:
                raise HTTPException(401, "invalid token", headers={"WWW-Authenticate": "Bearer"})
        key = got.hex()[:16]
        if not limiter.hit(limit, key):
            reset, _remaining = limiter.get_window_stats(limit, key)
            retry = max(1, int(reset - time.time()) + 1)
            raise HTTPException(
                429, f"rate limit {cfg.api.rate_limit} exceeded", headers={"Retry-After": str(retry)}
            )
        return Principal(key, device)

    def auth(who: Annotated[Principal, Depends(principal)]) -> str:
        """Operators only: a device token reads nothing of the fleet."""
        if who.device is not None:
            raise HTTPException(403, "a device token may only send its own vehicle's messages")
        return who.key

    Auth = Annotated[str, Depends(auth)]
    Device = Annotated[str | None, Query(pattern=DEVICE_PATTERN, max_length=64, description="Vehicle id.")]
    Hours = Annotated[int, Query(ge=1, le=24 * 90, description="Look back this many hours.")]

    @app.get("/health", tags=["health"], summary="Liveness and readiness (no token needed)")
    def health(response: Response) -> dict[str, Any]:
        db_ok = store.reachable()
        problems = [] if db_ok else ["database unreachable"]
        if ingest is not None:  # an API-only process has no ingest to judge
            problems += ingest.problems()
        jobs = job_health(store, worker) if db_ok else {}
        if jobs.get("problem"):
            problems.append(jobs["problem"])
        out = {
            "status": "ok" if not problems else "degraded",
            "problems": problems,
            "database": "ok" if db_ok else "unreachable",
            "mqtt_connected": bool(ingest and ingest.connected.is_set()),
            "writer_alive": bool(ingest and ingest.failed is None),
            "queue_depth": ingest.queue_depth if ingest else 0,
            "jobs": {k: v for k, v in jobs.items() if k != "problem"},
            "version": __version__,
        }
        if problems:
            response.status_code = 503
        return out

    @app.get("/statistics", tags=["fleet"], summary="Totals: rows, events by type, dead letters")
    def statistics(_: Auth) -> dict[str, Any]:
        out = store.statistics()
        out["ingest"] = dict(ingest.totals) if ingest else {}
        return out

    @app.get("/dashboard", tags=["fleet"], summary="Fleet summary the dashboard page draws")
    def dashboard(_: Auth, hours: Hours = 24) -> dict[str, Any]:
        return store.dashboard(hours)

    @app.get("/dashboard/timeline", tags=["fleet"], summary="One vehicle's alerts and telemetry over time")
    def timeline(
        _: Auth,
        device: Annotated[str, Query(pattern=DEVICE_PATTERN, max_length=64)],
        hours: Hours = 24,
    ) -> dict[str, Any]:
        return store.timeline(device, hours)

    @app.get("/events/recent", tags=["events"], summary="The newest events stored")
    def recent(_: Auth, limit: Annotated[int, Query(ge=1, le=cfg.api.max_page)] = 50) -> list[dict[str, Any]]:
        return store.recent_events(limit)

    @app.get("/events", tags=["events"], summary="Events by vehicle, type and time")
    def events(
        _: Auth,
        device: Device = None,
        type: Annotated[EventType | None, Query(description="Event type.")] = None,
        since: Annotated[datetime | None, Query(description="ISO 8601; events starting at or after.")] = None,
        until: Annotated[datetime | None, Query(description="ISO 8601; events starting before.")] = None,
        limit: Annotated[int, Query(ge=1, le=cfg.api.max_page)] = 100,
        offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
    ) -> list[dict[str, Any]]:
        return store.events(
            device=device,
            type_=type.value if type else None,
            since=since,
            until=until,
            limit=limit,
            offset=offset,
        )

    EventId = Annotated[
        uuid.UUID, FPath(description="The event's id (the same for its raised and ended records).")
    ]

    @app.get("/events/{event_id}", tags=["events"], summary="One event: its records, window and labels")
    def one_event(_: Auth, event_id: EventId) -> dict[str, Any]:
        try:
            return store.event(str(event_id))
        except UnknownEvent:
            raise HTTPException(404, f"no event {event_id}") from None

    @app.post(
        "/events/{event_id}/label",
        tags=["events"],
        status_code=201,
        summary="Label an event (confirmed, false_alarm, unsure); every label is kept, with what it replaced",
    )
    def label_event(key: Auth, event_id: EventId, body: LabelIn) -> dict[str, Any]:
        try:
            # The labeller is the name typed; the token it came with is kept beside it.
            return store.label_event(str(event_id), body.label, body.labeller, body.note, token=key)
        except UnknownEvent:
            raise HTTPException(404, f"no event {event_id}") from None

    Writer = Annotated[Principal, Depends(principal)]
    Kind = Annotated[
        str,
        FPath(
            pattern="^(event|telemetry|status|stats)$",
            description="Message kind, as the MQTT topic's last level.",
        ),
    ]
    clock = ClockWindow(
        timedelta(days=cfg.store.accept_past_days), timedelta(seconds=cfg.store.accept_future_s)
    )
    max_bytes = cfg.store.max_payload_bytes

    def _may_write(who: Principal, device: str) -> None:
        if who.device is not None and who.device != device:
            raise HTTPException(403, f"this device token writes for {who.device!r}, not {device[:64]!r}")

    def _store(items: list[Valid | Rejected]) -> WriteResult:
        try:
            return store.write_isolating(items)
        except Exception as err:  # noqa: BLE001 - the database is down: the sender retries
            log.error("sink_http_ingest_failed", error=one_line(err), messages=len(items))
            raise HTTPException(
                503, "database unavailable: send again later", headers={"Retry-After": "10"}
            ) from None

    @app.post(
        "/telemetry/{device_id}/{kind}",
        tags=["ingest"],
        summary="One message over HTTP, the body as on MQTT topic sleepsafe/v1/DEVICE/KIND",
        responses={
            201: {"description": "stored, or already stored"},
            422: {"description": "kept as a dead letter"},
        },
    )
    async def ingest_one(
        request: Request,
        response: Response,
        who: Writer,
        device_id: Annotated[str, FPath(max_length=64, description="Vehicle id.")],
        kind: Kind,
    ) -> dict[str, Any]:
        _may_write(who, device_id)
        body = await request.body()
        item = validate(topic(device_id, kind), body, max_bytes, clock)  # type: ignore[arg-type]
        items: list[Valid | Rejected] = [item]
        res = await run_in_threadpool(_store, items)  # the database must not hold up the event loop
        if isinstance(items[0], Rejected):
            response.status_code = 422
            return {"result": "dead_letter", "code": items[0].code, "reason": items[0].reason}
        response.status_code = 201
        return {"result": "duplicate" if res.duplicates else "stored", "kind": kind}

    @app.post(
        "/telemetry/batch",
        tags=["ingest"],
        summary="Many messages over HTTP: a JSON array of {device_id, kind, message}",
    )
    async def ingest_batch(request: Request, response: Response, who: Writer) -> dict[str, Any]:
        body = await request.body()
        if len(body) > max_bytes * 64:
            raise HTTPException(
                413, f"batch of {len(body)} bytes > {max_bytes * 64}: send fewer messages at once"
            )
        entries = _batch_entries(body)
        if isinstance(entries, str):  # not a batch at all: the whole body is the dead letter
            await run_in_threadpool(_store, [Rejected("http:/telemetry/batch", body, entries, "json")])
            response.status_code = 422
            return {
                "stored": 0,
                "duplicates": 0,
                "dead_letters": 1,
                "rejected": [{"index": None, "reason": entries}],
            }
        if len(entries) > cfg.api.ingest_max_batch:
            raise HTTPException(
                413, f"{len(entries)} messages > api.ingest_max_batch {cfg.api.ingest_max_batch}"
            )
        for device, _kind, _raw in entries:
            if isinstance(device, str):
                _may_write(who, device)
        items: list[Valid | Rejected] = []
        for i, (device, kind, raw) in enumerate(entries):
            if not isinstance(device, str) or not isinstance(kind, str):
                items.append(
                    Rejected("http:/telemetry/batch", raw, f"message {i}: needs device_id and kind", "topic")
                )
            else:
                items.append(validate(topic(device, kind), raw, max_bytes, clock))  # type: ignore[arg-type]
        res = await run_in_threadpool(_store, items)
        rejected = [
            {"index": i, "reason": it.reason} for i, it in enumerate(items) if isinstance(it, Rejected)
        ]
        return {
            "stored": sum(res.stored.values()),
            "duplicates": res.duplicates,
            "dead_letters": len(rejected),
            "rejected": rejected[:100],
        }

    @app.get("/devices", tags=["fleet"], summary="Vehicles: last seen, online, spool depth, models")
    def devices(_: Auth) -> list[dict[str, Any]]:
        return store.devices()

    @app.get("/dead-letters", tags=["fleet"], summary="Rejected messages with the reason")
    def dead_letters(_: Auth, limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[dict[str, Any]]:
        return store.dead_letters(limit)

    @app.get("/metrics", tags=["health"], summary="Prometheus metrics", response_class=Response)
    def prometheus(_: Auth) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/ui")

    page = (STATIC / "dashboard.html").read_text().replace("{{REFRESH_S}}", str(cfg.api.dashboard_refresh_s))

    @app.get("/ui", include_in_schema=False)
    def ui() -> HTMLResponse:
        return HTMLResponse(page)

    event_page = (STATIC / "event.html").read_text()

    @app.get("/ui/event/{event_id}", include_in_schema=False)
    def ui_event(event_id: uuid.UUID) -> HTMLResponse:
        # The page holds no data (it asks the API with the user's token); the id is a UUID.
        return HTMLResponse(event_page.replace("{{EVENT_ID}}", str(event_id)))

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str, request: Request) -> FileResponse:
        if name == "plotly.min.js":
            return FileResponse(_plotly_js(), media_type="text/javascript")
        path = STATIC / name
        if name not in ("dashboard.js", "dashboard.css", "event.js") or not path.is_file():
            raise HTTPException(404, "not found")
        return FileResponse(path)

    add_job_routes(app, cfg, store, Auth)
    return app


def _batch_entries(body: bytes) -> list[tuple[Any, Any, bytes]] | str:
    """(device_id, kind, the message's own bytes) of each entry, or why the body is no batch."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as err:
        return f"batch is not JSON: {str(err)[:200]}"
    if not isinstance(data, list):
        return f"batch is a JSON {type(data).__name__}, not an array of {{device_id, kind, message}}"
    out = []
    for entry in data:
        if not isinstance(entry, dict):
            out.append((None, None, json.dumps(entry).encode()))
            continue
        try:
            raw = json.dumps(entry.get("message")).encode()
        except (ValueError, RecursionError):  # pragma: no cover - json.loads gave it back
            raw = b""
        out.append((entry.get("device_id"), entry.get("kind"), raw))
    return out
