"""How `eval` scores a clip's events against its labels, on synthetic events (no video)."""

from __future__ import annotations

from datetime import datetime, timezone

from edge_agent.devtools.evaluate import Label, score_clip
from sleepsafe.protocol import DriverState, Event, EventType, Severity


def _event(type_: EventType, start: int, end: int, raised: int | None = None) -> Event:
    now = datetime.now(timezone.utc)
    return Event(
        device_id="bus-7",
        type=type_,
        phase="instant" if raised is None else "raised",
        severity=Severity.INFO if raised is None else Severity.CRITICAL,
        state=DriverState.AWAKE,
        start_time=now,
        start_ms=start * 33,
        start_frame=start,
        raised_frame=raised,
        end_frame=end,
        is_drowsy=False,
    )


def test_unsure_ranges_are_neither_hits_nor_false_alarms() -> None:
    """A blink or closure alarm inside an ``unsure`` range is reported as ignored; the same
    event outside any range is a false one."""
    labels = [
        Label("c", 0, 99, "face"),
        Label("c", 10, 14, "blink"),
        Label("c", 40, 60, "unsure"),
        Label("c", 80, 84, "blink"),
    ]
    events = [
        _event(EventType.BLINK, 11, 13),  # hit
        _event(EventType.BLINK, 45, 48),  # in unsure: ignored
        _event(EventType.BLINK, 25, 27),  # nowhere: false blink
        _event(EventType.MICROSLEEP, 42, 55, raised=50),  # in unsure: ignored
        _event(EventType.MICROSLEEP, 66, 75, raised=70),  # nowhere: false alarm
    ]
    s = score_clip("c", labels, events, [True] * 100, [])
    assert (s.blink_tp, s.blink_fp, s.blink_fn, s.blinks_ignored) == (1, 1, 1, 1)
    assert (s.alarms_in_closed, s.alarms_outside, s.alarms_ignored) == (0, 1, 1)
    assert s.false_alarms == [{"type": "microsleep", "start_frame": 66, "raised_frame": 70}]
