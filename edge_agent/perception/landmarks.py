"""Face landmark backends behind one small interface.

The agent only needs "give me the driver's landmarks in pixels for this frame".  A backend is
picked by ``landmarks.type`` in the config; MediaPipe FaceMesh (CPU, bundled model, 478
points with refined irises) is the default.  Another backend (an ONNX landmark model on a GPU,
say) implements :class:`LandmarkBackend` and registers itself in :data:`BACKENDS`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import cv2
import numpy as np
import numpy.typing as npt

from edge_agent.config import LandmarkConfig
from edge_agent.perception.features import FEATURE_INDICES
from edge_agent.perception.nativelog import filter_native_logs

Frame = npt.NDArray[np.uint8]

# Face-oval points that bound the face; their box ranks faces by size.
_OVAL = (10, 152, 234, 454, 127, 356, 58, 288)


class FrameError(ValueError):
    """A frame that cannot be processed (wrong type, shape or depth)."""


@dataclass(frozen=True, slots=True)
class Face:
    """One detected face: pixel coordinates of the landmarks the features use.

    ``points`` has 478 rows; rows that no feature uses stay zero unless ``full`` was asked
    for (the preview draws them all).  Converting only the needed rows keeps the per-frame
    cost of leaving MediaPipe's protobufs low.
    """

    points: npt.NDArray[np.float64]
    box: tuple[float, float, float, float]  # x0, y0, x1, y1

    @property
    def area(self) -> float:
        return max(0.0, self.box[2] - self.box[0]) * max(0.0, self.box[3] - self.box[1])


class LandmarkBackend(Protocol):
    name: str
    version: str

    def detect(self, rgb: Frame, timestamp_ms: int) -> list[Face]:
        """All faces in an RGB frame, in pixel coordinates."""
        ...

    def close(self) -> None: ...


def to_rgb(frame: object) -> Frame:
    """Validate a decoded frame and return it as 3-channel RGB uint8.

    Accepts BGR (OpenCV's order), BGRA and single-channel grayscale/IR frames.  Anything else
    raises :class:`FrameError` with a one-line reason rather than crashing the frame loop.
    """
    if not isinstance(frame, np.ndarray):
        raise FrameError(f"frame is {type(frame).__name__}, not a numpy array")
    if frame.dtype != np.uint8:
        raise FrameError(f"frame dtype is {frame.dtype}, expected uint8")
    if frame.ndim == 3 and frame.shape[2] == 1:
        frame = frame[:, :, 0]
    if frame.ndim == 2:
        if min(frame.shape) < 16:
            raise FrameError(f"frame is too small: {frame.shape[1]}x{frame.shape[0]}")
        return cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB)  # type: ignore[no-any-return]
    if frame.ndim != 3 or frame.shape[2] not in (3, 4):
        raise FrameError(f"frame shape {frame.shape} is neither HxW, HxWx3 nor HxWx4")
    if min(frame.shape[:2]) < 16:
        raise FrameError(f"frame is too small: {frame.shape[1]}x{frame.shape[0]}")
    code = cv2.COLOR_BGR2RGB if frame.shape[2] == 3 else cv2.COLOR_BGRA2RGB
    return cv2.cvtColor(frame, code)  # type: ignore[no-any-return]


def largest_face(faces: list[Face]) -> Face | None:
    """The driver is the largest face in view (closest to the camera)."""
    return max(faces, key=lambda f: f.area, default=None)


class MediaPipeFaceMesh:
    """MediaPipe FaceMesh (``mediapipe==0.10.21`` bundles its model: nothing is downloaded)."""

    name = "mediapipe-facemesh"

    def __init__(self, cfg: LandmarkConfig, full: bool = False, static: bool = False) -> None:
        """``static``: every image on its own (stills for training data), no tracking."""
        filter_native_logs()  # before the import: TFLite speaks when the graph is built
        import mediapipe as mp

        self.version = f"mediapipe-{mp.__version__}"
        self._full = full
        self._mesh = mp.solutions.face_mesh.FaceMesh(
            static_image_mode=static,
            max_num_faces=cfg.max_faces,
            refine_landmarks=True,
            min_detection_confidence=cfg.min_detection_confidence,
            min_tracking_confidence=cfg.min_tracking_confidence,
        )
        self._indices = np.arange(478) if full else np.array(sorted(set(FEATURE_INDICES) | set(_OVAL)))

    def detect(self, rgb: Frame, timestamp_ms: int) -> list[Face]:
        h, w = rgb.shape[:2]
        result = self._mesh.process(rgb)
        found = getattr(result, "multi_face_landmarks", None)
        if not found:
            return []
        faces = []
        for face in found:
            lm = face.landmark
            if len(lm) < 478:
                raise FrameError("FaceMesh returned fewer than 478 points: refine_landmarks is off")
            pts = np.zeros((478, 2), dtype=np.float64)
            for i in self._indices:
                p = lm[int(i)]
                pts[i, 0] = p.x * w
                pts[i, 1] = p.y * h
            oval = pts[list(_OVAL)]
            box = (
                float(oval[:, 0].min()),
                float(oval[:, 1].min()),
                float(oval[:, 0].max()),
                float(oval[:, 1].max()),
            )
            faces.append(Face(points=pts, box=box))
        return faces

    def close(self) -> None:
        self._mesh.close()


BACKENDS: dict[str, Callable[[LandmarkConfig, bool], LandmarkBackend]] = {
    "mediapipe": MediaPipeFaceMesh,
}


def create_backend(cfg: LandmarkConfig, full: bool = False) -> LandmarkBackend:
    try:
        factory = BACKENDS[cfg.type]
    except KeyError:
        raise ValueError(f"unknown landmark backend {cfg.type!r}; known: {', '.join(BACKENDS)}") from None
    return factory(cfg, full)
