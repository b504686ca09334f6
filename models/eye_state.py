"""Eye-state network: open/closed from one aligned grayscale eye crop (torch; training only).

Small on purpose (≈ 24 k parameters, 24x48 input): it runs on both eyes of every frame next to
MediaPipe and must cost a few percent of it on a CPU.  Real labelled crops are few (two
training subjects), so the training leans on augmentations that match what a vehicle camera
does to an eye: exposure, blur, sensor noise, small rotations and shifts, low resolution, and
IR-like contrast.
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

from edge_agent.eyecrop import CROP_H, CROP_W, standardise

from .dataset import ClipData, data_hash, eye_samples

ARCH = "EyeStateNet"
VERSION = "1.0.0"


class EyeStateNet(nn.Module):
    """Input (N, 1, 24, 48) standardised crops; output (N, 1) probability that the eye is closed."""

    def __init__(self) -> None:
        super().__init__()

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()
            )

        self.features = nn.Sequential(
            block(1, 16),
            nn.MaxPool2d(2),  # 12x24
            block(16, 32),
            nn.MaxPool2d(2),  # 6x12
            block(32, 48),
            nn.AdaptiveAvgPool2d(1),
        )
        self.head = nn.Linear(48, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.head(torch.flatten(self.features(x), 1)))


def augment(crop: npt.NDArray[np.uint8], rng: np.random.Generator) -> npt.NDArray[np.uint8]:
    """One random, plausible camera view of a raw uint8 eye crop."""
    img = crop.astype(np.float32)
    # Geometry: small rotation, scale and shift (landmark jitter, head roll residue).
    angle = rng.uniform(-10, 10)
    scale = rng.uniform(0.9, 1.1)
    m = cv2.getRotationMatrix2D((CROP_W / 2, CROP_H / 2), angle, scale)
    m[:, 2] += rng.uniform(-2, 2, size=2)
    img = cv2.warpAffine(img, m, (CROP_W, CROP_H), borderMode=cv2.BORDER_REPLICATE)
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
    return out


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


def ear_baseline(
    y: npt.NDArray[np.int64], openness: npt.NDArray[np.float32], closed_ratio: float
) -> dict[str, Any]:
    """EAR alone on the same crops: 'closed' when openness ≤ the detector's closed_ratio.
    (Its ROC-AUC uses 1 - openness as the score.)"""
    score = np.clip(1.0 - openness, 0.0, 1.0).astype(np.float32)
    return metrics(y, score, threshold=1.0 - closed_ratio)


@dataclass(slots=True)
class TrainConfig:
    epochs: int = 30
    batch: int = 64
    steps_per_epoch: int = 40
    lr: float = 3e-3
    seed: int = 7
    closed_share: float = 0.5  # of each batch, drawn from the closed class
    closed_ratio: float = 0.2  # the detector's rule, for the EAR-only comparison


@dataclass(slots=True)
class TrainResult:
    model: EyeStateNet
    history: list[dict[str, float]] = field(default_factory=list)


def _seed(seed: int) -> np.random.Generator:
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    return np.random.default_rng(seed)


def train(
    x: npt.NDArray[np.uint8], y: npt.NDArray[np.int64], cfg: TrainConfig, progress: bool = True
) -> TrainResult:
    """Train on raw crops with class-balanced batches and fresh augmentations every step."""
    from tqdm import tqdm

    rng = _seed(cfg.seed)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    model = EyeStateNet()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=1e-3)
    steps = cfg.epochs * cfg.steps_per_epoch
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=steps)
    closed_idx = np.flatnonzero(y == 1)
    open_idx = np.flatnonzero(y == 0)
    if len(closed_idx) == 0 or len(open_idx) == 0:
        raise ValueError("training needs both open and closed crops")
    n_closed = max(1, int(cfg.batch * cfg.closed_share))
    loss_fn = nn.BCELoss()
    result = TrainResult(model=model)
    bar = tqdm(total=steps, desc="train eye-state", unit="step", disable=not progress, leave=False)
    for epoch in range(cfg.epochs):
        model.train()
        total = 0.0
        for _ in range(cfg.steps_per_epoch):
            idx = np.concatenate(
                [rng.choice(closed_idx, n_closed), rng.choice(open_idx, cfg.batch - n_closed)]
            )
            batch = np.stack([augment(x[i], rng) for i in idx])
            xb = torch.from_numpy(standardise(batch)[:, None])
            yb = torch.from_numpy(y[idx].astype(np.float32))[:, None]
            opt.zero_grad()
            loss = loss_fn(model(xb), yb)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach())
            bar.update(1)
        result.history.append({"epoch": epoch + 1, "loss": round(total / cfg.steps_per_epoch, 4)})
        bar.set_postfix(loss=result.history[-1]["loss"])
    bar.close()
    model.eval()
    return result


@torch.no_grad()
def predict(model: EyeStateNet, x: npt.NDArray[np.uint8], batch: int = 512) -> npt.NDArray[np.float32]:
    model.eval()
    out = []
    for i in range(0, len(x), batch):
        xb = torch.from_numpy(standardise(x[i : i + batch])[:, None])
        out.append(model(xb).numpy()[:, 0])
    probs: npt.NDArray[np.float32] = np.concatenate(out).astype(np.float32)
    return probs


def run_training(clips: list[ClipData], out: Path, cfg: TrainConfig, progress: bool = True) -> dict[str, Any]:
    """Leave-one-subject-out figures on the training subjects, then the shipped model trained
    on all training subjects and tested once on the held-out subject."""
    train_subjects = sorted({c.subject for c in clips} - {"C"})
    report: dict[str, Any] = {
        "model": ARCH,
        "version": VERSION,
        "input": {"shape": [None, 1, CROP_H, CROP_W], "dtype": "float32", "layout": "NCHW"},
        "preprocessing": "edge_agent.eyecrop.eye_crops: corners levelled, eye = 62% of width, "
        "image-right eye mirrored, grayscale, per-crop standardised",
        "output": "probability that the eye is closed, (N, 1)",
        "train": asdict(cfg),
        "leave_one_subject_out": [],
    }
    t0 = time.time()
    for held in train_subjects:
        rest = [s for s in train_subjects if s != held]
        xtr, ytr, _ = eye_samples(clips, rest)
        xte, yte, ote = eye_samples(clips, [held])
        model = train(xtr, ytr, cfg, progress).model
        p = predict(model, xte)
        report["leave_one_subject_out"].append(
            {
                "train_subjects": rest,
                "test_subject": held,
                "model": metrics(yte, p),
                "ear_only": ear_baseline(yte, ote, cfg.closed_ratio),
            }
        )
    xtr, ytr, _ = eye_samples(clips, train_subjects)
    res = train(xtr, ytr, cfg, progress)
    report["data"] = {
        "train_subjects": train_subjects,
        "train_crops": len(ytr),
        "train_closed_crops": int(ytr.sum()),
        "sha256": data_hash(xtr, ytr),
        "clips": sorted(c.clip for c in clips if c.subject in train_subjects),
    }
    if any(c.subject == "C" for c in clips):
        xte, yte, ote = eye_samples(clips, ["C"])
        p = predict(res.model, xte)
        report["held_out"] = {
            "subject": "C",
            "clips": sorted(c.clip for c in clips if c.subject == "C"),
            "model": metrics(yte, p),
            "ear_only": ear_baseline(yte, ote, cfg.closed_ratio),
        }
    report["history"] = res.history
    report["train_seconds"] = round(time.time() - t0, 1)
    out.parent.mkdir(parents=True, exist_ok=True)
    # A few real held-out crops travel with the checkpoint: export checks parity on them.
    probe_x, _, _ = eye_samples(clips, ["C"] if any(c.subject == "C" for c in clips) else train_subjects)
    rng = np.random.default_rng(cfg.seed)
    probe = probe_x[rng.choice(len(probe_x), size=min(64, len(probe_x)), replace=False)]
    torch.save(
        {
            "arch": ARCH,
            "version": VERSION,
            "state_dict": res.model.state_dict(),
            "report": report,
            "probe_crops": probe,
            # int8 calibration needs the activations of both classes: every closed training crop,
            # as many open ones, and augmented views of both.
            "calibration_crops": _calibration_set(xtr, ytr, rng),
        },
        out,
    )
    out.with_suffix(".json").write_text(json.dumps(report, indent=2))
    return report


def _calibration_set(
    x: npt.NDArray[np.uint8], y: npt.NDArray[np.int64], rng: np.random.Generator, size: int = 256
) -> npt.NDArray[np.uint8]:
    closed = x[y == 1]
    opened = x[y == 0][
        rng.choice(int((y == 0).sum()), size=min(int((y == 0).sum()), size // 2), replace=False)
    ]
    base = np.concatenate([closed, opened])
    extra = [augment(base[i], rng) for i in rng.choice(len(base), size=max(0, size - len(base)))]
    return np.concatenate([base, np.stack(extra)]) if extra else base


def read_checkpoint(path: Path, arch: str) -> dict[str, Any]:
    """A checkpoint dict of the expected architecture, or one clear error."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except FileNotFoundError:
        raise FileNotFoundError(f"checkpoint {path}: not found") from None
    except Exception as err:  # torch raises many kinds on a bad file
        raise ValueError(
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
