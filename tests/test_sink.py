"""The sink's parts on real databases: validation, idempotent storage on SQLite and PostgreSQL,
migrations, the HTTP API (token, rate limit, inputs), config errors."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from cloud_sink.store import Store, StoreError
from cloud_sink.validate import Rejected, Valid, validate
from sleepsafe.protocol import Event, Stats, Status, Telemetry

T0 = datetime(2026, 11, 23, 8, 0, tzinfo=timezone.utc)


def event(
    device: str = "bus-1", n: int = 0, phase: str = "raised", type_: str = "microsleep", **kw: Any
) -> Event:
    data: dict[str, Any] = {
        "event_id": uuid.uuid5(uuid.NAMESPACE_URL, f"{device}/{n}"),
        "device_id": device,
        "type": type_,
        "phase": phase,
        "severity": "critical",
        "state": "MICROSLEEP",
        "start_time": T0 + timedelta(seconds=n),
        "start_ms": n * 1000,
        "start_frame": n * 30,
        "is_drowsy": False,
        "perclos": 0.2,
    }
    if phase == "ended":
        data |= {"end_time": T0 + timedelta(seconds=n + 2), "duration_ms": 2000, "state": "AWAKE"}
    return Event(**(data | kw))


def telemetry(device: str = "bus-1", n: int = 0, perclos: float = 0.1) -> Telemetry:
    return Telemetry(
        msg_id=uuid.uuid5(uuid.NAMESPACE_URL, f"t/{device}/{n}"),
        device_id=device,
        time=T0 + timedelta(seconds=10 * n),
        state="AWAKE",
        perclos=perclos,
        blink_rate_per_min=12.0,
        blinks=3,
        baseline_ear=0.3,
        calibrated=True,
        is_drowsy=False,
        face=True,
    )


def status(device: str, state: str, seq: int) -> Status:
    return Status(device_id=device, state=state, seq=seq, time=T0 + timedelta(seconds=seq), version="0.1.0")  # type: ignore[arg-type]


def wire(kind: str, msg: Any, device: str = "bus-1") -> Valid | Rejected:
    return validate(f"sleepsafe/v1/{device}/{kind}", msg.model_dump_json().encode(), 65536)


# ----------------------------------------------------------------------------- validation

GOOD = event().model_dump_json().encode()


@pytest.mark.parametrize(
    ("topic", "payload", "code", "words"),
    [
        ("sleepsafe/v1/bus-1/event", b"{not json", "json", "bad JSON"),
        ("sleepsafe/v1/bus-1/event", b"\xff\xfe\x00", "json", "not UTF-8"),
        ("sleepsafe/v1/bus-1/event", b"[1, 2]", "json", "not an object"),
        ("sleepsafe/v1/bus-1/event", GOOD.replace(b'"v":1,', b""), "version", "no schema version"),
        ("sleepsafe/v1/bus-1/event", GOOD.replace(b'"v":1', b'"v":3'), "version", "unknown schema version 3"),
        (
            "sleepsafe/v1/bus-1/event",
            GOOD.replace(b'"is_drowsy":false', b'"is_drowsy":"maybe"'),
            "invalid",
            "is_drowsy",
        ),
        (
            "sleepsafe/v1/bus-1/event",
            GOOD.replace(b'"v":1', b'"v":1,"extra":3'),
            "invalid",
            "extra: unknown field",
        ),
        ("sleepsafe/v1/bus-1/event", GOOD + b" " * 70000, "oversized", "oversized payload"),
        ("sleepsafe/v1/bus-2/event", GOOD, "device", "differs from 'bus-2'"),
        ("sleepsafe/v1/bus-1/gossip", GOOD, "topic", "unknown message kind"),
        ("sleepsafe/v2/bus-1/event", GOOD, "topic", "not under sleepsafe/v1/"),
        ("sleepsafe/v1/bus 1/event", GOOD, "topic", "invalid device id"),
        ("sleepsafe/v1/a/b/event", GOOD, "topic", "expected sleepsafe/v1/<device>/<kind>"),
    ],
)
def test_validation_names_the_reason(topic: str, payload: bytes, code: str, words: str) -> None:
    res = validate(topic, payload, 65536)
    assert isinstance(res, Rejected), res
    assert res.code == code and words in res.reason, res.reason
    assert res.payload == payload and "\n" not in res.reason


def test_validation_accepts_every_message_kind() -> None:
    for kind, msg in [
        ("event", event()),
        ("telemetry", telemetry()),
        ("status", status("bus-1", "online", 1)),
        (
            "stats",
            Stats(
                device_id="bus-1",
                time=T0,
                fps=30,
                frames=10,
                dropped_frames=0,
                bad_frames=0,
                latency_p50_ms=10,
                latency_p99_ms=20,
                reconnects=0,
                camera_lost=False,
                spool_depth=3,
                spool_evicted={},
                mqtt_reconnects=0,
                providers=["CPUExecutionProvider"],
                model_versions={},
            ),
        ),
    ]:
        res = wire(kind, msg)
        assert isinstance(res, Valid) and res.kind == kind and res.msg == msg


# ----------------------------------------------------------------------------- storage


def test_store_is_idempotent_and_orders_status(db_url: str) -> None:
    store = Store(db_url)
    try:
        batch = [wire("event", event(n=n)) for n in range(5)] + [wire("event", event(n=0, phase="ended"))]
        batch += [wire("telemetry", telemetry(n=n)) for n in range(3)]
        res = store.write(batch)
        assert res.stored["event"] == 6 and res.stored["telemetry"] == 3 and res.duplicates == 0
        # A QoS 1 redelivery of the whole batch (and a duplicate inside one batch) stores nothing new.
        res = store.write(batch + batch[:2])
        assert res.stored["event"] == 0 and res.stored["telemetry"] == 0 and res.duplicates == 11
        assert store.counts()["events"] == 6 and store.counts()["telemetry"] == 3

        # Status: a newer session wins; a stale Last Will of the old session arriving late does not.
        store.write([wire("status", status("bus-1", "online", 2))])
        store.write([wire("status", status("bus-1", "offline", 1))])
        assert store.devices()[0]["status"] == "online"
        store.write([wire("status", status("bus-1", "stopped", 2))])
        store.write([wire("status", status("bus-1", "online", 2))])  # redelivered birth: ignored
        dev = store.devices()[0]
        assert dev["status"] == "stopped" and dev["status_seq"] == 2 and dev["online"] is False
        assert store.counts()["status_log"] == 3

        # Dead letters keep the raw bytes and count repeats.
        bad = validate("sleepsafe/v1/bus-1/event", b"\x00garbage", 65536)
        store.write([bad, bad])
        store.write([bad])
        dl = store.dead_letters()
        assert len(dl) == 1 and dl[0]["times_seen"] == 3 and "bad JSON" in dl[0]["reason"]

        got = store.events(device="bus-1", type_="microsleep", since=T0 + timedelta(seconds=2))
        assert [e["start_time"] for e in got] == [f"2026-11-23T08:00:0{n}Z" for n in (2, 3, 4)]
        assert store.events(device="bus-9") == []
        dash = store.dashboard(hours=24, now=datetime(2026, 11, 23, 12, 0))
        assert dash["alerts_per_hour"] == [{"hour": "2026-11-23T08:00:00Z", "type": "microsleep", "count": 5}]
        assert dash["perclos_histogram"]["counts"][2] == 3 and sum(dash["perclos_histogram"]["counts"]) == 3
        tl = store.timeline("bus-1", hours=24, now=datetime(2026, 11, 23, 12, 0))
        closed = [s for s in tl["segments"] if not s["open"]]
        assert len(tl["segments"]) == 5 and len(closed) == 1 and closed[0]["end"] == "2026-11-23T08:00:02Z"
    finally:
        store.close()


def test_migrations_match_the_tables(db_url: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from cloud_sink.schema import metadata

    store = Store(db_url)
    try:
        with store.engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), metadata)
        assert diff == [], diff
        Store(db_url).close()  # migrating again is a no-op
    finally:
        store.close()


def test_store_errors_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="only sqlite"):
        Store("mysql://x/y")
    with pytest.raises(StoreError) as err:
        Store("postgresql+psycopg://nobody@127.0.0.1:1/none")
    assert "database postgresql+psycopg://nobody@127.0.0.1:1/none: OperationalError" in str(err.value)


def test_cli_errors_exit_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from cloud_sink.cli import main

    assert main(["--set", "mqtt.port=99999", "check-config"]) == 78
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "mqtt.port" in err
    assert main(["--set", "api.rate_limit=lots", "check-config"]) == 78
    assert "api.rate_limit" in capsys.readouterr().err
    assert main(["--set", f"state_dir={tmp_path}", "run"]) == 78
    assert "no bearer token" in capsys.readouterr().err
    code = main(
        [
            "--set",
            "store.url=postgresql+psycopg://nobody@127.0.0.1:1/none",
            "--set",
            "api.enabled=false",
            "run",
        ]
    )
    assert code == 69
    err = capsys.readouterr().err.strip()
    assert err.startswith("sleepsafe-sink: database") and err.count("\n") == 0


# ----------------------------------------------------------------------------- API


@pytest.fixture
def api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    from fastapi.testclient import TestClient

    from cloud_sink.api import create_app
    from cloud_sink.config import load_sink_config

    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "api-token").write_text("# fleet dashboard\nfile-token-abc\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    cfg = load_sink_config(
        None, {"state_dir": str(tmp_path), "api": {"tokens": ["cfg-token-xyz"], "rate_limit": "30/minute"}}
    )
    store = Store(cfg.database_url())
    now = datetime.now(timezone.utc)
    store.write(
        [wire("event", event(n=n, start_time=now - timedelta(minutes=n))) for n in range(10)]
        + [wire("event", event("bus-2", n=1, type_="drowsy", start_time=now), "bus-2")]
        + [
            wire("telemetry", telemetry(n=n, perclos=n / 10).model_copy(update={"time": now}))
            for n in range(5)
        ]
        + [
            wire("status", status("bus-1", "online", 4)),
            wire("status", status("bus-2", "offline", 1), "bus-2"),
        ]
        + [validate("sleepsafe/v1/bus-1/event", b"nope", 65536)]
    )
    with TestClient(create_app(cfg, store)) as client:
        client.headers["Authorization"] = "Bearer cfg-token-xyz"
        yield client
    store.close()


def test_api_needs_a_token_except_health(api: Any) -> None:
    assert api.get("/health", headers={"Authorization": ""}).json()["status"] == "ok"
    r = api.get("/events", headers={"Authorization": ""})
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert api.get("/devices", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert api.get("/devices", headers={"Authorization": "Bearer file-token-abc"}).status_code == 200
    assert api.get("/metrics", headers={"Authorization": ""}).status_code == 401


def test_api_serves_fleet_data(api: Any) -> None:
    devices = {d["device_id"]: d for d in api.get("/devices").json()}
    assert devices["bus-1"]["online"] is True and devices["bus-2"]["status"] == "offline"
    recent = api.get("/events/recent", params={"limit": 3}).json()
    assert len(recent) == 3
    assert [e["device_id"] for e in api.get("/events", params={"type": "drowsy"}).json()] == ["bus-2"]
    since = (datetime.now(timezone.utc) - timedelta(minutes=4, seconds=30)).isoformat()
    assert len(api.get("/events", params={"device": "bus-1", "since": since}).json()) == 5
    stats = api.get("/statistics").json()
    assert stats["rows"]["events"] == 11 and stats["rows"]["dead_letters"] == 1
    dash = api.get("/dashboard").json()
    assert sum(dash["perclos_histogram"]["counts"]) == 5 and dash["alerts_per_device"] == {
        "bus-1": 10,
        "bus-2": 1,
    }
    assert api.get("/dashboard/timeline", params={"device": "bus-1"}).json()["segments"]
    assert "bad JSON" in api.get("/dead-letters").json()[0]["reason"]
    assert set(api.get("/openapi.json").json()["paths"]) >= {
        "/health",
        "/statistics",
        "/dashboard",
        "/events/recent",
        "/events",
        "/devices",
        "/metrics",
    }


def test_api_validates_inputs(api: Any) -> None:
    for params in (
        {"type": "nap"},
        {"device": "bus 1"},
        {"since": "yesterday"},
        {"limit": 0},
        {"limit": 10**6},
    ):
        r = api.get("/events", params=params)
        assert r.status_code == 422, params
    assert api.get("/dashboard", params={"hours": 0}).status_code == 422


def test_api_metrics_are_prometheus_text(api: Any) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    fams = {f.name: f for f in text_string_to_metric_families(api.get("/metrics").text)}
    rows = {s.labels["table"]: s.value for s in fams["sleepsafe_sink_rows"].samples}
    assert rows["events"] == 11 and rows["dead_letters"] == 1
    by_status = {s.labels["status"]: s.value for s in fams["sleepsafe_sink_devices"].samples}
    assert by_status == {"online": 1, "offline": 1}


def test_api_rate_limit_per_token(api: Any) -> None:
    codes = [api.get("/devices").status_code for _ in range(31)]
    assert codes[:30] == [200] * 30 and codes[30] == 429
    r = api.get("/devices")
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    # Another token has its own budget; /health is never limited.
    assert api.get("/devices", headers={"Authorization": "Bearer file-token-abc"}).status_code == 200
    assert api.get("/health").status_code == 200


def test_dashboard_page_and_assets_are_served(api: Any) -> None:
    page = api.get("/ui", headers={"Authorization": ""})
    assert page.status_code == 200 and "chart-rate" in page.text
    js = api.get("/static/plotly.min.js", headers={"Authorization": ""})
    assert js.status_code == 200 and len(js.content) > 1_000_000
    assert api.get("/static/../config.py", headers={"Authorization": ""}).status_code == 404
    assert json.loads(api.get("/health").text)["database"] == "ok"


def test_hot_path_columns_match_the_tables() -> None:
    from cloud_sink import schema
    from cloud_sink.store import EVENT_COLUMNS, TELEMETRY_COLUMNS

    assert tuple(c.name for c in schema.events.columns if c.name != "id") == EVENT_COLUMNS
    assert tuple(c.name for c in schema.telemetry.columns if c.name != "id") == TELEMETRY_COLUMNS
