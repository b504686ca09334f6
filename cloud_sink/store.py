"""Storage through SQLAlchemy 2 Core: SQLite (WAL) by default, PostgreSQL by URL.

One transaction per batch of validated messages.  Every insert is idempotent by the message's
own key (``(event_id, phase)`` for events, ``msg_id`` for telemetry, ``(device, seq, state)``
for status), using ``INSERT ... ON CONFLICT DO NOTHING RETURNING``, so a QoS 1 redelivery — or
two sinks racing on one message — is stored once, and the counts of what was new are exact.
Device status is applied only when it is newer (session number, then online < offline/stopped),
so a stale Last Will arriving late never marks a live vehicle offline.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pydantic_core
import structlog
from sqlalchemy import JSON, Engine, Integer, and_, create_engine, event, func, or_, select, update
from sqlalchemy.engine import Connection

from sleepsafe.protocol import Event, EventV2, FeatureWindow, Stats, Status, Telemetry, TelemetryV2

from . import schema
from .config import RetentionConfig
from .labels import EVENT_LABELS
from .validate import Rejected, Valid

log = structlog.get_logger(__name__)

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
_STATUS_RANK = {"online": 0, "offline": 1, "stopped": 1}


def utc(dt: datetime | None) -> datetime | None:
    """Aware → naive UTC (the storage rule); naive times are taken as UTC already."""
    if dt is None or dt.tzinfo is None:
        return dt
    return dt.astimezone(timezone.utc).replace(tzinfo=None)


def one_line(err: BaseException) -> str:
    """A database error as one line: the driver's own message, without SQLAlchemy's
    multi-line decoration."""
    orig = getattr(err, "orig", None) or err
    text = " ".join(x.strip() for x in str(orig).splitlines() if x.strip())
    return f"{orig.__class__.__name__}: {text}"[:500]


def now_utc() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


@dataclass(slots=True)
class WriteResult:
    stored: dict[str, int] = field(
        default_factory=lambda: {"event": 0, "telemetry": 0, "status": 0, "stats": 0}
    )
    duplicates: int = 0
    dead_letters: int = 0


class StoreError(RuntimeError):
    pass


class UnknownEvent(LookupError):
    """No event with this id is stored (it never arrived, or retention removed it)."""


def _insert(conn: Connection) -> Any:
    """The dialect's INSERT, which has ON CONFLICT (both have it, with the same API)."""
    from sqlalchemy.dialects import postgresql, sqlite

    return postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert


class Store:
    def __init__(self, url: str, *, migrate: bool = True) -> None:
        self.url = url
        try:
            if url.startswith("sqlite"):
                path = url.split(":///", 1)[1] if ":///" in url else ""
                if path and path != ":memory:":
                    Path(path).parent.mkdir(parents=True, exist_ok=True)
                self.engine: Engine = create_engine(
                    url, connect_args={"timeout": 30}, json_serializer=_to_json
                )
                event.listen(self.engine, "connect", _sqlite_pragmas)
            elif url.startswith("postgresql"):
                self.engine = create_engine(
                    url, pool_pre_ping=True, pool_size=5, max_overflow=5, json_serializer=_to_json
                )
            else:
                raise StoreError(
                    f"store.url {url!r}: only sqlite:/// and postgresql+psycopg:// are supported"
                )
            if migrate:
                self.migrate()
        except StoreError:
            raise
        except Exception as err:  # one line naming the database, not a traceback
            raise StoreError(f"database {self.safe_url}: {one_line(err)}") from err

    @property
    def safe_url(self) -> str:
        return self.engine.url.render_as_string(hide_password=True) if hasattr(self, "engine") else self.url

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def migrate(self) -> None:
        """Bring the schema to the newest Alembic revision (idempotent; run at every start)."""
        from alembic import command
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        with self.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")

    def close(self) -> None:
        self.engine.dispose()

    def reachable(self) -> bool:
        """Whether the database answers at all: tells a database that is down (retry the
        batch) from one that refuses a row (isolate it)."""
        try:
            with self.engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
        except Exception:  # noqa: BLE001 - any failure means: not reachable now
            return False
        return True

    # ------------------------------------------------------------------ writes
    def write(self, items: Sequence[Valid | Rejected], now: datetime | None = None) -> WriteResult:
        """Store one batch in one transaction.  Raises on a database failure (the caller then
        does not acknowledge the batch, so the broker delivers it again)."""
        now = now or now_utc()
        res = WriteResult()
        ev: list[tuple[Any, ...]] = []
        tele: list[tuple[Any, ...]] = []
        sqlite = self.dialect == "sqlite"
        ts = _ts_sqlite if sqlite else utc
        stamp = ts(now)
        statuses: list[Status] = []
        stats: list[Stats] = []
        dead: dict[str, dict[str, Any]] = {}
        seen: set[str] = set()  # devices in this batch: their last_seen moves
        for it in items:
            if isinstance(it, Rejected):
                digest = hashlib.sha256(it.topic.encode() + b"\0" + it.payload).hexdigest()
                if digest in dead:
                    dead[digest]["times_seen"] += 1
                    continue
                dead[digest] = {
                    "digest": digest,
                    "topic": _text(it.topic, 1024),
                    "reason": _text(it.reason, 2000),
                    "payload": it.payload[: 256 * 1024],
                    "size": len(it.payload),
                    "first_seen": now,
                    "last_seen": now,
                    "times_seen": 1,
                }
                continue
            seen.add(it.device_id)
            m = it.msg
            if isinstance(m, (Event, EventV2)):
                ev.append(_event_params(m, stamp, ts))
            elif isinstance(m, (Telemetry, TelemetryV2)):
                tele.append(_telemetry_params(m, stamp, ts))
            elif isinstance(m, Status):
                statuses.append(m)
            elif isinstance(m, Stats):
                stats.append(m)
        with self.engine.begin() as conn:
            insert = _insert(conn)
            if seen:
                mark = "%s" if conn.dialect.name == "postgresql" else "?"
                # Driver SQL: SQLAlchemy's upsert construct rebuilds its column collections on
                # every call, which cost more per batch than the insert itself.
                conn.exec_driver_sql(
                    f"INSERT INTO devices (device_id, first_seen, last_seen) VALUES ({mark}, {mark}, {mark}) "
                    "ON CONFLICT (device_id) DO UPDATE SET last_seen = excluded.last_seen",
                    [(d, stamp, stamp) for d in sorted(seen)],
                )
            if ev:
                n = _bulk_insert(conn, schema.events, EVENT_COLUMNS, ("event_id", "phase"), ev)
                res.stored["event"] = n
                res.duplicates += len(ev) - n
            if tele:
                n = _bulk_insert(conn, schema.telemetry, TELEMETRY_COLUMNS, ("msg_id",), tele)
                res.stored["telemetry"] = n
                res.duplicates += len(tele) - n
            for s in statuses:
                res.stored["status"] += self._apply_status(conn, insert, s, now)
            for st in stats:
                res.stored["stats"] += self._apply_stats(conn, st)
            if dead:
                stmt = insert(schema.dead_letters)
                conn.execute(
                    stmt.on_conflict_do_update(
                        index_elements=["digest"],
                        set_={
                            "times_seen": schema.dead_letters.c.times_seen + stmt.excluded.times_seen,
                            "last_seen": stmt.excluded.last_seen,
                        },
                    ),
                    list(dead.values()),
                )
                res.dead_letters = sum(d["times_seen"] for d in dead.values())
        return res

    def write_isolating(self, items: list[Valid | Rejected]) -> WriteResult:
        """Write the batch; if the database refuses it while it is reachable, the fault is in
        a row, not the database: write the rows one at a time and keep each refused one as a
        dead letter with the database's reason (replacing it in ``items``), so one bad row
        never blocks the batch (nor, redelivered, every batch after it).  Raises when the
        database itself is the problem."""
        try:
            return self.write(items)
        except Exception as err:  # classified below
            if not self.reachable():
                raise
            log.warning("sink_batch_refused", error=one_line(err), messages=len(items))
        total = WriteResult()
        for i, it in enumerate(items):
            try:
                res = self.write([it])
            except Exception as err:  # this row's fault: a dead letter
                if not self.reachable() or not isinstance(it, Valid):
                    raise
                items[i] = Rejected(it.topic, it.raw, f"store refused: {one_line(err)}", "store")
                res = self.write([items[i]])
            for k, n in res.stored.items():
                total.stored[k] += n
            total.duplicates += res.duplicates
            total.dead_letters += res.dead_letters
        return total

    @staticmethod
    def _apply_status(conn: Connection, insert: Any, s: Status, now: datetime) -> int:
        got = conn.execute(
            insert(schema.status_log)
            .on_conflict_do_nothing(index_elements=["device_id", "seq", "state"])
            .returning(schema.status_log.c.id),
            [
                {
                    "device_id": s.device_id,
                    "seq": s.seq,
                    "state": s.state,
                    "time": utc(s.time),
                    "stored_at": now,
                }
            ],
        ).all()
        d = schema.devices.c
        rank = _STATUS_RANK[s.state]
        conn.execute(
            update(schema.devices)
            .where(
                d.device_id == s.device_id,
                or_(
                    d.status_seq.is_(None),
                    d.status_seq < s.seq,
                    and_(d.status_seq == s.seq, d.status_rank <= rank),
                ),
            )
            .values(
                status=s.state,
                status_seq=s.seq,
                status_rank=rank,
                status_time=utc(s.time),
                agent_version=s.version,
            )
        )
        return len(got)

    @staticmethod
    def _apply_stats(conn: Connection, st: Stats) -> int:
        d = schema.devices.c
        t = utc(st.time)
        r = conn.execute(
            update(schema.devices)
            .where(d.device_id == st.device_id, or_(d.stats_time.is_(None), d.stats_time < t))
            .values(
                stats_time=t,
                fps=st.fps,
                spool_depth=st.spool_depth,
                providers=st.providers,
                model_versions=st.model_versions,
                stats=st.model_dump(mode="json", exclude={"v", "device_id"}),
            )
        )
        return int(r.rowcount or 0)

    # ------------------------------------------------------------------ reads
    def counts(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            return {
                name: int(conn.execute(select(func.count()).select_from(t)).scalar_one())
                for name, t in (
                    ("events", schema.events),
                    ("telemetry", schema.telemetry),
                    ("devices", schema.devices),
                    ("status_log", schema.status_log),
                    ("dead_letters", schema.dead_letters),
                    ("event_labels", schema.event_labels),
                )
            }

    def events(
        self,
        *,
        device: str | None = None,
        type_: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
        offset: int = 0,
        newest_first: bool = False,
    ) -> list[dict[str, Any]]:
        e = schema.events.c
        q = select(schema.events)
        if device:
            q = q.where(e.device_id == device)
        if type_:
            q = q.where(e.type == type_)
        if since:
            q = q.where(e.start_time >= utc(since))
        if until:
            q = q.where(e.start_time < utc(until))
        order = (e.start_time.desc(), e.id.desc()) if newest_first else (e.start_time, e.id)
        with self.engine.connect() as conn:
            rows = conn.execute(q.order_by(*order).limit(limit).offset(offset)).mappings().all()
        return [_event_out(r) for r in rows]

    def event(self, event_id: str) -> dict[str, Any]:
        """One event: its records (raised, ended, or the instant one, with the feature window),
        its current label and every label it was given, oldest first (the audit trail)."""
        e, lab = schema.events.c, schema.event_labels.c
        with self.engine.connect() as conn:
            rows = (
                conn.execute(select(schema.events).where(e.event_id == event_id).order_by(e.id))
                .mappings()
                .all()
            )
            if not rows:
                raise UnknownEvent(event_id)
            labels = (
                conn.execute(select(schema.event_labels).where(lab.event_id == event_id).order_by(lab.id))
                .mappings()
                .all()
            )
        records = []
        for r in rows:
            d = _times_out(dict(r))
            d["window"] = d.pop("features")
            records.append(d)
        history = [_label_out(r) for r in labels]
        first = records[0]
        return {
            "event_id": event_id,
            "device_id": first["device_id"],
            "type": first["type"],
            "severity": first["severity"],
            "start_time": first["start_time"],
            "records": records,
            "label": history[-1]["label"] if history else None,
            "labels": history,
        }

    def label_event(
        self,
        event_id: str,
        label: str,
        labeller: str,
        note: str = "",
        now: datetime | None = None,
        token: str | None = None,
    ) -> dict[str, Any]:
        """Record ``label`` for the event, keeping what it replaces: a new row each time, never
        an update, so who said what and when stays readable."""
        if label not in EVENT_LABELS:
            raise ValueError(f"unknown label {label!r} (known: {', '.join(EVENT_LABELS)})")
        e, lab = schema.events.c, schema.event_labels.c
        row = {
            "event_id": event_id,
            "label": label,
            "note": note,
            "labeller": labeller,
            "token": token,
            "time": utc(now or now_utc()),
        }
        with self.engine.begin() as conn:
            if conn.execute(select(e.id).where(e.event_id == event_id).limit(1)).first() is None:
                raise UnknownEvent(event_id)
            row["previous"] = conn.execute(
                select(lab.label).where(lab.event_id == event_id).order_by(lab.id.desc()).limit(1)
            ).scalar()
            conn.execute(schema.event_labels.insert().values(**row))
        log.info(
            "event_labelled", event_id=event_id, label=label, previous=row["previous"], labeller=labeller
        )
        return _label_out(row)

    def labelled_events(
        self, *, since: datetime | None = None, labels: Sequence[str], types: Sequence[str]
    ) -> list[dict[str, Any]]:
        """Each event whose current (latest) label is one of ``labels``, once: the record that
        opened it (raised, or the instant one) with its window, the label and who gave it."""
        e, lab = schema.events.c, schema.event_labels.c
        latest = select(lab.event_id, func.max(lab.id).label("last")).group_by(lab.event_id).subquery()
        q = (
            select(
                e.event_id,
                e.device_id,
                e.type,
                e.phase,
                e.severity,
                e.start_time,
                e.duration_ms,
                e.features,
                lab.label,
                lab.labeller,
                lab.time.label("labelled_at"),
                e.raised_time,
                e.crops,
            )
            .join(latest, latest.c.event_id == e.event_id)
            .join(schema.event_labels, lab.id == latest.c.last)
            .where(lab.label.in_(list(labels)), e.type.in_(list(types)), e.phase.in_(("raised", "instant")))
            .order_by(e.start_time, e.event_id)
        )
        if since is not None:
            q = q.where(e.start_time >= utc(since))
        with self.engine.connect() as conn:
            rows = conn.execute(q).mappings().all()
        out = []
        for r in rows:
            # The event's own span, ending with the window's last frame: an instant record's
            # duration, or for an alarm the time from its start to its raising.
            span = r.duration_ms
            if span is None and r.raised_time is not None:
                span = round((r.raised_time - r.start_time).total_seconds() * 1000)
            d = _times_out({k: v for k, v in dict(r).items() if k != "raised_time"})
            d["window"] = d.pop("features")
            d["span_ms"] = span
            out.append(d)
        return out

    def recent_events(self, limit: int = 50, phase: str | None = None) -> list[dict[str, Any]]:
        e = schema.events.c
        q = select(schema.events)
        if phase:
            q = q.where(e.phase == phase)
        with self.engine.connect() as conn:
            rows = conn.execute(q.order_by(e.id.desc()).limit(limit)).mappings().all()
        return [_event_out(r) for r in rows]

    def devices(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(schema.devices).order_by(schema.devices.c.device_id)).mappings().all()
        out = []
        for r in rows:
            d = dict(r)
            d.pop("status_rank", None)
            d["online"] = d["status"] == "online"
            out.append(_times_out(d))
        return out

    def dead_letters(self, limit: int = 100) -> list[dict[str, Any]]:
        c = schema.dead_letters.c
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(schema.dead_letters).order_by(c.last_seen.desc(), c.id.desc()).limit(limit)
            )
            out = []
            for r in rows.mappings():
                d = dict(r)
                raw: bytes = d.pop("payload")
                d["payload_preview"] = raw[:200].decode("utf-8", "replace")
                out.append(_times_out(d))
        return out

    def statistics(self) -> dict[str, Any]:
        e = schema.events.c
        dl = schema.dead_letters.c
        with self.engine.connect() as conn:
            by_type: dict[str, int] = dict(conn.execute(select(e.type, func.count()).group_by(e.type)).all())
            raised: dict[str, int] = dict(
                conn.execute(
                    select(e.severity, func.count()).where(e.phase == "raised").group_by(e.severity)
                ).all()
            )
            reasons = conn.execute(
                select(dl.reason, func.sum(dl.times_seen))
                .group_by(dl.reason)
                .order_by(func.sum(dl.times_seen).desc())
                .limit(20)
            ).all()
            online = conn.execute(
                select(func.count()).select_from(schema.devices).where(schema.devices.c.status == "online")
            ).scalar_one()
        counts = self.counts()
        return {
            "rows": counts,
            "events_by_type": {k: int(v) for k, v in by_type.items()},
            "alerts_by_severity": {k: int(v) for k, v in raised.items()},
            "devices_online": int(online),
            "dead_letter_reasons": [{"reason": r, "count": int(n or 0)} for r, n in reasons],
        }

    def _hour(self, col: Any) -> Any:
        if self.dialect == "postgresql":
            return func.to_char(func.date_trunc("hour", col), 'YYYY-MM-DD"T"HH24:00:00')
        return func.strftime("%Y-%m-%dT%H:00:00", col)

    def _bin(self, col: Any, bins: int) -> Any:
        if self.dialect == "postgresql":
            return func.floor(col * bins)
        return func.cast(col * bins, Integer)  # SQLite: truncation == floor for x >= 0

    def dashboard(self, hours: int = 24, now: datetime | None = None) -> dict[str, Any]:
        """The fleet overview the dashboard draws: alerts per hour and type, the PERCLOS
        distribution, devices and the latest alerts."""
        now = now or now_utc()
        since = now - timedelta(hours=hours)
        e = schema.events.c
        t = schema.telemetry.c
        hour = self._hour(e.start_time)
        with self.engine.connect() as conn:
            per_hour = conn.execute(
                select(hour.label("hour"), e.type, func.count())
                .where(e.phase == "raised", e.start_time >= since)
                .group_by(hour, e.type)
                .order_by(hour)
            ).all()
            b = self._bin(t.perclos, 20)
            hist = conn.execute(
                select(b.label("bin"), func.count()).where(t.time >= since).group_by(b).order_by(b)
            ).all()
            per_device = conn.execute(
                select(e.device_id, func.count())
                .where(e.phase == "raised", e.start_time >= since)
                .group_by(e.device_id)
            ).all()
        counts = [0] * 20
        for bin_, n in hist:
            counts[min(19, max(0, int(bin_)))] += int(n)
        return {
            "generated_at": now.isoformat() + "Z",
            "hours": hours,
            "devices": self.devices(),
            "alerts_per_hour": [{"hour": h + "Z", "type": ty, "count": int(n)} for h, ty, n in per_hour],
            "alerts_per_device": {d: int(n) for d, n in per_device},
            "perclos_histogram": {"edges": [i / 20 for i in range(21)], "counts": counts},
            "recent_alerts": self.recent_events(20, phase="raised"),
            "statistics": self.statistics(),
        }

    def timeline(self, device: str, hours: int = 24, now: datetime | None = None) -> dict[str, Any]:
        """One vehicle: its alerts as segments (raised → ended) and its telemetry (state, PERCLOS)."""
        now = now or now_utc()
        since = now - timedelta(hours=hours)
        e = schema.events.c
        t = schema.telemetry.c
        with self.engine.connect() as conn:
            evs = (
                conn.execute(
                    select(e.event_id, e.phase, e.type, e.severity, e.start_time, e.end_time, e.duration_ms)
                    .where(e.device_id == device, e.start_time >= since, e.type != "blink")
                    .order_by(e.start_time)
                )
                .mappings()
                .all()
            )
            tel = (
                conn.execute(
                    select(t.time, t.state, t.perclos, t.blink_rate_per_min)
                    .where(t.device_id == device, t.time >= since)
                    .order_by(t.time)
                )
                .mappings()
                .all()
            )
        segs: dict[str, dict[str, Any]] = {}
        for r in evs:
            s = segs.setdefault(
                r["event_id"],
                {
                    "event_id": r["event_id"],
                    "type": r["type"],
                    "severity": r["severity"],
                    "start": r["start_time"],
                    "end": None,
                },
            )
            if r["phase"] in ("ended", "instant"):
                s["end"] = r["end_time"] or r["start_time"]
        out = []
        for s in segs.values():
            out.append(
                {
                    **s,
                    "start": _iso(s["start"]),
                    "end": _iso(s["end"]),
                    "open": s["end"] is None,
                }
            )
        return {
            "device_id": device,
            "segments": out,
            "telemetry": [
                {
                    "time": _iso(r["time"]),
                    "state": r["state"],
                    "perclos": r["perclos"],
                    "blink_rate": r["blink_rate_per_min"],
                }
                for r in tel
            ],
        }

    # ------------------------------------------------------------------ retention
    def prune(
        self,
        now: datetime | None = None,
        dry_run: bool = False,
        retain: RetentionConfig | Mapping[str, float | None] | None = None,
        *,
        batch: int = 1000,
        stop: threading.Event | None = None,
    ) -> dict[str, int]:
        """Delete the rows older than each table's retention (``retain``: days per table, 0 or
        None keeping it forever; unset: the configured defaults) and return how many went per
        table (``dry_run``: how many would, deleting nothing).

        Age is measured by the sink's own clock (``PRUNE_BY``): a vehicle whose clock is years
        off must neither lose its fresh events nor keep them forever.  Rows go in batches of
        ``batch``, each its own short transaction, so an ingest writing on another connection
        never waits longer than one batch (SQLite has one writer; PostgreSQL row locks).
        ``stop`` set ends the run between batches (the sink is shutting down)."""
        if batch < 1:
            raise ValueError(f"batch must be at least 1, not {batch}")
        days = _retention_days(retain)
        now = utc(now) or now_utc()
        out: dict[str, int] = {}
        for name, (table, column) in PRUNE_BY.items():
            out[name] = 0
            keep = days.get(name)
            if not keep:
                continue  # kept forever
            try:
                cutoff = now - timedelta(days=keep)
            except OverflowError:  # older than datetime.min: nothing is that old
                continue
            old = table.c[column] < cutoff
            if table is schema.events:
                # A labelled event is training data: its rows (window, crops) stay with its label.
                labelled = select(schema.event_labels.c.id).where(
                    schema.event_labels.c.event_id == schema.events.c.event_id
                )
                old = and_(old, ~labelled.exists())
            if dry_run:
                with self.engine.connect() as conn:
                    q = select(func.count()).select_from(table).where(old)
                    out[name] = int(conn.execute(q).scalar_one())
                continue
            ids = select(table.c.id).where(old).order_by(table.c.id).limit(batch)
            while stop is None or not stop.is_set():
                with self.engine.begin() as conn:
                    n = int(conn.execute(table.delete().where(table.c.id.in_(ids))).rowcount or 0)
                out[name] += n
                if n < batch:
                    break
        return out


_SQL_CACHE: dict[tuple[str, str], str] = {}


# Retention: the table (by the name prune reports) and the column its rows' age is measured by,
# always a time the sink wrote itself (indexed for this: migration 0002; dead_letters since 0001).
PRUNE_BY: dict[str, tuple[Any, str]] = {
    "events": (schema.events, "stored_at"),
    "telemetry": (schema.telemetry, "stored_at"),
    "status_log": (schema.status_log, "stored_at"),
    "dead_letters": (schema.dead_letters, "last_seen"),
}


def _retention_days(retain: RetentionConfig | Mapping[str, float | None] | None) -> dict[str, float | None]:
    """Days per table from the config model or a plain dict; an unknown table name is an error
    (a typo must not silently keep everything forever)."""
    if retain is None:
        retain = RetentionConfig()
    days = retain.model_dump() if isinstance(retain, RetentionConfig) else dict(retain)
    unknown = sorted(set(days) - set(PRUNE_BY))
    if unknown:
        raise ValueError(f"retention for unknown tables {unknown} (known: {', '.join(PRUNE_BY)})")
    for name, d in days.items():
        if d is not None and d < 0:
            raise ValueError(f"retention for {name} must be >= 0 days, not {d}")
    return days


def _bulk_insert(
    conn: Connection, table: Any, cols: tuple[str, ...], key: tuple[str, ...], rows: list[Any]
) -> int:
    """``INSERT ... ON CONFLICT (key) DO NOTHING`` for a batch of tuples through the driver's
    own executemany: the hot path of ingest, where SQLAlchemy's per-row processing cost more
    than the database.  Returns how many rows were new (both drivers sum ``rowcount`` over an
    executemany, and rows skipped by the conflict clause do not count)."""
    dialect = conn.dialect.name
    sql = _SQL_CACHE.get((dialect, table.name))
    if sql is None:
        if dialect == "postgresql":
            marks = ", ".join("%s::json" if isinstance(table.c[c].type, JSON) else "%s" for c in cols)
        else:
            marks = ", ".join("?" for _ in cols)
        sql = (
            f"INSERT INTO {table.name} ({', '.join(cols)}) VALUES ({marks}) "
            f"ON CONFLICT ({', '.join(key)}) DO NOTHING"
        )
        _SQL_CACHE[(dialect, table.name)] = sql
    cur = conn.exec_driver_sql(sql, rows)
    return int(cur.rowcount)


def _text(s: str, limit: int) -> str:
    """Text from the wire as a column can hold it: PostgreSQL refuses NUL in text, and a reason
    may quote what a vehicle sent."""
    return s[:limit].replace("\x00", "\\0")


def _to_json(obj: Any) -> str:
    # pydantic-core serializes models and plain values alike, ~5x faster than json.dumps of
    # model_dump() for an event's feature window.
    return pydantic_core.to_json(obj).decode()


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # WAL: readers (the API) never block the writer; NORMAL: no fsync per commit, still durable
    # across a process crash (only an OS crash can lose the last commits, which the broker then
    # redelivers, because acknowledgements are sent only after the commit).
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


# Column order of the hot-path inserts (a test checks it against the tables).
EVENT_COLUMNS = (
    "event_id", "phase", "device_id", "type", "severity", "state", "start_time", "raised_time",
    "end_time", "duration_ms", "ear_value", "openness", "is_drowsy", "perclos", "model_versions",
    "features", "protocol", "acknowledged_ms", "acknowledged_via", "crops", "stored_at",
)  # fmt: skip
TELEMETRY_COLUMNS = (
    "msg_id", "device_id", "time", "state", "perclos", "blink_rate_per_min", "blinks",
    "baseline_ear", "calibrated", "is_drowsy", "face", "blink_durations_ms", "long_blinks", "protocol",
    "stored_at",
)  # fmt: skip


def _ts_sqlite(dt: datetime | None) -> Any:
    """Naive UTC in SQLAlchemy's SQLite DATETIME text format (so its reads parse it)."""
    if dt is None:
        return None
    if dt.tzinfo is not None:
        dt = dt.astimezone(timezone.utc).replace(tzinfo=None)
    return dt.isoformat(" ", "microseconds")  # = strftime("%Y-%m-%d %H:%M:%S.%f"), 3x faster


def _window(m: Event | EventV2) -> Any:
    """The feature window as stored: columns (protocol v2's shape) whatever the vehicle sent,
    so readers meet one shape; a v1 list of frames is turned into columns."""
    if isinstance(m, EventV2):
        return m.window
    return FeatureWindow.from_samples(m.features) if m.features else None


def _event_params(m: Event | EventV2, now: Any, ts: Any) -> tuple[Any, ...]:
    return (
        str(m.event_id), m.phase, m.device_id, m.type.value, m.severity.value, m.state.value,
        ts(m.start_time), ts(m.raised_time), ts(m.end_time), m.duration_ms, m.ear_value,
        m.openness, m.is_drowsy, m.perclos, _to_json(m.model_versions), _to_json(_window(m)), m.v,
        m.acknowledged_ms, m.acknowledged_via, None if m.crops is None else _to_json(m.crops), now,
    )  # fmt: skip


def _telemetry_params(m: Telemetry | TelemetryV2, now: Any, ts: Any) -> tuple[Any, ...]:
    durations, long_blinks = (
        (_to_json(m.blink_durations_ms), m.long_blinks) if isinstance(m, TelemetryV2) else (None, None)
    )
    return (
        str(m.msg_id), m.device_id, ts(m.time), m.state.value, m.perclos, m.blink_rate_per_min,
        m.blinks, m.baseline_ear, m.calibrated, m.is_drowsy, m.face, durations, long_blinks, m.v, now,
    )  # fmt: skip


def _iso(dt: datetime | None) -> str | None:
    return None if dt is None else dt.isoformat() + "Z"


def _times_out(d: dict[str, Any]) -> dict[str, Any]:
    return {k: (_iso(v) if isinstance(v, datetime) else v) for k, v in d.items()}


def _label_out(r: Any) -> dict[str, Any]:
    d = _times_out({k: r[k] for k in ("label", "previous", "note", "labeller", "token", "time")})
    return d


def _event_out(r: Any) -> dict[str, Any]:
    d = _times_out(dict(r))
    d.pop("features", None)  # the feature window is for retraining exports, not lists
    d.pop("crops", None)  # so are the eye crops (the event page reads them from /events/{id})
    return d
