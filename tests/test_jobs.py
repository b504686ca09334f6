"""Jobs without training: the gate's comparison, the queue's claims on SQLite and PostgreSQL
(a lost worker, a stale claim, a cancel, two workers racing), and the HTTP API's answers to bad
requests, the registry (shipped champions, aliases, audit) and /predict on the shipped models."""

from __future__ import annotations

import copy
import json
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cloud_sink.config import SinkConfig
from cloud_sink.jobs.queue import JobQueue, LostClaim, check_params
from cloud_sink.store import Store, now_utc
from tests.conftest import API_TOKEN
from trainer.gate import ba_noise, compare, one_blink, segments

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}


# ----------------------------------------------------------------------------- the gate


def figures(
    outside: int = 0, alarmed: int = 2, blinks: tuple[int, int, int] = (6, 0, 1), flip: int = 0
) -> dict[str, Any]:
    """Gate figures on a fixed set of 8 labelled stretches (4 open, 4 shut, 20 frames each);
    ``flip`` stretches answered wrong."""
    y = np.repeat([0, 1] * 4, 20)
    p = y.astype(float)
    for k in range(flip):
        p[k * 40 : k * 40 + 20] = 1.0  # an open stretch called shut
    tp, fp, fn = blinks
    pred = p >= 0.5
    ba = ((pred[y == 1]).mean() + (~pred[y == 0]).mean()) / 2
    return {
        "agent": {
            "closure_alarms_outside": outside,
            "closed_ranges": 2,
            "closed_ranges_alarmed": alarmed,
            "blinks": {"tp": tp, "fp": fp, "fn": fn, "f1": round(2 * tp / (2 * tp + fp + fn), 3)},
        },
        "model": {
            "unit": "frames",
            "open": 80,
            "closed": 80,
            "balanced_accuracy": round(float(ba), 4),
            "samples": {
                "y": y.tolist(),
                "p": p.tolist(),
                "segment": segments(y, np.zeros(len(y), dtype=np.int64)).tolist(),
            },
        },
    }


def verdicts(gate: dict[str, Any]) -> dict[str, bool]:
    return {c["check"].split(" (")[0]: c["ok"] for c in gate["checks"]}


def test_a_copy_of_the_champion_passes_the_gate() -> None:
    gate = compare(figures(), figures())
    assert gate["passed"] and all(verdicts(gate).values())


def test_one_closure_alarm_outside_a_closure_refuses_whatever_the_champion_did() -> None:
    gate = compare(figures(outside=1), figures(outside=1))
    assert not gate["passed"] and verdicts(gate) == {
        "closure alarms outside closed ranges": False,
        "closed ranges alarmed": True,
        "blink F1": True,
        "balanced accuracy": True,
    }


def test_one_closure_fewer_alarmed_than_the_champion_refuses() -> None:
    assert not compare(figures(alarmed=2), figures(alarmed=1))["passed"]
    assert compare(figures(alarmed=1), figures(alarmed=2))["passed"]  # better is fine


def test_blink_f1_may_fall_by_one_blink_not_by_two() -> None:
    # 7 labelled blinks: one missed moves F1 from 0.923 to 0.833 on this set.
    assert one_blink(6, 0, 1) == pytest.approx(12 / 13 - 10 / 12)
    assert compare(figures(blinks=(6, 0, 1)), figures(blinks=(5, 0, 2)))["passed"]
    assert not compare(figures(blinks=(6, 0, 1)), figures(blinks=(4, 0, 3)))["passed"]


def test_balanced_accuracy_may_fall_within_its_noise_not_beyond() -> None:
    """One of 8 stretches answered wrong is within the bootstrap's noise on so small a set; all
    four open stretches answered wrong (a model trained on flipped labels) is far beyond it."""
    champ = figures()
    one = figures(flip=1)
    assert ba_noise(champ["model"]["samples"], one["model"]["samples"]) > 0.125  # what one stretch moves BA
    assert compare(champ, one)["passed"]
    bad = compare(champ, figures(flip=4))
    assert not bad["passed"] and not verdicts(bad)["balanced accuracy"]


def test_the_gate_refuses_to_compare_different_samples() -> None:
    other = figures()
    other["model"]["samples"]["y"] = other["model"]["samples"]["y"][:-1]
    with pytest.raises(ValueError, match="different samples"):
        compare(figures(), other)


# ----------------------------------------------------------------------------- the queue


@pytest.fixture
def queue(db_url: str) -> Any:
    store = Store(db_url)
    yield JobQueue(store)
    store.close()


def test_a_job_is_claimed_once_and_finished_only_by_its_current_claim(queue: JobQueue) -> None:
    job = queue.submit("retrain", "temporal", {"steps": 5}, "test")
    assert job["state"] == "queued" and job["attempts"] == 0
    claim = queue.claim("w1")
    assert claim is not None and claim.attempt == 1 and claim.params == {"steps": 5}
    assert queue.claim("w2") is None  # nothing else queued
    assert queue.heartbeat(claim) is False
    # The worker goes silent: with one attempt left the job is queued again, and claimed anew.
    assert queue.recover_stale(-1, max_attempts=2) == [job["id"]]
    again = queue.claim("w2")
    assert again is not None and again.attempt == 2
    # The first worker wakes up: nothing it says is taken any more.
    with pytest.raises(LostClaim):
        queue.heartbeat(claim)
    with pytest.raises(LostClaim):
        queue.progress(claim, "log", {"message": "late"})
    assert queue.finish(claim, "succeeded", result={"x": 1}) is False
    assert queue.finish(again, "succeeded", result={"x": 2}) is True
    done = queue.get(job["id"])
    assert (done["state"], done["result"], done["attempts"]) == ("succeeded", {"x": 2}, 2)
    states = [e["data"]["state"] for e in queue.events(job["id"]) if e["kind"] == "state"]
    assert states == ["queued", "running", "queued", "running", "succeeded"]


def test_a_job_whose_worker_is_lost_twice_fails_with_the_reason(queue: JobQueue) -> None:
    job = queue.submit("retrain", "eye-state", {}, "test")
    for _ in range(2):
        assert queue.claim("w") is not None
        queue.recover_stale(-1, max_attempts=2)
    got = queue.get(job["id"])
    assert got["state"] == "failed" and "lost" in got["error"] and "attempt 2" in got["error"]
    assert queue.claim("w") is None


def test_a_released_job_does_not_use_up_an_attempt(queue: JobQueue) -> None:
    job = queue.submit("retrain", "temporal", {}, "test")
    claim = queue.claim("w")
    assert claim is not None
    queue.release(claim, "worker stopped")
    assert queue.get(job["id"])["state"] == "queued" and queue.get(job["id"])["attempts"] == 0


def test_cancel_a_queued_job_at_once_and_a_running_one_at_its_heartbeat(queue: JobQueue) -> None:
    a = queue.submit("retrain", "temporal", {}, "test")
    b = queue.submit("retrain", "temporal", {}, "test")
    claim = queue.claim("w")
    assert claim is not None and claim.job_id == a["id"]  # oldest first
    assert queue.cancel(b["id"])["state"] == "cancelled"
    assert queue.cancel(a["id"])["state"] == "running"  # asked; the worker stops it
    assert queue.heartbeat(claim) is True
    assert queue.finish(claim, "cancelled")
    assert queue.get(a["id"])["state"] == "cancelled"
    assert queue.claim("w") is None


def test_a_worker_stopping_after_a_cancel_ends_the_job_cancelled_not_queued(queue: JobQueue) -> None:
    job = queue.submit("retrain", "temporal", {}, "test")
    claim = queue.claim("w")
    assert claim is not None
    queue.cancel(job["id"])  # asked while it runs; the worker stops before its next heartbeat
    queue.release(claim, "worker stopped")
    got = queue.get(job["id"])
    assert got["state"] == "cancelled" and got["finished_at"] and queue.claim("w2") is None


def test_the_jobs_of_a_worker_known_dead_are_given_up_at_once(queue: JobQueue) -> None:
    from cloud_sink.jobs.queue import worker_name

    job = queue.submit("retrain", "temporal", {}, "test")
    other = queue.submit("retrain", "temporal", {}, "test")
    dead = worker_name(999_999)
    assert queue.claim(dead) is not None and queue.claim("alive:1") is not None
    assert queue.recover_stale(60, max_attempts=2) == []  # both heartbeats are fresh
    assert queue.lost_worker(dead, "its process died", max_attempts=2) == [job["id"]]
    got = queue.get(job["id"])
    assert got["state"] == "queued" and got["attempts"] == 1 and got["worker"] is None
    assert queue.get(other["id"])["state"] == "running"  # another worker's job is left alone
    again = queue.claim(dead)  # a job that kills its worker every time ends failed
    assert again is not None and again.job_id == job["id"] and again.attempt == 2
    assert queue.lost_worker(dead, "its process died", max_attempts=2) == [job["id"]]
    got = queue.get(job["id"])
    assert got["state"] == "failed" and got["error"] == f"worker {dead} lost: its process died (attempt 2)"


def test_two_workers_racing_never_take_the_same_job(queue: JobQueue) -> None:
    ids = {queue.submit("retrain", "temporal", {}, "test")["id"] for _ in range(12)}
    taken: list[str] = []
    lock = threading.Lock()

    def work(name: str) -> None:
        while (c := queue.claim(name)) is not None:
            with lock:
                taken.append(c.job_id)
            queue.finish(c, "succeeded", result={})

    threads = [threading.Thread(target=work, args=(f"w{i}",)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(taken) == sorted(ids)


@pytest.mark.parametrize(
    ("model", "params", "why"),
    [
        ("temporal", {"epochs": 3}, "epochs is for the eye-state model"),
        ("eye-state", {"steps": 3}, "steps is for the temporal model"),
        ("temporal", {"steps": 0}, "steps must be an integer"),
        ("temporal", {"steps": True}, "steps must be an integer"),
        ("temporal", {"labels": ["maybe"]}, "labels must be a list of"),
        ("temporal", {"since": "yesterday"}, "since must be an ISO 8601 time"),
        ("temporal", {"gpu": 1}, "unknown parameter gpu"),
        ("temporal", {"fleet_only": "yes"}, "fleet_only must be true or false"),
    ],
)
def test_bad_job_parameters_are_named(model: str, params: dict[str, Any], why: str) -> None:
    with pytest.raises(ValueError, match=why):
        check_params(model, params)


# ----------------------------------------------------------------------------- the API


@pytest.fixture
def api(tmp_path: Path) -> Any:
    from fastapi.testclient import TestClient

    from cloud_sink.api import create_app

    cfg = SinkConfig(state_dir=tmp_path, api={"tokens": [API_TOKEN], "rate_limit": "10000/minute"})
    store = Store(cfg.database_url())
    with TestClient(create_app(cfg, store)) as client:
        yield client, cfg, store
    store.close()


def test_bad_job_requests_get_422_or_404(api: Any) -> None:
    client, _, _ = api
    for body in (
        {"kind": "reboot", "model": "temporal"},
        {"kind": "retrain", "model": "gaze"},
        {"kind": "retrain", "model": "temporal", "params": {"epochs": 3}},
        {"kind": "retrain", "model": "temporal", "extra": 1},
    ):
        r = client.post("/jobs", json=body, headers=AUTH)
        assert r.status_code == 422, (body, r.text)
    missing = "00000000-0000-0000-0000-000000000000"
    assert client.get(f"/jobs/{missing}", headers=AUTH).status_code == 404
    assert client.delete(f"/jobs/{missing}", headers=AUTH).status_code == 404
    assert client.get(f"/jobs/{missing}/events", headers=AUTH).status_code == 404
    assert client.post("/jobs", json={"kind": "retrain", "model": "temporal"}).status_code == 401


def test_a_queued_job_is_listed_shown_and_cancelled_over_http(api: Any) -> None:
    client, _, _ = api
    r = client.post(
        "/jobs", json={"kind": "retrain", "model": "temporal", "params": {"steps": 3}}, headers=AUTH
    )
    assert r.status_code == 201, r.text
    job = r.json()
    assert [j["id"] for j in client.get("/jobs", headers=AUTH).json()] == [job["id"]]
    assert client.get("/jobs?state=queued", headers=AUTH).json()[0]["params"] == {"steps": 3}
    assert client.delete(f"/jobs/{job['id']}", headers=AUTH).json()["state"] == "cancelled"
    # The stream of a finished job plays its events and ends.
    with client.stream("GET", f"/jobs/{job['id']}/events", headers=AUTH) as s:
        text = "".join(s.iter_text())
    assert text.count("event: state") == 2 and '"cancelled"' in text


def test_models_lists_the_shipped_champions_and_aliases_move_with_an_audit(api: Any) -> None:
    client, cfg, store = api
    models = {m["name"]: m for m in client.get("/models", headers=AUTH).json()}
    assert set(models) == {"sleepsafe-temporal", "sleepsafe-eye-state"}
    for m in models.values():
        (v,) = m["versions"]
        assert (
            v["aliases"] == ["champion"]
            and v["tags"]["source"] == "shipped"
            and len(v["tags"]["sha256"]) == 64
        )
        assert m["input"]
    shipped = json.loads((Path(__file__).resolve().parents[1] / "models" / "temporal.json").read_text())
    assert models["sleepsafe-temporal"]["versions"][0]["tags"]["sha256"] == shipped["sha256"]
    from cloud_sink.registry import Registry, UnknownModel

    reg = Registry(cfg)
    out = reg.set_alias(store, "sleepsafe-temporal/1", "challenger", "tester", "a second opinion")
    assert out == {"model": "sleepsafe-temporal", "alias": "challenger", "version": "1", "previous": None}
    with pytest.raises(ValueError, match="promote another version"):
        reg.remove_alias(store, "sleepsafe-temporal", "champion", "tester", "no")
    reg.remove_alias(store, "temporal", "challenger", "tester", "done")
    with pytest.raises(UnknownModel):
        reg.resolve("sleepsafe-temporal@challenger")
    audit = client.get("/models", headers=AUTH).json()[0]["audit"]
    assert [(a["alias"], a["action"], a["version"], a["previous"], a["by"]) for a in audit] == [
        ("champion", "set", "1", None, "sink"),  # the shipped model, registered on first use
        ("challenger", "set", "1", None, "tester"),
        ("challenger", "removed", None, "1", "tester"),
    ]


def _window(n: int = 30) -> list[list[float]]:
    rng = np.random.default_rng(3)
    cols = [(0.2, 1.2), (0.1, 0.35), (0, 0.5), (-5, 5), (0, 1), (0, 1)]  # temporal_vector's ranges
    rows = np.column_stack([*(rng.uniform(a, b, n) for a, b in cols), np.full(n, 1 / 30)])
    return [[float(x) for x in r] for r in rows]


def test_predict_scores_on_the_registered_model_as_the_runtime_does(api: Any) -> None:
    client, _, _ = api
    from sleepsafe.onnxmodels import EyeStateSession, Options, TemporalModel

    window = _window()
    r = client.post(
        "/predict?model=sleepsafe-temporal@champion", json={"windows": [window, window[:5]]}, headers=AUTH
    )
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["version"] == "1" and "CPUExecutionProvider" in got["providers"]
    repo = Path(__file__).resolve().parents[1] / "models"
    direct = TemporalModel(repo / "temporal.onnx", Options(("cpu",)), Path("/tmp"))
    want = [direct.step(row)[0] for row in window]
    assert got["outputs"][0]["closed"] == pytest.approx(want, abs=1e-6)
    assert got["outputs"][1]["closed"] == pytest.approx(want[:5], abs=1e-6)  # each window from a fresh state
    crops = np.random.default_rng(1).standard_normal((3, 2, 24, 48)).astype(np.float32)
    r = client.post("/predict?model=eye-state/1", json={"crops": crops.tolist()}, headers=AUTH)
    assert r.status_code == 200, r.text
    eye = EyeStateSession(repo / "eye_state.onnx", Options(("cpu",)), Path("/tmp"))
    assert [o["closed"] for o in r.json()["outputs"]] == pytest.approx(eye.predict(crops).tolist(), abs=1e-5)


def test_predict_refuses_bad_input_and_unknown_models(api: Any) -> None:
    client, _, _ = api
    url = "/predict?model=sleepsafe-temporal@champion"
    window = _window(4)
    short = [row[:6] for row in window]
    assert client.post(url, json={"windows": [short]}, headers=AUTH).status_code == 422
    nan = json.dumps({"windows": [window]}).replace(str(window[0][0]), "NaN", 1)
    r = client.post(url, content=nan, headers={**AUTH, "Content-Type": "application/json"})
    assert r.status_code == 422, r.text
    assert client.post(url, json={"crops": [[[[0.0] * 48] * 24] * 2]}, headers=AUTH).status_code == 422
    assert client.post(url, json={}, headers=AUTH).status_code == 422
    for ref, code in (
        ("sleepsafe-temporal@nightly", 404),
        ("sleepsafe-temporal/99", 404),
        ("sleepsafe-gaze@champion", 404),
        ("temporal", 422),
    ):
        r = client.post(f"/predict?model={ref}", json={"windows": [window]}, headers=AUTH)
        assert r.status_code == code, (ref, r.text)
        assert len(r.json()["detail"].splitlines()) == 1


def test_a_registered_file_that_onnxruntime_cannot_load_is_a_503_naming_it(api: Any, tmp_path: Path) -> None:
    """A version whose file is intact (its sha256 matches) but is no model: /predict says which
    version and why, and the shipped champion still answers."""
    client, cfg, _ = api
    from cloud_sink.registry import Registry

    assert client.get("/models", headers=AUTH).status_code == 200  # the shipped champions registered
    reg = Registry(cfg)
    bogus = tmp_path / "temporal.onnx"
    bogus.write_bytes(b"not an onnx graph")
    run_id = reg.start_run("bogus", {})
    reg.log_files(run_id, [bogus], "model")
    reg.end_run(run_id)
    v = reg.register("temporal", run_id, bogus, {"source": "test"})
    r = client.post(
        f"/predict?model=sleepsafe-temporal/{v.version}", json={"windows": [_window(3)]}, headers=AUTH
    )
    assert r.status_code == 503, r.text
    detail = r.json()["detail"]
    assert detail.startswith(f"sleepsafe-temporal/{v.version}: model") and "cannot be loaded" in detail
    ok = client.post(
        "/predict?model=sleepsafe-temporal@champion", json={"windows": [_window(3)]}, headers=AUTH
    )
    assert ok.status_code == 200


def test_a_job_shows_its_latest_progress_however_many_events_it_wrote(api: Any) -> None:
    """The stored rows as a long training leaves them: more progress events than one read takes."""
    from sqlalchemy import insert

    from cloud_sink.schema import job_events

    client, _, store = api
    job = client.post("/jobs", json={"kind": "retrain", "model": "temporal"}, headers=AUTH).json()
    queue = JobQueue(store)
    claim = queue.claim("w")
    assert claim is not None
    queue.progress(claim, "stage", {"stage": "train"})
    now = now_utc()
    rows = [
        {
            "job_id": job["id"],
            "time": now,
            "kind": "progress",
            "data": json.dumps({"stage": "train", "done": i, "total": 12_000}),
        }
        for i in range(1, 12_001)
    ]
    with store.engine.begin() as conn:
        conn.execute(insert(job_events), rows)
    got = client.get(f"/jobs/{job['id']}", headers=AUTH).json()
    assert got["progress"]["done"] == 12_000 and got["stage"] == "train"


def test_mlflow_errors_are_sorted_alike_for_a_server_and_a_local_store(tmp_path: Path) -> None:
    """A remote server answers a missing alias with INVALID_PARAMETER_VALUE "... not found", as
    the local store does: both mean no such thing (404), not MLflow down (503)."""
    from mlflow.exceptions import MlflowException, RestException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

    from cloud_sink.registry import Registry, RegistryUnavailable, UnknownModel, mask_secrets

    reg = Registry(SinkConfig(state_dir=tmp_path, mlflow={"tracking_uri": "http://u:s3cret@127.0.0.1:1"}))

    def raises(err: Exception) -> Any:
        def fn() -> None:
            raise err

        return fn

    cases = [
        (
            RestException(
                {
                    "error_code": "INVALID_PARAMETER_VALUE",
                    "message": "Registered model alias champion not found.",
                }
            ),
            UnknownModel,
        ),
        (
            RestException({"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "Run 'x' not found"}),
            UnknownModel,
        ),
        (
            MlflowException("Registered model alias champion not found.", error_code=INVALID_PARAMETER_VALUE),
            UnknownModel,
        ),
        (
            RestException(
                {"error_code": "INVALID_PARAMETER_VALUE", "message": "Invalid value 'x' for version"}
            ),
            ValueError,
        ),
        (
            RestException({"error_code": "INTERNAL_ERROR", "message": "database is locked"}),
            RegistryUnavailable,
        ),
        (MlflowException("API request to http://u:s3cret@127.0.0.1:1/api failed"), RegistryUnavailable),
    ]
    for err, want in cases:
        with pytest.raises(want) as got:
            reg._call("what", raises(err))
        assert "s3cret" not in str(got.value) and len(str(got.value).splitlines()) == 1
    assert (
        mask_secrets("postgresql://sink:pw@db/x and http://a:b@h:1/")
        == "postgresql://***@db/x and http://***@h:1/"
    )


def test_an_evaluation_logged_over_http_is_an_mlflow_run(api: Any) -> None:
    client, _, _ = api
    body = {"name": "night-shift review", "model": "sleepsafe-temporal@champion", "metrics": {"recall": 0.9}}
    r = client.post("/metrics/model", json={**body, "params": {"set": "november"}}, headers=AUTH)
    assert r.status_code == 201, r.text
    runs = {x["run_id"]: x for x in client.get("/mlflow/runs", headers=AUTH).json()}
    run = runs[r.json()["run_id"]]
    assert run["name"] == "night-shift review" and run["metrics"] == {"recall": 0.9}
    assert run["params"] == {"set": "november"} and run["tags"]["sleepsafe.version"] == "1"
    bad = copy.deepcopy(body)
    bad["metrics"] = {"recall": "high"}
    assert client.post("/metrics/model", json=bad, headers=AUTH).status_code == 422
    bad["metrics"], bad["model"] = {"recall": 1.0}, "sleepsafe-temporal@nightly"
    assert client.post("/metrics/model", json=bad, headers=AUTH).status_code == 404


def test_an_unreachable_mlflow_is_a_503_with_the_reason_and_nothing_else_fails(tmp_path: Path) -> None:
    import socket

    from fastapi.testclient import TestClient

    from cloud_sink.api import create_app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nothing listens there
    cfg = SinkConfig(
        state_dir=tmp_path,
        api={"tokens": [API_TOKEN]},
        mlflow={"tracking_uri": f"http://ops:s3cret@127.0.0.1:{port}", "timeout_s": 2},
    )
    store = Store(cfg.database_url())
    with TestClient(create_app(cfg, store)) as client:
        r = client.get("/models", headers=AUTH)
        assert r.status_code == 503 and f"***@127.0.0.1:{port}" in r.json()["detail"], r.text
        assert "s3cret" not in r.text
        # Asked again at once: the same reason, answered from memory with when to retry
        # (not another wait on MLflow's timeout for every request).
        again = client.post("/predict?model=temporal@champion", json={"windows": [_window(2)]}, headers=AUTH)
        assert again.status_code == 503 and again.json()["detail"] == r.json()["detail"]
        assert again.headers["Retry-After"] == "5"
        assert client.get("/health").json()["database"] == "ok"
        assert client.get("/events/recent", headers=AUTH).status_code == 200
        assert (
            client.post("/jobs", json={"kind": "retrain", "model": "temporal"}, headers=AUTH).status_code
            == 201
        )
    store.close()


def test_a_job_with_no_labelled_fleet_data_fails_with_the_reason(tmp_path: Path) -> None:
    from trainer.worker import run_worker

    cfg = SinkConfig(state_dir=tmp_path)
    store = Store(cfg.database_url())
    queue = JobQueue(store)
    job = queue.submit("retrain", "temporal", {}, "test")
    run_worker(cfg, store, threading.Event(), once=True)
    got = queue.get(job["id"])
    assert got["state"] == "failed" and got["error"].startswith("dataset: no labelled events"), got["error"]
    assert got["finished_at"] and now_utc().year >= 2026
    store.close()


def test_health_says_when_jobs_wait_for_a_worker_this_sink_cannot_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sink installed without the training packages (here: one more package that is really
    not installed) runs no worker; queued jobs then make /health 503 with the reason."""
    from fastapi.testclient import TestClient

    from cloud_sink.api import create_app
    from cloud_sink.jobs import embedded

    monkeypatch.setattr(
        embedded, "TRAINING_PACKAGES", (*embedded.TRAINING_PACKAGES, "sleepsafe_no_such_package")
    )
    cfg = SinkConfig(state_dir=tmp_path, api={"tokens": [API_TOKEN]})
    store = Store(cfg.database_url())
    worker = embedded.EmbeddedWorker(cfg).start()
    assert worker.unavailable and "sleepsafe_no_such_package" in worker.unavailable and not worker.alive
    with TestClient(create_app(cfg, store, worker=worker)) as client:
        first = client.get("/health")
        assert first.status_code == 200 and first.json()["jobs"]["queued"] == 0
        client.post("/jobs", json={"kind": "retrain", "model": "temporal"}, headers=AUTH)
        r = client.get("/health")
        assert r.status_code == 503, r.json()
        (problem,) = r.json()["problems"]
        assert problem.startswith("1 jobs queued and no worker") and "sleepsafe_no_such_package" in problem
    store.close()


def test_procrastinate_hands_jobs_to_workers_and_again_when_one_is_lost(
    postgres: Any, tmp_path: Path
) -> None:
    """jobs.engine = procrastinate on a real PostgreSQL: each queued job is deferred there; a
    `sleepsafe-worker --once` runs them through procrastinate's queue, skips one cancelled
    meanwhile, and a job whose worker was lost is deferred again and runs its second attempt."""
    import os
    import subprocess
    import sys

    import psycopg

    from cloud_sink.jobs.dispatch import conninfo, open_queue

    url = postgres.new_database()
    cfg = SinkConfig(state_dir=tmp_path, store={"url": url}, jobs={"engine": "procrastinate"})
    store = Store(url)
    queue = open_queue(cfg, store)
    a = queue.submit("retrain", "temporal", {}, "test")
    b = queue.submit("retrain", "temporal", {}, "test")
    c = queue.submit("retrain", "temporal", {}, "test")
    queue.cancel(b["id"])
    lost = queue.claim_id(c["id"], "w-lost")
    assert lost is not None and lost.attempt == 1
    assert queue.recover_stale(-1, max_attempts=2) == [c["id"]]  # queued again, and deferred again

    def deferred() -> list[tuple[str, str]]:
        with psycopg.connect(conninfo(url)) as conn:
            rows = conn.execute(
                "SELECT args->>'job_id', status FROM procrastinate_jobs ORDER BY id"
            ).fetchall()
        return [(r[0], r[1]) for r in rows]

    # c's first copy still waits in procrastinate's queue: deferring it again is refused (its
    # queueing lock), and that one copy runs its second attempt.
    assert [j for j, _ in deferred()] == [a["id"], b["id"], c["id"]]
    # A job whose defer failed (procrastinate's database away at that moment) is found and
    # deferred by the recovery round; the others are not deferred twice.
    from cloud_sink.jobs.queue import JobQueue

    def down(job_id: str) -> None:
        raise OSError("connection refused")

    d = JobQueue(store, dispatch=down).submit("retrain", "temporal", {}, "test")
    assert [j for j, _ in deferred()] == [a["id"], b["id"], c["id"]]
    assert queue.redispatch_queued(-1) == [a["id"], c["id"], d["id"]]
    assert [j for j, _ in deferred()] == [a["id"], b["id"], c["id"], d["id"]]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLEEPSAFE_SINK_")}
    sets = {"state_dir": str(tmp_path), "store.url": url, "jobs.engine": "procrastinate"}
    argv = [x for k, v in sets.items() for x in ("--set", f"{k}={v}")]
    p = subprocess.run(
        [sys.executable, "-m", "trainer", *argv, "--once"],
        capture_output=True, text=True, timeout=600, check=False, env=env,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr[-3000:]
    assert all(status == "succeeded" for _, status in deferred()), deferred()
    got = {j: queue.get(j) for j in (a["id"], b["id"], c["id"], d["id"])}
    assert got[b["id"]]["state"] == "cancelled" and got[b["id"]]["attempts"] == 0  # skipped, never run
    for j in (a["id"], c["id"], d["id"]):  # run for real: nothing labelled in this database
        assert got[j]["state"] == "failed" and got[j]["error"].startswith("dataset: no labelled events"), got[
            j
        ]
    assert got[a["id"]]["attempts"] == 1 and got[c["id"]]["attempts"] == 2 and got[d["id"]]["attempts"] == 1
    assert '"job_skipped"' in p.stderr
    store.close()


def test_the_procrastinate_engine_on_sqlite_is_a_config_error(tmp_path: Path) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=r"procrastinate needs store\.url on PostgreSQL"):
        SinkConfig(state_dir=tmp_path, jobs={"engine": "procrastinate"})
