"""The per-frame path shared by the daemon, replay, eval and the benchmark:
frame → landmarks → features → detector → events.  Synchronous and free of I/O."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import numpy.typing as npt
import structlog

from edge_agent.config import EdgeConfig
from edge_agent.inference.outputs import NO_MODELS, ModelOutputs
from edge_agent.inference.pipelined import PipelinedEyeState
from edge_agent.inference.runtime import EyeStateModel, TemporalModel, load_eye_state, load_temporal
from edge_agent.perception.eyecrop import CROP_H, CROP_W, encode_crops, raw_eye_crops
from edge_agent.perception.features import FrameFeatures, compute_features, no_face, temporal_vector
from edge_agent.perception.landmarks import Face, LandmarkBackend, create_backend, largest_face, to_rgb
from edge_agent.policy.detector import Detector
from sleepsafe.protocol import Event, EyeCrops

_NO_CROPS = np.zeros((2, CROP_H, CROP_W), dtype=np.uint8)
# An event's crops are left out beyond this (base64 characters): well inside the sink's default
# 256 KiB payload limit with the rest of the record, so a long window never loses the alarm.
CROPS_BUDGET_CHARS = 160 * 1024
# The shadow eye-state output of the frame before: normally ready long before it is asked for.
SHADOW_RESULT_TIMEOUT_S = 5.0

log = structlog.get_logger(__name__)


@dataclass(slots=True)
class FrameResult:
    features: FrameFeatures
    events: list[Event]
    face: Face | None = None
    faces: int = 0
    models: ModelOutputs = NO_MODELS
    extra: dict[str, float] = field(default_factory=dict)


class Pipeline:
    """Owns one landmark backend and one detector: one driver camera."""

    def __init__(
        self,
        cfg: EdgeConfig,
        backend: LandmarkBackend | None = None,
        start_wallclock: datetime | None = None,
        full_landmarks: bool = False,
    ) -> None:
        self.cfg = cfg
        self.backend = backend or create_backend(cfg.landmarks, full=full_landmarks)
        self.model_versions = {"landmarks": self.backend.version}
        self.eye_model: EyeStateModel | None = None
        self.temporal: TemporalModel | None = None
        self.providers: list[str] = []
        if cfg.models.enabled:
            self.eye_model = load_eye_state(cfg.models, cfg.state_dir)
            if self.eye_model is not None:
                self.model_versions["eye_state"] = self.eye_model.version
                self.providers = self.eye_model.providers
        if cfg.models.enabled and cfg.models.temporal_enabled:
            self.temporal = load_temporal(cfg.models, cfg.state_dir)
            if self.temporal is not None:
                self.model_versions["temporal"] = self.temporal.version
                self.providers = self.providers or self.temporal.providers
        self._last_t: float | None = None
        loaded = self.eye_model is not None or self.temporal is not None
        self.detector = Detector(
            cfg.detector,
            # on: the models share the decisions; shadow: they are only compared with EAR.
            models=cfg.models if loaded and cfg.models.mode == "on" else None,
            shadow=cfg.models if loaded and cfg.models.mode == "shadow" else None,
            device_id=cfg.device_id,
            start_wallclock=start_wallclock,
            model_versions=self.model_versions,
        )
        # Shadow mode without the temporal model: the eye-state model runs one frame behind, on
        # a worker thread, beside the next frame's landmarks (inference/pipelined.py).
        self._behind: PipelinedEyeState | None = None
        self._behind_frame = -1
        if self.eye_model is not None and self.temporal is None and cfg.models.mode == "shadow":
            self._behind = PipelinedEyeState(self.eye_model)
        # capture.eye_crops: the window's crops, by frame number, to send with each event.
        self._crops: deque[tuple[int, float, npt.NDArray[np.uint8]]] | None = (
            deque() if cfg.capture.eye_crops else None
        )
        self.crops_skipped = 0  # events sent without their crops: over CROPS_BUDGET_CHARS
        self.frames = 0
        self.frames_with_face = 0
        self.stage_s: dict[str, float] = {}

    def warm_up(self, width: int = 640, height: int = 480, frames: int = 3) -> float:
        """Run the landmark model on blank frames so that graph start-up and the first
        allocations happen before the camera starts, not on the first real frame.  Returns
        the seconds it took."""
        t0 = time.perf_counter()
        blank = np.full((height, width, 3), 128, dtype=np.uint8)
        for k in range(frames):
            self.backend.detect(blank, k)
        return time.perf_counter() - t0

    def process(self, frame: npt.NDArray[np.uint8], t: float, index: int) -> FrameResult:
        """Run one frame.  ``t`` is the source's timestamp in seconds.  Raises FrameError for
        a frame that cannot be used (the caller counts and skips it)."""
        t0 = time.perf_counter()
        rgb = to_rgb(frame)
        faces = self.backend.detect(rgb, round(t * 1000))
        t1 = time.perf_counter()
        late = self._collect_behind()
        t_models = time.perf_counter() - t1  # waiting for the frame before's eye-state output
        driver = largest_face(faces)
        self.frames += 1
        dt = 0.0 if self._last_t is None else max(0.0, t - self._last_t)
        self._last_t = t
        outputs = NO_MODELS
        if driver is None:
            feats = no_face(t, index)
            if self.temporal is not None:
                self.temporal.reset()
        else:
            self.frames_with_face += 1
            h, w = rgb.shape[:2]
            feats = compute_features(driver.points, w, h, t, index, faces=len(faces))
            eye_closed: float | None = None
            if self.eye_model is not None and self._behind is None:
                tm = time.perf_counter()
                try:
                    eye_closed = self.eye_model.closed_prob(frame, driver.points)
                except Exception as err:  # noqa: BLE001 - a model that fails falls back to EAR, once
                    log.error(
                        "eye_state_model_failed",
                        error=f"{type(err).__name__}: {str(err)[:200]}",
                        fallback="EAR alone",
                    )
                    self.eye_model = None
                t_models += time.perf_counter() - tm
            outputs = ModelOutputs(eye_closed=eye_closed)
            if self.temporal is not None:
                driver_now = self.detector.status()  # calibration before this frame
                vector = temporal_vector(
                    feats.ear / driver_now.baseline_ear,
                    feats.ear,
                    feats.mar,
                    driver_now.neutral_pitch - feats.pitch,
                    feats.iris_vis,
                    eye_closed,
                    dt,
                )
                tm = time.perf_counter()
                closed_now, score = self.temporal.step(vector)
                t_models += time.perf_counter() - tm
                outputs = ModelOutputs(eye_closed=eye_closed, temporal_closed=closed_now, drowsy_score=score)
        t2 = time.perf_counter()
        events = late + self.detector.update(feats, outputs)
        if self._crops is not None:
            self._keep_crops(frame, driver, t, index)
            for e in events:
                self._attach_crops(e)
        if self._behind is not None and driver is not None:
            self._behind.submit(frame, driver.points)
            self._behind_frame = index
        t3 = time.perf_counter()
        # Where a frame's time goes (published in stats): landmarks dominate; the rest must not.
        self.stage_s = {
            "landmarks": t1 - t0,
            "features": t2 - t1 - t_models,
            "models": t_models,
            "detector": t3 - t2,
        }
        return FrameResult(features=feats, events=events, face=driver, faces=len(faces), models=outputs)

    def _keep_crops(self, frame: npt.NDArray[np.uint8], driver: Face | None, t: float, index: int) -> None:
        assert self._crops is not None
        pair = raw_eye_crops(frame, driver.points) if driver is not None else _NO_CROPS
        self._crops.append((index, t, pair))
        horizon = t - self.cfg.detector.window_s - 1.0
        while self._crops and self._crops[0][1] < horizon:
            self._crops.popleft()

    def _attach_crops(self, e: Event) -> None:
        """The crops of the frames in the event's window, in its order (black where none)."""
        if not e.features or self._crops is None:
            return
        by_frame = {i: pair for i, _, pair in self._crops}
        pairs = [by_frame.get(s.frame, _NO_CROPS) for s in e.features]
        n, png = encode_crops(pairs)
        if len(png) > CROPS_BUDGET_CHARS:  # a long window: the alarm record must stay deliverable
            self.crops_skipped += 1
            log.warning("eye_crops_skipped", frames=n, chars=len(png), budget=CROPS_BUDGET_CHARS)
            return
        e.crops = EyeCrops(frames=n, png=png)

    def _collect_behind(self) -> list[Event]:
        """The eye-state output of the frame before, given to the detector before this one.
        A failing shadow model is turned off (one error line), never allowed to stop the frame
        path: in shadow mode it decides nothing, so alerting must not depend on it."""
        if self._behind is None or not self._behind.pending:
            return []
        try:
            prob = self._behind.result(timeout=SHADOW_RESULT_TIMEOUT_S)
        except Exception as err:  # noqa: BLE001 - whatever the runtime raised, EAR carries on
            log.error(
                "shadow_model_failed", error=f"{type(err).__name__}: {str(err)[:200]}", fallback="EAR alone"
            )
            self._behind.close()
            self._behind = None
            self.eye_model = None  # not retried in line: it decides nothing in shadow mode
            return []
        return self.detector.late_outputs(self._behind_frame, ModelOutputs(eye_closed=prob))

    def camera_lost(self, t: float, index: int) -> list[Event]:
        return self._collect_behind() + self.detector.camera_lost(t, index)

    def finish(self) -> list[Event]:
        return self._collect_behind() + self.detector.finish()

    def close(self) -> None:
        if self._behind is not None:
            self._behind.close()
        self.backend.close()
