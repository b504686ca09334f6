"""Synthetic closed eyes made from real open ones (training only; never evaluated on).

Real closed-eye frames are scarce (28 crops from two people), while open eyes are plentiful
and come from more people (clips and stills).  A closed eye, at 24x48 pixels, is the skin of the
lid where the opening was and a dark lash line where the lids meet.  So each synthetic closure
takes a real open crop, fills the opening between the landmark lids with the surrounding skin
(OpenCV inpainting), and draws the lash line at a random height between the lids with a random
darkness, thickness and softness, sometimes with the upper-lid crease above it.  The model then
learns "closed" from many faces, skins and lightings instead of from two men's blinks.  All
evaluation stays on real frames.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

SCALE = 4  # work at 4x: lines thinner than a crop pixel, then area-downsampled


def _lid_curves(
    lids: npt.NDArray[np.floating[Any]], xs: npt.NDArray[np.float64]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Upper and lower lid heights at ``xs`` (crop pixels), from the 9-point contours."""
    up, low = lids[0].astype(np.float64), lids[1].astype(np.float64)
    ou, ol = np.argsort(up[:, 0]), np.argsort(low[:, 0])
    return np.interp(xs, up[ou, 0], up[ou, 1]), np.interp(xs, low[ol, 0], low[ol, 1])


def usable(lids: npt.NDArray[np.float32]) -> bool:
    """Lids that enclose an opening (a crop with zeros, or lids crossed, cannot be closed)."""
    if not np.any(lids):
        return False
    xs = np.linspace(float(lids[:, :, 0].min()), float(lids[:, :, 0].max()), 9)[2:-2]
    up, low = _lid_curves(lids, xs)
    return bool(np.all(low - up > 0.3))


def close_eye(
    crop: npt.NDArray[np.uint8], lids: npt.NDArray[np.float32], rng: np.random.Generator
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.float32]]:
    """A closed version of an open eye crop ``(H, W)`` uint8 whose lids are ``(2, 9, 2)`` in
    crop pixels (upper, then lower; :func:`edge_agent.eyecrop.lid_contours`), and the lids a
    landmark model would then draw: both near the lash line, a sliver apart at most."""
    h, w = crop.shape
    s = SCALE
    pts = (lids.astype(np.float64) + 0.5) * s - 0.5
    # Fill the opening (grown a little: the lashes and the lid margin go with it) from the skin
    # around it, at crop resolution (inpainting is the cost here), then work at 4x for the lines.
    poly = np.concatenate([pts[0], pts[1][::-1]]).round().astype(np.int32)
    mask_big = np.zeros((h * s, w * s), dtype=np.uint8)
    cv2.fillPoly(mask_big, [poly], 255)
    grow = round(rng.uniform(0.6, 1.6) * s)
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1, 2 * grow + 1))
    mask_big = cv2.dilate(mask_big, disc)
    mask = (cv2.resize(mask_big, (w, h), interpolation=cv2.INTER_AREA) > 0).astype(np.uint8)
    filled_small = cv2.inpaint(crop, mask, 3, cv2.INPAINT_TELEA)
    big = cv2.resize(crop, (w * s, h * s), interpolation=cv2.INTER_CUBIC).astype(np.float32)
    fill = cv2.resize(filled_small, (w * s, h * s), interpolation=cv2.INTER_CUBIC).astype(np.float32)
    soft = cv2.GaussianBlur(mask_big.astype(np.float32) / 255.0, (0, 0), s * 0.5)
    filled = big * (1.0 - soft) + fill * soft
    # Skin texture inside the filled area, as grainy as the crop around it.
    grain = float(np.std(crop[mask == 0])) * rng.uniform(0.02, 0.08)
    noise = cv2.GaussianBlur(rng.normal(0.0, 1.0, filled.shape).astype(np.float32), (0, 0), s * 0.6)
    filled += soft * noise * grain * 3.0

    xs = np.arange(w * s, dtype=np.float64)
    x0, x1 = float(pts[:, :, 0].min()), float(pts[:, :, 0].max())
    up, low = _lid_curves(pts, xs)
    inside = (xs >= x0) & (xs <= x1)
    # Lash line: where the lids meet, nearer the lower lid, a little inside each corner.
    r = rng.uniform(0.05, 0.5)
    line_y = low - r * (low - up)
    shade = np.zeros(big.shape, dtype=np.float32)
    margin = rng.uniform(0.0, 0.12) * (x1 - x0)
    keep = inside & (xs >= x0 + margin) & (xs <= x1 - margin * rng.uniform(0.0, 1.0))
    line = np.stack([xs[keep], line_y[keep]], axis=1).round().astype(np.int32)
    if len(line) > 1:
        thick = max(1, round(rng.uniform(0.6, 2.2) * s))
        cv2.polylines(shade, [line], False, 1.0, thick, lineType=cv2.LINE_AA)
    # Upper-lid crease: a faint fold above the lash line.
    if rng.random() < 0.5:
        crease_y = up - rng.uniform(0.5, 2.5) * s
        crease = np.stack([xs[inside], crease_y[inside]], axis=1).round().astype(np.int32)
        if len(crease) > 1:
            cv2.polylines(shade, [crease], False, rng.uniform(0.15, 0.45), max(1, s // 2), cv2.LINE_AA)
    shade = cv2.GaussianBlur(shade, (0, 0), rng.uniform(0.4, 1.4) * s)
    shade /= max(float(shade.max()), 1e-6)
    darkness = rng.uniform(0.25, 0.7)
    out = filled * (1.0 - darkness * shade)
    small = cv2.resize(np.clip(out, 0, 255), (w, h), interpolation=cv2.INTER_AREA)
    result: npt.NDArray[np.uint8] = np.clip(small, 0, 255).round().astype(np.uint8)
    # The closed lids: on the lash line (back in crop pixels), apart by up to a third of what the
    # opening was, as FaceMesh leaves on real shut eyes.
    closed = lids.astype(np.float64).copy()
    for j in range(2):
        lx = closed[j, :, 0]
        u, lo = _lid_curves(lids, lx)
        mid = lo - r * (lo - u)
        gap = rng.uniform(0.0, 0.35) * (lo - u) / 2.0
        closed[j, 1:-1, 1] = (mid - gap if j == 0 else mid + gap)[1:-1]
    return result, closed.astype(np.float32)
