"""The local control channels of a running agent: a Unix datagram socket in its state directory,
and an acknowledgement button on a GPIO line.

`sleepsafe-edge ack` sends ``ack`` to the socket (the driver acknowledges the active alert); the
daemon hands each request to its frame thread.  A datagram socket needs no connection handling,
and a request from nobody (no agent running) fails at once with a clear line instead of waiting.
The button is read through libgpiod's edge events (the kernel timestamps and debounces them), so
no press is lost between two polls and no thread spins on the line.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

if TYPE_CHECKING:
    from edge_agent.config import AckButtonConfig

log = structlog.get_logger(__name__)

SOCKET_NAME = "control.sock"
COMMANDS = ("ack",)


def socket_path(state_dir: Path) -> Path:
    return state_dir / SOCKET_NAME


class ControlServer:
    """Receives commands on ``state_dir/control.sock`` and calls ``handle(command)``."""

    def __init__(self, state_dir: Path, handle: Callable[[str], None]) -> None:
        self.path = socket_path(state_dir)
        self.handle = handle
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # a stale socket of an agent that died
        self._sock.bind(str(self.path))
        os.chmod(self.path, 0o660)
        self._sock.settimeout(0.5)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="control", daemon=True)

    def start(self) -> ControlServer:
        self._thread.start()
        return self

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data = self._sock.recv(64)
            except TimeoutError:
                continue
            except OSError:
                return
            command = data.decode("ascii", "replace").strip()
            if command in COMMANDS:
                self.handle(command)
            else:
                log.warning("control_unknown_command", command=command[:40])

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self._sock.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def send(state_dir: Path, command: str) -> None:
    """Send ``command`` to the agent running with ``state_dir``; OSError if there is none."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.sendto(command.encode("ascii"), str(socket_path(state_dir)))


class PressFilter:
    """Turns the button's press edges into acknowledgements: a press within ``hold_off_s`` of the
    last accepted one is the same press (a driver who hits the button twice, or a bounce longer
    than the kernel's debounce), so one press never acknowledges two alerts."""

    def __init__(self, hold_off_s: float) -> None:
        self.hold_off_ns = int(hold_off_s * 1e9)
        self._last_ns: int | None = None

    def accept(self, timestamp_ns: int) -> bool:
        if self._last_ns is not None and 0 <= timestamp_ns - self._last_ns < self.hold_off_ns:
            return False
        self._last_ns = timestamp_ns
        return True


class GpioAckButton:
    """Calls ``handle("ack")`` for each press of the button on ``cfg.chip`` line ``cfg.line``.

    The line is requested as an input with edge detection on its *active* edge (with
    ``active_low`` the falling one, which libgpiod reports as a rising logical edge); a RuntimeError
    names the chip and line when it cannot be had, and the agent runs on without the button.
    """

    name = "gpio"

    def __init__(self, cfg: AckButtonConfig, handle: Callable[[str], None]) -> None:
        try:
            import gpiod
        except ImportError as err:
            raise RuntimeError(
                "ack button configured but the 'gpiod' package is not installed "
                "(pip install 'sleepsafe[gpio]')"
            ) from err
        self.cfg = cfg
        self.handle = handle
        self.presses = PressFilter(cfg.hold_off_s)
        bias = {
            "pull_up": gpiod.line.Bias.PULL_UP,
            "pull_down": gpiod.line.Bias.PULL_DOWN,
            "disabled": gpiod.line.Bias.DISABLED,
            "as_is": gpiod.line.Bias.AS_IS,
        }[cfg.bias]
        settings = gpiod.LineSettings(
            direction=gpiod.line.Direction.INPUT,
            edge_detection=gpiod.line.Edge.RISING,
            active_low=cfg.active_low,
            bias=bias,
            debounce_period=timedelta(seconds=cfg.debounce_s),
        )
        try:
            self._request: Any = gpiod.request_lines(
                str(cfg.chip), consumer="sleepsafe-edge-ack", config={cfg.line: settings}
            )
        except (OSError, ValueError) as err:
            why = getattr(err, "strerror", None) or err
            raise RuntimeError(f"ack button {cfg.chip} line {cfg.line}: {why}") from err
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="ack-button", daemon=True)

    def start(self) -> GpioAckButton:
        self._thread.start()
        return self

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                if not self._request.wait_edge_events(timedelta(seconds=0.5)):
                    continue
                events = self._request.read_edge_events()
            except OSError as err:  # the chip went away (a loose connector): say so once, stop reading
                log.error("ack_button_failed", chip=self.cfg.chip, line=self.cfg.line, error=str(err))
                return
            for ev in events:
                if self.presses.accept(ev.timestamp_ns):
                    self.handle("ack")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self._request.release()
