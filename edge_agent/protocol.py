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
