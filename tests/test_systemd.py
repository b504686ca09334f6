"""The service: unit files verified and scored by systemd's own tools, the notify protocol on a
real Unix datagram socket, and the installer."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from sleepsafe.sdnotify import Notifier
from tests.test_daemon import MjpegCamera

REPO = Path(__file__).resolve().parents[1]
UNITS = ("sleepsafe-edge.service", "sleepsafe-sink.service")
BIN = Path(sys.executable).parent

needs_systemd_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None and not os.environ.get("SLEEPSAFE_REQUIRE_DATA"),
    reason="systemd-analyze not installed (make test installs it)",
)


def staged_unit(name: str, tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at this environment's scripts (verify checks that the
    executable exists); every other line as shipped."""
    text = (REPO / "sleepsafe" / "units" / name).read_text().replace("/opt/sleepsafe/venv/bin/", f"{BIN}/")
    out = tmp_path / name
    out.write_text(text)
    return out


@needs_systemd_analyze
@pytest.mark.parametrize("name", UNITS)
def test_unit_verifies_cleanly(name: str, tmp_path: Path) -> None:
    proc = subprocess.run(
        ["systemd-analyze", "verify", str(staged_unit(name, tmp_path))],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == "" and proc.stdout.strip() == "", proc.stderr + proc.stdout


@needs_systemd_analyze
@pytest.mark.parametrize("name", UNITS)
def test_security_exposure_at_most_2(name: str) -> None:
    proc = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", str(REPO / "sleepsafe" / "units" / name)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", proc.stdout)
    assert m, proc.stdout[-2000:] + proc.stderr
    assert float(m.group(1)) <= 2.0


def test_edge_unit_keeps_camera_gpu_and_restart_policy() -> None:
    text = (REPO / "sleepsafe" / "units" / "sleepsafe-edge.service").read_text()
    for line in (
        "Type=notify",
        "WatchdogSec=10",
        "Restart=on-failure",
        "RestartPreventExitStatus=78",
        "StartLimitBurst=5",
        "DevicePolicy=closed",
        "DeviceAllow=char-video4linux rw",
        "DeviceAllow=char-nvidia-frontend rw",
        "DeviceAllow=/dev/nvhost-ctrl rw",
        "SupplementaryGroups=video audio",
        "ProtectSystem=strict",
        "SystemCallFilter=@system-service",
        "StateDirectory=sleepsafe",
        "LoadCredential=mqtt-password:/etc/sleepsafe/credentials/mqtt-password",
    ):
        assert line in text.splitlines(), line
    # Options that would break the camera or CUDA stay out (README says why).
    for absent in ("MemoryDenyWriteExecute=", "PrivateDevices=", "PrivateUsers="):
        assert not any(x.startswith(absent) for x in text.splitlines())


def _listen(abstract: bool, tmp_path: Path) -> tuple[socket.socket, str]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if abstract:
        name = f"sleepsafe-test-{uuid.uuid4().hex}"
        sock.bind("\0" + name)
        addr = "@" + name
    else:
        addr = str(tmp_path / "notify.sock")
        sock.bind(addr)
    sock.settimeout(30)
    return sock, addr


@pytest.mark.parametrize("abstract", [False, True])
def test_notifier_speaks_the_protocol(tmp_path: Path, abstract: bool) -> None:
    sock, addr = _listen(abstract, tmp_path)
    n = Notifier({"NOTIFY_SOCKET": addr, "WATCHDOG_USEC": "5000000"})
    assert n.enabled and n.watchdog_s == 5.0
    n.ready("AWAKE; 30 fps")
    n.watchdog()
    n.stopping()
    got = [sock.recv(4096).decode() for _ in range(3)]
    assert got == ["READY=1\nSTATUS=AWAKE; 30 fps", "WATCHDOG=1", "STOPPING=1\nSTATUS=stopping"]
    sock.close()


def test_notifier_is_a_no_op_outside_systemd_and_survives_a_dead_socket(tmp_path: Path) -> None:
    assert not Notifier({}).ready("x")
    n = Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone.sock")})
    assert n.notify("READY=1") is False and n.failed == 1  # logged once, never raised
    assert Notifier({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "1000", "WATCHDOG_PID": "1"}).watchdog_s is None


def _recv_until(sock: socket.socket, want: str, timeout: float) -> list[str]:
    """Datagrams until one contains `want` (bounded by the socket timeout)."""
    sock.settimeout(timeout)
    seen = []
    while True:
        msg = sock.recv(4096).decode()
        seen.append(msg)
        if want in msg:
            return seen


def test_daemon_ready_watchdog_cadence_stops_with_frames_and_stopping(clips: Path, tmp_path: Path) -> None:
    cam = MjpegCamera(clips / "single_face.mp4")
    sock, addr = _listen(True, tmp_path)
    env = {**os.environ, "NOTIFY_SOCKET": addr, "WATCHDOG_USEC": "400000"}
    args = [
        "--set",
        f"state_dir={tmp_path / 'state'}",
        "--set",
        "alerts.sound.enabled=false",
        "--set",
        "source.stream_timeout_s=30",
        "--set",
        "source.frame_timeout_s=30",
        "run",
        "--source",
        cam.url,
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge_agent.cli", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        first = _recv_until(sock, "READY=1", 60)
        assert first[-1].startswith("READY=1\nSTATUS=")
        # Frames flow: WATCHDOG=1 every WATCHDOG_USEC/2.
        beats = 0
        while beats < 3:
            if sock.recv(4096).decode() == "WATCHDOG=1":
                beats += 1
        # The camera stalls (no frames, connection open): the pings stop, STATUS goes on.
        cam.mode = "stall"
        # Frames already in flight still arrive: wait for two STATUS ticks with the same count.
        last = -1
        while True:
            msg = sock.recv(4096).decode()
            m = re.search(r"(\d+) frames", msg)
            if m:
                if int(m.group(1)) == last:
                    break
                last = int(m.group(1))
        quiet = [sock.recv(4096).decode() for _ in range(5)]  # 5 more ticks, 1 s
        assert all(m.startswith("STATUS=") for m in quiet), quiet
        # Frames again: the pings come back.
        cam.mode = "serve"
        _recv_until(sock, "WATCHDOG=1", 10)
        proc.send_signal(signal.SIGTERM)
        _recv_until(sock, "STOPPING=1", 30)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        cam.close()
        sock.close()


def _install(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge_agent.cli", "install-service", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_installer_dry_run_lists_every_step_and_changes_nothing(tmp_path: Path) -> None:
    proc = _install("--dry-run", "--root", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for text in (
        "create system user sleepsafe",
        "venv",
        "edge.toml from the commented template",
        "credentials/mqtt-password",
        "sleepsafe-edge.service to",
        "daemon-reload",
        "enable --now",
    ):
        assert text in out, text
    assert out.strip().endswith("dry run: nothing changed")
    assert list(tmp_path.iterdir()) == []


def test_installer_into_a_staging_root_and_back(tmp_path: Path) -> None:
    root = tmp_path / "root"
    proc = _install("--root", str(root), "--no-venv")
    assert proc.returncode == 0, proc.stderr
    unit = root / "etc/systemd/system/sleepsafe-edge.service"
    cfg = root / "etc/sleepsafe/edge.toml"
    cred = root / "etc/sleepsafe/credentials/mqtt-password"
    assert unit.read_text() == (REPO / "sleepsafe/units/sleepsafe-edge.service").read_text()
    assert cfg.read_text() == (REPO / "edge_agent/edge.example.toml").read_text()
    assert oct(cred.stat().st_mode & 0o777) == "0o600"
    assert "[skipped: staging root]" in proc.stdout
    # The installed config is a valid config.
    check = subprocess.run(
        [sys.executable, "-m", "edge_agent.cli", "--config", str(cfg), "check-config"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert check.returncode == 0, check.stderr
    # An existing config is never overwritten.
    cfg.write_text('device_id = "bus-7"\n')
    again = _install("--root", str(root), "--no-venv")
    assert again.returncode == 0 and "keep existing" in again.stdout
    assert cfg.read_text() == 'device_id = "bus-7"\n'
    # Uninstall removes the unit, keeps config; --purge removes config too.
    assert _install("--root", str(root), "--uninstall").returncode == 0
    assert not unit.exists() and cfg.exists()
    assert _install("--root", str(root), "--uninstall", "--purge").returncode == 0
    assert not (root / "etc/sleepsafe").exists()


def test_sink_installer_uses_its_own_unit(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "cloud_sink.cli", "install-service", "--root", str(tmp_path), "--no-venv"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "etc/systemd/system/sleepsafe-sink.service").is_file()
    # Its own config, from the sink template, which the unit's ExecStart names and which loads.
    cfg = tmp_path / "etc/sleepsafe/sink.toml"
    assert "fleet sink" in cfg.read_text()
    from cloud_sink.config import load_sink_config

    assert load_sink_config(cfg).mqtt.shared is False
    assert (
        "--config /etc/sleepsafe/sink.toml"
        in (tmp_path / "etc/systemd/system/sleepsafe-sink.service").read_text()
    )
    dry = subprocess.run(
        [
            sys.executable,
            "-m",
            "cloud_sink.cli",
            "install-service",
            "--root",
            str(tmp_path / "x"),
            "--dry-run",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert "[sink]" in dry.stdout, dry.stdout  # the venv gets the sink's dependencies


def test_live_install_needs_root_or_says_so() -> None:
    if os.geteuid() == 0:
        pytest.skip("running as root: a live install would change this machine")
    proc = _install("--no-venv")
    assert proc.returncode == 69 and "needs root" in proc.stderr


def test_sink_says_ready_and_stopping_to_systemd(broker: Any, tmp_path: Path) -> None:
    """The sink unit is Type=notify: READY=1 comes once the API listens, STOPPING=1 on SIGTERM."""
    from tests.conftest import API_TOKEN

    sock, addr = _listen(False, tmp_path)
    sets = {
        "state_dir": str(tmp_path / "sink"),
        "mqtt.host": "127.0.0.1",
        "mqtt.port": str(broker.port),
        "api.port": "0",
        "api.tokens": f'["{API_TOKEN}"]',
    }
    args = [a for k, v in sets.items() for a in ("--set", f"{k}={v}")]
    proc = subprocess.Popen(
        [sys.executable, "-m", "cloud_sink.cli", *args, "run"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "NOTIFY_SOCKET": addr},
    )
    try:
        ready = _recv_until(sock, "READY=1", 60)[-1]
        assert ready.startswith("READY=1\nSTATUS=api on 127.0.0.1:")
        proc.send_signal(signal.SIGTERM)
        assert "STOPPING=1" in _recv_until(sock, "STOPPING=1", 30)[-1]
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        sock.close()
