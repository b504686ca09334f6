"""Messages the edge agent emits: shared with the cloud sink, so this module imports only pydantic.

An alert produces two records with the same ``event_id``: ``phase="raised"`` in the frame its
condition became true (``end_*`` empty), and ``phase="ended"`` when it clears, with the end time
and duration.  Blinks, nods and other momentary events produce one ``phase="instant"`` record.
The pair ``(event_id, phase)`` is unique, which makes storage idempotent when a message is
delivered twice.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import Enum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

PROTOCOL_VERSION = 1


class EventType(str, Enum):
    BLINK = "blink"
    MICROSLEEP = "microsleep"
    SLEEP = "sleep"
    DROWSY = "drowsy"
    DISTRACTED = "distracted"
    YAWN = "yawn"
    NOD = "nod"
    NO_FACE = "no_face"
    CAMERA_LOST = "camera_lost"


class Severity(str, Enum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"
    EMERGENCY = "emergency"

    @property
    def rank(self) -> int:
        return _SEVERITY_RANK[self]


_SEVERITY_RANK = {Severity.INFO: 0, Severity.WARNING: 1, Severity.CRITICAL: 2, Severity.EMERGENCY: 3}


class DriverState(str, Enum):
    """The driver's state, most urgent first in :data:`STATE_PRIORITY`."""

    AWAKE = "AWAKE"
    DROWSY = "DROWSY"
    MICROSLEEP = "MICROSLEEP"
    SLEEP = "SLEEP"
    DISTRACTED = "DISTRACTED"
    NO_FACE = "NO_FACE"
    CAMERA_LOST = "CAMERA_LOST"


STATE_PRIORITY = (
    DriverState.CAMERA_LOST,
    DriverState.SLEEP,
    DriverState.MICROSLEEP,
    DriverState.NO_FACE,
    DriverState.DISTRACTED,
    DriverState.DROWSY,
)

# Which state an active alert of each type puts the driver in.
ALERT_STATE: dict[EventType, DriverState] = {
    EventType.CAMERA_LOST: DriverState.CAMERA_LOST,
    EventType.SLEEP: DriverState.SLEEP,
    EventType.MICROSLEEP: DriverState.MICROSLEEP,
    EventType.NO_FACE: DriverState.NO_FACE,
    EventType.DISTRACTED: DriverState.DISTRACTED,
    EventType.DROWSY: DriverState.DROWSY,
}


class FeatureSample(BaseModel):
    """One frame of the feature window attached to an event."""

    model_config = ConfigDict(extra="forbid")

    t_ms: int
    frame: int
    face: bool
    ear: float
    ear_left: float
    ear_right: float
    openness: float
    mar: float
    yaw: float
    pitch: float
    roll: float
    iris_vis: float


class Event(BaseModel):
    """One event as stored in the JSONL journal and (later) published over MQTT."""

    model_config = ConfigDict(extra="forbid")

    v: Literal[1] = 1
    event_id: uuid.UUID = Field(default_factory=uuid.uuid4, description="Same for raised/ended records.")
    device_id: str
    type: EventType
    phase: Literal["raised", "ended", "instant"]
    severity: Severity
    state: DriverState = Field(description="Driver state after this frame.")
    start_time: datetime = Field(description="When the condition's episode began (wall clock, UTC).")
    raised_time: datetime | None = Field(None, description="When the alert fired; None for blinks.")
    end_time: datetime | None = None
    start_ms: int = Field(description="Source clock of the start (ms since the stream started).")
    raised_ms: int | None = None
    end_ms: int | None = None
    start_frame: int
    raised_frame: int | None = None
    end_frame: int | None = None
    duration_ms: int | None = None
    ear_value: float | None = Field(None, description="Mean EAR in the frame the record was made.")
    openness: float | None = Field(None, description="EAR over the calibrated open-eye baseline.")
    is_drowsy: bool
    perclos: float | None = Field(None, description="PERCLOS (P80) over the rolling window, 0-1.")
    model_versions: dict[str, str] = Field(default_factory=dict)
    features: list[FeatureSample] = Field(default_factory=list, description="Frames before the record.")


# ----------------------------------------------------------------------------- MQTT v1

TOPIC_ROOT = "sleepsafe/v1"


def topic(device_id: str, kind: Literal["status", "event", "telemetry", "stats", "receipt"]) -> str:
    """``sleepsafe/v1/<device>/<kind>``."""
    return f"{TOPIC_ROOT}/{device_id}/{kind}"


class Status(BaseModel):
    """Retained on ``.../status``: ``online`` at each connect, ``offline`` as the Last Will,
    ``stopped`` on a clean exit.  ``seq`` grows with every session (persisted on the device), so
    a sink can tell a stale death from the birth of a newer session."""

    model_config = ConfigDict(extra="forbid")

    v: Literal[1] = 1
    device_id: str
    state: Literal["online", "offline", "stopped"]
    seq: int = Field(ge=0, description="Session number of this device, +1 per connect.")
    time: datetime
    version: str = Field(description="Agent version.")


class Telemetry(BaseModel):
    """Periodic driver summary on ``.../telemetry`` (QoS 1, through the spool)."""

    model_config = ConfigDict(extra="forbid")

    v: Literal[1] = 1
    msg_id: uuid.UUID = Field(default_factory=uuid.uuid4, description="Idempotency key.")
    device_id: str
    time: datetime
    state: DriverState
    perclos: float
    blink_rate_per_min: float
    blinks: int
    baseline_ear: float
    calibrated: bool
    is_drowsy: bool
    face: bool


class Stats(BaseModel):
    """Runtime health on ``.../stats`` (QoS 0: the newest one is what matters)."""

    model_config = ConfigDict(extra="forbid")

    v: Literal[1] = 1
    device_id: str
    time: datetime
    fps: float
    frames: int
    dropped_frames: int
    bad_frames: int
    latency_p50_ms: float
    latency_p99_ms: float
    stages_ms: dict[str, dict[str, float]] = Field(
        default_factory=dict,
        description="Per-stage time per frame, {stage: {p50, p99}}: landmarks, features, models, "
        "detector, alerts.",
    )
    reconnects: int
    camera_lost: bool
    spool_depth: int
    spool_evicted: dict[str, int]
    mqtt_reconnects: int
    providers: list[str]
    model_versions: dict[str, str]


class Receipt(BaseModel):
    """Sent by the sink on ``.../receipt`` (QoS 1) once messages are committed (stored, already
    stored, or kept as dead letters).  A vehicle with ``mqtt.await_receipt`` keeps each event and
    telemetry row in its spool until its key is in a receipt, and sends it again when none comes:
    delivery is then end to end, whatever the broker loses."""

    model_config = ConfigDict(extra="forbid")

    v: Literal[1] = 1
    device_id: str
    time: datetime
    keys: list[str] = Field(description="receipt_key() of each message: event_id:phase, or msg_id.")


def receipt_key(msg: Event | Telemetry) -> str:
    """The idempotency key the sink stores by, as one string."""
    if isinstance(msg, Event):
        return f"{msg.event_id}:{msg.phase}"
    return str(msg.msg_id)


# What vehicles send (the sink validates these); the sink sends receipts back.
MESSAGES: dict[str, type[BaseModel]] = {
    "status": Status,
    "event": Event,
    "telemetry": Telemetry,
    "stats": Stats,
}
