"""The live daemon (`run`): a small I/O shell around :class:`~edge_agent.pipeline.Pipeline`.

A capture thread feeds a frame thread, which runs the per-frame path and hands events to the
alert outputs and the journal (both non-blocking).  The asyncio loop is the control plane only:
signals, periodic stats, orderly shutdown.  Nothing on the frame path waits for the disk, the
network or a speaker.
"""

from __future__ import annotations

import asyncio
import queue
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np
import structlog

from edge_agent.config import EdgeConfig
from edge_agent.control import ControlServer, GpioAckButton
from edge_agent.outputs.alerts import AlertDispatcher, build_outputs
from edge_agent.outputs.journal import EventLog
from edge_agent.outputs.spool import Spool
from edge_agent.outputs.telemetry import Publisher
from edge_agent.perception.capture import CaptureThread
from edge_agent.perception.landmarks import FrameError
from edge_agent.pipeline import Pipeline
from edge_agent.preview import PreviewSink, annotate, preview_lines
from sleepsafe.protocol import Event, EventType, Stats, Telemetry, TelemetryV2, receipt_key, topic, wire_event
from sleepsafe.redact import mask_url_passwords
from sleepsafe.sdnotify import Notifier

log = structlog.get_logger(__name__)


@dataclass(slots=True)
class LatencyWindow:
    """The last N per-frame processing times, for p50/p99 in stats."""

    size: int = 600
    values: deque[float] = field(default_factory=deque)

    def add(self, v: float) -> None:
        self.values.append(v)
        if len(self.values) > self.size:
            self.values.popleft()

    def quantile(self, q: float) -> float:
        return float(np.quantile(np.fromiter(self.values, float), q)) if self.values else 0.0


class Agent:
    """The live daemon: one camera, one driver."""

    def __init__(
        self,
        cfg: EdgeConfig,
        preview: PreviewSink | None = None,
        on_event: Callable[[Event], None] | None = None,
        install_signals: bool = True,
    ) -> None:
        self.cfg = cfg
        self.preview = preview
        self.on_event = on_event
        self.install_signals = install_signals
        self._stop = threading.Event()
        self._recalibrate = threading.Event()
        self._acks: queue.SimpleQueue[str] = queue.SimpleQueue()  # how the driver acknowledged
        self.acknowledged = 0  # alerts the driver acknowledged
        self.control: ControlServer | None = None
        self.button: GpioAckButton | None = None
        self.latency = LatencyWindow()
        self.stage_latency: dict[str, LatencyWindow] = {}
        self.frames = 0
        self.bad_frames = 0
        self.fps = 0.0
        self.capture: CaptureThread | None = None
        self.pipeline: Pipeline | None = None
        self.events: EventLog | None = None
        self.publisher: Publisher | None = None
        self.alerts: AlertDispatcher | None = None
        self.exit_reason = ""
        self.notifier = Notifier()
        self._first_frame = threading.Event()
        self._stopping_sent = False

    def request_stop(self) -> None:
        self._stop.set()
        self._send_stopping()

    def _send_stopping(self) -> None:
        if not self._stopping_sent:
            self._stopping_sent = True
            self.notifier.stopping(f"stopping after {self.frames} frames")

    def request_recalibration(self) -> None:
        self._recalibrate.set()

    def request_ack(self, via: str) -> None:
        """The driver acknowledged the active alert (button, command, CLI or signal); the frame
        thread records it on the alert."""
        self._acks.put(via)

    # ------------------------------------------------------------------ frame thread
    def _dispatch(self, events: list[Event]) -> None:
        for e in events:
            if self.alerts is not None:
                self.alerts.submit(e)
            if self.events is not None:
                self.events.append(e)
            if self.publisher is not None and (
                e.type is not EventType.BLINK or self.cfg.mqtt.blink_events or self.cfg.mqtt.protocol == 1
            ):
                self.publisher.submit(
                    "event",
                    topic(self.cfg.device_id, "event"),
                    wire_event(e, self.cfg.mqtt.protocol),
                    receipt_key(e),
                )
            if self.on_event is not None:
                self.on_event(e)

    def _frame_loop(self) -> None:
        assert self.capture is not None and self.pipeline is not None
        cap, pipe = self.capture, self.pipeline
        index = 0
        last_frame_at = time.monotonic()
        fps_t0, fps_n = time.monotonic(), 0
        bad_logged = 0.0
        while not self._stop.is_set():
            item = cap.latest(timeout=0.1)
            if self._recalibrate.is_set():
                self._recalibrate.clear()
                pipe.detector.recalibrate()
                log.info("recalibration_requested")
            while not self._acks.empty():
                via = self._acks.get()
                n = pipe.detector.acknowledge(via)
                self.acknowledged += n
                log.info("alert_acknowledged", via=via, alerts=n)
            if item is None:
                if cap.ended:
                    self.exit_reason = "source ended"
                    break
                if cap.lost or time.monotonic() - last_frame_at > self.cfg.source.frame_timeout_s:
                    self._dispatch(pipe.camera_lost(cap.now(), index))
                continue
            last_frame_at = time.monotonic()
            t0 = time.perf_counter()
            try:
                res = pipe.process(item.frame, item.t, index)
            except FrameError as err:
                self.bad_frames += 1
                if time.monotonic() - bad_logged > 5.0:
                    bad_logged = time.monotonic()
                    log.warning("bad_frame", error=str(err), bad_frames=self.bad_frames)
                continue
            t1 = time.perf_counter()
            self.latency.add(t1 - t0)
            self._dispatch(res.events)
            stages = {**pipe.stage_s, "alerts": time.perf_counter() - t1}
            for name, seconds in stages.items():
                self.stage_latency.setdefault(name, LatencyWindow()).add(seconds)
            index += 1
            self.frames += 1
            self._first_frame.set()
            fps_n += 1
            now = time.monotonic()
            if now - fps_t0 >= 1.0:
                self.fps = fps_n / (now - fps_t0)
                fps_t0, fps_n = now, 0
            if self.preview is not None:
                self.preview.show(
                    annotate(item.frame, res.face, preview_lines(pipe, res, self.fps), pipe.detector.state)
                )
        self._dispatch(pipe.finish())

    # ------------------------------------------------------------------ control plane
    def stats(self) -> dict[str, Any]:
        cap = self.capture
        status = self.pipeline.detector.status() if self.pipeline else None
        return {
            **(status.summary() if status else {}),
            "fps": round(self.fps, 2),
            "frames": self.frames,
            "captured": cap.captured if cap else 0,
            "dropped_frames": cap.dropped if cap else 0,
            "bad_frames": self.bad_frames,
            "acknowledged": self.acknowledged,
            "reconnects": cap.reconnects if cap else 0,
            "camera_lost": cap.lost if cap else False,
            "latency_p50_ms": round(self.latency.quantile(0.5) * 1000, 2),
            "latency_p99_ms": round(self.latency.quantile(0.99) * 1000, 2),
            "stages_ms": {
                name: {"p50": round(w.quantile(0.5) * 1000, 3), "p99": round(w.quantile(0.99) * 1000, 3)}
                for name, w in self.stage_latency.items()
            },
            "alerts": self.alerts.stats() if self.alerts else {},
            "model_versions": self.pipeline.model_versions if self.pipeline else {},
            "providers": self.pipeline.providers if self.pipeline else [],
            "events_written": self.events.written if self.events else 0,
            "invalid_records": status.invalid_records if status else 0,
        }

    async def _stats_task(self) -> None:
        # Over MQTT every k-th log line: on a cellular link stats were most of the bytes.
        every = max(1, round(self.cfg.mqtt.stats_interval_s / self.cfg.stats_interval_s))
        tick = 0
        while True:
            await asyncio.sleep(self.cfg.stats_interval_s)
            stats = self.stats()
            log.info("stats", **stats)
            tick += 1
            if self.publisher is not None and (tick - 1) % every == 0:
                msg = Stats(
                    v=self.cfg.mqtt.protocol,
                    device_id=self.cfg.device_id,
                    time=datetime.now(timezone.utc),
                    fps=stats["fps"],
                    frames=stats["frames"],
                    dropped_frames=stats["dropped_frames"],
                    bad_frames=stats["bad_frames"],
                    latency_p50_ms=stats["latency_p50_ms"],
                    latency_p99_ms=stats["latency_p99_ms"],
                    stages_ms=stats["stages_ms"],
                    reconnects=stats["reconnects"],
                    camera_lost=stats["camera_lost"],
                    spool_depth=self.publisher.spool.depth(),
                    spool_evicted=self.publisher.spool.evicted(),
                    mqtt_reconnects=self.publisher.reconnects,
                    providers=stats["providers"],
                    model_versions=stats["model_versions"],
                )
                self.publisher.publish_now(topic(self.cfg.device_id, "stats"), msg.model_dump_json().encode())

    async def _telemetry_task(self) -> None:
        """A periodic driver summary, QoS 1 through the spool."""
        assert self.publisher is not None and self.pipeline is not None
        while True:
            await asyncio.sleep(self.cfg.mqtt.telemetry_interval_s)
            d = self.pipeline.detector
            st = d.status()
            fields = {
                "device_id": self.cfg.device_id,
                "time": datetime.now(timezone.utc),
                "state": st.state,
                "perclos": st.perclos,
                "blink_rate_per_min": round(st.blink_rate_per_min, 2),
                "blinks": st.blinks,
                "baseline_ear": st.baseline_ear,
                "calibrated": st.calibrated,
                "is_drowsy": st.is_drowsy,
                "face": st.ear > 0,
            }
            durations, long_blinks = d.take_blinks()
            msg: Telemetry | TelemetryV2 = (
                Telemetry(**fields)
                if self.cfg.mqtt.protocol == 1
                else TelemetryV2(**fields, blink_durations_ms=durations, long_blinks=long_blinks)
            )
            self.publisher.submit(
                "telemetry",
                topic(self.cfg.device_id, "telemetry"),
                msg.model_dump_json().encode(),
                receipt_key(msg),
            )

    def status_line(self) -> str:
        d = self.pipeline.detector if self.pipeline else None
        cap = self.capture
        state = d.state.value if d else "STARTING"
        lost = " camera lost" if cap is not None and cap.lost else ""
        return f"{state}{lost}; {self.fps:.1f} fps; {self.frames} frames; dropped {cap.dropped if cap else 0}"

    async def _systemd_task(self) -> None:
        """READY=1 once frames flow; WATCHDOG=1 only while they keep flowing, so systemd restarts
        a daemon whose camera or frame loop is stuck; STATUS= for `systemctl status`."""
        n = self.notifier
        period = n.watchdog_s / 2.0 if n.watchdog_s else max(1.0, self.cfg.stats_interval_s)
        while not self._first_frame.is_set():
            await asyncio.sleep(0.05)
        n.ready(self.status_line())
        log.info("ready", notify=n.enabled, watchdog_s=n.watchdog_s)
        last = self.frames
        while True:
            await asyncio.sleep(period)
            if n.watchdog_s and self.frames > last:
                n.watchdog()
            last = self.frames
            n.status(self.status_line())

    async def run(self) -> int:
        cfg = self.cfg
        loop = asyncio.get_running_loop()
        if self.install_signals:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, self.request_stop)
            loop.add_signal_handler(signal.SIGUSR1, self.request_recalibration)
            loop.add_signal_handler(signal.SIGUSR2, self.request_ack, "signal")
        cfg.state_dir.mkdir(parents=True, exist_ok=True)
        try:
            self.control = ControlServer(cfg.state_dir, lambda command: self.request_ack("cli")).start()
        except OSError as err:  # e.g. a path longer than a Unix socket allows: SIGUSR2 still acks
            log.warning(
                "control_socket_unavailable", path=str(cfg.state_dir / "control.sock"), error=str(err)
            )
        if cfg.ack_button.chip:
            try:
                button = GpioAckButton(cfg.ack_button, lambda command: self.request_ack("button"))
                self.button = button.start()
            except RuntimeError as err:  # alerts still sound; the other ways to acknowledge still work
                log.error("ack_button_unavailable", error=str(err))
        self.events = EventLog(cfg.state_dir / "events.jsonl", cfg.journal)
        self.alerts = AlertDispatcher(build_outputs(cfg.alerts, cfg.state_dir), cfg.alerts.queue_size)
        self.pipeline = Pipeline(cfg, full_landmarks=False)
        warm = self.pipeline.warm_up()
        if cfg.mqtt.enabled:
            spool = Spool(
                cfg.state_dir / "spool.sqlite3",
                max_rows=cfg.mqtt.spool_max_rows,
                max_bytes=int(cfg.mqtt.spool_max_mb * 1024 * 1024),
            )
            self.publisher = Publisher(cfg.mqtt, cfg.device_id, spool)
            self.publisher.on_command = lambda cmd: self.request_ack("command")  # the one command
            self.publisher.start()
        self.capture = CaptureThread(cfg.source).start()
        log.info(
            "started",
            device_id=cfg.device_id,
            source=mask_url_passwords(cfg.source.uri),
            kind=self.capture.spec.kind,
            landmarks=self.pipeline.backend.version,
            outputs=self.alerts.names,
            warm_up_ms=round(warm * 1000, 1),
            events=str(self.events.path),
        )
        stats = asyncio.create_task(self._stats_task())
        sd = asyncio.create_task(self._systemd_task())
        tele = asyncio.create_task(self._telemetry_task()) if self.publisher is not None else None
        try:
            await asyncio.to_thread(self._frame_loop)
        finally:
            self._send_stopping()
            stats.cancel()
            sd.cancel()
            if tele is not None:
                tele.cancel()
            self.capture.stop()
            self.alerts.close()
            self.events.close()
            if self.publisher is not None:
                await asyncio.to_thread(self.publisher.stop)
                self.publisher.spool.close()
            self.pipeline.close()
            if self.control is not None:
                self.control.close()
            if self.button is not None:
                self.button.close()
            self.notifier.close()
            if self.preview is not None:
                self.preview.close()
            if self.install_signals:
                for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2):
                    loop.remove_signal_handler(sig)
        log.info("stopped", reason=self.exit_reason or "signal", **self.stats())
        return 0
