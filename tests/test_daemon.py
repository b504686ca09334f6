"""The live daemon on real sources: SIGTERM, a source that dies and comes back, bad config."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from edge_agent.config import EdgeConfig
from edge_agent.daemon import Agent
from edge_agent.perception.landmarks import FrameError, to_rgb
from edge_agent.pipeline import Pipeline
from sleepsafe.protocol import Event, EventType


class Recorder:
    """Collects events from the agent's thread and lets the test wait for one."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._cond = threading.Condition()

    def __call__(self, e: Event) -> None:
        with self._cond:
            self.events.append(e)
            self._cond.notify_all()

    def wait_for(self, type_: EventType, phase: str, timeout: float = 60.0) -> Event:
        def found() -> Event | None:
            return next((e for e in self.events if e.type is type_ and e.phase == phase), None)

        with self._cond:
            ok = self._cond.wait_for(lambda: found() is not None, timeout=timeout)
        assert ok, (
            f"no {type_.value} {phase} within {timeout} s; "
            f"got {[(e.type.value, e.phase) for e in self.events]}"
        )
        e = found()
        assert e is not None
        return e


def start_agent(cfg: EdgeConfig, rec: Recorder) -> tuple[Agent, threading.Thread, list[int]]:
    agent = Agent(cfg, on_event=rec, install_signals=False)
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(asyncio.run(agent.run())), daemon=True)
    thread.start()
    return agent, thread, result


def test_source_dies_mid_stream_then_recovers(
    make_cfg: Callable[..., EdgeConfig], clips: Path, tmp_path: Path
) -> None:
    cam = tmp_path / "camera.mp4"
    shutil.copy(clips / "single_face.mp4", cam)
    cfg = make_cfg(
        source={"uri": str(cam), "on_eof": "retry", "reconnect_initial_s": "0.1", "reconnect_max_s": "0.3"},
    )
    rec = Recorder()
    agent, thread, result = start_agent(cfg, rec)
    # The file vanishes: the open stream plays to its end, then every reopen fails.
    cam.unlink()
    lost = rec.wait_for(EventType.CAMERA_LOST, "raised")
    assert agent.capture is not None and agent.capture.lost
    # The daemon keeps running through the outage; the camera comes back.
    shutil.copy(clips / "single_face.mp4", cam)
    back = rec.wait_for(EventType.CAMERA_LOST, "ended")
    assert back.event_id == lost.event_id and (back.duration_ms or 0) > 0
    assert agent.capture.reconnects >= 1
    agent.request_stop()
    thread.join(timeout=30)
    assert result == [0]
    journal = [json.loads(line) for line in (cfg.state_dir / "events.jsonl").read_text().splitlines()]
    assert [(j["type"], j["phase"]) for j in journal if j["type"] == "camera_lost"] == [
        ("camera_lost", "raised"),
        ("camera_lost", "ended"),
    ]


def test_camera_that_never_opens_keeps_the_daemon_up(make_cfg: Callable[..., EdgeConfig]) -> None:
    cfg = make_cfg(source={"uri": "/dev/video99", "reconnect_initial_s": "0.1", "reconnect_max_s": "0.2"})
    rec = Recorder()
    agent, thread, result = start_agent(cfg, rec)
    rec.wait_for(EventType.CAMERA_LOST, "raised")
    assert thread.is_alive()
    agent.request_stop()
    thread.join(timeout=30)
    assert result == [0]
    # Shutdown closes the open alert, so the journal never holds a dangling one.
    assert rec.events[-1].type is EventType.CAMERA_LOST and rec.events[-1].phase == "ended"


def _spawn(args: list[str], env_extra: dict[str, str] | None = None) -> subprocess.Popen[str]:
    env = {**os.environ, **(env_extra or {})}
    return subprocess.Popen(
        [sys.executable, "-m", "edge_agent.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def test_sigterm_finishes_the_frame_flushes_events_and_exits_0(clips: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    sets = [
        f"state_dir={state}",
        "stats_interval_s=0.2",
        "alerts.sound.enabled=false",
        "logging.format=json",
        "source.on_eof=loop",
    ]
    args = [a for kv in sets for a in ("--set", kv)]
    proc = _spawn([*args, "run", "--source", str(clips / "single_face.mp4")])
    assert proc.stderr is not None
    try:
        # Wait (on the daemon's own stats lines) until the clip's blink has been seen.
        for line in proc.stderr:
            rec = json.loads(line) if line.startswith("{") else {}
            if rec.get("event") == "stats" and rec.get("blinks", 0) >= 1:
                break
        else:
            pytest.fail(f"daemon ended early: rc={proc.wait()}")
        # SIGUSR1: recalibrate on command (a driver change), acknowledged in the log.
        proc.send_signal(signal.SIGUSR1)
        for line in proc.stderr:
            if '"recalibration_requested"' in line:
                break
        else:
            pytest.fail(f"daemon ended early: rc={proc.wait()}")
        proc.send_signal(signal.SIGTERM)
        rest = proc.stderr.read()
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    stopped = [json.loads(x) for x in rest.splitlines() if x.startswith("{") and '"stopped"' in x]
    assert stopped and stopped[0]["frames"] > 0
    journal = [Event.model_validate_json(x) for x in (state / "events.jsonl").read_text().splitlines()]
    assert any(e.type is EventType.BLINK for e in journal)


def test_bad_config_value_exits_78_with_one_line(tmp_path: Path) -> None:
    proc = _spawn(["--set", "detector.microsleep_s=soon", "run", "--source", "0"])
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 78
    assert err.strip().splitlines() == [
        "sleepsafe-edge: config error: detector.microsleep_s: Input should be a valid number, "
        "unable to parse string as a number (got 'soon')"
    ]


def test_unknown_key_in_toml_exits_78(tmp_path: Path) -> None:
    cfg = tmp_path / "edge.toml"
    cfg.write_text("[detector]\nmicrosleep_sec = 1.0\n")
    proc = _spawn(["--config", str(cfg), "check-config"])
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 78
    assert err.strip() == f"sleepsafe-edge: config error: {cfg}: detector.microsleep_sec: unknown key"


def test_env_overrides_toml_and_cli_overrides_env(tmp_path: Path) -> None:
    cfg = tmp_path / "edge.toml"
    cfg.write_text('device_id = "from-toml"\n[detector]\nmicrosleep_s = 1.5\nsleep_s = 4.0\n')
    proc = _spawn(
        ["--config", str(cfg), "--set", "detector.sleep_s=5", "check-config"],
        {"SLEEPSAFE_DEVICE_ID": "from-env", "SLEEPSAFE_DETECTOR__SLEEP_S": "4.5"},
    )
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    data = json.loads(out)
    assert data["device_id"] == "from-env"
    assert data["detector"]["microsleep_s"] == 1.5
    assert data["detector"]["sleep_s"] == 5.0


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        ("not an array", "not a numpy array"),
        (np.zeros((100, 100, 3), dtype=np.float32), "dtype is float32"),
        (np.zeros((100, 100, 5), dtype=np.uint8), "neither"),
        (np.zeros((4, 4, 3), dtype=np.uint8), "too small"),
    ],
)
def test_unusable_frames_are_refused_with_a_reason(frame: object, message: str) -> None:
    with pytest.raises(FrameError, match=message):
        to_rgb(frame)


def test_gray_and_bgra_frames_are_accepted() -> None:
    assert to_rgb(np.zeros((90, 160), dtype=np.uint8)).shape == (90, 160, 3)
    assert to_rgb(np.zeros((90, 160, 4), dtype=np.uint8)).shape == (90, 160, 3)


def test_pipeline_survives_a_bad_frame_between_good_ones(
    make_cfg: Callable[..., EdgeConfig], clips: Path
) -> None:
    from edge_agent.perception.capture import read_clip

    pipe = Pipeline(make_cfg())
    try:
        faces = 0
        for i, t, frame in read_clip(clips / "single_face.mp4"):
            if i == 10:
                with pytest.raises(FrameError):
                    pipe.process(frame.astype(np.float32), t, i)
            faces += pipe.process(frame, t, i).features.face
        assert faces == 72 and pipe.detector.blink_count == 1
    finally:
        pipe.close()


class MjpegCamera:
    """A real network camera on loopback: an HTTP MJPEG stream (multipart/x-mixed-replace) of a
    real clip at 30 fps, which the test can cut (connection closed) or stall (no data)."""

    def __init__(self, clip: Path) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        import cv2

        from edge_agent.perception.capture import read_clip

        jpegs = [cv2.imencode(".jpg", f)[1].tobytes() for _, _, f in read_clip(clip)]
        self.mode = "serve"
        self.wake = threading.Event()
        cam = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if cam.mode != "serve":
                    self.send_error(503)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                i = 0
                try:
                    while cam.mode != "cut":
                        if cam.mode == "stall":
                            cam.wake.wait(0.05)
                            continue
                        j = jpegs[i % len(jpegs)]
                        i += 1
                        head = f"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: {len(j)}\r\n\r\n"
                        self.wfile.write(head.encode() + j + b"\r\n")
                        cam.wake.wait(1 / 30)  # the camera's frame period
                except (BrokenPipeError, ConnectionResetError):
                    return

            def log_message(self, *args: object) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/stream.mjpg"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.mode = "cut"
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("failure", ["cut", "stall"])
def test_network_camera_fails_and_comes_back(
    make_cfg: Callable[..., EdgeConfig], clips: Path, failure: str
) -> None:
    cam = MjpegCamera(clips / "single_face.mp4")
    cfg = make_cfg(
        source={
            "uri": cam.url,
            "stream_timeout_s": "1.0",
            "frame_timeout_s": "1.5",
            "reconnect_initial_s": "0.1",
            "reconnect_max_s": "0.3",
        }
    )
    rec = Recorder()
    agent, thread, result = start_agent(cfg, rec)
    try:
        rec.wait_for(EventType.BLINK, "instant")  # real frames flow through the agent
        cam.mode = failure
        lost = rec.wait_for(EventType.CAMERA_LOST, "raised")
        assert thread.is_alive()
        cam.mode = "serve"
        back = rec.wait_for(EventType.CAMERA_LOST, "ended")
        assert back.event_id == lost.event_id
        assert agent.capture is not None and agent.capture.reconnects >= 1
    finally:
        agent.request_stop()
        thread.join(timeout=30)
        cam.close()
    assert result == [0]
