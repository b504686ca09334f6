"""check-config prints no secret (its output ends up in tickets), while the code that connects
still gets the real values."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest

from edge_agent.config import load_config
from sleepsafe.mqtt import new_client, resolve_password
from sleepsafe.redact import mask_url_passwords
from sleepsafe.settings import BrokerConfig
from tests.conftest import Mosquitto, edge_cli, wait_until

DB_URL = "postgresql+psycopg://sink:hunter2-db@db.example/sleepsafe"


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No SLEEPSAFE_* variables or credentials from the caller; returns an empty config file."""
    for key in list(os.environ):
        if key.startswith("SLEEPSAFE_") or key == "CREDENTIALS_DIRECTORY":
            monkeypatch.delenv(key)
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    return empty


def test_edge_check_config_masks_the_mqtt_password_and_url_passwords(clean_env: Path, tmp_path: Path) -> None:
    proc = edge_cli(
        "--config", str(clean_env),
        "--set", f"state_dir={tmp_path}",
        "--set", "mqtt.username=fleet",
        "--set", "mqtt.password=hunter2-mqtt",
        "--set", "source.uri=rtsp://cam:hunter2-rtsp@10.0.0.5/live",
        "check-config",
        timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    for secret in ("hunter2-mqtt", "hunter2-rtsp"):
        assert secret not in proc.stdout and secret not in proc.stderr
    shown = json.loads(proc.stdout)
    assert shown["mqtt"]["password"] == "**********"
    assert shown["mqtt"]["username"] == "fleet"
    assert shown["source"]["uri"] == "rtsp://cam:***@10.0.0.5/live"


def test_edge_check_config_of_an_unset_password_says_null(
    clean_env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from edge_agent.cli import main

    assert main(["--config", str(clean_env), "--set", f"state_dir={tmp_path}", "check-config"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["mqtt"]["password"] is None and shown["source"]["uri"] == "0"


def test_sink_check_config_masks_store_url_mqtt_password_and_tokens(
    clean_env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cloud_sink.cli import main
    from cloud_sink.config import load_sink_config

    sets = {
        "state_dir": str(tmp_path),
        "store.url": DB_URL,
        "mqtt.password": "hunter2-mqtt",
        "api.tokens": '["hunter2-token"]',
        "api.device_tokens.bus-1": "hunter2-device-token",
    }
    argv = ["--config", str(clean_env)]
    for key, value in sets.items():
        argv += ["--set", f"{key}={value}"]
    assert main([*argv, "check-config"]) == 0
    out, err = capsys.readouterr()
    for secret in ("hunter2-db", "hunter2-mqtt", "hunter2-token", "hunter2-device-token"):
        assert secret not in out and secret not in err
    shown = json.loads(out)
    assert shown["api"]["device_tokens"] == {"bus-1": "**********"}
    assert shown["store"]["url"] == "postgresql+psycopg://sink:***@db.example/sleepsafe"
    assert shown["mqtt"]["password"] == "**********"
    assert shown["api"]["tokens"] == ["**********"]
    # Masked in print only: the store connects with, and the API accepts, the real values.
    from sleepsafe.settings import parse_overrides

    cfg = load_sink_config(clean_env, parse_overrides([f"{k}={v}" for k, v in sets.items()]))
    assert cfg.database_url() == DB_URL
    assert cfg.api_tokens() == ["hunter2-token"]
    assert cfg.device_tokens() == {"hunter2-device-token": "bus-1"}
    assert resolve_password(cfg.mqtt) == "hunter2-mqtt"


def test_url_masking_keeps_everything_but_the_password() -> None:
    assert (
        mask_url_passwords("rtsp://cam:p@ss@10.0.0.5:554/live?x=1") == "rtsp://cam:***@10.0.0.5:554/live?x=1"
    )
    pipeline = "rtspsrc location=rtsp://u:pw@cam/s latency=0 ! decodebin ! appsink"
    assert (
        mask_url_passwords(pipeline) == "rtspsrc location=rtsp://u:***@cam/s latency=0 ! decodebin ! appsink"
    )
    for plain in ("0", "/dev/video0", "http://cam.local:8080/stream", "rtsp://user@cam/s", "sqlite:////x.db"):
        assert mask_url_passwords(plain) == plain


def test_the_mqtt_client_logs_in_with_the_real_password(clean_env: Path, tmp_path: Path) -> None:
    cfg = load_config(
        clean_env, {"state_dir": str(tmp_path), "mqtt": {"username": "fleet", "password": "s3cret"}}
    )
    assert "s3cret" not in repr(cfg.mqtt) and "s3cret" not in str(cfg.model_dump(mode="json"))
    assert resolve_password(cfg.mqtt) == "s3cret"
    client = new_client(cfg.mqtt, "bus-7")
    assert (client._username, client._password) == (b"fleet", b"s3cret")


def test_an_empty_password_falls_back_to_the_credential_file(
    clean_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "mqtt-password").write_text("from-credential\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    assert resolve_password(BrokerConfig(username="fleet")) == "from-credential"  # type: ignore[call-arg]
    assert resolve_password(BrokerConfig(username="fleet", password="")) == "from-credential"  # type: ignore[call-arg,arg-type]
    assert resolve_password(BrokerConfig(username="fleet", password="given")) == "given"  # type: ignore[call-arg,arg-type]


def _connect(cfg: BrokerConfig, port: int, client_id: str) -> Any:
    """Connect with ``new_client`` and return the broker's CONNACK reason code."""
    got: list[Any] = []
    done = threading.Event()

    def on_connect(_c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        got.append(reason)
        done.set()

    client = new_client(cfg, client_id)
    client.on_connect = on_connect
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        wait_until(done.is_set, f"CONNACK for {client_id}", timeout=20)
    finally:
        client.disconnect()
        client.loop_stop()
    return got[0]


def test_a_broker_with_passwords_accepts_the_secret_and_refuses_a_wrong_one(tmp_path: Path) -> None:
    if shutil.which("mosquitto_passwd") is None or shutil.which("mosquitto") is None:
        pytest.skip("mosquitto is not installed (make test installs it)")
    passwd = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwd), "fleet", "s3cret"], check=True)
    broker = Mosquitto(tmp_path / "broker", auth=f"allow_anonymous false\npassword_file {passwd}\n")
    broker.start()
    try:
        good = BrokerConfig(username="fleet", password="s3cret")  # type: ignore[call-arg,arg-type]
        assert not _connect(good, broker.port, "good").is_failure
        bad = BrokerConfig(username="fleet", password="wrong")  # type: ignore[call-arg,arg-type]
        assert _connect(bad, broker.port, "bad").is_failure
    finally:
        broker.stop()
