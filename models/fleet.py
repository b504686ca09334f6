"""Fleet data for training: a `sleepsafe-sink dataset export` directory as prepared clips.

Each labelled event of the export becomes one short clip (its feature window) of the subject
``fleet:VEHICLE``, so the trainers split by vehicle exactly as they split the repo's clips by
person, and the export's held-out vehicles join the held-out people.  A label says whether the
eyes were shut in the event's own span (the end of its window): ``confirmed`` shut,
``false_alarm`` open, ``unsure`` unlabelled; frames before the span and frames without a face
are unlabelled too.  Eye crops come with the events of vehicles that capture them
(``capture.eye_crops``, opt-in); the temporal model takes as its eye-state input the model
output the vehicle recorded in shadow mode (``eye_closed``), where there is one.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edge_agent.perception.eyecrop import CROP_H, CROP_W, decode_crops

from .dataset import FEATURES, ClipData

FORMAT = "sleepsafe-dataset"
FORMAT_VERSIONS = (1,)
LABEL_VALUE = {"confirmed": 1, "false_alarm": 0, "unsure": -1}


@dataclass(frozen=True, slots=True)
class FleetData:
    clips: list[ClipData]
    eye_probs: dict[str, npt.NDArray[np.float32]]  # per clip: the vehicle's eye_closed, -1 where absent
    held_out_subjects: frozenset[str]
    manifest: dict[str, Any]


@dataclass(frozen=True, slots=True)
class TrainingData:
    """Everything the ``--data`` directories hold, prepared clips and exports alike."""

    clips: list[ClipData]
    stills: list[ClipData]
    fleet_probs: dict[str, npt.NDArray[np.float32]]  # per fleet clip: the vehicle's eye_closed
    held_out: frozenset[str]  # the repo's held-out people and the exports' held-out vehicles
    datasets: list[dict[str, str]]  # what was read, exports by their id

    def is_fleet(self, c: ClipData) -> bool:
        return c.clip in self.fleet_probs


def load_training_data(directories: list[Path]) -> TrainingData:
    from .dataset import TEST_SUBJECTS, load_all, load_stills

    clips: list[ClipData] = []
    stills: list[ClipData] = []
    probs: dict[str, npt.NDArray[np.float32]] = {}
    held = set(TEST_SUBJECTS)
    datasets: list[dict[str, str]] = []
    for directory in directories:
        if is_export(directory):
            fleet = load_export(directory)
            clips += fleet.clips
            probs.update(fleet.eye_probs)
            held |= fleet.held_out_subjects
            datasets.append({"export": str(directory), "dataset_id": fleet.manifest["dataset_id"]})
        else:
            clips += load_all(directory)
            stills += load_stills(directory)
            datasets.append({"clips": str(directory)})
    return TrainingData(clips, stills, probs, frozenset(held), datasets)


def is_export(directory: Path) -> bool:
    return (directory / "manifest.json").is_file()


def load_export(directory: Path) -> FleetData:
    """The export at ``directory``, checked against its manifest; a ValueError names what is wrong."""
    try:
        manifest = json.loads((directory / "manifest.json").read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{directory}: manifest.json cannot be read: {err}") from None
    if manifest.get("format") != FORMAT or manifest.get("version") not in FORMAT_VERSIONS:
        raise ValueError(f"{directory}: not a {FORMAT} export of version {FORMAT_VERSIONS}")
    body = (directory / "events.jsonl").read_bytes()
    digest = hashlib.sha256(body).hexdigest()
    if digest != manifest["files"]["events.jsonl"]["sha256"]:
        raise ValueError(f"{directory}: events.jsonl does not match its manifest (sha256 {digest[:12]}…)")
    clips, probs = [], {}
    for n, line in enumerate(body.decode().splitlines(), start=1):
        rec = json.loads(line)
        clip = event_clip(rec)
        if clip is None:
            raise ValueError(f"{directory}/events.jsonl:{n}: event {rec.get('event_id')} has an empty window")
        clips.append(clip)
        probs[clip.clip] = _column(rec["window"], "eye_closed", len(clip.t))
    held = frozenset(f"fleet:{d}" for d in manifest["held_out"]["devices"])
    return FleetData(clips, probs, held, manifest)


def _column(window: dict[str, Any], name: str, n: int) -> npt.NDArray[np.float32]:
    values = window.get(name) or [None] * n
    return np.array([-1.0 if v is None else float(v) for v in values], dtype=np.float32)


def event_clip(rec: dict[str, Any]) -> ClipData | None:
    """One exported event as a clip: features from its window, labels from its label."""
    w = rec["window"]
    n = len(w["t_ms"])
    if n == 0:
        return None
    t = np.cumsum(np.asarray(w["t_ms"], dtype=np.float64)) / 1000.0
    face = np.asarray(w["face"], dtype=np.float32)
    cols = {name: np.asarray(w[name], dtype=np.float32) for name in FEATURES if name in w and name != "face"}
    features = np.zeros((n, len(FEATURES)), dtype=np.float32)
    for i, name in enumerate(FEATURES):
        if name == "face":
            features[:, i] = face
        elif name in cols:
            features[:, i] = cols[name]  # gaze is not in the window: 0, as for a centred gaze
    span_s = (rec.get("span_ms") or 0) / 1000.0
    inside = t >= t[-1] - span_s
    labels = np.full(n, -1, dtype=np.int8)
    labels[inside & (face > 0.5)] = LABEL_VALUE[rec["label"]]
    crops = np.zeros((n, 2, CROP_H, CROP_W), dtype=np.uint8)
    if rec.get("crops"):  # the vehicle captured them (capture.eye_crops)
        got = decode_crops(rec["crops"]["frames"], rec["crops"]["png"])
        if len(got) != n:
            raise ValueError(f"event {rec['event_id']}: {len(got)} crop pairs for a window of {n} frames")
        crops = got
    return ClipData(
        clip=f"fleet/{rec['event_id']}",
        subject=f"fleet:{rec['device_id']}",
        crops=crops,
        lids=np.zeros((n, 2, 2, 9, 2), dtype=np.float32),
        labels=labels,
        t=t,
        features=features,
    )
