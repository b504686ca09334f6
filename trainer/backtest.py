"""`sleepsafe-sink backtest --model NAME@ALIAS [--since 7d]`: the stored labelled events replayed
through a registered version, on the very scoring path of ``POST /predict`` (the sink's
onnxruntime session of that version), and the agreement with the people's labels printed beside
the champion's.

An event's frames are labelled as the training data labels them (models/fleet.py): the frames
of its span with a face, shut for ``confirmed``, open for ``false_alarm``.  Figures: balanced
accuracy over those frames, and per event whether the model's mean P(closed) over them agrees
with the label.  With ``--held-out`` only the vehicles every export holds out are replayed: on
the same data, the figure equals the one the gate measured on them (``model_fleet``).
"""

from __future__ import annotations

import re
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np

from cloud_sink.config import SinkConfig
from cloud_sink.jobs.api import PredictIn, Scorer
from cloud_sink.registry import KIND_OF, Registry, parse_ref
from cloud_sink.store import Store

SINCE_RE = re.compile(r"^(?P<n>[0-9]+)(?P<unit>[hdw])$")
UNITS = {"h": "hours", "d": "days", "w": "weeks"}


def parse_since(text: str | None, now: datetime | None = None) -> datetime | None:
    """``7d``, ``12h``, ``2w`` or an ISO 8601 time; None for everything."""
    if not text:
        return None
    m = SINCE_RE.match(text.strip())
    if m:
        now = now or datetime.now(timezone.utc)
        return (now - timedelta(**{UNITS[m["unit"]]: int(m["n"])})).replace(tzinfo=None)
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"--since {text[:40]!r}: expected e.g. 7d, 12h, 2w or an ISO 8601 time") from None


def _scores(scorer: Scorer, ref: str, kind: str, clips: list[Any], probs: dict[str, Any]) -> dict[str, Any]:
    from edge_agent.perception.eyecrop import model_input
    from models.dataset import eye_samples
    from models.eye_state import metrics
    from models.temporal import clip_sequence

    ys, ps, agree, events = [], [], 0, 0
    version = None
    for c in clips:
        keep = c.labels >= 0
        if not keep.any():
            continue
        if kind == "temporal":
            window = clip_sequence(c, probs.get(c.clip)).tolist()
            out = scorer.score(ref, PredictIn(windows=[window]))
            p = np.asarray(out["outputs"][0]["closed"], dtype=np.float32)[keep]
            y = c.labels[keep].astype(np.int64)
        else:
            if not c.crops.any():
                continue
            test = eye_samples([c], [c.subject])
            out = scorer.score(ref, PredictIn(crops=model_input(test.crops, test.lids).tolist()))
            p = np.asarray([o["closed"] for o in out["outputs"]], dtype=np.float32)
            y = test.labels.astype(np.int64)
        version = out["version"]
        ys.append(y)
        ps.append(p)
        events += 1
        agree += int((float(p.mean()) >= 0.5) == bool(y[0]))
    if not ys:
        return {"model": ref, "version": version, "events": 0}
    m = metrics(np.concatenate(ys), np.concatenate(ps))
    return {
        "model": ref,
        "version": version,
        "events": events,
        "events_agreeing": agree,
        "event_agreement": round(agree / events, 4),
        "frames": m["n"],
        "balanced_accuracy": m["balanced_accuracy"],
        "f1": m["f1"],
    }


def backtest(
    cfg: SinkConfig,
    store: Store,
    ref: str,
    *,
    since: datetime | None = None,
    held_out: bool = False,
    held_out_share: float = 0.2,
) -> dict[str, Any]:
    """The version ``ref`` and ``@champion`` on the stored labelled events (``since``; with
    ``held_out``, only those of the vehicles a job with ``held_out_share`` holds out)."""
    if not 0 <= held_out_share <= 1:
        raise ValueError("backtest: --held-out-share must be in 0..1")
    from cloud_sink.dataset import EmptyExport, export
    from models.fleet import load_export

    name, _, _ = parse_ref(ref)
    kind = KIND_OF[name]
    registry = Registry(cfg)
    registry.ensure_shipped(store=store)
    scorer = Scorer(registry)
    registry.resolve(ref)  # an unknown alias or version fails before any work
    with tempfile.TemporaryDirectory(prefix="sleepsafe-backtest-") as tmp:
        try:
            manifest = export(
                store,
                Path(tmp) / "export",
                since=since,
                labels=("confirmed", "false_alarm"),
                held_out_share=held_out_share,
            )
        except EmptyExport as err:
            raise ValueError(f"backtest: {err}") from None
        fleet = load_export(Path(tmp) / "export")
    clips = [c for c in fleet.clips if not held_out or c.subject in fleet.held_out_subjects]
    if not clips:
        raise ValueError("backtest: no labelled event of a held-out vehicle")
    out = {
        "dataset_id": manifest["dataset_id"],
        "since": since.isoformat() if since else None,
        "held_out_only": held_out,
        "vehicles": sorted({c.subject.removeprefix("fleet:") for c in clips}),
        "candidate": _scores(scorer, ref, kind, clips, fleet.eye_probs),
        "champion": _scores(scorer, f"{name}@champion", kind, clips, fleet.eye_probs),
    }
    return out


def format_backtest(r: dict[str, Any]) -> str:
    rows = [
        f"{len(r['vehicles'])} vehicles, dataset {r['dataset_id'][:12]}"
        + (" (held-out vehicles only)" if r["held_out_only"] else ""),
        f"{'model':<34} {'events':>6} {'agree':>6} {'frames':>7} {'bal.acc':>8}",
    ]
    for side in ("candidate", "champion"):
        s = r[side]
        label = f"{s['model']} (v{s['version']})"
        if not s["events"]:
            rows.append(f"{label:<34} {0:>6}")
            continue
        agree, ba = s["event_agreement"], s["balanced_accuracy"]
        rows.append(f"{label:<34} {s['events']:>6} {agree:>6.2f} {s['frames']:>7} {ba:>8.3f}")
    return "\n".join(rows)
