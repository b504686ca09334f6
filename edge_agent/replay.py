"""`replay`: the full per-frame path on a clip, as fast as it decodes, on the clip's own clock
(deterministic: the same clip gives the same records), for users, `eval` and the tests."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from edge_agent.config import EdgeConfig
from edge_agent.perception.capture import clip_fps, open_capture, parse_source, read_clip
from edge_agent.pipeline import Pipeline
from edge_agent.preview import PreviewSink, annotate, preview_lines
from sleepsafe.protocol import Event, EventType


def replay_record(e: Event) -> dict[str, Any]:
    """The JSON line replay prints for a finished event (features omitted)."""
    rec = e.model_dump(mode="json", exclude={"features", "model_versions"})
    if e.phase == "instant":  # blinks, nods, disagreements: never raised
        rec.pop("raised_frame", None)
        rec.pop("raised_ms", None)
        rec.pop("raised_time", None)
    return rec


class FrameFilter(Protocol):
    """What a replay may do to the frames (``eval --degrade``): drop some, change the rest."""

    def keep(self, t: float) -> bool: ...

    def __call__(self, img: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]: ...


@dataclass(slots=True)
class ReplayResult:
    events: list[Event]  # finished records: phase 'ended' or 'instant'
    raised: list[Event]
    face_flags: list[bool]
    frames: int
    frames_with_face: int
    seconds: float
    wall_s: float
    fps_clip: float
    summary: dict[str, Any]


def replay_clip(
    cfg: EdgeConfig,
    path: Path,
    on_finished: Callable[[Event], None] | None = None,
    preview: PreviewSink | None = None,
    transform: FrameFilter | None = None,
) -> ReplayResult:
    """Run the full per-frame path on a clip as fast as possible, on the clip's own clock."""
    with_full = preview is not None
    pipe = Pipeline(cfg, full_landmarks=with_full)
    finished: list[Event] = []
    raised: list[Event] = []
    face_flags: list[bool] = []
    t_last = 0.0
    wall0 = time.perf_counter()

    def take(events: list[Event]) -> None:
        for e in events:
            if e.phase == "raised":
                raised.append(e)
            else:
                finished.append(e)
                if on_finished is not None:
                    on_finished(e)

    try:
        frames: Iterator[tuple[int, float, Any]] = read_clip(path)
        for index, t, frame in frames:
            if transform is not None and not transform.keep(t):
                # A slower camera would not have seen this frame: the last decision holds.
                face_flags.append(face_flags[-1] if face_flags else False)
                continue
            img = transform(frame) if transform is not None else frame
            res = pipe.process(img, t, index)
            face_flags.append(res.features.face)
            t_last = t
            take(res.events)
            if preview is not None:
                preview.show(annotate(img, res.face, preview_lines(pipe, res), pipe.detector.state))
        take(pipe.finish())
    finally:
        pipe.close()
        if preview is not None:
            preview.close()
    wall = time.perf_counter() - wall0
    n = len(face_flags)
    cap = open_capture(parse_source(str(path)))
    fps_clip = clip_fps(cap)
    cap.release()
    status = pipe.detector.status()
    summary = {
        "type": "summary",
        "clip": path.name,
        "frames": n,
        "frames_with_face": int(sum(face_flags)),
        "seconds": round(t_last + (1.0 / fps_clip if n else 0.0), 3),
        "blinks": status.blinks,
        "blink_rate_per_min": round(status.blink_rate_per_min, 2),
        "perclos": round(status.perclos, 4),
        "baseline_ear": round(status.baseline_ear, 4),
        "calibrated": status.calibrated,
        "alerts": {
            t.value: sum(1 for e in raised if e.type is t)
            for t in EventType
            if t not in (EventType.BLINK, EventType.DISAGREEMENT) and any(e.type is t for e in raised)
        },
        "fps": round(n / wall, 1) if wall > 0 else 0.0,
        "clip_fps": round(fps_clip, 2),
        "model_versions": pipe.model_versions,
        "providers": pipe.providers,
        "models": cfg.models.mode if pipe.eye_model is not None or pipe.temporal is not None else "off",
    }
    return ReplayResult(
        events=finished,
        raised=raised,
        face_flags=face_flags,
        frames=n,
        frames_with_face=int(sum(face_flags)),
        seconds=t_last,
        wall_s=wall,
        fps_clip=fps_clip,
        summary=summary,
    )


def default_preview_path(state_dir: Path, name: str) -> Path:
    return state_dir / f"preview-{Path(name).stem}.mp4"
