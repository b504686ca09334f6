"""Per-frame facial features from MediaPipe FaceMesh landmarks: small pure functions.

Everything here takes a ``(N, 2|3)`` array of landmark pixel coordinates and returns plain
floats, so the maths can be tested on hand-made arrays with no camera and no model.
Distances are ratios (EAR, MAR, lid gap / eye width), so they do not depend on image size,
and they are rotation invariant, so a rolled head does not change them.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import cv2
import numpy as np
import numpy.typing as npt

Points = npt.NDArray[np.float64]

# Soukupová & Čech (2016) six-point EAR, in MediaPipe FaceMesh indices: p1 outer corner,
# p2/p3 upper lid, p4 inner corner, p5/p6 lower lid.  "left"/"right" are image sides.
LEFT_EYE = (33, 160, 158, 133, 153, 144)
RIGHT_EYE = (362, 385, 387, 263, 373, 380)
# Upper/lower lid mid points, used for the lid gap and the iris visibility measure.
LEFT_LID = (159, 145)
RIGHT_LID = (386, 374)
# Refined iris: centre then four rim points (only with refine_landmarks=True, 478 points).
LEFT_IRIS = (468, 469, 470, 471, 472)
RIGHT_IRIS = (473, 474, 475, 476, 477)
# Inner lips: corners 78/308 and three vertical pairs.
MOUTH = (78, 308, 81, 178, 13, 14, 311, 402)
# Points for head pose (nose tip, chin, eye outer corners, mouth corners) and a generic
# 3D face model in millimetres, in OpenCV's camera axes (x right, y down, z away from the
# camera): the nose tip is nearest, so a face looking into the lens has no rotation.
POSE_POINTS = (1, 152, 33, 263, 61, 291)
_MODEL_3D = np.array(
    [
        (0.0, 0.0, 0.0),
        (0.0, 63.6, 12.5),
        (-43.3, -32.7, 26.0),
        (43.3, -32.7, 26.0),
        (-28.9, 28.9, 24.1),
        (28.9, 28.9, 24.1),
    ],
    dtype=np.float64,
)
# Eyelid contours, outer corner first: upper lid, then lower lid (the eye-state model's
# opening mask, edge_agent.perception.eyecrop).
LEFT_LIDS = ((33, 246, 161, 160, 159, 158, 157, 173, 133), (33, 7, 163, 144, 145, 153, 154, 155, 133))
RIGHT_LIDS = ((263, 466, 388, 387, 386, 385, 384, 398, 362), (263, 249, 390, 373, 374, 380, 381, 382, 362))
# All indices a feature needs: the landmark backend converts only these (and the face box).
FEATURE_INDICES: tuple[int, ...] = tuple(
    sorted(
        set(LEFT_EYE + RIGHT_EYE + LEFT_LID + RIGHT_LID + LEFT_IRIS + RIGHT_IRIS + MOUTH + POSE_POINTS)
        | {i for lids in (LEFT_LIDS, RIGHT_LIDS) for lid in lids for i in lid}
    )
)


def _dist(a: Points, b: Points) -> float:
    return float(math.hypot(float(a[0] - b[0]), float(a[1] - b[1])))


def eye_aspect_ratio(pts: Points, eye: tuple[int, ...] = LEFT_EYE) -> float:
    """EAR = (|p2-p6| + |p3-p5|) / (2 |p1-p4|); ~0.25-0.35 open, < 0.1 shut."""
    p1, p2, p3, p4, p5, p6 = (pts[i] for i in eye)
    width = _dist(p1, p4)
    if width <= 1e-6:
        return 0.0
    return (_dist(p2, p6) + _dist(p3, p5)) / (2.0 * width)


def mouth_aspect_ratio(pts: Points) -> float:
    """MAR over the inner lips: mean of three vertical gaps over the corner distance."""
    c1, c2, a1, b1, a2, b2, a3, b3 = (pts[i] for i in MOUTH)
    width = _dist(c1, c2)
    if width <= 1e-6:
        return 0.0
    return (_dist(a1, b1) + _dist(a2, b2) + _dist(a3, b3)) / (3.0 * width)


def iris_position(pts: Points, eye: tuple[int, ...], iris: tuple[int, ...]) -> tuple[float, float]:
    """Iris centre in the eye's own frame: x along the corner line (0 at the middle, ±0.5 at
    the corners), y perpendicular (positive = down), both in eye widths.  Gaze, not head pose."""
    a, b = pts[eye[0]][:2], pts[eye[3]][:2]
    centre = (a + b) / 2.0
    axis = b - a
    width = float(np.hypot(axis[0], axis[1]))
    if width <= 1e-6:
        return 0.0, 0.0
    ex = axis / width
    ey = np.array([-ex[1], ex[0]])
    if ey[1] < 0:  # make +y point down the image whichever corner is first
        ey = -ey
    rel = pts[iris[0]][:2] - centre
    # Both eyes' corner lists run image-left to image-right, so +x is image-right for both.
    return float(rel @ ex) / width, float(rel @ ey) / width


def iris_visibility(pts: Points, lid: tuple[int, int], iris: tuple[int, ...]) -> float:
    """Share of the iris diameter that lies between the lids (0 = covered, 1 = fully seen)."""
    upper, lower = pts[lid[0]][:2], pts[lid[1]][:2]
    centre = pts[iris[0]][:2]
    radius = float(np.mean([_dist(pts[i], centre) for i in iris[1:]]))
    if radius <= 1e-6:
        return 0.0
    gap = _dist(upper, lower)
    return float(min(1.0, gap / (2.0 * radius)))


def head_roll(pts: Points) -> float:
    """Roll in degrees from the eye corner line (positive = head tilted clockwise in image)."""
    a, b = pts[33], pts[263]
    return float(math.degrees(math.atan2(float(b[1] - a[1]), float(b[0] - a[0]))))


def head_pose(pts: Points, width: int, height: int) -> tuple[float, float, float]:
    """(yaw, pitch, roll) in degrees by solvePnP against a generic face model.

    Pitch is negative when the face turns down, yaw positive when it turns towards image-right
    (checked by the tests on projected faces, and on the real clips).  SQPnP finds the global
    minimum, so the pose does not jump between the mirror solutions that the iterative solver
    can pick frame to frame.  A generic model and a guessed focal length give a few degrees of
    bias; the detector compares against each driver's calibrated neutral pose, so it cancels.
    """
    image_pts = np.ascontiguousarray(np.array([pts[i][:2] for i in POSE_POINTS], dtype=np.float64))
    focal = float(max(width, height))
    cam = np.array([[focal, 0.0, width / 2.0], [0.0, focal, height / 2.0], [0.0, 0.0, 1.0]])
    ok, rvec, _tvec = cv2.solvePnP(_MODEL_3D, image_pts, cam, None, flags=cv2.SOLVEPNP_SQPNP)
    if not ok:
        return 0.0, 0.0, head_roll(pts)
    rot, _ = cv2.Rodrigues(rvec)
    pitch = math.degrees(math.atan2(rot[2, 1], rot[2, 2]))
    yaw = math.degrees(math.asin(max(-1.0, min(1.0, -rot[2, 0]))))
    return float(-yaw), float(-pitch), head_roll(pts)


@dataclass(frozen=True, slots=True)
class FrameFeatures:
    """What the detector sees of one frame.  Absent face: ``face`` False, the rest zero."""

    t: float  # seconds, the source's own clock
    frame: int
    face: bool
    ear_left: float = 0.0
    ear_right: float = 0.0
    ear: float = 0.0
    mar: float = 0.0
    yaw: float = 0.0
    pitch: float = 0.0
    roll: float = 0.0
    gaze_x: float = 0.0
    gaze_y: float = 0.0
    iris_vis: float = 0.0
    faces: int = 0

    def as_dict(self) -> dict[str, float | int | bool]:
        return asdict(self)


def compute_features(
    pts: Points, width: int, height: int, t: float, frame: int, faces: int = 1
) -> FrameFeatures:
    """All per-frame features of one face.  ``pts`` holds pixel coordinates, 478 rows."""
    el = eye_aspect_ratio(pts, LEFT_EYE)
    er = eye_aspect_ratio(pts, RIGHT_EYE)
    yaw, pitch, roll = head_pose(pts, width, height)
    gl = iris_position(pts, LEFT_EYE, LEFT_IRIS)
    gr = iris_position(pts, RIGHT_EYE, RIGHT_IRIS)
    vis = (iris_visibility(pts, LEFT_LID, LEFT_IRIS) + iris_visibility(pts, RIGHT_LID, RIGHT_IRIS)) / 2.0
    return FrameFeatures(
        t=t,
        frame=frame,
        face=True,
        ear_left=el,
        ear_right=er,
        ear=(el + er) / 2.0,
        mar=mouth_aspect_ratio(pts),
        yaw=yaw,
        pitch=pitch,
        roll=roll,
        gaze_x=(gl[0] + gr[0]) / 2.0,
        gaze_y=(gl[1] + gr[1]) / 2.0,
        iris_vis=vis,
        faces=faces,
    )


def no_face(t: float, frame: int) -> FrameFeatures:
    return FrameFeatures(t=t, frame=frame, face=False)


def perclos(closed_flags: npt.ArrayLike, durations: npt.ArrayLike) -> float:
    """PERCLOS: time-weighted share of the window in which the eyes were ≥ 80 % closed.

    Weighted by each frame's duration, so dropped frames or a variable frame rate do not bias it.
    """
    flags = np.asarray(closed_flags, dtype=bool)
    dur = np.asarray(durations, dtype=np.float64)
    total = float(dur.sum())
    if total <= 0.0:
        return 0.0
    return float(dur[flags].sum() / total)


def temporal_vector(
    openness: float,
    ear: float,
    mar: float,
    pitch_drop_deg: float,
    iris_vis: float,
    eye_prob: float | None,
    dt: float,
) -> list[float]:
    """The temporal model's per-frame input, scaled to about unit range (shared by training and
    the runtime).  ``eye_prob`` None or < 0 (no eye model) is fed as 0.5, 'no opinion'."""
    return [
        float(np.clip(openness, 0.0, 2.0)),
        float(np.clip(ear * 3.0, 0.0, 2.0)),
        float(np.clip(mar, 0.0, 2.0)),
        float(np.clip(pitch_drop_deg / 30.0, -2.0, 2.0)),
        float(np.clip(iris_vis, 0.0, 1.0)),
        0.5 if eye_prob is None or eye_prob < 0 else float(eye_prob),
        float(np.clip(dt * 30.0, 0.0, 4.0)),
    ]
