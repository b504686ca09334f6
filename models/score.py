"""Score the exported models that ship on each held-out person of a prepared data directory.

The trainers test on the held-out people once, when they train.  People labelled later (a new
camera, glasses, the first woman held out) must be scored with the very ONNX files that ship,
without retraining, or the model cards' claims stop at the people there were on training day.
This runs the shipped files through the runtime's own classes (onnxruntime, no torch) and puts
beside them EAR alone at the detector's cut and at a cut chosen on the training people present
(the fairer baseline, design note 20), per person: pooled, the larger clip would outvote the
smaller.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .dataset import TEST_SUBJECTS, ClipData, eye_samples
from .eye_state import by_subject_scores, ear_cut, person_scores

# A person with fewer shut-eye samples than this is also scored pooled with the others like
# them: with 2 closed crops, one crop moves that person's balanced accuracy by 0.25, which no
# claim can rest on; pooled (12 closed crops for Q, R and W) one moves it by 0.04.
THIN_CLOSED = 10


def score_eye_state(clips: list[ClipData], model_path: Path, closed_ratio: float = 0.2) -> dict[str, Any]:
    """Per held-out person, on the same crops: the model, EAR at ``closed_ratio`` and EAR at the
    cut chosen on the training people's crops (absent when none of them has a closed eye)."""
    from edge_agent.config import ModelsConfig
    from edge_agent.inference.runtime import EyeStateModel
    from edge_agent.perception.eyecrop import model_input

    held = [c for c in clips if c.subject in TEST_SUBJECTS]
    if not held:
        raise ValueError(f"no held-out person ({', '.join(TEST_SUBJECTS)}) in the prepared data")
    test = eye_samples(held, TEST_SUBJECTS)
    model = EyeStateModel(model_path, ModelsConfig(providers=["cpu"]), Path("/tmp"))
    p = model.predict(model_input(test.crops, test.lids))
    trained = sorted({c.subject for c in clips} - set(TEST_SUBJECTS))
    cut = None
    if trained:
        people = eye_samples(clips, trained)
        if people.labels.any():
            cut = ear_cut(people.labels, people.openness, people.subjects, closed_ratio)
    by_subject = by_subject_scores(test, p, closed_ratio, cut["cut"] if cut else None)
    thin = [s for s, v in by_subject.items() if v["crops"]["closed"] < THIN_CLOSED]
    out: dict[str, Any] = {
        "model": str(model_path),
        "version": model.version,
        "ear_tuned_cut": cut,
        "by_subject": by_subject,
    }
    if len(thin) > 1:
        m = np.isin(test.subjects, thin)
        pooled = person_scores(
            test.labels[m], test.openness[m], p[m], closed_ratio, cut["cut"] if cut else None
        )
        out["thin_pooled"] = {"people": thin, **pooled}
    return out


def score_temporal(
    clips: list[ClipData], model_path: Path, eye_probs: dict[str, Any] | None, closed_ratio: float = 0.2
) -> dict[str, Any]:
    """Per held-out person, on the labelled frames: the GRU's closed-now (run one frame at a
    time with its state carried, as in the agent), EAR at ``closed_ratio`` and at the cut chosen
    on the training people's frames."""
    from edge_agent.config import ModelsConfig
    from edge_agent.inference.runtime import TemporalModel

    from .temporal import clip_sequence, frame_ear_cut, labelled_frames

    model = TemporalModel(model_path, ModelsConfig(providers=["cpu"]), Path("/tmp"))
    seqs = {c.clip: (clip_sequence(c, (eye_probs or {}).get(c.clip)), c.labels) for c in clips}
    subject_of = {c.clip: c.subject for c in clips}
    cut = frame_ear_cut(
        seqs, subject_of, [c.clip for c in clips if c.subject not in TEST_SUBJECTS], closed_ratio
    )
    by_subject = {}
    for s in sorted({c.subject for c in clips} & set(TEST_SUBJECTS)):
        names = [c.clip for c in clips if c.subject == s]
        y, o, _, keep = labelled_frames(seqs, subject_of, names)
        if not len(y):
            continue
        probs = []
        for n, k in zip(names, keep, strict=True):
            model.reset()
            probs.append(np.array([model.step(row.tolist())[0] for row in seqs[n][0]], dtype=np.float32)[k])
        by_subject[s] = person_scores(
            y, o, np.concatenate(probs), closed_ratio, cut["cut"] if cut else None, "frames"
        )
    return {
        "model": str(model_path),
        "version": model.version,
        "ear_tuned_cut": cut,
        "by_subject": by_subject,
    }


def format_scores(report: dict[str, Any]) -> str:
    """One row per held-out person: balanced accuracy of each model and of EAR beside it."""
    rows = []
    for part, unit in (("eye_state", "crops"), ("temporal", "frames")):
        if part not in report:
            continue
        r = report[part]
        cut = r["ear_tuned_cut"]["cut"] if r["ear_tuned_cut"] else None
        tuned = f"EAR@{cut:.2f}" if cut is not None else "EAR@learnt"
        rows.append(f"{part} {r['version']} ({r['model']}), balanced accuracy on real {unit}:")
        rows.append(f"  person  {unit + ' open/closed':<20} {'model':>6} {'EAR@0.20':>9} {tuned:>10}")
        rows_of = dict(r["by_subject"])
        if "thin_pooled" in r:
            rows_of["+".join(r["thin_pooled"]["people"])] = r["thin_pooled"]
        for s, v in rows_of.items():
            n = v[unit]
            t = v.get("ear_tuned", {}).get("balanced_accuracy")
            rows.append(
                f"  {s:<7} {str(n['open']) + '/' + str(n['closed']):<20} "
                f"{v['model']['balanced_accuracy']:>6.3f} {v['ear_only']['balanced_accuracy']:>9.3f} "
                f"{t if t is None else f'{t:.3f}':>10}"
            )
    return "\n".join(rows)
