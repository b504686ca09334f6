"""Eye-state network: open/closed from one aligned grayscale eye crop and the eye opening its
landmarks draw (torch; training only).

Small on purpose (≈ 24 k parameters, 24x48 input): it runs on both eyes of every frame next to
MediaPipe and must cost a few percent of it on a CPU.  Real closed eyes are few (262 crops of
six people), open eyes many and of more people (clips and stills), so half of each batch is
closed eyes, most of them synthesised from real open crops of every training person
(``synth.py``), and every crop goes through augmentations that match what a vehicle camera does
to an eye: exposure, blur, sensor noise, small rotations and shifts, low resolution, IR-like
contrast, things in front of it (a hand, a glasses rim, glare) and landmark jitter (the opening
mask drawn from lids moved by FaceMesh's own noise).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from edge_agent.perception.eyecrop import CHANNELS, CROP_H, CROP_W, aperture_mask, model_input, standardise

from .dataset import TEST_SUBJECTS, ClipData, EyeSamples, StepCallback, data_hash, eye_samples, fold_path
from .synth import close_eye, narrow_eye, usable

ARCH = "EyeStateNet"
PREPROCESSING = (
    "edge_agent.perception.eyecrop.eye_crops: corners levelled, eye = 62% of width, image-right eye "
    "mirrored, grayscale, per-crop standardised; channel 2: the eye opening between the "
    "FaceMesh lid contours, drawn in the same grid (coverage 0..1)"
)
# 2: crop + opening mask; 2.1: 3 more people; 2.2: occluders; 2.3: subject P;
# 2.4 (+franck) and 2.5 (--narrowed-share 0.2: narrowed open eyes as hard negatives): not shipped
VERSION = "2.3.0"


class EyeStateNet(nn.Module):
    """Input (N, 2, 24, 48): standardised crop, opening mask; output (N, 1) P(eye closed)."""

    def __init__(self) -> None:
        super().__init__()

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()
            )

        self.features = nn.Sequential(
            block(CHANNELS, 16),
            nn.MaxPool2d(2),  # 12x24
            block(16, 32),
            nn.MaxPool2d(2),  # 6x12
            block(32, 48),
            nn.AdaptiveAvgPool2d(1),
        )
        self.head = nn.Linear(48, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.head(torch.flatten(self.features(x), 1)))


def jitter_lids(lids: npt.NDArray[np.float32], rng: np.random.Generator) -> npt.NDArray[np.float32]:
    """Lids as another FaceMesh run might draw them: each point moved a little, the opening
    a little taller or flatter about the line between the corners."""
    out = lids.astype(np.float64).copy()
    axis = (out[0, 0, 1] + out[0, -1, 1]) / 2.0
    out[:, 1:-1, 1] = axis + (out[:, 1:-1, 1] - axis) * rng.uniform(0.85, 1.15)
    out += rng.normal(0.0, 0.3, out.shape)
    return out.astype(np.float32)


def occlude(
    img: npt.NDArray[np.float32], opening: npt.NDArray[np.float32], rng: np.random.Generator
) -> npt.NDArray[np.float32]:
    """Things a cabin puts in front of an eye, label unchanged: a hand or finger (a soft blob of
    skin tone entering from an edge), a glasses rim (a dark bar) or a glare spot.  A blob never
    hides more than half of the opening, so the picture still says whether the eye is open; the
    model must learn that skin in the crop is not by itself a shut lid (a cabin's hands and
    glasses; they are not what the held-out errors turned out to be: see ``synth.narrow_eye``)."""
    h, w = img.shape
    out = img.copy()
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if rng.random() < 0.3:
        area = float(opening.sum())
        for _ in range(3):
            side = rng.integers(4)
            cx = float(rng.uniform(-0.15, 1.15) * w) if side < 2 else float(rng.choice([-0.2, 1.2]) * w)
            cy = float(rng.choice([-0.25, 1.25]) * h) if side < 2 else float(rng.uniform(-0.2, 1.2) * h)
            ax, ay = rng.uniform(0.3, 0.9) * w, rng.uniform(0.4, 1.0) * h
            t = math.radians(rng.uniform(-40, 40))
            dx, dy = xx - cx, yy - cy
            u = (dx * math.cos(t) + dy * math.sin(t)) / ax
            v = (-dx * math.sin(t) + dy * math.cos(t)) / ay
            blob = np.clip((1.0 - (u * u + v * v)) * rng.uniform(3, 10), 0.0, 1.0)
            if area <= 0 or float((blob * opening).sum()) <= 0.5 * area:
                break
        else:
            blob = np.zeros_like(img)
        skin = float(np.median(img)) * rng.uniform(0.8, 1.35)
        shade = skin + rng.uniform(-12, 12) * (yy / h - 0.5) + rng.normal(0, 2.0, img.shape)
        out = out * (1.0 - blob) + shade * blob
    if rng.random() < 0.15:
        # Glasses rim: a straight dark bar across the crop, above or below the eye.
        y0 = rng.choice([rng.uniform(0, 0.25), rng.uniform(0.8, 1.0)]) * h
        slope = rng.uniform(-0.15, 0.15)
        dist = np.abs(yy - (y0 + slope * (xx - w / 2)))
        bar = np.clip(1.0 - dist / rng.uniform(0.7, 2.0), 0.0, 1.0) * rng.uniform(0.4, 0.9)
        out = out * (1.0 - bar) + 15.0 * bar
    if rng.random() < 0.1:
        # Glare on glasses or wet skin: a small bright spot anywhere.
        cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(1.5, 5.0)
        spot = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r)) * rng.uniform(0.5, 1.0)
        out = out * (1.0 - spot) + 250.0 * spot
    return out


def augment(
    crop: npt.NDArray[np.uint8], mask: npt.NDArray[np.float32], rng: np.random.Generator
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.float32]]:
    """One random, plausible camera view of a raw uint8 eye crop and its opening mask (the
    geometry moves both; light and noise touch the picture only)."""
    img = crop.astype(np.float32)
    # Geometry: small rotation, scale and shift (landmark jitter, head roll residue).
    angle = rng.uniform(-10, 10)
    scale = rng.uniform(0.9, 1.1)
    m = cv2.getRotationMatrix2D((CROP_W / 2, CROP_H / 2), angle, scale)
    m[:, 2] += rng.uniform(-2, 2, size=2)
    img = cv2.warpAffine(img, m, (CROP_W, CROP_H), borderMode=cv2.BORDER_REPLICATE)
    moved: npt.NDArray[np.float32] = cv2.warpAffine(mask, m, (CROP_W, CROP_H), borderMode=cv2.BORDER_CONSTANT)
    img = occlude(img, moved, rng)
    # Low resolution: down and back up.
    if rng.random() < 0.4:
        f = rng.uniform(0.35, 0.8)
        small = cv2.resize(
            img, (max(4, int(CROP_W * f)), max(2, int(CROP_H * f))), interpolation=cv2.INTER_AREA
        )
        img = cv2.resize(small, (CROP_W, CROP_H), interpolation=cv2.INTER_LINEAR)
    # Blur (focus, motion).
    if rng.random() < 0.3:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.3, 1.2))
    # Exposure and gamma; IR-like: strong contrast, flattened skin.
    img = np.clip(img * rng.uniform(0.6, 1.4) + rng.uniform(-30, 30), 0, 255)
    if rng.random() < 0.3:
        img = 255.0 * (img / 255.0) ** rng.uniform(0.6, 1.6)
    if rng.random() < 0.2:
        img = cv2.equalizeHist(img.astype(np.uint8)).astype(np.float32)
    # Sensor noise.
    if rng.random() < 0.5:
        img = img + rng.normal(0, rng.uniform(1, 8), img.shape)
    out: npt.NDArray[np.uint8] = np.clip(img, 0, 255).astype(np.uint8)
    return out, np.clip(moved, 0.0, 1.0)


def metrics(y: npt.NDArray[np.int64], p: npt.NDArray[np.float32], threshold: float = 0.5) -> dict[str, Any]:
    from sklearn.metrics import (
        accuracy_score,
        balanced_accuracy_score,
        confusion_matrix,
        f1_score,
        precision_score,
        recall_score,
        roc_auc_score,
    )

    pred = (p >= threshold).astype(np.int64)
    both = len(np.unique(y)) == 2
    return {
        "n": len(y),
        "closed": int(y.sum()),
        "accuracy": round(float(accuracy_score(y, pred)), 4),
        "balanced_accuracy": round(float(balanced_accuracy_score(y, pred)), 4),
        "precision": round(float(precision_score(y, pred, zero_division=0)), 4),
        "recall": round(float(recall_score(y, pred, zero_division=0)), 4),
        "f1": round(float(f1_score(y, pred, zero_division=0)), 4),
        "roc_auc": round(float(roc_auc_score(y, p)), 4) if both else None,
        "confusion": confusion_matrix(y, pred, labels=[0, 1]).tolist(),
    }


def oof_threshold(y: npt.NDArray[np.int64], p: npt.NDArray[np.float32]) -> dict[str, Any]:
    """The P(closed) cut that maximises balanced accuracy over the pooled leave-one-subject-out
    predictions (never the held-out subject's): the honest way to choose an operating point
    from so few real closures.  Ties go to the cut nearest 0.5."""
    from sklearn.metrics import balanced_accuracy_score

    grid = np.round(np.arange(0.05, 0.96, 0.05), 2)
    scores = [float(balanced_accuracy_score(y, (p >= t).astype(np.int64))) for t in grid]
    best = max(range(len(grid)), key=lambda i: (round(scores[i], 4), -abs(grid[i] - 0.5)))
    return {
        "threshold": float(grid[best]),
        "balanced_accuracy": round(scores[best], 4),
        "balanced_accuracy_at_0.5": round(scores[int(np.argmin(np.abs(grid - 0.5)))], 4),
        "n": len(y),
        "closed": int(y.sum()),
    }


def ear_baseline(
    y: npt.NDArray[np.int64], openness: npt.NDArray[np.float32], closed_ratio: float
) -> dict[str, Any]:
    """EAR alone on the same crops: 'closed' when openness ≤ the detector's closed_ratio.
    (Its ROC-AUC uses 1 - openness as the score.)"""
    score = np.clip(1.0 - openness, 0.0, 1.0).astype(np.float32)
    return metrics(y, score, threshold=1.0 - closed_ratio)


def person_scores(
    y: npt.NDArray[np.int64],
    openness: npt.NDArray[np.float32],
    p: npt.NDArray[np.float32],
    closed_ratio: float,
    cut: float | None,
    unit: str = "crops",
) -> dict[str, Any]:
    """One person's figures on the same samples: the model, EAR at the detector's cut, and EAR
    at ``cut`` (chosen on the training people; left out when there is none)."""
    out: dict[str, Any] = {
        unit: {"open": int((y == 0).sum()), "closed": int((y == 1).sum())},
        "model": metrics(y, p),
        "ear_only": ear_baseline(y, openness, closed_ratio),
    }
    if cut is not None:
        out["ear_tuned"] = {"cut": cut, **ear_baseline(y, openness, cut)}
    return out


def by_subject_scores(
    test: EyeSamples, p: npt.NDArray[np.float32], closed_ratio: float, cut: float | None
) -> dict[str, Any]:
    """:func:`person_scores` for each person of ``test``, alone: pooled, the larger clip would
    outvote the smaller."""
    out = {}
    for s in sorted(set(test.subjects.tolist())):
        one = test.subjects == s
        out[s] = person_scores(test.labels[one], test.openness[one], p[one], closed_ratio, cut)
    return out


def ear_cut(
    labels: npt.NDArray[np.int64],
    openness: npt.NDArray[np.float32],
    subjects: npt.NDArray[np.str_],
    prefer: float,
) -> dict[str, Any]:
    """The openness cut that maximises the mean per-person balanced accuracy of EAR alone on the
    training people (those with closed eyes): a fairer baseline than the detector's fixed cut,
    chosen on the same frames the model learns from.  Ties go to the cut nearest ``prefer``."""
    from sklearn.metrics import balanced_accuracy_score

    people = [str(s) for s in np.unique(subjects) if labels[subjects == s].any()]
    if not people:
        raise ValueError("no training person with closed eyes to choose an EAR cut on")
    grid = np.round(np.arange(0.10, 0.61, 0.01), 2)

    def score(cut: float) -> float:
        per = []
        for s in people:
            one = subjects == s
            per.append(balanced_accuracy_score(labels[one], (openness[one] <= cut).astype(np.int64)))
        return float(np.mean(per))

    scores = [score(c) for c in grid]
    best = max(range(len(grid)), key=lambda i: (round(scores[i], 4), -abs(grid[i] - prefer)))
    return {"cut": float(grid[best]), "mean_balanced_accuracy": round(scores[best], 4), "people": people}


@dataclass(slots=True)
class TrainConfig:
    epochs: int = 30
    batch: int = 64
    steps_per_epoch: int = 40
    lr: float = 3e-3
    seed: int = 7
    closed_share: float = 0.5  # of each batch, drawn from the closed class
    real_closed_share: float = 0.25  # of the closed ones, real; the rest synthesised from open crops
    subject_balanced: float = 0.5  # share of open draws that pick a person first, then a crop
    narrowed_share: float = 0.0  # of the open draws, narrowed but still open (v2.5: 0.2, not shipped)
    closed_ratio: float = 0.2  # the detector's rule, for the EAR-only comparison


@dataclass(slots=True)
class TrainResult:
    model: EyeStateNet
    history: list[dict[str, float]] = field(default_factory=list)


def _seed(seed: int) -> np.random.Generator:
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    return np.random.default_rng(seed)


class _Sampler:
    """Draws training crops: real open eyes (half of the draws person-first, so the few stills
    people count as much as the long clips; a share of them narrowed, still open), real closed
    eyes, and synthetic closures."""

    def __init__(self, data: EyeSamples, cfg: TrainConfig, rng: np.random.Generator) -> None:
        self.data, self.cfg, self.rng = data, cfg, rng
        self.closed = np.flatnonzero(data.labels == 1)
        self.open = np.flatnonzero(data.labels == 0)
        if len(self.open) == 0:
            raise ValueError("training needs open-eye crops")
        # Lids with an opening to close or narrow, by crop index (checked once, not per draw).
        self.has_opening = np.zeros(len(data.labels), dtype=bool)
        self.has_opening[self.open] = [usable(data.lids[i]) for i in self.open]
        self.closable = self.open[self.has_opening[self.open]]
        if len(self.closed) == 0 and len(self.closable) == 0:
            raise ValueError("training needs closed-eye crops or open crops with lids to close")
        people = data.subjects[self.open]
        self.by_subject = [self.open[people == s] for s in np.unique(people)]

    def _open_index(self) -> int:
        if self.rng.random() < self.cfg.subject_balanced:
            group = self.by_subject[self.rng.integers(len(self.by_subject))]
            return int(self.rng.choice(group))
        return int(self.rng.choice(self.open))

    def closed_sample(self) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.float32]]:
        if len(self.closed) > 0 and (
            len(self.closable) == 0 or self.rng.random() < self.cfg.real_closed_share
        ):
            i = int(self.rng.choice(self.closed))
            return self.data.crops[i], self.data.lids[i]
        i = int(self.rng.choice(self.closable))
        return close_eye(self.data.crops[i], self.data.lids[i], self.rng)

    def open_sample(self) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.float32]]:
        i = self._open_index()
        crop, lids = self.data.crops[i], self.data.lids[i]
        # Drawn only when asked: with no narrowing the random stream (and v2.3) is unchanged.
        share = self.cfg.narrowed_share
        if share > 0 and self.rng.random() < share and self.has_opening[i]:
            return narrow_eye(crop, lids, self.rng)
        return crop, lids

    def view(self, crop: npt.NDArray[np.uint8], lids: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """One augmented model input ``(CHANNELS, H, W)``."""
        img, mask = augment(crop, aperture_mask(jitter_lids(lids, self.rng)), self.rng)
        return np.stack([standardise(img), mask])

    def batch(self) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        n_closed = max(1, int(self.cfg.batch * self.cfg.closed_share))
        samples = [self.closed_sample() for _ in range(n_closed)]
        samples += [self.open_sample() for _ in range(self.cfg.batch - n_closed)]
        y = np.zeros(self.cfg.batch, dtype=np.float32)
        y[:n_closed] = 1.0
        return np.stack([self.view(c, lid) for c, lid in samples]), y


def train(
    data: EyeSamples, cfg: TrainConfig, progress: bool = True, on_step: StepCallback | None = None
) -> TrainResult:
    """Train with class-balanced batches and fresh augmentations (and closures) every step.
    ``on_step(epoch, epochs, loss)`` after every epoch (a job's progress; it may raise to stop)."""
    from tqdm import tqdm

    rng = _seed(cfg.seed)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    model = EyeStateNet()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=1e-3)
    steps = cfg.epochs * cfg.steps_per_epoch
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=steps)
    sampler = _Sampler(data, cfg, rng)
    loss_fn = nn.BCELoss()
    result = TrainResult(model=model)
    bar = tqdm(total=steps, desc="train eye-state", unit="step", disable=not progress, leave=False)
    for epoch in range(cfg.epochs):
        model.train()
        total = 0.0
        for _ in range(cfg.steps_per_epoch):
            batch, y = sampler.batch()
            xb = torch.from_numpy(batch)
            yb = torch.from_numpy(y)[:, None]
            opt.zero_grad()
            loss = loss_fn(model(xb), yb)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach())
            bar.update(1)
        result.history.append({"epoch": epoch + 1, "loss": round(total / cfg.steps_per_epoch, 4)})
        bar.set_postfix(loss=result.history[-1]["loss"])
        if on_step is not None:
            on_step(epoch + 1, cfg.epochs, total / cfg.steps_per_epoch)
    bar.close()
    model.eval()
    return result


@torch.no_grad()
def predict(
    model: EyeStateNet, crops: npt.NDArray[np.uint8], lids: npt.NDArray[np.float32], batch: int = 512
) -> npt.NDArray[np.float32]:
    model.eval()
    out = []
    for i in range(0, len(crops), batch):
        xb = torch.from_numpy(model_input(crops[i : i + batch], lids[i : i + batch]))
        out.append(model(xb).numpy()[:, 0])
    probs: npt.NDArray[np.float32] = np.concatenate(out).astype(np.float32)
    return probs


def run_training(
    clips: list[ClipData],
    out: Path,
    cfg: TrainConfig,
    progress: bool = True,
    stills: list[ClipData] | None = None,
    test_subjects: frozenset[str] | tuple[str, ...] = TEST_SUBJECTS,
    *,
    leave_one_out: bool = True,
    on_step: StepCallback | None = None,
    version: str = VERSION,
) -> dict[str, Any]:
    """Leave-one-subject-out figures on the clip subjects that have real closures (unless
    ``leave_one_out`` is off: a retraining job is judged by the gate instead), then the shipped
    model trained on all training subjects and tested once on the held-out subject.  ``stills``
    (open eyes of more people) always train: they have no closed eyes to test on."""
    stills = stills or []
    held_names = tuple(sorted(test_subjects))
    clash = sorted({c.subject for c in stills} & set(held_names))
    if clash:
        # A still that shares a held-out person's letter would train under that name, and the
        # report would list a held-out person among the training subjects.
        raise ValueError(f"stills use held-out subject names {clash}: give those faces letters of their own")
    held_out = [c for c in clips if c.subject in held_names]
    clip_subjects = sorted({c.subject for c in clips} - set(held_names))
    still_subjects = sorted({c.subject for c in stills} - set(clip_subjects))
    pool = [c for c in clips if c.subject not in held_names] + stills
    report: dict[str, Any] = {
        "model": ARCH,
        "version": version,
        "input": {"shape": [None, CHANNELS, CROP_H, CROP_W], "dtype": "float32", "layout": "NCHW"},
        "preprocessing": PREPROCESSING,
        "output": "probability that the eye is closed, (N, 1)",
        "train": asdict(cfg),
        "leave_one_subject_out": [],
    }
    t0 = time.time()
    oof_y, oof_p = [], []
    for held in clip_subjects if leave_one_out else []:
        rest = [s for s in clip_subjects if s != held] + still_subjects
        test = eye_samples(clips, [held])
        train_data = eye_samples(pool, rest)
        model = train(train_data, cfg, progress).model
        p = predict(model, test.crops, test.lids)
        oof_y.append(test.labels)
        oof_p.append(p)
        cut = (
            ear_cut(train_data.labels, train_data.openness, train_data.subjects, cfg.closed_ratio)["cut"]
            if train_data.labels.any()
            else None
        )
        fold = {
            "train_subjects": rest,
            "test_subject": held,
            **person_scores(test.labels, test.openness, p, cfg.closed_ratio, cut),
        }
        report["leave_one_subject_out"].append(fold)
        # The fold model is kept: `eval` on this person's clips with it is an agent figure on
        # frames the model never saw (the shipped model trained on them).
        _save(
            fold_path(out, held), model, {**report, "fold": fold}, test, None, cfg, f"{version}+loso-{held}"
        )
    if oof_p:
        report["out_of_fold"] = oof_threshold(np.concatenate(oof_y), np.concatenate(oof_p))
    train_subjects = clip_subjects + still_subjects
    data = eye_samples(pool, train_subjects)
    res = train(data, cfg, progress, on_step)
    report["data"] = {
        "train_subjects": train_subjects,
        "train_crops": len(data.labels),
        "train_closed_crops": int(data.labels.sum()),
        "synthetic_closed_share": round(1.0 - cfg.real_closed_share, 3),
        "synthetic_narrowed_open_share": cfg.narrowed_share,
        "sha256": data_hash(data.crops, data.labels, data.lids),
        "clips": sorted(c.clip for c in clips if c.subject in clip_subjects),
        "stills": sorted(c.clip for c in stills),
    }
    if held_out:
        test = eye_samples(held_out, held_names)
        p = predict(res.model, test.crops, test.lids)
        report["held_out"] = {
            "subject": ",".join(sorted({c.subject for c in held_out})),
            "clips": sorted(c.clip for c in held_out),
            "model": metrics(test.labels, p),
            "ear_only": ear_baseline(test.labels, test.openness, cfg.closed_ratio),
        }
        if "out_of_fold" in report:
            t = report["out_of_fold"]["threshold"]
            report["held_out"]["model_at_out_of_fold_threshold"] = metrics(test.labels, p, threshold=t)
        # EAR alone at a cut chosen on the training people, as the model's is: on so few hard
        # open eyes it is the baseline to beat, not only the detector's fixed cut.
        people = eye_samples(pool, clip_subjects)
        tuned = ear_cut(people.labels, people.openness, people.subjects, cfg.closed_ratio)
        report["held_out"]["ear_tuned_cut"] = tuned
        report["held_out"]["by_subject"] = by_subject_scores(test, p, cfg.closed_ratio, tuned["cut"])
    report["history"] = res.history
    report["train_seconds"] = round(time.time() - t0, 1)
    _save(out, res.model, report, eye_samples(held_out, held_names) if held_out else data, data, cfg, version)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2))
    return report


def _save(
    path: Path,
    model: EyeStateNet,
    report: dict[str, Any],
    probe_source: EyeSamples,
    calibration_source: EyeSamples | None,
    cfg: TrainConfig,
    version: str = VERSION,
) -> None:
    """A checkpoint export can read: the weights, the report, a few real inputs the model was
    not trained on (export checks parity on them) and int8 calibration inputs.  A fold model's
    version names its fold, so its events never pass for the shipped model's."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(cfg.seed)
    pick = rng.choice(len(probe_source.crops), size=min(64, len(probe_source.crops)), replace=False)
    ckpt: dict[str, Any] = {
        "arch": ARCH,
        "version": version,
        "state_dict": model.state_dict(),
        "report": report,
        "probe_inputs": model_input(probe_source.crops[pick], probe_source.lids[pick]),
    }
    if calibration_source is not None:
        # int8 calibration needs the activations of both classes, as training shows them.
        ckpt["calibration_inputs"] = _calibration_set(calibration_source, cfg, rng)
    torch.save(ckpt, path)


def _calibration_set(
    data: EyeSamples, cfg: TrainConfig, rng: np.random.Generator, size: int = 512
) -> npt.NDArray[np.float32]:
    """Training-distribution model inputs for int8 calibration: as many closed as open, drawn
    and augmented the way training draws them (never from the held-out subject)."""
    sampler = _Sampler(data, cfg, rng)
    samples = [sampler.closed_sample() for _ in range(size // 2)]
    samples += [sampler.open_sample() for _ in range(size - size // 2)]
    return np.stack([sampler.view(c, lid) for c, lid in samples])


class UnreadableCheckpoint(ValueError):
    """The file is there but is no torch checkpoint at all (an input problem, not a data one)."""


def read_checkpoint(path: Path, arch: str) -> dict[str, Any]:
    """A checkpoint dict of the expected architecture, or one clear error."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except FileNotFoundError:
        raise FileNotFoundError(f"checkpoint {path}: not found") from None
    except Exception as err:  # torch raises many kinds on a bad file
        raise UnreadableCheckpoint(
            f"checkpoint {path}: not a readable torch checkpoint ({type(err).__name__})"
        ) from err
    if not isinstance(ckpt, dict) or ckpt.get("arch") != arch:
        found = ckpt.get("arch") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise ValueError(f"checkpoint {path}: architecture {found!r}, expected {arch!r}")
    return ckpt


def load_state(model: nn.Module, ckpt: dict[str, Any], path: Path) -> None:
    try:
        model.load_state_dict(ckpt["state_dict"])
    except (RuntimeError, KeyError) as err:
        raise ValueError(
            f"checkpoint {path}: weights do not fit {type(model).__name__}: {str(err).splitlines()[0]}"
        ) from None
    model.eval()


def load_checkpoint(path: Path) -> tuple[EyeStateNet, dict[str, Any]]:
    ckpt = read_checkpoint(path, ARCH)
    model = EyeStateNet()
    load_state(model, ckpt, path)
    return model, ckpt


def parameters(model: nn.Module) -> int:
    return sum(math.prod(p.shape) for p in model.parameters())
