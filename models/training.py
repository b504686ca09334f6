"""The two trainers from data directories (prepared clips and fleet exports alike): what
`sleepsafe-train temporal|eye-state --data ...` runs, and what a retraining job of the sink runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .dataset import StepCallback


def train_temporal(
    directories: list[Path],
    out: Path,
    *,
    steps: int = 400,
    seed: int = 11,
    eye_model: Path | None,
    eye_folds: Path | None = None,
    progress: bool = True,
    leave_one_out: bool = True,
    on_step: StepCallback | None = None,
    version: str | None = None,
) -> dict[str, Any]:
    """Train the GRU on ``directories``; the repo's clips get their eye-state input from
    ``eye_model`` (``eye_folds``: out of fold), fleet events the one their vehicle recorded."""
    from .cli import eye_probabilities
    from .fleet import load_training_data
    from .temporal import VERSION, TemporalTrainConfig, run_training

    loaded = load_training_data(directories)
    data, fleet_probs = loaded.clips, loaded.fleet_probs
    repo_clips = [c for c in data if not loaded.is_fleet(c)]
    probs, source = (
        eye_probabilities(repo_clips, eye_model, eye_folds) if eye_model and repo_clips else (None, {})
    )
    if fleet_probs:  # the eye-state output the vehicle recorded (shadow mode)
        probs = {**(probs or {}), **fleet_probs}
        source.update({c.subject: "vehicle (shadow)" for c in data if loaded.is_fleet(c)})
    report = run_training(
        data,
        out,
        TemporalTrainConfig(steps=steps, seed=seed),
        probs,
        progress,
        eye_prob_source=source,
        test_subjects=loaded.held_out,
        leave_one_out=leave_one_out,
        on_step=on_step,
        version=version or VERSION,
    )
    report["datasets"] = loaded.datasets
    return report


def train_eye_state(
    directories: list[Path],
    out: Path,
    *,
    epochs: int = 30,
    seed: int = 7,
    narrowed_share: float = 0.0,
    progress: bool = True,
    leave_one_out: bool = True,
    on_step: StepCallback | None = None,
    version: str | None = None,
) -> dict[str, Any]:
    """Train the eye-state CNN on the crops of ``directories`` (of the exports, only events whose
    vehicle captured eye crops: ``capture.eye_crops``)."""
    from .eye_state import VERSION, TrainConfig, run_training
    from .fleet import load_training_data

    loaded = load_training_data(directories)
    clips = [c for c in loaded.clips if not loaded.is_fleet(c) or c.crops.any()]
    if not clips:
        raise ValueError(
            "no clip with eye crops to train on (exports need capture.eye_crops on the vehicles)"
        )
    report = run_training(
        clips,
        out,
        TrainConfig(epochs=epochs, seed=seed, narrowed_share=narrowed_share),
        progress,
        stills=loaded.stills,
        test_subjects=loaded.held_out,
        leave_one_out=leave_one_out,
        on_step=on_step,
        version=version or VERSION,
    )
    report["datasets"] = loaded.datasets
    return report
