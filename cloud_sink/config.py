"""Typed configuration of the fleet sink: TOML file < environment (``SLEEPSAFE_SINK_*``) < ``--set``.

Same rules as the edge agent (unknown keys are errors, one-line messages, exit 78); the broker
section is the edge agent's :class:`~edge_agent.config.BrokerConfig` plus what only a
subscriber needs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from sleepsafe.paths import cache_dir
from sleepsafe.settings import (
    BrokerConfig,
    LoggingConfig,
    Section,
    TomlSettings,
    load_settings,
    read_credential,
)

DEFAULT_SINK_CONFIG_PATH = Path("/etc/sleepsafe/sink.toml")


def _default_state_dir() -> Path:
    return Path(os.environ.get("STATE_DIRECTORY", "/var/lib/sleepsafe-sink"))


class SinkMqttConfig(BrokerConfig):
    client_id: str = Field(
        "sleepsafe-sink-0",
        min_length=1,
        max_length=64,
        description="MQTT client id; unique per sink process (its persistent session is kept by it).",
    )
    shared: bool = Field(
        False,
        description="Join the shared-subscription group so several sinks split the traffic. Off: "
        "this sink takes everything through a plain persistent subscription, which Mosquitto keeps "
        "across its own restarts; Mosquitto 2.0 forgets shared subscriptions when it restarts, so "
        "turn this on only with a broker that keeps them (docs/sink.md).",
    )
    group: str = Field(
        "sleepsafe-sink",
        min_length=1,
        pattern=r"^[^/+#]+$",
        description="Shared-subscription group: sinks in one group split the traffic.",
    )
    session_expiry_s: int = Field(
        7 * 24 * 3600,
        ge=0,
        description="How long the broker keeps this sink's session (and queues its messages) "
        "while it is down.",
    )
    receipts: bool = Field(
        True,
        description="After each commit, publish a receipt to every vehicle with the keys it now has "
        "(vehicles with mqtt.await_receipt keep messages until then).",
    )
    receive_maximum: int = Field(
        1000, ge=1, le=65535, description="Unacknowledged QoS 1 messages the broker may send at once."
    )


class RetentionConfig(Section):
    """How long each table keeps its rows, in days, counted from when the sink stored them (the
    vehicles' clocks may be wrong; the sink's is the one clock every row shares).  0 (or None,
    from code): kept forever."""

    events: float | None = Field(
        365.0,
        ge=0,
        description="Days events are kept, by stored_at (0: forever).",
    )
    telemetry: float | None = Field(
        90.0,
        ge=0,
        description="Days telemetry is kept, by stored_at (0: forever).",
    )
    status_log: float | None = Field(
        90.0,
        ge=0,
        description="Days the status history is kept, by stored_at (0: forever); "
        "each vehicle's current status in devices is never pruned.",
    )
    dead_letters: float | None = Field(
        30.0,
        ge=0,
        description="Days a dead letter is kept after it was last seen (0: forever).",
    )


class StoreConfig(Section):
    url: str | None = Field(
        None,
        description="SQLAlchemy URL, e.g. postgresql+psycopg://user@host/db (unset: SQLite "
        "sink.sqlite3 in state_dir).",
    )
    batch_max: int = Field(2000, ge=1, le=100_000, description="Most messages written per transaction.")
    batch_linger_ms: float = Field(
        20.0, ge=0, le=1000, description="How long a batch waits to fill before it is written."
    )
    max_payload_bytes: int = Field(
        256 * 1024, ge=1024, description="Larger payloads are dead-lettered without being parsed."
    )
    accept_past_days: float = Field(
        400.0,
        gt=0,
        description="Messages dated further behind the sink's clock are dead letters (reason "
        "'clock'): a vehicle with a bad clock. Generous, as a spool may hold months of a vehicle "
        "that was out of reach.",
    )
    accept_future_s: float = Field(
        86400.0,
        gt=0,
        description="Messages dated further ahead of the sink's clock are dead letters (reason 'clock').",
    )
    stall_s: float = Field(
        30.0,
        gt=0,
        description="/health says 503 when received messages have waited this long without a "
        "commit (a stuck writer or database).",
    )
    retain_days: RetentionConfig = Field(default_factory=RetentionConfig)  # type: ignore[arg-type]
    prune_batch: int = Field(
        1000,
        ge=1,
        le=100_000,
        description="Most rows one prune transaction deletes (small: ingest waits for none longer "
        "than one batch).",
    )
    prune_interval_s: float = Field(
        3600.0, gt=0, description="How often `run` deletes rows older than store.retain_days."
    )


class ApiConfig(Section):
    enabled: bool = Field(True, description="Serve the HTTP API and the dashboard.")
    host: str = Field("127.0.0.1", description="Listen address (put a TLS proxy in front).")
    port: int = Field(8080, ge=0, le=65535, description="Listen port (0: any free port, logged).")
    tokens: list[SecretStr] = Field(
        default_factory=list,
        description="Bearer tokens accepted by the API; prefer `token_credential`.",
    )
    device_tokens: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="Vehicle id → a token that may only send that vehicle's messages over HTTP "
        "(POST /telemetry), for devices that cannot hold an MQTT session; it reads nothing.",
    )
    ingest_max_batch: int = Field(
        1000, ge=1, le=100_000, description="Most messages one POST /telemetry/batch may carry."
    )
    token_credential: str = Field(
        "api-token",
        description="File in $CREDENTIALS_DIRECTORY holding tokens, one per line (systemd LoadCredential=).",
    )
    rate_limit: str = Field(
        "600/minute",
        description="Requests allowed per token, in the `limits` notation (e.g. 10/second).",
    )
    max_page: int = Field(1000, ge=1, le=100_000, description="Most rows one /events request returns.")
    dashboard_refresh_s: float = Field(5.0, gt=0, description="How often the dashboard page refreshes.")

    @field_validator("device_tokens")
    @classmethod
    def _device_ids(cls, v: dict[str, SecretStr]) -> dict[str, SecretStr]:
        import re

        from sleepsafe.protocol import DEVICE_ID_PATTERN, RESERVED_DEVICE_IDS

        for device, token in v.items():
            if not re.match(DEVICE_ID_PATTERN, device) or device in RESERVED_DEVICE_IDS:
                raise ValueError(f"{device[:80]!r} is not a vehicle id")
            if len(token.get_secret_value()) < 16:
                raise ValueError(f"the token of {device!r} is shorter than 16 characters")
        return v

    @field_validator("rate_limit")
    @classmethod
    def _valid_limit(cls, v: str) -> str:
        from limits import parse

        try:
            parse(v)
        except ValueError:
            raise ValueError("expected e.g. '600/minute' or '10/second'") from None
        return v


class JobsConfig(Section):
    """Retraining jobs (``POST /jobs``, ``sleepsafe-sink retrain``): where they run and what they
    train and judge on.  The worker needs the training extra (``pip install 'sleepsafe[train]'``)."""

    worker: bool = Field(
        True,
        description="Run a worker process beside the sink (nothing else to start). Off: jobs wait for a "
        "`sleepsafe-sink worker` started elsewhere against the same database.",
    )
    engine: Literal["table", "procrastinate"] = Field(
        "table",
        description="How workers find jobs: table (they poll the sink's jobs table; SQLite or PostgreSQL) "
        "or procrastinate (each job is also deferred through procrastinate on the sink's PostgreSQL, "
        "whose workers are woken at once; pip install 'sleepsafe[scale]').",
    )
    poll_s: float = Field(1.0, gt=0, le=60, description="How often an idle worker looks for a queued job.")
    heartbeat_s: float = Field(
        2.0, gt=0, le=60, description="How often a running job's worker says it is alive."
    )
    stale_after_s: float = Field(
        30.0,
        gt=0,
        description="A running job whose worker has not been heard of for this long has lost it: it is "
        "queued again (once), then failed.",
    )
    max_attempts: int = Field(2, ge=1, le=5, description="Claims of one job before a lost worker fails it.")
    training_data: list[Path] | None = Field(
        None,
        description="Prepared labelled clips (`sleepsafe-train prepare`) trained on beside the fleet export "
        "(unset: $XDG_CACHE_HOME/sleepsafe/data, where `sleepsafe-train prepare` writes).",
    )
    clips_dir: Path | None = Field(
        None, description="The real clips the gate replays (unset: sleepsafe-edge fetch-clips' cache)."
    )
    gate_labels: list[Path] = Field(
        default_factory=list,
        description="labels.csv files of the clips the gate replays (empty: the repo's own, when present).",
    )
    temporal_steps: int = Field(400, ge=1, le=100_000, description="Training steps of a temporal retrain.")
    eye_state_epochs: int = Field(12, ge=1, le=1000, description="Epochs of an eye-state retrain.")

    def training_dirs(self) -> list[Path]:
        return list(self.training_data) if self.training_data is not None else [cache_dir() / "data"]


class MlflowConfig(Section):
    tracking_uri: str | None = Field(
        None,
        description="MLflow tracking and registry URI, e.g. http://mlflow:5000 (unset: SQLite and an "
        "artifact folder in state_dir/mlflow).",
    )
    experiment: str = Field("sleepsafe-retrain", min_length=1, description="MLflow experiment of the jobs.")
    timeout_s: float = Field(
        10.0, gt=0, le=600, description="An MLflow server that does not answer in this time fails the job."
    )


class SinkConfig(TomlSettings):
    """Everything the sink reads at start-up."""

    model_config = SettingsConfigDict(
        env_prefix="SLEEPSAFE_SINK_", env_nested_delimiter="__", extra="forbid", validate_assignment=True
    )

    state_dir: Path = Field(
        default_factory=_default_state_dir, description="SQLite database (when no store.url)."
    )
    mqtt: SinkMqttConfig = Field(default_factory=SinkMqttConfig)  # type: ignore[arg-type]
    store: StoreConfig = Field(default_factory=StoreConfig)  # type: ignore[arg-type]
    api: ApiConfig = Field(default_factory=ApiConfig)  # type: ignore[arg-type]
    jobs: JobsConfig = Field(default_factory=JobsConfig)  # type: ignore[arg-type]
    mlflow: MlflowConfig = Field(default_factory=MlflowConfig)  # type: ignore[arg-type]
    logging: LoggingConfig = Field(default_factory=LoggingConfig)  # type: ignore[arg-type]
    stats_interval_s: float = Field(30.0, gt=0, description="How often ingest counters are logged.")

    def database_url(self) -> str:
        return self.store.url or f"sqlite:///{self.state_dir / 'sink.sqlite3'}"

    @model_validator(mode="after")
    def _engine_needs_postgresql(self) -> SinkConfig:
        if self.jobs.engine == "procrastinate" and not self.database_url().startswith("postgresql"):
            raise ValueError(
                "jobs.engine: procrastinate needs store.url on PostgreSQL (or jobs.engine = 'table')"
            )
        return self

    def mlflow_uri(self) -> str:
        return self.mlflow.tracking_uri or f"sqlite:///{self.state_dir / 'mlflow' / 'mlflow.db'}"

    def api_tokens(self) -> list[str]:
        """Configured tokens plus those in the credential file (blank lines and # comments skipped)."""
        tokens = [t.get_secret_value() for t in self.api.tokens]
        for raw in (read_credential(self.api.token_credential) or "").splitlines():
            line = raw.strip()
            if line and not line.startswith("#"):
                tokens.append(line)
        return [t for t in tokens if t]

    def device_tokens(self) -> dict[str, str]:
        """Token → the one vehicle it may write for."""
        return {t.get_secret_value(): device for device, t in self.api.device_tokens.items()}


def load_sink_config(path: Path | None = None, overrides: dict[str, Any] | None = None) -> SinkConfig:
    return load_settings(SinkConfig, path, overrides, DEFAULT_SINK_CONFIG_PATH)
