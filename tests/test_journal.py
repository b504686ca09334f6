"""The event journal is bounded: rotated by size, old rotations deleted by count and age, and
neither a rotation nor its failure ever loses or splits a record."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from edge_agent.config import EdgeConfig, JournalConfig
from edge_agent.outputs.journal import EventLog
from sleepsafe.protocol import DriverState, Event, EventType, Severity
from sleepsafe.settings import ConfigError
from tests.conftest import wait_until

DAY = 86400


def record(i: int, pad: int = 0) -> Event:
    """Event number ``i`` (its ``start_frame``); ``pad`` model-version entries of 100 characters
    make records of different sizes, up to ~4 kB."""
    now = datetime.now(timezone.utc)
    return Event(
        device_id="bus-7",
        type=EventType.BLINK,
        phase="instant",
        severity=Severity.INFO,
        state=DriverState.AWAKE,
        start_time=now,
        start_ms=i * 40,
        start_frame=i,
        is_drowsy=False,
        model_versions={f"pad{k}": "x" * 100 for k in range(pad)},
    )


def journal_files(path: Path) -> list[Path]:
    """The journal's files, oldest first: events.jsonl.N ... events.jsonl.1, events.jsonl."""
    rotated = [p for p in path.parent.glob(path.name + ".*") if p.suffix[1:].isdigit()]
    rotated.sort(key=lambda p: int(p.suffix[1:]), reverse=True)
    return [*rotated, path]


def frames_in(files: list[Path]) -> list[int]:
    """Every record's frame number, oldest file first; each line must be one whole JSON object."""
    out = []
    for f in files:
        data = f.read_bytes()
        assert not data or data.endswith(b"\n"), f"{f.name} ends inside a record"
        for line in data.splitlines():
            out.append(json.loads(line)["start_frame"])
    return out


def test_rotation_keeps_every_record_exactly_once_and_each_file_under_the_bound(tmp_path: Path) -> None:
    path = tmp_path / "state" / "events.jsonl"
    cfg = JournalConfig(max_bytes=4096, keep=1000, max_age_days=30)
    journal = EventLog(path, cfg, fsync_every=7)
    sizes = [0, 1, 3, 0, 5, 2, 0, 0, 8, 1]
    sent = list(range(900))
    for i in sent:
        journal.append(record(i, sizes[i % len(sizes)]))
        if i % 300 == 299:
            assert journal.flush()
    journal.close()

    files = journal_files(path)
    assert len(files) > 20, "the bound was never reached: nothing was rotated"
    assert frames_in(files) == sent  # every record, once, in order, across the files
    for f in files:
        assert f.stat().st_size <= cfg.max_bytes, f"{f.name}: {f.stat().st_size} bytes"
    assert journal.rotations == len(files) - 1 and journal.failed == 0
    assert journal.rotated() == files[-2::-1]  # the API lists the same files, newest first


def test_reopened_journal_counts_what_is_already_in_the_file(tmp_path: Path) -> None:
    """After a restart the size bound covers the records written before it, too."""
    path = tmp_path / "events.jsonl"
    cfg = JournalConfig(max_bytes=2048, keep=100)
    for start in (0, 30, 60):
        journal = EventLog(path, cfg)
        for i in range(start, start + 30):
            journal.append(record(i))
        journal.close()
    files = journal_files(path)
    assert frames_in(files) == list(range(90))
    assert all(f.stat().st_size <= cfg.max_bytes for f in files)


def test_only_keep_rotated_files_remain_and_they_hold_the_newest_records(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    journal = EventLog(path, JournalConfig(max_bytes=2048, keep=3))
    for i in range(600):
        journal.append(record(i, i % 4))
    journal.close()
    assert journal.rotations > 10
    files = journal_files(path)
    assert [f.name for f in files] == ["events.jsonl.3", "events.jsonl.2", "events.jsonl.1", "events.jsonl"]
    frames = frames_in(files)
    # What is left is the newest stretch, whole: the oldest files were deleted, nothing else.
    assert frames == list(range(600 - len(frames), 600))


def test_a_record_larger_than_the_bound_goes_whole_into_a_file_of_its_own(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    cfg = JournalConfig(max_bytes=1024, keep=10)
    journal = EventLog(path, cfg)
    journal.append(record(0))
    journal.append(record(1, pad=20))  # ~2.5 kB
    journal.append(record(2))
    journal.close()
    files = journal_files(path)
    assert [frames_in([f]) for f in files] == [[0], [1], [2]]
    assert files[1].stat().st_size > cfg.max_bytes
    assert files[0].stat().st_size <= cfg.max_bytes and files[2].stat().st_size <= cfg.max_bytes


def _aged(path: Path, days: float) -> None:
    then = time.time() - days * DAY
    os.utime(path, (then, then))


def test_rotated_files_older_than_max_age_are_deleted(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    for n, age in ((1, 1), (2, 29), (3, 31), (4, 400)):
        (tmp_path / f"events.jsonl.{n}").write_text('{"start_frame": 0}\n')
        _aged(tmp_path / f"events.jsonl.{n}", age)
    (tmp_path / "events.jsonl.notes").write_text("not ours\n")
    _aged(tmp_path / "events.jsonl.notes", 400)
    cfg = JournalConfig(max_bytes=1024, keep=5, max_age_days=30)

    # At start: the two older than 30 days go, the rest (and files that are not rotations) stay.
    journal = EventLog(path, cfg, prune_interval_s=0.05)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "events.jsonl",
        "events.jsonl.1",
        "events.jsonl.2",
        "events.jsonl.notes",
    ]
    # While running, with no rotation: the hourly check (here every 50 ms) finds .2 aged out.
    _aged(tmp_path / "events.jsonl.2", 31)
    wait_until(lambda: not (tmp_path / "events.jsonl.2").exists(), "the aged-out events.jsonl.2 deleted")
    assert (tmp_path / "events.jsonl.1").exists()
    journal.close()

    # At a rotation (the hourly check far off): .1 ages out, shifts to .2 and is deleted.
    journal = EventLog(path, cfg)
    assert (tmp_path / "events.jsonl.1").exists()
    _aged(tmp_path / "events.jsonl.1", 45)
    for i in range(1, 9):  # about three files' worth: no rotation falls off by count
        journal.append(record(i))
    journal.close()
    assert journal.rotations >= 1
    assert all(p.stat().st_mtime > time.time() - DAY for p in journal.rotated())
    assert frames_in(journal_files(path)) == list(range(1, 9))  # the fresh records are all there
    assert (tmp_path / "events.jsonl.notes").exists()


def test_a_failed_rotation_is_logged_once_and_journaling_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Renames in the journal's directory fail (as on a directory made read-only): every record
    still lands in the current file, one log line says so, and when renames work again the
    journal rotates as before."""
    path = tmp_path / "events.jsonl"
    real_replace = os.replace
    broken = {"on": True}

    def replace(src: Any, dst: Any) -> None:
        if broken["on"] and Path(src).parent == tmp_path:
            raise PermissionError(13, "Permission denied", str(src))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    cfg = JournalConfig(max_bytes=1024, keep=100)
    journal = EventLog(path, cfg, rotate_retry_s=0.0)
    for i in range(100):
        journal.append(record(i))
    assert journal.flush()
    assert journal.rotations == 0 and journal.rotate_failures > 10  # tried at every record ...
    assert journal.written == 100 and journal.failed == 0
    assert frames_in([path]) == list(range(100))  # ... and none was lost
    err = capsys.readouterr().err
    failed = [json.loads(x) for x in err.splitlines() if "eventlog_rotate_failed" in x]
    assert len(failed) == 1, failed  # ... but said once
    assert "Permission denied" in failed[0]["error"]

    broken["on"] = False
    for i in range(100, 130):
        journal.append(record(i))
    journal.close()
    assert journal.rotations >= 1
    assert frames_in(journal_files(path)) == list(range(130))
    assert "eventlog_rotate_recovered" in capsys.readouterr().err


def test_a_fresh_file_that_cannot_be_created_stops_the_rotation_before_any_rename(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A real failure, no patching: a directory squats on the name the fresh file is created
    under, so creating it fails; nothing is renamed and every record stays in events.jsonl."""
    path = tmp_path / "events.jsonl"
    (tmp_path / "events.jsonl.new").mkdir()
    journal = EventLog(path, JournalConfig(max_bytes=1024, keep=5), rotate_retry_s=0.0)
    for i in range(40):
        journal.append(record(i))
    assert journal.flush()
    assert journal.rotate_failures > 0 and journal.rotations == 0 and journal.rotated() == []
    assert frames_in([path]) == list(range(40))
    assert capsys.readouterr().err.count("eventlog_rotate_failed") == 1
    (tmp_path / "events.jsonl.new").rmdir()
    for i in range(40, 50):
        journal.append(record(i))
    journal.close()
    assert journal.rotations >= 1
    assert frames_in(journal_files(path)) == list(range(50))


def test_a_journal_moved_away_under_it_starts_a_fresh_file(tmp_path: Path) -> None:
    """An outside tool (or a rotation that failed half-way) moved events.jsonl: the records go on
    into the moved file until the size bound, then a fresh events.jsonl is started."""
    path = tmp_path / "events.jsonl"
    journal = EventLog(path, JournalConfig(max_bytes=2048, keep=5))
    for i in range(3):
        journal.append(record(i))
    assert journal.flush()
    moved = tmp_path / "archive.jsonl"
    os.rename(path, moved)
    for i in range(3, 20):
        journal.append(record(i))
    journal.close()
    assert path.exists() and moved.stat().st_size <= 2048
    assert frames_in([moved, *journal_files(path)]) == list(range(20))


def test_journal_section_is_configurable_and_validated(make_cfg: Callable[..., EdgeConfig]) -> None:
    cfg = make_cfg(journal={"max_bytes": "65536", "keep": "2", "max_age_days": "7"})
    assert (cfg.journal.max_bytes, cfg.journal.keep, cfg.journal.max_age_days) == (65536, 2, 7.0)
    assert make_cfg().journal.max_bytes == 16 * 1024 * 1024
    with pytest.raises(ConfigError, match=r"journal\.keep"):
        make_cfg(journal={"keep": "0"})
