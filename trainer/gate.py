"""The gate: a candidate becomes ``@challenger`` only if, on the same held-out data, it is not
worse than the champion.

Two kinds of figure, each measured for both models in the same job:

- **The agent with the model deciding** (``models.mode = "on"``, the temporal model enabled),
  replayed over the repo's labelled real clips of the held-out people
  (``WolfgangLanger_Pexels.mp4`` among them): closure alarms outside closed ranges, closed ranges
  alarmed, blink F1 (``edge_agent.devtools.evaluate``, what ``make eval`` runs).  The safety
  figures are exact: one closure alarm outside a closure refuses the candidate whatever the
  champion did, and so does one closure fewer alarmed than the champion alarmed.  (Every closure
  alarmed is the goal; the shipped temporal model deciding alarms one of WolfgangLanger's two, so
  an absolute rule would refuse every temporal candidate, the champion's own copy included.)
- **The model alone**, balanced accuracy on the held-out labelled frames (temporal) or crops
  (eye-state) of the repo's held-out people and of the export's held-out vehicles, pooled.

"Not lower beyond the noise the set allows": blink F1 may fall by what one blink moves it on
this set (one true blink missed).  Balanced accuracy may fall by twice the standard error of
the difference between the two models, from a paired bootstrap that resamples whole labelled
stretches (a closure, an open run between two: the frames of one closure are one observation,
not many), and by no less than ``BA_FLOOR``.  Two trainings of the same model on the same data
differ by about that much; a model trained on wrong labels falls far beyond it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

BA_FLOOR = 0.01
BOOTSTRAP_ROUNDS = 1000


@dataclass(frozen=True, slots=True)
class HeldOut:
    """What the gate judges on: prepared clips (the repo's held-out people and the export's
    held-out vehicles), their eye-state input for the temporal model, and the real clips to
    replay with their labels."""

    clips: list[Any]  # models.dataset.ClipData
    eye_probs: dict[str, npt.NDArray[np.float32]]
    replay: list[str]  # clip file names (labelled, of held-out people)
    clips_dir: Path
    label_files: list[Path]


def f1(tp: int, fp: int, fn: int) -> float:
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def one_blink(tp: int, fp: int, fn: int) -> float:
    """How much one true blink missed (or found) moves F1 on this set."""
    if tp + fn == 0:
        return 0.0
    if tp == 0:
        return f1(1, fp, fn - 1)
    return f1(tp, fp, fn) - f1(tp - 1, fp, fn + 1)


def balanced_accuracy(y: npt.NDArray[np.int64], pred: npt.NDArray[np.bool_]) -> float:
    pos, neg = y == 1, y == 0
    if not pos.any() or not neg.any():
        return float("nan")
    return float((pred[pos].mean() + (~pred[neg]).mean()) / 2)


def segments(y: npt.NDArray[np.int64], clip: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """A stretch id per sample: a new stretch wherever the label or the clip changes."""
    change = np.ones(len(y), dtype=bool)
    change[1:] = (y[1:] != y[:-1]) | (clip[1:] != clip[:-1])
    out: npt.NDArray[np.int64] = np.cumsum(change) - 1
    return out


def ba_noise(samples_champion: dict[str, Any], samples_candidate: dict[str, Any], seed: int = 0) -> float:
    """Twice the standard error of BA(candidate) - BA(champion), resampling whole stretches."""
    y = np.asarray(samples_champion["y"], dtype=np.int64)
    seg = np.asarray(samples_champion["segment"], dtype=np.int64)
    a = np.asarray(samples_champion["p"]) >= 0.5
    b = np.asarray(samples_candidate["p"]) >= 0.5
    n = int(seg.max()) + 1 if len(seg) else 0
    if n < 2:
        return 1.0
    members = [np.flatnonzero(seg == k) for k in range(n)]
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(BOOTSTRAP_ROUNDS):
        idx = np.concatenate([members[k] for k in rng.integers(0, n, n)])
        d = balanced_accuracy(y[idx], b[idx]) - balanced_accuracy(y[idx], a[idx])
        if np.isfinite(d):
            diffs.append(d)
    return max(BA_FLOOR, 2 * float(np.std(diffs))) if len(diffs) > 1 else 1.0


def compare(champion: dict[str, Any], candidate: dict[str, Any]) -> dict[str, Any]:
    """Each check with both figures, the tolerance and its verdict; ``passed`` when all pass."""
    checks = []

    def check(name: str, champ: Any, cand: Any, ok: bool, rule: str, tolerance: float | None = None) -> None:
        checks.append(
            {
                "check": name,
                "champion": champ,
                "candidate": cand,
                "tolerance": tolerance,
                "rule": rule,
                "ok": ok,
            }
        )

    cd, ch = candidate["agent"], champion["agent"]
    check(
        "closure alarms outside closed ranges",
        ch["closure_alarms_outside"],
        cd["closure_alarms_outside"],
        cd["closure_alarms_outside"] == 0,
        "must be 0",
    )
    check(
        "closed ranges alarmed",
        f"{ch['closed_ranges_alarmed']}/{ch['closed_ranges']}",
        f"{cd['closed_ranges_alarmed']}/{cd['closed_ranges']}",
        cd["closed_ranges"] > 0 and cd["closed_ranges_alarmed"] >= ch["closed_ranges_alarmed"],
        "no fewer than the champion's (every one is the goal)",
    )
    b, c = ch["blinks"], cd["blinks"]
    # From the counts, not the rounded F1 the evaluation reports.
    f_ch, f_cd = f1(b["tp"], b["fp"], b["fn"]), f1(c["tp"], c["fp"], c["fn"])
    tol = one_blink(b["tp"], b["fp"], b["fn"])
    check(
        "blink F1",
        round(f_ch, 4),
        round(f_cd, 4),
        f_cd >= f_ch - tol - 1e-9,
        "not lower than the champion's by more than one blink",
        round(tol, 4),
    )
    cm, mm = champion["model"], candidate["model"]
    if cm["samples"]["y"] != mm["samples"]["y"]:
        raise ValueError("the gate scored the two models on different samples")
    tol = round(ba_noise(cm["samples"], mm["samples"]), 4)
    check(
        f"balanced accuracy ({mm['unit']})",
        cm["balanced_accuracy"],
        mm["balanced_accuracy"],
        mm["balanced_accuracy"] >= cm["balanced_accuracy"] - tol - 1e-9,
        f"not lower than the champion's by more than 2 standard errors of the paired difference "
        f"(bootstrap over labelled stretches, at least {BA_FLOOR})",
        tol,
    )
    return {"passed": all(c["ok"] for c in checks), "checks": checks}


def summary(gate: dict[str, Any]) -> str:
    """One line: PASSED, or which checks refused the candidate."""
    if gate["passed"]:
        return "passed"
    return "refused: " + "; ".join(
        f"{c['check']} {c['candidate']} (champion {c['champion']}, {c['rule']})"
        for c in gate["checks"]
        if not c["ok"]
    )


# ---------------------------------------------------------------------- measuring


def model_figures(kind: str, files: dict[str, Path], held: HeldOut) -> dict[str, Any]:
    """The model alone on the held-out labelled frames (temporal) or crops (eye-state), pooled."""
    from edge_agent.config import ModelsConfig
    from edge_agent.inference.runtime import EyeStateModel, TemporalModel
    from edge_agent.perception.eyecrop import model_input
    from models.dataset import eye_samples
    from models.eye_state import metrics
    from models.temporal import clip_sequence

    cfg = ModelsConfig(providers=["cpu"])
    ys: list[Any] = []
    ps: list[Any] = []
    clip_of: list[Any] = []
    if kind == "temporal":
        model = TemporalModel(files["temporal"], cfg, Path("/tmp"))
        for k, c in enumerate(held.clips):
            keep = c.labels >= 0
            if not keep.any():
                continue
            seq = clip_sequence(c, held.eye_probs.get(c.clip))
            model.reset()
            p = np.array([model.step(row.tolist())[0] for row in seq], dtype=np.float32)
            ys.append(c.labels[keep].astype(np.int64))
            ps.append(p[keep])
            clip_of.append(np.full(int(keep.sum()), k))
        unit = "frames"
    else:
        eye = EyeStateModel(files["eye-state"], cfg, Path("/tmp"))
        for k, c in enumerate(held.clips):
            if not c.crops.any():
                continue
            test = eye_samples([c], [c.subject])
            if len(test.labels):
                ys.append(test.labels.astype(np.int64))
                ps.append(eye.predict(model_input(test.crops, test.lids)))
                clip_of.append(np.full(len(test.labels), k))
        unit = "crops"
    if not ys:
        raise ValueError(f"the gate has no held-out labelled {unit} to score the {kind} model on")
    y, p = np.concatenate(ys), np.concatenate(ps)
    m = metrics(y, p)
    seg = segments(y, np.concatenate(clip_of))
    return {
        "unit": unit,
        "open": int((y == 0).sum()),
        "closed": int((y == 1).sum()),
        "stretches": int(seg.max()) + 1,
        "balanced_accuracy": m["balanced_accuracy"],
        "f1": m["f1"],
        "roc_auc": m["roc_auc"],
        # What the comparison resamples (dropped from what is logged: see without_samples).
        "samples": {"y": y.tolist(), "p": [round(float(x), 5) for x in p], "segment": seg.tolist()},
    }


def without_samples(figures: dict[str, Any]) -> dict[str, Any]:
    return {**figures, "model": {k: v for k, v in figures["model"].items() if k != "samples"}}


def agent_figures(files: dict[str, Path], held: HeldOut, state_dir: Path) -> dict[str, Any]:
    """The agent replayed over the held-out people's real clips with both models deciding."""
    from edge_agent.config import EdgeConfig
    from edge_agent.devtools.evaluate import evaluate

    cfg = EdgeConfig(
        state_dir=state_dir,
        models={  # type: ignore[arg-type]
            "mode": "on",
            "eye_state": files["eye-state"],
            "temporal": files["temporal"],
            "temporal_enabled": True,
            "providers": ["cpu"],
        },
        mqtt={"enabled": False},  # type: ignore[arg-type]
        logging={"level": "warning"},  # type: ignore[arg-type]
    )
    rep = evaluate(cfg, held.label_files, held.clips_dir, only=held.replay)
    if not rep["clips"]:
        why = (rep["problems"] or ["no labelled clip"])[0]
        raise ValueError(f"the gate replayed nothing: {why}")
    return {
        "clips": [c["clip"] for c in rep["clips"]],
        "closure_alarms_outside": rep["closure_alarms"]["outside_closed"],
        "closure_alarms_inside": rep["closure_alarms"]["inside_closed"],
        "closed_ranges": rep["closed_ranges"],
        "closed_ranges_alarmed": rep["closed_ranges_alarmed"],
        "latency_ms_max": rep["latency_ms"]["max"],
        "blinks": {k: rep["blinks"][k] for k in ("tp", "fp", "fn", "precision", "recall", "f1")},
        "model_versions": rep["model_versions"],
        "problems": rep["problems"],
    }


def measure(kind: str, files: dict[str, Path], held: HeldOut, state_dir: Path) -> dict[str, Any]:
    out = {"agent": agent_figures(files, held, state_dir), "model": model_figures(kind, files, held)}
    fleet = [c for c in held.clips if c.subject.startswith("fleet:")]
    if fleet:  # the held-out vehicles alone: what `sleepsafe-sink backtest --held-out` measures
        try:
            part = model_figures(kind, files, HeldOut(fleet, held.eye_probs, [], held.clips_dir, []))
            out["model_fleet"] = {k: v for k, v in part.items() if k != "samples"}
        except ValueError:
            pass  # no labelled frame (or crop) among them
    return out


def flat_metrics(figures: dict[str, Any], prefix: str) -> dict[str, float]:
    """The figures as MLflow metrics."""
    a, m = figures["agent"], figures["model"]
    return {
        f"{prefix}closure_alarms_outside": a["closure_alarms_outside"],
        f"{prefix}closed_ranges_alarmed": a["closed_ranges_alarmed"],
        f"{prefix}closed_ranges": a["closed_ranges"],
        f"{prefix}blink_f1": a["blinks"]["f1"],
        f"{prefix}balanced_accuracy": m["balanced_accuracy"],
    }
