"""The current driver's open-eye EAR baseline and neutral head pose.

Openness is EAR divided by this baseline: a fixed EAR threshold fails for narrow or wide eyes.
Calibration accepts only frames whose EAR is near the current baseline with the head facing
forward, and clamps the result, so it cannot learn closed or downcast eyes as "open" even when
the trip starts with a drowsy driver.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from edge_agent.config import DetectorConfig
from edge_agent.perception.features import FrameFeatures
from sleepsafe.protocol import clamp

# A neutral pose outside this (degrees) is a driver who started slumped or turned, not neutral.
NEUTRAL_POSE_MAX_DEG = 20.0
# Before calibration the neutral pitch is unknown: accept a wider pitch range than afterwards.
UNCALIBRATED_PITCH_DEG = 35.0
# After calibration the baseline follows slow drift (lighting, seat position) with this time constant.
DRIFT_TIME_CONSTANT_S = 60.0
MIN_SAMPLES = 5


@dataclass(slots=True)
class Calibration:
    cfg: DetectorConfig
    baseline: float = 0.0
    neutral_yaw: float = 0.0
    neutral_pitch: float = 0.0
    done: bool = False
    accepted_s: float = 0.0
    ears: list[float] = field(default_factory=list)
    yaws: list[float] = field(default_factory=list)
    pitches: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.baseline = self.cfg.prior_open_ear

    def reset(self) -> None:
        """Forget the driver: learn a new baseline from the next frames."""
        self.baseline = self.cfg.prior_open_ear
        self.neutral_yaw = self.neutral_pitch = 0.0
        self.done = False
        self.accepted_s = 0.0
        self.ears.clear()
        self.yaws.clear()
        self.pitches.clear()

    def openness(self, ear: float) -> float:
        return ear / self.baseline if self.baseline > 0 else 1.0

    def pitch_drop(self, pitch: float) -> float:
        """Degrees the head is pitched down from this driver's neutral pose."""
        return self.neutral_pitch - pitch

    def update(self, f: FrameFeatures, dt: float) -> None:
        cfg = self.cfg
        pitch_range = cfg.distracted_pitch_deg if self.done else UNCALIBRATED_PITCH_DEG
        facing = (
            abs(f.yaw - self.neutral_yaw) < cfg.distracted_yaw_deg
            and abs(f.pitch - self.neutral_pitch) < pitch_range
        )
        if not facing or f.ear < cfg.calibration_accept_ratio * self.baseline:
            return
        if self.done:
            a = 1.0 - math.exp(-dt / DRIFT_TIME_CONSTANT_S)
            self.baseline = clamp(
                self.baseline + a * (f.ear - self.baseline), cfg.min_open_ear, cfg.max_open_ear
            )
            return
        self.ears.append(f.ear)
        self.yaws.append(f.yaw)
        self.pitches.append(f.pitch)
        self.accepted_s += dt
        if self.accepted_s >= cfg.calibration_s and len(self.ears) >= MIN_SAMPLES:
            # The upper quantile: squints and glances in the accepted samples pull it down less.
            q = float(np.quantile(self.ears, cfg.calibration_quantile))
            self.baseline = clamp(q, cfg.min_open_ear, cfg.max_open_ear)
            m = NEUTRAL_POSE_MAX_DEG
            self.neutral_yaw = clamp(float(np.median(self.yaws)), -m, m)
            self.neutral_pitch = clamp(float(np.median(self.pitches)), -m, m)
            self.done = True
            self.ears.clear()
            self.yaws.clear()
            self.pitches.clear()
