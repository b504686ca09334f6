"""Head and mouth: distraction (eyes off the road), nods and yawns."""

from __future__ import annotations

import math

from edge_agent.config import DetectorConfig
from edge_agent.perception.features import FrameFeatures
from edge_agent.policy.calibration import Calibration

# The off-road filter's output is a fraction 0-1: above ON the driver is looking away, below
# OFF looking at the road again (a gap between the two: no flicker at the boundary).
OFF_ROAD_ON = 0.63
OFF_ROAD_OFF = 0.37
# Looking up counts as off-road only at this multiple of the look-down threshold.
PITCH_UP_FACTOR = 1.25
# A yawn ends once MAR falls below this share of the yawn threshold.
YAWN_END_FACTOR = 0.8


class OffRoad:
    """Head turned, pitched or eyes aside, low-pass filtered over ``distraction_filter_s``."""

    def __init__(self, cfg: DetectorConfig) -> None:
        self.cfg = cfg
        self.level = 0.0
        self.start: tuple[float, int] | None = None  # since when the filtered level is "off"

    def step(self, f: FrameFeatures, dt: float, openness: float, cal: Calibration) -> bool | None:
        """True while looking away, False once looking at the road again, None in between."""
        cfg = self.cfg
        yaw_off = abs(f.yaw - cal.neutral_yaw) > cfg.distracted_yaw_deg
        pitch_rel = f.pitch - cal.neutral_pitch
        pitch_off = (
            pitch_rel < -cfg.distracted_pitch_deg or pitch_rel > PITCH_UP_FACTOR * cfg.distracted_pitch_deg
        )
        # Gaze counts only while the eyes are open enough for the iris to be located.
        gaze_off = openness >= cfg.blink_open_ratio and abs(f.gaze_x) > cfg.distracted_gaze
        off = 1.0 if (yaw_off or pitch_off or gaze_off) else 0.0
        self.level += (off - self.level) * (1.0 - math.exp(-dt / cfg.distraction_filter_s))
        if self.level > OFF_ROAD_ON:
            if self.start is None:
                self.start = (f.t, f.frame)
            return True
        if self.level < OFF_ROAD_OFF:
            self.start = None
            return False
        return None


class Nods:
    """A head drop of ``nod_pitch_deg`` that comes back up within ``nod_max_s``."""

    def __init__(self, cfg: DetectorConfig) -> None:
        self.cfg = cfg
        self._start: tuple[float, int] | None = None

    def cancel(self) -> None:
        self._start = None

    def step(self, f: FrameFeatures, cal: Calibration) -> tuple[float, int] | None:
        """The start (t, frame) of a nod that ended in this frame, if one did."""
        if not cal.done:
            return None
        drop = cal.pitch_drop(f.pitch)
        if self._start is None:
            if drop >= self.cfg.nod_pitch_deg:
                self._start = (f.t, f.frame)
            return None
        if drop >= self.cfg.nod_pitch_deg / 2.0:
            if f.t - self._start[0] > self.cfg.nod_max_s:
                self._start = None  # a held head-down is distraction, not a nod
            return None
        start, self._start = self._start, None
        return start


class Yawns:
    """MAR above ``yawn_mar`` for ``yawn_min_s``."""

    def __init__(self, cfg: DetectorConfig) -> None:
        self.cfg = cfg
        self.start: tuple[float, int] | None = None
        self.raised = False

    def cancel(self) -> None:
        self.start, self.raised = None, False

    def step(self, f: FrameFeatures) -> str | None:
        """ "raised" when a yawn is confirmed in this frame, "ended" when a raised one ends."""
        cfg = self.cfg
        if f.mar >= cfg.yawn_mar:
            if self.start is None:
                self.start = (f.t, f.frame)
            elif not self.raised and f.t - self.start[0] >= cfg.yawn_min_s:
                self.raised = True
                return "raised"
            return None
        if f.mar < YAWN_END_FACTOR * cfg.yawn_mar:
            was = self.raised
            self.cancel()
            return "ended" if was else None
        return None
