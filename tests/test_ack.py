"""The driver's acknowledgement of an alert: recorded on the alert (when, how), never silencing
it; through the detector, the control socket (`sleepsafe-edge ack`), the live daemon and the sink."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from edge_agent.config import AckButtonConfig, DetectorConfig, EdgeConfig
from edge_agent.control import ControlServer, GpioAckButton, PressFilter, send
from sleepsafe.protocol import Event, EventType
from tests.conftest import edge_cli, wait_until
from tests.test_daemon import Recorder, start_agent
from tests.test_detector import OPEN, calibrated, frame, of, run


def test_an_acknowledgement_is_recorded_on_the_active_alert_and_silences_nothing() -> None:
    cfg = DetectorConfig()
    det, t, i = calibrated(30.0, cfg)
    assert det.acknowledge("button") == 0  # nothing active: nothing to acknowledge
    start = t

    def closure(tt: float, k: int) -> object:
        return frame(tt, k, ear=0.02 if tt < start + cfg.sleep_s + 0.5 else OPEN)

    events, t2, i2 = run(det, 30.0, cfg.microsleep_s + 0.2, closure, t, i)  # type: ignore[arg-type]
    assert of(events, EventType.MICROSLEEP, "raised")
    assert det.acknowledge("button") == 1
    assert det.acknowledge("cli") == 0  # acknowledged once: the first one counts
    more, _, _ = run(det, 30.0, cfg.sleep_s + 1.0, closure, t2, i2)  # type: ignore[arg-type]
    assert of(more, EventType.SLEEP, "raised")  # still escalates: nothing was silenced
    ended = of(more, EventType.MICROSLEEP, "ended")[0]
    assert ended.acknowledged_via == "button"
    assert ended.acknowledged_ms is not None and ended.start_ms < ended.acknowledged_ms < (ended.end_ms or 0)
    assert of(more, EventType.SLEEP, "ended")[0].acknowledged_via is None  # raised after the ack


def test_the_control_socket_hands_commands_over_and_refuses_others(tmp_path: Path) -> None:
    got: list[str] = []
    server = ControlServer(tmp_path, got.append).start()
    try:
        send(tmp_path, "reboot")
        send(tmp_path, "ack")
        wait_until(lambda: got == ["ack"], "the ack to arrive")
    finally:
        server.close()
    assert not (tmp_path / "control.sock").exists()
    with pytest.raises(OSError):
        send(tmp_path, "ack")


def test_one_press_of_the_button_is_one_acknowledgement() -> None:
    """Kernel timestamps of the button's active edges: a second edge within the hold-off is the
    same press (a double hit or a long bounce), one after it a new press."""
    presses = PressFilter(hold_off_s=1.0)
    ms = 1_000_000
    edges = [0, 30 * ms, 999 * ms, 1000 * ms, 1500 * ms, 2100 * ms, 5000 * ms]
    assert [presses.accept(t) for t in edges] == [True, False, False, True, False, True, True]
    assert PressFilter(hold_off_s=0).accept(5) and PressFilter(hold_off_s=0).accept(5)
    # A clock stepped back (a new boot of the chip's clock) never locks the button out.
    back = PressFilter(hold_off_s=1.0)
    assert back.accept(10 * 1000 * ms) and back.accept(1 * ms)


def test_an_ack_button_on_a_missing_chip_names_it(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError) as err:
        GpioAckButton(AckButtonConfig(chip=str(tmp_path / "gpiochip7"), line=4), lambda c: None)
    msg = str(err.value)
    assert "\n" not in msg and "gpiochip7" in msg and "line 4" in msg


@pytest.mark.clips
def test_an_unavailable_ack_button_is_reported_and_the_agent_runs_on(
    make_cfg: Callable[..., EdgeConfig], clips: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = make_cfg(
        source={"uri": str(clips / "single_face.mp4"), "on_eof": "exit"},
        models={"mode": "off"},
        ack_button={"chip": str(tmp_path / "gpiochip7")},
    )
    agent, thread, result = start_agent(cfg, Recorder())
    thread.join(120)
    assert result == [0] and agent.frames > 0 and agent.button is None
    err = capsys.readouterr().err
    assert "ack_button_unavailable" in err and "gpiochip7" in err


def test_ack_without_a_running_agent_says_so(tmp_path: Path) -> None:
    p = edge_cli("--set", f"state_dir={tmp_path}", "ack")
    assert p.returncode == 69 and p.stderr.count("\n") == 1 and "no agent running" in p.stderr


@pytest.mark.clips
def test_the_live_daemon_records_an_ack_from_the_cli_and_the_sink_keeps_it(
    make_cfg: Callable[..., EdgeConfig], clips: Path, tmp_path: Path
) -> None:
    """WolfgangLanger's closure on the live daemon: while MICROSLEEP is up, `sleepsafe-edge ack`
    (the control socket) acknowledges it; the ended record says so, and the sink stores it."""
    from cloud_sink.store import Store
    from cloud_sink.validate import validate
    from sleepsafe.protocol import wire_event

    cam = tmp_path / "camera.mp4"
    shutil.copy(clips / "WolfgangLanger_Pexels.mp4", cam)
    cfg = make_cfg(source={"uri": str(cam), "on_eof": "exit"}, models={"mode": "off"})
    acked = threading.Event()

    class AckOnAlarm(Recorder):
        def __call__(self, e: Event) -> None:
            if e.type is EventType.MICROSLEEP and e.phase == "raised":
                # As the driver would, on hearing it: the CLI, then a pause before the next frame.
                p = edge_cli("--set", f"state_dir={cfg.state_dir}", "ack")
                assert p.returncode == 0 and p.stdout.strip() == "acknowledged", p.stderr
                wait_until(lambda: not agent._acks.empty(), "the ack to reach the daemon")
                acked.set()
            super().__call__(e)

    rec = AckOnAlarm()
    agent, thread, result = start_agent(cfg, rec)
    ended = rec.wait_for(EventType.MICROSLEEP, "ended", timeout=120)
    thread.join(60)
    assert result == [0] and acked.is_set()
    assert ended.acknowledged_via == "cli" and ended.acknowledged_ms is not None
    assert agent.acknowledged >= 1
    store = Store(f"sqlite:///{tmp_path / 'sink.sqlite3'}")
    item = validate(f"sleepsafe/v1/{cfg.device_id}/event", wire_event(ended, 2), 1 << 20)
    store.write([item])
    stored = store.event(str(ended.event_id))["records"][0]
    assert (stored["acknowledged_via"], stored["acknowledged_ms"]) == ("cli", ended.acknowledged_ms)
    store.close()
