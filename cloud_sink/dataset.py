"""`sleepsafe-sink dataset export`: the labelled fleet events as a versioned, hashed training set.

The export is a directory: ``events.jsonl`` (one labelled event a line: its id, vehicle, type,
label, times and the feature window as columns, the models' outputs included where the vehicle
ran them) and ``manifest.json`` (the format and its version, the filter, counts per label,
vehicle, type and source, which vehicles are held out, and the sha256 of ``events.jsonl``, which
is also the dataset's id).  ``sleepsafe-train temporal --data DIR`` reads it beside the repo's
labelled clips (models/fleet.py) and refuses one whose hash does not match.

Held-out events are chosen per vehicle, never per frame or per event: a model scored on frames
of a driver it trained on would look better than it is.  A vehicle is held out when its id
hashes below the share, so it stays on the same side in every export.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sleepsafe import __version__

from .labels import EVENT_LABELS
from .store import Store

FORMAT = "sleepsafe-dataset"
FORMAT_VERSION = 1
# What an event's label says about the eyes in the frames it spans, for the models: the types
# whose span is an eye closure (or, for a disagreement, a stretch that may be one).
EYE_TYPES = ("microsleep", "sleep", "blink", "disagreement")


class EmptyExport(ValueError):
    """Nothing matches: no labelled event (of those asked for) is stored."""


def _unit_hash(device: str) -> float:
    return int(hashlib.sha256(device.encode()).hexdigest(), 16) / 2**256


def held_out_devices(devices: list[str], share: float) -> list[str]:
    """The vehicles kept out of training: each one whose id hashes below ``share`` (so a vehicle
    is held out, or not, in every export, however many vehicles there are); when that picks none
    of two or more, the one with the lowest hash, so there is always something to test on."""
    if len(devices) < 2 or share <= 0:
        return []
    held = sorted(d for d in devices if _unit_hash(d) < share)
    if not held:
        held = [min(devices, key=_unit_hash)]
    if len(held) == len(devices):
        held.remove(max(held, key=_unit_hash))  # keep one to train on
    return held


def export(
    store: Store,
    out: Path,
    *,
    since: datetime | None = None,
    labels: tuple[str, ...] = EVENT_LABELS,
    held_out_share: float = 0.2,
) -> dict[str, Any]:
    """Write the export to ``out`` (created; must be empty or absent) and return its manifest."""
    unknown = [x for x in labels if x not in EVENT_LABELS]
    if unknown:
        raise ValueError(f"unknown label {', '.join(unknown)} (known: {', '.join(EVENT_LABELS)})")
    rows = store.labelled_events(since=since, labels=labels, types=EYE_TYPES)
    if not rows:
        asked = ", ".join(labels)
        when = f" since {since.isoformat()}" if since else ""
        raise EmptyExport(f"no labelled events ({asked}){when} of types {', '.join(EYE_TYPES)} to export")
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty: export into a new directory")
    out.mkdir(parents=True, exist_ok=True)
    devices = sorted({r["device_id"] for r in rows})
    held = held_out_devices(devices, held_out_share)
    counts: dict[str, dict[str, int]] = {"label": {}, "device": {}, "type": {}, "source": {}}
    lines = []
    for r in rows:
        r["held_out"] = r["device_id"] in held
        source = "shadow" if any(k in r["window"] for k in ("eye_closed", "temporal_closed")) else "ear"
        r["source"] = source
        for key, value in (
            ("label", r["label"]),
            ("device", r["device_id"]),
            ("type", r["type"]),
            ("source", source),
        ):
            counts[key][value] = counts[key].get(value, 0) + 1
        lines.append(json.dumps(r, sort_keys=True, separators=(",", ":")))
    body = ("\n".join(lines) + "\n").encode()
    (out / "events.jsonl").write_bytes(body)
    digest = hashlib.sha256(body).hexdigest()
    manifest = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "dataset_id": digest,
        "created": datetime.now(timezone.utc).isoformat(),
        "sink_version": __version__,
        "filter": {
            "since": since.isoformat() if since else None,
            "labels": list(labels),
            "types": list(EYE_TYPES),
        },
        "events": len(rows),
        "counts": counts,
        "held_out": {
            "by": "vehicle",
            "share": held_out_share,
            "devices": held,
            "events": sorted(r["event_id"] for r in rows if r["held_out"]),
        },
        "files": {"events.jsonl": {"sha256": digest, "bytes": len(body)}},
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest
