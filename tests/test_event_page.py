"""The dashboard's event page in headless Chromium: the feature window is plotted with drawn
marks (the model's output among them), the alert list links to it, and a click on a label
button stores the label (with the one it replaced)."""

from __future__ import annotations

import shutil
import socket
import threading
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest

from cloud_sink.store import Store
from sleepsafe.protocol import FeatureSample
from tests.conftest import _unavailable, launch_chromium, wait_until
from tests.test_sink import event, wire

API_TOKEN = "page-token-0123456789"


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Store, str]]:
    import uvicorn

    from cloud_sink.api import create_app
    from cloud_sink.config import load_sink_config

    cfg = load_sink_config(None, {"state_dir": str(tmp_path), "api": {"tokens": [API_TOKEN]}})
    store = Store(cfg.database_url())
    # A closure as a vehicle in shadow mode records it: openness falling, the model agreeing.
    window = [
        FeatureSample(
            t_ms=1000 + 40 * i, frame=25 + i, face=True, ear=0.3 - 0.005 * i, ear_left=0.3, ear_right=0.3,
            openness=max(0.05, 1.0 - 0.04 * i), mar=0.1, yaw=1.0, pitch=-3.0 - 0.1 * i, roll=0.0,
            iris_vis=max(0.05, 0.7 - 0.03 * i), eye_closed=min(1.0, 0.02 * i),
        )
        for i in range(48)
    ]  # fmt: skip
    raised = event(
        n=1, features=window, start_time=datetime.now(timezone.utc), raised_time=datetime.now(timezone.utc)
    )
    import numpy as np

    from edge_agent.perception.eyecrop import encode_crops
    from sleepsafe.protocol import EyeCrops

    n, png = encode_crops([np.full((2, 24, 48), 40 + 4 * i, dtype=np.uint8) for i in range(48)])
    raised.crops = EyeCrops(frames=n, png=png)
    ended = event(n=1, phase="ended", features=window, acknowledged_ms=2500, acknowledged_via="cli")
    store.write([wire("event", raised), wire("event", ended)])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(create_app(cfg, store), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, "uvicorn to start")
    yield f"http://127.0.0.1:{port}", store, str(raised.event_id)
    server.should_exit = True
    thread.join(10)
    store.close()


def test_event_page_plots_the_window_and_labels_with_a_click(
    served: tuple[str, Store, str], tmp_path: Path
) -> None:
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(chromium).exists():
        _unavailable("Debian's chromium is not installed (make test installs it)")
    base, store, event_id = served
    store.label_event(event_id, "confirmed", "ops")
    with sync_playwright() as p:
        browser = launch_chromium(p, chromium)
        page = browser.new_page(viewport={"width": 1300, "height": 1000})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"{base}/ui#token={API_TOKEN}")
        page.wait_for_function("Number(document.body.dataset.refreshes) >= 1", timeout=30_000)
        link = page.locator(f'#alerts a[href="/ui/event/{event_id}"]')
        assert link.count() == 1
        link.click()
        page.wait_for_function("Number(document.body.dataset.loaded) >= 1", timeout=30_000)
        assert page.locator("#error").is_hidden(), page.locator("#error").text_content()
        assert page.locator("body").get_attribute("data-points") == "48"
        traces = page.locator("#chart-window .scatterlayer .trace")
        assert traces.count() == 4  # openness, iris visibility, pitch, the model's P(closed)
        assert page.locator("#chart-window .scatterlayer .trace path.js-line").count() == 4
        assert page.locator("#chart-window .legendtext").all_text_contents() == [
            "openness", "iris visibility", "pitch (°)", "model P(closed)",
        ]  # fmt: skip
        assert page.locator("#label").text_content() == "confirmed"
        assert page.locator("img.crops").evaluate("i => i.complete && i.naturalHeight") == 48 * 24
        assert "Acknowledged by the driver (cli" in (page.locator("#ack").text_content() or "")
        page.fill("#labeller", "carol")
        page.fill("#note", "sunglasses")
        page.click('button[data-label="false_alarm"]')
        page.wait_for_function("Number(document.body.dataset.loaded) >= 2", timeout=30_000)
        assert page.locator("#label").text_content() == "false_alarm"
        assert page.locator("#labels tbody tr").count() == 2
        page.screenshot(path=str(tmp_path / "event.png"), full_page=True)
        browser.close()
    assert not errors, errors
    got = store.event(event_id)
    assert [(x["label"], x["previous"], x["labeller"], x["note"]) for x in got["labels"]][-1] == (
        "false_alarm", "confirmed", "carol", "sunglasses",
    )  # fmt: skip


def test_event_page_of_a_bad_id_and_an_unknown_event(served: tuple[str, Store, str]) -> None:
    import httpx

    base, _store, _ = served
    assert httpx.get(f"{base}/ui/event/not-a-uuid").status_code == 422
    page = httpx.get(f"{base}/ui/event/00000000-0000-0000-0000-000000000000")
    assert page.status_code == 200 and "00000000-0000-0000-0000-000000000000" in page.text  # the API says 404
    assert httpx.get(f"{base}/static/event.js").status_code == 200
    assert httpx.get(f"{base}/static/../api.py").status_code == 404
