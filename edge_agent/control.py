"""The local control channel of a running agent: a Unix datagram socket in its state directory.

`sleepsafe-edge ack` sends ``ack`` to it (the driver acknowledges the active alert); the daemon
hands each request to its frame thread.  A datagram socket needs no connection handling, and
a request from nobody (no agent running) fails at once with a clear line instead of waiting.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path

import structlog

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
