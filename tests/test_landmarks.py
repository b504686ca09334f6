"""The MediaPipe backend on a real still: with a passenger in view, the driver is the largest face."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from edge_agent.config import EdgeConfig
from edge_agent.perception.features import compute_features
from edge_agent.perception.landmarks import create_backend, largest_face, to_rgb


def test_driver_is_the_largest_face(make_cfg: Callable[..., EdgeConfig], clips: Path) -> None:
    face = cv2.imread(str(clips / "single_face.jpg"))
    assert face is not None
    h, w = face.shape[:2]
    small = cv2.resize(face, (w // 2, h // 2))
    # A passenger (half size) to the left of the driver (full size), on one canvas.
    canvas = np.full((h, w + w // 2, 3), 90, dtype=np.uint8)
    canvas[: h // 2, : w // 2] = small
    canvas[:, w // 2 :] = face
    backend = create_backend(make_cfg(landmarks={"max_faces": 3}).landmarks)
    try:
        faces = backend.detect(to_rgb(canvas), 0)
        assert len(faces) == 2
        driver = largest_face(faces)
        assert driver is not None
        cx = (driver.box[0] + driver.box[2]) / 2
        assert cx > w // 2, "the larger face on the right is the driver"
        feats = compute_features(driver.points, canvas.shape[1], canvas.shape[0], 0.0, 0, faces=len(faces))
        assert 0.15 < feats.ear < 0.45, "eyes open in the still"
    finally:
        backend.close()
