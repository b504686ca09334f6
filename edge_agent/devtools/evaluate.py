"""Score the agent on labelled real clips (labels.csv format of shared/data/README.md).

Scores: blink precision / recall / F1 (a detected blink matches a labelled blink range it
overlaps, one to one); closure alarms (MICROSLEEP/SLEEP) inside and outside ``closed`` ranges,
and, of those outside, how many fell in ``look_down`` / ``squint_smile`` ranges; the latency
from the start of each ``closed`` range to its first alarm; per-frame face-presence accuracy.
An ``unsure`` range marks frames a labeller could not decide (shut eyes or a downcast look?): a
blink or alarm there is neither counted nor held against the agent, and is reported as ignored,
so the decision stays visible instead of being guessed into the figures.
Clips or label rows it cannot use are reported under ``problems``, never silently dropped.
"""

from __future__ import annotations

import csv
import zlib
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge_agent.config import EdgeConfig
from edge_agent.replay import replay_clip
from sleepsafe.protocol import Event, EventType

Image = np.ndarray[Any, Any]


def _gray(img: Image) -> Image:
    out: Image = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY) if img.ndim == 3 else img
    return out


def _small(img: Image) -> Image:
    """A cheap camera sees the same scene with fewer pixels: fit the frame into 320x180, keeping
    its aspect (a 4:3 frame squeezed to 16:9 flattens every eye), and never upscale."""
    h, w = img.shape[:2]
    scale = min(1.0, 320 / w, 180 / h)
    if scale >= 1.0:
        return img
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    out: Image = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
    return out


def _roll15(img: Image) -> Image:
    h, w = img.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2.0, h / 2.0), 15.0, 1.0)
    out: Image = cv2.warpAffine(img, m, (w, h), borderMode=cv2.BORDER_REPLICATE)
    return out


@dataclass(frozen=True, slots=True)
class NearInfrared:
    """A near-infrared cabin camera at night: monochrome, dark (a gamma curve and less
    contrast), sensor noise and a slightly soft lens.  The noise of a frame is seeded from the
    frame itself, so every replay of a clip sees the same noise (deterministic figures)."""

    gamma: float  # > 1 darkens the mid-tones
    contrast: float  # the range the scene keeps, 0-1
    noise: float  # sensor noise, standard deviation in grey levels (0-255)
    blur: int  # Gaussian kernel, odd pixels (1: none)

    def __call__(self, img: Image) -> Image:
        g = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY) if img.ndim == 3 else img
        x = (g.astype(np.float32) / 255.0) ** self.gamma * self.contrast
        if self.blur > 1:
            x = cv2.GaussianBlur(x, (self.blur, self.blur), 0)
        rng = np.random.default_rng(zlib.crc32(np.ascontiguousarray(g[::8, ::8]).tobytes()))
        x = x * 255.0 + rng.normal(0.0, self.noise, x.shape).astype(np.float32)
        out: Image = np.clip(x, 0, 255).astype(np.uint8)
        return out


# Three strengths: a cabin at dusk, a night, a night with a noisier sensor and a softer lens.
# Darker still (gamma 1.9-2.0 with contrast 0.6-0.65) FaceMesh draws shut lids at openness
# 0.2-0.34, where open, downcast eyes also lie: see docs/evaluation.md, "Night-time infrared".
IR_LEVELS = {
    "ir1": NearInfrared(gamma=1.5, contrast=0.8, noise=4.0, blur=3),
    "ir2": NearInfrared(gamma=1.8, contrast=0.7, noise=6.0, blur=3),
    "ir3": NearInfrared(gamma=1.8, contrast=0.7, noise=8.0, blur=5),
}


class LowFrameRate:
    """A camera of at most ``fps`` frames a second: the frames in between are dropped (the
    agent keeps its last decision for them, as it would on the vehicle)."""

    def __init__(self, fps: float) -> None:
        self.fps = fps

    def keep(self, t: float, last_kept: float | None) -> bool:
        return last_kept is None or t - last_kept >= 1.0 / self.fps - 1e-6


# Degraded views of the real clips: a camera without colour, near-infrared cameras at night, a
# cheap low-resolution camera, a driver leaning the head, a 15 fps camera.  Applied to every
# frame before the agent sees it.
DEGRADATIONS: dict[str, Callable[[Image], Image] | LowFrameRate] = {
    "gray": _gray,
    **IR_LEVELS,
    "320x180": _small,
    "roll15": _roll15,
    "15fps": LowFrameRate(15.0),
}


class Degrade:
    """Degradations in the order given: frame rates decide which frames reach the agent, the
    rest transform each frame."""

    def __init__(self, names: list[str]) -> None:
        steps = [DEGRADATIONS[n] for n in names]
        self.rates = [s for s in steps if isinstance(s, LowFrameRate)]
        self.images = [s for s in steps if not isinstance(s, LowFrameRate)]
        self._last_kept: float | None = None

    def keep(self, t: float) -> bool:
        if all(r.keep(t, self._last_kept) for r in self.rates):
            self._last_kept = t
            return True
        return False

    def __call__(self, img: Image) -> Image:
        for fn in self.images:
            img = fn(img)
        return img


def compose(names: list[str]) -> Degrade | None:
    unknown = [n for n in names if n not in DEGRADATIONS]
    if unknown:
        raise ValueError(f"unknown degradation {', '.join(unknown)}; known: {', '.join(DEGRADATIONS)}")
    return Degrade(names) if names else None


KNOWN_LABELS = ("face", "no_face", "blink", "closed", "look_down", "squint_smile", "unsure")
BLINK_TOLERANCE_FRAMES = 2
_CLOSURE_ALARMS = (EventType.MICROSLEEP, EventType.SLEEP)


@dataclass(frozen=True, slots=True)
class Label:
    clip: str
    start: int
    end: int
    label: str
    note: str = ""
    source: str = ""


@dataclass(slots=True)
class ClipScore:
    clip: str
    frames: int = 0
    blink_tp: int = 0
    blink_fp: int = 0
    blink_fn: int = 0
    blinks_ignored: int = 0  # unmatched blinks inside ``unsure`` ranges
    alarms_ignored: int = 0  # closure alarms raised inside ``unsure`` ranges
    alarms_in_closed: int = 0
    alarms_outside: int = 0
    alarms_in_look_down: int = 0
    alarms_in_squint_smile: int = 0
    closed_ranges: int = 0
    closed_alarmed: int = 0
    latencies_ms: list[int] = field(default_factory=list)
    face_frames_scored: int = 0
    face_frames_correct: int = 0
    fps: float = 0.0
    false_alarms: list[dict[str, Any]] = field(default_factory=list)


def read_labels(paths: list[Path]) -> tuple[list[Label], list[str]]:
    labels: list[Label] = []
    problems: list[str] = []
    for path in paths:
        try:
            with path.open(newline="", encoding="utf-8") as fh:
                reader = csv.DictReader(fh)
                need = {"clip", "start_frame", "end_frame", "label"}
                if reader.fieldnames is None or not need <= set(reader.fieldnames):
                    problems.append(f"{path}: header must contain {', '.join(sorted(need))}")
                    continue
                for lineno, row in enumerate(reader, start=2):
                    where = f"{path.name}:{lineno}"
                    label = (row.get("label") or "").strip()
                    if label not in KNOWN_LABELS:
                        problems.append(f"{where}: unknown label {label!r}; skipped")
                        continue
                    try:
                        start, end = int(row["start_frame"]), int(row["end_frame"])
                    except (TypeError, ValueError):
                        problems.append(f"{where}: frame numbers are not integers; skipped")
                        continue
                    if start < 0 or end < start:
                        problems.append(f"{where}: bad frame range {start}-{end}; skipped")
                        continue
                    labels.append(
                        Label(
                            row["clip"].strip(), start, end, label, (row.get("note") or "").strip(), path.name
                        )
                    )
        except OSError as err:
            problems.append(f"{path}: {err.strerror or err}")
    return labels, problems


def _overlaps(a0: int, a1: int, b0: int, b1: int, tol: int = 0) -> bool:
    return a0 <= b1 + tol and b0 <= a1 + tol


def score_clip(
    name: str, labels: list[Label], events: list[Event], face_flags: list[bool], problems: list[str]
) -> ClipScore:
    s = ClipScore(clip=name, frames=len(face_flags))
    for lab in labels:
        if lab.end >= len(face_flags):
            problems.append(
                f"{name}: label {lab.label} {lab.start}-{lab.end} ends after the last frame "
                f"({len(face_flags) - 1}); scored on the frames that exist"
            )
    # Blinks: greedy one-to-one matching on overlap.
    blinks = [e for e in events if e.type is EventType.BLINK]
    truth = [lab for lab in labels if lab.label == "blink"]
    used: set[int] = set()
    for lab in truth:
        match = next(
            (
                i
                for i, e in enumerate(blinks)
                if i not in used
                and _overlaps(
                    lab.start, lab.end, e.start_frame, e.end_frame or e.start_frame, BLINK_TOLERANCE_FRAMES
                )
            ),
            None,
        )
        if match is None:
            s.blink_fn += 1
        else:
            used.add(match)
            s.blink_tp += 1
    unsure = [lab for lab in labels if lab.label == "unsure"]
    s.blinks_ignored = sum(
        1
        for i, e in enumerate(blinks)
        if i not in used
        and any(_overlaps(u.start, u.end, e.start_frame, e.end_frame or e.start_frame) for u in unsure)
    )
    s.blink_fp = len(blinks) - len(used) - s.blinks_ignored
    # Closure alarms (each alarm counted once, at the frame it was raised).
    closed = [lab for lab in labels if lab.label == "closed"]
    # Raised and ended records share an event_id: count each alarm once.
    alarms = list(
        {e.event_id: e for e in events if e.type in _CLOSURE_ALARMS and e.raised_frame is not None}.values()
    )
    for e in alarms:
        f = e.raised_frame or 0
        if any(lab.start <= f <= lab.end for lab in closed):
            s.alarms_in_closed += 1
            continue
        if any(u.start <= f <= u.end for u in unsure):
            s.alarms_ignored += 1
            continue
        s.alarms_outside += 1
        for kind in ("look_down", "squint_smile"):
            if any(lab.label == kind and _overlaps(lab.start, lab.end, e.start_frame, f) for lab in labels):
                if kind == "look_down":
                    s.alarms_in_look_down += 1
                else:
                    s.alarms_in_squint_smile += 1
        s.false_alarms.append({"type": e.type.value, "start_frame": e.start_frame, "raised_frame": f})
    for lab in closed:
        s.closed_ranges += 1
        first = min(
            (e for e in alarms if lab.start <= (e.raised_frame or -1) <= lab.end),
            key=lambda e: e.raised_ms or 0,
            default=None,
        )
        if first is not None:
            s.closed_alarmed += 1
            start_ms = _frame_ms(events, lab.start, first)
            s.latencies_ms.append(int((first.raised_ms or 0) - start_ms))
    # Face presence, per labelled frame.
    truth_face: dict[int, bool] = {}
    for lab in labels:
        if lab.label in ("face", "no_face"):
            for i in range(lab.start, min(lab.end, len(face_flags) - 1) + 1):
                truth_face[i] = lab.label == "face"
    s.face_frames_scored = len(truth_face)
    s.face_frames_correct = sum(1 for i, v in truth_face.items() if face_flags[i] == v)
    return s


def _frame_ms(events: list[Event], frame: int, alarm: Event) -> float:
    """Source time of a frame, from the alarm's feature window when it reaches back that far,
    else by the alarm's own start frame and time."""
    for sample in alarm.features:
        if sample.frame == frame:
            return float(sample.t_ms)
    # Fall back on proportional time between the alarm's start and raise.
    if alarm.raised_frame and alarm.raised_frame != alarm.start_frame and alarm.raised_ms is not None:
        per = (alarm.raised_ms - alarm.start_ms) / (alarm.raised_frame - alarm.start_frame)
        return alarm.start_ms + (frame - alarm.start_frame) * per
    return float(alarm.start_ms)


def _prf(tp: int, fp: int, fn: int) -> dict[str, float]:
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * p * r / (p + r) if p + r else 0.0
    return {"precision": round(p, 3), "recall": round(r, 3), "f1": round(f1, 3)}


def evaluate(
    cfg: EdgeConfig,
    label_files: list[Path],
    clips_dir: Path,
    degrade: list[str] | None = None,
    only: list[str] | None = None,
) -> dict[str, Any]:
    """Replay every labelled clip (or the ``only`` ones: a leave-one-subject-out model is scored
    on its own subject's clips) and score it against its labels."""
    labels, problems = read_labels(label_files)
    by_clip: dict[str, list[Label]] = defaultdict(list)
    for lab in labels:
        if not only or lab.clip in only:
            by_clip[lab.clip].append(lab)
    for name in only or []:
        if name not in by_clip:
            problems.append(f"{name}: no labels for this clip; not scored")
    clips: list[ClipScore] = []
    model_versions: dict[str, str] = {}
    for name in sorted(by_clip):
        path = clips_dir / name
        if not path.is_file():
            problems.append(
                f"{name}: clip not found in {clips_dir}; its {len(by_clip[name])} labels not scored"
            )
            continue
        try:
            res = replay_clip(cfg, path, transform=compose(degrade or []))  # fresh per clip
        except Exception as err:  # noqa: BLE001 - one broken clip must not hide the others' scores
            problems.append(f"{name}: replay failed: {type(err).__name__}: {err}")
            continue
        model_versions = res.summary.get("model_versions", {})
        sc = score_clip(name, by_clip[name], res.raised + res.events, res.face_flags, problems)
        sc.fps = round(res.frames / res.wall_s, 1) if res.wall_s > 0 else 0.0
        clips.append(sc)
    tp = sum(c.blink_tp for c in clips)
    fp = sum(c.blink_fp for c in clips)
    fn = sum(c.blink_fn for c in clips)
    lat = sorted(x for c in clips for x in c.latencies_ms)
    scored = sum(c.face_frames_scored for c in clips)
    correct = sum(c.face_frames_correct for c in clips)
    inside = sum(c.alarms_in_closed for c in clips)
    outside = sum(c.alarms_outside for c in clips)
    return {
        "clips": [
            {
                "clip": c.clip,
                "frames": c.frames,
                "fps": c.fps,
                "blinks": {
                    "tp": c.blink_tp,
                    "fp": c.blink_fp,
                    "fn": c.blink_fn,
                    "ignored_unsure": c.blinks_ignored,
                    **_prf(c.blink_tp, c.blink_fp, c.blink_fn),
                },
                "closure_alarms": {
                    "inside_closed": c.alarms_in_closed,
                    "outside_closed": c.alarms_outside,
                    "in_look_down": c.alarms_in_look_down,
                    "in_squint_smile": c.alarms_in_squint_smile,
                    "ignored_unsure": c.alarms_ignored,
                    "false_alarms": c.false_alarms,
                },
                "closed_ranges": c.closed_ranges,
                "closed_ranges_alarmed": c.closed_alarmed,
                "latency_ms": c.latencies_ms,
                "face_accuracy": round(c.face_frames_correct / c.face_frames_scored, 4)
                if c.face_frames_scored
                else None,
            }
            for c in clips
        ],
        "blinks": {
            "tp": tp,
            "fp": fp,
            "fn": fn,
            "ignored_unsure": sum(c.blinks_ignored for c in clips),
            **_prf(tp, fp, fn),
        },
        "closure_alarms": {
            "inside_closed": inside,
            "outside_closed": outside,
            "precision": round(inside / (inside + outside), 3) if inside + outside else None,
            "in_look_down": sum(c.alarms_in_look_down for c in clips),
            "in_squint_smile": sum(c.alarms_in_squint_smile for c in clips),
            "ignored_unsure": sum(c.alarms_ignored for c in clips),
        },
        "closed_ranges": sum(c.closed_ranges for c in clips),
        "closed_ranges_alarmed": sum(c.closed_alarmed for c in clips),
        "latency_ms": {
            "values": lat,
            "max": max(lat) if lat else None,
            "mean": round(sum(lat) / len(lat), 1) if lat else None,
        },
        "face_accuracy": round(correct / scored, 4) if scored else None,
        "face_frames_scored": scored,
        "degrade": degrade or [],
        "model_versions": model_versions,
        "problems": problems,
    }


def format_comparison(off: dict[str, Any], on: dict[str, Any]) -> str:
    """One line per headline figure: EAR alone vs EAR + models, with the change."""
    rows = ["figure                              EAR alone   EAR+models"]

    def line(label: str, a: Any, b: Any) -> None:
        rows.append(f"{label:<36}{a!s:>10}   {b!s:>10}")

    line("blink F1", off["blinks"]["f1"], on["blinks"]["f1"])
    line("blink precision", off["blinks"]["precision"], on["blinks"]["precision"])
    line("blink recall", off["blinks"]["recall"], on["blinks"]["recall"])
    line(
        "closure alarms inside closed",
        off["closure_alarms"]["inside_closed"],
        on["closure_alarms"]["inside_closed"],
    )
    line(
        "closure alarms outside closed",
        off["closure_alarms"]["outside_closed"],
        on["closure_alarms"]["outside_closed"],
    )
    line("closure-alarm precision", off["closure_alarms"]["precision"], on["closure_alarms"]["precision"])
    line(
        "alarms in look_down / squint_smile",
        f"{off['closure_alarms']['in_look_down']}/{off['closure_alarms']['in_squint_smile']}",
        f"{on['closure_alarms']['in_look_down']}/{on['closure_alarms']['in_squint_smile']}",
    )
    line(
        "closed ranges alarmed",
        f"{off['closed_ranges_alarmed']}/{off['closed_ranges']}",
        f"{on['closed_ranges_alarmed']}/{on['closed_ranges']}",
    )
    line("max alarm latency ms", off["latency_ms"]["max"], on["latency_ms"]["max"])
    line("face accuracy", off["face_accuracy"], on["face_accuracy"])
    return "\n".join(rows)


def format_table(report: dict[str, Any]) -> str:
    rows = [
        "clip                         frames  blinks tp/fp/fn  closure alarms in/out  "
        "latency ms   face acc   fps"
    ]
    for c in report["clips"]:
        b = c["blinks"]
        a = c["closure_alarms"]
        lat = ",".join(str(x) for x in c["latency_ms"]) or "-"
        acc = f"{c['face_accuracy']:.3f}" if c["face_accuracy"] is not None else "-"
        rows.append(
            f"{c['clip']:<28} {c['frames']:>6}  {b['tp']:>5}/{b['fp']}/{b['fn']:<8} "
            f"{a['inside_closed']:>9}/{a['outside_closed']:<12} {lat:<12} {acc:>8} {c['fps']:>6}"
        )
    b = report["blinks"]
    a = report["closure_alarms"]
    rows.append("")
    rows.append(
        f"blinks: precision {b['precision']:.3f}  recall {b['recall']:.3f}  F1 {b['f1']:.3f}  "
        f"(tp {b['tp']}, fp {b['fp']}, fn {b['fn']}; {b['ignored_unsure']} in unsure ranges, not counted)"
    )
    rows.append(
        f"closure alarms: {a['inside_closed']} inside closed ranges, {a['outside_closed']} outside "
        f"({a['in_look_down']} in look_down, {a['in_squint_smile']} in squint_smile; "
        f"{a['ignored_unsure']} in unsure ranges, not counted)"
    )
    lat = report["latency_ms"]
    rows.append(
        f"closed ranges alarmed: {report['closed_ranges_alarmed']}/{report['closed_ranges']}"
        f"  latency ms: {lat['values'] or '-'}"
    )
    fa = report["face_accuracy"]
    rows.append(
        f"face presence accuracy: {fa:.4f} over {report['face_frames_scored']} frames"
        if fa is not None
        else "face presence: no labelled frames"
    )
    if report["problems"]:
        rows.append("problems:")
        rows.extend(f"  - {p}" for p in report["problems"])
    return "\n".join(rows)
