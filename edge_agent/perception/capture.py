"""Frame sources: cameras, files, network streams and GStreamer pipelines.

Live capture runs in its own thread and keeps only the newest frame in a one-slot mailbox:
the frame loop always works on the freshest image, and a frame it was too slow to take is
counted as dropped instead of queueing up latency.  A source that fails is reopened with
exponential backoff while the daemon keeps running and reports CAMERA_LOST.
"""

from __future__ import annotations

import random
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import structlog

from edge_agent.config import SourceConfig
from sleepsafe.redact import mask_url_passwords

log = structlog.get_logger(__name__)
Frame = npt.NDArray[np.uint8]

_URL = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)


class SourceError(RuntimeError):
    """A source that cannot be opened or read, as one line."""


@dataclass(frozen=True, slots=True)
class SourceSpec:
    kind: str  # camera | device | file | stream | gstreamer
    target: str | int


def parse_source(uri: str) -> SourceSpec:
    """Classify a source string the way an installer writes it."""
    uri = uri.strip()
    if not uri:
        raise SourceError("source is empty")
    if uri.isdigit():
        return SourceSpec("camera", int(uri))
    if "!" in uri:
        return SourceSpec("gstreamer", uri)
    if _URL.match(uri) and not uri.lower().startswith("file://"):
        return SourceSpec("stream", uri)
    path = uri[7:] if uri.lower().startswith("file://") else uri
    if re.fullmatch(r"/dev/video\d+", path):
        return SourceSpec("device", path)
    return SourceSpec("file", path)


def open_capture(spec: SourceSpec, cfg: SourceConfig | None = None) -> cv2.VideoCapture:
    """Open a source with the right OpenCV backend; raise SourceError naming the problem."""
    if spec.kind == "file" and not Path(str(spec.target)).is_file():
        raise SourceError(f"video file {spec.target}: not found")
    api = {
        "camera": cv2.CAP_V4L2,
        "device": cv2.CAP_V4L2,
        "gstreamer": cv2.CAP_GSTREAMER,
        "stream": cv2.CAP_FFMPEG,
        "file": cv2.CAP_FFMPEG,
    }[spec.kind]
    params: list[int] = []
    if spec.kind == "stream":
        # A network camera that stalls must fail the read, not hang the capture thread forever.
        timeout_ms = int((cfg.stream_timeout_s if cfg else 5.0) * 1000)
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, timeout_ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, timeout_ms]
    cap = cv2.VideoCapture(spec.target, api, params) if params else cv2.VideoCapture(spec.target, api)
    if not cap.isOpened():
        cap.release()
        hint = ""
        if spec.kind == "gstreamer":
            hint = " (is this OpenCV built with GStreamer? see docs/jetson.md)"
        shown = mask_url_passwords(spec.target) if isinstance(spec.target, str) else spec.target
        raise SourceError(f"{spec.kind} source {shown!r}: cannot open{hint}")
    if cfg is not None and spec.kind in ("camera", "device"):
        if cfg.width:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, cfg.width)
        if cfg.height:
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, cfg.height)
        if cfg.fps:
            cap.set(cv2.CAP_PROP_FPS, cfg.fps)
    return cap


def clip_fps(cap: cv2.VideoCapture) -> float:
    fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
    return fps if 1.0 <= fps <= 1000.0 else 30.0


def read_clip(path: str | Path) -> Iterator[tuple[int, float, Frame]]:
    """Decode a clip as fast as possible: ``(index, t_seconds, frame)`` with the clip's own
    timestamps.  A frame whose timestamp is missing or goes backwards gets index / fps."""
    cap = open_capture(SourceSpec("file", str(path)))
    fps = clip_fps(cap)
    last_t = -1.0
    index = 0
    try:
        while True:
            ok, frame = cap.read()
            if not ok or frame is None:
                break
            t = float(cap.get(cv2.CAP_PROP_POS_MSEC)) / 1000.0
            if not (t > last_t) or (index > 0 and t == 0.0):
                t = index / fps if index / fps > last_t else last_t + 1.0 / fps
            last_t = t
            yield index, t, frame
            index += 1
    finally:
        cap.release()


@dataclass(slots=True)
class Captured:
    seq: int
    t: float
    frame: Frame


class CaptureThread:
    """Reads a live source in a thread; :meth:`latest` hands over the newest frame only."""

    def __init__(self, cfg: SourceConfig) -> None:
        self.cfg = cfg
        self.spec = parse_source(cfg.uri)
        self._cond = threading.Condition()
        self._slot: Captured | None = None
        self._seq = 0
        self._taken_seq = 0
        self.dropped = 0
        self.captured = 0
        self.reconnects = 0
        self.lost = False
        self.lost_reason = ""
        self.ended = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="capture", daemon=True)
        self._t0 = time.monotonic()

    def start(self) -> CaptureThread:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        self._thread.join(timeout=5.0)

    def latest(self, timeout: float) -> Captured | None:
        """Wait up to ``timeout`` s for a frame newer than the last one taken."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._slot is None or self._slot.seq == self._taken_seq:
                if self._stop.is_set() or self.ended:
                    return None
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)
            item = self._slot
            self.dropped += item.seq - self._taken_seq - 1
            self._taken_seq = item.seq
            return item

    def now(self) -> float:
        return time.monotonic() - self._t0

    # ------------------------------------------------------------------ thread
    def _publish(self, frame: Frame) -> None:
        with self._cond:
            self._seq += 1
            self.captured += 1
            self._slot = Captured(self._seq, self.now(), frame)
            self._cond.notify_all()

    def _set_lost(self, reason: str) -> None:
        if not self.lost:
            log.warning("camera_lost", source=mask_url_passwords(self.cfg.uri), reason=reason)
        self.lost = True
        self.lost_reason = reason
        with self._cond:
            self._cond.notify_all()

    def _run(self) -> None:
        delay = self.cfg.reconnect_initial_s
        while not self._stop.is_set():
            try:
                cap = open_capture(self.spec, self.cfg)
            except SourceError as err:
                self._set_lost(str(err))
                self._backoff(delay)
                delay = min(self.cfg.reconnect_max_s, delay * 2.0)
                continue
            if self.lost:
                self.reconnects += 1
                log.info(
                    "camera_recovered", source=mask_url_passwords(self.cfg.uri), reconnects=self.reconnects
                )
            self.lost = False
            delay = self.cfg.reconnect_initial_s
            outcome = self._pump(cap)
            cap.release()
            if outcome == "stop":
                return
            if outcome == "eof" and self.spec.kind == "file":
                if self.cfg.on_eof == "exit":
                    self.ended = True
                    with self._cond:
                        self._cond.notify_all()
                    log.info("source_ended", source=mask_url_passwords(self.cfg.uri), frames=self.captured)
                    return
                if self.cfg.on_eof == "loop":
                    continue
            self._set_lost("source ended" if outcome == "eof" else "read failed")
            self._backoff(delay)
            delay = min(self.cfg.reconnect_max_s, delay * 2.0)

    def _pump(self, cap: cv2.VideoCapture) -> str:
        pace = self.spec.kind == "file" and self.cfg.realtime
        fps = clip_fps(cap)
        start = time.monotonic()
        n = 0
        while not self._stop.is_set():
            ok, frame = cap.read()
            if not ok or frame is None:
                return "eof" if n > 0 else "fail"
            if pace:
                due = start + n / fps
                wait = due - time.monotonic()
                if wait > 0 and self._stop.wait(wait):
                    return "stop"
            n += 1
            self._publish(frame)
        return "stop"

    def _backoff(self, delay: float) -> None:
        # Jitter keeps a fleet of units from reconnecting to a shared stream in lockstep.
        self._stop.wait(delay * random.uniform(0.8, 1.2))
