"""Eye closures: blinks (shallow, short) and deep closures (microsleep, sleep).

Both are episodes in stream time with thresholds in seconds, so a 15 fps and a 30 fps source
behave alike.  The holders here only track the episodes; the detector turns them into alerts.
"""

from __future__ import annotations

from dataclasses import dataclass

from edge_agent.config import DetectorConfig, ModelsConfig


def eyes_shut(
    openness: float,
    closed_prob: float | None,
    looking_down: bool,
    cfg: DetectorConfig,
    models: ModelsConfig | None,
) -> bool:
    """Eyes ≥ 80 % shut in this frame.  With a model, EAR's verdict needs the model's agreement
    (a look-down or a squint keeps the iris and lashes visible).  Only when asked
    (``strong_prob`` < 1) may a very sure model mark a half-shut eye as shut: a model that never
    saw the driver is sure in a downcast look too."""
    if models is None or closed_prob is None:
        return openness <= cfg.closed_ratio and not looking_down
    if models.strong_prob < 1.0 and closed_prob >= models.strong_prob and openness <= models.strong_openness:
        return True
    return openness <= cfg.closed_ratio and closed_prob >= models.closed_prob


@dataclass(frozen=True, slots=True)
class Blink:
    start_t: float
    start_frame: int
    duration_s: float
    long: bool  # longer than blink_max_s, shorter than a microsleep: a drowsiness sign


class BlinkTracker:
    """A dip below ``blink_close_ratio`` that reopens above ``blink_open_ratio``, deep enough
    and between ``blink_min_s`` and ``microsleep_s`` long."""

    def __init__(self, cfg: DetectorConfig, models: ModelsConfig | None) -> None:
        self.cfg = cfg
        self.models = models
        self._start: tuple[float, int] | None = None
        self._min = 1.0
        self._prob: float | None = None

    def cancel(self) -> None:
        self._start = None

    def step(
        self, t: float, frame: int, openness: float, closed_prob: float | None, looking_down: bool
    ) -> Blink | None:
        """The blink or long blink that ended in this frame, if one did."""
        cfg = self.cfg
        if self._start is None:
            if openness < cfg.blink_close_ratio and not looking_down:
                self._start = (t, frame)
                self._min = openness
                self._prob = closed_prob
            return None
        self._min = min(self._min, openness)
        if closed_prob is not None:
            self._prob = closed_prob if self._prob is None else max(self._prob, closed_prob)
        if openness <= cfg.blink_open_ratio:
            return None
        start_t, start_frame = self._start
        self._start = None
        # The eye is open again in this frame: the closure lasted until the previous one.
        dur = t - start_t
        deep = self._min <= cfg.blink_depth_ratio
        if self.models is not None and self._prob is not None:
            # With a model, a dip counts as a blink when the model saw the eye shut.
            deep = self._prob >= self.models.closed_prob and self._min <= self.models.strong_openness * 1.5
        if not deep or dur < cfg.blink_min_s:
            return None
        if dur <= cfg.blink_max_s:
            return Blink(start_t, start_frame, dur, long=False)
        if dur < cfg.microsleep_s:
            return Blink(start_t, start_frame, dur, long=True)
        return None


class Closure:
    """A deep closure in progress.  It starts at the first shut frame.  It ends once the eyes
    have been clearly open (openness ≥ ``reopen_ratio``, or a look-down) for ``reopen_s`` with
    no shut frame between, or once no frame at all has been shut for ``closure_hold_s``.

    Frames in between (above ``closed_ratio``, below ``reopen_ratio``) are what landmark jitter
    makes of shut lids on a dark, noisy infrared frame: one or a few of them must not end the
    closure of a driver who is asleep, and a run of them longer than ``closure_hold_s`` (eyes
    hovering half-open in a look-down or a laugh) ends it, so they never add up to a closure."""

    def __init__(self, cfg: DetectorConfig) -> None:
        self.cfg = cfg
        self.start: tuple[float, int] | None = None
        self._last_shut = 0.0
        self._open_since: float | None = None

    def reset(self) -> None:
        self.start = None
        self._open_since = None

    def step(self, t: float, frame: int, shut: bool, openness: float, looking_down: bool) -> bool:
        """Feed one face frame; True if the closure ended in it (then ``start`` is None)."""
        if shut:
            if self.start is None:
                self.start = (t, frame)
            self._last_shut = t
            self._open_since = None
            return False
        if self.start is None:
            return False
        cfg = self.cfg
        if openness >= cfg.reopen_ratio or looking_down:
            if self._open_since is None:
                self._open_since = t
            if t - self._open_since >= cfg.reopen_s:
                self.reset()
                return True
        if t - self._last_shut >= cfg.closure_hold_s:
            self.reset()
            return True
        return False

    def closed_for(self, t: float) -> float:
        return 0.0 if self.start is None else t - self.start[0]
