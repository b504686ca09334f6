"""Drowsiness policy: per-frame features in, events out.  No I/O, no clocks, no threads.

The detector is fed one :class:`~edge_agent.perception.features.FrameFeatures` at a time (``update``)
and answers with the events of that frame, so an alert is raised in the very frame in which
its condition becomes true.  All durations come from the frames' own timestamps, in seconds,
so a 15 fps and a 30 fps source behave alike, and replaying a clip is deterministic.

Openness is EAR divided by this driver's calibrated open-eye EAR: a fixed EAR threshold
fails for narrow or wide eyes.  Calibration accepts only frames whose EAR is near the current
baseline with the head facing forward, and clamps the result, so it cannot learn closed or
downcast eyes as "open" even when the trip starts with a drowsy driver.
"""

from __future__ import annotations

import math
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np
from pydantic import ValidationError

from edge_agent.config import DetectorConfig, ModelsConfig
from edge_agent.perception.features import FrameFeatures
from sleepsafe.protocol import (
    ALERT_STATE,
    ANGLE_MAX,
    EAR_MAX,
    INT32_MAX,
    RATIO_MAX,
    STATE_PRIORITY,
    DriverState,
    Event,
    EventType,
    FeatureSample,
    Severity,
    clamp,
)

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
}
_COOLDOWN_TYPES = (EventType.DROWSY, EventType.DISTRACTED)


@dataclass(slots=True)
class _Active:
    """An alert that has been raised and not yet ended."""

    event_id: uuid.UUID
    type: EventType
    severity: Severity
    start_t: float
    start_frame: int
    raised_t: float
    raised_frame: int
    clear_since: float | None = None  # condition false since (for hysteresis)


@dataclass(slots=True)
class Calibration:
    """Open-eye EAR baseline and neutral head pose of the current driver."""

    prior: float
    baseline: float
    neutral_yaw: float = 0.0
    neutral_pitch: float = 0.0
    done: bool = False
    accepted_s: float = 0.0
    ears: list[float] = field(default_factory=list)
    yaws: list[float] = field(default_factory=list)
    pitches: list[float] = field(default_factory=list)

    def reset(self) -> None:
        self.baseline = self.prior
        self.neutral_yaw = self.neutral_pitch = 0.0
        self.done = False
        self.accepted_s = 0.0
        self.ears.clear()
        self.yaws.clear()
        self.pitches.clear()


def _clamp(x: float, lo: float, hi: float) -> float:
    return min(hi, max(lo, x))


class Detector:
    """Blinks, closures, PERCLOS, yawns, nods, distraction and the alert state machine."""

    def __init__(
        self,
        cfg: DetectorConfig,
        models: ModelsConfig | None = None,
        device_id: str = "edge-0",
        start_wallclock: datetime | None = None,
        model_versions: dict[str, str] | None = None,
    ) -> None:
        self.cfg = cfg
        self.models = models  # None: EAR alone; else fuse the eye-state probability
        self.device_id = device_id
        self.model_versions = dict(model_versions or {})
        self._epoch = start_wallclock or datetime.now(timezone.utc)
        self.cal = Calibration(prior=cfg.prior_open_ear, baseline=cfg.prior_open_ear)
        self._window: deque[FeatureSample] = deque()
        self._last_t: float | None = None
        self._last_frame = -1
        # PERCLOS: (t, dt, closed) of face frames in the window, with running sums.
        self._perclos_q: deque[tuple[float, float, bool]] = deque()
        self._perclos_total = 0.0
        self._perclos_closed = 0.0
        self.perclos = 0.0
        # Shallow closure (blinks) and deep closure (microsleep/sleep) episodes.
        self._blink_start: tuple[float, int] | None = None
        self._blink_min = 1.0
        self._blink_prob = 0.0
        self._deep_start: tuple[float, int] | None = None
        self._deep_open_since: float | None = None
        self._deep_last_closed: tuple[float, int] | None = None
        self._blinks: deque[float] = deque()  # end times, for the blink rate
        self._long_blinks: deque[float] = deque()
        self._yawns: deque[float] = deque()
        self._microsleeps: deque[float] = deque()
        self._yawn_start: tuple[float, int] | None = None
        self._yawn_raised = False
        self._nod_start: tuple[float, int] | None = None
        self._off_filter = 0.0
        self._off_start: tuple[float, int] | None = None
        self._face_last_seen: float | None = None
        self._face_lost_at: tuple[float, int] | None = None
        self._active: dict[EventType, _Active] = {}
        self._cooldown_until: dict[EventType, float] = {}
        self.blink_count = 0
        self.long_blink_count = 0
        self._long_blinks_taken = 0  # long_blink_count at the last take_blinks()
        self.invalid_records = 0  # records built although the protocol refuses them (see _event)
        # Blink durations (ms) not yet summarised in a telemetry message: see take_blinks().
        self._blink_durations: list[int] = []
        self.last_openness = 1.0
        self.last_ear = 0.0
        self.state = DriverState.AWAKE

    # ----------------------------------------------------------------- public API
    def recalibrate(self) -> None:
        """Forget the driver: learn a new open-eye baseline from the next frames."""
        self.cal.reset()

    @property
    def is_drowsy(self) -> bool:
        return any(t in self._active for t in (EventType.DROWSY, EventType.MICROSLEEP, EventType.SLEEP))

    def blink_rate(self) -> float:
        """Blinks per minute over the PERCLOS window (or the time seen so far)."""
        span = min(self.cfg.perclos_window_s, max(1e-6, self._perclos_total))
        return len(self._blinks) * 60.0 / span if self._perclos_total > 1.0 else 0.0

    def status(self) -> DriverStatus:
        """The driver after the last frame, as one frozen value."""
        return DriverStatus(
            state=self.state,
            perclos=self.perclos,
            blinks=self.blink_count,
            blink_rate_per_min=self.blink_rate(),
            long_blinks=self.long_blink_count,
            baseline_ear=self.cal.baseline,
            calibrated=self.cal.done,
            openness=self.last_openness,
            ear=self.last_ear,
            is_drowsy=self.is_drowsy,
            invalid_records=self.invalid_records,
        )

    def snapshot(self) -> dict[str, float | int | bool | str]:
        return self.status().summary()

    def update(self, f: FrameFeatures) -> list[Event]:
        """Consume one frame; return the events raised, ended or completed in it."""
        out: list[Event] = []
        dt = 0.0 if self._last_t is None else max(0.0, f.t - self._last_t)
        # A gap of more than a second (a dropped stretch) is not credited as observed time.
        dt = min(dt, 1.0)
        self._last_t, self._last_frame = f.t, f.frame
        if CAMERA_LOST_ACTIVE in self._active:
            out += self._end(EventType.CAMERA_LOST, f)
        openness = self._openness(f) if f.face else 1.0
        self._remember(f, openness)
        if f.face:
            out += self._face_seen(f)
            self._calibrate(f, dt)
            closed = self._deep_closed(f, openness)
            self._perclos_add(f.t, dt, closed)
            out += self._blinks_step(f, openness)
            out += self._deep_step(f, openness, closed)
            out += self._yawn_step(f)
            out += self._nod_step(f, openness)
            out += self._distraction_step(f, dt, openness)
        else:
            out += self._face_missing(f)
            self._perclos_expire(f.t)
        out += self._drowsy_step(f)
        self._update_state()
        for e in out:
            e.state = self.state
        return out

    def camera_lost(self, t: float, frame: int) -> list[Event]:
        """The source failed: raise CAMERA_LOST (once) and freeze everything else."""
        self._last_t = t if self._last_t is None else max(self._last_t, t)
        self._last_frame = max(self._last_frame, frame)  # a camera that never gave a frame: 0
        if EventType.CAMERA_LOST in self._active:
            return []
        f = FrameFeatures(t=t, frame=frame, face=False)
        out = [self._raise(EventType.CAMERA_LOST, f, t, frame)]
        self._update_state()
        for e in out:
            e.state = self.state
        return out

    def finish(self) -> list[Event]:
        """End of stream: close every open alert at the last frame seen."""
        if self._last_t is None:
            return []
        f = FrameFeatures(t=self._last_t, frame=self._last_frame, face=False)
        out = [self._end(t, f) for t in list(self._active)]
        events = [e for sub in out for e in sub]
        self._update_state()
        for e in events:
            e.state = self.state
        return events

    # ----------------------------------------------------------------- signals
    def _openness(self, f: FrameFeatures) -> float:
        return f.ear / self.cal.baseline if self.cal.baseline > 0 else 1.0

    def _looking_down(self, f: FrameFeatures) -> bool:
        """Low EAR with the head pitched down and the irises still between the lids: the eyes
        follow the road or the dashboard, they are not shut."""
        pitch_rel = f.pitch - self.cal.neutral_pitch
        return pitch_rel <= -self.cfg.look_down_pitch_deg and f.iris_vis >= self.cfg.iris_visible_min

    def _deep_closed(self, f: FrameFeatures, openness: float) -> bool:
        """Eyes ≥ 80 % shut.  With the eye-state model, EAR's verdict needs the model's
        agreement (a look-down or a squint keeps the iris and lashes visible).  Only when asked
        (``strong_prob`` < 1) may a very sure model mark a half-shut eye as shut: a model that
        never saw the driver is sure in a downcast look too (talkingface, fold model)."""
        m = self.models
        if m is None or f.eye_prob < 0:
            return openness <= self.cfg.closed_ratio and not self._looking_down(f)
        if m.strong_prob < 1.0 and f.eye_prob >= m.strong_prob and openness <= m.strong_openness:
            return True
        return openness <= self.cfg.closed_ratio and f.eye_prob >= m.closed_prob

    def _remember(self, f: FrameFeatures, openness: float) -> None:
        self.last_openness = openness
        self.last_ear = f.ear
        self._window.append(
            FeatureSample(
                t_ms=_ms(f.t),
                frame=f.frame,
                face=f.face,
                ear=round(clamp(f.ear, 0.0, EAR_MAX), 4),
                ear_left=round(clamp(f.ear_left, 0.0, EAR_MAX), 4),
                ear_right=round(clamp(f.ear_right, 0.0, EAR_MAX), 4),
                openness=round(clamp(openness, 0.0, RATIO_MAX), 3),
                mar=round(clamp(f.mar, 0.0, RATIO_MAX), 4),
                yaw=round(clamp(f.yaw, -ANGLE_MAX, ANGLE_MAX), 1),
                pitch=round(clamp(f.pitch, -ANGLE_MAX, ANGLE_MAX), 1),
                roll=round(clamp(f.roll, -ANGLE_MAX, ANGLE_MAX), 1),
                iris_vis=round(clamp(f.iris_vis, 0.0, 1.0), 3),
            )
        )
        horizon = f.t - self.cfg.window_s
        while self._window and self._window[0].t_ms / 1000.0 < horizon:
            self._window.popleft()

    # ----------------------------------------------------------------- calibration
    def _calibrate(self, f: FrameFeatures, dt: float) -> None:
        c, cfg = self.cal, self.cfg
        facing = abs(f.yaw - c.neutral_yaw) < cfg.distracted_yaw_deg and abs(f.pitch - c.neutral_pitch) < (
            cfg.distracted_pitch_deg if c.done else 35.0
        )
        if not facing or f.ear < cfg.calibration_accept_ratio * c.baseline:
            return
        if not c.done:
            c.ears.append(f.ear)
            c.yaws.append(f.yaw)
            c.pitches.append(f.pitch)
            c.accepted_s += dt
            if c.accepted_s >= cfg.calibration_s and len(c.ears) >= 5:
                # The upper quantile: squints and glances in the accepted samples pull it down less.
                c.baseline = _clamp(
                    float(np.quantile(c.ears, cfg.calibration_quantile)), cfg.min_open_ear, cfg.max_open_ear
                )
                # Clamp the neutral pose too: a driver who starts slumped is not "neutral".
                c.neutral_yaw = _clamp(float(np.median(c.yaws)), -20.0, 20.0)
                c.neutral_pitch = _clamp(float(np.median(c.pitches)), -20.0, 20.0)
                c.done = True
                c.ears.clear()
                c.yaws.clear()
                c.pitches.clear()
        else:
            # Track slow drift (lighting, seat position) with a one-minute time constant.
            a = 1.0 - math.exp(-dt / 60.0)
            c.baseline = _clamp(c.baseline + a * (f.ear - c.baseline), cfg.min_open_ear, cfg.max_open_ear)

    # ----------------------------------------------------------------- face presence
    def _face_seen(self, f: FrameFeatures) -> list[Event]:
        out: list[Event] = []
        if self._face_lost_at is not None:
            absent = f.t - self._face_lost_at[0]
            if absent >= self.cfg.recalibrate_after_absent_s:
                self.recalibrate()
            self._face_lost_at = None
        self._face_last_seen = f.t
        a = self._active.get(EventType.NO_FACE)
        if a is not None:
            out += self._end(EventType.NO_FACE, f)
        return out

    def _face_missing(self, f: FrameFeatures) -> list[Event]:
        out: list[Event] = []
        if self._face_lost_at is None:
            self._face_lost_at = (f.t, f.frame)
        lost_t, lost_frame = self._face_lost_at
        absent = f.t - lost_t
        if absent > self.cfg.face_gap_s:
            # Too long to be a tracking glitch: closure and blink timers stop here.
            self._blink_start = None
            out += self._deep_end(f)
            self._yawn_start, self._yawn_raised = None, False
            self._nod_start = None
        if absent >= self.cfg.no_face_s and EventType.NO_FACE not in self._active:
            out.append(self._raise(EventType.NO_FACE, f, lost_t, lost_frame))
        return out

    # ----------------------------------------------------------------- PERCLOS
    def _perclos_add(self, t: float, dt: float, closed: bool) -> None:
        self._perclos_q.append((t, dt, closed))
        self._perclos_total += dt
        if closed:
            self._perclos_closed += dt
        self._perclos_expire(t)

    def _perclos_expire(self, t: float) -> None:
        horizon = t - self.cfg.perclos_window_s
        q = self._perclos_q
        while q and q[0][0] < horizon:
            _, dt, closed = q.popleft()
            self._perclos_total -= dt
            if closed:
                self._perclos_closed -= dt
        self.perclos = self._perclos_closed / self._perclos_total if self._perclos_total > 1e-9 else 0.0
        for dq in (self._blinks, self._long_blinks):
            while dq and dq[0] < horizon:
                dq.popleft()
        while self._yawns and self._yawns[0] < t - self.cfg.yawn_window_s:
            self._yawns.popleft()
        while self._microsleeps and self._microsleeps[0] < t - self.cfg.escalation_window_s:
            self._microsleeps.popleft()

    # ----------------------------------------------------------------- blinks
    def _blinks_step(self, f: FrameFeatures, openness: float) -> list[Event]:
        cfg = self.cfg
        if self._blink_start is None:
            if openness < cfg.blink_close_ratio and not self._looking_down(f):
                self._blink_start = (f.t, f.frame)
                self._blink_min = openness
                self._blink_prob = f.eye_prob
            return []
        self._blink_min = min(self._blink_min, openness)
        self._blink_prob = max(self._blink_prob, f.eye_prob)
        if openness <= cfg.blink_open_ratio:
            return []
        start_t, start_frame = self._blink_start
        self._blink_start = None
        # The eye is open again in this frame: the closure lasted until the previous one.
        dur = f.t - start_t
        deep = self._blink_min <= cfg.blink_depth_ratio
        if self.models is not None and self._blink_prob >= 0:
            # With the model, a dip counts as a blink when the model saw the eye shut.
            deep = (
                self._blink_prob >= self.models.closed_prob
                and self._blink_min <= self.models.strong_openness * 1.5
            )
        if not deep or dur < cfg.blink_min_s:
            return []
        if dur <= cfg.blink_max_s:
            self.blink_count += 1
            self._blinks.append(f.t)
            if len(self._blink_durations) < 3600:  # bounded if nobody takes them
                self._blink_durations.append(round(dur * 1000))
            return [self._instant(EventType.BLINK, f, start_t, start_frame)]
        if dur < cfg.microsleep_s:
            self._long_blinks.append(f.t)
            self.long_blink_count += 1
        return []

    def take_blinks(self) -> tuple[list[int], int]:
        """The blinks since the last call: each one's duration (ms) and how many long blinks
        there were. Protocol v2 sends them in telemetry instead of one event per blink."""
        out, self._blink_durations = self._blink_durations, []
        long_blinks, self._long_blinks_taken = (
            self.long_blink_count - self._long_blinks_taken,
            self.long_blink_count,
        )
        return out, long_blinks

    # ----------------------------------------------------------------- microsleep / sleep
    def _deep_step(self, f: FrameFeatures, openness: float, closed: bool) -> list[Event]:
        cfg = self.cfg
        out: list[Event] = []
        if self._deep_start is None:
            if not closed:
                return out
            self._deep_start = (f.t, f.frame)
        if closed:
            self._deep_open_since = None
            self._deep_last_closed = (f.t, f.frame)
        else:
            # Open again (or a look-down): a gap longer than reopen_s ends the closure, a single
            # noisy frame does not.
            if self._deep_open_since is None:
                self._deep_open_since = f.t
            if f.t - self._deep_open_since >= cfg.reopen_s:
                return self._deep_end(f)
        start_t, start_frame = self._deep_start
        closed_for = f.t - start_t
        if closed and closed_for >= cfg.microsleep_s and EventType.MICROSLEEP not in self._active:
            sev = Severity.EMERGENCY if self._microsleeps else Severity.CRITICAL
            self._microsleeps.append(f.t)
            out.append(self._raise(EventType.MICROSLEEP, f, start_t, start_frame, severity=sev))
        if closed and closed_for >= cfg.sleep_s and EventType.SLEEP not in self._active:
            out.append(self._raise(EventType.SLEEP, f, start_t, start_frame))
        return out

    def _deep_end(self, f: FrameFeatures) -> list[Event]:
        self._deep_start = None
        self._deep_open_since = None
        out: list[Event] = []
        for t in (EventType.SLEEP, EventType.MICROSLEEP):
            if t in self._active:
                out += self._end(t, f)
        return out

    # ----------------------------------------------------------------- yawns, nods
    def _yawn_step(self, f: FrameFeatures) -> list[Event]:
        cfg = self.cfg
        out: list[Event] = []
        if f.mar >= cfg.yawn_mar:
            if self._yawn_start is None:
                self._yawn_start = (f.t, f.frame)
            elif not self._yawn_raised and f.t - self._yawn_start[0] >= cfg.yawn_min_s:
                self._yawn_raised = True
                self._yawns.append(f.t)
                out.append(self._raise(EventType.YAWN, f, *self._yawn_start))
        elif f.mar < 0.8 * cfg.yawn_mar:
            if self._yawn_raised:
                out += self._end(EventType.YAWN, f)
            self._yawn_start, self._yawn_raised = None, False
        return out

    def _nod_step(self, f: FrameFeatures, openness: float) -> list[Event]:
        if not self.cal.done:
            return []
        drop = self.cal.neutral_pitch - f.pitch
        if self._nod_start is None:
            if drop >= self.cfg.nod_pitch_deg:
                self._nod_start = (f.t, f.frame)
            return []
        if drop >= self.cfg.nod_pitch_deg / 2.0:
            if f.t - self._nod_start[0] > self.cfg.nod_max_s:
                self._nod_start = None  # a held head-down is distraction, not a nod
            return []
        start_t, start_frame = self._nod_start
        self._nod_start = None
        return [self._instant(EventType.NOD, f, start_t, start_frame)]

    # ----------------------------------------------------------------- distraction
    def _distraction_step(self, f: FrameFeatures, dt: float, openness: float) -> list[Event]:
        cfg, c = self.cfg, self.cal
        yaw_off = abs(f.yaw - c.neutral_yaw) > cfg.distracted_yaw_deg
        pitch_rel = f.pitch - c.neutral_pitch
        pitch_off = pitch_rel < -cfg.distracted_pitch_deg or pitch_rel > 1.25 * cfg.distracted_pitch_deg
        # Gaze counts only while the eyes are open enough for the iris to be located.
        gaze_off = openness >= cfg.blink_open_ratio and abs(f.gaze_x) > cfg.distracted_gaze
        off = 1.0 if (yaw_off or pitch_off or gaze_off) else 0.0
        self._off_filter += (off - self._off_filter) * (1.0 - math.exp(-dt / cfg.distraction_filter_s))
        out: list[Event] = []
        if self._off_filter > 0.63:
            if self._off_start is None:
                self._off_start = (f.t, f.frame)
            started, frame0 = self._off_start
            if f.t - started >= cfg.distracted_s and EventType.DISTRACTED not in self._active:
                e = self._raise_with_cooldown(EventType.DISTRACTED, f, started, frame0)
                if e is not None:
                    out.append(e)
            self._clear_since(EventType.DISTRACTED, None)
        elif self._off_filter < 0.37:
            self._off_start = None
            out += self._clear_with_hysteresis(EventType.DISTRACTED, f)
        return out

    # ----------------------------------------------------------------- drowsiness
    def _drowsy_step(self, f: FrameFeatures) -> list[Event]:
        cfg = self.cfg
        covered = self._perclos_total >= min(cfg.perclos_min_coverage_s, cfg.perclos_window_s)
        perclos_high = covered and self.perclos >= cfg.perclos_drowsy
        perclos_low = not covered or self.perclos < cfg.perclos_recover
        long_blinks = len(self._long_blinks) >= cfg.long_blinks_drowsy
        yawns = len(self._yawns) >= cfg.yawns_drowsy
        scored = self.models is not None and f.drowsy_score >= self.models.drowsy_score
        out: list[Event] = []
        if perclos_high or long_blinks or yawns or scored:
            if EventType.DROWSY not in self._active:
                e = self._raise_with_cooldown(EventType.DROWSY, f, f.t, f.frame)
                if e is not None:
                    out.append(e)
            self._clear_since(EventType.DROWSY, None)
        elif perclos_low and not long_blinks and not yawns and not scored:
            out += self._clear_with_hysteresis(EventType.DROWSY, f)
        return out

    # ----------------------------------------------------------------- state machine
    def _raise_with_cooldown(
        self, t: EventType, f: FrameFeatures, start_t: float, start_frame: int
    ) -> Event | None:
        if f.t < self._cooldown_until.get(t, -math.inf):
            return None
        return self._raise(t, f, start_t, start_frame)

    def _clear_since(self, t: EventType, value: float | None) -> None:
        a = self._active.get(t)
        if a is not None:
            a.clear_since = value

    def _clear_with_hysteresis(self, t: EventType, f: FrameFeatures) -> list[Event]:
        a = self._active.get(t)
        if a is None:
            return []
        if a.clear_since is None:
            a.clear_since = f.t
        if f.t - a.clear_since >= self.cfg.hysteresis_s:
            return self._end(t, f)
        return []

    def _update_state(self) -> None:
        for state in STATE_PRIORITY:
            if any(ALERT_STATE.get(t) == state for t in self._active):
                self.state = state
                return
        self.state = DriverState.AWAKE

    def _wall(self, t: float) -> datetime:
        return self._epoch + timedelta(seconds=t)

    def _event(self, **kw: object) -> Event:
        fields: dict[str, Any] = {
            "device_id": self.device_id,
            "state": self.state,
            "ear_value": round(clamp(self.last_ear, 0.0, EAR_MAX), 4),
            "openness": round(clamp(self.last_openness, 0.0, RATIO_MAX), 3),
            "is_drowsy": self.is_drowsy,
            "perclos": round(clamp(self.perclos, 0.0, 1.0), 4),
            "model_versions": self.model_versions,
            "features": list(self._window),
            **kw,
        }
        try:
            return Event(**fields)
        except ValidationError:
            # A record the protocol refuses (a model card with an over-long version, say) must
            # still alarm on the vehicle: the outputs and the journal get it as built, the sink
            # keeps it as a dead letter with the reason, and the count shows in the stats.
            self.invalid_records += 1
            return Event.model_construct(**fields)

    def _raise(
        self,
        t: EventType,
        f: FrameFeatures,
        start_t: float,
        start_frame: int,
        severity: Severity | None = None,
    ) -> Event:
        a = _Active(
            event_id=uuid.uuid4(),
            type=t,
            severity=severity or SEVERITY[t],
            start_t=start_t,
            start_frame=start_frame,
            raised_t=f.t,
            raised_frame=f.frame,
        )
        self._active[t] = a
        self._update_state()
        return self._event(
            event_id=a.event_id,
            type=t,
            phase="raised",
            severity=a.severity,
            start_time=self._wall(start_t),
            raised_time=self._wall(f.t),
            start_ms=_ms(start_t),
            raised_ms=_ms(f.t),
            start_frame=start_frame,
            raised_frame=f.frame,
        )

    def _end(self, t: EventType, f: FrameFeatures) -> list[Event]:
        a = self._active.pop(t, None)
        if a is None:
            return []
        if t in _COOLDOWN_TYPES:
            self._cooldown_until[t] = f.t + self.cfg.cooldown_s
        return [
            self._event(
                event_id=a.event_id,
                type=t,
                phase="ended",
                severity=a.severity,
                start_time=self._wall(a.start_t),
                raised_time=self._wall(a.raised_t),
                end_time=self._wall(f.t),
                start_ms=_ms(a.start_t),
                raised_ms=_ms(a.raised_t),
                end_ms=_ms(f.t),
                start_frame=a.start_frame,
                raised_frame=a.raised_frame,
                end_frame=f.frame,
                duration_ms=min(INT32_MAX, max(0, round((f.t - a.start_t) * 1000))),
            )
        ]

    def _instant(self, t: EventType, f: FrameFeatures, start_t: float, start_frame: int) -> Event:
        return self._event(
            type=t,
            phase="instant",
            severity=SEVERITY[t],
            start_time=self._wall(start_t),
            end_time=self._wall(f.t),
            start_ms=_ms(start_t),
            end_ms=_ms(f.t),
            start_frame=start_frame,
            end_frame=f.frame,
            duration_ms=min(INT32_MAX, max(0, round((f.t - start_t) * 1000))),
        )


@dataclass(frozen=True, slots=True)
class DriverStatus:
    """What the policy knows of the driver after a frame: the one value telemetry, stats, the
    replay summary and the preview read, so none of them reaches into the detector's state."""

    state: DriverState
    perclos: float  # P80 over the rolling window, 0-1
    blinks: int  # since the start
    blink_rate_per_min: float
    long_blinks: int  # since the start
    baseline_ear: float  # this driver's calibrated open-eye EAR (the prior until calibrated)
    calibrated: bool
    openness: float  # EAR / baseline in the last frame with a face
    ear: float  # in the last frame with a face
    is_drowsy: bool
    invalid_records: int  # records built although the protocol refuses them

    def summary(self) -> dict[str, float | int | bool | str]:
        """The rounded figures the stats line and the log carry."""
        return {
            "state": self.state.value,
            "perclos": round(self.perclos, 4),
            "blinks": self.blinks,
            "blink_rate_per_min": round(self.blink_rate_per_min, 2),
            "baseline_ear": round(self.baseline_ear, 4),
            "calibrated": self.calibrated,
            "openness": round(self.openness, 3),
        }


CAMERA_LOST_ACTIVE = EventType.CAMERA_LOST


def _ms(t: float) -> int:
    """Stream seconds as the protocol's milliseconds: never negative (some files time their first
    frame a few ms before zero)."""
    return max(0, round(t * 1000))
