"""Alert outputs: the tone, the hook, failures and slowness that must not reach the frame loop."""

from __future__ import annotations

import fcntl
import io
import json
import stat
import sys
import wave
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest

from edge_agent.config import AlertsConfig, CommandConfig, EdgeConfig, GpioConfig, SoundConfig
from edge_agent.outputs.alerts import AlertDispatcher, CommandOutput, SoundOutput, build_outputs, tone_wav
from edge_agent.outputs.journal import EventLog
from sleepsafe.protocol import DriverState, Event, EventType, Severity


def event(
    type_: EventType = EventType.MICROSLEEP, severity: Severity = Severity.CRITICAL, phase: str = "raised"
) -> Event:
    now = datetime.now(timezone.utc)
    return Event(
        device_id="bus-7",
        type=type_,
        phase=phase,  # type: ignore[arg-type]
        severity=severity,
        state=DriverState.MICROSLEEP,
        start_time=now,
        raised_time=now,
        start_ms=1000,
        raised_ms=2000,
        start_frame=30,
        raised_frame=60,
        is_drowsy=True,
        perclos=0.12,
        ear_value=0.03,
    )


def test_tone_is_a_real_wav_of_the_configured_length() -> None:
    data = tone_wav(2000.0, 0.8, 0.8)
    with wave.open(io.BytesIO(data)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 16000)
        assert w.getnframes() == int(0.8 * 16000)
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    assert np.abs(pcm).max() > 0.7 * 32767
    # The dominant frequency is the configured one.
    spectrum = np.abs(np.fft.rfft(pcm.astype(float)))
    assert abs(np.argmax(spectrum) * 16000 / len(pcm) - 2000.0) < 5.0


def _executable(path: Path, body: str) -> Path:
    path.write_text(f"#!{sys.executable}\n{body}")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


def test_sound_output_plays_through_the_player_found_on_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stand-in `aplay` on PATH records its arguments: the real process call is exercised."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "played.txt"
    _executable(
        bindir / "aplay", f"import sys\nopen({str(log)!r}, 'a').write(' '.join(sys.argv[1:]) + '\\n')\n"
    )
    monkeypatch.setenv("PATH", str(bindir))
    out = SoundOutput(SoundConfig(player="auto"), tmp_path / "state")
    assert out.player == str(bindir / "aplay")
    assert out.wants(event()) and not out.wants(event(EventType.BLINK, Severity.INFO, "instant"))
    out.emit(event())
    assert log.read_text().split() == ["-q", str(tmp_path / "state" / "alert-tone.wav")]


def test_sound_output_says_so_when_no_player_exists(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    out = SoundOutput(SoundConfig(), tmp_path / "state")
    assert out.player is None and not out.wants(event())
    assert "neither aplay nor paplay" in capsys.readouterr().err


def test_command_hook_gets_the_event_json(tmp_path: Path) -> None:
    got = tmp_path / "got.json"
    hook = _executable(
        tmp_path / "hook",
        "import os, sys\n"
        f"open({str(got)!r}, 'w').write(os.environ['SLEEPSAFE_EVENT_TYPE'] + '\\n' + sys.stdin.read())\n",
    )
    d = AlertDispatcher([CommandOutput(CommandConfig(argv=[str(hook)]))])
    d.submit(event())
    d.close()
    kind, body = got.read_text().split("\n", 1)
    assert kind == "microsleep"
    assert json.loads(body)["device_id"] == "bus-7"
    assert d.stats()["command"] == {"sent": 1, "failed": 0, "dropped": 0}


def test_failing_hook_is_counted_not_raised(tmp_path: Path) -> None:
    hook = _executable(tmp_path / "hook", "import sys\nsys.exit(3)\n")
    d = AlertDispatcher([CommandOutput(CommandConfig(argv=[str(hook)]))])
    d.submit(event())
    d.close()
    assert d.stats()["command"]["failed"] == 1


def test_a_stuck_output_never_blocks_submit(tmp_path: Path) -> None:
    """The hook blocks on a lock the test holds; meanwhile 500 submits all return, the queue
    keeps the newest alerts and counts the rest as dropped."""
    gate = tmp_path / "gate"
    gate.touch()
    hook = _executable(tmp_path / "hook", f"import fcntl\nfcntl.flock(open({str(gate)!r}), fcntl.LOCK_SH)\n")
    with gate.open() as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        d = AlertDispatcher([CommandOutput(CommandConfig(argv=[str(hook)], timeout_s=60))], queue_size=8)
        for _ in range(500):
            d.submit(event())
        stats = d.stats()["command"]
        assert stats["sent"] == 0  # the first hook is still stuck ...
        assert stats["dropped"] >= 500 - 8 - 1  # ... and submit never waited for it
    # Lock released: the running hook and the 8 queued ones complete.
    d.close(timeout=60)
    assert d.stats()["command"]["sent"] == 500 - d.stats()["command"]["dropped"]


def test_gpio_configured_but_unavailable_is_reported_and_skipped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = AlertsConfig(sound=SoundConfig(enabled=False), gpio=GpioConfig(chip="/dev/gpiochip99", line=3))
    outputs = build_outputs(cfg, tmp_path)
    assert [o.name for o in outputs] == ["log"]
    err = capsys.readouterr().err
    assert "alert_output_unavailable" in err and "gpio" in err


def test_event_journal_round_trip(tmp_path: Path) -> None:
    journal = EventLog(tmp_path / "state" / "events.jsonl")
    sent = [event(), event(EventType.BLINK, Severity.INFO, "instant")]
    for e in sent:
        journal.append(e)
    journal.close()
    lines = (tmp_path / "state" / "events.jsonl").read_text().splitlines()
    back = [Event.model_validate_json(x) for x in lines]
    assert back == sent


def test_default_outputs(make_cfg: Callable[..., EdgeConfig], tmp_path: Path) -> None:
    cfg = make_cfg(alerts={"command": {"argv": ["/bin/true"]}})
    assert [o.name for o in build_outputs(cfg.alerts, tmp_path)] == ["log", "command"]


def test_cli_override_takes_a_json_list() -> None:
    from sleepsafe.settings import parse_overrides

    assert parse_overrides(['alerts.command.argv=["/usr/bin/notify", "--loud"]']) == {
        "alerts": {"command": {"argv": ["/usr/bin/notify", "--loud"]}}
    }
