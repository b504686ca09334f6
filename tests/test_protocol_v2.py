"""Protocol v2 without services: the window as columns gives back exactly the v1 frames, an
event keeps every field, it is much smaller, a malformed window is refused in one line, and the
sink's validator reads v1 and v2 side by side on one topic and nothing else."""

from __future__ import annotations

import itertools
import random
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import ValidationError

from cloud_sink.validate import Rejected, Valid, validate
from edge_agent.config import DetectorConfig
from edge_agent.perception.features import FrameFeatures, no_face
from edge_agent.policy.detector import Detector
from sleepsafe.protocol import (
    Event,
    EventV2,
    FeatureSample,
    FeatureWindow,
    Telemetry,
    TelemetryV2,
    topic,
    wire_event,
)

T0 = datetime(2026, 11, 23, 6, 0, tzinfo=timezone.utc)
DEVICE = "bus-0042"
MAX_BYTES = 256 * 1024


def driver_frames(
    fps: float,
    seconds: float,
    *,
    t0: float = 0.0,
    frame0: int = 0,
    dropped: tuple[int, ...] = (),
    lost: range = range(0),
    seed: int = 3,
) -> list[FrameFeatures]:
    """A driver at a camera: open eyes with sensor noise and one blink near the end; the frames
    ``dropped`` never arrive (the frame number jumps), in ``lost`` the face is not found."""
    rng = random.Random(seed)
    n = round(fps * seconds)
    out: list[FrameFeatures] = []
    for i in range(n):
        if i in dropped:
            continue
        t = t0 + i / fps
        if i in lost:
            out.append(no_face(t, frame0 + i))
            continue
        ear = (0.07 if n - 8 <= i < n - 3 else 0.29) + rng.gauss(0, 0.01)
        out.append(
            FrameFeatures(
                t=t,
                frame=frame0 + i,
                face=True,
                ear_left=ear + rng.gauss(0, 0.005),
                ear_right=ear + rng.gauss(0, 0.005),
                ear=ear,
                mar=0.12 + abs(rng.gauss(0, 0.02)),
                yaw=rng.gauss(3, 2),
                pitch=rng.gauss(-5, 2),
                roll=rng.gauss(1, 1),
                iris_vis=min(1.0, max(0.0, rng.gauss(0.8, 0.05))),
                faces=1,
            )
        )
    return out


def detector_events(frames: list[FrameFeatures]) -> tuple[Detector, list[Event]]:
    """The frames through the agent's real detector (its own rounding of every sample)."""
    d = Detector(
        DetectorConfig(),  # type: ignore[call-arg]
        models=None,
        device_id=DEVICE,
        start_wallclock=T0,
        model_versions={"landmarks": "mediapipe-0.10.21"},
    )
    events: list[Event] = []
    for f in frames:
        events += d.update(f)
    events += d.finish()
    return d, events


def blink_at_24fps() -> Event:
    """A real detector's blink from a 24 fps camera: its 2 s window, 48 frames (one dropped)."""
    _, events = detector_events(driver_frames(24.0, 12.0, dropped=(268,)))
    blinks = [e for e in events if e.type.value == "blink"]
    assert blinks, [e.type for e in events]
    return blinks[-1]


def full_event() -> Event:
    """An alert record with every optional field set."""
    samples = list(blink_at_24fps().features)
    return Event(
        event_id=uuid.UUID("7f0c4a52-5b7e-4f0e-9d59-0b2b7c1d9a10"),
        device_id=DEVICE,
        type="microsleep",  # type: ignore[arg-type]
        phase="ended",
        severity="critical",  # type: ignore[arg-type]
        state="AWAKE",  # type: ignore[arg-type]
        start_time=T0,
        raised_time=T0 + timedelta(seconds=1),
        end_time=T0 + timedelta(seconds=2, microseconds=345_000),
        start_ms=3_600_000,
        raised_ms=3_601_000,
        end_ms=3_602_345,
        start_frame=86_400,
        raised_frame=86_424,
        end_frame=86_456,
        duration_ms=2345,
        ear_value=0.0812,
        openness=0.271,
        is_drowsy=True,
        perclos=0.3125,
        model_versions={"landmarks": "mediapipe-0.10.21", "eye_state": "eye-state-v2.3-fp32"},
        features=samples,
    )


# ----------------------------------------------------------------------------- the window


def test_window_round_trip_of_a_real_detector_window_with_dropped_frames_and_no_face() -> None:
    # An hour into the drive (large clocks), two frames dropped, a third of a second faceless.
    frames = driver_frames(30.0, 8.0, t0=3600.0, frame0=108_000, dropped=(215, 216), lost=range(190, 200))
    d, _ = detector_events(frames)
    samples = list(d._window)  # the 2 s the next event would carry
    assert len(samples) >= 55
    numbers = [s.frame for s in samples]
    assert [b - a for a, b in itertools.pairwise(numbers)].count(3) == 1  # the gap
    assert 0 < sum(not s.face for s in samples) < len(samples)
    assert FeatureWindow.from_samples(samples).samples() == samples


def test_window_round_trip_keeps_gaps_steps_and_extremes() -> None:
    samples = [
        FeatureSample(
            t_ms=t,
            frame=f,
            face=face,
            ear=ear,
            ear_left=ear,
            ear_right=0.0,
            openness=op,
            mar=0.0423,
            yaw=yaw,
            pitch=pitch,
            roll=0.1,
            iris_vis=0.999,
        )
        # Values at the precision the agent keeps (detector._remember rounds every sample).
        for t, f, face, ear, op, yaw, pitch in (
            (3_600_000, 108_000, True, 0.2981, 1.027, -359.9, 360.0),
            (3_600_033, 108_001, True, 0.0001, 0.0, 12.3, -7.5),
            (3_600_100, 108_003, False, 0.0, 0.0, 0.0, 0.0),  # a dropped frame before, no face
            (3_600_100, 108_004, True, 5.0, 100.0, 360.0, -360.0),  # same time stamp, the bounds
            (3_602_500, 108_080, True, 0.31, 0.995, -0.1, 0.1),  # a 2.4 s gap (camera stall)
        )
    ]
    window = FeatureWindow.from_samples(samples)
    assert window.frame == [108_000, 1, 2, 1, 76]
    assert window.t_ms == [3_600_000, 33, 67, 0, 2400]
    assert window.samples() == samples


def test_empty_window() -> None:
    window = FeatureWindow.from_samples([])
    assert window.samples() == []
    from sleepsafe.protocol import MODEL_COLUMNS

    assert all(getattr(window, k) == [] for k in FeatureWindow.model_fields if k not in MODEL_COLUMNS)
    assert all(getattr(window, k) is None for k in MODEL_COLUMNS)  # no model ran: no column
    e = full_event().model_copy(update={"features": []})
    back = EventV2.model_validate_json(wire_event(e, 2))
    assert back.window is not None and back.window.samples() == []


def test_columns_of_different_lengths_are_refused_in_one_line() -> None:
    cols: dict[str, Any] = FeatureWindow.from_samples(blink_at_24fps().features).model_dump()
    cols["ear"] = cols["ear"][:-1]
    cols["yaw"] = [*cols["yaw"], 1.0]
    with pytest.raises(ValidationError) as err:
        FeatureWindow.model_validate(cols)
    (problem,) = err.value.errors()
    assert "\n" not in problem["msg"]
    assert "window columns of another length than t_ms (48): ear, yaw" in problem["msg"]
    # On the wire the sink says so in one line too, and keeps it as a dead letter.
    e = full_event().to_v2().model_dump(mode="json")
    e["window"] = cols
    import json

    r = validate(topic(DEVICE, "event"), json.dumps(e).encode(), MAX_BYTES)
    assert isinstance(r, Rejected) and r.code == "invalid", r
    assert "\n" not in r.reason and "window" in r.reason and "ear, yaw" in r.reason, r.reason


# ----------------------------------------------------------------------------- the event


def test_to_v2_keeps_every_field() -> None:
    e = full_event()
    v2 = e.to_v2()
    # No field of v1 is left behind, none added but the window.
    assert set(Event.model_fields) - {"v", "features"} == set(EventV2.model_fields) - {"v", "window"}
    assert v2.model_dump(exclude={"v", "window"}) == e.model_dump(exclude={"v", "features"})
    assert v2.window is not None and v2.window.samples() == e.features
    # And as the vehicle publishes it.
    wire = EventV2.model_validate_json(wire_event(e, 2))
    assert wire == v2 and wire.v == 2
    assert Event.model_validate_json(wire_event(e, 1)) == e


def test_v2_event_is_at_most_about_40_percent_of_v1() -> None:
    e = blink_at_24fps()
    assert len(e.features) == 48
    v1, v2 = len(wire_event(e, 1)), len(wire_event(e, 2))
    # Measured: 3,492 of 8,643 bytes = 0.404 (the real clips in benchmarks/wire.py: alert records 0.38).
    assert v2 / v1 <= 0.42, (v1, v2, v2 / v1)


# ----------------------------------------------------------------------------- the sink reads both


def telemetry_fields(n: int) -> dict[str, Any]:
    return {
        "msg_id": uuid.uuid5(uuid.NAMESPACE_URL, f"tel/{n}"),
        "device_id": DEVICE,
        "time": datetime.now(timezone.utc),
        "state": "AWAKE",
        "perclos": 0.05,
        "blink_rate_per_min": 14.0,
        "blinks": 12,
        "baseline_ear": 0.3,
        "calibrated": True,
        "is_drowsy": False,
        "face": True,
    }


def test_validate_reads_v1_and_v2_on_one_topic() -> None:
    e = full_event()
    got = [validate(topic(DEVICE, "event"), wire_event(e, v), MAX_BYTES) for v in (1, 2)]
    assert all(isinstance(r, Valid) for r in got), got
    assert isinstance(got[0], Valid) and isinstance(got[1], Valid)
    assert type(got[0].msg) is Event and type(got[1].msg) is EventV2
    assert got[0].msg == e and got[1].msg == e.to_v2()

    t1 = Telemetry(**telemetry_fields(1))
    t2 = TelemetryV2(**telemetry_fields(2), blink_durations_ms=[180, 240, 610], long_blinks=1)
    tel = [validate(topic(DEVICE, "telemetry"), t.model_dump_json().encode(), MAX_BYTES) for t in (t1, t2)]
    assert isinstance(tel[0], Valid) and isinstance(tel[1], Valid), tel
    assert type(tel[0].msg) is Telemetry and type(tel[1].msg) is TelemetryV2
    assert tel[1].msg.blink_durations_ms == [180, 240, 610]  # type: ignore[attr-defined]


def test_validate_keeps_the_versions_apart() -> None:
    """Each version's shape is its own: a v1 event with a window, or a v2 one with a feature list,
    is refused rather than read as the other."""
    e = full_event()
    v1_with_window = wire_event(e, 2).replace(b'"v":2', b'"v":1')
    v2_with_list = wire_event(e, 1).replace(b'"v":1', b'"v":2')
    for payload in (v1_with_window, v2_with_list):
        r = validate(topic(DEVICE, "event"), payload, MAX_BYTES)
        assert isinstance(r, Rejected) and r.code == "invalid", r
        assert "unknown field" in r.reason, r.reason


@pytest.mark.parametrize("kind", ["event v1", "event v2", "telemetry v1", "telemetry v2"])
def test_validate_refuses_v3(kind: str) -> None:
    what, version = kind.split()
    if what == "event":
        payload = wire_event(full_event(), 1 if version == "v1" else 2)
    else:
        t: Telemetry | TelemetryV2 = (
            Telemetry(**telemetry_fields(3)) if version == "v1" else TelemetryV2(**telemetry_fields(3))
        )
        payload = t.model_dump_json().encode()
    old = f'"v":{version[1]}'.encode()
    assert payload.count(old) == 1
    r = validate(topic(DEVICE, what), payload.replace(old, b'"v":3'), MAX_BYTES)  # type: ignore[arg-type]
    assert isinstance(r, Rejected) and r.code == "version", r
    assert "unknown schema version 3" in r.reason and "v1, v2" in r.reason, r.reason
