"""Retention on the sink, on real SQLite and PostgreSQL: `Store.prune` deletes by the sink's own
storage time, in batches that are each their own transaction; `sleepsafe-sink prune`; the
background pruner of `run`."""

from __future__ import annotations

import json
import signal
import socket
import threading
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event as sa_event
from sqlalchemy import select, text
from structlog.testing import capture_logs

from cloud_sink import schema
from cloud_sink.config import load_sink_config
from cloud_sink.store import Store, now_utc
from cloud_sink.validate import Rejected, Valid, validate
from tests.conftest import wait_until
from tests.test_sink import event, status, telemetry, wire

NOW = datetime(2026, 11, 23, 12, 0)  # naive UTC, as stored
DEFAULTS = {"events": 365, "telemetry": 90, "status_log": 90, "dead_letters": 30}


def dead(n: int) -> Valid | Rejected:
    """A distinct dead letter (its own payload, so its own digest)."""
    return validate("sleepsafe/v1/bus-1/event", f"\x00garbage {n}".encode(), 65536)


def event_ids(store: Store) -> set[str]:
    with store.engine.connect() as conn:
        return {f"{r.event_id}/{r.phase}" for r in conn.execute(select(schema.events))}


def eid(n: int, phase: str = "raised", device: str = "bus-1") -> str:
    return f"{uuid.uuid5(uuid.NAMESPACE_URL, f'{device}/{n}')}/{phase}"


def fill(store: Store, now: datetime = NOW) -> None:
    """Old and new rows in every table, stored at known times (``Store.write(now=)`` is the
    sink's clock, which retention goes by)."""
    # events: 7 stored 400 days ago, 1 exactly at the 365-day cutoff, 3 stored 10 days ago
    # whose own start_time is 3 years old (a vehicle with a bad clock: kept, by stored_at).
    store.write([wire("event", event(n=n)) for n in range(7)], now=now - timedelta(days=400))
    store.write([wire("event", event(n=7))], now=now - timedelta(days=365))
    store.write(
        [wire("event", event(n=n, start_time=now - timedelta(days=1100))) for n in range(10, 13)],
        now=now - timedelta(days=10),
    )
    # telemetry: 5 stored 100 days ago, 4 yesterday
    store.write([wire("telemetry", telemetry(n=n)) for n in range(5)], now=now - timedelta(days=100))
    store.write([wire("telemetry", telemetry(n=n)) for n in range(5, 9)], now=now - timedelta(days=1))
    # status_log: 2 stored 200 days ago, 1 yesterday
    store.write(
        [wire("status", status("bus-1", "online", 1)), wire("status", status("bus-1", "stopped", 1))],
        now=now - timedelta(days=200),
    )
    store.write([wire("status", status("bus-1", "online", 2))], now=now - timedelta(days=1))
    # dead letters: 3 last seen 40 days ago, one of them seen again yesterday, and 2 new ones
    store.write([dead(0), dead(1), dead(2)], now=now - timedelta(days=40))
    store.write([dead(2), dead(3), dead(4)], now=now - timedelta(days=1))


EXPECTED = {"events": 7, "telemetry": 5, "status_log": 2, "dead_letters": 2}


def test_prune_deletes_what_is_older_than_its_retention_by_stored_at(db_url: str) -> None:
    store = Store(db_url)
    try:
        fill(store)
        # A label on an event that retention would remove: labels are the fleet's training data,
        # so neither they nor the labelled event's rows are pruned.
        pruned = sorted(event_ids(store) - {eid(7), eid(10), eid(11), eid(12)})[0]
        store.label_event(pruned.split("/")[0], "confirmed", "ops")
        before = store.counts()
        assert before == {
            "events": 11, "telemetry": 9, "devices": 1, "status_log": 3, "dead_letters": 5, "event_labels": 1,
        }  # fmt: skip

        expected = {**EXPECTED, "events": EXPECTED["events"] - 1}  # the labelled one stays
        assert store.prune(now=NOW, dry_run=True) == expected  # the configured defaults
        assert store.counts() == before, "a dry run deleted something"

        assert store.prune(now=NOW) == expected
        assert store.counts() == {
            "events": 5,
            "telemetry": 4,
            "devices": 1,
            "status_log": 1,
            "dead_letters": 3,
            "event_labels": 1,
        }
        # The boundary row (exactly 365 days) stays; the badly clocked but fresh rows stay.
        assert event_ids(store) == {eid(7), eid(10), eid(11), eid(12), pruned}
        with store.engine.connect() as conn:
            assert conn.execute(select(schema.status_log.c.seq)).scalars().all() == [2]
            assert sorted(conn.execute(select(schema.dead_letters.c.times_seen)).scalars()) == [1, 1, 2]
        assert store.devices()[0]["device_id"] == "bus-1"  # devices are never pruned

        assert store.prune(now=NOW) == dict.fromkeys(EXPECTED, 0)  # nothing left to do
        # An aware `now` means the same instant.
        assert store.prune(now=NOW.replace(tzinfo=timezone.utc), dry_run=True) == dict.fromkeys(EXPECTED, 0)
    finally:
        store.close()


def test_prune_retention_per_table_and_forever(db_url: str) -> None:
    store = Store(db_url)
    try:
        fill(store)
        # 0 and None keep a table forever; a shorter retention reaches the newer rows too.
        keep = {"events": 0, "telemetry": None, "status_log": 0.5, "dead_letters": 0}
        assert store.prune(now=NOW, dry_run=True, retain=keep) == {
            "events": 0,
            "telemetry": 0,
            "status_log": 3,
            "dead_letters": 0,
        }
        assert store.prune(now=NOW, retain={"events": 5}) == {
            "events": 11,
            "telemetry": 0,
            "status_log": 0,
            "dead_letters": 0,
        }
        assert store.counts()["events"] == 0 and store.counts()["telemetry"] == 9
        with pytest.raises(ValueError, match="unknown tables"):
            store.prune(retain={"event": 30})
        with pytest.raises(ValueError, match=">= 0"):
            store.prune(retain={"events": -1})
        stop = threading.Event()
        stop.set()  # the sink is stopping: no batch is started
        assert store.prune(now=NOW, retain={"telemetry": 1}, stop=stop) == dict.fromkeys(EXPECTED, 0)
        assert store.counts()["telemetry"] == 9
    finally:
        store.close()


def test_prune_in_batches_each_its_own_transaction(db_url: str) -> None:
    store = Store(db_url)
    commits: list[int] = []
    try:
        old = NOW - timedelta(days=400)
        store.write([wire("event", event(n=n)) for n in range(25)], now=old)
        store.write([wire("telemetry", telemetry(n=n)) for n in range(24)], now=old)
        store.write([wire("event", event(n=n)) for n in range(100, 103)], now=NOW)
        sa_event.listen(store.engine, "commit", lambda _conn: commits.append(1))
        retain = {"events": 30, "telemetry": 30, "status_log": 0, "dead_letters": 0}
        assert store.prune(now=NOW, retain=retain, batch=4) == {
            "events": 25,
            "telemetry": 24,
            "status_log": 0,
            "dead_letters": 0,
        }
        # 25 events: 6 full batches and one of 1; 24 telemetry: 6 full and one that finds none.
        assert len(commits) == 7 + 7
        assert store.counts()["events"] == 3 and store.counts()["telemetry"] == 0
    finally:
        store.close()


def test_prune_index_on_stored_at_exists(db_url: str) -> None:
    """Migration 0002: each prune batch finds its rows by an index, not a table scan."""
    from sqlalchemy import inspect

    store = Store(db_url)
    try:
        insp = inspect(store.engine)
        for table, col in (("events", "stored_at"), ("telemetry", "stored_at"), ("status_log", "stored_at")):
            assert any(ix["column_names"] == [col] for ix in insp.get_indexes(table)), table
        assert any(ix["column_names"] == ["last_seen"] for ix in insp.get_indexes("dead_letters"))
    finally:
        store.close()


def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("SLEEPSAFE_SINK_"):
            monkeypatch.delenv(key)


def test_cli_prune_dry_run_json_and_prune(
    db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from cloud_sink.cli import main

    _clean_env(monkeypatch)
    now = now_utc()  # the CLI prunes against the real clock
    store = Store(db_url)
    try:
        fill(store, now=now)
    finally:
        store.close()
    sets = ["--set", f"state_dir={tmp_path}", "--set", f"store.url={db_url}"]

    assert main([*sets, "prune", "--dry-run", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    # The row stored exactly 365 days before `now` is past the cutoff by the time the CLI runs.
    assert out == {"dry_run": True, "rows": EXPECTED | {"events": 8}, "retain_days": DEFAULTS}

    # Configured retention, applied for real; the text form names each table.
    args = [*sets, "--set", "store.retain_days.events=0", "--set", "store.prune_batch=2"]
    assert main([*args, "prune"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        "events: deleted 0 (kept forever)",
        "telemetry: deleted 5 (stored_at older than 90 days)",
        "status_log: deleted 2 (stored_at older than 90 days)",
        "dead_letters: deleted 2 (last_seen older than 30 days)",
    ]
    assert main([*args, "prune", "--dry-run"]) == 0
    assert "telemetry: would delete 0 (stored_at older than 90 days)" in capsys.readouterr().out

    store = Store(db_url)
    try:
        assert store.counts() == {
            "events": 11,
            "telemetry": 4,
            "devices": 1,
            "status_log": 1,
            "dead_letters": 3,
            "event_labels": 0,
        }
    finally:
        store.close()


def test_cli_rejects_bad_retention(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from cloud_sink.cli import main

    _clean_env(monkeypatch)
    assert main(["--set", "store.retain_days.events=-1", "check-config"]) == 78
    assert "store.retain_days.events" in capsys.readouterr().err
    assert main(["--set", "store.retain_days.evnts=3", "check-config"]) == 78
    assert "evnts" in capsys.readouterr().err


def test_prune_once_logs_one_line_and_survives_a_failure(db_url: str, tmp_path: Path) -> None:
    from cloud_sink.service import prune_once

    cfg = load_sink_config(None, {"state_dir": str(tmp_path), "store": {"url": db_url}})
    store = Store(db_url)
    try:
        store.write([wire("telemetry", telemetry(n=n)) for n in range(3)], now=now_utc() - timedelta(days=91))
        with capture_logs() as logs:
            assert prune_once(cfg, store) == {"events": 0, "telemetry": 3, "status_log": 0, "dead_letters": 0}
        (line,) = [r for r in logs if r["event"] == "sink_pruned"]
        assert line["deleted"]["telemetry"] == 3 and line["total"] == 3 and line["log_level"] == "info"

        with store.engine.begin() as conn:  # a database the prune cannot work on
            conn.execute(text("DROP TABLE status_log"))
        with capture_logs() as logs:
            assert prune_once(cfg, store) is None
        (line,) = logs
        assert line["event"] == "sink_prune_failed" and line["log_level"] == "error"
        assert "status_log" in line["error"] and "\n" not in line["error"]
    finally:
        store.close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_prunes_in_the_background_and_stops_with_the_sink(tmp_path: Path) -> None:
    """`run` with its own pruner thread: a prune at start, logged, and the thread ends with the
    sink (no broker here: the ingest just keeps reconnecting meanwhile)."""
    from cloud_sink.service import serve

    cfg = load_sink_config(
        None,
        {
            "state_dir": str(tmp_path),
            "api": {"enabled": "false"},
            "mqtt": {"host": "127.0.0.1", "port": str(_closed_port())},
            "store": {"prune_interval_s": "3600"},
        },
    )
    store = Store(cfg.database_url())
    store.write([wire("event", event(n=n)) for n in range(4)], now=now_utc() - timedelta(days=366))
    store.write([wire("event", event(n=n)) for n in range(4, 6)], now=now_utc())
    check = Store(cfg.database_url(), migrate=False)
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    logs: list[Any] = []

    def on_ready(_port: Any) -> None:
        wait_until(lambda: any(r["event"] == "sink_pruned" for r in logs), "the first prune")
        signal.raise_signal(signal.SIGTERM)  # as systemd stops it

    try:
        with capture_logs() as logs:
            assert serve(cfg, store, on_ready=on_ready) == 0
        assert check.counts()["events"] == 2
        pruned = [r for r in logs if r["event"] == "sink_pruned"]
        assert len(pruned) == 1 and pruned[0]["deleted"]["events"] == 4
        assert not [t for t in threading.enumerate() if t.name == "sink-pruner"]
    finally:
        check.close()
        for s, h in saved.items():
            signal.signal(s, h)


def test_no_pruner_when_everything_is_kept_forever(tmp_path: Path) -> None:
    from cloud_sink.service import start_pruner

    zero = dict.fromkeys(DEFAULTS, "0")
    cfg = load_sink_config(None, {"state_dir": str(tmp_path), "store": {"retain_days": zero}})
    store = Store(cfg.database_url())
    try:
        with capture_logs() as logs:
            assert start_pruner(cfg, store, threading.Event()) is None
        assert [r["event"] for r in logs] == ["sink_pruner_off"]
    finally:
        store.close()
