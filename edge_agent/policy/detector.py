"""Drowsiness policy: per-frame features in, events out.  No I/O, no clocks, no threads.

The detector is fed one :class:`~edge_agent.perception.features.FrameFeatures` (and the models'
:class:`~edge_agent.inference.outputs.ModelOutputs`) at a time and answers with the events of
that frame, so an alert is raised in the very frame in which its condition becomes true.  All
durations come from the frames' own timestamps, in seconds, so a 15 fps and a 30 fps source
behave alike, and replaying a clip is deterministic.

It composes small state holders, each testable alone: :class:`Calibration` (the driver's
open-eye baseline), :class:`Perclos` and :class:`Recent` (rolling windows), :class:`BlinkTracker`
and :class:`Closure` (eye closures), :class:`OffRoad`, :class:`Nods`, :class:`Yawns` (head and
mouth), and the :class:`AlertBook` (raised alerts, cooldowns, hysteresis, the driver state).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from pydantic import ValidationError

from edge_agent.config import DetectorConfig, ModelsConfig
from edge_agent.inference.outputs import NO_MODELS, ModelOutputs
from edge_agent.perception.features import FrameFeatures
from edge_agent.policy.alerts import SEVERITY, Active, AlertBook
from edge_agent.policy.attention import Nods, OffRoad, Yawns
from edge_agent.policy.calibration import Calibration
from edge_agent.policy.closure import BlinkTracker, Closure, eyes_shut
from edge_agent.policy.shadow import Disagreement
from edge_agent.policy.windows import Perclos, Recent
from sleepsafe.protocol import (
    ANGLE_MAX,
    EAR_MAX,
    INT32_MAX,
    RATIO_MAX,
    DriverState,
    Event,
    EventType,
    FeatureSample,
    Severity,
    clamp,
)

# A gap between frames longer than this (a dropped stretch) is not credited as observed time.
MAX_FRAME_GAP_S = 1.0
# Blink durations kept for the next telemetry message, if nobody takes them.
MAX_PENDING_BLINKS = 3600


class Detector:
    """Blinks, closures, PERCLOS, yawns, nods, distraction and the alert state machine."""

    def __init__(
        self,
        cfg: DetectorConfig,
        models: ModelsConfig | None = None,
        shadow: ModelsConfig | None = None,
        device_id: str = "edge-0",
        start_wallclock: datetime | None = None,
        model_versions: dict[str, str] | None = None,
    ) -> None:
        self.cfg = cfg
        self.models = models  # None: EAR alone; else fuse the models' closure probability
        self.shadow = shadow  # models compared with EAR (disagreement records), never deciding
        self.device_id = device_id
        self.model_versions = dict(model_versions or {})
        self._epoch = start_wallclock or datetime.now(timezone.utc)
        self.cal = Calibration(cfg)
        self.perclos = Perclos(cfg.perclos_window_s)
        self.blinks = BlinkTracker(cfg, models)
        self.closure = Closure(cfg)
        self.off_road = OffRoad(cfg)
        self.nods = Nods(cfg)
        self.yawns = Yawns(cfg)
        self.alerts = AlertBook(cfg.cooldown_s, cfg.hysteresis_s)
        self.disagreement = Disagreement(shadow.disagree_s if shadow is not None else 1.0)
        self._recent_blinks = Recent(cfg.perclos_window_s)  # for the blink rate
        self._recent_long_blinks = Recent(cfg.perclos_window_s)
        self._recent_yawns = Recent(cfg.yawn_window_s)
        self._recent_microsleeps = Recent(cfg.escalation_window_s)
        self._window: deque[FeatureSample] = deque()
        self._last_t: float | None = None
        self._last_frame = -1
        self._face_lost_at: tuple[float, int] | None = None
        self._last_shut: bool | None = None  # EAR's verdict in the last frame (None: no face)
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
        return self.alerts.is_drowsy

    def blink_rate(self) -> float:
        """Blinks per minute over the PERCLOS window (or the time seen so far)."""
        seen = self.perclos.total_s
        span = min(self.cfg.perclos_window_s, max(1e-6, seen))
        return len(self._recent_blinks) * 60.0 / span if seen > 1.0 else 0.0

    def status(self) -> DriverStatus:
        """The driver after the last frame, as one frozen value."""
        return DriverStatus(
            state=self.state,
            perclos=self.perclos.value,
            blinks=self.blink_count,
            blink_rate_per_min=self.blink_rate(),
            long_blinks=self.long_blink_count,
            baseline_ear=self.cal.baseline,
            neutral_pitch=self.cal.neutral_pitch,
            calibrated=self.cal.done,
            openness=self.last_openness,
            ear=self.last_ear,
            is_drowsy=self.is_drowsy,
            invalid_records=self.invalid_records,
        )

    def snapshot(self) -> dict[str, float | int | bool | str]:
        return self.status().summary()

    def update(self, f: FrameFeatures, m: ModelOutputs = NO_MODELS) -> list[Event]:
        """Consume one frame (and what the models said of it); return the events raised,
        ended or completed in it."""
        out: list[Event] = []
        dt = 0.0 if self._last_t is None else max(0.0, f.t - self._last_t)
        dt = min(dt, MAX_FRAME_GAP_S)
        self._last_t, self._last_frame = f.t, f.frame
        if EventType.CAMERA_LOST in self.alerts:
            out += self._end(EventType.CAMERA_LOST, f)
        openness = self.cal.openness(f.ear) if f.face else 1.0
        self._remember(f, openness, m)
        if f.face:
            out += self._face_seen(f)
            self.cal.update(f, dt)
            down = self._looking_down(f)
            shut = eyes_shut(openness, m.closed, down, self.cfg, self.models)
            self._last_shut = shut
            self.perclos.add(f.t, dt, shut)
            self._expire(f.t)
            out += self._disagreement_step(f, m, shut)
            out += self._blink_step(f, openness, m.closed, down)
            out += self._closure_step(f, shut, openness, down)
            out += self._yawn_step(f)
            out += self._nod_step(f)
            out += self._distraction_step(f, dt, openness)
        else:
            self._last_shut = None
            self.disagreement.cancel()
            out += self._face_missing(f)
            self.perclos.expire(f.t)
            self._expire(f.t)
        out += self._drowsy_step(f, m)
        return self._stamp(out)

    def camera_lost(self, t: float, frame: int) -> list[Event]:
        """The source failed: raise CAMERA_LOST (once) and freeze everything else."""
        self._last_t = t if self._last_t is None else max(self._last_t, t)
        self._last_frame = max(self._last_frame, frame)  # a camera that never gave a frame: 0
        if EventType.CAMERA_LOST in self.alerts:
            return []
        f = FrameFeatures(t=t, frame=frame, face=False)
        return self._stamp([self._raise(EventType.CAMERA_LOST, f, t, frame)])

    def finish(self) -> list[Event]:
        """End of stream: close every open alert at the last frame seen."""
        if self._last_t is None:
            return []
        f = FrameFeatures(t=self._last_t, frame=self._last_frame, face=False)
        return self._stamp([e for t in list(self.alerts.active) for e in self._end(t, f)])

    def acknowledge(self, via: str) -> int:
        """The driver acknowledged the active alert(s), as of the last frame; how many."""
        return self.alerts.acknowledge(_ms(self._last_t or 0.0), via)

    def late_outputs(self, frame: int, m: ModelOutputs) -> list[Event]:
        """Shadow mode, one frame behind: what the models said of ``frame`` (the last one fed),
        delivered before the next frame.  It joins that frame's sample in the window and is
        compared with that frame's EAR decision, exactly as if it had come with the frame."""
        if not self._window or self._window[-1].frame != frame:
            return []
        self._window[-1] = self._window[-1].model_copy(
            update={
                "eye_closed": _unit(m.eye_closed),
                "temporal_closed": _unit(m.temporal_closed),
                "drowsy_score": _unit(m.drowsy_score),
            }
        )
        if self._last_shut is None:  # that frame had no face
            return []
        f = FrameFeatures(t=self._last_t or 0.0, frame=frame, face=True)
        return self._stamp(self._disagreement_step(f, m, self._last_shut))

    def take_blinks(self) -> tuple[list[int], int]:
        """The blinks since the last call: each one's duration (ms) and how many long blinks
        there were. Protocol v2 sends them in telemetry instead of one event per blink."""
        out, self._blink_durations = self._blink_durations, []
        long_blinks, self._long_blinks_taken = (
            self.long_blink_count - self._long_blinks_taken,
            self.long_blink_count,
        )
        return out, long_blinks

    # ----------------------------------------------------------------- per frame
    def _stamp(self, events: list[Event]) -> list[Event]:
        """Every record of a frame carries the driver state after the frame."""
        self.state = self.alerts.state()
        for e in events:
            e.state = self.state
        return events

    def _expire(self, t: float) -> None:
        for r in (
            self._recent_blinks,
            self._recent_long_blinks,
            self._recent_yawns,
            self._recent_microsleeps,
        ):
            r.expire(t)

    def _looking_down(self, f: FrameFeatures) -> bool:
        """Low EAR with the head pitched down and the irises still between the lids: the eyes
        follow the road or the dashboard, they are not shut."""
        return (
            self.cal.pitch_drop(f.pitch) >= self.cfg.look_down_pitch_deg
            and f.iris_vis >= self.cfg.iris_visible_min
        )

    def _remember(self, f: FrameFeatures, openness: float, m: ModelOutputs) -> None:
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
                eye_closed=_unit(m.eye_closed),
                temporal_closed=_unit(m.temporal_closed),
                drowsy_score=_unit(m.drowsy_score),
            )
        )
        horizon = f.t - self.cfg.window_s
        while self._window and self._window[0].t_ms / 1000.0 < horizon:
            self._window.popleft()

    def _face_seen(self, f: FrameFeatures) -> list[Event]:
        if self._face_lost_at is not None:
            if f.t - self._face_lost_at[0] >= self.cfg.recalibrate_after_absent_s:
                self.recalibrate()
            self._face_lost_at = None
        return self._end(EventType.NO_FACE, f)

    def _face_missing(self, f: FrameFeatures) -> list[Event]:
        out: list[Event] = []
        if self._face_lost_at is None:
            self._face_lost_at = (f.t, f.frame)
        lost_t, lost_frame = self._face_lost_at
        absent = f.t - lost_t
        if absent > self.cfg.face_gap_s:
            # Too long to be a tracking glitch: closure and blink timers stop here.
            self.blinks.cancel()
            out += self._closure_end(f)
            self.yawns.cancel()
            self.nods.cancel()
        if absent >= self.cfg.no_face_s and EventType.NO_FACE not in self.alerts:
            out.append(self._raise(EventType.NO_FACE, f, lost_t, lost_frame))
        return out

    def _disagreement_step(self, f: FrameFeatures, m: ModelOutputs, ear_shut: bool) -> list[Event]:
        if self.shadow is None or m.closed is None:
            return []
        # The model's own verdict, not fused with EAR: where it alone says shut (a downcast look
        # it has not learnt) or alone says open (shut eyes EAR reads too open) is what to label.
        model_shut = m.closed >= self.shadow.closed_prob
        start = self.disagreement.step(f.t, f.frame, ear_shut, model_shut)
        return [] if start is None else [self._instant(EventType.DISAGREEMENT, f, *start)]

    def _blink_step(self, f: FrameFeatures, openness: float, prob: float | None, down: bool) -> list[Event]:
        b = self.blinks.step(f.t, f.frame, openness, prob, down)
        if b is None:
            return []
        if b.long:
            self._recent_long_blinks.add(f.t)
            self.long_blink_count += 1
            return []
        self.blink_count += 1
        self._recent_blinks.add(f.t)
        if len(self._blink_durations) < MAX_PENDING_BLINKS:
            self._blink_durations.append(round(b.duration_s * 1000))
        return [self._instant(EventType.BLINK, f, b.start_t, b.start_frame)]

    def _closure_step(self, f: FrameFeatures, shut: bool, openness: float, down: bool) -> list[Event]:
        if self.closure.step(f.t, f.frame, shut, openness, down):
            return self._end_alerts(f, EventType.SLEEP, EventType.MICROSLEEP)
        if self.closure.start is None:
            return []
        # Raised while the closure holds, in a shut frame or a jittery one between: holding is
        # the evidence that the eyes have not reopened.
        out: list[Event] = []
        start_t, start_frame = self.closure.start
        closed_for = f.t - start_t
        if closed_for >= self.cfg.microsleep_s and EventType.MICROSLEEP not in self.alerts:
            # A second microsleep within the escalation window is an emergency.
            sev = Severity.EMERGENCY if self._recent_microsleeps else Severity.CRITICAL
            self._recent_microsleeps.add(f.t)
            out.append(self._raise(EventType.MICROSLEEP, f, start_t, start_frame, severity=sev))
        if closed_for >= self.cfg.sleep_s and EventType.SLEEP not in self.alerts:
            out.append(self._raise(EventType.SLEEP, f, start_t, start_frame))
        return out

    def _closure_end(self, f: FrameFeatures) -> list[Event]:
        self.closure.reset()
        return self._end_alerts(f, EventType.SLEEP, EventType.MICROSLEEP)

    def _end_alerts(self, f: FrameFeatures, *types: EventType) -> list[Event]:
        return [e for t in types for e in self._end(t, f)]

    def _yawn_step(self, f: FrameFeatures) -> list[Event]:
        what = self.yawns.step(f)
        if what == "raised" and self.yawns.start is not None:
            self._recent_yawns.add(f.t)
            return [self._raise(EventType.YAWN, f, *self.yawns.start)]
        if what == "ended":
            return self._end(EventType.YAWN, f)
        return []

    def _nod_step(self, f: FrameFeatures) -> list[Event]:
        start = self.nods.step(f, self.cal)
        return [] if start is None else [self._instant(EventType.NOD, f, *start)]

    def _distraction_step(self, f: FrameFeatures, dt: float, openness: float) -> list[Event]:
        off = self.off_road.step(f, dt, openness, self.cal)
        if off is True and self.off_road.start is not None:
            started, frame0 = self.off_road.start
            out: list[Event] = []
            if f.t - started >= self.cfg.distracted_s and EventType.DISTRACTED not in self.alerts:
                out += self._raise_unless_cooling(EventType.DISTRACTED, f, started, frame0)
            self.alerts.hold(EventType.DISTRACTED)
            return out
        if off is False and self.alerts.cleared(EventType.DISTRACTED, f.t):
            return self._end(EventType.DISTRACTED, f)
        return []

    def _drowsy_step(self, f: FrameFeatures, m: ModelOutputs) -> list[Event]:
        cfg = self.cfg
        covered = self.perclos.total_s >= min(cfg.perclos_min_coverage_s, cfg.perclos_window_s)
        perclos_high = covered and self.perclos.value >= cfg.perclos_drowsy
        perclos_low = not covered or self.perclos.value < cfg.perclos_recover
        long_blinks = len(self._recent_long_blinks) >= cfg.long_blinks_drowsy
        yawns = len(self._recent_yawns) >= cfg.yawns_drowsy
        scored = (
            self.models is not None
            and m.drowsy_score is not None
            and m.drowsy_score >= self.models.drowsy_score
        )
        if perclos_high or long_blinks or yawns or scored:
            out: list[Event] = []
            if EventType.DROWSY not in self.alerts:
                out += self._raise_unless_cooling(EventType.DROWSY, f, f.t, f.frame)
            self.alerts.hold(EventType.DROWSY)
            return out
        if perclos_low and self.alerts.cleared(EventType.DROWSY, f.t):
            return self._end(EventType.DROWSY, f)
        return []

    # ----------------------------------------------------------------- records
    def _raise_unless_cooling(
        self, t: EventType, f: FrameFeatures, start_t: float, start_frame: int
    ) -> list[Event]:
        return [] if self.alerts.cooling(t, f.t) else [self._raise(t, f, start_t, start_frame)]

    def _wall(self, t: float) -> datetime:
        return self._epoch + timedelta(seconds=t)

    def _event(self, **kw: object) -> Event:
        fields: dict[str, Any] = {
            "device_id": self.device_id,
            "state": self.state,
            "ear_value": round(clamp(self.last_ear, 0.0, EAR_MAX), 4),
            "openness": round(clamp(self.last_openness, 0.0, RATIO_MAX), 3),
            "is_drowsy": self.is_drowsy,
            "perclos": round(clamp(self.perclos.value, 0.0, 1.0), 4),
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
        a = self.alerts.open(t, start_t, start_frame, f.t, f.frame, severity)
        self.state = self.alerts.state()
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
        a: Active | None = self.alerts.close(t, f.t)
        if a is None:
            return []
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
                acknowledged_ms=a.acknowledged_ms,
                acknowledged_via=a.acknowledged_via,
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
    neutral_pitch: float  # degrees, this driver's neutral head pitch (0 until calibrated)
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


def _unit(x: float | None) -> float | None:
    return None if x is None else round(clamp(x, 0.0, 1.0), 3)


def _ms(t: float) -> int:
    """Stream seconds as the protocol's milliseconds: never negative (some files time their first
    frame a few ms before zero)."""
    return max(0, round(t * 1000))
