"""Eye crops for the eye-state model: cut and aligned by the landmarks, fixed size, grayscale.

The same function prepares training data (``models/``) and runtime input (``inference.py``),
so the model sees at run time exactly what it was trained on.  Each eye is rotated so its
corners are level (head roll does not matter), scaled so the eye is a fixed share of the crop
width (distance and resolution do not matter), and mirrored so the inner corner is always on
the right (one model for both eyes).  Grayscale, so colour and IR cameras look alike; each crop
is standardised (zero mean, unit variance), so exposure does not matter.
"""

from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from .features import LEFT_EYE, RIGHT_EYE

CROP_W = 48
CROP_H = 24
EYE_SHARE = 0.62  # eye width (corner to corner) as a share of the crop width

Crops = npt.NDArray[np.float32]


def _gray(frame: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    if frame.ndim == 2:
        return frame
    if frame.shape[2] == 1:
        return frame[:, :, 0]
    code = cv2.COLOR_BGR2GRAY if frame.shape[2] == 3 else cv2.COLOR_BGRA2GRAY
    out: npt.NDArray[np.uint8] = cv2.cvtColor(frame, code)
    return out


def aligned_eye(
    gray: npt.NDArray[np.uint8], a: npt.ArrayLike, b: npt.ArrayLike, mirror: bool
) -> npt.NDArray[np.uint8]:
    """The ``(CROP_H, CROP_W)`` uint8 crop of the eye whose corners are ``a`` (image-left) and
    ``b`` (image-right), levelled and scaled; ``mirror`` flips it left-right."""
    pa = np.asarray(a, dtype=np.float64)[:2]
    pb = np.asarray(b, dtype=np.float64)[:2]
    centre = (pa + pb) / 2.0
    width = float(np.hypot(*(pb - pa)))
    if width < 2.0:
        return np.zeros((CROP_H, CROP_W), dtype=np.uint8)
    angle = math.degrees(math.atan2(pb[1] - pa[1], pb[0] - pa[0]))
    scale = EYE_SHARE * CROP_W / width
    m = cv2.getRotationMatrix2D((float(centre[0]), float(centre[1])), angle, scale)
    m[0, 2] += CROP_W / 2.0 - centre[0]
    m[1, 2] += CROP_H / 2.0 - centre[1]
    crop: npt.NDArray[np.uint8] = cv2.warpAffine(
        gray, m, (CROP_W, CROP_H), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REPLICATE
    )
    return np.ascontiguousarray(crop[:, ::-1]) if mirror else crop


def standardise(crops: npt.NDArray[Any]) -> Crops:
    """Per-crop zero mean, unit variance (floored, so a flat crop is not blown up into noise).
    Works on ``(..., H, W)``."""
    x = np.asarray(crops, dtype=np.float32)
    mean = x.mean(axis=(-2, -1), keepdims=True)
    std = np.maximum(x.std(axis=(-2, -1), keepdims=True), 4.0)
    out: Crops = ((x - mean) / std).astype(np.float32)
    return out


def raw_eye_crops(frame: npt.NDArray[np.uint8], points: npt.NDArray[np.float64]) -> npt.NDArray[np.uint8]:
    """Both eyes as ``(2, CROP_H, CROP_W)`` uint8: image-left eye, then image-right eye.

    The outer corner ends up on the left of both crops: the image-left eye (33 outer, 133
    inner) is taken as it is, the image-right eye (362 inner, 263 outer) is mirrored."""
    gray = _gray(frame)
    left = aligned_eye(gray, points[LEFT_EYE[0]], points[LEFT_EYE[3]], mirror=False)
    right = aligned_eye(gray, points[RIGHT_EYE[0]], points[RIGHT_EYE[3]], mirror=True)
    return np.stack([left, right])


def eye_crops(frame: npt.NDArray[np.uint8], points: npt.NDArray[np.float64]) -> Crops:
    """Model input for both eyes: ``(2, 1, CROP_H, CROP_W)`` float32, standardised."""
    return standardise(raw_eye_crops(frame, points))[:, None, :, :]
