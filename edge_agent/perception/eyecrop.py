"""Eye crops for the eye-state model: cut and aligned by the landmarks, fixed size, grayscale.

The same functions prepare training data (``models/``) and runtime input (``pipeline.py``),
so the model sees at run time exactly what it was trained on.  Each eye is rotated so its
corners are level (head roll does not matter), scaled so the eye is a fixed share of the crop
width (distance and resolution do not matter), and mirrored so the inner corner is always on
the right (one model for both eyes).  Grayscale, so colour and IR cameras look alike; each crop
is standardised (zero mean, unit variance), so exposure does not matter.

The model gets two channels: the crop, and the eye opening that the landmarks' lid contours
enclose, drawn into the same 24x48 grid.  The mask is what EAR measures (in every direction, not
two distances); the picture is what EAR cannot see: an iris under a low lid when the driver looks
down, a shut lid that the landmarks, lagging a fast blink, still draw half open.  With both the
network can agree with the landmarks where they are right and overrule them where they are not.
"""

from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from edge_agent.perception.features import LEFT_EYE, LEFT_LIDS, RIGHT_EYE, RIGHT_LIDS
from sleepsafe.onnxmodels import EYE_CHANNELS, EYE_H, EYE_W

CROP_W = EYE_W
CROP_H = EYE_H
EYE_SHARE = 0.62  # eye width (corner to corner) as a share of the crop width
CHANNELS = EYE_CHANNELS  # standardised grayscale crop, eye-opening mask
_MASK_SCALE = 4  # the opening is drawn at 4x and area-averaged: sub-pixel lids

Crops = npt.NDArray[np.float32]


def _gray(frame: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    if frame.ndim == 2:
        return frame
    if frame.shape[2] == 1:
        return frame[:, :, 0]
    code = cv2.COLOR_BGR2GRAY if frame.shape[2] == 3 else cv2.COLOR_BGRA2GRAY
    out: npt.NDArray[np.uint8] = cv2.cvtColor(frame, code)
    return out


def crop_matrix(a: npt.ArrayLike, b: npt.ArrayLike) -> npt.NDArray[np.float64] | None:
    """The 2x3 affine map from image pixels to the (unmirrored) crop of the eye whose corners
    are ``a`` (image-left) and ``b`` (image-right); None when the eye is too small to crop."""
    pa = np.asarray(a, dtype=np.float64)[:2]
    pb = np.asarray(b, dtype=np.float64)[:2]
    centre = (pa + pb) / 2.0
    width = float(np.hypot(*(pb - pa)))
    if width < 2.0:
        return None
    angle = math.degrees(math.atan2(pb[1] - pa[1], pb[0] - pa[0]))
    scale = EYE_SHARE * CROP_W / width
    m: npt.NDArray[np.float64] = cv2.getRotationMatrix2D((float(centre[0]), float(centre[1])), angle, scale)
    m[0, 2] += CROP_W / 2.0 - centre[0]
    m[1, 2] += CROP_H / 2.0 - centre[1]
    return m


# Pixels around the region a crop samples: bilinear sampling reads one beyond each edge.
_ROI_MARGIN = 2


def aligned_eye(
    frame: npt.NDArray[np.uint8], a: npt.ArrayLike, b: npt.ArrayLike, mirror: bool
) -> npt.NDArray[np.uint8]:
    """The ``(CROP_H, CROP_W)`` uint8 grayscale crop of the eye whose corners are ``a``
    (image-left) and ``b`` (image-right), levelled and scaled; ``mirror`` flips it left-right.

    Only the small region of the frame the crop samples is converted to grey and warped (the
    whole frame cost three times the model's own run per frame); the result is the same as
    warping the whole grey frame, the frame's own edges included."""
    m = crop_matrix(a, b)
    if m is None:
        return np.zeros((CROP_H, CROP_W), dtype=np.uint8)
    h, w = frame.shape[:2]
    inv = cv2.invertAffineTransform(m)
    corners = np.array([[0, 0, 1], [CROP_W, 0, 1], [0, CROP_H, 1], [CROP_W, CROP_H, 1]], dtype=np.float64)
    xy = corners @ inv.T
    x0 = max(0, math.floor(xy[:, 0].min()) - _ROI_MARGIN)
    y0 = max(0, math.floor(xy[:, 1].min()) - _ROI_MARGIN)
    x1 = min(w, math.ceil(xy[:, 0].max()) + _ROI_MARGIN + 1)
    y1 = min(h, math.ceil(xy[:, 1].max()) + _ROI_MARGIN + 1)
    if x1 <= x0 or y1 <= y0:  # the eye lies outside the frame
        x0, y0, x1, y1 = 0, 0, w, h
    roi = _gray(frame[y0:y1, x0:x1])
    shifted = m.copy()
    shifted[:, 2] += m[:, :2] @ np.array([x0, y0], dtype=np.float64)
    crop: npt.NDArray[np.uint8] = cv2.warpAffine(
        roi, shifted, (CROP_W, CROP_H), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REPLICATE
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
    left = aligned_eye(frame, points[LEFT_EYE[0]], points[LEFT_EYE[3]], mirror=False)
    right = aligned_eye(frame, points[RIGHT_EYE[0]], points[RIGHT_EYE[3]], mirror=True)
    return np.stack([left, right])


def aperture_mask(lids: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """The eye opening enclosed by the lids ``(2, 9, 2)`` (crop pixels) as a ``(CROP_H, CROP_W)``
    coverage mask in [0, 1]; all zeros for zero lids (no face)."""
    s = _MASK_SCALE
    big = np.zeros((CROP_H * s, CROP_W * s), dtype=np.uint8)
    if np.any(lids):
        poly = np.concatenate([lids[0], lids[1][::-1]]).astype(np.float64)
        cv2.fillPoly(big, [((poly + 0.5) * s - 0.5).round().astype(np.int32)], 255)
    small: npt.NDArray[np.uint8] = cv2.resize(big, (CROP_W, CROP_H), interpolation=cv2.INTER_AREA)
    return small.astype(np.float32) / 255.0


def model_input(crops: npt.NDArray[np.uint8], lids: npt.NDArray[np.float32]) -> Crops:
    """``(M, CHANNELS, CROP_H, CROP_W)`` float32 from raw crops ``(M, H, W)`` and their lids
    ``(M, 2, 9, 2)``: the standardised crop, then the opening mask."""
    out = np.empty((len(crops), CHANNELS, CROP_H, CROP_W), dtype=np.float32)
    out[:, 0] = standardise(crops)
    for i, lid in enumerate(lids):
        out[i, 1] = aperture_mask(lid)
    return out


def eye_crops(frame: npt.NDArray[np.uint8], points: npt.NDArray[np.float64]) -> Crops:
    """Model input for both eyes: ``(2, CHANNELS, CROP_H, CROP_W)`` float32."""
    return model_input(raw_eye_crops(frame, points), lid_contours(points))


def lid_contours(points: npt.NDArray[np.float64]) -> npt.NDArray[np.float32]:
    """Both eyes' lids in the coordinates of their crops from :func:`raw_eye_crops`:
    ``(2 eyes, 2 lids (upper, lower), 9 points, xy)``; zeros where an eye is too small to crop."""
    out = np.zeros((2, 2, 9, 2), dtype=np.float32)
    for k, (lids, (a, b), mirror) in enumerate(
        ((LEFT_LIDS, (LEFT_EYE[0], LEFT_EYE[3]), False), (RIGHT_LIDS, (RIGHT_EYE[0], RIGHT_EYE[3]), True))
    ):
        m = crop_matrix(points[a], points[b])
        if m is None:
            continue
        for j, lid in enumerate(lids):
            xy = points[list(lid), :2] @ m[:, :2].T + m[:, 2]
            if mirror:
                xy[:, 0] = CROP_W - 1 - xy[:, 0]
            out[k, j] = xy
    return out


def encode_crops(pairs: list[npt.NDArray[np.uint8]]) -> tuple[int, str]:
    """Frames' crop pairs ``(2, CROP_H, CROP_W)`` as one base64 PNG (a row per frame, both eyes
    side by side): (frames, base64).  PNG, not JPEG: lossless, so what trains later is what the
    vehicle saw, and the flat crops of a small window compress well anyway."""
    import base64

    if not pairs:
        return 0, ""
    mosaic = np.concatenate([np.concatenate([p[0], p[1]], axis=1) for p in pairs], axis=0)
    ok, buf = cv2.imencode(".png", mosaic, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    if not ok:  # pragma: no cover - OpenCV encodes any uint8 image
        raise ValueError("PNG encoding failed")
    return len(pairs), base64.b64encode(buf.tobytes()).decode("ascii")


def decode_crops(frames: int, png: str) -> npt.NDArray[np.uint8]:
    """Back to ``(frames, 2, CROP_H, CROP_W)``; a ValueError names what does not fit."""
    import base64
    import binascii

    try:
        raw = base64.b64decode(png, validate=True)
    except binascii.Error as err:
        raise ValueError(f"eye crops are not base64: {err}") from None
    img = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_GRAYSCALE)
    if img is None or img.shape != (frames * CROP_H, 2 * CROP_W):
        got = None if img is None else img.shape
        raise ValueError(f"eye crops: expected a {frames * CROP_H}x{2 * CROP_W} PNG, got {got}")
    rows = img.reshape(frames, CROP_H, 2, CROP_W)
    out: npt.NDArray[np.uint8] = np.ascontiguousarray(rows.transpose(0, 2, 1, 3))
    return out
