"""Alert outputs as plugins, each behind its own worker thread and bounded queue.

The frame loop only calls :meth:`AlertDispatcher.submit`, a non-blocking queue put per output.
A slow speaker, a hanging hook or a broken GPIO line therefore never delays the next frame: its
queue fills, its oldest alerts are dropped and counted, and the other outputs go on.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import queue
import shutil
import subprocess
import threading
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import structlog

from edge_agent.config import AlertsConfig, CommandConfig, GpioConfig, SoundConfig
from sleepsafe.protocol import Event, Severity

log = structlog.get_logger(__name__)


class AlertOutput(Protocol):
    name: str

    def wants(self, event: Event) -> bool:
        """Cheap filter run on the frame thread (severity, phase)."""
        ...

    def emit(self, event: Event) -> None:
        """May block or raise: it runs on the output's own thread."""
        ...

    def close(self) -> None: ...


def _at_least(event: Event, level: str) -> bool:
    return event.severity.rank >= Severity(level).rank


class LogOutput:
    """One structured log line per event (the journal sees every alert)."""

    name = "log"

    def wants(self, event: Event) -> bool:
        return True

    def emit(self, event: Event) -> None:
        fn = (
            log.warning
            if event.severity.rank >= Severity.WARNING.rank and event.phase == "raised"
            else log.info
        )
        fn(
            "alert" if event.phase == "raised" else "event",
            type=event.type.value,
            phase=event.phase,
            severity=event.severity.value,
            state=event.state.value,
            start_ms=event.start_ms,
            raised_ms=event.raised_ms,
            end_ms=event.end_ms,
            duration_ms=event.duration_ms,
            ear=event.ear_value,
            perclos=event.perclos,
            event_id=str(event.event_id),
        )

    def close(self) -> None:
        return None


def tone_wav(frequency_hz: float, duration_s: float, volume: float, rate: int = 16000) -> bytes:
    """A 16-bit mono WAV of a beeping tone (three pulses), with 5 ms fades against clicks."""
    n = int(rate * duration_s)
    t = np.arange(n) / rate
    signal = np.sin(2 * math.pi * frequency_hz * t)
    # Three pulses: a beeping alarm is noticed more than a steady tone.
    gate = (np.floor(t / (duration_s / 6.0)) % 2 == 0).astype(np.float64)
    fade = max(1, int(0.005 * rate))
    env = np.ones(n)
    env[:fade] = np.linspace(0, 1, fade)
    env[-fade:] = np.linspace(1, 0, fade)
    pcm = (signal * gate * env * volume * 32767).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return buf.getvalue()


class SoundOutput:
    """Plays a generated tone with aplay or paplay; says once if neither is installed."""

    name = "sound"

    def __init__(self, cfg: SoundConfig, state_dir: Path) -> None:
        self.cfg = cfg
        self.wav_path = state_dir / "alert-tone.wav"
        self.player = self._find_player()
        if self.player is None:
            log.warning(
                "sound_unavailable", reason="neither aplay nor paplay is installed; audible alarm off"
            )
        self.wav_path.parent.mkdir(parents=True, exist_ok=True)
        self.wav_path.write_bytes(tone_wav(cfg.frequency_hz, cfg.duration_s, cfg.volume))

    def _find_player(self) -> str | None:
        names = ["paplay", "aplay"] if self.cfg.player == "auto" else [self.cfg.player]
        for name in names:
            path = shutil.which(name)
            if path:
                return path
        return None

    def wants(self, event: Event) -> bool:
        return self.player is not None and event.phase == "raised" and _at_least(event, self.cfg.min_severity)

    def emit(self, event: Event) -> None:
        assert self.player is not None
        args = (
            [self.player, str(self.wav_path)]
            if self.player.endswith("paplay")
            else [self.player, "-q", str(self.wav_path)]
        )
        subprocess.run(args, check=True, timeout=self.cfg.duration_s + 5.0, capture_output=True)

    def close(self) -> None:
        return None


class CommandOutput:
    """Runs an installer-defined hook with the event JSON on stdin and a few env vars."""

    name = "command"

    def __init__(self, cfg: CommandConfig) -> None:
        self.cfg = cfg

    def wants(self, event: Event) -> bool:
        return bool(self.cfg.argv) and event.phase != "instant" and _at_least(event, self.cfg.min_severity)

    def emit(self, event: Event) -> None:
        import os

        env = dict(os.environ)
        env.update(
            SLEEPSAFE_EVENT_TYPE=event.type.value,
            SLEEPSAFE_EVENT_PHASE=event.phase,
            SLEEPSAFE_EVENT_SEVERITY=event.severity.value,
            SLEEPSAFE_EVENT_ID=str(event.event_id),
        )
        subprocess.run(
            self.cfg.argv,
            input=event.model_dump_json(exclude={"features"}).encode(),
            env=env,
            check=True,
            timeout=self.cfg.timeout_s,
            capture_output=True,
        )

    def close(self) -> None:
        return None


class GpioOutput:
    """Pulses a GPIO line (buzzer, lamp, seat vibrator) through libgpiod's Python binding."""

    name = "gpio"

    def __init__(self, cfg: GpioConfig) -> None:
        try:
            import gpiod
        except ImportError as err:
            raise RuntimeError(
                "GPIO output configured but the 'gpiod' package is not installed "
                "(pip install 'sleepsafe[gpio]')"
            ) from err
        self.cfg = cfg
        self._gpiod: Any = gpiod
        settings = gpiod.LineSettings(
            direction=gpiod.line.Direction.OUTPUT,
            active_low=cfg.active_low,
            output_value=gpiod.line.Value.INACTIVE,
        )
        try:
            self._request = gpiod.request_lines(
                str(cfg.chip), consumer="sleepsafe-edge", config={cfg.line: settings}
            )
        except OSError as err:
            raise RuntimeError(f"GPIO {cfg.chip} line {cfg.line}: {err.strerror or err}") from err
        self._off = threading.Event()

    def wants(self, event: Event) -> bool:
        return event.phase == "raised" and _at_least(event, self.cfg.min_severity)

    def emit(self, event: Event) -> None:
        v = self._gpiod.line.Value
        self._request.set_value(self.cfg.line, v.ACTIVE)
        self._off.wait(self.cfg.pulse_s)
        self._request.set_value(self.cfg.line, v.INACTIVE)

    def close(self) -> None:
        self._request.release()


@dataclass(slots=True)
class OutputStats:
    sent: int = 0
    failed: int = 0
    dropped: int = 0


class _Worker:
    def __init__(self, output: AlertOutput, size: int) -> None:
        self.output = output
        self.stats = OutputStats()
        self._q: queue.Queue[Event | None] = queue.Queue(maxsize=size)
        self._thread = threading.Thread(target=self._run, name=f"alert-{output.name}", daemon=True)
        self._thread.start()
        self._warned = False

    def submit(self, event: Event) -> None:
        while True:
            try:
                self._q.put_nowait(event)
                return
            except queue.Full:
                try:
                    self._q.get_nowait()
                    self.stats.dropped += 1
                except queue.Empty:
                    pass

    def _run(self) -> None:
        while True:
            event = self._q.get()
            if event is None:
                return
            try:
                self.output.emit(event)
                self.stats.sent += 1
            except Exception as err:  # noqa: BLE001 - an output failure must never stop alerting
                self.stats.failed += 1
                log.error(
                    "alert_output_failed",
                    output=self.output.name,
                    type=event.type.value,
                    error=f"{type(err).__name__}: {err}",
                )

    def close(self, timeout: float) -> None:
        with contextlib.suppress(queue.Full):
            self._q.put(None, timeout=timeout)
        self._thread.join(timeout=timeout)
        try:
            self.output.close()
        except Exception as err:  # noqa: BLE001
            log.warning("alert_output_close_failed", output=self.output.name, error=str(err))


class AlertDispatcher:
    """Fans events out to the configured outputs without ever blocking the caller."""

    def __init__(self, outputs: list[AlertOutput], queue_size: int = 64) -> None:
        self._workers = [_Worker(o, queue_size) for o in outputs]

    @property
    def names(self) -> list[str]:
        return [w.output.name for w in self._workers]

    def submit(self, event: Event) -> None:
        for w in self._workers:
            if w.output.wants(event):
                w.submit(event)

    def stats(self) -> dict[str, dict[str, int]]:
        return {
            w.output.name: {"sent": w.stats.sent, "failed": w.stats.failed, "dropped": w.stats.dropped}
            for w in self._workers
        }

    def close(self, timeout: float = 5.0) -> None:
        for w in self._workers:
            w.close(timeout)


def build_outputs(cfg: AlertsConfig, state_dir: Path) -> list[AlertOutput]:
    """Outputs from config.  One that cannot start is logged and left out, never fatal:
    the agent must keep alerting through the others."""
    outputs: list[AlertOutput] = []
    if cfg.log:
        outputs.append(LogOutput())
    if cfg.sound.enabled:
        try:
            outputs.append(SoundOutput(cfg.sound, state_dir))
        except OSError as err:
            log.error("alert_output_unavailable", output="sound", error=str(err))
    if cfg.command.argv:
        outputs.append(CommandOutput(cfg.command))
    if cfg.gpio.chip:
        try:
            outputs.append(GpioOutput(cfg.gpio))
        except RuntimeError as err:
            log.error("alert_output_unavailable", output="gpio", error=str(err))
    return outputs


def event_json(event: Event) -> str:
    return json.dumps(event.model_dump(mode="json"), separators=(",", ":"))
