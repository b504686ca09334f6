"""Retraining end to end, on real parts: labelled fleet data from real clips in a running
`sleepsafe-sink run` (real Mosquitto, SQLite; the embedded worker it starts itself); jobs that
train, export, gate and register a candidate in MLflow; the progress stream read to its end and
resumed mid-way; a cancel, a worker killed mid-job, a sink restarted mid-job; a candidate trained
on corrupted labels refused by the gate; and a job on PostgreSQL against a real `mlflow server`."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests import fleetdata
from tests.conftest import API_TOKEN, Mosquitto, SinkProcess, _unavailable, wait_until

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
STAGES = ["dataset", "train", "export", "gate", "register"]


def sink_cli(workdir: Path, url: str, *args: str, **sets: str) -> subprocess.CompletedProcess[str]:
    base = {"state_dir": str(workdir), "store.url": url, **sets}
    argv = [a for k, v in base.items() for a in ("--set", f"{k}={v}")]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLEEPSAFE_SINK_")}
    return subprocess.run(
        [sys.executable, "-m", "cloud_sink.cli", *argv, *args],
        capture_output=True, text=True, timeout=900, check=False, env=env,
    )  # fmt: skip


def worker_once(workdir: Path, url: str, sets: dict[str, str]) -> None:
    """`sleepsafe-worker --once` (python -m trainer): run the queued jobs, then exit."""
    base = {"state_dir": str(workdir), "store.url": url, **sets}
    argv = [a for k, v in base.items() for a in ("--set", f"{k}={v}")]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLEEPSAFE_SINK_")}
    w = subprocess.run(
        [sys.executable, "-m", "trainer", *argv, "--once"],
        capture_output=True, text=True, timeout=900, check=False, env=env,
    )  # fmt: skip
    assert w.returncode == 0, w.stderr[-3000:]


def jobs_sets(prepared: Path, clips: Path) -> dict[str, str]:
    return {
        "jobs.training_data": json.dumps([str(prepared)]),
        "jobs.clips_dir": str(clips),
        "jobs.temporal_steps": "60",
        "jobs.heartbeat_s": "0.5",
        "jobs.stale_after_s": "4",
        "jobs.poll_s": "0.2",
    }


@pytest.fixture(scope="module")
def loop(clips: Path, prepared: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    if shutil.which("mosquitto") is None and not Path("/usr/sbin/mosquitto").exists():
        _unavailable("mosquitto is not installed (make test installs it)")
    tmp = tmp_path_factory.mktemp("loop")
    url = f"sqlite:///{tmp / 'sink' / 'sink.sqlite3'}"
    (tmp / "sink").mkdir()
    fleet = fleetdata.build(url, clips, tmp / "cars", eye_crops=True)
    assert fleet["labels"].get("confirmed") and fleet["labels"].get("false_alarm"), fleet["labels"]
    broker = Mosquitto(tmp / "broker")
    broker.start()
    sets = jobs_sets(prepared, clips)
    sink = SinkProcess(tmp / "sink", broker.port, url, **sets)
    sink.start(frozenset({"sink_api_listening", "sink_subscribed", "worker_started"}))
    try:
        yield {
            "sink": sink,
            "url": url,
            "tmp": tmp,
            "sets": sets,
            "fleet": fleet,
            "base": f"http://127.0.0.1:{sink.port}",
        }
    finally:
        sink.stop()
        broker.stop()


def post_job(loop: dict[str, Any], model: str = "temporal", **params: Any) -> dict[str, Any]:
    r = httpx.post(
        f"{loop['base']}/jobs", json={"kind": "retrain", "model": model, "params": params}, headers=AUTH
    )
    assert r.status_code == 201, r.text
    job: dict[str, Any] = r.json()
    return job


def get_job(loop: dict[str, Any], job_id: str) -> dict[str, Any]:
    r = httpx.get(f"{loop['base']}/jobs/{job_id}", headers=AUTH)
    r.raise_for_status()
    out: dict[str, Any] = r.json()
    return out


def wait_for_state(
    loop: dict[str, Any], job_id: str, states: tuple[str, ...], timeout: float = 300
) -> dict[str, Any]:
    box: dict[str, Any] = {}

    def done() -> bool:
        box["job"] = get_job(loop, job_id)
        return box["job"]["state"] in states

    wait_until(done, f"job {job_id} to be {'/'.join(states)}", timeout, every=0.25)
    return box["job"]


def wait_for_training(loop: dict[str, Any], job_id: str) -> dict[str, Any]:
    box: dict[str, Any] = {}

    def training() -> bool:
        box["job"] = get_job(loop, job_id)
        p = box["job"]["progress"]
        return bool(p and p["stage"] == "train" and p["done"] >= 2)

    wait_until(training, f"job {job_id} to be training", 120, every=0.25)
    return box["job"]


def mlflow_client(loop: dict[str, Any]) -> Any:
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{loop['tmp'] / 'sink' / 'mlflow' / 'mlflow.db'}"
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def test_retrain_wait_trains_exports_registers_and_gates_a_candidate(loop: dict[str, Any]) -> None:
    p = sink_cli(loop["tmp"] / "sink", loop["url"], "retrain", "--model", "temporal", "--wait", "--json")
    assert p.returncode == 0, p.stderr[-3000:]
    events = [json.loads(line) for line in p.stdout.splitlines()]
    ids = [e["id"] for e in events]
    assert ids == sorted(set(ids)), "event ids are strictly increasing"
    assert [e["data"]["stage"] for e in events if e["kind"] == "stage"] == STAGES
    steps = [e["data"]["done"] for e in events if e["kind"] == "progress"]
    assert steps and steps[-1] == 60 and steps == sorted(steps)
    assert [e["data"]["state"] for e in events if e["kind"] == "state"] == ["queued", "running", "succeeded"]
    job_id = events[0]["job_id"]
    assert {e["job_id"] for e in events} == {job_id}
    job = get_job(loop, job_id)
    result = job["result"]
    assert job["state"] == "succeeded" and result["model"] == "sleepsafe-temporal"
    dataset = next(e["data"] for e in events if e["kind"] == "dataset")
    assert dataset["events"] == sum(loop["fleet"]["labels"].values())
    assert result["dataset_id"] == dataset["dataset_id"]

    # The gate: both models measured on the same held-out data, every check stated.
    gate = next(e["data"] for e in events if e["kind"] == "gate")
    assert {c["check"].split(" (")[0] for c in gate["checks"]} == {
        "closure alarms outside closed ranges", "closed ranges alarmed", "blink F1", "balanced accuracy",
    }  # fmt: skip
    assert gate["passed"] == all(c["ok"] for c in gate["checks"]) == result["challenger"]
    assert (gate["summary"] == "passed") == gate["passed"]

    # GET /models shows the version, its gate and, only if it passed, @challenger.
    models = {m["name"]: m for m in httpx.get(f"{loop['base']}/models", headers=AUTH).json()}
    versions = {v["version"]: v for v in models["sleepsafe-temporal"]["versions"]}
    v = versions[result["version"]]
    assert v["gate"]["passed"] == gate["passed"] and v["tags"]["job_id"] == job_id
    assert ("challenger" in v["aliases"]) == gate["passed"]
    assert versions["1"]["aliases"] == ["champion"]  # nothing here moves the champion
    assert v["metrics"]["gate.balanced_accuracy"] == next(
        c["candidate"] for c in gate["checks"] if c["check"].startswith("balanced accuracy")
    )

    # MLflow: parameters, the loss as it went, the dataset, the files, the gate.
    client = mlflow_client(loop)
    run = client.get_run(result["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["dataset_id"] == dataset["dataset_id"] and run.data.params["model"] == "temporal"
    assert (run.data.params["steps"], run.data.params["seed"]) == ("60", "11")  # the defaults it ran with
    assert len(client.get_metric_history(run.info.run_id, "train_loss")) >= 10
    arts = {a.path for a in client.list_artifacts(run.info.run_id)} | {
        a.path for a in client.list_artifacts(run.info.run_id, "model")
    }
    assert {"gate.json", "model/temporal.onnx", "model/temporal.json", "dataset", "training"} <= arts
    card = json.loads(
        Path(client.download_artifacts(run.info.run_id, "model/temporal.json", str(loop["tmp"]))).read_text()
    )
    assert card["sha256"] == v["tags"]["sha256"] and card["version"] == result["onnx_version"]
    assert card["parity_max_abs_diff_vs_torch"] <= card["parity_tolerance"]

    health = httpx.get(f"{loop['base']}/health").json()
    assert health["jobs"]["worker"] == "alive" and health["status"] == "ok", health
    # The new version scores over /predict like any other.
    r = httpx.post(
        f"{loop['base']}/predict?model=sleepsafe-temporal/{result['version']}",
        json={"windows": [[[1.0, 0.3, 0.1, 0.0, 1.0, 0.1, 0.033]] * 5]},
        headers=AUTH,
    )
    assert r.status_code == 200 and len(r.json()["outputs"][0]["closed"]) == 5, r.text


def test_backtest_on_the_held_out_vehicles_agrees_with_what_the_gate_measured(loop: dict[str, Any]) -> None:
    """Every vehicle held out (held_out_share 1): the gate scores the candidate and the champion
    on the fleet's labelled events too, and `sleepsafe-sink backtest --held-out` replays the
    same events through /predict's scoring path: the same figures."""
    job = post_job(loop, steps=30, held_out_share=1.0)
    done = wait_for_state(loop, job["id"], ("succeeded", "failed"))
    assert done["state"] == "succeeded", done["error"]
    client = mlflow_client(loop)
    gate = json.loads(
        Path(client.download_artifacts(done["result"]["run_id"], "gate.json", str(loop["tmp"]))).read_text()
    )
    ref = f"sleepsafe-temporal/{done['result']['version']}"
    p = sink_cli(
        loop["tmp"] / "sink", loop["url"], "backtest", "--model", ref, "--held-out", "--json", **loop["sets"]
    )
    assert p.returncode == 0, p.stderr[-2000:]
    bt = json.loads(p.stdout)
    held = json.loads(client.get_run(done["result"]["run_id"]).data.params["held_out_devices"])
    assert bt["vehicles"] == held and len(held) == 1 and bt["held_out_only"]  # one of the two kept to train
    for side in ("candidate", "champion"):
        fleet = gate[side]["figures"]["model_fleet"]
        assert bt[side]["balanced_accuracy"] == fleet["balanced_accuracy"], side
        assert bt[side]["frames"] == fleet["open"] + fleet["closed"], side
    assert bt["champion"]["version"] == "1" and bt["candidate"]["events"] >= 2
    text = sink_cli(
        loop["tmp"] / "sink", loop["url"], "backtest", "--model", ref, "--since", "30d", **loop["sets"]
    )
    assert text.returncode == 0 and "sleepsafe-temporal@champion (v1)" in text.stdout, text.stderr[-2000:]
    bad = sink_cli(
        loop["tmp"] / "sink", loop["url"], "backtest", "--model", "sleepsafe-temporal@nightly", **loop["sets"]
    )
    assert bad.returncode == 66 and bad.stderr.count("\n") == 1, bad.stderr


def test_an_eye_state_job_trains_on_the_vehicles_eye_crops(loop: dict[str, Any]) -> None:
    job = post_job(loop, "eye-state", epochs=1)
    done = wait_for_state(loop, job["id"], ("succeeded", "failed"))
    assert done["state"] == "succeeded", done["error"]
    result = done["result"]
    assert result["model"] == "sleepsafe-eye-state" and result["onnx_version"].endswith(job["id"][:8])
    client = mlflow_client(loop)
    report = json.loads(
        Path(
            client.download_artifacts(result["run_id"], "training/report.json", str(loop["tmp"]))
        ).read_text()
    )
    fleet_clips = [c for c in report["data"]["clips"] if c.startswith("fleet/")]
    assert fleet_clips, "the vehicles' crops were trained on"
    assert any(d.get("dataset_id") == result["dataset_id"] for d in report["datasets"])
    gate = {c["check"].split(" (")[0]: c for c in result["gate"]["checks"]}
    assert gate["balanced accuracy"]["check"].endswith("(crops)")
    mv = client.get_model_version("sleepsafe-eye-state", result["version"])
    assert ("challenger" in (client.get_registered_model("sleepsafe-eye-state").aliases or {})) == result[
        "challenger"
    ]
    assert mv.tags["gate"] == ("passed" if result["challenger"] else "refused")


def _read_sse(
    url: str, limit: int | None = None, last_event_id: int | None = None, timeout: float = 300
) -> list[dict[str, Any]]:
    """The job's server-sent events as an EventSource client reads them (keep-alive comments
    skipped), stopping after ``limit``."""
    from httpx_sse import connect_sse

    headers = dict(AUTH) if last_event_id is None else {**AUTH, "Last-Event-ID": str(last_event_id)}
    out: list[dict[str, Any]] = []
    with httpx.Client(timeout=timeout) as client, connect_sse(client, "GET", url, headers=headers) as source:
        assert source.response.headers["content-type"].startswith("text/event-stream")
        for sse in source.iter_sse():
            if not sse.data:
                # A keep-alive ": ping" block: httpx-sse hands it on with the last id, where
                # the spec (and a browser's EventSource) dispatches nothing with no data.
                continue
            out.append({"id": int(sse.id), "event": sse.event, "data": sse.json()})
            if limit is not None and len(out) >= limit:
                break
    return out


def test_the_progress_stream_resumes_with_last_event_id_without_gap_or_duplicate(
    loop: dict[str, Any],
) -> None:
    job = post_job(loop, steps=60)
    url = f"{loop['base']}/jobs/{job['id']}/events"
    first = _read_sse(url, limit=4, timeout=60)
    assert [e["event"] for e in first[:2]] == ["state", "state"]  # queued, then running
    rest = _read_sse(url, last_event_id=first[-1]["id"])
    got = [e["id"] for e in first + rest]
    assert got == sorted(set(got)), "no duplicate, in order"
    from cloud_sink.jobs.queue import JobQueue
    from cloud_sink.store import Store

    store = Store(loop["url"])
    stored = [e["id"] for e in JobQueue(store).events(job["id"])]
    store.close()
    assert got == stored, "no gap: every stored event was sent once"
    assert rest[-1]["event"] == "state" and rest[-1]["data"]["data"]["state"] == "succeeded"


def test_a_cancel_takes_effect_within_seconds(loop: dict[str, Any]) -> None:
    job = post_job(loop, steps=20_000)
    wait_for_training(loop, job["id"])
    r = httpx.delete(f"{loop['base']}/jobs/{job['id']}", headers=AUTH)
    assert r.status_code == 200 and r.json()["cancel_requested"]
    done = wait_for_state(loop, job["id"], ("cancelled", "failed", "succeeded"), timeout=10)
    assert done["state"] == "cancelled" and done["result"] is None
    run_id = next(e["data"]["run_id"] for e in _events(loop, job["id"]) if e["kind"] == "mlflow")
    assert mlflow_client(loop).get_run(run_id).info.status == "KILLED"


def _events(loop: dict[str, Any], job_id: str) -> list[dict[str, Any]]:
    return [
        {"kind": e["event"], **e["data"]}
        for e in _read_sse(f"{loop['base']}/jobs/{job_id}/events", timeout=60)
    ]


def test_the_dashboard_shows_jobs_with_their_progress_and_the_models_gate(loop: dict[str, Any]) -> None:
    """Headless Chromium on the dashboard while a job trains: its row is running with a
    progress bar part-way; the registered versions show their aliases and gate verdicts."""
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(chromium).exists():
        _unavailable("Debian's chromium is not installed (make test installs it)")
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright

    from tests.conftest import launch_chromium

    if not httpx.get(f"{loop['base']}/jobs?state=succeeded", headers=AUTH).json():  # run alone
        wait_for_state(loop, post_job(loop, steps=30)["id"], ("succeeded",))
    job = post_job(loop, steps=3000)
    wait_for_training(loop, job["id"])
    try:
        with sync_playwright() as p:
            browser = launch_chromium(p, chromium)
            page = browser.new_page()
            problems: list[str] = []
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.goto(f"{loop['base']}/ui#token={API_TOKEN}")
            try:
                page.wait_for_function(
                    "[...document.querySelectorAll('#jobs tr[data-state=running] progress')]"
                    ".some(b => b.value > 0 && b.value < 1)",
                    timeout=30_000,
                )
            except PlaywrightTimeout:
                raise AssertionError(
                    f"{page.inner_text('#error')} {problems} {page.inner_html('#jobs')[:800]}"
                ) from None
            page.wait_for_function("Number(document.body.dataset.models) >= 3", timeout=30_000)
            rows = page.eval_on_selector_all(
                "#models tbody tr", "rs => rs.map(r => [...r.cells].map(c => c.textContent))"
            )
            succeeded = page.eval_on_selector_all(
                "#jobs tr[data-state=succeeded] progress", "bs => bs.map(b => b.value)"
            )
            browser.close()
    finally:
        httpx.delete(f"{loop['base']}/jobs/{job['id']}", headers=AUTH)
        wait_for_state(loop, job["id"], ("cancelled", "failed", "succeeded"), timeout=30)
    temporal = {r[1]: r for r in rows if r[0] == "sleepsafe-temporal"}
    assert temporal["1"][2] == "@champion" and temporal["1"][4] == "shipped"
    assert any(r[4].startswith(("passed", "refused")) for r in temporal.values()), rows
    assert succeeded and all(v == 1 for v in succeeded)


def test_a_killed_worker_is_found_and_its_job_retried_once(loop: dict[str, Any]) -> None:
    """The sink sees its worker die and gives the job up at once (no other worker is there to
    find the stale heartbeat first); the restarted worker runs the second attempt."""
    job = post_job(loop, steps=150)
    running = wait_for_training(loop, job["id"])
    pid = int(running["worker"].rsplit(":", 1)[1])
    os.kill(pid, signal.SIGKILL)  # no chance to hand the job back
    done = wait_for_state(loop, job["id"], ("succeeded", "failed"), timeout=300)
    assert done["state"] == "succeeded" and done["attempts"] == 2, done
    states = [e["data"] for e in _events(loop, job["id"]) if e["kind"] == "state"]
    assert [s["state"] for s in states] == ["queued", "running", "queued", "running", "succeeded"]
    assert (
        states[2]["reason"]
        == f"worker {running['worker']} lost: its process {pid} died (exit code -9) (attempt 1)"
    )
    assert any(r.get("event") == "jobs_worker_died" for r in loop["sink"].log)  # and was restarted


def test_a_sink_restarted_mid_job_resumes_the_job(loop: dict[str, Any]) -> None:
    sink: SinkProcess = loop["sink"]
    job = post_job(loop, steps=120)
    wait_for_training(loop, job["id"])
    assert sink.stop() == 0
    from cloud_sink.jobs.queue import JobQueue
    from cloud_sink.store import Store

    store = Store(loop["url"])
    handed_back = JobQueue(store).get(job["id"])
    store.close()
    assert handed_back["state"] == "queued" and handed_back["attempts"] == 0  # released, not lost
    sink.start(frozenset({"sink_api_listening", "sink_subscribed", "worker_started"}))
    loop["base"] = f"http://127.0.0.1:{sink.port}"
    done = wait_for_state(loop, job["id"], ("succeeded", "failed"), timeout=300)
    assert done["state"] == "succeeded" and done["attempts"] == 1, done
    states = [e["data"] for e in _events(loop, job["id"]) if e["kind"] == "state"]
    assert [s["state"] for s in states] == ["queued", "running", "queued", "running", "succeeded"]
    assert "worker stopped" in states[2]["reason"]


def test_a_candidate_trained_on_corrupted_labels_is_refused_by_the_gate(
    loop: dict[str, Any], tmp_path: Path
) -> None:
    """A copy of the sink's data where every confirmed closure is called a false alarm and every
    false alarm a closure (the blinks set aside as unsure); trained on the fleet data alone, every
    vehicle training (held_out_share 0), the candidate is refused."""
    from cloud_sink.store import Store

    work = tmp_path / "sink"
    work.mkdir()
    shutil.copy(loop["tmp"] / "sink" / "sink.sqlite3", work / "sink.sqlite3")
    url = f"sqlite:///{work / 'sink.sqlite3'}"
    store = Store(url)
    flip = {"confirmed": "false_alarm", "false_alarm": "confirmed"}
    flipped = 0
    for r in store.labelled_events(labels=tuple(flip), types=fleetdata.LABELLED_TYPES):
        new = "unsure" if r["type"] == "blink" else flip[r["label"]]
        store.label_event(r["event_id"], new, "saboteur", "wrong on purpose", token="test")
        flipped += new != "unsure"
    store.close()
    assert flipped >= 2
    sets = {**loop["sets"], "jobs.temporal_steps": "400"}
    from cloud_sink.jobs.queue import JobQueue

    store = Store(url)
    JobQueue(store).submit("retrain", "temporal", {"fleet_only": True, "held_out_share": 0}, "test")
    store.close()
    worker_once(work, url, sets)
    listed = sink_cli(work, url, "models", "list", "--json", **sets)
    assert listed.returncode == 0, listed.stderr
    temporal = next(m for m in json.loads(listed.stdout) if m["name"] == "sleepsafe-temporal")
    newest = temporal["versions"][0]
    assert newest["version"] != "1" and newest["gate"]["passed"] is False, newest["gate"]
    assert newest["gate"]["summary"].startswith("refused") and "challenger" not in newest["aliases"]
    refused = {c["check"].split(" (")[0] for c in newest["gate"]["checks"] if not c["ok"]}
    assert refused, newest["gate"]
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{work / 'mlflow' / 'mlflow.db'}"
    run = MlflowClient(tracking_uri=uri).get_run(newest["run_id"])
    assert run.data.params["held_out_devices"] == "[]"  # every vehicle trained, on the flipped labels


@pytest.fixture
def mlflow_server(tmp_path: Path) -> Iterator[str]:
    exe = Path(sys.executable).parent / "mlflow"
    if not exe.exists():
        _unavailable("mlflow is not installed (make test installs it)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [str(exe), "server", "--backend-store-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
         "--artifacts-destination", str(tmp_path / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    uri = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return httpx.get(f"{uri}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return proc.poll() is not None

    wait_until(up, "mlflow server to answer", 120)
    assert proc.poll() is None, "mlflow server exited"
    yield uri
    proc.terminate()
    proc.wait(30)


def test_a_job_on_postgresql_through_procrastinate_records_into_a_real_mlflow_server(
    postgres: Any, mlflow_server: str, clips: Path, prepared: Path, tmp_path: Path
) -> None:
    from mlflow.tracking import MlflowClient

    url = postgres.new_database()
    fleet = fleetdata.build(url, clips, tmp_path / "cars")
    sets = {
        **jobs_sets(prepared, clips),
        "jobs.temporal_steps": "30",
        "jobs.engine": "procrastinate",  # the scale-out engine, on the same PostgreSQL
        "mlflow.tracking_uri": mlflow_server,
    }
    q = sink_cli(tmp_path, url, "retrain", "--model", "temporal", "--json", **sets)
    assert q.returncode == 0, q.stderr
    job_id = json.loads(q.stdout)["id"]
    worker_once(tmp_path, url, sets)
    from cloud_sink.jobs.queue import JobQueue
    from cloud_sink.store import Store

    store = Store(url)
    job = JobQueue(store).get(job_id)
    store.close()
    assert job["state"] == "succeeded", job["error"]
    client = MlflowClient(tracking_uri=mlflow_server, registry_uri=mlflow_server)
    assert client.get_model_version_by_alias("sleepsafe-temporal", "champion").version == "1"
    mv = client.get_model_version("sleepsafe-temporal", job["result"]["version"])
    assert mv.run_id == job["result"]["run_id"] and mv.tags["dataset_id"] == job["result"]["dataset_id"]
    assert mv.run_id is not None
    run = client.get_run(mv.run_id)
    assert int(run.data.params["dataset_events"]) == sum(fleet["labels"].values())
    assert not (tmp_path / "mlflow").exists(), "nothing went to the local default store"


def test_a_job_whose_mlflow_is_unreachable_fails_with_the_reason(
    loop: dict[str, Any], tmp_path: Path
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    work = tmp_path / "sink"
    work.mkdir()
    shutil.copy(loop["tmp"] / "sink" / "sink.sqlite3", work / "sink.sqlite3")
    url = f"sqlite:///{work / 'sink.sqlite3'}"
    sets = {**loop["sets"], "mlflow.tracking_uri": f"http://127.0.0.1:{port}", "mlflow.timeout_s": "2"}
    q = sink_cli(work, url, "retrain", "--model", "temporal", "--json", **sets)
    job_id = json.loads(q.stdout)["id"]
    t0 = time.monotonic()
    worker_once(work, url, sets)
    from cloud_sink.jobs.queue import JobQueue
    from cloud_sink.store import Store

    store = Store(url)
    job = JobQueue(store).get(job_id)
    store.close()
    assert job["state"] == "failed" and f"MLflow at http://127.0.0.1:{port}" in job["error"], job["error"]
    assert "\n" not in job["error"] and time.monotonic() - t0 < 120
