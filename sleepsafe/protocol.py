"""Messages the edge agent emits: shared with the cloud sink, so this module imports only pydantic.

An alert produces two records with the same ``event_id``: ``phase="raised"`` in the frame its
condition became true (``end_*`` empty), and ``phase="ended"`` when it clears, with the end time
and duration.  Blinks, nods and other momentary events produce one ``phase="instant"`` record.
The pair ``(event_id, phase)`` is unique, which makes storage idempotent when a message is
delivered twice.
"""

from __future__ import annotations

import itertools
import math
import uuid
from collections.abc import Iterable
from datetime import datetime
from enum import Enum
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    StringConstraints,
    model_serializer,
    model_validator,
)

# The schema version vehicles send by default; the sink reads every one of PROTOCOL_VERSIONS, so a
# fleet upgrades one vehicle at a time. v2: the feature window as columns, blinks summarised in
# telemetry rather than one event each (docs/mqtt.md).
PROTOCOL_VERSION: Literal[1, 2] = 2
PROTOCOL_VERSIONS = (1, 2)

# What a store can give back: finite floats in physical ranges, integers that fit the 32-bit
# columns PostgreSQL gives SQLAlchemy's Integer, strings without NUL (PostgreSQL rejects it) and
# of bounded length. A value outside is a broken vehicle (or a bit flip), and the sink keeps it as
# a dead letter with the reason instead of storing what its reads cannot parse back.
INT32_MAX = 2**31 - 1
EAR_MAX = 5.0  # EAR of an open eye is ~0.3; degenerate landmarks can give more, never this
RATIO_MAX = 100.0  # openness, MAR: ratios of lengths on one face
ANGLE_MAX = 360.0
WINDOW_MAX = 2000  # feature samples in one event: 2 s at up to 1000 fps
MAP_MAX = 32  # entries in a small map (model versions, per-stage timings, evictions)


def _finite(lo: float, hi: float) -> object:
    return Field(ge=lo, le=hi, allow_inf_nan=False)


# No NUL, checked in pydantic's Rust core (a Python validator per string cost more per message).
_NO_NUL = r"^[^\x00]*$"
Text = Annotated[str, StringConstraints(max_length=128, pattern=_NO_NUL)]
ShortText = Annotated[str, StringConstraints(max_length=32, pattern=_NO_NUL)]
# Topics under sleepsafe/v1/fleet/ are the sink's own (model releases): no vehicle may be "fleet".
RESERVED_DEVICE_IDS = frozenset({"fleet"})


def _not_reserved(v: str) -> str:
    if v in RESERVED_DEVICE_IDS:
        raise ValueError(f"device id {v!r} is reserved for the sink's own topics")
    return v


DEVICE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"  # also a topic level: no / + # or spaces
DeviceId = Annotated[str, StringConstraints(pattern=DEVICE_ID_PATTERN), AfterValidator(_not_reserved)]
Count = Annotated[int, Field(ge=0, le=INT32_MAX)]
Millis = Annotated[int, Field(ge=0, le=2**53)]  # stream clock: exact in a double, years long
Ear = Annotated[float, _finite(0.0, EAR_MAX)]
Ratio = Annotated[float, _finite(0.0, RATIO_MAX)]
Angle = Annotated[float, _finite(-ANGLE_MAX, ANGLE_MAX)]
Unit = Annotated[float, _finite(0.0, 1.0)]
Rate = Annotated[float, _finite(0.0, 1e6)]  # fps, blinks per minute, milliseconds of latency


def clamp(x: float, lo: float, hi: float) -> float:
    """A measured value as the protocol admits it: NaN → ``lo``, the rest clipped, so the
    vehicle never builds a record its own journal or the sink would refuse."""
    if math.isnan(x):
        return lo
    return min(hi, max(lo, x))


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
    # Shadow mode: the models and the EAR decision disagreed about shut eyes for a while (not
    # an alert: the cases most worth a person's label).
    DISAGREEMENT = "disagreement"


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

    t_ms: Millis
    frame: Millis
    face: bool
    ear: Ear
    ear_left: Ear
    ear_right: Ear
    openness: Ratio
    mar: Ratio
    yaw: Angle
    pitch: Angle
    roll: Angle
    iris_vis: Unit
    # What the models said of the frame (shadow or on); absent where they did not run.
    eye_closed: Unit | None = None
    temporal_closed: Unit | None = None
    drowsy_score: Unit | None = None

    @model_serializer(mode="wrap")
    def _without_absent_outputs(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return _drop_unset(handler(self), MODEL_COLUMNS)


CROPS_MAX_CHARS = 512 * 1024  # base64 of one window's crops: ~40 KB at 48 frames, bounded


class EyeCrops(BaseModel):
    """The eye crops of an event's window (``capture.eye_crops``): one PNG, a row per frame of
    the window in order, both eyes side by side (image-left eye first, the right one mirrored,
    as the eye-state model sees them); an all-black pair where the frame had no face."""

    model_config = ConfigDict(extra="forbid")

    width: Literal[48] = 48  # of one eye
    height: Literal[24] = 24
    frames: Count
    png: str = Field(max_length=CROPS_MAX_CHARS, pattern=r"^[A-Za-z0-9+/=]*$", description="Base64 PNG.")


# Fields added after the first sinks shipped: left out when unset, so a vehicle that does not use
# them sends exactly what an older sink reads.
_LATER_EVENT_FIELDS = ("acknowledged_ms", "acknowledged_via", "crops")


class _EventFields(BaseModel):
    """What every version of an event record carries."""

    model_config = ConfigDict(extra="forbid")

    @model_serializer(mode="wrap")
    def _without_unset_later_fields(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return _drop_unset(handler(self), _LATER_EVENT_FIELDS)

    event_id: uuid.UUID = Field(default_factory=uuid.uuid4, description="Same for raised/ended records.")
    device_id: DeviceId
    type: EventType
    phase: Literal["raised", "ended", "instant"]
    severity: Severity
    state: DriverState = Field(description="Driver state after this frame.")
    start_time: datetime = Field(description="When the condition's episode began (wall clock, UTC).")
    raised_time: datetime | None = Field(None, description="When the alert fired; None for blinks.")
    end_time: datetime | None = None
    start_ms: Millis = Field(description="Source clock of the start (ms since the stream started).")
    raised_ms: Millis | None = None
    end_ms: Millis | None = None
    start_frame: Millis
    raised_frame: Millis | None = None
    end_frame: Millis | None = None
    duration_ms: Count | None = None
    ear_value: Ear | None = Field(None, description="Mean EAR in the frame the record was made.")
    openness: Ratio | None = Field(None, description="EAR over the calibrated open-eye baseline.")
    is_drowsy: bool
    perclos: Unit | None = Field(None, description="PERCLOS (P80) over the rolling window, 0-1.")
    model_versions: dict[ShortText, Text] = Field(default_factory=dict, max_length=MAP_MAX)
    acknowledged_ms: Millis | None = Field(
        None, description="Source clock of the driver's acknowledgement of this alert, if any (a weak label)."
    )
    acknowledged_via: Literal["button", "command", "cli", "signal"] | None = Field(
        None, description="How the driver acknowledged it: a button, an MQTT command, the CLI, a signal."
    )
    crops: EyeCrops | None = Field(None, description="The window's eye crops, if the vehicle sends them.")


class Event(_EventFields):
    """One event as the agent makes it, writes to its journal and (protocol v1) publishes."""

    v: Literal[1] = 1
    features: list[FeatureSample] = Field(
        default_factory=list, max_length=WINDOW_MAX, description="Frames before the record."
    )

    def to_v2(self) -> EventV2:
        return EventV2(
            **self.model_dump(exclude={"v", "features"}), window=FeatureWindow.from_samples(self.features)
        )


# Decimals each window column keeps: those the agent rounds FeatureSample to, so v2 loses nothing.
WINDOW_DECIMALS = {
    "ear": 4, "ear_left": 4, "ear_right": 4, "openness": 3, "mar": 4,
    "yaw": 1, "pitch": 1, "roll": 1, "iris_vis": 3,
}  # fmt: skip
# The models' outputs: columns only in windows where a model ran (null in frames it did not).
MODEL_COLUMNS = {"eye_closed": 3, "temporal_closed": 3, "drowsy_score": 3}


def _drop_unset(d: dict[str, Any], keys: Iterable[str]) -> dict[str, Any]:
    """``keys`` that are None are left out, not written as nulls: a vehicle that does not use
    a later field (the models' outputs, acknowledgements, crops) sends and journals exactly
    what a sink that predates it reads."""
    for k in keys:
        if d.get(k, 0) is None:
            del d[k]
    return d


class FeatureWindow(BaseModel):
    """The frames before a record, one array per feature, all of one length: a third of the
    bytes of a list of objects, which repeats every key in every frame. ``t_ms`` and ``frame``
    are delta-coded (the first value absolute, then the step from the one before)."""

    model_config = ConfigDict(extra="forbid")

    t_ms: list[Millis] = Field(max_length=WINDOW_MAX)  # first absolute (a stream runs for months)
    frame: list[Millis] = Field(max_length=WINDOW_MAX)
    face: list[Annotated[int, Field(ge=0, le=1)]] = Field(max_length=WINDOW_MAX)
    ear: list[Ear] = Field(max_length=WINDOW_MAX)
    ear_left: list[Ear] = Field(max_length=WINDOW_MAX)
    ear_right: list[Ear] = Field(max_length=WINDOW_MAX)
    openness: list[Ratio] = Field(max_length=WINDOW_MAX)
    mar: list[Ratio] = Field(max_length=WINDOW_MAX)
    yaw: list[Angle] = Field(max_length=WINDOW_MAX)
    pitch: list[Angle] = Field(max_length=WINDOW_MAX)
    roll: list[Angle] = Field(max_length=WINDOW_MAX)
    iris_vis: list[Unit] = Field(max_length=WINDOW_MAX)
    eye_closed: list[Unit | None] | None = Field(None, max_length=WINDOW_MAX)
    temporal_closed: list[Unit | None] | None = Field(None, max_length=WINDOW_MAX)
    drowsy_score: list[Unit | None] | None = Field(None, max_length=WINDOW_MAX)

    @model_serializer(mode="wrap")
    def _without_absent_outputs(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return _drop_unset(handler(self), MODEL_COLUMNS)

    @model_validator(mode="after")
    def _one_length(self) -> FeatureWindow:
        d = self.__dict__
        if len({len(v) for v in d.values() if v is not None}) > 1:  # runs for every event
            n = len(self.t_ms)
            bad = [k for k in _WINDOW_FIELDS if d[k] is not None and len(d[k]) != n]
            raise ValueError(f"window columns of another length than t_ms ({n}): {', '.join(bad)}")
        return self

    @classmethod
    def from_samples(cls, samples: list[FeatureSample]) -> FeatureWindow:
        def deltas(xs: list[int]) -> list[int]:
            return [xs[0], *(max(0, b - a) for a, b in itertools.pairwise(xs))] if xs else []

        cols: dict[str, list[float]] = {k: [] for k in WINDOW_DECIMALS}
        for f in samples:
            for k, d in WINDOW_DECIMALS.items():
                cols[k].append(round(getattr(f, k), d))
        for k, d in MODEL_COLUMNS.items():
            values = [getattr(f, k) for f in samples]
            if any(v is not None for v in values):
                cols[k] = [None if v is None else round(v, d) for v in values]  # type: ignore[misc]
        return cls(
            t_ms=deltas([f.t_ms for f in samples]),
            frame=deltas([f.frame for f in samples]),
            face=[int(f.face) for f in samples],
            **cols,  # type: ignore[arg-type]
        )

    def samples(self) -> list[FeatureSample]:
        """Back to one object per frame (the v1 shape)."""
        t = frame = 0
        out = []
        for i in range(len(self.t_ms)):
            t += self.t_ms[i]
            frame += self.frame[i]
            out.append(
                FeatureSample(
                    t_ms=t,
                    frame=frame,
                    face=bool(self.face[i]),
                    **{k: getattr(self, k)[i] for k in WINDOW_DECIMALS},
                    **{k: col[i] for k in MODEL_COLUMNS if (col := getattr(self, k)) is not None},
                )
            )
        return out


_WINDOW_FIELDS = tuple(FeatureWindow.model_fields)


class EventV2(_EventFields):
    """An event on the wire, protocol v2: the window as columns."""

    v: Literal[2] = 2
    window: FeatureWindow | None = Field(None, description="Frames before the record, as columns.")


# ----------------------------------------------------------------------------- MQTT v1

TOPIC_ROOT = "sleepsafe/v1"


def topic(
    device_id: str, kind: Literal["status", "event", "telemetry", "stats", "receipt", "command"]
) -> str:
    """``sleepsafe/v1/<device>/<kind>``."""
    return f"{TOPIC_ROOT}/{device_id}/{kind}"


class Status(BaseModel):
    """Retained on ``.../status``: ``online`` at each connect, ``offline`` as the Last Will,
    ``stopped`` on a clean exit.  ``seq`` grows with every session (persisted on the device), so
    a sink can tell a stale death from the birth of a newer session."""

    model_config = ConfigDict(extra="forbid")

    v: Literal[1, 2] = PROTOCOL_VERSION
    device_id: DeviceId
    state: Literal["online", "offline", "stopped"]
    seq: Count = Field(description="Session number of this device, +1 per connect.")
    time: datetime
    version: ShortText = Field(description="Agent version.")


class _TelemetryFields(BaseModel):
    model_config = ConfigDict(extra="forbid")

    msg_id: uuid.UUID = Field(default_factory=uuid.uuid4, description="Idempotency key.")
    device_id: DeviceId
    time: datetime
    state: DriverState
    perclos: Unit
    blink_rate_per_min: Rate
    blinks: Count
    baseline_ear: Ear
    calibrated: bool
    is_drowsy: bool
    face: bool


class Telemetry(_TelemetryFields):
    """Periodic driver summary on ``.../telemetry`` (QoS 1, through the spool), protocol v1."""

    v: Literal[1] = 1


class TelemetryV2(_TelemetryFields):
    """Protocol v2 telemetry: the blinks since the last summary ride here, not as one event
    each (``mqtt.blink_events`` brings the events back, for a vehicle collecting training data)."""

    v: Literal[2] = 2
    blink_durations_ms: list[Count] = Field(
        default_factory=list, max_length=3600, description="Each blink since the last telemetry, in ms."
    )
    long_blinks: Count = Field(
        0, description="Long blinks (0.5 s up to a microsleep) since the last telemetry."
    )


class Stats(BaseModel):
    """Runtime health on ``.../stats`` (QoS 0: the newest one is what matters)."""

    model_config = ConfigDict(extra="forbid")

    v: Literal[1, 2] = PROTOCOL_VERSION
    device_id: DeviceId
    time: datetime
    fps: Rate
    frames: Millis
    dropped_frames: Millis
    bad_frames: Millis
    latency_p50_ms: Rate
    latency_p99_ms: Rate
    stages_ms: dict[ShortText, dict[ShortText, Rate]] = Field(
        default_factory=dict,
        max_length=MAP_MAX,
        description="Per-stage time per frame, {stage: {p50, p99}}: landmarks, features, models, "
        "detector, alerts.",
    )
    reconnects: Count
    camera_lost: bool
    spool_depth: Count
    spool_evicted: dict[ShortText, Millis] = Field(max_length=MAP_MAX)
    mqtt_reconnects: Count
    providers: list[Text] = Field(max_length=MAP_MAX)
    model_versions: dict[ShortText, Text] = Field(max_length=MAP_MAX)


class Receipt(BaseModel):
    """Sent by the sink on ``.../receipt`` (QoS 1) once messages are committed (stored, already
    stored, or kept as dead letters).  A vehicle with ``mqtt.await_receipt`` keeps each event and
    telemetry row in its spool until its key is in a receipt, and sends it again when none comes:
    delivery is then end to end, whatever the broker loses."""

    model_config = ConfigDict(extra="forbid")

    v: Literal[1, 2] = PROTOCOL_VERSION
    device_id: DeviceId
    time: datetime
    keys: list[Text] = Field(description="receipt_key() of each message: event_id:phase, or msg_id.")


class Command(BaseModel):
    """Sent to a vehicle on ``.../command`` (QoS 1, never retained) by a fleet operator's tool;
    ``ack``: the driver acknowledged the active alert (a dispatcher on the radio, say)."""

    model_config = ConfigDict(extra="forbid")

    v: Literal[1, 2] = PROTOCOL_VERSION
    command: Literal["ack"]
    time: datetime


def wire_event(e: Event, version: Literal[1, 2]) -> bytes:
    """An event as published under schema ``version``."""
    return (e if version == 1 else e.to_v2()).model_dump_json().encode()


AnyEvent = Event | EventV2
AnyTelemetry = Telemetry | TelemetryV2


def receipt_key(msg: AnyEvent | AnyTelemetry) -> str:
    """The idempotency key the sink stores by, as one string."""
    if isinstance(msg, (Event, EventV2)):
        return f"{msg.event_id}:{msg.phase}"
    return str(msg.msg_id)


# What vehicles send (the sink validates these), per kind and schema version; the sink sends
# receipts back.
MESSAGES: dict[str, dict[int, type[BaseModel]]] = {
    "status": {1: Status, 2: Status},
    "event": {1: Event, 2: EventV2},
    "telemetry": {1: Telemetry, 2: TelemetryV2},
    "stats": {1: Stats, 2: Stats},
}
