"""Temporal closure/drowsiness model: a small GRU over per-frame features (torch; training only).

Per frame it reads [openness, EAR, MAR, pitch below neutral, iris visibility, eye-state
probability, frame interval] and outputs two probabilities: the eyes are closed *now*, and a
drowsiness score (the share of the last 10 s spent with closed eyes, as PERCLOS over a short
window).  Its first job is to tell a real closure from looking down or laughing using the
history a single frame lacks.

It runs one frame at a time at the edge, carrying its hidden state: the ONNX export takes
``x`` (N, 1, F) and ``h`` (1, N, H) and returns ``y`` (N, 1, 2) and ``h_out``.

Training data: real per-frame sequences of the training subjects (closed-now labels only) plus
synthetic timelines (blinks, closures, look-downs, laughs at 15 and 30 fps) for both targets.
Evaluation is on real frames only: leave-one-subject-out, and the held-out subject.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from edge_agent.perception.features import temporal_vector as frame_vector

from .dataset import FEATURES, TEST_SUBJECTS, ClipData, StepCallback, data_hash

ARCH = "TemporalGRU"
VERSION = "1.3.0"  # 1.1: v2 eye-state probabilities, 3 more people; 1.2: on v2.2; 1.3: v2.3, P
N_FEATURES = 7
HIDDEN = 24
DROWSY_WINDOW_S = 10.0


class TemporalNet(nn.Module):
    def __init__(self, hidden: int = HIDDEN) -> None:
        super().__init__()
        self.gru = nn.GRU(N_FEATURES, hidden, batch_first=True)
        self.head = nn.Linear(hidden, 2)

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out, h_out = self.gru(x, h)
        return torch.sigmoid(self.head(out)), h_out


def clip_sequence(c: ClipData, eye_prob: npt.NDArray[np.float32] | None = None) -> npt.NDArray[np.float32]:
    f = {name: c.features[:, i] for i, name in enumerate(FEATURES)}
    face = f["face"] > 0.5
    neutral = float(np.median(f["pitch"][face])) if face.any() else 0.0
    dt = np.diff(c.t, prepend=c.t[0] if len(c.t) else 0.0)
    probs = eye_prob if eye_prob is not None else np.full(len(c.t), -1.0, dtype=np.float32)
    rows = [
        frame_vector(
            f["openness"][i],
            f["ear"][i],
            f["mar"][i],
            neutral - f["pitch"][i],
            f["iris_vis"][i],
            float(probs[i]),
            float(dt[i]),
        )
        for i in range(len(c.t))
    ]
    return np.asarray(rows, dtype=np.float32)


def synthetic_timeline(
    rng: np.random.Generator, seconds: float = 20.0
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """One synthetic driver: (features (T, F), targets (T, 2))."""
    fps = float(rng.choice([15.0, 24.0, 30.0]))
    n = int(seconds * fps)
    openness = np.clip(1.0 + rng.normal(0, 0.06, n), 0.6, 1.4)
    mar = np.clip(rng.normal(0.1, 0.05, n), 0, 1)
    pitch_drop = rng.normal(0, 2.0, n)
    eye_prob = np.clip(rng.normal(0.1, 0.08, n), 0, 1)
    closed = np.zeros(n)
    t = 0
    while t < n:
        t += int(rng.uniform(1.0, 5.0) * fps)
        kind = rng.choice(["blink", "closure", "look_down", "laugh"], p=[0.5, 0.2, 0.15, 0.15])
        length = {
            "blink": rng.uniform(0.1, 0.4),
            "closure": rng.uniform(0.8, 4.0),
            "look_down": rng.uniform(0.8, 3.0),
            "laugh": rng.uniform(0.5, 2.0),
        }[kind]
        k = max(1, int(length * fps))
        sl = slice(t, min(n, t + k))
        m = sl.stop - sl.start
        if m <= 0:
            break
        if kind in ("blink", "closure"):
            openness[sl] = rng.uniform(0.02, 0.18, m)
            eye_prob[sl] = np.clip(rng.normal(0.75, 0.2, m), 0, 1)
            closed[sl] = 1.0
        elif kind == "look_down":
            openness[sl] = rng.uniform(0.18, 0.4, m)
            pitch_drop[sl] += rng.uniform(3, 20)
            eye_prob[sl] = np.clip(rng.normal(0.35, 0.25, m), 0, 1)
        else:
            openness[sl] = rng.uniform(0.35, 0.65, m)
            mar[sl] = rng.uniform(0.3, 0.8, m)
            eye_prob[sl] = np.clip(rng.normal(0.25, 0.2, m), 0, 1)
        t = sl.stop
    window = max(1, int(DROWSY_WINDOW_S * fps))
    csum = np.cumsum(np.concatenate([[0.0], closed]))
    drowsy = np.array([(csum[i + 1] - csum[max(0, i + 1 - window)]) / window for i in range(n)])
    ear = openness * rng.uniform(0.22, 0.34)
    iris = np.clip(openness * 0.75 + rng.normal(0, 0.03, n), 0, 1)
    x = np.asarray(
        [
            frame_vector(openness[i], ear[i], mar[i], pitch_drop[i], iris[i], eye_prob[i], 1.0 / fps)
            for i in range(n)
        ],
        dtype=np.float32,
    )
    return x, np.stack([closed, drowsy], axis=1).astype(np.float32)


@dataclass(slots=True)
class TemporalTrainConfig:
    steps: int = 400
    batch: int = 16
    seq_seconds: float = 20.0
    real_share: float = 0.5
    lr: float = 3e-3
    seed: int = 11


def _seed(seed: int) -> np.random.Generator:
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    return np.random.default_rng(seed)


def train(
    real: list[tuple[npt.NDArray[np.float32], npt.NDArray[np.int8]]],
    cfg: TemporalTrainConfig,
    progress: bool = True,
    on_step: StepCallback | None = None,
) -> TemporalNet:
    """``real``: (features (T, F), closed-now labels (T,) with -1 = unlabelled) per clip.
    ``on_step(step, steps, loss)`` after every step (a job's progress; it may raise to stop)."""
    from tqdm import tqdm

    rng = _seed(cfg.seed)
    model = TemporalNet()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=1e-4)
    for step in tqdm(range(cfg.steps), desc="train temporal", unit="step", disable=not progress, leave=False):
        xs, ys, masks = [], [], []
        length = 300
        for _b in range(cfg.batch):
            if real and rng.random() < cfg.real_share:
                x, lab = real[int(rng.integers(len(real)))]
                start = int(rng.integers(0, max(1, len(x) - length)))
                x = x[start : start + length]
                labf = lab[start : start + length].astype(np.float32)
                y = np.stack([np.clip(labf, 0, 1), np.zeros_like(labf)], axis=1)
                mask = np.stack([labf >= 0, np.zeros_like(labf, dtype=bool)], axis=1)
            else:
                x, y = synthetic_timeline(rng, cfg.seq_seconds)
                x, y = x[:length], y[:length]
                mask = np.ones_like(y, dtype=bool)
            pad = length - len(x)
            xs.append(np.pad(x, ((0, pad), (0, 0))))
            ys.append(np.pad(y, ((0, pad), (0, 0))))
            masks.append(np.pad(mask, ((0, pad), (0, 0))))
        xb = torch.from_numpy(np.stack(xs))
        yb = torch.from_numpy(np.stack(ys))
        mb = torch.from_numpy(np.stack(masks))
        pred, _ = model(xb, torch.zeros(1, len(xs), HIDDEN))
        loss = nn.functional.binary_cross_entropy(pred[mb], yb[mb])
        opt.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        opt.step()
        if on_step is not None:
            on_step(step + 1, cfg.steps, float(loss.detach()))
    model.eval()
    return model


@torch.no_grad()
def run_sequence(model: TemporalNet, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    out, _ = model(torch.from_numpy(x[None]), torch.zeros(1, 1, HIDDEN))
    probs: npt.NDArray[np.float32] = out[0].numpy()
    return probs


def labelled_frames(
    seqs: dict[str, tuple[npt.NDArray[np.float32], npt.NDArray[np.int8]]],
    subject_of: dict[str, str],
    names: list[str],
) -> tuple[Any, Any, Any, list[Any]]:
    """(closed-now labels, openness, subject) of the labelled frames of these clips (``seqs``:
    clip -> (clip_sequence rows, labels)), and each clip's mask of them."""
    keep = [seqs[n][1] >= 0 for n in names]
    y = np.concatenate([seqs[n][1][k].astype(np.int64) for n, k in zip(names, keep, strict=True)])
    o = np.concatenate([seqs[n][0][k, 0] for n, k in zip(names, keep, strict=True)])
    s = np.concatenate([np.full(int(k.sum()), subject_of[n]) for n, k in zip(names, keep, strict=True)])
    return y, o, s, keep


def frame_ear_cut(
    seqs: dict[str, tuple[npt.NDArray[np.float32], npt.NDArray[np.int8]]],
    subject_of: dict[str, str],
    train_names: list[str],
    prefer: float = 0.2,
) -> dict[str, Any] | None:
    """EAR's cut chosen on the training people's labelled frames (:func:`ear_cut`'s answer;
    none without a closed frame)."""
    from .eye_state import ear_cut

    if not train_names:
        return None
    y, o, s, _ = labelled_frames(seqs, subject_of, train_names)
    return ear_cut(y, o, s, prefer) if y.any() else None


def run_training(
    clips: list[ClipData],
    out: Path,
    cfg: TemporalTrainConfig,
    eye_probs: dict[str, npt.NDArray[np.float32]] | None = None,
    progress: bool = True,
    eye_prob_source: dict[str, str] | None = None,
    test_subjects: frozenset[str] | tuple[str, ...] = TEST_SUBJECTS,
    *,
    leave_one_out: bool = True,
    on_step: StepCallback | None = None,
    version: str = VERSION,
) -> dict[str, Any]:
    """Leave-one-subject-out figures (unless ``leave_one_out`` is off: a retraining job is judged
    by the gate instead), then the shipped GRU trained on every training subject and tested once
    on the held-out one.  ``eye_prob_source``: per subject, the eye-state model that gave its
    probabilities (for the report); ``on_step``: the final training's progress."""
    from .eye_state import person_scores

    eye_probs = eye_probs or {}
    seqs = {c.clip: (clip_sequence(c, eye_probs.get(c.clip)), c.labels) for c in clips}
    by_subject: dict[str, list[str]] = {}
    for c in clips:
        by_subject.setdefault(c.subject, []).append(c.clip)
    held_out = frozenset(test_subjects)
    train_subjects = sorted(s for s in by_subject if s not in held_out)
    tested = sorted(s for s in by_subject if s in held_out)
    if not train_subjects:
        raise ValueError("no training subject: every clip belongs to a held-out person or vehicle")

    subject_of = {c.clip: c.subject for c in clips}

    def labelled(names: list[str]) -> tuple[Any, Any, Any, list[Any]]:
        return labelled_frames(seqs, subject_of, names)

    def tuned_cut(train_names: list[str]) -> float | None:
        cut = frame_ear_cut(seqs, subject_of, train_names)
        return cut["cut"] if cut else None

    def score(model: TemporalNet, names: list[str], cut: float | None) -> dict[str, Any]:
        """The GRU, EAR at the detector's cut, and EAR at ``cut`` (chosen on the training people)."""
        y, o, _, keep = labelled(names)
        p = np.concatenate([run_sequence(model, seqs[n][0])[k, 0] for n, k in zip(names, keep, strict=True)])
        return person_scores(y, o, p, 0.2, cut, unit="frames")

    t0 = time.time()
    report: dict[str, Any] = {
        "model": ARCH,
        "version": version,
        "train": asdict(cfg),
        "leave_one_subject_out": [],
    }
    # Leave-one-subject-out needs two training subjects at least (one to leave out, one to train).
    for held in train_subjects if len(train_subjects) > 1 and leave_one_out else []:
        rest = [n for s in train_subjects if s != held for n in by_subject[s]]
        model = train([seqs[n] for n in rest], cfg, progress)
        fold = score(model, by_subject[held], tuned_cut(rest))
        report["leave_one_subject_out"].append({"test_subject": held, **fold})
    names = [n for s in train_subjects for n in by_subject[s]]
    model = train([seqs[n] for n in names], cfg, progress, on_step)
    if tested:
        test_clips = [n for s in tested for n in by_subject[s]]
        cut = tuned_cut(names)
        report["held_out"] = {
            "subject": ",".join(tested),
            "clips": test_clips,
            **score(model, test_clips, cut),
            # Pooled, the larger clip outvotes the other; each held-out person is also reported alone.
            "by_subject": {s: score(model, by_subject[s], cut) for s in tested},
        }
    report["data"] = {
        "train_subjects": train_subjects,
        "real_frames": int(sum(len(seqs[n][0]) for n in names)),
        "real_labelled_frames": int(sum(int((seqs[n][1] >= 0).sum()) for n in names)),
        "synthetic_share": 1.0 - cfg.real_share,
        "sha256": data_hash(*[seqs[n][0] for n in names]),
        "eye_prob_input": "eye-state model" if eye_probs else "absent (fed as 0.5)",
        "eye_prob_source": eye_prob_source or {},
    }
    report["train_seconds"] = round(time.time() - t0, 1)
    out.parent.mkdir(parents=True, exist_ok=True)
    probe = seqs[names[0]][0][:64]
    torch.save(
        {
            "arch": ARCH,
            "version": version,
            "state_dict": model.state_dict(),
            "report": report,
            "probe_frames": probe,
        },
        out,
    )
    out.with_suffix(".json").write_text(json.dumps(report, indent=2))
    return report


def load_checkpoint(path: Path) -> tuple[TemporalNet, dict[str, Any]]:
    from .eye_state import load_state, read_checkpoint

    ckpt = read_checkpoint(path, ARCH)
    model = TemporalNet()
    load_state(model, ckpt, path)
    return model, ckpt
