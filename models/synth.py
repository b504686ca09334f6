"""Synthetic closed eyes made from real open ones (training only; never evaluated on).

Real closed-eye frames are scarce (28 crops from two people), while open eyes are plentiful
and come from more people (clips and stills).  A closed eye, at 24x48 pixels, is the skin of the
lid where the opening was and a dark lash line where the lids meet.  So each synthetic closure
takes a real open crop, fills the opening between the landmark lids with the surrounding skin
(OpenCV inpainting), and draws the lash line at a random height between the lids with a random
darkness, thickness and softness, sometimes with the upper-lid crease above it.  The model then
learns "closed" from many faces, skins and lightings instead of from two men's blinks.
:func:`narrow_eye` makes the opposite: open eyes narrowed as in a look-down or a laugh (opt-in,
``--narrowed-share``).  All evaluation stays on real frames.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

SCALE = 4  # work at 4x: lines thinner than a crop pixel, then area-downsampled
MIN_GAP_PX = 4.0  # what a narrowed open eye keeps open at least, in crop pixels


def _lid_curves(
    lids: npt.NDArray[np.floating[Any]], xs: npt.NDArray[np.float64]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Upper and lower lid heights at ``xs`` (crop pixels), from the 9-point contours."""
    up, low = lids[0].astype(np.float64), lids[1].astype(np.float64)
    ou, ol = np.argsort(up[:, 0]), np.argsort(low[:, 0])
    return np.interp(xs, up[ou, 0], up[ou, 1]), np.interp(xs, low[ol, 0], low[ol, 1])


def _opening(lids: npt.NDArray[np.floating[Any]]) -> npt.NDArray[np.float64]:
    """Lower minus upper lid height (crop pixels) at five points across the middle of the eye."""
    xs = np.linspace(float(lids[:, :, 0].min()), float(lids[:, :, 0].max()), 9)[2:-2]
    up, low = _lid_curves(lids, xs)
    return low - up


def usable(lids: npt.NDArray[np.float32]) -> bool:
    """Lids that enclose an opening (a crop with zeros, or lids crossed, cannot be closed)."""
    return bool(np.any(lids)) and bool(np.all(_opening(lids) > 0.3))


def _skin_over(
    crop: npt.NDArray[np.uint8], polys: list[npt.NDArray[np.int32]], grow: float, rng: np.random.Generator
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """The crop at 4x, and the same with the polygons ``polys`` (4x pixels, grown by ``grow``
    crop pixels) painted over with the skin around them, softly edged and as grainy as the crop."""
    h, w = crop.shape
    s = SCALE
    mask_big = np.zeros((h * s, w * s), dtype=np.uint8)
    cv2.fillPoly(mask_big, polys, 255)
    g = max(1, round(grow * s))
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * g + 1, 2 * g + 1))
    mask_big = cv2.dilate(mask_big, disc)
    mask = (cv2.resize(mask_big, (w, h), interpolation=cv2.INTER_AREA) > 0).astype(np.uint8)
    filled_small = cv2.inpaint(crop, mask, 3, cv2.INPAINT_TELEA)
    big = cv2.resize(crop, (w * s, h * s), interpolation=cv2.INTER_CUBIC).astype(np.float32)
    fill = cv2.resize(filled_small, (w * s, h * s), interpolation=cv2.INTER_CUBIC).astype(np.float32)
    soft = cv2.GaussianBlur(mask_big.astype(np.float32) / 255.0, (0, 0), s * 0.5)
    filled = big * (1.0 - soft) + fill * soft
    grain = float(np.std(crop[mask == 0])) * rng.uniform(0.02, 0.08) if np.any(mask == 0) else 0.0
    noise = cv2.GaussianBlur(rng.normal(0.0, 1.0, filled.shape).astype(np.float32), (0, 0), s * 0.6)
    filled += soft * noise * grain * 3.0
    return big, filled


def close_eye(
    crop: npt.NDArray[np.uint8], lids: npt.NDArray[np.float32], rng: np.random.Generator
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.float32]]:
    """A closed version of an open eye crop ``(H, W)`` uint8 whose lids are ``(2, 9, 2)`` in
    crop pixels (upper, then lower; :func:`edge_agent.perception.eyecrop.lid_contours`), and the lids a
    landmark model would then draw: both near the lash line, a sliver apart at most."""
    h, w = crop.shape
    s = SCALE
    pts = (lids.astype(np.float64) + 0.5) * s - 0.5
    # Fill the opening (grown a little: the lashes and the lid margin go with it) from the skin
    # around it, at crop resolution (inpainting is the cost here), then work at 4x for the lines.
    poly = np.concatenate([pts[0], pts[1][::-1]]).round().astype(np.int32)
    big, filled = _skin_over(crop, [poly], rng.uniform(0.6, 1.6), rng)

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


def narrow_eye(
    crop: npt.NDArray[np.uint8], lids: npt.NDArray[np.float32], rng: np.random.Generator
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.float32]]:
    """An open eye made narrower but still open, as in looking down (the upper lid follows the
    gaze down over the iris) or laughing (the cheek pushes the lower lid up too): a hard
    *open* example, for the leave-one-out folds' errors (talkingface's look-down, openness
    0.22-0.38), since every synthetic closure teaches that a smaller opening means shut.  Tried
    as v2.5 and not shipped (design note 17): those errors stayed, because the real look-down
    crops show no iris at all, unlike these.  The upper lid comes down 20-50 % of the opening, sometimes the
    lower lid up 0-15 %; skin fills what they cover, a dark margin marks the new upper lid, and
    what stays between them (iris, sclera) is the real eye, untouched.  At least 40 % of the
    opening and :data:`MIN_GAP_PX` crop pixels stay open, so the picture still shows an open eye;
    an eye too small for that comes back unchanged (still a true open example)."""
    h, w = crop.shape
    s = SCALE
    cover = min(0.6, 1.0 - MIN_GAP_PX / max(float(_opening(lids).max()), 1e-6))
    if cover < 0.2:
        return crop, lids
    pts = (lids.astype(np.float64) + 0.5) * s - 0.5
    xs_up, xs_low = pts[0, :, 0], pts[1, :, 0]
    down = rng.uniform(0.2, min(0.5, cover))
    up_frac = min(rng.uniform(0.0, 0.15), cover - down) if rng.random() < 0.4 else 0.0
    u_at_up, l_at_up = _lid_curves(pts, xs_up)
    u_at_low, l_at_low = _lid_curves(pts, xs_low)
    new_up = pts[0].copy()
    new_up[:, 1] = u_at_up + down * (l_at_up - u_at_up)
    new_low = pts[1].copy()
    new_low[:, 1] = l_at_low - up_frac * (l_at_low - u_at_low)
    # Covered bands: old upper lid down to the new one, and the new lower lid down to the old.
    bands = [np.concatenate([pts[0], new_up[::-1]])]
    if up_frac > 0:
        bands.append(np.concatenate([new_low, pts[1][::-1]]))
    polys = [b.round().astype(np.int32) for b in bands]
    big, filled = _skin_over(crop, polys, rng.uniform(0.2, 0.6), rng)
    # The new upper lid margin: lashes and lid edge, a dark soft line along it.
    shade = np.zeros(big.shape, dtype=np.float32)
    line = new_up.round().astype(np.int32)
    cv2.polylines(shade, [line], False, 1.0, max(1, round(rng.uniform(0.6, 1.8) * s)), cv2.LINE_AA)
    shade = cv2.GaussianBlur(shade, (0, 0), rng.uniform(0.4, 1.2) * s)
    shade /= max(float(shade.max()), 1e-6)
    out = filled * (1.0 - rng.uniform(0.2, 0.6) * shade)
    small = cv2.resize(np.clip(out, 0, 255), (w, h), interpolation=cv2.INTER_AREA)
    result: npt.NDArray[np.uint8] = np.clip(small, 0, 255).round().astype(np.uint8)
    narrowed = np.stack([new_up, new_low])
    return result, ((narrowed + 0.5) / s - 0.5).astype(np.float32)
