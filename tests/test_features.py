"""The maths on hand-made landmark arrays: EAR, MAR, iris, head pose, PERCLOS."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from edge_agent.perception import features as F


def blank() -> np.ndarray:
    return np.zeros((478, 2), dtype=np.float64)


def put_eye(pts: np.ndarray, eye: tuple[int, ...], cx: float, cy: float, width: float, height: float) -> None:
    """Corners at ±width/2, lids at ±height/2 (p2/p3 top, p5/p6 bottom)."""
    p1, p2, p3, p4, p5, p6 = eye
    pts[p1] = (cx - width / 2, cy)
    pts[p4] = (cx + width / 2, cy)
    pts[p2] = (cx - width / 6, cy - height / 2)
    pts[p3] = (cx + width / 6, cy - height / 2)
    pts[p6] = (cx - width / 6, cy + height / 2)
    pts[p5] = (cx + width / 6, cy + height / 2)


def rotate(pts: np.ndarray, deg: float, about: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    a = math.radians(deg)
    r = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    c = np.array(about)
    return (pts - c) @ r.T + c


@pytest.mark.parametrize(("height", "expected"), [(9.0, 0.3), (3.0, 0.1), (0.0, 0.0)])
def test_ear_is_lid_gap_over_width(height: float, expected: float) -> None:
    pts = blank()
    put_eye(pts, F.LEFT_EYE, 100, 100, 30, height)
    assert F.eye_aspect_ratio(pts, F.LEFT_EYE) == pytest.approx(expected)


def test_ear_invariant_to_roll_and_scale() -> None:
    pts = blank()
    put_eye(pts, F.RIGHT_EYE, 200, 120, 40, 12)
    base = F.eye_aspect_ratio(pts, F.RIGHT_EYE)
    rolled = rotate(pts, 15.0, (200, 120))
    assert F.eye_aspect_ratio(rolled, F.RIGHT_EYE) == pytest.approx(base)
    assert F.eye_aspect_ratio(pts * 0.25, F.RIGHT_EYE) == pytest.approx(base)


def test_ear_degenerate_eye_is_zero_not_nan() -> None:
    assert F.eye_aspect_ratio(blank(), F.LEFT_EYE) == 0.0


def test_mar_open_and_closed_mouth() -> None:
    pts = blank()
    c1, c2, a1, b1, a2, b2, a3, b3 = F.MOUTH
    pts[c1], pts[c2] = (100, 200), (160, 200)
    for a, b, x in ((a1, b1, 115), (a2, b2, 130), (a3, b3, 145)):
        pts[a], pts[b] = (x, 200 - 15), (x, 200 + 15)
    assert F.mouth_aspect_ratio(pts) == pytest.approx(0.5)
    for a, b, x in ((a1, b1, 115), (a2, b2, 130), (a3, b3, 145)):
        pts[a], pts[b] = (x, 200), (x, 200)
    assert F.mouth_aspect_ratio(pts) == pytest.approx(0.0)


def test_iris_position_and_visibility() -> None:
    pts = blank()
    put_eye(pts, F.LEFT_EYE, 100, 100, 40, 12)
    up, lo = F.LEFT_LID
    pts[up], pts[lo] = (100, 94), (100, 106)
    c = F.LEFT_IRIS[0]
    pts[c] = (108, 102)  # right of centre by 0.2 eye widths, down by 0.05
    for i, (dx, dy) in zip(F.LEFT_IRIS[1:], ((8, 0), (0, 8), (-8, 0), (0, -8)), strict=True):
        pts[i] = (108 + dx, 102 + dy)
    x, y = F.iris_position(pts, F.LEFT_EYE, F.LEFT_IRIS)
    assert x == pytest.approx(0.2)
    assert y == pytest.approx(0.05)
    # Lid gap 12 px over an iris diameter of 16 px.
    assert F.iris_visibility(pts, F.LEFT_LID, F.LEFT_IRIS) == pytest.approx(0.75)


def _project(yaw: float, pitch: float, roll: float, w: int = 640, h: int = 480) -> np.ndarray:
    """Project the generic face model, posed by angles in head_pose's convention, into an image.
    What the signs mean physically is asserted in test_head_pose_signs_mean_down_and_right."""
    rx, ry, rz = math.radians(-pitch), math.radians(-yaw), math.radians(roll)
    Rx = np.array([[1, 0, 0], [0, math.cos(rx), -math.sin(rx)], [0, math.sin(rx), math.cos(rx)]])
    Ry = np.array([[math.cos(ry), 0, math.sin(ry)], [0, 1, 0], [-math.sin(ry), 0, math.cos(ry)]])
    Rz = np.array([[math.cos(rz), -math.sin(rz), 0], [math.sin(rz), math.cos(rz), 0], [0, 0, 1]])
    rvec, _ = cv2.Rodrigues(Rz @ Ry @ Rx)
    focal = float(max(w, h))
    cam = np.array([[focal, 0, w / 2], [0, focal, h / 2], [0, 0, 1.0]])
    img, _ = cv2.projectPoints(F._MODEL_3D, rvec, np.array([0.0, 0.0, 500.0]), cam, None)
    pts = blank()
    for idx, p in zip(F.POSE_POINTS, img.reshape(-1, 2), strict=True):
        pts[idx] = p
    return pts


@pytest.mark.parametrize(("yaw", "pitch"), [(0, 0), (25, 0), (-25, 0), (0, -20), (0, 15), (15, -10)])
def test_head_pose_recovers_yaw_and_pitch(yaw: float, pitch: float) -> None:
    got_yaw, got_pitch, _ = F.head_pose(_project(yaw, pitch, 0.0), 640, 480)
    assert got_yaw == pytest.approx(yaw, abs=2.0)
    assert got_pitch == pytest.approx(pitch, abs=2.0)


def test_head_pose_signs_mean_down_and_right() -> None:
    def nose_offset(pts: np.ndarray) -> tuple[float, float]:
        eyes = (pts[33] + pts[263]) / 2
        span = pts[152][1] - eyes[1]
        return (pts[1][0] - eyes[0]) / span, (pts[1][1] - eyes[1]) / span

    # A face turned down brings the protruding nose tip down towards the chin in the image.
    assert nose_offset(_project(0, -20, 0))[1] > nose_offset(_project(0, 0, 0))[1]
    # A face turned to image-right moves the nose tip right of the eyes' midpoint.
    assert nose_offset(_project(25, 0, 0))[0] > 0.05


def test_head_roll_from_eye_corners() -> None:
    pts = blank()
    pts[33], pts[263] = (100, 100), (200, 100)
    assert F.head_roll(pts) == pytest.approx(0.0)
    rolled = rotate(pts, 15.0, (150, 100))
    assert F.head_roll(rolled) == pytest.approx(15.0)


def test_perclos_is_time_weighted() -> None:
    # 3 frames of 0.1 s closed, 1 frame of 0.7 s open: 30 % of the time closed.
    assert F.perclos([True, True, True, False], [0.1, 0.1, 0.1, 0.7]) == pytest.approx(0.3)
    assert F.perclos([], []) == 0.0


def test_compute_features_on_a_complete_face() -> None:
    pts = _project(0, 0, 0)
    put_eye(pts, F.LEFT_EYE, 280, 200, 40, 12)
    put_eye(pts, F.RIGHT_EYE, 360, 200, 40, 8)
    f = F.compute_features(pts, 640, 480, t=1.5, frame=45)
    assert f.face and f.frame == 45 and f.t == 1.5
    assert f.ear_left == pytest.approx(0.3)
    assert f.ear_right == pytest.approx(0.2)
    assert f.ear == pytest.approx(0.25)
