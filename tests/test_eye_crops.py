"""Opt-in training capture: events carry their window's eye crops, losslessly, through the sink,
the event page's API and the dataset export, back to the arrays the eye-state model trains on."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from edge_agent.config import EdgeConfig
from edge_agent.perception.eyecrop import CROP_H, CROP_W, decode_crops, encode_crops
from sleepsafe.protocol import EventType


def test_crops_round_trip_exactly_and_bad_ones_are_named() -> None:
    rng = np.random.default_rng(3)
    pairs = [rng.integers(0, 256, (2, CROP_H, CROP_W), dtype=np.uint8) for _ in range(7)]
    n, png = encode_crops(pairs)
    assert n == 7 and np.array_equal(decode_crops(n, png), np.stack(pairs))
    with pytest.raises(ValueError, match="expected a 192x96 PNG"):
        decode_crops(8, png)
    with pytest.raises(ValueError, match="not base64"):
        decode_crops(7, "%%%")
    assert encode_crops([]) == (0, "")


@pytest.mark.clips
def test_a_replay_with_capture_sends_the_crops_of_each_window(
    make_cfg: Callable[..., EdgeConfig], clips: Path, tmp_path: Path
) -> None:
    from cloud_sink.store import Store
    from cloud_sink.validate import Valid, validate
    from edge_agent.replay import replay_clip
    from sleepsafe.protocol import wire_event

    res = replay_clip(
        make_cfg(capture={"eye_crops": True}, models={"mode": "off"}), clips / "WolfgangLanger_Pexels.mp4"
    )
    alarm = next(e for e in res.raised if e.type is EventType.MICROSLEEP)
    assert alarm.crops is not None and alarm.crops.frames == len(alarm.features)
    crops = decode_crops(alarm.crops.frames, alarm.crops.png)
    face = np.array([s.face for s in alarm.features])
    assert crops[face].std() > 10 and not crops[~face].any()  # real eyes where a face was
    # ~90 KB with 48 frames of crops (lossless PNG): well inside the sink's 256 KB payload limit.
    assert len(wire_event(alarm, 2)) < 128 * 1024
    plain = replay_clip(make_cfg(models={"mode": "off"}), clips / "WolfgangLanger_Pexels.mp4")
    assert all(e.crops is None for e in plain.raised + plain.events)
    assert b"crops" not in wire_event(plain.raised[0], 2)  # off: nothing on the wire
    store = Store(f"sqlite:///{tmp_path / 'sink.sqlite3'}")
    item = validate(f"sleepsafe/v1/{alarm.device_id}/event", wire_event(alarm, 2), 1 << 20)
    assert isinstance(item, Valid)
    store.write([item])
    stored = store.event(str(alarm.event_id))["records"][0]["crops"]
    assert np.array_equal(decode_crops(stored["frames"], stored["png"]), crops)
    store.label_event(str(alarm.event_id), "confirmed", "tests")
    from cloud_sink.dataset import export
    from models.fleet import load_export

    export(store, tmp_path / "export")
    fleet = load_export(tmp_path / "export")
    assert np.array_equal(fleet.clips[0].crops, crops)  # what the eye-state model would train on
    store.close()
