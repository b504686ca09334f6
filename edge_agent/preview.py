"""Camera-alignment preview: landmarks, EAR, openness and state drawn on the frame.

For the installer in the garage: shown in a window (``--preview``) or written to an annotated
MP4 (``--preview-out``), so the camera can be aimed without a screen in the car.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
import numpy.typing as npt

from edge_agent.perception.features import LEFT_EYE, LEFT_IRIS, MOUTH, RIGHT_EYE, RIGHT_IRIS
from edge_agent.perception.landmarks import Face
from sleepsafe.protocol import DriverState

if TYPE_CHECKING:
    from edge_agent.pipeline import FrameResult, Pipeline

_STATE_COLOUR = {
    DriverState.AWAKE: (60, 200, 60),
    DriverState.DROWSY: (0, 200, 255),
    DriverState.DISTRACTED: (0, 200, 255),
    DriverState.MICROSLEEP: (0, 0, 255),
    DriverState.SLEEP: (0, 0, 255),
    DriverState.NO_FACE: (200, 200, 200),
    DriverState.CAMERA_LOST: (200, 200, 200),
}


def annotate(
    frame: npt.NDArray[np.uint8],
    face: Face | None,
    lines: list[str],
    state: DriverState,
) -> npt.NDArray[np.uint8]:
    """A BGR copy of the frame with the driver's eye/mouth landmarks and a text panel."""
    img = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR) if frame.ndim == 2 else frame[:, :, :3].copy()
    scale = max(0.4, img.shape[0] / 720.0)
    if face is not None:
        x0, y0, x1, y1 = (int(v) for v in face.box)
        cv2.rectangle(img, (x0, y0), (x1, y1), (255, 200, 0), 1)
        for idx in (LEFT_EYE, RIGHT_EYE, MOUTH, LEFT_IRIS, RIGHT_IRIS):
            for i in idx:
                x, y = face.points[i][:2]
                cv2.circle(img, (int(x), int(y)), max(1, int(2 * scale)), (0, 255, 255), -1)
    colour = _STATE_COLOUR.get(state, (255, 255, 255))
    y = int(28 * scale) + 4
    cv2.putText(img, state.value, (8, y), cv2.FONT_HERSHEY_SIMPLEX, 0.9 * scale, colour, 2, cv2.LINE_AA)
    for line in lines:
        y += int(24 * scale) + 2
        cv2.putText(img, line, (8, y), cv2.FONT_HERSHEY_SIMPLEX, 0.6 * scale, (255, 255, 255), 1, cv2.LINE_AA)
    return img  # type: ignore[no-any-return]


class PreviewSink:
    """Window and/or MP4 writer; created lazily at the first frame's size."""

    def __init__(self, window: bool, out: Path | None, fps: float = 30.0) -> None:
        self.window = window
        self.out = out
        self.fps = fps
        self._writer: cv2.VideoWriter | None = None

    def show(self, img: npt.NDArray[np.uint8]) -> None:
        if self.out is not None:
            if self._writer is None:
                self.out.parent.mkdir(parents=True, exist_ok=True)
                h, w = img.shape[:2]
                fourcc = cv2.VideoWriter.fourcc(*"mp4v")
                self._writer = cv2.VideoWriter(str(self.out), fourcc, self.fps, (w, h))
                if not self._writer.isOpened():
                    raise OSError(f"cannot write preview video {self.out}")
            self._writer.write(img)
        if self.window:
            cv2.imshow("sleepsafe preview", img)
            cv2.waitKey(1)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
        if self.window:
            cv2.destroyAllWindows()


def preview_lines(pipeline: Pipeline, res: FrameResult, fps: float | None = None) -> list[str]:
    f = res.features
    d = pipeline.detector.status()
    lines = [
        f"EAR {f.ear:.3f} (L {f.ear_left:.3f} R {f.ear_right:.3f})  open {d.openness:.2f}",
        f"baseline {d.baseline_ear:.3f}{'' if d.calibrated else ' (calibrating)'}  PERCLOS {d.perclos:.1%}",
        f"yaw {f.yaw:+.0f}  pitch {f.pitch:+.0f}  roll {f.roll:+.0f}  MAR {f.mar:.2f}",
        f"blinks {d.blinks}  faces {res.faces}" + (f"  {fps:.1f} fps" if fps else ""),
    ]
    return lines if f.face else ["no face", lines[1]]
