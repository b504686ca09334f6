"""What no message may do to the sink: stop ingest, store what the reads cannot give back, or
leave /health saying ok while nothing is stored. Regression tests for the poison pill, the
unreadable values and the lying health check, on a real Mosquitto and real databases."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import threading
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from cloud_sink import schema
from cloud_sink.config import SinkConfig, load_sink_config
from cloud_sink.ingest import Ingest
from cloud_sink.store import Store
from cloud_sink.validate import ClockWindow, Rejected, Valid, validate
from sleepsafe.protocol import Event, FeatureSample
from tests.conftest import wait_until

NOW = datetime.now(timezone.utc)


def good_event(device: str = "bus-1", n: int = 0) -> Event:
    return Event(
        event_id=uuid.uuid5(uuid.NAMESPACE_URL, f"robust/{device}/{n}"),
        device_id=device,
        type="microsleep",  # type: ignore[arg-type]
        phase="raised",
        severity="critical",  # type: ignore[arg-type]
        state="MICROSLEEP",  # type: ignore[arg-type]
        start_time=NOW - timedelta(seconds=60 - n),
        raised_time=NOW - timedelta(seconds=59 - n),
        start_ms=n * 1000,
        start_frame=n * 30,
        is_drowsy=True,
        ear_value=0.05,
        openness=0.18,
        perclos=0.2,
    )


GOOD = json.loads(good_event().model_dump_json())


def tampered(**fields: Any) -> bytes:
    """The good event as JSON text with some fields replaced by raw JSON text."""
    text = json.dumps(GOOD)
    for k, raw in fields.items():
        obj = json.loads(text)
        obj[k] = "@@"
        text = json.dumps(obj).replace('"@@"', raw)
    return text.encode()


POISON = [
    # (payload, code, words in the reason)
    (b'{"v":1,"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}", "json", "nested too deeply"),
    (tampered(ear_value="NaN"), "invalid", "ear_value"),
    (tampered(perclos="Infinity"), "invalid", "perclos"),
    (tampered(perclos="1.5"), "invalid", "perclos"),
    (tampered(start_frame="123456789012345678901234567890"), "invalid", "start_frame"),
    (tampered(start_frame="-1"), "invalid", "start_frame"),
    (tampered(duration_ms="-5"), "invalid", "duration_ms"),
    (tampered(start_time='"0001-01-01T00:00:00Z"'), "clock", "start_time 0001-01-01"),
    (tampered(raised_time='"9999-12-31T23:59:59Z"'), "clock", "ahead of the sink's clock"),
    (tampered(model_versions='{"eye\\u0000state": "1"}'), "invalid", "NUL"),
    (tampered(model_versions='{"eye_state": "' + "x" * 5000 + '"}'), "invalid", "model_versions"),
    (tampered(features="[" + ",".join(["{}"] * 3000) + "]"), "invalid", "features"),
]


@pytest.mark.parametrize(("payload", "code", "words"), POISON)
def test_poison_payloads_are_dead_letters_with_a_reason(payload: bytes, code: str, words: str) -> None:
    clock = ClockWindow(timedelta(days=400), timedelta(days=1))
    res = validate("sleepsafe/v1/bus-1/event", payload, 10_000_000, clock)
    assert isinstance(res, Rejected), res
    assert res.code == code and words in res.reason, res.reason
    assert "\n" not in res.reason


def test_validate_never_raises_on_any_bytes() -> None:
    """Whatever validation itself trips on is the message's fault, kept as a dead letter."""
    for payload in (b"", b"\x00" * 10, b"{" * 50_000, b'{"v":1' + b',"a":1' * 10_000 + b"}", b"1e999999"):
        assert isinstance(validate("sleepsafe/v1/bus-1/event", payload, 10_000_000), Rejected)


# ----------------------------------------------------------------------------- a running ingest


def sink_cfg(tmp_path: Path, port: int, url: str, **store: Any) -> SinkConfig:
    return load_sink_config(
        None,
        {
            "state_dir": str(tmp_path),
            "store": {"url": url, "batch_linger_ms": 5, **store},
            "mqtt": {
                "host": "127.0.0.1",
                "port": port,
                "client_id": f"robust-{uuid.uuid4().hex[:8]}",
                "reconnect_min_s": 0.2,
                "reconnect_max_s": 0.5,
            },
            "api": {"tokens": ["t0ken-robust"]},
        },
    )


class Publisher:
    def __init__(self, port: int) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="robust-pub", protocol=mqtt.MQTTv5)
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()

    def send(self, topic: str, payload: bytes) -> None:
        self.c.publish(topic, payload, qos=1).wait_for_publish(30)

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


@pytest.fixture
def running(broker: Any, db_url: str, tmp_path: Path) -> Any:
    store = Store(db_url)
    # A long linger, so that what a test sends quickly lands in one batch.
    cfg = sink_cfg(tmp_path, broker.port, db_url, stall_s=5.0, batch_linger_ms=300)
    ingest = Ingest(cfg, store).start()
    wait_until(ingest.subscribed.is_set, "the sink subscribed")
    pub = Publisher(broker.port)
    yield ingest, store, pub
    pub.close()
    ingest.stop()
    store.close()


def rows(store: Store, table: Any) -> int:
    from sqlalchemy import func, select

    with store.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def health(ingest: Ingest, store: Store) -> tuple[int, dict[str, Any]]:
    from fastapi.testclient import TestClient

    from cloud_sink.api import create_app

    client = TestClient(create_app(ingest.cfg, store, ingest))
    r = client.get("/health")
    return r.status_code, r.json()


def test_poison_pill_does_not_stop_ingest(running: Any) -> None:
    """Each poison payload, then a good event from the same vehicle: all good ones stored,
    every bad one a dead letter, the writer alive, health ok (before the fix the first one
    killed the writer while /health said ok)."""
    ingest, store, pub = running
    for i, (payload, _, _) in enumerate(POISON):
        pub.send("sleepsafe/v1/bus-1/event", payload)
        pub.send("sleepsafe/v1/bus-1/event", good_event("bus-1", i).model_dump_json().encode())
    wait_until(lambda: ingest.committed >= 2 * len(POISON), "everything committed")
    assert rows(store, schema.events) == len(POISON)
    assert rows(store, schema.dead_letters) == len(POISON)
    assert ingest.failed is None and ingest.problems() == []
    code, body = health(ingest, store)
    assert code == 200 and body["status"] == "ok" and body["writer_alive"]


def test_reads_never_fail_on_what_was_stored(running: Any) -> None:
    """After the poison, every read endpoint answers 200 (the year-1 date used to make them 500)."""
    from fastapi.testclient import TestClient

    from cloud_sink.api import create_app

    ingest, store, pub = running
    for payload, _, _ in POISON:
        pub.send("sleepsafe/v1/bus-2/event", payload.replace(b'"bus-1"', b'"bus-2"'))
    pub.send("sleepsafe/v1/bus-2/event", good_event("bus-2", 1).model_dump_json().encode())
    wait_until(lambda: ingest.committed >= len(POISON) + 1, "everything committed")
    api = TestClient(create_app(ingest.cfg, store, ingest))
    auth = {"Authorization": "Bearer t0ken-robust"}
    for path in (
        "/events/recent",
        "/events?device=bus-2",
        "/dashboard",
        "/dashboard/timeline?device=bus-2",
        "/devices",
        "/dead-letters",
        "/statistics",
        "/metrics",
    ):
        r = api.get(path, headers=auth)
        assert r.status_code == 200, (path, r.text[:300])


def test_a_row_the_database_refuses_is_isolated(running: Any) -> None:
    """The database refuses one row of a batch (a trigger here; a constraint or a value the
    driver cannot bind in the field): that row becomes a dead letter with the database's
    reason, every other row of the batch is stored, and ingest goes on."""
    ingest, store, pub = running
    with store.engine.begin() as conn:
        if store.dialect == "sqlite":
            conn.exec_driver_sql(
                "CREATE TRIGGER refuse BEFORE INSERT ON events WHEN NEW.device_id = 'bad-1' "
                "BEGIN SELECT RAISE(ABORT, 'refused by the test trigger'); END"
            )
        else:
            conn.exec_driver_sql(
                "CREATE FUNCTION refuse() RETURNS trigger AS $$ BEGIN "
                "IF NEW.device_id = 'bad-1' THEN RAISE EXCEPTION 'refused by the test trigger'; END IF; "
                "RETURN NEW; END $$ LANGUAGE plpgsql"
            )
            conn.exec_driver_sql(
                "CREATE TRIGGER refuse BEFORE INSERT ON events FOR EACH ROW EXECUTE FUNCTION refuse()"
            )
    for i in range(5):
        pub.send("sleepsafe/v1/bus-3/event", good_event("bus-3", i).model_dump_json().encode())
    pub.send("sleepsafe/v1/bad-1/event", good_event("bad-1", 0).model_dump_json().encode())
    for i in range(5, 10):
        pub.send("sleepsafe/v1/bus-3/event", good_event("bus-3", i).model_dump_json().encode())
    wait_until(lambda: ingest.committed >= 11, "the batch committed")
    assert rows(store, schema.events) == 10
    dead = store.dead_letters()
    assert len(dead) == 1 and "store refused" in dead[0]["reason"] and "test trigger" in dead[0]["reason"]
    assert ingest.failed is None


def test_health_goes_503_when_mqtt_is_down_and_back(broker: Any, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'sink.sqlite3'}"
    store = Store(url)
    ingest = Ingest(sink_cfg(tmp_path, broker.port, url), store).start()
    try:
        wait_until(ingest.connected.is_set, "connected")
        assert health(ingest, store)[0] == 200
        broker.stop()
        wait_until(lambda: not ingest.connected.is_set(), "the sink noticed")
        code, body = health(ingest, store)
        assert code == 503 and "MQTT disconnected" in body["problems"]
        broker.start()
        wait_until(ingest.connected.is_set, "reconnected", 30)
        assert health(ingest, store)[0] == 200
    finally:
        ingest.stop()
        store.close()


def test_health_goes_503_while_messages_wait_for_a_commit(broker: Any, tmp_path: Path) -> None:
    """Another process holds the SQLite database locked: the writer waits, the received messages
    are not committed, and after stall_s /health says so; once the lock is gone, they are
    stored and health is ok again."""
    db = tmp_path / "sink.sqlite3"
    url = f"sqlite:///{db}"
    store = Store(url)
    ingest = Ingest(sink_cfg(tmp_path, broker.port, url, stall_s=0.5), store).start()
    pub = Publisher(broker.port)
    lock = sqlite3.connect(db, isolation_level=None, timeout=30)
    try:
        wait_until(ingest.subscribed.is_set, "subscribed")
        lock.execute("BEGIN EXCLUSIVE")
        pub.send("sleepsafe/v1/bus-4/event", good_event("bus-4", 1).model_dump_json().encode())
        wait_until(lambda: health(ingest, store)[0] == 503, "health reports the stall", 60)
        body = health(ingest, store)[1]
        assert any("waiting" in p for p in body["problems"]), body
        lock.execute("ROLLBACK")
        wait_until(lambda: ingest.committed >= 1, "stored once the lock is gone", 60)
        wait_until(lambda: health(ingest, store)[0] == 200, "health ok again")
        assert rows(store, schema.events) == 1
    finally:
        lock.close()
        pub.close()
        ingest.stop()
        store.close()


def test_a_dead_writer_makes_the_sink_exit_non_zero(
    broker: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If the writer dies anyway (a fault injected into it here), /health is 503 and serve()
    returns 70, so systemd restarts the sink instead of leaving a live process that stores
    nothing."""
    import cloud_sink.ingest as ingest_mod
    from cloud_sink.service import serve

    def broken(*_: Any) -> Valid | Rejected:
        raise RuntimeError("injected fault")

    monkeypatch.setattr(ingest_mod, "validate", broken)
    pub = Publisher(broker.port)
    # Retained: the sink gets it as soon as it subscribes.
    pub.c.publish("sleepsafe/v1/bus-9/status", b"{}", qos=1, retain=True).wait_for_publish(30)
    pub.close()
    url = f"sqlite:///{tmp_path / 'sink.sqlite3'}"
    cfg = sink_cfg(tmp_path, broker.port, url)
    cfg.api.enabled = False
    # A bound, should serve() hang: SIGTERM makes it return 0, which fails the test.
    timer = threading.Timer(60, lambda: os.kill(os.getpid(), signal.SIGTERM))
    timer.start()
    try:
        code = serve(cfg, Store(url))
    finally:
        timer.cancel()
    assert code == 70


def test_found_by_the_fuzz_receipts_and_long_streams(running: Any) -> None:
    """Two faults the MQTT fuzz found: a dead letter whose key held a NUL killed the writer while
    it sent the receipt (and again after every restart, as the message was redelivered); a v1
    event of a stream older than 24.8 days (t_ms > 2^31) was refused while being stored."""
    ingest, store, pub = running
    pub.send("sleepsafe/v1/bus-7/event", b'{"v":1,"event_id":"x","phase":"raised\\u0000"}')
    pub.send("sleepsafe/v1/bus-7/telemetry", b'{"v":1,"msg_id":"' + b"a" * 300 + b'"}')
    late = good_event("bus-7", 1).model_copy(
        update={
            "features": [
                FeatureSample(
                    t_ms=2**31 + 5 + 33 * i,
                    frame=2**31 + i,
                    face=True,
                    ear=0.3,
                    ear_left=0.3,
                    ear_right=0.3,
                    openness=1.0,
                    mar=0.1,
                    yaw=0.0,
                    pitch=0.0,
                    roll=0.0,
                    iris_vis=0.9,
                )
                for i in range(3)
            ]
        }
    )
    pub.send("sleepsafe/v1/bus-7/event", late.model_dump_json().encode())
    wait_until(lambda: ingest.committed >= 3, "all three committed")
    assert ingest.failed is None and rows(store, schema.events) == 1
    assert rows(store, schema.dead_letters) == 2


def test_no_vehicle_may_be_called_fleet() -> None:
    """The sink keeps sleepsafe/v1/fleet/ for itself: such a vehicle's messages would vanish."""
    from edge_agent.config import load_config
    from sleepsafe.settings import ConfigError

    with pytest.raises(ConfigError, match="reserved"):
        load_config(None, {"device_id": "fleet"})
    res = validate("sleepsafe/v1/fleet/event", good_event().model_dump_json().encode(), 65536)
    assert isinstance(res, Rejected) and res.code == "topic"
