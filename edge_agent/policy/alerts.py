"""The alert book: which alerts are raised, their cooldowns and hysteresis, and the driver
state they add up to.  It knows nothing of eyes or heads, only of conditions turning on and off."""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass

from sleepsafe.protocol import ALERT_STATE, STATE_PRIORITY, DriverState, EventType, Severity

SEVERITY: dict[EventType, Severity] = {
    EventType.BLINK: Severity.INFO,
    EventType.YAWN: Severity.INFO,
    EventType.NOD: Severity.INFO,
    EventType.DROWSY: Severity.WARNING,
    EventType.DISTRACTED: Severity.WARNING,
    EventType.NO_FACE: Severity.WARNING,
    EventType.MICROSLEEP: Severity.CRITICAL,
    EventType.SLEEP: Severity.EMERGENCY,
    EventType.CAMERA_LOST: Severity.CRITICAL,
    EventType.DISAGREEMENT: Severity.INFO,
}
# Alerts that, once ended, stay quiet for ``cooldown_s``: a driver who keeps glancing away is
# told once, not every few seconds.
COOLDOWN_TYPES = (EventType.DROWSY, EventType.DISTRACTED)
DROWSY_TYPES = (EventType.DROWSY, EventType.MICROSLEEP, EventType.SLEEP)


@dataclass(slots=True)
class Active:
    """An alert that has been raised and not yet ended."""

    event_id: uuid.UUID
    type: EventType
    severity: Severity
    start_t: float
    start_frame: int
    raised_t: float
    raised_frame: int
    clear_since: float | None = None  # condition false since (for hysteresis)
    acknowledged_ms: int | None = None  # the driver's acknowledgement, stream clock
    acknowledged_via: str | None = None


class AlertBook:
    def __init__(self, cooldown_s: float, hysteresis_s: float) -> None:
        self.cooldown_s = cooldown_s
        self.hysteresis_s = hysteresis_s
        self.active: dict[EventType, Active] = {}
        self._cooldown_until: dict[EventType, float] = {}

    def __contains__(self, t: EventType) -> bool:
        return t in self.active

    @property
    def is_drowsy(self) -> bool:
        return any(t in self.active for t in DROWSY_TYPES)

    def state(self) -> DriverState:
        """The most severe state any raised alert stands for (AWAKE when none)."""
        for state in STATE_PRIORITY:
            if any(ALERT_STATE.get(t) == state for t in self.active):
                return state
        return DriverState.AWAKE

    def acknowledge(self, now_ms: int, via: str) -> int:
        """The driver acknowledged: every raised warning-or-worse alert not yet acknowledged
        records when and how (a weak label: drivers dismiss true alerts too). It silences and
        ends nothing: the alert lasts as long as its condition."""
        n = 0
        for a in self.active.values():
            if a.severity.rank >= Severity.WARNING.rank and a.acknowledged_ms is None:
                a.acknowledged_ms, a.acknowledged_via = now_ms, via
                n += 1
        return n

    def cooling(self, t: EventType, now: float) -> bool:
        return now < self._cooldown_until.get(t, -math.inf)

    def open(
        self,
        t: EventType,
        start_t: float,
        start_frame: int,
        now: float,
        frame: int,
        severity: Severity | None,
    ) -> Active:
        a = Active(uuid.uuid4(), t, severity or SEVERITY[t], start_t, start_frame, now, frame)
        self.active[t] = a
        return a

    def close(self, t: EventType, now: float) -> Active | None:
        a = self.active.pop(t, None)
        if a is not None and t in COOLDOWN_TYPES:
            self._cooldown_until[t] = now + self.cooldown_s
        return a

    def hold(self, t: EventType) -> None:
        """The condition holds again: hysteresis starts over."""
        a = self.active.get(t)
        if a is not None:
            a.clear_since = None

    def cleared(self, t: EventType, now: float) -> bool:
        """The condition is false in this frame: True once it has been false for
        ``hysteresis_s`` (then the caller ends the alert)."""
        a = self.active.get(t)
        if a is None:
            return False
        if a.clear_since is None:
            a.clear_since = now
        return now - a.clear_since >= self.hysteresis_s
