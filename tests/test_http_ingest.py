"""HTTP ingest beside MQTT, on SQLite and PostgreSQL: the same validation, dead letters,
idempotency and storage; operator tokens write for any vehicle, a device token only for its own
and reads nothing; malformed bodies are dead letters, never a 500."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cloud_sink.store import Store
from tests.test_sink import event, telemetry

OPERATOR = "operator-token-0123456789"
BUS1 = "bus-1-device-token-0123456789"


@pytest.fixture
def api(db_url: str, tmp_path: Path) -> Iterator[tuple[Any, Store]]:
    from fastapi.testclient import TestClient

    from cloud_sink.api import create_app
    from cloud_sink.config import load_sink_config

    cfg = load_sink_config(
        None,
        {
            "state_dir": str(tmp_path),
            "store": {"url": db_url},
            "api": {"tokens": [OPERATOR], "device_tokens": {"bus-1": BUS1}, "ingest_max_batch": 10},
        },
    )
    s = Store(cfg.database_url())
    with TestClient(create_app(cfg, s)) as client:
        client.headers["Authorization"] = f"Bearer {OPERATOR}"
        yield client, s
    s.close()


def _as(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_one_message_is_stored_once_and_a_bad_one_kept_as_a_dead_letter(api: tuple[Any, Store]) -> None:
    client, store = api
    body = event(n=1).model_dump_json()
    r = client.post("/telemetry/bus-1/event", content=body)
    assert r.status_code == 201 and r.json() == {"result": "stored", "kind": "event"}, r.text
    again = client.post("/telemetry/bus-1/event", content=body)
    assert again.status_code == 201 and again.json()["result"] == "duplicate"
    tel = client.post("/telemetry/bus-1/telemetry", content=telemetry(n=1).model_dump_json())
    assert tel.status_code == 201 and tel.json()["result"] == "stored"
    bad = client.post("/telemetry/bus-1/event", content=b"{not json")
    assert (
        bad.status_code == 422
        and bad.json()["result"] == "dead_letter"
        and "bad JSON" in bad.json()["reason"]
    )
    other = client.post("/telemetry/bus-2/event", content=body)  # says bus-1 inside
    assert other.status_code == 422 and other.json()["code"] == "device"
    assert client.post("/telemetry/bus-1/nonsense", content=body).status_code == 422
    counts = store.counts()
    assert counts["events"] == 1 and counts["telemetry"] == 1 and counts["dead_letters"] == 2
    assert "bad JSON" in " ".join(d["reason"] for d in store.dead_letters())


def test_a_device_token_writes_its_own_vehicle_only_and_reads_nothing(api: tuple[Any, Store]) -> None:
    client, store = api
    own = client.post("/telemetry/bus-1/event", content=event(n=2).model_dump_json(), headers=_as(BUS1))
    assert own.status_code == 201, own.text
    theirs = client.post(
        "/telemetry/bus-2/event", content=event("bus-2", n=2).model_dump_json(), headers=_as(BUS1)
    )
    assert theirs.status_code == 403 and "bus-1" in theirs.json()["detail"]
    assert client.get("/events", headers=_as(BUS1)).status_code == 403
    assert client.get("/devices", headers=_as(BUS1)).status_code == 403
    assert client.post("/telemetry/bus-1/event", content=b"{}", headers=_as("wrong")).status_code == 401
    assert store.counts()["events"] == 1


def test_a_batch_stores_the_good_and_dead_letters_the_rest(api: tuple[Any, Store]) -> None:
    client, store = api
    batch = [
        {"device_id": "bus-1", "kind": "event", "message": json.loads(event(n=3).model_dump_json())},
        {"device_id": "bus-1", "kind": "event", "message": json.loads(event(n=3).model_dump_json())},  # twice
        {"device_id": "bus-2", "kind": "event", "message": json.loads(event("bus-2", n=3).model_dump_json())},
        {"device_id": "bus-1", "kind": "telemetry", "message": json.loads(telemetry(n=3).model_dump_json())},
        {"device_id": "bus-1", "kind": "event", "message": {"v": 2}},
        {"kind": "event", "message": {}},
        "not an object",
    ]
    r = client.post("/telemetry/batch", content=json.dumps(batch))
    assert r.status_code == 200, r.text
    out = r.json()
    assert (out["stored"], out["duplicates"], out["dead_letters"]) == (3, 1, 3)
    assert [x["index"] for x in out["rejected"]] == [4, 5, 6]
    assert store.counts()["events"] == 2 and store.counts()["telemetry"] == 1


@pytest.mark.parametrize(
    ("body", "why"),
    [(b"[{", "not JSON"), (b'{"device_id": "bus-1"}', "not an array"), (b"7", "not an array")],
)
def test_a_body_that_is_no_batch_is_one_dead_letter(api: tuple[Any, Store], body: bytes, why: str) -> None:
    client, store = api
    r = client.post("/telemetry/batch", content=body)
    assert r.status_code == 422 and why in r.json()["rejected"][0]["reason"]
    assert store.counts()["dead_letters"] == 1 and store.dead_letters()[0]["topic"] == "http:/telemetry/batch"


def test_batch_limits_and_device_tokens(api: tuple[Any, Store]) -> None:
    client, store = api
    one = {
        "device_id": "bus-2",
        "kind": "event",
        "message": json.loads(event("bus-2", n=4).model_dump_json()),
    }
    mixed = [{**one, "device_id": "bus-1", "message": json.loads(event(n=4).model_dump_json())}, one]
    r = client.post("/telemetry/batch", content=json.dumps(mixed), headers=_as(BUS1))
    assert r.status_code == 403  # one foreign message refuses the whole batch
    too_many = client.post("/telemetry/batch", content=json.dumps([one] * 11))
    assert too_many.status_code == 413 and "ingest_max_batch" in too_many.json()["detail"]
    assert store.counts()["events"] == 0 and store.counts()["dead_letters"] == 0
