"""Labels on events: the store, the API and `sleepsafe-sink label`, on SQLite and PostgreSQL.

Every label is a new row (the audit trail: who, when, the label it replaced); an unknown event
is a 404 (or exit 66), an unknown label a 422, and nothing of it is ever a 500.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cloud_sink.store import Store, UnknownEvent
from sleepsafe.protocol import FeatureSample
from tests.test_sink import event, wire

API_TOKEN = "label-token-0123456789"


def _alert(store: Store, n: int = 0) -> str:
    """A microsleep stored as a vehicle sends it: raised, then ended, with a feature window."""
    window = [
        FeatureSample(
            t_ms=33 * i, frame=i, face=True, ear=0.1, ear_left=0.1, ear_right=0.1, openness=0.3,
            mar=0.1, yaw=0.0, pitch=-2.0, roll=0.0, iris_vis=0.2,
        )
        for i in range(5)
    ]  # fmt: skip
    raised = event(n=n, features=window)
    store.write([wire("event", raised), wire("event", event(n=n, phase="ended", features=window))])
    return str(raised.event_id)


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    s = Store(db_url)
    yield s
    s.close()


def test_labels_are_kept_with_what_they_replaced(store: Store) -> None:
    eid = _alert(store)
    first = store.label_event(eid, "confirmed", "alice", "eyes shut on the crop")
    assert first["previous"] is None and first["labeller"] == "alice"
    second = store.label_event(eid, "false_alarm", "bob@fleet.example")
    assert second["previous"] == "confirmed"
    got = store.event(eid)
    assert got["label"] == "false_alarm"
    assert [(x["label"], x["previous"], x["labeller"]) for x in got["labels"]] == [
        ("confirmed", None, "alice"),
        ("false_alarm", "confirmed", "bob@fleet.example"),
    ]
    assert got["labels"][0]["note"] == "eyes shut on the crop" and got["labels"][0]["time"].endswith("Z")
    assert [r["phase"] for r in got["records"]] == ["raised", "ended"]
    assert got["records"][0]["window"]["t_ms"] == [0, 33, 33, 33, 33]  # the window, as columns
    assert store.counts()["event_labels"] == 2


def test_a_label_needs_a_known_event_and_a_known_label(store: Store) -> None:
    eid = _alert(store)
    with pytest.raises(UnknownEvent):
        store.label_event(str(uuid.uuid4()), "confirmed", "alice")
    with pytest.raises(UnknownEvent):
        store.event(str(uuid.uuid4()))
    with pytest.raises(ValueError, match="unknown label 'maybe'"):
        store.label_event(eid, "maybe", "alice")
    assert store.counts()["event_labels"] == 0


@pytest.fixture
def api(db_url: str, tmp_path: Path) -> Iterator[tuple[Any, Store]]:
    from fastapi.testclient import TestClient

    from cloud_sink.api import create_app
    from cloud_sink.config import load_sink_config

    cfg = load_sink_config(
        None, {"state_dir": str(tmp_path), "store": {"url": db_url}, "api": {"tokens": [API_TOKEN]}}
    )
    s = Store(cfg.database_url())
    with TestClient(create_app(cfg, s)) as client:
        client.headers["Authorization"] = f"Bearer {API_TOKEN}"
        yield client, s
    s.close()


def test_label_through_the_api(api: tuple[Any, Store]) -> None:
    client, store = api
    eid = _alert(store)
    r = client.post(
        f"/events/{eid}/label", json={"label": "confirmed", "labeller": "alice", "note": "asleep"}
    )
    assert r.status_code == 201, r.text
    assert r.json()["label"] == "confirmed" and r.json()["previous"] is None
    import hashlib

    assert r.json()["token"] == hashlib.sha256(API_TOKEN.encode()).hexdigest()[:16]  # the audit's "who"
    r = client.post(f"/events/{eid.upper()}/label", json={"label": "unsure", "labeller": "bob"})
    assert r.status_code == 201 and r.json()["previous"] == "confirmed"  # ids in any case
    got = client.get(f"/events/{eid}").json()
    assert got["label"] == "unsure" and len(got["labels"]) == 2 and got["type"] == "microsleep"


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/events/{unknown}/label", {"label": "confirmed", "labeller": "alice"}, 404),
        ("/events/{eid}/label", {"label": "maybe", "labeller": "alice"}, 422),
        ("/events/{eid}/label", {"label": "confirmed"}, 422),  # who says so
        ("/events/{eid}/label", {"label": "confirmed", "labeller": "alice", "extra": 1}, 422),
        ("/events/{eid}/label", {"label": "confirmed", "labeller": "a\u0000b"}, 422),
        ("/events/{eid}/label", {"label": "confirmed", "labeller": "alice", "note": "x" * 501}, 422),
        ("/events/not-a-uuid/label", {"label": "confirmed", "labeller": "alice"}, 422),
    ],
)
def test_bad_labels_are_refused_with_the_reason(
    api: tuple[Any, Store], path: str, body: dict[str, Any], status: int
) -> None:
    client, store = api
    eid = _alert(store)
    r = client.post(path.format(eid=eid, unknown=uuid.uuid4()), json=body)
    assert r.status_code == status, r.text
    assert store.counts()["event_labels"] == 0
    assert client.get(f"/events/{uuid.uuid4()}").status_code == 404
    assert client.post(f"/events/{eid}/label", json=body, headers={"Authorization": ""}).status_code == 401


def _sink(db_url: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "cloud_sink.cli",
            "--set",
            f"state_dir={tmp_path}",
            "--set",
            f"store.url={db_url}",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_label_from_the_command_line(store: Store, db_url: str, tmp_path: Path) -> None:
    eid = _alert(store)
    p = _sink(
        db_url,
        tmp_path,
        "label",
        eid,
        "--as",
        "false_alarm",
        "--by",
        "carol",
        "--note",
        "sun glare",
        "--json",
    )
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout) | {"time": None} == {
        "event_id": eid, "label": "false_alarm", "previous": None, "note": "sun glare", "labeller": "carol",
        "token": "cli", "time": None,
    }  # fmt: skip
    p = _sink(db_url, tmp_path, "label", eid, "--as", "confirmed", "--by", "dave")
    assert p.returncode == 0 and p.stdout.strip() == f"{eid}: confirmed (was false_alarm), by dave"
    missing = _sink(db_url, tmp_path, "label", str(uuid.uuid4()), "--as", "confirmed")
    assert missing.returncode == 66 and missing.stderr.count("\n") == 1 and "no event" in missing.stderr
    bad = _sink(db_url, tmp_path, "label", "nope", "--as", "confirmed")
    assert bad.returncode == 2 and "not an event id" in bad.stderr
    assert store.event(eid)["label"] == "confirmed"
