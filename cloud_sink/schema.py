"""The sink's tables (SQLAlchemy Core).  Changes here need an Alembic revision
(``alembic -c cloud_sink/alembic.ini revision --autogenerate -m "..."``); a test fails when the
migrations and these tables disagree, on SQLite and on PostgreSQL.

All times are stored as naive UTC: SQLite has no time zones, and one rule for both back ends
keeps queries identical.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "pk": "pk_%(table_name)s",
    }
)

events = Table(
    "events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("event_id", String(36), nullable=False),
    Column("phase", String(8), nullable=False),
    Column("device_id", String(64), nullable=False),
    Column("type", String(16), nullable=False),
    Column("severity", String(16), nullable=False),
    Column("state", String(16), nullable=False),
    Column("start_time", DateTime, nullable=False),
    Column("raised_time", DateTime),
    Column("end_time", DateTime),
    Column("duration_ms", Integer),
    Column("ear_value", Float),
    Column("openness", Float),
    Column("is_drowsy", Boolean, nullable=False),
    Column("perclos", Float),
    Column("model_versions", JSON, nullable=False),
    Column("features", JSON, nullable=False),  # the window as columns (protocol v2's shape)
    Column("protocol", Integer),  # the schema version the vehicle sent
    Column("acknowledged_ms", BigInteger),  # the driver's acknowledgement (stream clock), if any
    Column("acknowledged_via", String(8)),
    Column("crops", JSON),  # the window's eye crops (capture.eye_crops), if the vehicle sent them
    Column("stored_at", DateTime, nullable=False),
    UniqueConstraint("event_id", "phase", name="uq_events_event_id_phase"),
    Index("ix_events_device_start", "device_id", "start_time"),
    Index("ix_events_type_start", "type", "start_time"),
    Index("ix_events_start", "start_time"),
    Index("ix_events_stored_at", "stored_at"),  # retention (Store.prune)
)

telemetry = Table(
    "telemetry",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("msg_id", String(36), nullable=False, unique=True),
    Column("device_id", String(64), nullable=False),
    Column("time", DateTime, nullable=False),
    Column("state", String(16), nullable=False),
    Column("perclos", Float, nullable=False),
    Column("blink_rate_per_min", Float, nullable=False),
    Column("blinks", Integer, nullable=False),
    Column("baseline_ear", Float, nullable=False),
    Column("calibrated", Boolean, nullable=False),
    Column("is_drowsy", Boolean, nullable=False),
    Column("face", Boolean, nullable=False),
    Column("blink_durations_ms", JSON),  # v2: the blinks since the last telemetry
    Column("long_blinks", Integer),  # v2
    Column("protocol", Integer),
    Column("stored_at", DateTime, nullable=False),
    Index("ix_telemetry_device_time", "device_id", "time"),
    Index("ix_telemetry_time", "time"),
    Index("ix_telemetry_stored_at", "stored_at"),  # retention (Store.prune)
)

devices = Table(
    "devices",
    metadata,
    Column("device_id", String(64), primary_key=True),
    Column("first_seen", DateTime, nullable=False),
    Column("last_seen", DateTime, nullable=False),
    Column("status", String(8)),
    Column("status_seq", Integer),
    Column("status_rank", Integer),
    Column("status_time", DateTime),
    Column("agent_version", String(32)),
    Column("stats_time", DateTime),
    Column("fps", Float),
    Column("spool_depth", Integer),
    Column("providers", JSON),
    Column("model_versions", JSON),
    Column("stats", JSON),
)

status_log = Table(
    "status_log",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("device_id", String(64), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("state", String(8), nullable=False),
    Column("time", DateTime, nullable=False),
    Column("stored_at", DateTime, nullable=False),
    UniqueConstraint("device_id", "seq", "state", name="uq_status_log_device_seq_state"),
    Index("ix_status_log_stored_at", "stored_at"),  # retention (Store.prune)
)

dead_letters = Table(
    "dead_letters",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("digest", String(64), nullable=False, unique=True),
    Column("topic", Text, nullable=False),
    Column("reason", Text, nullable=False),
    Column("payload", LargeBinary, nullable=False),
    Column("size", Integer, nullable=False),
    Column("first_seen", DateTime, nullable=False),
    Column("last_seen", DateTime, nullable=False),
    Column("times_seen", Integer, nullable=False),
    Index("ix_dead_letters_last_seen", "last_seen"),
)

# What people say of an alert (POST /events/{event_id}/label): append-only, so every row is
# also the audit record (who, when, the label it replaced). Never pruned: these are the
# training labels the fleet produces.
event_labels = Table(
    "event_labels",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("event_id", String(36), nullable=False),
    Column("label", String(16), nullable=False),
    Column("previous", String(16)),
    Column("note", Text, nullable=False),
    Column("labeller", String(64), nullable=False),
    Column("token", String(16)),  # which API token gave it (its digest's first 16 hex), or "cli"
    Column("time", DateTime, nullable=False),
    Index("ix_event_labels_event_id", "event_id", "id"),
)

# Retraining jobs (POST /jobs). The row is the job's truth for every engine: a worker claims it
# (attempts counts claims; a finish is only accepted from the claim it answers), keeps
# heartbeat_at fresh while it runs, and a job whose heartbeat is stale has lost its worker.
jobs = Table(
    "jobs",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("model", String(16), nullable=False),
    Column("params", Text, nullable=False),
    Column("state", String(12), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("cancel_requested", Boolean, nullable=False),
    Column("requested_by", String(64), nullable=False),
    Column("worker", String(64)),
    Column("created_at", DateTime, nullable=False),
    Column("started_at", DateTime),
    Column("heartbeat_at", DateTime),
    Column("finished_at", DateTime),
    Column("result", Text),
    Column("error", Text),
    Index("ix_jobs_state_created_at", "state", "created_at"),
)

# Each job's progress, in order: the id is the server-sent event id, monotonic across all jobs,
# so a client that reconnects with Last-Event-ID gets exactly what it missed, after a restart too.
job_events = Table(
    "job_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("job_id", String(36), nullable=False),
    Column("time", DateTime, nullable=False),
    Column("kind", String(16), nullable=False),
    Column("data", Text, nullable=False),
    Index("ix_job_events_job_id", "job_id", "id"),
)

# Who moved a registry alias (@champion, @challenger), when, and from which version: the fleet
# runs what @champion names, so every move is kept.
model_audit = Table(
    "model_audit",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("time", DateTime, nullable=False),
    Column("model", String(64), nullable=False),
    Column("alias", String(32), nullable=False),
    Column("action", String(16), nullable=False),
    Column("version", String(16)),
    Column("previous", String(16)),
    Column("by", String(64), nullable=False),
    Column("reason", Text, nullable=False),
    Index("ix_model_audit_model", "model", "id"),
)
